//! memfd backend: `memfd_create` + `ftruncate`, sealed against shrinking, growing and further
//! sealing before the fd is ever shared, so a peer's mapping can never lose its pages.

use rustix::fs::{MemfdFlags, SealFlags};

use super::{allocation_size, sys_err, AllocError, Allocator};
use crate::buffer::{Buffer, BufferKind};
use crate::format::FrameLayout;

/// Makes sealed memfds.
#[derive(Debug, Default)]
pub struct MemfdAllocator {
    count: u64,
}

impl MemfdAllocator {
    /// A new allocator (memfd needs no device).
    pub fn new() -> Self {
        Self::default()
    }
}

/// Creates a memfd of `size` bytes, sealable, not yet sealed (udmabuf shares this step).
pub(crate) fn create_unsealed(
    kind: BufferKind,
    name: &str,
    size: u64,
) -> Result<std::os::fd::OwnedFd, AllocError> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(sys_err(kind, "memfd_create", None))?;
    rustix::fs::ftruncate(&fd, size).map_err(sys_err(kind, "ftruncate", None))?;
    Ok(fd)
}

impl Allocator for MemfdAllocator {
    fn kind(&self) -> BufferKind {
        BufferKind::Memfd
    }

    fn allocate(&mut self, layout: &FrameLayout) -> Result<Buffer, AllocError> {
        layout.validate()?;
        self.count += 1;
        let name = format!("frameshare-{}-{}", layout.fourcc(), self.count);
        let fd = create_unsealed(BufferKind::Memfd, &name, allocation_size(layout))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(sys_err(BufferKind::Memfd, "F_ADD_SEALS", None))?;
        Ok(Buffer::from_fds(
            BufferKind::Memfd,
            layout.clone(),
            vec![fd],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Fourcc;

    #[test]
    fn memfds_are_sealed_against_shrinking_before_they_are_shared() {
        let layout = FrameLayout::linear(Fourcc::XR24, 64, 64, 64).unwrap();
        let b = MemfdAllocator::new().allocate(&layout).unwrap();
        let fd = b.fds()[0];
        let seals = rustix::fs::fcntl_get_seals(fd).unwrap();
        assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL));
        assert_eq!(rustix::fs::ftruncate(fd, 0), Err(rustix::io::Errno::PERM));
    }
}
