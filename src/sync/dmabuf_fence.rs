//! The implicit-fence bridge: a dma-buf carries implicit fences (its reservation object) that
//! KMS, V4L2 and GPU drivers attach and wait on by themselves; `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`
//! turns them into an explicit [`SyncFile`], and `DMA_BUF_IOCTL_IMPORT_SYNC_FILE` attaches an
//! explicit fence to the dma-buf so that those drivers (and `DMA_BUF_IOCTL_SYNC`, the CPU-access
//! guard of [`crate::buffer::BufferMapping::access`]) wait for it. Needs Linux 6.0.

use std::os::fd::{AsFd, BorrowedFd};

use super::sync_file::{FenceError, SyncFile};
use crate::sys::dma_buf;

/// Which implicit fences, or which kind of implicit fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceAccess {
    /// Export: the fences a *reader* must wait for (the writers'). Import: attach as a read
    /// fence (only later writers wait for it).
    Read,
    /// Export: the fences a *writer* must wait for (every reader and writer). Import: attach as
    /// a write fence (every later reader and writer waits for it).
    Write,
}

impl FenceAccess {
    fn flags(self) -> u64 {
        match self {
            FenceAccess::Read => dma_buf::SYNC_READ,
            FenceAccess::Write => dma_buf::SYNC_WRITE,
        }
    }
}

/// A sync_file holding the dma-buf's current implicit fences for `access` (an already signalled
/// one when there are none): `Read` before reading the buffer, `Write` before writing it.
pub fn export_sync_file(
    dmabuf: BorrowedFd<'_>,
    access: FenceAccess,
) -> Result<SyncFile, FenceError> {
    dma_buf::export_sync_file(dmabuf, access.flags())
        .map(SyncFile::from_fd)
        .map_err(|errno| FenceError::Sys {
            op: match access {
                FenceAccess::Read => "DMA_BUF_IOCTL_EXPORT_SYNC_FILE(read)",
                FenceAccess::Write => "DMA_BUF_IOCTL_EXPORT_SYNC_FILE(write)",
            },
            errno,
        })
}

/// Attaches `fence` to the dma-buf's implicit fences as a read or write fence; the fence stays
/// the caller's (the kernel takes its own reference).
pub fn import_sync_file(
    dmabuf: BorrowedFd<'_>,
    fence: &SyncFile,
    access: FenceAccess,
) -> Result<(), FenceError> {
    dma_buf::import_sync_file(dmabuf, fence.as_fd(), access.flags()).map_err(|errno| {
        FenceError::Sys {
            op: match access {
                FenceAccess::Read => "DMA_BUF_IOCTL_IMPORT_SYNC_FILE(read)",
                FenceAccess::Write => "DMA_BUF_IOCTL_IMPORT_SYNC_FILE(write)",
            },
            errno,
        }
    })
}
