//! POSIX shm backend: `shm_open` of an unguessable name with `O_EXCL` and mode 0600, opened a
//! second time read-only, then unlinked — the fd, not the name, is what crosses the socket — so
//! no crash of either side can leave an entry in /dev/shm. Peers get the read-only fd: a shm
//! object cannot be sealed, and through a writable fd a peer could `ftruncate` it under our
//! mapping. (A same-user peer that re-opens it through `/proc` can still shrink it; our own
//! mapping is guarded against that SIGBUS, see `buffer`.)

use rustix::fs::Mode;
use rustix::shm;

use super::{allocation_size, sys_err, AllocError, Allocator};
use crate::buffer::{Buffer, BufferKind};
use crate::format::FrameLayout;

/// Makes anonymous-after-open POSIX shm objects.
#[derive(Debug, Default)]
pub struct PosixShmAllocator {
    _private: (),
}

impl PosixShmAllocator {
    /// A new allocator.
    pub fn new() -> Self {
        Self::default()
    }
}

fn unguessable_name() -> String {
    let mut r = [0u8; 16];
    let mut filled = 0;
    while filled < r.len() {
        filled += rustix::rand::getrandom(&mut r[filled..], rustix::rand::GetRandomFlags::empty())
            .unwrap_or(0);
    }
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("/frameshare-{}-{hex}", std::process::id())
}

impl Allocator for PosixShmAllocator {
    fn kind(&self) -> BufferKind {
        BufferKind::PosixShm
    }

    fn allocate(&mut self, layout: &FrameLayout) -> Result<Buffer, AllocError> {
        layout.validate()?;
        let kind = BufferKind::PosixShm;
        let name = unguessable_name();
        let path = Some(std::path::PathBuf::from(&name));
        let fd = shm::open(
            &name,
            shm::OFlags::RDWR | shm::OFlags::CREATE | shm::OFlags::EXCL,
            Mode::from_raw_mode(0o600),
        )
        .map_err(sys_err(kind, "shm_open", path.clone()))?;
        let read_only = shm::open(&name, shm::OFlags::RDONLY, Mode::empty()).map_err(sys_err(
            kind,
            "shm_open(O_RDONLY)",
            path.clone(),
        ));
        // Unlink before anything else can fail, so the name never outlives this call.
        shm::unlink(&name).map_err(sys_err(kind, "shm_unlink", path.clone()))?;
        let read_only = read_only?;
        rustix::fs::ftruncate(&fd, allocation_size(layout)).map_err(sys_err(
            kind,
            "ftruncate",
            path,
        ))?;
        Ok(Buffer::from_fds(kind, layout.clone(), vec![fd])?.share_read_only(vec![read_only])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Fourcc;
    use rustix::fs::OFlags;

    #[test]
    fn peers_get_a_read_only_fd_they_cannot_truncate() {
        let layout = FrameLayout::linear(Fourcc::XR24, 64, 64, 64).unwrap();
        let b = PosixShmAllocator::new().allocate(&layout).unwrap();
        let shared = b.fds()[0];
        let mode = rustix::fs::fcntl_getfl(shared).unwrap() & OFlags::ACCMODE;
        assert_eq!(mode, OFlags::RDONLY);
        assert_eq!(
            rustix::fs::ftruncate(shared, 0),
            Err(rustix::io::Errno::INVAL)
        );
        // Our own mapping is writable, and what we write the peer's fd reads.
        let mut m = b.map(true).unwrap();
        m.access(crate::buffer::Access::Write).unwrap().bytes_mut(0)[5] = 42;
        let mut byte = [0u8; 1];
        rustix::io::pread(shared, &mut byte, 5).unwrap();
        assert_eq!(byte[0], 42);
    }
}
