//! udmabuf backend: a memfd sealed against shrinking (and nothing that would stop writes),
//! turned into a dma-buf by `UDMABUF_CREATE` on /dev/udmabuf. Sizes are page-rounded; the
//! memfd is closed once the dma-buf holds its pages.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::SealFlags;

use super::{allocation_size, sys_err, AllocError, Allocator};
use crate::buffer::{Buffer, BufferKind};
use crate::format::FrameLayout;
use crate::sys;

/// The udmabuf device.
pub const UDMABUF_PATH: &str = "/dev/udmabuf";

/// Makes dma-bufs over memfds.
#[derive(Debug)]
pub struct UdmabufAllocator {
    dev: OwnedFd,
    count: u64,
}

impl UdmabufAllocator {
    /// Opens /dev/udmabuf.
    pub fn open() -> Result<Self, AllocError> {
        let dev = File::options()
            .read(true)
            .write(true)
            .open(UDMABUF_PATH)
            .map_err(|e| AllocError::Unavailable {
                kind: "udmabuf",
                why: format!("{UDMABUF_PATH}: {e}"),
            })?;
        Ok(UdmabufAllocator {
            dev: dev.into(),
            count: 0,
        })
    }
}

impl Allocator for UdmabufAllocator {
    fn kind(&self) -> BufferKind {
        BufferKind::Udmabuf
    }

    fn describe(&self) -> String {
        format!("udmabuf {UDMABUF_PATH}")
    }

    fn allocate(&mut self, layout: &FrameLayout) -> Result<Buffer, AllocError> {
        layout.validate()?;
        let kind = BufferKind::Udmabuf;
        let size = allocation_size(layout);
        self.count += 1;
        let memfd = super::memfd::create_unsealed(
            kind,
            &format!("frameshare-udmabuf-{}", self.count),
            size,
        )?;
        // udmabuf requires F_SEAL_SHRINK (pages cannot vanish) and refuses F_SEAL_WRITE.
        rustix::fs::fcntl_add_seals(&memfd, SealFlags::SHRINK | SealFlags::SEAL)
            .map_err(sys_err(kind, "F_ADD_SEALS", None))?;
        let fd = sys::udmabuf::create(self.dev.as_fd(), memfd.as_fd(), 0, size)
            .map_err(sys_err(kind, "UDMABUF_CREATE", Some(UDMABUF_PATH.into())))?;
        let _ = sys::dma_buf::set_name(
            fd.as_fd(),
            &format!("frameshare {} {}", layout.fourcc(), self.count),
        );
        Ok(Buffer::from_fds(kind, layout.clone(), vec![fd])?)
    }
}
