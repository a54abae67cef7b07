//! The verify sink: maps each buffer once, read-only, and compares every pixel byte of every
//! frame with what the generator draws for that sequence number (row templates + memcmp), so
//! "verified" means the consumer read exactly the right pixels of the right frame. It reads
//! LINEAR buffers only, and a buffer the peer truncated under it is an error, not a mismatch.

use super::{wait_acquire, FrameIn, FrameOut, Sink, SinkError, StreamInfo, ACQUIRE_TIMEOUT};
use crate::buffer::{Access, Buffer, Mappings};
use crate::format::FrameLayout;
use crate::source::{Pattern, Scene};

/// Checks frames against the generator.
#[derive(Default)]
pub struct VerifySink {
    pattern: Option<Pattern>,
    mappings: Mappings,
    scene: Option<(FrameLayout, Scene)>,
    mismatches: u64,
}

impl VerifySink {
    /// A new verify sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames that did not match.
    pub fn mismatches(&self) -> u64 {
        self.mismatches
    }
}

impl Sink for VerifySink {
    fn name(&self) -> String {
        "verify".into()
    }

    fn start(&mut self, stream: &StreamInfo) -> Result<(), SinkError> {
        self.pattern = Some(stream.require_pattern("verify")?);
        Ok(())
    }

    fn add_buffer(&mut self, id: u32, buffer: &Buffer) -> Result<(), SinkError> {
        super::require_linear("verify", id, buffer)?;
        Ok(self.mappings.insert(id, buffer, false)?)
    }

    fn remove_buffer(&mut self, id: u32) {
        self.mappings.remove(id);
    }

    fn frame(&mut self, frame: FrameIn<'_>) -> Result<FrameOut, SinkError> {
        if !wait_acquire(frame.acquire, ACQUIRE_TIMEOUT)? {
            return Ok(FrameOut {
                dropped: true,
                ..Default::default()
            });
        }
        let pattern = self
            .pattern
            .ok_or_else(|| SinkError::Unsupported("verify sink used before start".into()))?;
        let layout = frame.buffer.layout();
        let same = matches!(&self.scene, Some((l, _)) if l.fourcc() == layout.fourcc() && l.width() == layout.width() && l.height() == layout.height());
        if !same {
            self.scene = Some((layout.clone(), Scene::new(pattern, layout)));
        }
        let scene = &self.scene.as_ref().unwrap().1;
        let mapping = self
            .mappings
            .get_mut(frame.id)
            .expect("frames name only added buffers");
        let access = mapping.access(Access::Read)?;
        let verdict = scene.frame(frame.seq).verify(&access);
        // What was read counts only if the memory was still there.
        access.end()?;
        match verdict {
            Ok(()) => Ok(FrameOut {
                verified: true,
                ..Default::default()
            }),
            Err(m) => {
                self.mismatches += 1;
                if self.mismatches <= 5 {
                    log::error!("verify: {m}");
                }
                Ok(FrameOut::default())
            }
        }
    }
}
