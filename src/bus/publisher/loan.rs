//! A buffer lent to the application to fill ([`Loan`]), published or given back unsent.

use super::pool::SlotState;
use super::*;
use crate::buffer::{Access, Buffer, CpuAccess};
use crate::meta::FrameMeta;
use crate::sync::SyncFile;

/// A buffer lent to the application to fill; [`Loan::publish`] sends it, dropping it gives it
/// back unsent.
pub struct Loan<'a> {
    pub(super) publisher: &'a mut Publisher,
    pub(super) id: u32,
    pub(super) meta: FrameMeta,
    pub(super) acquire: Option<SyncFile>,
    pub(super) sent: bool,
}

impl Loan<'_> {
    /// The buffer's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The buffer.
    pub fn buffer(&self) -> &Buffer {
        &self
            .publisher
            .pool
            .get(self.id)
            .expect("loaned slots stay")
            .buffer
    }

    /// CPU write access to the buffer's pixels (mapped on first use).
    pub fn write(&mut self) -> Result<CpuAccess<'_>, PublishError> {
        let m = self
            .publisher
            .pool
            .mapping(self.id)
            .ok_or(PublishError::UnknownBuffer(self.id))??;
        Ok(m.access(Access::Write)?)
    }

    /// The frame's metadata, to fill before publishing.
    pub fn meta_mut(&mut self) -> &mut FrameMeta {
        &mut self.meta
    }

    /// An acquire fence consumers wait on before reading (the pixels are written by a device
    /// after `publish` returns).
    pub fn set_acquire_fence(&mut self, fence: SyncFile) {
        self.acquire = Some(fence);
    }

    /// Puts the loan aside, the buffer still on loan, ending the borrow of the publisher: for
    /// bindings that hold a loan across calls (Python, C), which fill the buffer through their
    /// own mapping and take the loan up again with [`Publisher::resume_loan`] to publish it or
    /// give it back. Returns the buffer id. Metadata and an acquire fence set so far are
    /// dropped: set them after resuming.
    pub fn suspend(mut self) -> u32 {
        self.sent = true; // not given back on drop: it stays on loan
        self.id
    }

    /// Sends the buffer as frame `seq` to every consumer, as their policies say.
    pub fn publish(mut self, seq: u64) -> Result<(), PublishError> {
        self.sent = true;
        let meta = std::mem::take(&mut self.meta);
        let acquire = self.acquire.take();
        self.publisher.send_frame(self.id, seq, meta, acquire)
    }
}

impl Loan<'_> {
    /// Sends the buffer as frame `seq` with the acquire fence `fence` *before* its pixels are
    /// written, then lets `write` write them: the order of a device that fills a buffer after
    /// it was queued (the consumers wait on `fence`, which the caller signals after this
    /// returns). A test aid for fence handling, and the shape of a GPU producer.
    pub fn publish_then_write<R>(
        mut self,
        seq: u64,
        fence: SyncFile,
        write: impl FnOnce(&mut CpuAccess<'_>) -> R,
    ) -> Result<R, PublishError> {
        self.sent = true;
        let meta = std::mem::take(&mut self.meta);
        let id = self.id;
        self.publisher.send_frame(id, seq, meta, Some(fence))?;
        let m = self
            .publisher
            .pool
            .mapping(id)
            .ok_or(PublishError::UnknownBuffer(id))??;
        let mut access = m.access(Access::Write)?;
        Ok(write(&mut access))
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if !self.sent {
            if let Some(s) = self.publisher.pool.get_mut(self.id) {
                s.state = SlotState::Free;
            }
        }
    }
}
