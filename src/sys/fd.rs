//! Fds crossing the raw-number boundary: adopting one inherited from a parent process (how
//! `frameshare run` hands its child the consumer's end of a socketpair; the number is checked to
//! be open before it is owned), and handing one to a driver that owns it only on success.

#[cfg(feature = "vulkan")]
use std::os::fd::IntoRawFd;
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

/// Hands `fd` to `consume`, which gives the raw number to something that takes ownership of it
/// only when it succeeds (a driver import: `vkImportSemaphoreFdKHR`, `vkAllocateMemory` with
/// `VkImportMemoryFdInfoKHR`). On `Ok` the fd is the consumer's; on `Err` it comes back, still
/// ours, with the error. `consume` must neither close nor keep the number when it fails —
/// which safe code cannot do anyway: only an `unsafe` call can close or adopt a raw fd.
#[cfg(feature = "vulkan")]
pub fn hand_over<T, E>(
    fd: OwnedFd,
    consume: impl FnOnce(RawFd) -> Result<T, E>,
) -> Result<T, (E, OwnedFd)> {
    let raw = fd.into_raw_fd();
    consume(raw).map_err(|e| {
        // SAFETY: the consumer failed, so (per this function's contract) nothing took `raw`:
        // it is still the fd we gave up above, and nothing else owns it.
        (e, unsafe { OwnedFd::from_raw_fd(raw) })
    })
}
