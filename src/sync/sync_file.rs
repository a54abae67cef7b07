//! [`SyncFile`]: an owned sync_file fd — a fence that signals once — waited on with `poll`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;

/// Errors waiting on or handling fences.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The fence did not signal in time.
    #[error("fence did not signal within {0:?}")]
    Timeout(Duration),
    /// The fence signalled with an error status.
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
}

/// A sync_file: an fd that becomes readable when its fence signals.
#[must_use = "a fence that is dropped unwaited gives no ordering"]
#[derive(Debug)]
pub struct SyncFile {
    fd: OwnedFd,
}

impl SyncFile {
    /// Wraps an fd that is a sync_file (not checked here; `poll` on other fds behaves differently).
    pub fn from_fd(fd: OwnedFd) -> Self {
        SyncFile { fd }
    }

    /// Waits until the fence signals, at most `timeout`.
    pub fn wait(&self, timeout: Duration) -> Result<(), FenceError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = rustix::time::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: left.subsec_nanos() as i64,
            };
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(0) => return Err(FenceError::Timeout(timeout)),
                Ok(_) => {
                    let r = fds[0].revents();
                    if r.contains(PollFlags::ERR) {
                        return Err(FenceError::Signalled(Errno::IO));
                    }
                    return Ok(());
                }
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(FenceError::Sys { op: "poll", errno }),
            }
        }
    }

    /// Whether the fence has signalled, without waiting.
    pub fn is_signalled(&self) -> bool {
        self.wait(Duration::ZERO).is_ok()
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
