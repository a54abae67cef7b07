//! The frameshare GStreamer plugin (`libgstframeshare.so`): `framesharesink` publishes what a
//! pipeline produces as a frameshare stream, `framesharesrc` feeds a pipeline from one. Both
//! move frames without copying them: the sink shares upstream's dma-bufs as they are, or gives
//! upstream a pool of shared buffers to write into; the source wraps the stream's fds as
//! `GstMemory`. See the README's GStreamer section for pipelines.

use gst::glib;

mod fdmem;
pub mod format;
mod framesharesink;
mod framesharesrc;
mod pool;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    framesharesink::register(plugin)?;
    framesharesrc::register(plugin)?;
    Ok(())
}

// The macro's generated items (the plugin descriptor, its registration) carry no docs.
#[allow(missing_docs)]
mod plugin {
    use super::plugin_init;

    gst::plugin_define!(
        frameshare,
        env!("CARGO_PKG_DESCRIPTION"),
        plugin_init,
        env!("CARGO_PKG_VERSION"),
        // GStreamer's licence names: MIT/X11 is what it calls MIT (the crate is MIT OR Apache-2.0).
        "MIT/X11",
        "gst-plugin-frameshare",
        "gst-plugin-frameshare",
        "https://github.com/frameshare/frameshare",
        "2026-11-30"
    );
}

pub use plugin::plugin_register_static;
