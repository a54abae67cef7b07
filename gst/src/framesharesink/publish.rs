//! What `framesharesink` does with each buffer, apart from GStreamer's object plumbing: an
//! [`Outlet`] owns the [`Publisher`] and decides, per buffer, how it crosses.
//!
//! - **Shared** (zero copy): every memory of the buffer is fd memory — a dma-buf from upstream
//!   (`v4l2src io-mode=dmabuf`), or a buffer of the pool the sink proposed. The fds are checked
//!   and announced once, when the buffer is first seen; after that it is recognised by identity
//!   (each memory's inode and offset) and crosses as an id. The `GstBuffer` is held, so upstream
//!   cannot reuse it, until every consumer released it (their release fences waited for).
//! - **Copied**: anything else (system memory from an upstream that refused the pool). The sink
//!   copies into buffers of its own, counts the copies and bytes, and warns once.

use std::collections::HashMap;
use std::time::Duration;

use frameshare::alloc::{Allocator, AllocatorSpec};
use frameshare::bus::{PublishError, Publisher};
use frameshare::meta::{Colorimetry, FrameMeta, Matrix, Range};
use frameshare::{Buffer, BufferKind, FrameLayout};
use gst_video::prelude::*;

use crate::fdmem;
use crate::format::{self, LayoutError, MemorySpan};
use crate::pool::{self, Registry};

/// Buffers the sink allocates for copies.
const COPY_BUFFERS: usize = 4;

/// A buffer's identity: each memory's (device, inode, offset into the fd).
pub type Key = Vec<(u64, u64, usize)>;

/// Errors publishing a buffer.
#[derive(Debug, thiserror::Error)]
pub enum OutletError {
    /// The publisher failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The buffer's layout could not be described.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The copy buffers could not be allocated.
    #[error("allocating buffers to copy into")]
    Alloc(#[source] frameshare::alloc::AllocError),
    /// The copy failed (mapping either side).
    #[error("copying a frame: {0}")]
    Copy(String),
    /// Waiting was interrupted (the element is flushing).
    #[error("flushing")]
    Flushing,
}

/// How the current buffers cross.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Idle,
    Shared {
        kind: BufferKind,
        layout: FrameLayout,
    },
    Copied {
        layout: FrameLayout,
    },
}

/// What happened to one buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Published without a copy, as buffer `id`; `new`: first seen now (its fds announced),
    /// `key`: its identity (device, inode, offset of each memory).
    Shared {
        /// The buffer's id in the stream.
        id: u32,
        /// First seen now.
        new: bool,
        /// Its identity.
        key: Key,
    },
    /// Published through a copy; `first`: the first copy (warn now).
    Copied {
        /// This was the first copy.
        first: bool,
    },
    /// No buffer was free (or release fences did not signal): the frame was dropped.
    Dropped,
}

/// Counters, for the element's read-only properties.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutletStats {
    /// Frames published.
    pub published: u64,
    /// Frames that crossed without a copy.
    pub shared: u64,
    /// Frames copied.
    pub copies: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
}

/// Why a buffer cannot be shared as it is.
#[derive(Debug)]
struct NotShareable(String);

/// A buffer ready to be shared: its key, and the frameshare buffer if it is new.
struct Shareable {
    key: Key,
    fresh: Option<Buffer>,
}

/// The publisher and what the sink tracks around it. See the [module docs](self).
pub struct Outlet {
    publisher: Publisher,
    mode: Mode,
    by_key: HashMap<Key, u32>,
    held: HashMap<u32, gst::Buffer>,
    retired: Vec<(u32, gst::Buffer)>,
    registry: Registry,
    spec: AllocatorSpec,
    copy_alloc: Option<Box<dyn Allocator>>,
    seq: u64,
    stats: OutletStats,
    why_copied: Option<String>,
}

impl Outlet {
    /// An outlet around `publisher`; buffers of the sink's pool are recognised by `registry`,
    /// copies go into buffers from `spec`.
    pub fn new(publisher: Publisher, registry: Registry, spec: AllocatorSpec) -> Outlet {
        Outlet {
            publisher,
            mode: Mode::Idle,
            by_key: HashMap::new(),
            held: HashMap::new(),
            retired: Vec::new(),
            registry,
            spec,
            copy_alloc: None,
            seq: 0,
            stats: OutletStats::default(),
            why_copied: None,
        }
    }

    /// The publisher (for its fd, waker and consumer wait).
    pub fn publisher_mut(&mut self) -> &mut Publisher {
        &mut self.publisher
    }

    /// Counters so far.
    pub fn stats(&self) -> OutletStats {
        self.stats
    }

    /// Why the last copy was needed.
    pub fn why_copied(&self) -> Option<&str> {
        self.why_copied.as_deref()
    }

    /// Serves consumers without waiting and gives back to upstream the buffers every consumer
    /// released.
    pub fn service(&mut self) -> Result<(), PublishError> {
        self.publisher.dispatch(Some(Duration::ZERO))?;
        self.collect_released();
        Ok(())
    }

    fn collect_released(&mut self) {
        for id in self.publisher.take_released() {
            self.held.remove(&id);
        }
        let publisher = &self.publisher;
        self.retired
            .retain(|(id, _)| publisher.buffer(*id).is_some());
    }

    /// The caps changed: the buffers there were retire.
    pub fn reset(&mut self) -> Result<(), PublishError> {
        self.retire_all()
    }

    fn retire_all(&mut self) -> Result<(), PublishError> {
        self.collect_released();
        self.publisher.set_buffers(Vec::new())?;
        self.retired.extend(self.held.drain());
        self.by_key.clear();
        self.mode = Mode::Idle;
        Ok(())
    }

    /// Publishes `buffer` (of caps `info`): shared when its memory allows, else copied.
    /// `flushing` is polled while waiting for consumers to give buffers back.
    pub fn publish(
        &mut self,
        buffer: &gst::Buffer,
        info: &gst_video::VideoInfo,
        flushing: &dyn Fn() -> bool,
    ) -> Result<Outcome, OutletError> {
        self.collect_released();
        let meta = self.frame_meta(info);
        match self.shareable(buffer, info) {
            Ok(s) => self.publish_shared(buffer, s, meta, flushing),
            Err(NotShareable(why)) => {
                let first = self.why_copied.is_none();
                self.why_copied = Some(why);
                self.publish_copy(buffer, info, meta, first)
            }
        }
    }

    fn frame_meta(&mut self, info: &gst_video::VideoInfo) -> FrameMeta {
        let c = info.colorimetry();
        let matrix = match c.matrix() {
            gst_video::VideoColorMatrix::Bt601 => Matrix::Bt601,
            gst_video::VideoColorMatrix::Bt709 => Matrix::Bt709,
            gst_video::VideoColorMatrix::Bt2020 => Matrix::Bt2020,
            gst_video::VideoColorMatrix::Rgb => Matrix::Rgb,
            _ => Matrix::Unknown,
        };
        let range = match c.range() {
            gst_video::VideoColorRange::Range0_255 => Range::Full,
            gst_video::VideoColorRange::Range16_235 => Range::Limited,
            _ => Range::Unknown,
        };
        let mut meta = FrameMeta::default();
        meta.source_seq = Some(self.seq);
        meta.colorimetry = Some(Colorimetry {
            matrix,
            range,
            ..Colorimetry::default()
        });
        meta
    }

    /// Whether `buffer` can cross as it is, and if it is new, its checked frameshare buffer.
    fn shareable(
        &self,
        buffer: &gst::Buffer,
        info: &gst_video::VideoInfo,
    ) -> Result<Shareable, NotShareable> {
        let mut key = Key::new();
        let mut spans = Vec::new();
        let mut start = 0u64;
        for mem in buffer.iter_memories() {
            let fd_mem = mem
                .downcast_memory_ref::<gst_allocators::FdMemory>()
                .ok_or_else(|| {
                    NotShareable(format!(
                        "upstream's memory is {} (not fd memory)",
                        mem.allocator()
                            .map(|a| a.type_().name().to_owned())
                            .unwrap_or_else(|| "of no allocator".into())
                    ))
                })?;
            let (dev, ino) = fdmem::with_memory_fd(fd_mem, pool::identity)
                .ok_or_else(|| NotShareable("fd memory without an fd".into()))?
                .map_err(|e| NotShareable(format!("fstat of upstream's fd: {e}")))?;
            key.push((dev, ino, mem.offset()));
            spans.push(MemorySpan {
                start,
                size: mem.size() as u64,
                fd_offset: mem.offset() as u64,
            });
            start += mem.size() as u64;
        }
        if key.is_empty() {
            return Err(NotShareable("an empty buffer".into()));
        }
        if self.by_key.contains_key(&key) {
            return Ok(Shareable { key, fresh: None });
        }
        // First sight: describe it, check it, keep our own handles on its fds.
        let (offsets, strides) = match buffer.meta::<gst_video::VideoMeta>() {
            Some(m) => (m.offset().to_vec(), m.stride().to_vec()),
            None => (info.offset().to_vec(), info.stride().to_vec()),
        };
        let mut fds = Vec::new();
        let mut sizes = Vec::new();
        let mut dma_buf = true;
        let mut kind = None;
        for mem in buffer.iter_memories() {
            let fd_mem = mem
                .downcast_memory_ref::<gst_allocators::FdMemory>()
                .expect("checked above");
            dma_buf &= mem.is_memory_type::<gst_allocators::DmaBufMemory>();
            let fd = fdmem::with_memory_fd(fd_mem, |fd| fd.try_clone_to_owned())
                .expect("checked above")
                .map_err(|e| NotShareable(format!("dup of upstream's fd: {e}")))?;
            let id = pool::identity(std::os::fd::AsFd::as_fd(&fd))
                .map_err(|e| NotShareable(format!("fstat: {e}")))?;
            kind = kind.or_else(|| {
                self.registry
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&id)
                    .copied()
            });
            let size = rustix::fs::seek(&fd, rustix::fs::SeekFrom::End(0))
                .map_err(|e| NotShareable(format!("size of upstream's fd: {e}")))?;
            sizes.push(size);
            fds.push(fd);
        }
        // A dma-buf not from our pool is a device's export (a camera's, mostly).
        let kind = kind.unwrap_or(if dma_buf {
            BufferKind::V4l2Export
        } else {
            BufferKind::Memfd
        });
        let layout = format::layout_of(info, &offsets, &strides, &spans, &sizes)
            .map_err(|e| NotShareable(e.to_string()))?;
        let fresh = Buffer::from_fds(kind, layout, fds)
            .map_err(|e| NotShareable(format!("upstream's fds cannot be shared: {e}")))?;
        Ok(Shareable {
            key,
            fresh: Some(fresh),
        })
    }

    fn publish_shared(
        &mut self,
        buffer: &gst::Buffer,
        s: Shareable,
        meta: FrameMeta,
        flushing: &dyn Fn() -> bool,
    ) -> Result<Outcome, OutletError> {
        let new = s.fresh.is_some();
        let key = s.key.clone();
        let id = match s.fresh {
            None => self.by_key[&s.key],
            Some(b) => {
                let mode = Mode::Shared {
                    kind: b.kind(),
                    layout: b.layout().clone(),
                };
                if self.mode != mode {
                    self.retire_all()?;
                    self.mode = mode;
                }
                self.collect_released();
                let id = match self.publisher.add_buffers(vec![b.clone()]) {
                    Ok(ids) => ids[0],
                    Err(PublishError::TooManyBuffers) => {
                        // Upstream went through more buffers than ids: start over.
                        let mode = self.mode.clone();
                        self.retire_all()?;
                        self.mode = mode;
                        self.publisher.add_buffers(vec![b])?[0]
                    }
                    Err(e) => return Err(e.into()),
                };
                self.by_key.insert(s.key, id);
                id
            }
        };
        loop {
            match self.publisher.publish(id, self.seq, meta.clone(), None) {
                Ok(()) => break,
                // The same GstBuffer again while consumers still hold it (a source that
                // pushes one buffer twice): wait for them.
                Err(PublishError::Busy(_)) => {
                    if flushing() {
                        return Err(OutletError::Flushing);
                    }
                    match self.publisher.dispatch(Some(Duration::from_millis(50))) {
                        Ok(_) | Err(PublishError::Interrupted) => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.collect_released();
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.seq += 1;
        self.held.insert(id, buffer.clone());
        self.stats.published += 1;
        self.stats.shared += 1;
        Ok(Outcome::Shared { id, new, key })
    }

    fn publish_copy(
        &mut self,
        buffer: &gst::Buffer,
        info: &gst_video::VideoInfo,
        meta: FrameMeta,
        first: bool,
    ) -> Result<Outcome, OutletError> {
        let size = info.size() as u64;
        let span = MemorySpan {
            start: 0,
            size,
            fd_offset: 0,
        };
        let layout = format::layout_of(info, info.offset(), info.stride(), &[span], &[size])?;
        let mode = Mode::Copied {
            layout: layout.clone(),
        };
        if self.mode != mode {
            self.retire_all()?;
            if self.copy_alloc.is_none() {
                self.copy_alloc = Some(self.spec.open().map_err(OutletError::Alloc)?);
            }
            let alloc = self.copy_alloc.as_mut().expect("opened above");
            let buffers = (0..COPY_BUFFERS)
                .map(|_| alloc.allocate(&layout))
                .collect::<Result<Vec<_>, _>>()
                .map_err(OutletError::Alloc)?;
            self.publisher.set_buffers(buffers)?;
            self.mode = mode;
        }
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info)
            .map_err(|e| OutletError::Copy(e.to_string()))?;
        let seq = self.seq;
        let Some(mut loan) = self.publisher.loan()? else {
            return Ok(Outcome::Dropped);
        };
        let mut bytes = 0u64;
        {
            let mut access = loan.write()?;
            for plane in 0..layout.planes().len() {
                let src = frame
                    .plane_data(plane as u32)
                    .map_err(|e| OutletError::Copy(e.to_string()))?;
                let stride = frame.plane_stride()[plane] as usize;
                let row_bytes = layout.plane_row_bytes(plane);
                for row in 0..layout.plane_rows(plane) {
                    let at = row as usize * stride;
                    access
                        .row_mut(plane, row)
                        .copy_from_slice(&src[at..at + row_bytes]);
                    bytes += row_bytes as u64;
                }
            }
        }
        *loan.meta_mut() = meta;
        loan.publish(seq)?;
        self.seq += 1;
        self.stats.published += 1;
        self.stats.copies += 1;
        self.stats.bytes_copied += bytes;
        Ok(Outcome::Copied { first })
    }

    /// Ends the stream (consumers told, their frames waited for) and gives every buffer back
    /// upstream.
    pub fn finish(self) -> Result<(), PublishError> {
        let Outlet {
            publisher, held, ..
        } = self;
        let r = publisher.finish().map(|_| ());
        drop(held);
        r
    }
}
