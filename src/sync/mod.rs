//! Synchronisation: sync_file fences ([`SyncFile`]), and (in later files) the implicit-fence
//! bridge for dma-bufs and the sw_sync timeline used by tests.

pub mod sync_file;

pub use sync_file::{FenceError, SyncFile};
