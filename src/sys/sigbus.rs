//! Surviving a peer that shrinks shared memory under our mapping (libwayland's
//! `wl_shm_buffer_begin_access` pattern). A POSIX shm object cannot be sealed: whoever holds a
//! writable fd can `ftruncate` it, and the next access to the vanished pages raises SIGBUS,
//! which would kill this process. Mappings of such memory are registered here; a process-wide
//! SIGBUS handler (installed once, chained to the one before it) checks whether the faulting
//! address lies in a registered mapping and, if so, maps anonymous zero pages over the whole
//! mapping (`MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS`) and marks it truncated, so the access
//! completes (reading zeros, or writing into private memory) and the owner reports it when the
//! access ends. Faults anywhere else go to the previous handler (Rust's own guard-page handler,
//! or the default action: the process dies as it would have without us).
//!
//! The handler only loads and stores atomics in a fixed table and makes the `mmap` and
//! `sigaction` system calls: no allocation, no lock, nothing that is not async-signal-safe.
//! Each slot is a tiny seqlock, so the handler never trusts a slot that is being written.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

/// How many guarded mappings may exist at once (a session maps at most 64 buffers).
pub const MAX_GUARDED: usize = 1024;

struct Slot {
    /// Taken by a [`Guard`] (only its owner writes the fields below).
    claimed: AtomicBool,
    /// Even: the fields are stable; odd: being written.
    seq: AtomicU64,
    start: AtomicUsize,
    len: AtomicUsize,
    writable: AtomicBool,
    truncated: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            claimed: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            writable: AtomicBool::new(false),
            truncated: AtomicBool::new(false),
        }
    }

    /// Sets the range (`len` 0: none), as the slot's only writer.
    fn publish(&self, start: usize, len: usize, writable: bool) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.start.store(start, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
        self.writable.store(writable, Ordering::Relaxed);
        self.truncated.store(false, Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
    }

    /// The range, if it is stable and holds `addr`.
    fn holding(&self, addr: usize) -> Option<(usize, usize, bool)> {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            // Being (un)registered: its mapping is not in use by anyone who could fault.
            return None;
        }
        let start = self.start.load(Ordering::Relaxed);
        let len = self.len.load(Ordering::Relaxed);
        let writable = self.writable.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != s1 || len == 0 {
            return None;
        }
        (addr >= start && addr - start < len).then_some((start, len, writable))
    }
}

static TABLE: [Slot; MAX_GUARDED] = [const { Slot::new() }; MAX_GUARDED];
static INSTALL: Once = Once::new();
/// The SIGBUS action before ours, for faults that are not in a guarded mapping.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A registered mapping; unregisters on drop (before its owner unmaps it).
#[derive(Debug)]
pub struct Guard {
    slot: usize,
}

impl Guard {
    /// Registers `len` bytes at `start` (a whole mapping of ours, page-aligned) and makes sure
    /// the handler is installed. Fails with `ENOSPC` when [`MAX_GUARDED`] mappings are guarded.
    pub fn register(start: NonNull<u8>, len: usize, writable: bool) -> Result<Guard, Errno> {
        install()?;
        let slot = TABLE
            .iter()
            .position(|s| {
                s.claimed
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or(Errno::NOSPC)?;
        TABLE[slot].publish(start.as_ptr() as usize, len, writable);
        Ok(Guard { slot })
    }

    /// Whether a fault replaced the mapping with zero pages (the file shrank under it).
    pub fn truncated(&self) -> bool {
        TABLE[self.slot].truncated.load(Ordering::Acquire)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let slot = &TABLE[self.slot];
        slot.publish(0, 0, false);
        slot.claimed.store(false, Ordering::Release);
    }
}

fn install() -> Result<(), Errno> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid out-parameter; querying changes nothing.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: SIGBUS is a valid signal; a null new action only reads the current one.
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) } != 0 {
            result =
                Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL));
            return;
        }
        let _ = PREVIOUS.set(old);
        // SAFETY: as above, a zeroed sigaction is valid before its fields are set.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction =
            on_sigbus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: sa_mask is a valid sigset_t inside `sa`.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: the handler is async-signal-safe (see the module comment) and lives forever.
        if unsafe { libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) } != 0 {
            result =
                Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL));
        }
    });
    result
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &TABLE {
        let Some((start, len, writable)) = slot.holding(addr) else {
            continue;
        };
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: start..start+len is a mapping of ours that its owner keeps alive while it is
        // registered (it unregisters before unmapping); replacing its pages with private zero
        // pages in place changes what the faulting access reads, not which memory Rust code
        // may touch. rustix's raw syscall neither allocates nor touches errno.
        let mapped = unsafe {
            rustix::mm::mmap_anonymous(
                start as *mut c_void,
                len,
                prot,
                MapFlags::FIXED | MapFlags::PRIVATE,
            )
        };
        if mapped.is_ok() {
            slot.truncated.store(true, Ordering::Release);
            return;
        }
        break;
    }
    chain(sig, info, ctx);
}

/// Not ours (or we could not repair it): what would have happened without us.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let previous = PREVIOUS.get().map(|a| (a.sa_sigaction, a.sa_flags));
    match previous {
        Some((h, flags)) if h != libc::SIG_DFL && h != libc::SIG_IGN => {
            if flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed as an SA_SIGINFO handler with this
                // signature; we pass it the arguments the kernel gave us.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                    unsafe { std::mem::transmute(h) };
                f(sig, info, ctx);
            } else {
                // SAFETY: the previous handler was installed as a plain `void (*)(int)`.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
                f(sig);
            }
        }
        _ => {
            // Default action: put it back and return; the faulting access runs again and the
            // kernel delivers SIGBUS with the default action (raise covers a SIGBUS sent by
            // kill, which would not recur). Both calls are async-signal-safe.
            // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
                libc::raise(libc::SIGBUS);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A truncatable shmem file of `size` bytes, like a POSIX shm object.
    fn shmem(size: u64) -> std::os::fd::OwnedFd {
        let fd = rustix::fs::memfd_create("sigbus-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, size).unwrap();
        fd
    }

    #[test]
    fn a_truncated_guarded_mapping_reads_zeros_and_is_marked() {
        let page = rustix::param::page_size();
        let fd = shmem(4 * page as u64);
        rustix::io::pwrite(&fd, &[7u8; 16], 0).unwrap();
        let mut region =
            crate::sys::mem::MappedRegion::map_guarded(fd.as_fd(), 4 * page, false).unwrap();
        assert_eq!(region.as_slice()[0], 7);
        assert!(!region.truncated());
        rustix::fs::ftruncate(&fd, 0).unwrap();
        // Would be SIGBUS: the pages are gone. The guard maps zeros instead.
        let s = region.as_slice();
        assert_eq!((s[0], s[3 * page + 5]), (0, 0));
        assert!(region.truncated());
        region.unmap(false).unwrap();
    }

    #[test]
    fn slots_are_reused_and_a_fresh_guard_is_clean() {
        let page = rustix::param::page_size();
        for _ in 0..3 * MAX_GUARDED {
            let fd = shmem(page as u64);
            let mut region =
                crate::sys::mem::MappedRegion::map_guarded(fd.as_fd(), page, true).unwrap();
            assert!(!region.truncated());
            region.unmap(false).unwrap();
        }
    }
}
