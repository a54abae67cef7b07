//! `linux/dma-heap.h`: `DMA_HEAP_IOCTL_ALLOC`.
#![allow(unsafe_code)]

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Updater};

#[repr(C)]
#[derive(Debug, Default)]
struct DmaHeapAllocationData {
    len: u64,
    fd: u32,
    fd_flags: u32,
    heap_flags: u64,
}

const DMA_HEAP_IOCTL_ALLOC: rustix::ioctl::Opcode =
    opcode::read_write::<DmaHeapAllocationData>(b'H', 0);

/// Allocates `len` bytes from the heap opened as `heap`; returns the dma-buf (O_RDWR, CLOEXEC).
pub fn alloc(heap: BorrowedFd<'_>, len: u64) -> Result<OwnedFd, Errno> {
    let mut data = DmaHeapAllocationData {
        len,
        fd_flags: (libc::O_RDWR | libc::O_CLOEXEC) as u32,
        ..Default::default()
    };
    // SAFETY: DMA_HEAP_IOCTL_ALLOC reads and writes one dma_heap_allocation_data, alive across
    // the call.
    unsafe {
        ioctl(
            heap,
            Updater::<DMA_HEAP_IOCTL_ALLOC, DmaHeapAllocationData>::new(&mut data),
        )?
    };
    // SAFETY: on success the kernel installed a new fd in data.fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(data.fd as i32) })
}
