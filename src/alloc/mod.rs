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

/// An allocator, named: what `--alloc` takes. Parsing is pure ([`str::parse`]); opening
/// touches devices ([`AllocatorSpec::open`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AllocatorSpec {
    /// The best kind this machine offers, in [`AUTO_ORDER`].
    Auto,
    /// A dma-heap (`None`: `system`).
    DmaHeap(Option<String>),
    /// udmabuf.
    Udmabuf,
    /// DRM dumb buffers on a card (`None`: the first KMS device; or a driver name or node).
    DrmDumb(Option<String>),
    /// GBM on a DRM node (`None`: the first render node).
    Gbm(Option<String>),
    /// memfd.
    Memfd,
    /// POSIX shm.
    PosixShm,
    /// SysV shm.
    SysvShm,
}

/// The order `auto` tries: dma-bufs first (importable by GPUs, displays and cameras), then memfd.
pub const AUTO_ORDER: [AllocatorSpec; 4] = [
    AllocatorSpec::DmaHeap(None),
    AllocatorSpec::Udmabuf,
    AllocatorSpec::Gbm(None),
    AllocatorSpec::Memfd,
];

impl std::str::FromStr for AllocatorSpec {
    type Err = AllocError;
    fn from_str(name: &str) -> Result<Self, AllocError> {
        let (kind, arg) = name
            .split_once(':')
            .map_or((name, None), |(k, a)| (k, Some(a.to_owned())));
        Ok(match (kind, arg) {
            ("auto", None) => AllocatorSpec::Auto,
            ("memfd", None) => AllocatorSpec::Memfd,
            ("posix-shm", None) => AllocatorSpec::PosixShm,
            ("sysv-shm", None) => AllocatorSpec::SysvShm,
            ("dma-heap", heap) if heap.as_deref() != Some("") => AllocatorSpec::DmaHeap(heap),
            ("udmabuf", None) => AllocatorSpec::Udmabuf,
            ("drm-dumb", d) if d.as_deref() != Some("") => AllocatorSpec::DrmDumb(d),
            ("gbm", d) if d.as_deref() != Some("") => AllocatorSpec::Gbm(d),
            _ => return Err(AllocError::UnknownName(name.to_owned())),
        })
    }
}

impl std::fmt::Display for AllocatorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with = |f: &mut std::fmt::Formatter<'_>, k: &str, a: &Option<String>| match a {
            Some(a) => write!(f, "{k}:{a}"),
            None => f.write_str(k),
        };
        match self {
            AllocatorSpec::Auto => f.write_str("auto"),
            AllocatorSpec::DmaHeap(h) => with(f, "dma-heap", h),
            AllocatorSpec::Udmabuf => f.write_str("udmabuf"),
            AllocatorSpec::DrmDumb(d) => with(f, "drm-dumb", d),
            AllocatorSpec::Gbm(d) => with(f, "gbm", d),
            AllocatorSpec::Memfd => f.write_str("memfd"),
            AllocatorSpec::PosixShm => f.write_str("posix-shm"),
            AllocatorSpec::SysvShm => f.write_str("sysv-shm"),
        }
    }
}

impl AllocatorSpec {
    /// Opens the allocator.
    pub fn open(&self) -> Result<Box<dyn Allocator>, AllocError> {
        self.open_noted().map(|(a, _)| a)
    }

    /// Opens the allocator; the note says what it is and, for `auto`, what was chosen and why
    /// the better kinds were passed over.
    pub fn open_noted(&self) -> Result<(Box<dyn Allocator>, String), AllocError> {
        let a: Box<dyn Allocator> = match self {
            AllocatorSpec::Auto => {
                let mut passed = Vec::new();
                for candidate in &AUTO_ORDER {
                    match candidate.open() {
                        Ok(a) => {
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
                return Err(AllocError::Unavailable {
                    kind: "auto",
                    why: passed.join("; "),
                });
            }
            AllocatorSpec::Memfd => Box::new(memfd::MemfdAllocator::new()),
            AllocatorSpec::PosixShm => Box::new(posix_shm::PosixShmAllocator::new()),
            AllocatorSpec::SysvShm => Box::new(sysv_shm::SysvShmAllocator::new()),
            AllocatorSpec::DmaHeap(heap) => Box::new(dma_heap::DmaHeapAllocator::open(
                heap.as_deref().unwrap_or("system"),
            )?),
            AllocatorSpec::Udmabuf => Box::new(udmabuf::UdmabufAllocator::open()?),
            #[cfg(feature = "kms")]
            AllocatorSpec::DrmDumb(driver) => {
                Box::new(drm_dumb::DrmDumbAllocator::open(driver.as_deref())?)
            }
            #[cfg(not(feature = "kms"))]
            AllocatorSpec::DrmDumb(_) => return Err(unavailable("drm-dumb", "kms")),
            #[cfg(feature = "gbm")]
            AllocatorSpec::Gbm(node) => Box::new(self::gbm::GbmAllocator::open(node.as_deref())?),
            #[cfg(not(feature = "gbm"))]
            AllocatorSpec::Gbm(_) => return Err(unavailable("gbm", "gbm")),
        };
        let d = a.describe();
        Ok((a, d))
    }
}

/// Opens an allocator by name (see [`AllocatorSpec`]); for `auto`, the second value says what
/// was chosen and why the better ones were passed over.
pub fn open(name: &str) -> Result<(Box<dyn Allocator>, String), AllocError> {
    name.parse::<AllocatorSpec>()?.open_noted()
}

/// An allocator this build left out.
#[cfg(any(not(feature = "gbm"), not(feature = "kms")))]
fn unavailable(kind: &'static str, feature: &str) -> AllocError {
    AllocError::Unavailable {
        kind,
        why: format!("this build has no {kind} support (build with --features {feature})"),
    }
}
