//! Shared memory mappings (`mmap`/`munmap`) of an fd, owned by [`MappedRegion`].
#![allow(unsafe_code)]

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

/// A `MAP_SHARED` mapping of (part of) an fd; unmapped on drop.
#[derive(Debug)]
pub struct MappedRegion {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the region is plain shared memory; it is only reachable through &self/&mut self.
unsafe impl Send for MappedRegion {}
// SAFETY: as above: shared references give read-only access.
unsafe impl Sync for MappedRegion {}

impl MappedRegion {
    /// Maps `len` bytes of `fd` from offset 0, read-only or read-write, `MAP_SHARED`.
    pub fn map(fd: BorrowedFd<'_>, len: usize, writable: bool) -> Result<Self, Errno> {
        if len == 0 {
            return Err(Errno::INVAL);
        }
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (null hint) aliases no Rust object; the fd
        // is valid for the call; the result is owned by the returned value and unmapped on drop.
        let ptr =
            unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, fd, 0)? };
        Ok(MappedRegion {
            ptr: NonNull::new(ptr.cast()).ok_or(Errno::NOMEM)?,
            len,
            writable,
        })
    }

    /// Wraps a SysV attachment (`shmat`) so that it shares the slice accessors; detached on drop
    /// by [`super::sysv::detach`] rather than `munmap`.
    pub(crate) fn from_sysv(ptr: NonNull<u8>, len: usize, writable: bool) -> Self {
        MappedRegion { ptr, len, writable }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The mapped bytes. The peer may write them concurrently only when the protocol lets it
    /// (the producer never writes a buffer the consumer holds), which is what makes reading sound.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live mapping owned by self for self's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The mapped bytes, writable. Panics on a read-only mapping (a programming error).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        assert!(self.writable, "as_mut_slice on a read-only mapping");
        // SAFETY: as in as_slice, and &mut self guarantees exclusive access in this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The start address (for host-pointer imports such as `VK_EXT_external_memory_host`).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Unmaps, for owners that know how the region was made.
    pub(crate) fn unmap(&mut self, sysv: bool) -> Result<(), Errno> {
        if self.len == 0 {
            return Ok(());
        }
        let len = std::mem::replace(&mut self.len, 0);
        if sysv {
            super::sysv::detach(self.ptr)
        } else {
            // SAFETY: ptr/len came from mmap in `map` and nothing borrows the region (we hold
            // &mut self); len is zeroed first so a second call is a no-op.
            unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), len) }
        }
    }
}

/// Page size of this machine.
pub fn page_size() -> usize {
    rustix::param::page_size()
}
