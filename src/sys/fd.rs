//! Adopting an fd number inherited from a parent process (how `frameshare run` hands its child
//! the consumer's end of a socketpair): the number is checked to be open before it is owned.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use rustix::io::Errno;

/// Takes ownership of the inherited, open fd `raw` and marks it close-on-exec. The caller must
/// know that nothing else in this process owns `raw` (it came from the parent, by number).
/// Fails with `EBADF` for a negative or closed number, without touching anything.
pub fn adopt_inherited(raw: RawFd) -> Result<OwnedFd, Errno> {
    if raw < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: F_GETFD on a plain integer only reads the fd table; a closed number gives EBADF.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: `raw` is open (checked above) and, per this function's contract, unowned.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(fd)
}
