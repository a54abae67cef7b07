//! The buffer handle: a frame layout plus the memory objects that hold its planes (fds the buffer
//! owns, or a SysV segment id), checked against each other — fds classified before they are
//! touched ([`inspect`]), SysV ids attached only if the peer could attach them ([`peer`]) — and
//! CPU mappings of it ([`access`]), with an RAII guard that brackets `DMA_BUF_IOCTL_SYNC` around
//! CPU access to dma-bufs and reports memory a peer truncated under it.
//!
//! Memory a peer could shrink under our mapping, kind by kind: a dma-buf's size is fixed; a
//! memfd is refused unless sealed with `F_SEAL_SHRINK` (ours are sealed before they are shared);
//! a SysV segment cannot shrink; a POSIX shm object cannot be sealed, so it is *survived*: the
//! producer shares it read-only (the peer cannot `ftruncate` through its fd) and every mapping
//! of one, on either side, is guarded against SIGBUS and reports the truncation when the access
//! ends.

pub mod access;
pub mod inspect;
pub mod peer;

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::io::Errno;

pub use access::{Access, BufferMapping, CpuAccess, Mappings, PixelRows, SharedRead, SharedWrite};
pub use inspect::{classify_fd, inspect_fd, wait_for_refused_closes, FdClass, FdInfo};
pub use peer::{Credentials, SegmentOwner};

use crate::format::{FormatError, FrameLayout, Modifier};
use crate::sys::mem::MappedRegion;
use crate::sys::sysv;

/// The kind of memory behind a buffer; decides how it is shared, mapped and imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// `/dev/dma_heap/*` allocation (dma-buf).
    DmaHeap,
    /// A sealed memfd turned into a dma-buf by `/dev/udmabuf`.
    Udmabuf,
    /// A GBM buffer object exported as dma-buf(s).
    Gbm,
    /// A V4L2 capture buffer exported with `VIDIOC_EXPBUF` (dma-buf).
    V4l2Export,
    /// A DRM dumb buffer exported with PRIME (dma-buf).
    DrmDumb,
    /// A sealed `memfd_create` file.
    Memfd,
    /// A POSIX `shm_open` object (unlinked at once).
    PosixShm,
    /// A SysV `shmget` segment (no fd; crosses as its id).
    SysvShm,
}

impl BufferKind {
    /// Every kind, in wire-code order.
    pub const ALL: [BufferKind; 8] = [
        Self::DmaHeap,
        Self::Udmabuf,
        Self::Gbm,
        Self::V4l2Export,
        Self::DrmDumb,
        Self::Memfd,
        Self::PosixShm,
        Self::SysvShm,
    ];

    /// The name used on the command line and in reports (`dma-heap`, `memfd`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::DmaHeap => "dma-heap",
            Self::Udmabuf => "udmabuf",
            Self::Gbm => "gbm",
            Self::V4l2Export => "v4l2-export",
            Self::DrmDumb => "drm-dumb",
            Self::Memfd => "memfd",
            Self::PosixShm => "posix-shm",
            Self::SysvShm => "sysv-shm",
        }
    }

    /// Whether the fds are dma-bufs (importable by Vulkan dma-buf import, KMS, V4L2).
    pub fn is_dma_buf(self) -> bool {
        matches!(
            self,
            Self::DmaHeap | Self::Udmabuf | Self::Gbm | Self::V4l2Export | Self::DrmDumb
        )
    }

    /// Whether a peer holding the memory can shrink it under our mapping even after the checks
    /// (POSIX shm: it cannot be sealed). Such mappings are guarded against SIGBUS.
    pub fn can_shrink(self) -> bool {
        self == Self::PosixShm
    }

    /// The one-byte code on the wire.
    pub fn to_wire(self) -> u8 {
        Self::ALL.iter().position(|k| *k == self).unwrap() as u8 + 1
    }

    fn bit(self) -> u32 {
        1 << self.to_wire()
    }

    /// Decodes a wire code.
    pub fn from_wire(code: u8) -> Option<Self> {
        Self::ALL.get((code as usize).checked_sub(1)?).copied()
    }
}

/// A set of buffer kinds (what a consumer can import).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct KindSet(u32);

impl KindSet {
    /// No kind.
    pub const EMPTY: KindSet = KindSet(0);

    /// Every kind.
    pub fn all() -> KindSet {
        BufferKind::ALL.into_iter().collect()
    }

    /// The kinds whose fds are dma-bufs.
    pub fn dma_bufs() -> KindSet {
        BufferKind::ALL
            .into_iter()
            .filter(|k| k.is_dma_buf())
            .collect()
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: BufferKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Adds `kind`.
    pub fn insert(&mut self, kind: BufferKind) {
        self.0 |= kind.bit();
    }

    /// The set as its wire bits (bit `wire code` per kind).
    pub fn bits(self) -> u32 {
        self.0
    }

    /// A set from wire bits; bits of kinds this build does not know are dropped.
    pub fn from_bits(bits: u32) -> KindSet {
        KindSet(bits & KindSet::all().0)
    }
}

impl FromIterator<BufferKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = BufferKind>>(iter: I) -> Self {
        let mut s = KindSet::EMPTY;
        for k in iter {
            s.insert(k);
        }
        s
    }
}

impl fmt::Display for BufferKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BufferKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown buffer kind {s:?}"))
    }
}

/// Errors making, checking or mapping a buffer.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The layout is inconsistent or does not fit the memory.
    #[error(transparent)]
    Layout(#[from] FormatError),
    /// Layout names N memory objects but M fds came.
    #[error("{kind} buffer: layout uses {want} fd(s), {got} given")]
    FdCount {
        /// Buffer kind.
        kind: BufferKind,
        /// Fds the layout refers to.
        want: usize,
        /// Fds given.
        got: usize,
    },
    /// The fd is not the kind of object the buffer kind promises.
    #[error("{kind} buffer: fd {fd_index} is {what}, not {expected}")]
    WrongFdType {
        /// Buffer kind.
        kind: BufferKind,
        /// Which fd.
        fd_index: usize,
        /// What the fd turned out to be.
        what: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A memfd without the seals that stop its owner from shrinking it under our mapping.
    #[error("memfd buffer: fd {fd_index} lacks F_SEAL_SHRINK (a peer could truncate it under our mapping)")]
    Unsealed {
        /// Which fd.
        fd_index: usize,
    },
    /// A syscall on the buffer failed.
    #[error("{kind} buffer: {op} failed: {errno}")]
    Sys {
        /// Buffer kind.
        kind: BufferKind,
        /// What was attempted.
        op: &'static str,
        /// The error.
        errno: Errno,
    },
    /// A SysV segment that does not exist, or with loose permissions.
    #[error("sysv-shm buffer: segment {id}: {why}")]
    BadSegment {
        /// Segment id.
        id: i32,
        /// What is wrong.
        why: String,
    },
    /// A SysV segment the peer could not attach read-write itself (a confused-deputy attempt:
    /// attaching it for the peer would hand it memory it cannot reach).
    #[error("sysv-shm buffer: segment {id} ({owner}): the peer ({peer}) could not attach it read-write itself")]
    NotThePeers {
        /// Segment id.
        id: i32,
        /// Who owns it.
        owner: SegmentOwner,
        /// Who asked.
        peer: Credentials,
    },
    /// Shared memory with a tiled or otherwise non-linear layout: only LINEAR is meaningful for
    /// memory the CPU fills and reads.
    #[error("{kind} buffer: modifier {modifier} is not LINEAR (shared-memory buffers are read and written by the CPU, row by row)")]
    NotLinear {
        /// Buffer kind.
        kind: BufferKind,
        /// The modifier given.
        modifier: Modifier,
    },
    /// The peer shrank the memory under our mapping (a POSIX shm object truncated): the SIGBUS
    /// guard kept this process alive, but the buffer's pages are gone.
    #[error("{} was truncated by the peer while mapped", buffer_name(*.kind, *.id))]
    Truncated {
        /// Buffer kind.
        kind: BufferKind,
        /// The buffer's id in its session, if known.
        id: Option<u32>,
    },
}

fn buffer_name(kind: BufferKind, id: Option<u32>) -> String {
    match id {
        Some(id) => format!("buffer {id} ({kind})"),
        None => format!("a {kind} buffer"),
    }
}

/// Where a buffer's bytes live.
#[derive(Clone)]
pub enum Memory {
    /// One fd per memory object (usually one for all planes); shared handles, closed with the last.
    Fds(Vec<Arc<OwnedFd>>),
    /// A SysV segment, already marked for removal (`IPC_RMID`): it lives while attached, so the
    /// handle holds one attachment for as long as any clone of it lives.
    Sysv {
        /// Segment id.
        id: i32,
        /// The attachment that keeps the segment alive.
        keep_alive: Arc<SysvAttachment>,
    },
}

/// One `shmat` attachment, detached on drop.
#[derive(Debug)]
pub struct SysvAttachment {
    region: MappedRegion,
}

impl Drop for SysvAttachment {
    fn drop(&mut self) {
        if let Err(e) = self.region.unmap(true) {
            log::error!("sysv-shm buffer: shmdt failed: {e}");
        }
    }
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::fd::AsRawFd;
        match self {
            Memory::Fds(fds) => f
                .debug_tuple("Fds")
                .field(&fds.iter().map(|fd| fd.as_raw_fd()).collect::<Vec<_>>())
                .finish(),
            Memory::Sysv { id, .. } => f.debug_struct("Sysv").field("id", id).finish(),
        }
    }
}

/// A frame buffer: a checked layout and the memory holding it. Cheap to clone (fds are shared).
#[derive(Debug, Clone)]
pub struct Buffer {
    kind: BufferKind,
    layout: FrameLayout,
    memory: Memory,
    /// Read-only handles to the same memory, handed to peers instead of `memory`'s (POSIX shm:
    /// a peer must not be able to `ftruncate` it).
    peer_fds: Option<Vec<Arc<OwnedFd>>>,
}

impl Buffer {
    /// Wraps fds made by an allocator or received from a peer, after checking them against the
    /// layout: the layout is valid (and LINEAR for shared memory), the fd count matches, each fd
    /// is the promised kind of object — classified from the kernel's records before anything
    /// else touches it: a dma-buf, or a shared-memory file, memfds sealed against shrinking —
    /// and big enough. Refused fds are closed without waiting on whoever serves them.
    pub fn from_fds(
        kind: BufferKind,
        layout: FrameLayout,
        fds: Vec<OwnedFd>,
    ) -> Result<Self, BufferError> {
        if let Err(e) = Self::check_fds(kind, &layout, &fds) {
            inspect::release_refused(fds);
            return Err(e);
        }
        crate::counters::bump(&crate::counters::BUFFERS);
        Ok(Buffer {
            kind,
            layout,
            memory: Memory::Fds(fds.into_iter().map(Arc::new).collect()),
            peer_fds: None,
        })
    }

    fn check_fds(
        kind: BufferKind,
        layout: &FrameLayout,
        fds: &[OwnedFd],
    ) -> Result<(), BufferError> {
        layout.validate()?;
        if kind == BufferKind::SysvShm || fds.len() != layout.fd_count() {
            return Err(BufferError::FdCount {
                kind,
                want: layout.fd_count(),
                got: fds.len(),
            });
        }
        check_linear(kind, layout)?;
        for (i, fd) in fds.iter().enumerate() {
            let info = inspect_fd(kind, i, fd.as_fd())?;
            layout.check_fits(i as u32, info.size)?;
            if kind == BufferKind::Memfd
                && !info
                    .seals
                    .is_some_and(|s| s.contains(rustix::fs::SealFlags::SHRINK))
            {
                return Err(BufferError::Unsealed { fd_index: i });
            }
        }
        Ok(())
    }

    /// Hands peers `read_only` instead of this buffer's own fds (which stay for its own
    /// mappings): the same memory objects, opened read-only, so a peer cannot shrink them.
    pub(crate) fn share_read_only(mut self, read_only: Vec<OwnedFd>) -> Result<Self, BufferError> {
        let Memory::Fds(own) = &self.memory else {
            return Err(BufferError::FdCount {
                kind: self.kind,
                want: 0,
                got: read_only.len(),
            });
        };
        if read_only.len() != own.len() {
            return Err(BufferError::FdCount {
                kind: self.kind,
                want: own.len(),
                got: read_only.len(),
            });
        }
        self.peer_fds = Some(read_only.into_iter().map(Arc::new).collect());
        Ok(self)
    }

    /// Wraps a SysV segment id a peer sent, after checking that it exists, that the *peer*
    /// could attach it read-write itself (see [`peer`]), that it is not open to others and that
    /// it is big enough for the layout. Attaches it read-only.
    pub fn from_sysv(
        layout: FrameLayout,
        id: i32,
        peer: &Credentials,
    ) -> Result<Self, BufferError> {
        let kind = BufferKind::SysvShm;
        layout.validate()?;
        if layout.fd_count() != 1 {
            return Err(BufferError::FdCount {
                kind,
                want: layout.fd_count(),
                got: 1,
            });
        }
        check_linear(kind, &layout)?;
        let info = sysv::stat(id).map_err(|errno| BufferError::BadSegment {
            id,
            why: format!("IPC_STAT: {errno}"),
        })?;
        let owner = SegmentOwner::from(&info);
        if !peer::peer_may_access(&owner, peer, 0o6) {
            return Err(BufferError::NotThePeers {
                id,
                owner,
                peer: *peer,
            });
        }
        if info.mode & 0o077 != 0 {
            return Err(BufferError::BadSegment {
                id,
                why: format!("mode {:o} is open to others", info.mode),
            });
        }
        layout.check_fits(0, info.size)?;
        let ptr = sysv::attach(id, false).map_err(|errno| BufferError::Sys {
            kind,
            op: "shmat",
            errno,
        })?;
        let keep_alive = Arc::new(SysvAttachment {
            region: MappedRegion::from_sysv(ptr, info.size as usize, false),
        });
        crate::counters::bump(&crate::counters::BUFFERS);
        Ok(Buffer {
            kind,
            layout,
            memory: Memory::Sysv { id, keep_alive },
            peer_fds: None,
        })
    }

    /// The memory kind.
    pub fn kind(&self) -> BufferKind {
        self.kind
    }

    /// The checked layout.
    pub fn layout(&self) -> &FrameLayout {
        &self.layout
    }

    /// The memory objects.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The fds a peer gets (empty for SysV): read-only handles where the kind allows them
    /// (POSIX shm), else the buffer's own.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        match (&self.peer_fds, &self.memory) {
            (Some(fds), _) | (None, Memory::Fds(fds)) => fds.iter().map(|f| f.as_fd()).collect(),
            (None, Memory::Sysv { .. }) => Vec::new(),
        }
    }

    /// The SysV segment id, for SysV buffers.
    pub fn sysv_id(&self) -> Option<i32> {
        match self.memory {
            Memory::Sysv { id, .. } => Some(id),
            Memory::Fds(_) => None,
        }
    }
}

/// Shared memory is only ever LINEAR: the CPU fills and reads it row by row.
fn check_linear(kind: BufferKind, layout: &FrameLayout) -> Result<(), BufferError> {
    if kind.is_dma_buf() || layout.modifier() == Modifier::LINEAR {
        return Ok(());
    }
    Err(BufferError::NotLinear {
        kind,
        modifier: layout.modifier(),
    })
}
