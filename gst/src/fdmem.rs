//! The plugin's unsafe edge: fds handed to GStreamer's fd and dma-buf allocators (which take
//! ownership of a raw fd), and a value tied to a `GstBuffer`'s life through mini-object qdata
//! (a frame given back when the buffer is freed). Everything else in the crate is safe.
#![allow(unsafe_code)]

use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::OnceLock;

use gst::glib;
use gst::glib::translate::IntoGlib;
use gst_allocators::{DmaBufAllocator, FdAllocator, FdMemoryFlags};

/// Wraps `fd` (`size` bytes; a dma-buf when `dma_buf`) as a `GstMemory` that owns it: it is
/// closed when the memory is freed. The mapping, once made, is kept for the memory's life.
pub fn wrap_fd(fd: OwnedFd, size: usize, dma_buf: bool) -> Result<gst::Memory, glib::BoolError> {
    let raw = fd.into_raw_fd();
    let flags = FdMemoryFlags::KEEP_MAPPED;
    let made = if dma_buf {
        let alloc = DmaBufAllocator::new();
        // SAFETY: `raw` is an open fd we own (just taken out of its `OwnedFd`); the allocator
        // takes ownership and closes it when the memory is freed (no DONT_CLOSE flag).
        unsafe { alloc.alloc_with_flags(raw, size, flags) }
    } else {
        let alloc = FdAllocator::new();
        // SAFETY: as above: an fd we own, handed over to the memory, which closes it.
        unsafe { alloc.alloc(raw, size, flags) }
    };
    if made.is_err() {
        // The allocator failed before taking the fd (it returns NULL without touching it).
        // SAFETY: `raw` is still ours and open; this gives it back to an owner that closes it.
        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
    }
    made
}

/// Runs `f` on the fd inside an fd (or dma-buf) memory (`None` if it has none).
pub fn with_memory_fd<R>(
    mem: &gst_allocators::FdMemoryRef,
    f: impl FnOnce(BorrowedFd<'_>) -> R,
) -> Option<R> {
    let raw = mem.fd();
    if raw < 0 {
        return None;
    }
    // SAFETY: the memory owns `raw` and keeps it open while `mem` is borrowed, which outlasts
    // this borrow (it ends when `f` returns; `f` cannot keep a `BorrowedFd` past its lifetime).
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    Some(f(fd))
}

fn quark() -> glib::ffi::GQuark {
    static QUARK: OnceLock<glib::Quark> = OnceLock::new();
    QUARK
        .get_or_init(|| glib::Quark::from_str("frameshare-held-frame"))
        .into_glib()
}

unsafe extern "C" fn drop_boxed<T>(data: glib::ffi::gpointer) {
    // SAFETY: `data` is the `Box<T>` leaked by `tie_to_buffer`; qdata destroy notifies run once.
    drop(unsafe { Box::from_raw(data as *mut T) });
}

/// Keeps `value` until `buffer` is freed (its last reference dropped, wherever in the pipeline
/// that happens), then drops it on that thread.
pub fn tie_to_buffer<T: Send + 'static>(buffer: &mut gst::BufferRef, value: T) {
    let data = Box::into_raw(Box::new(value));
    // SAFETY: `buffer` is a valid, writable (we hold `&mut`) mini object; the quark's slot is set
    // once per buffer (a fresh buffer each frame), and GStreamer calls `drop_boxed::<T>` exactly
    // once, when the buffer is finalized or the slot replaced, with the pointer given here. `T`
    // is `Send`, so dropping it on whichever thread frees the buffer is sound.
    unsafe {
        gst::ffi::gst_mini_object_set_qdata(
            buffer.as_mut_ptr() as *mut gst::ffi::GstMiniObject,
            quark(),
            data as glib::ffi::gpointer,
            Some(drop_boxed::<T>),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Count(Arc<AtomicUsize>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_tied_value_goes_with_the_last_reference() {
        gst::init().unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut b = gst::Buffer::new();
        tie_to_buffer(b.get_mut().unwrap(), Count(dropped.clone()));
        let second = b.clone();
        drop(b);
        assert_eq!(dropped.load(Ordering::SeqCst), 0, "a reference is left");
        drop(second);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_wrapped_memfd_maps_its_bytes() {
        gst::init().unwrap();
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::io::write(&fd, b"frameshare").unwrap();
        let mem = wrap_fd(fd, 10, false).unwrap();
        assert!(mem.is_memory_type::<gst_allocators::FdMemory>());
        assert_eq!(&*mem.map_readable().unwrap(), b"frameshare");
    }
}
