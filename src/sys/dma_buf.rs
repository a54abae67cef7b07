//! dma-buf ioctls (`linux/dma-buf.h`): CPU-access bracketing and naming.
#![allow(unsafe_code)]

use std::os::fd::BorrowedFd;

use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Setter};

/// `struct dma_buf_sync`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DmaBufSync {
    /// `DMA_BUF_SYNC_*` flags.
    pub flags: u64,
}

/// `DMA_BUF_SYNC_READ`.
pub const SYNC_READ: u64 = 1;
/// `DMA_BUF_SYNC_WRITE`.
pub const SYNC_WRITE: u64 = 2;
/// `DMA_BUF_SYNC_START`.
pub const SYNC_START: u64 = 0;
/// `DMA_BUF_SYNC_END`.
pub const SYNC_END: u64 = 4;

const DMA_BUF_BASE: u8 = b'b';
const DMA_BUF_IOCTL_SYNC: rustix::ioctl::Opcode = opcode::write::<DmaBufSync>(DMA_BUF_BASE, 0);
// The kernel declares SET_NAME with a `const char *` argument type, so its size field is 8.
const DMA_BUF_SET_NAME_B: rustix::ioctl::Opcode = opcode::write::<u64>(DMA_BUF_BASE, 1);

/// `DMA_BUF_IOCTL_SYNC`: begin or end CPU access. Retries on `EINTR`/`EAGAIN` as the uAPI asks.
pub fn sync(fd: BorrowedFd<'_>, flags: u64) -> Result<(), Errno> {
    loop {
        // SAFETY: DMA_BUF_IOCTL_SYNC reads one struct dma_buf_sync, which Setter passes by pointer.
        match unsafe {
            ioctl(
                fd,
                Setter::<DMA_BUF_IOCTL_SYNC, DmaBufSync>::new(DmaBufSync { flags }),
            )
        } {
            Err(Errno::INTR) | Err(Errno::AGAIN) => continue,
            r => return r,
        }
    }
}

/// `DMA_BUF_SET_NAME`: names the buffer in `/proc/*/fdinfo` and debugfs (at most 32 bytes).
pub fn set_name(fd: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    let mut buf = [0u8; 32];
    let n = name.len().min(31);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: the kernel reads a NUL-terminated string of at most DMA_BUF_NAME_LEN (32) bytes
    // from the pointer; buf is 32 bytes with a NUL at index n <= 31, alive across the call.
    unsafe {
        ioctl(
            fd,
            rustix::ioctl::IntegerSetter::<DMA_BUF_SET_NAME_B>::new_pointer(
                buf.as_mut_ptr().cast(),
            ),
        )
    }
}
