//! Shared memory mappings (`mmap`/`munmap`) of an fd, owned by [`MappedRegion`], and their
//! detachment: the pages swapped for a private copy in place (`mremap`). Mappings of memory a
//! peer can shrink are guarded against SIGBUS ([`super::sigbus`]).
#![allow(unsafe_code)]

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::Mutex;

use rustix::io::Errno;
use rustix::mm::{MapFlags, MprotectFlags, MremapFlags, ProtFlags};

use super::sigbus::Guard;

/// A `MAP_SHARED` mapping of (part of) an fd; unmapped on drop.
#[derive(Debug)]
pub struct MappedRegion {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    /// Set once [`MappedRegion::detach`] replaced the pages with a private anonymous copy
    /// (unmapped with `munmap` then, whatever the region was made with).
    detached: Mutex<bool>,
    /// Registered with the SIGBUS handler (memory that can shrink under us).
    guard: Option<Guard>,
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
            detached: Mutex::new(false),
            guard: None,
        })
    }

    /// Like [`MappedRegion::map`], for memory a peer can shrink (a POSIX shm object): the
    /// mapping is registered with the SIGBUS handler, so a truncation turns its pages into zero
    /// pages instead of killing the process, and [`MappedRegion::truncated`] says so.
    pub fn map_guarded(fd: BorrowedFd<'_>, len: usize, writable: bool) -> Result<Self, Errno> {
        let mut region = Self::map(fd, len, writable)?;
        match Guard::register(region.ptr, len, writable) {
            Ok(g) => region.guard = Some(g),
            Err(e) => {
                region.unmap(false)?;
                return Err(e);
            }
        }
        Ok(region)
    }

    /// Whether the memory shrank under this (guarded) mapping, which now holds zero pages.
    pub fn truncated(&self) -> bool {
        self.guard.as_ref().is_some_and(Guard::truncated)
    }

    /// Wraps a SysV attachment (`shmat`) so that it shares the slice accessors; detached on drop
    /// by [`super::sysv::detach`] rather than `munmap`.
    pub(crate) fn from_sysv(ptr: NonNull<u8>, len: usize, writable: bool) -> Self {
        MappedRegion {
            ptr,
            len,
            writable,
            detached: Mutex::new(false),
            guard: None,
        }
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

    /// Whether the region was mapped writable.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The start address (for host-pointer imports such as `VK_EXT_external_memory_host`).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Whether [`MappedRegion::detach`] ran.
    pub fn is_detached(&self) -> bool {
        *self.detached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the region's pages, at the same address and with the same protection, by a
    /// private anonymous copy of what they hold now, in one step: a filled anonymous mapping is
    /// moved over the region (`mremap(MREMAP_FIXED)`, atomic under the process's mm lock). A
    /// reader through the region's address sees the same bytes before, during and after; from
    /// then on nothing another process writes reaches them, and writes through the address stay
    /// here. Returns the bytes copied (0 if it was already detached). `sysv`: the region is a
    /// `shmat` attachment, whose pages beyond the region's length (a segment bigger than the
    /// frame) are detached too, so no part of the segment stays attached.
    pub fn detach(&self, sysv: bool) -> Result<usize, Errno> {
        let mut detached = self.detached.lock().unwrap_or_else(|e| e.into_inner());
        if *detached || self.len == 0 {
            return Ok(0);
        }
        let len = self.len;
        // SAFETY: a fresh private anonymous mapping chosen by the kernel (null hint) aliases no
        // Rust object; it is ours alone until it is moved over the region below.
        let copy = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )?
        };
        // SAFETY: the region is a live mapping of `len` readable bytes owned by self; `copy` is a
        // fresh writable mapping of `len` bytes; they cannot overlap. The region may be written
        // concurrently only by a peer the protocol allows (as in `as_slice`); a byte it writes
        // during the copy lands in the shared buffer, not in the copy.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), copy.cast::<u8>(), len) };
        let unmap_copy = |e: Errno| {
            // SAFETY: `copy` is the fresh mapping above, never handed out.
            let _ = unsafe { rustix::mm::munmap(copy, len) };
            e
        };
        if !self.writable {
            // SAFETY: `copy..copy+len` is the fresh mapping above, referenced by nothing.
            unsafe { rustix::mm::mprotect(copy, len, MprotectFlags::READ) }.map_err(unmap_copy)?;
        }
        // SAFETY: both addresses are page-aligned (mmap/shmat results) and `len` bytes (rounded
        // up to pages) are mapped at each. The move replaces the region's pages with pages that
        // hold exactly the same bytes, in one system call under the mm lock, so every reference
        // into the region stays valid and reads the same values; no `&mut` into the region
        // exists (that needs `&mut self`). On success `copy` no longer exists as a mapping.
        unsafe {
            rustix::mm::mremap_fixed(
                copy,
                len,
                len,
                MremapFlags::MAYMOVE,
                self.ptr.as_ptr().cast(),
            )
        }
        .map_err(unmap_copy)?;
        *detached = true;
        if sysv {
            // Pages of the attachment past `len` (a segment bigger than the frame): shmdt finds
            // them by their offset from our address. EINVAL: there were none.
            match super::sysv::detach(self.ptr) {
                Ok(()) | Err(Errno::INVAL) => {}
                Err(e) => log::warn!("sysv-shm buffer: detaching the rest of a segment: {e}"),
            }
        }
        Ok(len)
    }

    /// Unmaps, for owners that know how the region was made.
    pub(crate) fn unmap(&mut self, sysv: bool) -> Result<(), Errno> {
        if self.len == 0 {
            return Ok(());
        }
        let len = std::mem::replace(&mut self.len, 0);
        // Unregister before the range can be reused by another mapping.
        self.guard = None;
        let sysv = sysv && !self.is_detached();
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
