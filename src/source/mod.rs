//! Frame sources: what fills the producer's buffers. The software generator draws test patterns
//! that carry their sequence number in their pixels; the V4L2 camera source comes later.

pub mod generator;
#[cfg(feature = "v4l2")]
pub mod v4l2;

pub use generator::{Generator, Pattern, Rgb, Scene};
