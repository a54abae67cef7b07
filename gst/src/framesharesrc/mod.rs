//! `framesharesrc`: feeds a pipeline from a frameshare stream, each `GstBuffer` wrapping the
//! stream's shared memory (see [`imp`]).

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    /// The `framesharesrc` element.
    pub struct FrameshareSrc(ObjectSubclass<imp::FrameshareSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

/// What the source does when frames come faster than downstream gives them back (frameshare's
/// consumer policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstFrameshareSrcPolicy")]
pub enum SrcPolicy {
    /// Every frame; the producer waits for us.
    #[default]
    #[enum_value(
        name = "Wait: every frame, the producer waits for this consumer",
        nick = "wait"
    )]
    Wait = 0,
    /// Frames that come while we are busy are skipped.
    #[enum_value(name = "Drop: frames that come while busy are skipped", nick = "drop")]
    Drop = 1,
    /// Always the newest frame.
    #[enum_value(name = "Latest: always the newest frame", nick = "latest")]
    Latest = 2,
}

/// Registers `framesharesrc` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "framesharesrc",
        gst::Rank::NONE,
        FrameshareSrc::static_type(),
    )
}
