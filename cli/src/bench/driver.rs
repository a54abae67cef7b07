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
    read_all, recv_dgram, send_dgram, seqpacket_pair, thread_cpu_ns, Ctl, Draw, FromPeer, Mode,
    ToPeer,
};
use super::fanout::{socket_path, ConsumerBatch, FanOutEnd};
use super::gst::Gst;
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
    FanOut(FanOutEnd),
    Gst(Gst),
}

/// What a batch measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Batch {
    /// Paced ping-pong, the pattern drawn: handoff latency, consumer CPU (null sink).
    Latency,
    /// Paced ping-pong, nothing drawn: what a handoff costs each side, and its latency.
    Static,
    /// Ping-pong through the verify sink.
    Verify,
    /// Unpaced, the pattern drawn, the pool running ahead: two-process fps.
    Pipelined,
    /// Unpaced, nothing drawn: the transport's own frame rate.
    PipelinedStatic,
    /// Unpaced, each frame cleared (as the GStreamer producer does): fps against GStreamer.
    PipelinedClear,
    /// The pattern drawn into the pool in the peer, nothing sent: one-process fps.
    InProcess,
}

impl Batch {
    fn mode(self) -> (Mode, Draw) {
        match self {
            Batch::Latency | Batch::Verify => (Mode::PingPong, Draw::Pattern),
            Batch::Static => (Mode::PingPong, Draw::Nothing),
            Batch::Pipelined => (Mode::Pipelined, Draw::Pattern),
            Batch::PipelinedStatic => (Mode::Pipelined, Draw::Nothing),
            Batch::PipelinedClear => (Mode::Pipelined, Draw::Clear),
            Batch::InProcess => (Mode::InProcess, Draw::Pattern),
        }
    }

    fn paced(self) -> bool {
        matches!(self, Batch::Latency | Batch::Static)
    }
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
            Some(a) if self.method == "fan-out" => {
                let n = match &self.end {
                    DriverEnd::FanOut(f) => f.consumers(),
                    _ => 0,
                };
                format!("fan-out {n} ({a} {})", size_name(self.size))
            }
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

    /// A fan-out cell: `consumers` subscriber threads on one publisher in the peer.
    pub(super) fn add_fan_out(
        &mut self,
        alloc: &str,
        size: (u32, u32),
        buffers: usize,
        consumers: usize,
    ) -> Result<(), BenchError> {
        let cell = self.cells.len();
        let layout = layout_of(size)?;
        let path = socket_path(cell);
        self.ctl.send(
            &ToPeer::FanOut {
                cell,
                path: path.clone(),
                consumers,
                alloc: alloc.to_owned(),
                width: size.0,
                height: size.1,
                buffers,
            },
            &[],
        )?;
        let end = FanOutEnd::start(&path, consumers, buffers, || self.ready(cell));
        let end = match end {
            Ok(end) => end,
            Err(e @ BenchError::Peer(_)) => return Err(e),
            Err(e) => return Err(self.peer_reason(e)),
        };
        self.cells.push(Cell {
            alloc: Some(alloc.to_owned()),
            method: "fan-out",
            size,
            frame_bytes: layout.size(),
            end: DriverEnd::FanOut(end),
            stats: Stats::default(),
        });
        Ok(())
    }

    /// A GStreamer shm cell (no peer: two gst-launch-1.0 processes per batch).
    pub(super) fn add_gst(&mut self, gst: Gst, size: (u32, u32)) -> Result<(), BenchError> {
        self.cells.push(Cell {
            alloc: None,
            method: "gstreamer-shm",
            size,
            frame_bytes: layout_of(size)?.size(),
            end: DriverEnd::Gst(gst),
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
        if let DriverEnd::Gst(gst) = &self.cells[i].end {
            // No peer: the two GStreamer processes are the cell. A run that fails or hangs is
            // counted and skipped (its round has no GStreamer figure), not fatal.
            match gst.shm_pair(self.cells[i].size, frames) {
                Ok(run) if !warmup => self.cells[i].stats.clear_fps.push(run.fps),
                Ok(_) => {}
                Err(e) => {
                    log::warn!("{e}");
                    let s = &mut self.cells[i].stats;
                    s.failed_runs.push(e.to_string());
                    if !warmup {
                        s.clear_fps.push(f64::NAN); // keeps the rounds paired
                    }
                }
            }
            return Ok(());
        }
        let (mode, draw) = kind.mode();
        let c0 = Counters::now();
        self.ctl.send(
            &ToPeer::Run {
                cell: i,
                mode,
                draw,
                frames,
                pace_ns: if kind.paced() {
                    self.pace.as_nanos() as u64
                } else {
                    0
                },
            },
            &[],
        )?;
        let consumed = consume(&mut self.cells[i].end, kind, frames)?;
        let (elapsed_ns, peer_cpu_ns, peer_counters, peer_copied, late) = match self.answer()? {
            FromPeer::Done {
                cell: c,
                elapsed_ns,
                cpu_ns,
                counters,
                bytes_copied,
                late,
            } if c == i => (elapsed_ns, cpu_ns, counters, bytes_copied, late),
            other => {
                return Err(BenchError::Peer(format!(
                    "expected Done for cell {i}, got {other:?}"
                )))
            }
        };
        let ours = Counters::now().since(c0);
        if warmup || frames == 0 {
            return Ok(());
        }
        let cell = &mut self.cells[i];
        let s = &mut cell.stats;
        let per_frame = consumed.cpu_ns as f64 / frames as f64;
        let producer_per_frame = peer_cpu_ns as f64 / frames as f64;
        let fps = frames as f64 * 1e9 / elapsed_ns.max(1) as f64;
        match kind {
            Batch::Latency => {
                s.latency_ns.extend_from_slice(&consumed.latency_ns);
                s.late += late;
                s.cpu_per_frame_ns.push(per_frame);
                s.producer_cpu_per_frame_ns.push(producer_per_frame);
                s.bytes_copied += consumed.sink_copied + peer_copied;
                s.copied_frames += frames;
            }
            Batch::Static => {
                s.static_latency_ns.extend_from_slice(&consumed.latency_ns);
                s.static_cpu_per_frame_ns.push(per_frame);
                s.static_producer_cpu_per_frame_ns.push(producer_per_frame);
            }
            Batch::Verify => {
                s.verify_cpu_per_frame_ns.push(per_frame);
                s.verify_frames += frames;
                s.verified += consumed.verified;
                s.bytes_copied += consumed.sink_copied + peer_copied;
                s.copied_frames += frames;
            }
            Batch::Pipelined => s.two_process_fps.push(fps),
            Batch::InProcess => s.in_process_fps.push(fps),
            Batch::PipelinedStatic => {
                s.static_fps.push(fps);
                s.static_unpaced_cpu_per_frame_ns.push(per_frame);
                s.static_unpaced_producer_cpu_per_frame_ns
                    .push(producer_per_frame);
            }
            Batch::PipelinedClear => s.clear_fps.push(fps),
        }
        if !consumed.per_consumer.is_empty() {
            let n = consumed.per_consumer.len();
            s.consumers.resize_with(n, Default::default);
            for (c, batch) in s.consumers.iter_mut().zip(consumed.per_consumer) {
                if kind == Batch::Static {
                    c.latency_ns.extend_from_slice(&batch.latency_ns);
                    c.cpu_per_frame_ns.push(batch.cpu_ns as f64 / frames as f64);
                }
            }
        }
        if matches!(cell.end, DriverEnd::ZeroCopy(_) | DriverEnd::FanOut(_)) {
            s.consumer_counters = add(s.consumer_counters, ours);
            s.producer_counters = add(s.producer_counters, peer_counters);
            s.counted_frames += frames;
        }
        Ok(())
    }
}

/// What this side measured over a batch.
#[derive(Default)]
struct Consumed {
    latency_ns: Vec<u64>,
    cpu_ns: u64,
    verified: u64,
    sink_copied: u64,
    /// Fan-out cells: each consumer's own figures, in join order.
    per_consumer: Vec<ConsumerBatch>,
}

/// Takes `frames` frames (or pings) on this side of a cell.
fn consume(end: &mut DriverEnd, kind: Batch, frames: u64) -> Result<Consumed, BenchError> {
    let mut c = Consumed {
        latency_ns: Vec::with_capacity(frames as usize),
        ..Consumed::default()
    };
    let cpu0 = thread_cpu_ns();
    match end {
        DriverEnd::Floor(fd) => {
            let mut ping = [0u8; FLOOR_PING_BYTES];
            let pong = [0u8; FLOOR_PONG_BYTES];
            for _ in 0..frames {
                recv_dgram(fd.as_fd(), &mut ping)?;
                let now = monotonic_ns();
                c.latency_ns.push(now.saturating_sub(stamp(&ping)));
                send_dgram(fd.as_fd(), &pong)?;
            }
        }
        DriverEnd::ZeroCopy(end) if kind != Batch::InProcess => {
            let ZeroCopyEnd {
                consumer,
                null,
                verify,
            } = &mut **end;
            let sink: &mut dyn Sink = if kind == Batch::Verify { verify } else { null };
            let before = sink.bytes_copied();
            for _ in 0..frames {
                let mut f = match consumer.next(Some(FRAME_PATIENCE))? {
                    SubscriberEvent::Frame(f) => f,
                    other => {
                        return Err(BenchError::Peer(format!("expected a Frame, got {other:?}")))
                    }
                };
                c.latency_ns
                    .push(f.received_ns.saturating_sub(f.timestamp_ns));
                let acquire = f.take_acquire_fence();
                let out = sink.frame(FrameIn {
                    id: f.id,
                    seq: f.seq,
                    buffer: f.buffer(),
                    acquire,
                    meta: &f.meta,
                })?;
                c.verified += out.verified as u64;
                f.release(out.release)?;
            }
            c.sink_copied = sink.bytes_copied() - before;
        }
        DriverEnd::ZeroCopy(_) => {} // in-process: nothing is sent
        DriverEnd::FanOut(end) if kind != Batch::InProcess => {
            c.per_consumer = end.run(frames)?;
        }
        DriverEnd::FanOut(_) => {}
        DriverEnd::Pipe { pipe, ack, buf } => {
            let mut header = [0u8; PIPE_HEADER_BYTES];
            for _ in 0..frames {
                read_all(pipe.as_fd(), &mut header)?;
                read_all(pipe.as_fd(), buf)?;
                let now = monotonic_ns();
                c.latency_ns.push(now.saturating_sub(stamp(&header)));
                c.sink_copied += buf.len() as u64;
                send_dgram(ack.as_fd(), &[0u8; 8])?;
            }
        }
        DriverEnd::Ring { notify, .. } => {
            let mut msg = [0u8; FLOOR_PING_BYTES];
            let release = [0u8; FLOOR_PONG_BYTES];
            for _ in 0..frames {
                recv_dgram(notify.as_fd(), &mut msg)?;
                let now = monotonic_ns();
                c.latency_ns.push(now.saturating_sub(stamp(&msg)));
                // The frame is read in place (shmsrc): nothing to copy out.
                send_dgram(notify.as_fd(), &release)?;
            }
        }
        DriverEnd::Gst(_) => unreachable!("GStreamer cells run without the peer"),
    }
    c.cpu_ns = thread_cpu_ns() - cpu0;
    Ok(c)
}

/// The producer's `CLOCK_MONOTONIC` stamp at the head of a ping, pipe header or ring notice.
fn stamp(bytes: &[u8]) -> u64 {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(ts)
}
