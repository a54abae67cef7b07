//! The raw system interface, the first of the crate's two unsafe islands (the second is the Vulkan
//! layer, `gpu::vulkan`, where ash makes every call `unsafe`).
//! Each submodule wraps one kernel interface in safe functions taking `BorrowedFd`/`OwnedFd`;
//! ioctls are declared once each, with rustix's `ioctl` patterns.
#![allow(unsafe_code)]

pub mod dma_buf;
pub mod dma_heap;
pub mod fd;
#[cfg(any(feature = "kms", feature = "gbm"))]
pub mod kms;
pub mod mem;
pub mod poll;
pub mod sigbus;
pub mod sw_sync;
pub mod sync_file;
pub mod sysv;
pub mod udmabuf;
#[cfg(feature = "v4l2")]
pub mod v4l2;

use std::ffi::c_void;
use std::os::fd::{FromRawFd, OwnedFd};

use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};

/// An ioctl whose argument struct is passed by pointer (and may be updated) and whose return
/// value is a new fd (`UDMABUF_CREATE`). The fd becomes an `OwnedFd` at once.
pub(crate) struct FdReturning<'a, const OPCODE: Opcode, T> {
    arg: &'a mut T,
}

impl<'a, const OPCODE: Opcode, T> FdReturning<'a, OPCODE, T> {
    /// # Safety
    /// `OPCODE` must be an ioctl that takes a pointer to a `T` and returns a new fd on success.
    pub(crate) unsafe fn new(arg: &'a mut T) -> Self {
        FdReturning { arg }
    }
}

// SAFETY: the constructor's contract makes OPCODE/T match; the pointer lives for the call.
unsafe impl<const OPCODE: Opcode, T> Ioctl for FdReturning<'_, OPCODE, T> {
    type Output = OwnedFd;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        OPCODE
    }

    fn as_ptr(&mut self) -> *mut c_void {
        (self.arg as *mut T).cast()
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<OwnedFd> {
        if out < 0 {
            return Err(rustix::io::Errno::BADF);
        }
        // SAFETY: per the constructor's contract a successful call returned a new fd that
        // nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(out) })
    }
}
