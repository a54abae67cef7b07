//! `framesharesink`: publishes the frames a pipeline produces as a frameshare stream (see
//! [`imp`] for how each kind of upstream memory is shared).

use gst::glib;
use gst::prelude::*;

mod imp;
mod publish;

glib::wrapper! {
    /// The `framesharesink` element.
    pub struct FrameshareSink(ObjectSubclass<imp::FrameshareSink>)
        @extends gst_base::BaseSink, gst::Element, gst::Object;
}

/// Registers `framesharesink` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "framesharesink",
        gst::Rank::NONE,
        FrameshareSink::static_type(),
    )
}
