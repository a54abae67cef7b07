//! [`SyncFile`]: an owned sync_file fd — a fence that signals once — waited on with `poll`,
//! merged with `SYNC_IOC_MERGE` and inspected with `SYNC_IOC_FILE_INFO`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;

use crate::sys::sync_file as sys;

/// Errors waiting on or handling fences.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The fence did not signal in time.
    #[error("fence did not signal within {0:?}")]
    Timeout(Duration),
    /// The fence signalled with an error status (the work it guarded failed or was abandoned,
    /// e.g. `ENOENT` when a sw_sync timeline is closed with fences pending).
    #[error("fence signalled with error: {0}")]
    Signalled(Errno),
    /// A system call failed.
    #[error("{op} failed: {errno}")]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// The error.
        errno: Errno,
    },
    /// An fd that should have been a sync_file is something else (`SYNC_IOC_FILE_INFO` refused it).
    #[error("fd is not a sync_file (SYNC_IOC_FILE_INFO: {errno})")]
    NotSyncFile {
        /// What the ioctl said.
        errno: Errno,
    },
    /// An fd from a peer that should have been a sync_file is another kind of object, as the
    /// kernel records it (told apart before any ioctl: on a file a daemon serves, an ioctl
    /// would wait on that daemon).
    #[error("fd is {what}, not a sync_file")]
    NotAFence {
        /// What it is (`a pipe`, `a file on fuse (…)`, …).
        what: String,
    },
    /// A fence device could not be opened or used (sw_sync timeline).
    #[error("{op} on {} failed: {errno}", path.display())]
    Device {
        /// What was attempted.
        op: &'static str,
        /// The device.
        path: PathBuf,
        /// The error.
        errno: Errno,
    },
}

impl FenceError {
    /// Whether waiting longer could help (only a timeout is retryable).
    pub fn is_timeout(&self) -> bool {
        matches!(self, FenceError::Timeout(_))
    }
}

/// The state of a fence, or of all the fences in a sync_file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceStatus {
    /// Not signalled yet.
    Active,
    /// Signalled successfully.
    Signalled,
    /// Signalled with an error.
    Error(Errno),
}

impl FenceStatus {
    fn from_raw(status: i32) -> FenceStatus {
        match status {
            0 => FenceStatus::Active,
            s if s > 0 => FenceStatus::Signalled,
            s => FenceStatus::Error(Errno::from_raw_os_error(-s)),
        }
    }
}

/// One fence inside a sync_file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceInfo {
    /// The timeline's name (for sw_sync, the name given when the timeline was made).
    pub timeline: String,
    /// The driver that made it (`sw_sync`, `drm_sched`, a GPU driver, …).
    pub driver: String,
    /// Its state.
    pub status: FenceStatus,
    /// CLOCK_MONOTONIC ns when it signalled (0 while active).
    pub timestamp_ns: u64,
}

/// What `SYNC_IOC_FILE_INFO` says of a sync_file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFileInfo {
    /// The sync_file's name.
    pub name: String,
    /// The combined state: signalled once every fence has; an error if any failed.
    pub status: FenceStatus,
    /// Each fence inside (one, unless it was merged).
    pub fences: Vec<FenceInfo>,
}

/// A sync_file: an fd that becomes readable when its fence signals.
#[must_use = "a fence that is dropped unwaited gives no ordering"]
#[derive(Debug)]
pub struct SyncFile {
    fd: OwnedFd,
}

impl SyncFile {
    /// Wraps an fd that is a sync_file (not checked here; `poll` on other fds behaves
    /// differently). Use [`SyncFile::try_from_fd`] for fds from a peer.
    pub fn from_fd(fd: OwnedFd) -> Self {
        SyncFile { fd }
    }

    /// Wraps an fd after checking with `SYNC_IOC_FILE_INFO` that it is a sync_file (for fds that
    /// came from an untrusted peer).
    pub fn try_from_fd(fd: OwnedFd) -> Result<Self, FenceError> {
        // Every sync_file is an anonymous inode named `sync_file`; a path-based link cannot
        // read like that, so nothing a filesystem daemon serves gets the ioctl below.
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if link != "anon_inode:sync_file" {
            let what = crate::buffer::classify_fd(fd.as_fd()).describe();
            crate::buffer::inspect::release_refused(vec![fd]);
            return Err(FenceError::NotAFence { what });
        }
        sys::status(fd.as_fd()).map_err(|errno| FenceError::NotSyncFile { errno })?;
        Ok(SyncFile { fd })
    }

    /// Waits until the fence signals, at most `timeout`. A fence that signalled with an error
    /// status is an error ([`FenceError::Signalled`]).
    pub fn wait(&self, timeout: Duration) -> Result<(), FenceError> {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match super::poll_until(&mut fds, super::deadline_after(Some(timeout))) {
            Ok(0) => Err(FenceError::Timeout(timeout)),
            Ok(_) => {
                if fds[0].revents().contains(PollFlags::ERR) {
                    return Err(FenceError::Signalled(Errno::IO));
                }
                match self.status()? {
                    FenceStatus::Error(e) => Err(FenceError::Signalled(e)),
                    _ => Ok(()),
                }
            }
            Err(errno) => Err(FenceError::Sys { op: "poll", errno }),
        }
    }

    /// Whether the fence has signalled (successfully or not), without waiting.
    pub fn is_signalled(&self) -> bool {
        matches!(
            self.status(),
            Ok(FenceStatus::Signalled | FenceStatus::Error(_))
        )
    }

    /// The combined state of the fences inside, without waiting (one `SYNC_IOC_FILE_INFO`).
    pub fn status(&self) -> Result<FenceStatus, FenceError> {
        let info = sys::status(self.fd.as_fd()).map_err(|errno| match errno {
            Errno::NOTTY => FenceError::NotSyncFile { errno },
            errno => FenceError::Sys {
                op: "SYNC_IOC_FILE_INFO",
                errno,
            },
        })?;
        Ok(FenceStatus::from_raw(info.status))
    }

    /// Name, state and every fence inside (`SYNC_IOC_FILE_INFO`).
    pub fn info(&self) -> Result<SyncFileInfo, FenceError> {
        let raw = sys::file_info(self.fd.as_fd()).map_err(|errno| FenceError::Sys {
            op: "SYNC_IOC_FILE_INFO",
            errno,
        })?;
        Ok(SyncFileInfo {
            name: raw.name,
            status: FenceStatus::from_raw(raw.status),
            fences: raw
                .fences
                .iter()
                .map(|f| FenceInfo {
                    timeline: sys::name_str(&f.obj_name),
                    driver: sys::name_str(&f.driver_name),
                    status: FenceStatus::from_raw(f.status),
                    timestamp_ns: f.timestamp_ns,
                })
                .collect(),
        })
    }

    /// A new sync_file that signals once both `self` and `other` have (`SYNC_IOC_MERGE`);
    /// neither input is consumed.
    pub fn merge(&self, other: &SyncFile, name: &str) -> Result<SyncFile, FenceError> {
        sys::merge(self.fd.as_fd(), other.fd.as_fd(), name)
            .map(SyncFile::from_fd)
            .map_err(|errno| FenceError::Sys {
                op: "SYNC_IOC_MERGE",
                errno,
            })
    }

    /// Another handle to the same fence (`dup`).
    pub fn try_clone(&self) -> Result<SyncFile, FenceError> {
        self.fd
            .try_clone()
            .map(SyncFile::from_fd)
            .map_err(|e| FenceError::Sys {
                op: "dup",
                errno: Errno::from_io_error(&e).unwrap_or(Errno::BADF),
            })
    }

    /// Gives up the fd (to send it, or hand it to a driver).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for SyncFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_is_not_a_sync_file() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let e = SyncFile::try_from_fd(r).unwrap_err();
        assert!(matches!(e, FenceError::NotAFence { .. }), "{e:?}");
        assert_eq!(e.to_string(), "fd is a pipe, not a sync_file");
    }

    #[test]
    fn status_mapping() {
        assert_eq!(FenceStatus::from_raw(0), FenceStatus::Active);
        assert_eq!(FenceStatus::from_raw(1), FenceStatus::Signalled);
        assert_eq!(FenceStatus::from_raw(-2), FenceStatus::Error(Errno::NOENT));
    }
}
