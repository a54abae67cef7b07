//! CPU mappings of a buffer ([`BufferMapping`]) and the RAII guard for one CPU access
//! ([`CpuAccess`]): `DMA_BUF_IOCTL_SYNC` START/END around access to dma-bufs, and, for memory a
//! peer can shrink (POSIX shm), the report that it did — the SIGBUS guard kept this process
//! alive and the access saw zero pages.

use std::os::fd::AsFd;
use std::sync::Arc;

use super::{Buffer, BufferError, BufferKind, Memory};
use crate::format::FrameLayout;
use crate::sys::dma_buf;
use crate::sys::mem::MappedRegion;
use crate::sys::sysv;

/// CPU mappings of a buffer's memory objects; unmapped (or detached) on drop.
#[derive(Debug)]
pub struct BufferMapping {
    buffer: Buffer,
    regions: Vec<MappedRegion>,
    /// The buffer's id in its session, for messages.
    id: Option<u32>,
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

impl Buffer {
    /// Maps every memory object for CPU access (`MAP_SHARED`, or `shmat` for SysV). Memory the
    /// peer can shrink (POSIX shm, which cannot be sealed) is mapped under the SIGBUS guard.
    pub fn map(&self, writable: bool) -> Result<BufferMapping, BufferError> {
        let kind = self.kind;
        let guarded = kind.can_shrink();
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
                    let mapped = if guarded {
                        MappedRegion::map_guarded(fd.as_fd(), len as usize, writable)
                    } else {
                        MappedRegion::map(fd.as_fd(), len as usize, writable)
                    };
                    mapped.map_err(|errno| BufferError::Sys {
                        kind,
                        op: "mmap",
                        errno,
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
            id: None,
        })
    }
}

impl BufferMapping {
    /// The buffer this maps.
    pub fn buffer(&self) -> &Buffer {
        &self.buffer
    }

    /// Names the buffer's id in its session, for messages ("buffer 3 was truncated …").
    pub fn with_id(mut self, id: u32) -> Self {
        self.id = Some(id);
        self
    }

    /// Memory object `i`'s mapping.
    #[cfg(feature = "vulkan")]
    pub(crate) fn region(&self, i: usize) -> &MappedRegion {
        &self.regions[i]
    }

    /// Whether the memory shrank under this mapping (a peer truncated a POSIX shm object): the
    /// pages now read as zeros. The buffer's contents are lost for good.
    pub fn truncated(&self) -> bool {
        self.regions.iter().any(MappedRegion::truncated)
    }

    /// `Err` ([`BufferError::Truncated`]) if [`BufferMapping::truncated`].
    pub fn check_intact(&self) -> Result<(), BufferError> {
        if self.truncated() {
            return Err(self.truncated_error());
        }
        Ok(())
    }

    fn truncated_error(&self) -> BufferError {
        BufferError::Truncated {
            kind: self.buffer.kind,
            id: self.id,
        }
    }

    /// Begins CPU access. For dma-bufs this issues `DMA_BUF_IOCTL_SYNC` START on every fd now
    /// and END when the guard drops (or [`CpuAccess::end`] is called), so caches and implicit
    /// fences are honoured; for other kinds it is free. If a START fails, the fds already
    /// started are ended before the error returns. A buffer that was truncated under an
    /// earlier access is refused.
    pub fn access(&mut self, access: Access) -> Result<CpuAccess<'_>, BufferError> {
        if self.truncated() {
            return Err(self.truncated_error());
        }
        let dma = self.buffer.kind.is_dma_buf();
        sync_start(&self.buffer, access.sync_flags())?;
        Ok(CpuAccess {
            mapping: self,
            access,
            dma,
            ended: false,
        })
    }
}

/// Starts each item in order; if one fails, ends those already started (last first) and
/// returns its error, so a partial start never outlives the call.
fn begin_each<T, E>(
    items: &[T],
    mut start: impl FnMut(&T) -> Result<(), E>,
    mut end: impl FnMut(&T),
) -> Result<(), E> {
    for (i, item) in items.iter().enumerate() {
        if let Err(e) = start(item) {
            items[..i].iter().rev().for_each(&mut end);
            return Err(e);
        }
    }
    Ok(())
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
/// [`CpuAccess::end`] ends it too and reports what went wrong during the access.
pub struct CpuAccess<'a> {
    mapping: &'a mut BufferMapping,
    access: Access,
    dma: bool,
    ended: bool,
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

    /// Ends the access and says whether it was sound: an error if the peer truncated the
    /// memory during it (what was read is zeros, what was written is lost). Readers must call
    /// this before trusting what they read.
    pub fn end(mut self) -> Result<(), BufferError> {
        self.finish();
        if self.mapping.truncated() {
            return Err(self.mapping.truncated_error());
        }
        Ok(())
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.ended, true) || !self.dma {
            return;
        }
        sync_end(&self.mapping.buffer, self.access.sync_flags());
    }
}

impl Drop for CpuAccess<'_> {
    fn drop(&mut self) {
        self.finish();
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
        self.by_id[i] = Some(buffer.map(writable)?.with_id(id));
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
    /// Begins read access through a shared mapping (see [`SharedRead`]). A buffer that was
    /// truncated under an earlier access is refused.
    pub fn read_shared(self: &Arc<Self>) -> Result<SharedRead, BufferError> {
        if self.truncated() {
            return Err(self.truncated_error());
        }
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
    begin_each(
        &buffer.fds(),
        |fd| dma_buf::sync(*fd, dma_buf::SYNC_START | flags),
        |fd| {
            let _ = dma_buf::sync(*fd, dma_buf::SYNC_END | flags);
        },
    )
    .map_err(|errno| BufferError::Sys {
        kind: buffer.kind,
        op: "DMA_BUF_IOCTL_SYNC(START)",
        errno,
    })
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

impl SharedRead {
    /// Ends the access and says whether what was read can be trusted: an error if the peer
    /// truncated the memory meanwhile (the bytes read were zeros), like [`CpuAccess::end`].
    pub fn end(self) -> Result<(), BufferError> {
        if self.mapping.truncated() {
            return Err(self.mapping.truncated_error());
        }
        Ok(())
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

    #[test]
    fn a_failed_start_ends_the_ones_already_started() {
        // Three fds; the third START fails: the first two must be ENDed (last first), the
        // third never.
        let mut log = Vec::new();
        let log_cell = std::cell::RefCell::new(&mut log);
        let r = begin_each(
            &[0, 1, 2],
            |i| {
                log_cell.borrow_mut().push(format!("start {i}"));
                if *i == 2 {
                    Err("EIO")
                } else {
                    Ok(())
                }
            },
            |i| log_cell.borrow_mut().push(format!("end {i}")),
        );
        assert_eq!(r, Err("EIO"));
        assert_eq!(
            log,
            ["start 0", "start 1", "start 2", "end 1", "end 0"].map(String::from)
        );
        let mut ended = 0;
        assert_eq!(
            begin_each(&[0, 1], |_| Ok::<_, ()>(()), |_| ended += 1),
            Ok(())
        );
        assert_eq!(ended, 0);
    }
}
