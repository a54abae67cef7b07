//! The three ways to the frames' memory: exported MMAP buffers (export), our buffers queued
//! as DMABUF (import), and mapped MMAP buffers copied from (copy).

use std::os::fd::BorrowedFd;

use super::*;
use crate::alloc::Allocator;
use crate::buffer::{Buffer, BufferKind};
use crate::format::Modifier;
use crate::sys::v4l2::{self as sys, PlaneMap, QueueMem};

impl V4l2Source {
    pub(super) fn nplanes(&self) -> usize {
        self.format.planes.len().max(1)
    }

    pub(super) fn mode_err(&self, mode: Mode, why: String) -> V4l2Error {
        V4l2Error::Mode {
            path: self.path.clone(),
            mode: mode.name(),
            why,
        }
    }

    pub(super) fn ensure_idle(&self, mode: Mode) -> Result<(), V4l2Error> {
        if self.streaming || self.count > 0 {
            return Err(self.mode_err(mode, "buffers are already set up".into()));
        }
        Ok(())
    }

    pub(super) fn free_buffers(&mut self, memory: u32) {
        self.maps.clear();
        self.imports.clear();
        if let Err(e) = sys::reqbufs(self.fd(), self.buf_type, memory, 0) {
            log::debug!("V4L2 {}: REQBUFS(0): {e}", self.path.display());
        }
        self.count = 0;
        self.queued.clear();
    }

    /// Export mode: `count` device buffers, each exported as a dma-buf per memory plane.
    pub fn export_buffers(&mut self, count: u32) -> Result<Vec<Buffer>, V4l2Error> {
        self.ensure_idle(Mode::Export)?;
        let n = sys::reqbufs(self.fd(), self.buf_type, sys::MEMORY_MMAP, count)
            .map_err(self.sys_err("VIDIOC_REQBUFS(MMAP)"))?;
        if n == 0 {
            return Err(self.mode_err(Mode::Export, "the driver gave no buffers".into()));
        }
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut fds = Vec::new();
            for p in 0..self.nplanes() {
                match sys::expbuf(self.fd(), self.buf_type, i, p as u32) {
                    Ok(fd) => fds.push(fd),
                    Err(errno) => {
                        drop(out);
                        drop(fds);
                        self.free_buffers(sys::MEMORY_MMAP);
                        return Err(self.mode_err(
                            Mode::Export,
                            format!("VIDIOC_EXPBUF(buffer {i}, plane {p}) failed: {errno}"),
                        ));
                    }
                }
            }
            match Buffer::from_fds(BufferKind::V4l2Export, self.layout.clone(), fds) {
                Ok(b) => out.push(b),
                Err(e) => {
                    drop(out);
                    self.free_buffers(sys::MEMORY_MMAP);
                    return Err(e.into());
                }
            }
        }
        self.count = n;
        self.queued = vec![false; n as usize];
        self.mode = Some(Mode::Export);
        Ok(out)
    }

    /// Import mode: the device will write into `buffers` (dma-bufs whose layout matches
    /// [`V4l2Source::layout`]; where their strides differ the driver is asked for them first).
    pub fn attach(&mut self, buffers: &[Buffer]) -> Result<(), V4l2Error> {
        self.ensure_idle(Mode::Import)?;
        let first = buffers
            .first()
            .ok_or_else(|| self.mode_err(Mode::Import, "no buffers given".into()))?;
        let bl = first.layout().clone();
        if bl
            .planes()
            .iter()
            .zip(self.layout.planes())
            .any(|(a, b)| a.stride != b.stride)
        {
            // Ask the driver for the buffers' strides.
            let mut want = self.format.clone();
            for (i, p) in want.planes.iter_mut().enumerate() {
                if let Some(pl) = bl.planes().get(i) {
                    p.bytesperline = pl.stride;
                    p.sizeimage = 0;
                }
            }
            if let Ok(got) = sys::s_fmt(self.fd(), self.buf_type, &want) {
                if let Some(l) = layout_of(&got) {
                    self.format = got;
                    self.layout = l;
                }
            }
        }
        let mplane_separate = self.multiplanar() && self.format.planes.len() > 1;
        let mut slots = Vec::with_capacity(buffers.len());
        for (i, b) in buffers.iter().enumerate() {
            let l = b.layout();
            let bad = |why: String| self.mode_err(Mode::Import, format!("buffer {i}: {why}"));
            if !b.kind().is_dma_buf() {
                return Err(bad(format!(
                    "{} buffers cannot be queued (V4L2 imports dma-bufs)",
                    b.kind()
                )));
            }
            if (l.fourcc(), l.width(), l.height())
                != (
                    self.layout.fourcc(),
                    self.layout.width(),
                    self.layout.height(),
                )
            {
                return Err(bad(format!(
                    "is {} {}x{}, the camera captures {} {}x{}",
                    l.fourcc(),
                    l.width(),
                    l.height(),
                    self.layout.fourcc(),
                    self.layout.width(),
                    self.layout.height()
                )));
            }
            if l.modifier() != Modifier::LINEAR {
                return Err(bad(format!(
                    "modifier {} (cameras write LINEAR)",
                    l.modifier()
                )));
            }
            for (p, (have, want)) in l.planes().iter().zip(self.layout.planes()).enumerate() {
                if have.stride != want.stride {
                    return Err(bad(format!(
                        "plane {p} stride {} but the camera writes {} bytes per row (the driver would not change it)",
                        have.stride, want.stride
                    )));
                }
                if !mplane_separate && have.offset != want.offset {
                    return Err(bad(format!(
                        "plane {p} at offset {} but the camera puts it at {}",
                        have.offset, want.offset
                    )));
                }
            }
            let fds = b.fds();
            let size_of = |fd: BorrowedFd<'_>| -> u32 {
                let s = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0)).unwrap_or(0);
                let _ = rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(0));
                s.min(u32::MAX as u64) as u32
            };
            let planes: Vec<(usize, u32, u32)> = if mplane_separate {
                l.planes()
                    .iter()
                    .map(|p| {
                        let fdi = p.fd_index as usize;
                        (fdi, size_of(fds[fdi]), p.offset as u32)
                    })
                    .collect()
            } else {
                vec![(0, size_of(fds[0]), 0)]
            };
            for (p, &(_, len, off)) in planes.iter().enumerate() {
                let need = self.format.planes[p.min(self.format.planes.len() - 1)].sizeimage;
                if (len as u64) < off as u64 + need as u64 {
                    return Err(bad(format!(
                        "memory plane {p} holds {len} bytes, the camera writes {need} at offset {off}"
                    )));
                }
            }
            slots.push(ImportSlot {
                buffer: b.clone(),
                planes,
            });
        }
        let n = sys::reqbufs(
            self.fd(),
            self.buf_type,
            sys::MEMORY_DMABUF,
            buffers.len() as u32,
        )
        .map_err(|errno| {
            self.mode_err(
                Mode::Import,
                format!(
                    "VIDIOC_REQBUFS(DMABUF) failed: {errno} (the driver does not import dma-bufs)"
                ),
            )
        })?;
        if (n as usize) < buffers.len() {
            self.free_buffers(sys::MEMORY_DMABUF);
            return Err(self.mode_err(
                Mode::Import,
                format!("asked for {} DMABUF slots, got {n}", buffers.len()),
            ));
        }
        self.imports = slots;
        self.count = buffers.len() as u32;
        self.queued = vec![false; buffers.len()];
        self.mode = Some(Mode::Import);
        Ok(())
    }

    /// Copy mode: `count` device buffers, mapped read-only for [`V4l2Source::copy_into`].
    pub fn mmap_buffers(&mut self, count: u32) -> Result<(), V4l2Error> {
        self.ensure_idle(Mode::Copy)?;
        let n = sys::reqbufs(self.fd(), self.buf_type, sys::MEMORY_MMAP, count)
            .map_err(self.sys_err("VIDIOC_REQBUFS(MMAP)"))?;
        let mut maps = Vec::with_capacity(n as usize);
        for i in 0..n {
            let info = sys::querybuf(self.fd(), self.buf_type, i, self.nplanes())
                .map_err(self.sys_err(&format!("VIDIOC_QUERYBUF({i})")))?;
            let mut planes = Vec::new();
            for p in &info.planes {
                planes.push(
                    PlaneMap::new(self.fd(), p.mem_offset, p.length)
                        .map_err(self.sys_err(&format!("mmap(buffer {i})")))?,
                );
            }
            maps.push(planes);
        }
        self.maps = maps;
        self.count = n;
        self.queued = vec![false; n as usize];
        self.mode = Some(Mode::Copy);
        Ok(())
    }

    /// Sets up buffers in `mode` (for [`Mode::Auto`]: export, else import, else copy) and returns
    /// the pool to announce. Import and copy allocate `count` buffers of [`V4l2Source::layout`]
    /// from `alloc`.
    pub fn prepare(
        &mut self,
        mode: Mode,
        count: u32,
        mut alloc: Option<&mut dyn Allocator>,
    ) -> Result<Prepared, V4l2Error> {
        let mut passed = Vec::new();
        if matches!(mode, Mode::Auto | Mode::Export) {
            match self.export_buffers(count) {
                Ok(buffers) => {
                    return Ok(Prepared {
                        mode: Mode::Export,
                        buffers,
                        note: "export: the camera's own buffers as dma-bufs".into(),
                    })
                }
                Err(e) if mode == Mode::Auto => passed.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        let layout = self.layout.clone();
        let path = self.path.clone();
        let mut allocate = |what: Mode| -> Result<Vec<Buffer>, V4l2Error> {
            let a = alloc.as_deref_mut().ok_or_else(|| V4l2Error::Mode {
                path: path.clone(),
                mode: what.name(),
                why: "needs an allocator for its buffers".into(),
            })?;
            (0..count)
                .map(|_| a.allocate(&layout).map_err(V4l2Error::from))
                .collect()
        };
        if matches!(mode, Mode::Auto | Mode::Import) {
            let r = allocate(Mode::Import).and_then(|b| self.attach(&b).map(|()| b));
            match r {
                Ok(buffers) => {
                    return Ok(Prepared {
                        mode: Mode::Import,
                        buffers,
                        note: if passed.is_empty() {
                            "import: the camera writes into our dma-bufs".into()
                        } else {
                            format!("import; passed over: {}", passed.join("; "))
                        },
                    })
                }
                Err(e) if mode == Mode::Auto => passed.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        let buffers = allocate(Mode::Copy)?;
        self.mmap_buffers(count.max(2))?;
        Ok(Prepared {
            mode: Mode::Copy,
            buffers,
            note: if passed.is_empty() {
                "copy: frames are copied (bytes_copied counts them)".into()
            } else {
                format!(
                    "copy (frames are copied); passed over: {}",
                    passed.join("; ")
                )
            },
        })
    }

    /// Queues one buffer to the device.
    pub fn requeue(&mut self, index: u32) -> Result<(), V4l2Error> {
        let i = index as usize;
        if i >= self.queued.len() {
            return Err(V4l2Error::Usage(
                format!(
                    "requeue of buffer {index}: only {} buffers",
                    self.queued.len()
                ),
                self.path.clone(),
            ));
        }
        if self.queued[i] {
            return Err(V4l2Error::Usage(
                format!("requeue of buffer {index}, which the device already holds"),
                self.path.clone(),
            ));
        }
        let fd = self.fd();
        let r = match self.mode {
            Some(Mode::Import) => {
                let slot = &self.imports[i];
                let fds = slot.buffer.fds();
                let planes: Vec<(BorrowedFd<'_>, u32, u32)> = slot
                    .planes
                    .iter()
                    .map(|&(fdi, len, off)| (fds[fdi], len, off))
                    .collect();
                sys::qbuf(
                    fd,
                    self.buf_type,
                    index,
                    self.nplanes(),
                    QueueMem::Dmabuf(&planes),
                )
            }
            Some(_) => sys::qbuf(fd, self.buf_type, index, self.nplanes(), QueueMem::Mmap),
            None => {
                return Err(V4l2Error::Usage(
                    "requeue before buffers were set up".into(),
                    self.path.clone(),
                ))
            }
        };
        r.map_err(|errno| self.gone_or(errno, &format!("VIDIOC_QBUF({index})")))?;
        self.queued[i] = true;
        Ok(())
    }
}
