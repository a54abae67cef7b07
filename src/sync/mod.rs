//! Synchronisation: sync_file fences ([`SyncFile`]: wait, merge, info), the implicit-fence
//! bridge for dma-bufs ([`dmabuf_fence`]), and the sw_sync timeline used by tests and by the
//! producer's fence testing aid ([`SwSyncTimeline`]); and the crate's one wait on fds with a
//! deadline ([`poll_until`]), which survives signals without restarting its timeout.

pub mod dmabuf_fence;
pub mod sw_sync;
pub mod sync_file;

pub use crate::sys::poll::{deadline_after, poll_until};
pub use dmabuf_fence::{export_sync_file, import_sync_file, FenceAccess};
pub use sw_sync::SwSyncTimeline;
pub use sync_file::{FenceError, FenceInfo, FenceStatus, SyncFile, SyncFileInfo};
