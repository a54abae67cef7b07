//! The null sink: waits for the acquire fence and gives the buffer straight back. Measures the
//! transport alone.

use super::{wait_acquire, FrameIn, FrameOut, Sink, SinkError, ACQUIRE_TIMEOUT};
use crate::buffer::Buffer;

/// Takes frames and does nothing with them.
#[derive(Debug, Default)]
pub struct NullSink {
    _private: (),
}

impl Sink for NullSink {
    fn name(&self) -> String {
        "null".into()
    }

    fn add_buffer(&mut self, _id: u32, _buffer: &Buffer) -> Result<(), SinkError> {
        Ok(())
    }

    fn remove_buffer(&mut self, _id: u32) {}

    fn frame(&mut self, frame: FrameIn<'_>) -> Result<FrameOut, SinkError> {
        let ok = wait_acquire(frame.acquire, ACQUIRE_TIMEOUT)?;
        Ok(FrameOut {
            verified: false,
            dropped: !ok,
            release: None,
        })
    }
}
