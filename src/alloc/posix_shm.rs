//! POSIX shm backend: `shm_open` of an unguessable name with `O_EXCL` and mode 0600, unlinked
//! right after it is opened — the fd, not the name, is what crosses the socket — so no crash of
//! either side can leave an entry in /dev/shm.

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
        // Unlink before anything else can fail, so the name never outlives this call.
        shm::unlink(&name).map_err(sys_err(kind, "shm_unlink", path.clone()))?;
        rustix::fs::ftruncate(&fd, allocation_size(layout)).map_err(sys_err(
            kind,
            "ftruncate",
            path,
        ))?;
        Ok(Buffer::from_fds(kind, layout.clone(), vec![fd])?)
    }
}
