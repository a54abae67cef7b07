//! SysV shm backend: `shmget(IPC_PRIVATE, 0600)`, attached once and marked `IPC_RMID` at once,
//! before its id is handed to anyone: the segment then lives exactly as long as some process is
//! attached, so `kill -9` of either side (or both) leaves nothing in `ipcs -m`.

use super::{allocation_size, sys_err, AllocError, Allocator};
use crate::buffer::{Buffer, BufferKind, Credentials};
use crate::format::FrameLayout;
use crate::sys::sysv;

/// Makes self-removing SysV segments.
#[derive(Debug, Default)]
pub struct SysvShmAllocator {
    _private: (),
}

impl SysvShmAllocator {
    /// A new allocator.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Allocator for SysvShmAllocator {
    fn kind(&self) -> BufferKind {
        BufferKind::SysvShm
    }

    fn allocate(&mut self, layout: &FrameLayout) -> Result<Buffer, AllocError> {
        layout.validate()?;
        let kind = BufferKind::SysvShm;
        let id = sysv::create_private(allocation_size(layout) as usize)
            .map_err(sys_err(kind, "shmget", None))?;
        // from_sysv attaches (keeping the segment alive) before we remove it; remove even when
        // it fails, so that an error path leaves no segment either.
        let buffer = Buffer::from_sysv(layout.clone(), id, &Credentials::of_this_process());
        let removed = sysv::remove(id).map_err(sys_err(kind, "shmctl(IPC_RMID)", None));
        let buffer = buffer?;
        removed?;
        Ok(buffer)
    }
}
