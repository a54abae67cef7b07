//! Frame sources: what fills the producer's buffers. The software generator draws test patterns
//! that carry their sequence number in their pixels; the V4L2 camera source comes later.

pub mod generator;

pub use generator::{Generator, Pattern, Rgb, Scene};
