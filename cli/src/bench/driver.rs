//! The driver: the consumer side of every cell, in this process, where the samples land. It
//! sets each cell up with the peer, then runs the batches the plan lists, one at a time: it
//! tells the peer to produce, consumes (timing each handoff and its own CPU), and records what
//! both sides counted.

use std::os::fd::{AsFd, OwnedFd};
use std::process::Child;
use std::time::Duration;

use frameshare::alloc;
use frameshare::buffer::BufferMapping;
use frameshare::bus::socket::Channel;
use frameshare::bus::{monotonic_ns, Subscriber, SubscriberEvent, SubscriberOptions};
use frameshare::counters::Counters;
use frameshare::pipeline::pattern_name;
use frameshare::sink::null::NullSink;
use frameshare::sink::verify::VerifySink;
use frameshare::sink::{FrameIn, Sink, StreamInfo};
use frameshare::source::Pattern;

use super::control::{
    read_all, recv_dgram, send_dgram, seqpacket_pair, thread_cpu_ns, Ctl, FromPeer, Mode, ToPeer,
};
use super::stats::{add, Stats};
use super::{
    layout_of, ring_layout, size_name, sys, BenchError, FLOOR_PING_BYTES, FLOOR_PONG_BYTES,
    FRAME_PATIENCE, PEER_PATIENCE, PIPE_CAPACITY, PIPE_HEADER_BYTES, RING_SLOTS,
};

/// The consumer end of a zero-copy cell and its two sinks.
pub(super) struct ZeroCopyEnd {
    consumer: Subscriber,
    null: NullSink,
    verify: VerifySink,
}

/// This side of a cell.
pub(super) enum DriverEnd {
    Floor(OwnedFd),
    ZeroCopy(Box<ZeroCopyEnd>),
    Pipe {
        pipe: OwnedFd,
        ack: OwnedFd,
        buf: Vec<u8>,
    },
    Ring {
        notify: OwnedFd,
        _ring: BufferMapping,
    },
}

/// What a batch measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Batch {
    Latency,
    Verify,
    Pipelined,
    InProcess,
}

/// One measured thing: the floor, a zero-copy (allocator, size), or a copying baseline.
pub(super) struct Cell {
    pub(super) alloc: Option<String>,
    pub(super) method: &'static str,
    pub(super) size: (u32, u32),
    pub(super) frame_bytes: u64,
    pub(super) end: DriverEnd,
    pub(super) stats: Stats,
}

impl Cell {
    pub(super) fn label(&self) -> String {
        match &self.alloc {
            _ if self.method == "floor" => "floor".into(),
            Some(a) => format!("{a} {}", size_name(self.size)),
            None => format!("{} {}", self.method, size_name(self.size)),
        }
    }
}

/// Kills the peer if the driver stops early.
pub(super) struct PeerProcess(pub(super) Option<Child>);

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The driver: the control socket and the cells.
pub(super) struct Driver {
    pub(super) ctl: Ctl,
    pub(super) cells: Vec<Cell>,
    pace: Duration,
    pattern: Pattern,
}

impl Driver {
    pub(super) fn new(ctl: Ctl, pace: Duration, pattern: Pattern) -> Driver {
        Driver {
            ctl,
            cells: Vec::new(),
            pace,
            pattern,
        }
    }

    fn answer(&mut self) -> Result<FromPeer, BenchError> {
        match self.ctl.recv::<FromPeer>(Some(PEER_PATIENCE))? {
            Some((FromPeer::Failed { error }, _)) => Err(BenchError::Peer(error)),
            Some((m, _)) => Ok(m),
            None => Err(BenchError::Peer("the peer process exited".into())),
        }
    }

    /// After a driver-side failure during setup, the peer's own reason is the better message.
    fn peer_reason(&mut self, ours: BenchError) -> BenchError {
        match self.ctl.recv::<FromPeer>(Some(Duration::from_secs(5))) {
            Ok(Some((FromPeer::Failed { error }, _))) => BenchError::Peer(error),
            _ => ours,
        }
    }

    fn ready(&mut self, cell: usize) -> Result<(), BenchError> {
        match self.answer()? {
            FromPeer::Ready { cell: c } if c == cell => Ok(()),
            other => Err(BenchError::Peer(format!(
                "expected Ready for cell {cell}, got {other:?}"
            ))),
        }
    }

    pub(super) fn add_floor(&mut self) -> Result<(), BenchError> {
        let cell = self.cells.len();
        let (ours, theirs) = seqpacket_pair()?;
        self.ctl.send(&ToPeer::Floor { cell }, &[theirs.as_fd()])?;
        drop(theirs);
        self.ready(cell)?;
        self.cells.push(Cell {
            alloc: None,
            method: "floor",
            size: (0, 0),
            frame_bytes: 0,
            end: DriverEnd::Floor(ours),
            stats: Stats::default(),
        });
        Ok(())
    }

    pub(super) fn add_zero_copy(
        &mut self,
        alloc: &str,
        size: (u32, u32),
        buffers: usize,
    ) -> Result<(), BenchError> {
        let cell = self.cells.len();
        let layout = layout_of(size)?;
        let (ours, theirs) = Channel::pair()?;
        let theirs: OwnedFd = theirs.into();
        self.ctl.send(
            &ToPeer::ZeroCopy {
                cell,
                alloc: alloc.to_owned(),
                width: size.0,
                height: size.1,
                buffers,
                pattern: pattern_name(self.pattern),
            },
            &[theirs.as_fd()],
        )?;
        drop(theirs);
        let end = match self.accept(ours, buffers) {
            Ok(end) => end,
            Err(e) => return Err(self.peer_reason(e)),
        };
        self.ready(cell)?;
        self.cells.push(Cell {
            alloc: Some(alloc.to_owned()),
            method: "zero-copy",
            size,
            frame_bytes: layout.size(),
            end,
            stats: Stats::default(),
        });
        Ok(())
    }

    fn accept(&mut self, chan: Channel, buffers: usize) -> Result<DriverEnd, BenchError> {
        let mut null = NullSink::default();
        let mut verify = VerifySink::new();
        let caps = verify.caps();
        let mut consumer = Subscriber::from_channel(
            chan,
            SubscriberOptions {
                name: verify.name(),
                fences: caps.fences,
                kinds: caps.kinds,
                formats: caps.formats,
                stall_timeout: FRAME_PATIENCE,
                ..SubscriberOptions::default()
            },
        )?;
        let mut added = 0;
        while added < buffers {
            match consumer.next(Some(FRAME_PATIENCE))? {
                SubscriberEvent::Connected { producer, .. } => {
                    let stream = StreamInfo {
                        producer: producer.name.clone(),
                        pattern: producer.pattern.as_deref().and_then(|p| p.parse().ok()),
                    };
                    null.start(&stream)?;
                    verify.start(&stream)?;
                }
                SubscriberEvent::BufferAdded { id, buffer } => {
                    null.add_buffer(id, &buffer)?;
                    verify.add_buffer(id, &buffer)?;
                    added += 1;
                }
                other => {
                    return Err(BenchError::Peer(format!(
                        "expected AddBuffer, got {other:?}"
                    )))
                }
            }
        }
        Ok(DriverEnd::ZeroCopy(Box::new(ZeroCopyEnd {
            consumer,
            null,
            verify,
        })))
    }

    pub(super) fn add_pipe(&mut self, size: (u32, u32)) -> Result<(), BenchError> {
        let cell = self.cells.len();
        let layout = layout_of(size)?;
        let (read_end, write_end) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(sys("pipe"))?;
        // Generous to the baseline: fewer, larger writes. A pipe keeps its default size if the
        // system refuses.
        let _ = rustix::pipe::fcntl_setpipe_size(&write_end, PIPE_CAPACITY);
        let (ack_ours, ack_theirs) = seqpacket_pair()?;
        self.ctl.send(
            &ToPeer::Pipe {
                cell,
                width: size.0,
                height: size.1,
                pattern: pattern_name(self.pattern),
            },
            &[write_end.as_fd(), ack_theirs.as_fd()],
        )?;
        drop((write_end, ack_theirs));
        self.ready(cell)?;
        self.cells.push(Cell {
            alloc: None,
            method: "pipe",
            size,
            frame_bytes: layout.size(),
            end: DriverEnd::Pipe {
                pipe: read_end,
                ack: ack_ours,
                buf: vec![0; layout.size() as usize],
            },
            stats: Stats::default(),
        });
        Ok(())
    }

    pub(super) fn add_ring(&mut self, size: (u32, u32)) -> Result<(), BenchError> {
        let cell = self.cells.len();
        let layout = layout_of(size)?;
        let ring = alloc::open("memfd")?
            .0
            .allocate(&ring_layout(size, RING_SLOTS)?)?;
        let memfd = ring.fds()[0]
            .try_clone_to_owned()
            .map_err(|e| BenchError::Peer(format!("dup (ring): {e}")))?;
        let ring = ring.map(false)?;
        let (ours, theirs) = seqpacket_pair()?;
        self.ctl.send(
            &ToPeer::Ring {
                cell,
                width: size.0,
                height: size.1,
                slots: RING_SLOTS,
                pattern: pattern_name(self.pattern),
            },
            &[memfd.as_fd(), theirs.as_fd()],
        )?;
        drop((memfd, theirs));
        self.ready(cell)?;
        self.cells.push(Cell {
            alloc: None,
            method: "shm-ring",
            size,
            frame_bytes: layout.size(),
            end: DriverEnd::Ring {
                notify: ours,
                _ring: ring,
            },
            stats: Stats::default(),
        });
        Ok(())
    }

    /// Runs one batch of `frames` on cell `i`; records it unless `warmup`. On failure the
    /// peer's own account, when it sent one, is the error.
    pub(super) fn batch(
        &mut self,
        i: usize,
        kind: Batch,
        frames: u64,
        warmup: bool,
    ) -> Result<(), BenchError> {
        match self.batch_inner(i, kind, frames, warmup) {
            Err(e @ BenchError::Peer(_)) => Err(e),
            Err(e) => Err(self.peer_reason(e)),
            Ok(()) => Ok(()),
        }
    }

    fn batch_inner(
        &mut self,
        i: usize,
        kind: Batch,
        frames: u64,
        warmup: bool,
    ) -> Result<(), BenchError> {
        let mode = match kind {
            Batch::Latency | Batch::Verify => Mode::PingPong,
            Batch::Pipelined => Mode::Pipelined,
            Batch::InProcess => Mode::InProcess,
        };
        let c0 = Counters::now();
        self.ctl.send(
            &ToPeer::Run {
                cell: i,
                mode,
                frames,
                pace_ns: if kind == Batch::Latency {
                    self.pace.as_nanos() as u64
                } else {
                    0
                },
            },
            &[],
        )?;
        let cell = &mut self.cells[i];
        let record = !warmup;
        let mut latencies = Vec::with_capacity(frames as usize);
        let mut verified = 0u64;
        let mut sink_copied = 0u64;
        let cpu0 = thread_cpu_ns();
        match &mut cell.end {
            DriverEnd::Floor(fd) => {
                let mut ping = [0u8; FLOOR_PING_BYTES];
                let pong = [0u8; FLOOR_PONG_BYTES];
                for _ in 0..frames {
                    recv_dgram(fd.as_fd(), &mut ping)?;
                    let now = monotonic_ns();
                    let ts = u64::from_le_bytes(ping[..8].try_into().unwrap());
                    latencies.push(now.saturating_sub(ts));
                    send_dgram(fd.as_fd(), &pong)?;
                }
            }
            DriverEnd::ZeroCopy(end) => {
                let ZeroCopyEnd {
                    consumer,
                    null,
                    verify,
                } = &mut **end;
                if kind != Batch::InProcess {
                    let sink: &mut dyn Sink = if kind == Batch::Verify { verify } else { null };
                    let before = sink.bytes_copied();
                    for _ in 0..frames {
                        let mut f = match consumer.next(Some(FRAME_PATIENCE))? {
                            SubscriberEvent::Frame(f) => f,
                            other => {
                                return Err(BenchError::Peer(format!(
                                    "expected a Frame, got {other:?}"
                                )))
                            }
                        };
                        latencies.push(f.received_ns.saturating_sub(f.timestamp_ns));
                        let acquire = f.take_acquire_fence();
                        let out = sink.frame(FrameIn {
                            id: f.id,
                            seq: f.seq,
                            buffer: f.buffer(),
                            acquire,
                            meta: &f.meta,
                        })?;
                        verified += out.verified as u64;
                        f.release(out.release)?;
                    }
                    sink_copied = sink.bytes_copied() - before;
                }
            }
            DriverEnd::Pipe { pipe, ack, buf } => {
                let mut header = [0u8; PIPE_HEADER_BYTES];
                for _ in 0..frames {
                    read_all(pipe.as_fd(), &mut header)?;
                    read_all(pipe.as_fd(), buf)?;
                    let now = monotonic_ns();
                    let ts = u64::from_le_bytes(header[..8].try_into().unwrap());
                    latencies.push(now.saturating_sub(ts));
                    sink_copied += buf.len() as u64;
                    send_dgram(ack.as_fd(), &[0u8; 8])?;
                }
            }
            DriverEnd::Ring { notify, .. } => {
                let mut msg = [0u8; FLOOR_PING_BYTES];
                let release = [0u8; FLOOR_PONG_BYTES];
                for _ in 0..frames {
                    recv_dgram(notify.as_fd(), &mut msg)?;
                    let now = monotonic_ns();
                    let ts = u64::from_le_bytes(msg[..8].try_into().unwrap());
                    latencies.push(now.saturating_sub(ts));
                    // The frame is read in place (shmsrc): nothing to copy out.
                    send_dgram(notify.as_fd(), &release)?;
                }
            }
        }
        let cpu_ns = thread_cpu_ns() - cpu0;
        let (elapsed_ns, peer_counters, peer_copied, late) = match self.answer()? {
            FromPeer::Done {
                cell: c,
                elapsed_ns,
                counters,
                bytes_copied,
                late,
            } if c == i => (elapsed_ns, counters, bytes_copied, late),
            other => {
                return Err(BenchError::Peer(format!(
                    "expected Done for cell {i}, got {other:?}"
                )))
            }
        };
        let ours = Counters::now().since(c0);
        if !record || frames == 0 {
            return Ok(());
        }
        let cell = &mut self.cells[i];
        let s = &mut cell.stats;
        let per_frame = cpu_ns as f64 / frames as f64;
        let fps = frames as f64 * 1e9 / elapsed_ns.max(1) as f64;
        match kind {
            Batch::Latency => {
                s.latency_ns.extend_from_slice(&latencies);
                s.late += late;
                s.cpu_per_frame_ns.push(per_frame);
                s.bytes_copied += sink_copied + peer_copied;
                s.copied_frames += frames;
            }
            Batch::Verify => {
                s.verify_cpu_per_frame_ns.push(per_frame);
                s.verify_frames += frames;
                s.verified += verified;
                s.bytes_copied += sink_copied + peer_copied;
                s.copied_frames += frames;
            }
            Batch::Pipelined => s.two_process_fps.push(fps),
            Batch::InProcess => s.in_process_fps.push(fps),
        }
        if matches!(cell.end, DriverEnd::ZeroCopy(_)) {
            s.consumer_counters = add(s.consumer_counters, ours);
            s.producer_counters = add(s.producer_counters, peer_counters);
            s.counted_frames += frames;
        }
        Ok(())
    }
}
