//! Streaming: start, stop, dequeuing frames with a deadline, requeueing, the copy path's row
//! copy, and the source's teardown.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use rustix::io::Errno;

use super::devices::*;
use super::*;

use crate::buffer::CpuAccess;
use crate::sys::v4l2::{self as sys};

impl V4l2Source {
    pub(super) fn gone_or(&self, errno: Errno, op: &str) -> V4l2Error {
        if errno == Errno::NODEV || errno == Errno::NXIO {
            V4l2Error::Disappeared {
                path: self.path.clone(),
                errno,
            }
        } else {
            V4l2Error::Sys {
                path: self.path.clone(),
                op: op.into(),
                errno,
            }
        }
    }

    /// Queues every buffer not queued yet and starts streaming.
    pub fn start(&mut self) -> Result<(), V4l2Error> {
        for i in 0..self.count {
            if !self.queued[i as usize] {
                self.requeue(i)?;
            }
        }
        sys::streamon(self.fd(), self.buf_type)
            .map_err(|errno| self.gone_or(errno, "VIDIOC_STREAMON"))?;
        self.streaming = true;
        Ok(())
    }

    /// Stops streaming; the device gives every buffer back.
    pub fn stop(&mut self) -> Result<(), V4l2Error> {
        if self.streaming {
            self.streaming = false;
            sys::streamoff(self.fd(), self.buf_type)
                .map_err(|errno| self.gone_or(errno, "VIDIOC_STREAMOFF"))?;
        }
        self.queued.iter_mut().for_each(|q| *q = false);
        Ok(())
    }

    /// Waits up to `timeout` for the next frame and dequeues it. The buffer stays with the
    /// caller until [`V4l2Source::requeue`] (or [`V4l2Source::copy_into`] in copy mode).
    pub fn next_frame(&mut self, timeout: Duration) -> Result<Frame, V4l2Error> {
        use rustix::event::{PollFd, PollFlags};
        if !self.streaming {
            return Err(V4l2Error::Usage(
                "next_frame before start".into(),
                self.path.clone(),
            ));
        }
        if !self.queued.iter().any(|q| *q) {
            return Err(V4l2Error::Usage(
                "every buffer is dequeued: requeue some before waiting for a frame".into(),
                self.path.clone(),
            ));
        }
        let memory = if self.mode == Some(Mode::Import) {
            sys::MEMORY_DMABUF
        } else {
            sys::MEMORY_MMAP
        };
        let deadline = Instant::now() + timeout;
        loop {
            match sys::dqbuf(self.fd(), self.buf_type, memory, self.nplanes()) {
                Ok(info) => {
                    let i = info.index as usize;
                    if i < self.queued.len() {
                        self.queued[i] = false;
                    }
                    let seq = self.widen(info.sequence);
                    return Ok(Frame {
                        index: info.index,
                        sequence: seq,
                        timestamp_ns: info.timestamp_ns,
                        bytesused: info.planes.first().map_or(0, |p| p.bytesused),
                        corrupt: info.flags & sys::BUF_FLAG_ERROR != 0,
                    });
                }
                Err(Errno::AGAIN) => {}
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(self.gone_or(errno, "VIDIOC_DQBUF")),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(V4l2Error::Stalled {
                    path: self.path.clone(),
                    timeout,
                    fps: fps_of(self.interval),
                });
            }
            let fd = self.fd();
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match crate::sync::poll_until(&mut fds, Some(deadline)) {
                Ok(_) => {
                    let rev = fds[0].revents();
                    if rev.contains(PollFlags::HUP) || rev.contains(PollFlags::NVAL) {
                        return Err(V4l2Error::Disappeared {
                            path: self.path.clone(),
                            errno: Errno::NODEV,
                        });
                    }
                }
                Err(errno) => return Err(self.gone_or(errno, "poll")),
            }
        }
    }

    pub(super) fn widen(&mut self, seq: u32) -> u64 {
        let v = widen_sequence(self.last_seq, seq);
        self.last_seq = Some(v);
        v
    }

    /// Copy mode: copies the frame's pixels into `dst` (a buffer of [`V4l2Source::layout`]'s
    /// format and size; its strides may differ), counts the bytes, and requeues the device's
    /// buffer.
    pub fn copy_into(&mut self, frame: &Frame, dst: &mut CpuAccess<'_>) -> Result<u64, V4l2Error> {
        if self.mode != Some(Mode::Copy) {
            return Err(V4l2Error::Usage(
                "copy_into outside copy mode".into(),
                self.path.clone(),
            ));
        }
        let maps = &self.maps[frame.index as usize];
        let mut copied = 0u64;
        for (p, pl) in self.layout.planes().iter().enumerate() {
            let map = maps[(pl.fd_index as usize).min(maps.len() - 1)].as_slice();
            let row_bytes = self.layout.plane_row_bytes(p);
            for r in 0..self.layout.plane_rows(p) {
                let start = pl.offset as usize + r as usize * pl.stride as usize;
                let src = map.get(start..start + row_bytes).ok_or_else(|| {
                    V4l2Error::Usage(
                        format!("plane {p} row {r} lies outside the device buffer"),
                        self.path.clone(),
                    )
                })?;
                dst.row_mut(p, r).copy_from_slice(src);
                copied += row_bytes as u64;
            }
        }
        self.bytes_copied += copied;
        self.requeue(frame.index)?;
        Ok(copied)
    }
}

impl AsFd for V4l2Source {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::error!("{e}");
        }
        if self.count > 0 {
            let memory = if self.mode == Some(Mode::Import) {
                sys::MEMORY_DMABUF
            } else {
                sys::MEMORY_MMAP
            };
            self.free_buffers(memory);
        }
    }
}
