//! Buffer allocators: the [`Allocator`] trait, one backend per file, and [`open`], which turns a
//! command-line name (`auto`, `memfd`, `dma-heap:cma`, …) into an allocator, saying what `auto`
//! chose and why.

pub mod dma_heap;
#[cfg(feature = "kms")]
pub mod drm_dumb;
#[cfg(feature = "gbm")]
pub mod gbm;
pub mod memfd;
pub mod posix_shm;
pub mod sysv_shm;
pub mod udmabuf;

use std::path::PathBuf;

use rustix::io::Errno;

use crate::buffer::{Buffer, BufferError, BufferKind};
use crate::format::{FormatError, FrameLayout};

/// Something that makes frame buffers of one kind.
pub trait Allocator: Send {
    /// The kind of buffer it makes.
    fn kind(&self) -> BufferKind;

    /// A one-line description (kind and device), e.g. `dma-heap /dev/dma_heap/system`.
    fn describe(&self) -> String {
        self.kind().name().to_owned()
    }

    /// Allocates memory for `layout` (rounded up to whole pages) and wraps it as a [`Buffer`].
    fn allocate(&mut self, layout: &FrameLayout) -> Result<Buffer, AllocError>;
}

/// Errors from allocators.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// This machine cannot make this kind (device node missing, kernel too old, …).
    #[error("{kind} is not available here: {why}")]
    Unavailable {
        /// The kind asked for.
        kind: &'static str,
        /// Why not.
        why: String,
    },
    /// A system call failed.
    #[error("{kind}: {op}{} failed: {errno}", path.as_ref().map(|p| format!(" on {}", p.display())).unwrap_or_default())]
    Sys {
        /// The allocator.
        kind: BufferKind,
        /// What was attempted.
        op: &'static str,
        /// The device or name involved.
        path: Option<PathBuf>,
        /// The error.
        errno: Errno,
    },
    /// Unknown allocator name.
    #[error("unknown allocator {0:?} (want auto, dma-heap[:NAME], udmabuf, drm-dumb[:DRIVER], gbm, memfd, posix-shm, sysv-shm)")]
    UnknownName(String),
    /// The layout cannot be allocated.
    #[error(transparent)]
    Layout(#[from] FormatError),
    /// The allocated memory failed the buffer checks.
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

pub(crate) fn sys_err(
    kind: BufferKind,
    op: &'static str,
    path: Option<PathBuf>,
) -> impl FnOnce(Errno) -> AllocError {
    move |errno| AllocError::Sys {
        kind,
        op,
        path,
        errno,
    }
}

/// Bytes to allocate for a layout: its size rounded up to whole pages.
pub fn allocation_size(layout: &FrameLayout) -> u64 {
    let page = crate::sys::mem::page_size() as u64;
    layout.size().max(layout.required_size(0)).div_ceil(page) * page
}

/// The order `auto` tries: dma-bufs first (importable by GPUs, displays and cameras), then memfd.
pub const AUTO_ORDER: [&str; 4] = ["dma-heap", "udmabuf", "gbm", "memfd"];

/// Opens an allocator by name: `auto`, `dma-heap` (system heap), `dma-heap:NAME`, `udmabuf`,
/// `gbm`, `memfd`, `posix-shm`, `sysv-shm`. For `auto`, the second value says what was chosen
/// and why the better ones were passed over.
pub fn open(name: &str) -> Result<(Box<dyn Allocator>, String), AllocError> {
    if name == "auto" {
        let mut passed = Vec::new();
        for candidate in AUTO_ORDER {
            match open(candidate) {
                Ok((a, _)) => {
                    let why = if passed.is_empty() {
                        format!("auto chose {} (the best kind)", a.describe())
                    } else {
                        format!(
                            "auto chose {}; passed over: {}",
                            a.describe(),
                            passed.join("; ")
                        )
                    };
                    return Ok((a, why));
                }
                Err(e) => passed.push(e.to_string()),
            }
        }
        unreachable!("memfd is always available on Linux >= 3.17");
    }
    let (kind, arg) = name
        .split_once(':')
        .map_or((name, None), |(k, a)| (k, Some(a)));
    let a: Box<dyn Allocator> = match (kind, arg) {
        ("memfd", None) => Box::new(memfd::MemfdAllocator::new()),
        ("posix-shm", None) => Box::new(posix_shm::PosixShmAllocator::new()),
        ("sysv-shm", None) => Box::new(sysv_shm::SysvShmAllocator::new()),
        ("dma-heap", heap) => Box::new(dma_heap::DmaHeapAllocator::open(heap.unwrap_or("system"))?),
        ("udmabuf", None) => Box::new(udmabuf::UdmabufAllocator::open()?),
        #[cfg(feature = "kms")]
        ("drm-dumb", driver) => Box::new(drm_dumb::DrmDumbAllocator::open(driver)?),
        #[cfg(not(feature = "kms"))]
        ("drm-dumb", _) => return Err(unavailable("drm-dumb", "kms")),
        #[cfg(feature = "gbm")]
        ("gbm", node) => Box::new(self::gbm::GbmAllocator::open(node)?),
        #[cfg(not(feature = "gbm"))]
        ("gbm", _) => return Err(unavailable("gbm", "gbm")),
        _ => return Err(AllocError::UnknownName(name.to_owned())),
    };
    let d = a.describe();
    Ok((a, d))
}

/// An allocator this build left out.
#[cfg(any(not(feature = "gbm"), not(feature = "kms")))]
fn unavailable(kind: &'static str, feature: &str) -> AllocError {
    AllocError::Unavailable {
        kind,
        why: format!("this build has no {kind} support (build with --features {feature})"),
    }
}
