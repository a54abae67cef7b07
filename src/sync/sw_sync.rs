//! [`SwSyncTimeline`]: a software fence timeline from the kernel's sw_sync debugfs file
//! (`CONFIG_SW_SYNC`, debugfs mounted; root only). Fences made on it signal when the timeline is
//! advanced past their value, which lets tests (and the producer's `--acquire-fence sw-sync`
//! testing aid) drive fence ordering by hand. Closing the timeline signals every pending fence
//! on it with `ENOENT`.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::io::Errno;

use super::sync_file::{FenceError, SyncFile};
use crate::sys::sw_sync as sys;

pub use crate::sys::sw_sync::SW_SYNC_PATH;

/// One sw_sync timeline: its value starts at 0 and only moves forward.
#[derive(Debug)]
pub struct SwSyncTimeline {
    fd: OwnedFd,
    path: PathBuf,
    value: AtomicU32,
}

impl SwSyncTimeline {
    /// Whether this machine has sw_sync where [`SwSyncTimeline::open`] looks.
    pub fn is_available() -> bool {
        Path::new(SW_SYNC_PATH).exists()
    }

    /// A new timeline from `/sys/kernel/debug/sync/sw_sync`.
    pub fn open() -> Result<Self, FenceError> {
        Self::open_at(Path::new(SW_SYNC_PATH))
    }

    /// A new timeline from a sw_sync file at `path` (debugfs mounted elsewhere).
    pub fn open_at(path: &Path) -> Result<Self, FenceError> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| FenceError::Device {
                op: "open",
                path: path.to_owned(),
                errno: Errno::from_io_error(&e).unwrap_or(Errno::NOENT),
            })?;
        Ok(SwSyncTimeline {
            fd: file.into(),
            path: path.to_owned(),
            value: AtomicU32::new(0),
        })
    }

    /// A fence that signals when the timeline reaches `value` (at once if it already has).
    pub fn create_fence(&self, value: u32) -> Result<SyncFile, FenceError> {
        sys::create_fence(self.fd.as_fd(), value, &format!("frameshare {value}"))
            .map(SyncFile::from_fd)
            .map_err(|errno| FenceError::Device {
                op: "SW_SYNC_IOC_CREATE_FENCE",
                path: self.path.clone(),
                errno,
            })
    }

    /// Advances the timeline by `n`, signalling every fence whose value it reaches.
    pub fn advance(&self, n: u32) -> Result<(), FenceError> {
        sys::inc(self.fd.as_fd(), n).map_err(|errno| FenceError::Device {
            op: "SW_SYNC_IOC_INC",
            path: self.path.clone(),
            errno,
        })?;
        self.value.fetch_add(n, Ordering::AcqRel);
        Ok(())
    }

    /// How far this handle has advanced the timeline.
    pub fn value(&self) -> u32 {
        self.value.load(Ordering::Acquire)
    }
}

impl AsFd for SwSyncTimeline {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
