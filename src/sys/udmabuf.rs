//! `linux/udmabuf.h`: `UDMABUF_CREATE` (a dma-buf over a sealed memfd's pages).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::ioctl::opcode;

#[repr(C)]
struct UdmabufCreate {
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
}

const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;
const UDMABUF_CREATE: rustix::ioctl::Opcode = opcode::write::<UdmabufCreate>(b'u', 0x42);

/// Makes a dma-buf of `size` bytes (page multiple) of `memfd` from `offset` (page multiple).
/// The memfd must be sealed with `F_SEAL_SHRINK` and not `F_SEAL_WRITE`.
pub fn create(
    udmabuf_dev: BorrowedFd<'_>,
    memfd: BorrowedFd<'_>,
    offset: u64,
    size: u64,
) -> Result<OwnedFd, Errno> {
    let mut arg = UdmabufCreate {
        memfd: memfd.as_raw_fd() as u32,
        flags: UDMABUF_FLAGS_CLOEXEC,
        offset,
        size,
    };
    // SAFETY: UDMABUF_CREATE reads one udmabuf_create and returns a new dma-buf fd.
    unsafe {
        rustix::ioctl::ioctl(
            udmabuf_dev,
            super::FdReturning::<UDMABUF_CREATE, UdmabufCreate>::new(&mut arg),
        )
    }
}
