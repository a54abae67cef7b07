//! The buffer handle: a frame layout plus the memory objects that hold its planes (fds the buffer
//! owns, or a SysV segment id), checked against each other; and CPU mappings of it, with an RAII
//! guard that brackets `DMA_BUF_IOCTL_SYNC` around CPU access to dma-bufs.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::io::Errno;

use crate::format::{FormatError, FrameLayout};
use crate::sys::mem::MappedRegion;
use crate::sys::{dma_buf, sysv};

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
    /// A SysV segment owned by someone else, or with loose permissions.
    #[error("sysv-shm buffer: segment {id}: {why}")]
    BadSegment {
        /// Segment id.
        id: i32,
        /// What is wrong.
        why: String,
    },
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
}

/// Size and type of a memory fd, as the kernel reports it.
#[derive(Debug, Clone, Copy)]
pub struct FdInfo {
    /// Bytes (`lseek(SEEK_END)`, which dma-bufs, memfds and shm objects all answer).
    pub size: u64,
    /// Whether the fd is a dma-buf (its filesystem is `dmabuf`).
    pub is_dma_buf: bool,
}

const DMA_BUF_MAGIC: i64 = 0x444d_4142;

/// Classifies an fd and measures it; fails for fds that are not memory (pipes, sockets, …).
pub fn inspect_fd(
    kind: BufferKind,
    fd_index: usize,
    fd: BorrowedFd<'_>,
) -> Result<FdInfo, BufferError> {
    let st = rustix::fs::fstat(fd).map_err(|errno| BufferError::Sys {
        kind,
        op: "fstat",
        errno,
    })?;
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
    let wrong = |what: String| BufferError::WrongFdType {
        kind,
        fd_index,
        what,
        expected: if kind.is_dma_buf() {
            "a dma-buf"
        } else {
            "a shared-memory file"
        },
    };
    if !matches!(
        ft,
        rustix::fs::FileType::RegularFile | rustix::fs::FileType::Unknown
    ) {
        return Err(wrong(format!("a {ft:?}")));
    }
    let fs = rustix::fs::fstatfs(fd).map_err(|errno| BufferError::Sys {
        kind,
        op: "fstatfs",
        errno,
    })?;
    let is_dma_buf = fs.f_type as i64 == DMA_BUF_MAGIC;
    if kind.is_dma_buf() != is_dma_buf {
        return Err(wrong(if is_dma_buf {
            "a dma-buf".into()
        } else {
            format!("a file on filesystem 0x{:x}", fs.f_type)
        }));
    }
    let size = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
        .map_err(|errno| wrong(format!("not seekable ({errno})")))?;
    // Put the offset back: fds are shared with the peer and offsets with them.
    let _ = rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(0));
    Ok(FdInfo { size, is_dma_buf })
}

impl Buffer {
    /// Wraps fds made by an allocator or received from a peer, after checking them against the
    /// layout: the layout is valid, the fd count matches, each fd is the promised kind of object
    /// (dma-buf or shared-memory file; memfds sealed against shrinking) and big enough.
    pub fn from_fds(
        kind: BufferKind,
        layout: FrameLayout,
        fds: Vec<OwnedFd>,
    ) -> Result<Self, BufferError> {
        layout.validate()?;
        if kind == BufferKind::SysvShm || fds.len() != layout.fd_count() {
            return Err(BufferError::FdCount {
                kind,
                want: layout.fd_count(),
                got: fds.len(),
            });
        }
        for (i, fd) in fds.iter().enumerate() {
            let info = inspect_fd(kind, i, fd.as_fd())?;
            layout.check_fits(i as u32, info.size)?;
            if kind == BufferKind::Memfd {
                let seals = rustix::fs::fcntl_get_seals(fd)
                    .map_err(|_| BufferError::Unsealed { fd_index: i })?;
                if !seals.contains(rustix::fs::SealFlags::SHRINK) {
                    return Err(BufferError::Unsealed { fd_index: i });
                }
            }
        }
        crate::counters::bump(&crate::counters::BUFFERS);
        Ok(Buffer {
            kind,
            layout,
            memory: Memory::Fds(fds.into_iter().map(Arc::new).collect()),
        })
    }

    /// Wraps a SysV segment id after checking that it exists, belongs to this user, is not
    /// readable by others and is big enough for the layout.
    pub fn from_sysv(layout: FrameLayout, id: i32) -> Result<Self, BufferError> {
        layout.validate()?;
        if layout.fd_count() != 1 {
            return Err(BufferError::FdCount {
                kind: BufferKind::SysvShm,
                want: layout.fd_count(),
                got: 1,
            });
        }
        let info = sysv::stat(id).map_err(|errno| BufferError::BadSegment {
            id,
            why: format!("IPC_STAT: {errno}"),
        })?;
        let uid = rustix::process::geteuid().as_raw();
        if info.uid != uid {
            return Err(BufferError::BadSegment {
                id,
                why: format!("owned by uid {}, not {uid}", info.uid),
            });
        }
        if info.mode & 0o077 != 0 {
            return Err(BufferError::BadSegment {
                id,
                why: format!("mode {:o} is open to others", info.mode),
            });
        }
        layout.check_fits(0, info.size)?;
        let kind = BufferKind::SysvShm;
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

    /// The fds (empty for SysV).
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        match &self.memory {
            Memory::Fds(fds) => fds.iter().map(|f| f.as_fd()).collect(),
            Memory::Sysv { .. } => Vec::new(),
        }
    }

    /// The SysV segment id, for SysV buffers.
    pub fn sysv_id(&self) -> Option<i32> {
        match self.memory {
            Memory::Sysv { id, .. } => Some(id),
            Memory::Fds(_) => None,
        }
    }

    /// Maps every memory object for CPU access (`MAP_SHARED`, or `shmat` for SysV).
    pub fn map(&self, writable: bool) -> Result<BufferMapping, BufferError> {
        let kind = self.kind;
        let regions = match &self.memory {
            Memory::Fds(fds) => fds
                .iter()
                .enumerate()
                .map(|(i, fd)| {
                    let len = if i == 0 {
                        self.layout.size().max(self.layout.required_size(0))
                    } else {
                        self.layout.required_size(i as u32)
                    };
                    MappedRegion::map(fd.as_fd(), len as usize, writable).map_err(|errno| {
                        BufferError::Sys {
                            kind,
                            op: "mmap",
                            errno,
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Memory::Sysv { id, .. } => {
                let ptr = sysv::attach(*id, writable).map_err(|errno| BufferError::Sys {
                    kind,
                    op: "shmat",
                    errno,
                })?;
                vec![MappedRegion::from_sysv(
                    ptr,
                    self.layout.size() as usize,
                    writable,
                )]
            }
        };
        crate::counters::bump(&crate::counters::MAPPINGS);
        Ok(BufferMapping {
            buffer: self.clone(),
            regions,
        })
    }
}

/// CPU mappings of a buffer's memory objects; unmapped (or detached) on drop.
#[derive(Debug)]
pub struct BufferMapping {
    buffer: Buffer,
    regions: Vec<MappedRegion>,
}

/// Which way the CPU is about to touch a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only.
    Read,
    /// Write only.
    Write,
    /// Read and write.
    ReadWrite,
}

impl Access {
    fn sync_flags(self) -> u64 {
        match self {
            Access::Read => dma_buf::SYNC_READ,
            Access::Write => dma_buf::SYNC_WRITE,
            Access::ReadWrite => dma_buf::SYNC_READ | dma_buf::SYNC_WRITE,
        }
    }
}

impl BufferMapping {
    /// The buffer this maps.
    pub fn buffer(&self) -> &Buffer {
        &self.buffer
    }

    /// Memory object `i`'s mapping.
    #[cfg(feature = "vulkan")]
    pub(crate) fn region(&self, i: usize) -> &MappedRegion {
        &self.regions[i]
    }

    /// Begins CPU access. For dma-bufs this issues `DMA_BUF_IOCTL_SYNC` START now and END when
    /// the guard drops, so caches and implicit fences are honoured; for other kinds it is free.
    pub fn access(&mut self, access: Access) -> Result<CpuAccess<'_>, BufferError> {
        let dma = self.buffer.kind.is_dma_buf();
        if dma {
            for fd in self.buffer.fds() {
                dma_buf::sync(fd, dma_buf::SYNC_START | access.sync_flags()).map_err(|errno| {
                    BufferError::Sys {
                        kind: self.buffer.kind,
                        op: "DMA_BUF_IOCTL_SYNC(START)",
                        errno,
                    }
                })?;
            }
        }
        Ok(CpuAccess {
            mapping: self,
            access,
            dma,
        })
    }
}

impl Drop for BufferMapping {
    fn drop(&mut self) {
        let sysv = self.buffer.kind == BufferKind::SysvShm;
        for r in &mut self.regions {
            if let Err(e) = r.unmap(sysv) {
                log::error!("{} buffer: unmapping failed: {e}", self.buffer.kind);
            }
        }
    }
}

/// Reading a frame's pixels row by row, however the access was obtained ([`CpuAccess`],
/// [`SharedRead`]): what checks and conversions on the CPU take.
pub trait PixelRows {
    /// The layout.
    fn layout(&self) -> &FrameLayout;
    /// The pixel bytes of row `row` of plane `plane` (stride padding excluded).
    fn row(&self, plane: usize, row: u32) -> &[u8];
    /// The frame as tightly packed RGBA8 (see [`crate::format::pixel::to_rgba`]).
    fn to_rgba(&self) -> Vec<u8> {
        crate::format::pixel::to_rgba(self.layout(), |plane, y| self.row(plane, y))
    }
}

impl PixelRows for CpuAccess<'_> {
    fn layout(&self) -> &FrameLayout {
        CpuAccess::layout(self)
    }
    fn row(&self, plane: usize, row: u32) -> &[u8] {
        CpuAccess::row(self, plane, row)
    }
}

impl PixelRows for SharedRead {
    fn layout(&self) -> &FrameLayout {
        SharedRead::layout(self)
    }
    fn row(&self, plane: usize, row: u32) -> &[u8] {
        SharedRead::row(self, plane, row)
    }
}

/// CPU access to a mapped buffer, plane row by plane row; ends the dma-buf sync bracket on drop.
pub struct CpuAccess<'a> {
    mapping: &'a mut BufferMapping,
    access: Access,
    dma: bool,
}

impl CpuAccess<'_> {
    /// The layout.
    pub fn layout(&self) -> &FrameLayout {
        &self.mapping.buffer.layout
    }

    fn row_range(&self, plane: usize, row: u32) -> (usize, std::ops::Range<usize>) {
        let l = &self.mapping.buffer.layout;
        let p = l.planes()[plane];
        let start = p.offset as usize + row as usize * p.stride as usize;
        (p.fd_index as usize, start..start + l.plane_row_bytes(plane))
    }

    /// The pixel bytes of row `row` of plane `plane` (stride padding excluded).
    pub fn row(&self, plane: usize, row: u32) -> &[u8] {
        let (fd, r) = self.row_range(plane, row);
        &self.mapping.regions[fd].as_slice()[r]
    }

    /// All the bytes of memory object `fd_index` (as mapped: the planes it holds and their
    /// padding), for code that copies whole frames (copying baselines, staging uploads).
    pub fn bytes(&self, fd_index: usize) -> &[u8] {
        self.mapping.regions[fd_index].as_slice()
    }

    /// The same, writable; panics if the access or mapping is read-only (a programming error).
    pub fn bytes_mut(&mut self, fd_index: usize) -> &mut [u8] {
        assert!(self.access != Access::Read, "bytes_mut under read access");
        self.mapping.regions[fd_index].as_mut_slice()
    }

    /// The frame as tightly packed RGBA8 ([`PixelRows::to_rgba`], without importing the trait).
    pub fn to_rgba(&self) -> Vec<u8> {
        PixelRows::to_rgba(self)
    }

    /// Writable row; panics if the access or mapping is read-only (a programming error).
    pub fn row_mut(&mut self, plane: usize, row: u32) -> &mut [u8] {
        assert!(self.access != Access::Read, "row_mut under read access");
        let (fd, r) = self.row_range(plane, row);
        &mut self.mapping.regions[fd].as_mut_slice()[r]
    }
}

impl Drop for CpuAccess<'_> {
    fn drop(&mut self) {
        if !self.dma {
            return;
        }
        for fd in self.mapping.buffer.fds() {
            if let Err(e) = dma_buf::sync(fd, dma_buf::SYNC_END | self.access.sync_flags()) {
                log::error!(
                    "{} buffer: DMA_BUF_IOCTL_SYNC(END) failed: {e}",
                    self.mapping.buffer.kind
                );
            }
        }
    }
}

/// CPU mappings of a pool's buffers by buffer id, made once per buffer (sinks that read frames on
/// the CPU keep one of these).
#[derive(Debug, Default)]
pub struct Mappings {
    by_id: Vec<Option<BufferMapping>>,
}

impl Mappings {
    /// Maps `buffer` (read-only unless `writable`) as id `id`, replacing any earlier one.
    pub fn insert(&mut self, id: u32, buffer: &Buffer, writable: bool) -> Result<(), BufferError> {
        let i = id as usize;
        if self.by_id.len() <= i {
            self.by_id.resize_with(i + 1, || None);
        }
        self.by_id[i] = Some(buffer.map(writable)?);
        Ok(())
    }

    /// Unmaps id `id`.
    pub fn remove(&mut self, id: u32) {
        if let Some(m) = self.by_id.get_mut(id as usize) {
            *m = None;
        }
    }

    /// The mapping of id `id`, if added.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut BufferMapping> {
        self.by_id.get_mut(id as usize)?.as_mut()
    }
}

/// Read access to a shared mapping (`Arc<BufferMapping>`), owning its share: what a frame
/// hands out for reading on the CPU while the subscriber keeps the mapping for the next frame
/// in the same buffer. For dma-bufs it brackets `DMA_BUF_IOCTL_SYNC` READ START/END like
/// [`CpuAccess`]; a START that fails part-way ENDs what it started.
#[derive(Debug)]
pub struct SharedRead {
    mapping: Arc<BufferMapping>,
}

impl BufferMapping {
    /// Begins read access through a shared mapping (see [`SharedRead`]).
    pub fn read_shared(self: &Arc<Self>) -> Result<SharedRead, BufferError> {
        sync_start(&self.buffer, dma_buf::SYNC_READ)?;
        Ok(SharedRead {
            mapping: self.clone(),
        })
    }

    /// Begins write access through a shared, writable mapping (see [`SharedWrite`]). Panics if
    /// the mapping is read-only (a programming error).
    pub fn write_shared(self: &Arc<Self>) -> Result<SharedWrite, BufferError> {
        assert!(
            self.regions.iter().all(|r| r.is_writable()),
            "write_shared on a read-only mapping"
        );
        sync_start(&self.buffer, dma_buf::SYNC_WRITE)?;
        Ok(SharedWrite {
            mapping: self.clone(),
        })
    }

    /// Detaches the mapping from the buffer: each region's pages are replaced, at the same
    /// addresses, by a private copy of what they hold now (see `MappedRegion::detach`).
    /// Whoever reads or writes through the mapping's addresses keeps the same bytes, but the
    /// buffer and the mapping go separate ways: what the producer writes next is not seen here,
    /// and what is written here does not reach the buffer. For bindings whose views (a NumPy
    /// array) can outlive the frame they were made for: detached before the frame goes back,
    /// such a view never reads a recycled buffer. Returns the bytes copied (0 if it was
    /// detached already). A detached mapping shows the buffer no more: map it again.
    pub fn detach(&self) -> Result<u64, BufferError> {
        let sysv = self.buffer.kind == BufferKind::SysvShm;
        let mut copied = 0u64;
        for r in &self.regions {
            copied += r.detach(sysv).map_err(|errno| BufferError::Sys {
                kind: self.buffer.kind,
                op: "mremap (detaching a mapping)",
                errno,
            })? as u64;
        }
        Ok(copied)
    }

    /// Whether [`BufferMapping::detach`] ran (the mapping no longer shows the buffer).
    pub fn is_detached(&self) -> bool {
        self.regions.iter().any(|r| r.is_detached())
    }
}

/// `DMA_BUF_IOCTL_SYNC` START for each dma-buf fd of `buffer` (nothing for other kinds); a
/// START that fails part-way ENDs what it started.
fn sync_start(buffer: &Buffer, flags: u64) -> Result<(), BufferError> {
    if !buffer.kind.is_dma_buf() {
        return Ok(());
    }
    let fds = buffer.fds();
    for (i, fd) in fds.iter().enumerate() {
        if let Err(errno) = dma_buf::sync(*fd, dma_buf::SYNC_START | flags) {
            for done in &fds[..i] {
                let _ = dma_buf::sync(*done, dma_buf::SYNC_END | flags);
            }
            return Err(BufferError::Sys {
                kind: buffer.kind,
                op: "DMA_BUF_IOCTL_SYNC(START)",
                errno,
            });
        }
    }
    Ok(())
}

/// `DMA_BUF_IOCTL_SYNC` END for each dma-buf fd of `buffer`, errors logged (a guard's drop).
fn sync_end(buffer: &Buffer, flags: u64) {
    if !buffer.kind.is_dma_buf() {
        return;
    }
    for fd in buffer.fds() {
        if let Err(e) = dma_buf::sync(fd, dma_buf::SYNC_END | flags) {
            log::error!(
                "{} buffer: DMA_BUF_IOCTL_SYNC(END) failed: {e}",
                buffer.kind
            );
        }
    }
}

impl SharedRead {
    /// The layout.
    pub fn layout(&self) -> &FrameLayout {
        &self.mapping.buffer.layout
    }

    /// The pixel bytes of row `row` of plane `plane` (stride padding excluded).
    pub fn row(&self, plane: usize, row: u32) -> &[u8] {
        let l = &self.mapping.buffer.layout;
        let p = &l.planes()[plane];
        let start = p.offset as usize + row as usize * p.stride as usize;
        &self.mapping.regions[p.fd_index as usize].as_slice()
            [start..start + l.plane_row_bytes(plane)]
    }

    /// All the bytes of memory object `fd_index`, as mapped.
    pub fn bytes(&self, fd_index: usize) -> &[u8] {
        self.mapping.regions[fd_index].as_slice()
    }

    /// The start address and length of memory object `fd_index`'s mapping (for bindings that
    /// expose it as an array without a copy; valid while this guard lives).
    pub fn region_ptr(&self, fd_index: usize) -> (*const u8, usize) {
        let r = &self.mapping.regions[fd_index];
        (r.as_ptr(), r.len())
    }
}

impl Drop for SharedRead {
    fn drop(&mut self) {
        sync_end(&self.mapping.buffer, dma_buf::SYNC_READ);
    }
}

/// Write access to a shared, writable mapping (`Arc<BufferMapping>`), owning its share: what a
/// binding holds while a loaned buffer is filled through views the borrow checker cannot see
/// (a NumPy array, a C pointer). For dma-bufs it brackets `DMA_BUF_IOCTL_SYNC` WRITE START/END
/// like [`CpuAccess`].
#[derive(Debug)]
pub struct SharedWrite {
    mapping: Arc<BufferMapping>,
}

impl SharedWrite {
    /// The layout.
    pub fn layout(&self) -> &FrameLayout {
        &self.mapping.buffer.layout
    }

    /// The start address and length of memory object `fd_index`'s mapping, writable (for
    /// bindings that expose it as an array without a copy; valid while the mapping lives, and
    /// to be written only while the buffer is on loan).
    pub fn region_ptr(&self, fd_index: usize) -> (*mut u8, usize) {
        let r = &self.mapping.regions[fd_index];
        (r.as_ptr().cast_mut(), r.len())
    }
}

impl Drop for SharedWrite {
    fn drop(&mut self) {
        sync_end(&self.mapping.buffer, dma_buf::SYNC_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::AllocatorSpec;
    use crate::format::Fourcc;

    fn fill(buffer: &Buffer, byte: u8) {
        let mut m = buffer.map(true).unwrap();
        m.access(Access::Write).unwrap().bytes_mut(0).fill(byte);
    }

    /// A detached mapping keeps the bytes it showed, at the same address, and goes its own way:
    /// later writes to the buffer do not reach it, and writes through it do not reach the
    /// buffer. Memory objects of every kind that maps through `mmap` or `shmat`.
    #[test]
    fn detach_keeps_the_bytes_at_the_same_address_and_parts_from_the_buffer() {
        let layout = FrameLayout::linear(Fourcc::NV12, 64, 48, 64).unwrap();
        for spec in [
            AllocatorSpec::Memfd,
            AllocatorSpec::PosixShm,
            AllocatorSpec::SysvShm,
        ] {
            let buffer = spec.open().unwrap().allocate(&layout).unwrap();
            fill(&buffer, 0x11);
            let reader = Arc::new(buffer.map(false).unwrap());
            let before = reader.read_shared().unwrap().region_ptr(0);
            assert!(!reader.is_detached());

            assert_eq!(reader.detach().unwrap(), before.1 as u64, "{spec}");
            assert!(reader.is_detached());
            assert_eq!(reader.detach().unwrap(), 0, "{spec}: detached once");
            let guard = reader.read_shared().unwrap();
            assert_eq!(
                guard.region_ptr(0),
                before,
                "{spec}: same address and length"
            );
            assert!(guard.bytes(0).iter().all(|&b| b == 0x11), "{spec}");

            fill(&buffer, 0x22);
            assert!(
                guard.bytes(0).iter().all(|&b| b == 0x11),
                "{spec}: what the producer writes next does not reach a detached mapping"
            );
            let fresh = buffer.map(false).unwrap();
            assert_eq!(fresh.regions[0].as_slice()[0], 0x22, "{spec}");

            // Written through, a detached writable mapping keeps its writes to itself.
            let mut writer = buffer.map(true).unwrap();
            let (ptr, len) = (writer.regions[0].as_ptr(), writer.regions[0].len());
            assert_eq!(writer.detach().unwrap(), len as u64);
            writer
                .access(Access::Write)
                .unwrap()
                .bytes_mut(0)
                .fill(0x33);
            assert_eq!(writer.regions[0].as_ptr(), ptr);
            assert_eq!(writer.regions[0].as_slice()[len - 1], 0x33);
            assert_eq!(fresh.regions[0].as_slice()[len - 1], 0x22, "{spec}");
            let w = Arc::new(writer);
            drop(w.write_shared().unwrap());
            drop((guard, w, reader)); // unmapped (munmap, even for SysV) without error
        }
    }
}
