//! `frameshare bench`: what zero copy buys, measured against its references in the same run.
//!
//! # Method
//! Two processes: this one (the *driver*, always the consumer side, where the samples land) and a
//! *peer* it starts from its own executable ([`BenchOptions::peer_exe`], e.g.
//! `frameshare bench --peer-fd N`), which is the producer side of every measurement. The driver
//! talks to the peer over a control socket (JSON datagrams) and hands it one socket (and, for the
//! baselines, a pipe or a ring) per *cell*. Every cell lives for the whole run, so batches of
//! different cells can be interleaved:
//!
//! * **floor** — a bare `SOCK_SEQPACKET` ping-pong: the peer sends a 36-byte datagram (the size
//!   of a `Frame` message) stamped with `CLOCK_MONOTONIC`, the driver answers with 28 bytes (a
//!   `Release`). No buffer, no poll, no wire decoding: the least a handoff can cost.
//! * **zero-copy** cells, one per (allocator, size): a real [`Producer`]/[`Consumer`] session with
//!   a pool of [`BenchOptions::buffers`] buffers of `XR24` frames filled by the generator
//!   ([`BenchOptions::pattern`], `box` by default). Handoff latency is the session's own: the producer stamps the `Frame` when
//!   the frame is ready ([`Producer::submit`]), the consumer when it is received. In latency
//!   batches the peer waits for every release before the next frame (one frame in flight, no
//!   queueing) and the driver hands frames to a null sink; verify batches do the same with the
//!   verify sink (every pixel compared); fps batches let the producer run ahead through the whole
//!   pool (null sink), against in-process batches that run the same generator into the same
//!   buffers with no transport at all.
//! * **pipe** cells: the peer `write()`s each whole frame (16-byte header with the timestamp,
//!   then the pixels) into a pipe of 1 MiB; the driver `read()`s it all into its own memory,
//!   then acknowledges. What a naive pipeline does. Pixels are copied twice (into the pipe,
//!   out of it).
//! * **shm-ring** cells: a shared memfd ring of 2 frame slots; the peer `memcpy`s each frame into
//!   the next slot and notifies the driver over a socket, which reads it in place and releases the
//!   slot. What GStreamer's `shmsink`/`shmsrc` do. Pixels are copied once.
//!
//! For copying cells "frame ready" is the moment the frame sits complete in the producer's own
//! memory (before the copy starts) and "received" the moment it sits complete where the consumer
//! can read it, so the copies are inside the measured handoff, as they are in real use.
//!
//! Pacing: in latency batches every handoff, the floor's included, comes
//! [`BenchOptions::pace`] (2 ms) after the previous release, as frames from a real source do.
//! Back to back, the consumer would have idled for as long as the producer took to draw the
//! frame — microseconds at 640x480, a millisecond at 3840x2160 — and on virtual machines
//! (halt polling) and power-managed CPUs the cost of waking an idle CPU grows with how long it
//! idled, which would charge the generator's drawing time to the transport and make the floor,
//! with no drawing at all, an unfair reference. Handoffs that still come late because drawing
//! took longer than the pace are counted (`late_frames`); their latency is measured all the same
//! (ready → received). Verify and fps batches are not paced. To see the effect, run with
//! `--pace-us 0`, once with the default `box` pattern and once with `--pattern solid` (which
//! rewrites only the 8 stamp rows per frame): on our 2-vCPU development VM the back-to-back p50
//! grew from 640x480 to 3840x2160 with `box` (about 2.6 → 11 µs) and stayed flat with `solid`
//! (2.6 µs at every size), i.e. the growth came from the drawing, not from the transport.
//!
//! Interleaving: after a warm-up of every cell (not measured), the run makes
//! [`BenchOptions::rounds`] rounds; in each, every latency cell gets one batch, each right after a
//! floor batch, the cell order reversing from round to round; then one verify batch per zero-copy
//! cell, then one two-process and one in-process fps batch per zero-copy cell. Latency figures
//! are percentiles over all of a cell's samples (pooled across rounds); ratios are taken between
//! figures measured this way in the same run, never against numbers from another run. CPU time
//! per frame is the driver thread's (`CLOCK_THREAD_CPUTIME_ID`) over a batch, the median over
//! batches. fps ratios are medians of per-round ratios.
//!
//! The driver and the peer both snapshot the [`frameshare::counters`] around every measured
//! zero-copy batch; their sum is the "after warm-up" figure (allocations, mappings and imports
//! per steady-state frame: the target is zero).

use std::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use frameshare::alloc::{self, AllocError};
use frameshare::buffer::{Access, Buffer, BufferError, BufferKind, BufferMapping};
use frameshare::bus::monotonic_ns;
use frameshare::bus::socket::{Channel, ChannelError};
use frameshare::bus::{
    Publisher, PublisherOptions, Subscriber, SubscriberEvent, SubscriberOptions,
};
use frameshare::counters::Counters;
use frameshare::format::{FormatError, Fourcc, FrameLayout};
use frameshare::pipeline::{pattern_name, Latency};
use frameshare::sink::null::NullSink;
use frameshare::sink::verify::VerifySink;
use frameshare::sink::{FrameIn, Sink, SinkError, StreamInfo};
use frameshare::source::{Generator, Pattern};

/// The pixel format every cell uses.
pub const FORMAT: Fourcc = Fourcc::XR24;
/// Stride alignment of the frames (the CLI's default).
pub const STRIDE_ALIGN: u32 = 256;
/// The default generator pattern (the CLI's default): a moving box, so each frame rewrites the
/// stamp rows and the rows the box left and entered, like a source whose content changes.
pub const DEFAULT_PATTERN: Pattern = Pattern::MovingBox;
/// Bytes of a floor ping (the size of an encoded `Frame` message).
pub const FLOOR_PING_BYTES: usize = 36;
/// Bytes of a floor pong (the size of an encoded `Release` message).
pub const FLOOR_PONG_BYTES: usize = 28;
/// Capacity asked for the pipe baseline's pipe (the unprivileged maximum by default).
pub const PIPE_CAPACITY: usize = 1 << 20;
/// Slots in the shared-ring baseline.
pub const RING_SLOTS: usize = 2;
/// The acceptance limit: handoff p50 at the largest size over that at the smallest.
pub const SIZE_SCALING_LIMIT: f64 = 1.5;
/// The allocators `--allocs auto` tries, best first; those this machine lacks are skipped.
pub const AUTO_ALLOCS: [&str; 5] = ["dma-heap", "udmabuf", "memfd", "posix-shm", "sysv-shm"];

/// The default pace of latency batches: longer than drawing the largest default frame takes
/// here, so that every handoff, at every size, comes after the same idle time.
pub const DEFAULT_PACE: Duration = Duration::from_millis(2);

/// How long the driver waits for any one answer from the peer before giving up.
const PEER_PATIENCE: Duration = Duration::from_secs(300);
/// How long either side waits for one frame or release inside a batch.
const FRAME_PATIENCE: Duration = Duration::from_secs(60);
/// Bytes of the pipe baseline's per-frame header (timestamp, sequence).
const PIPE_HEADER_BYTES: usize = 16;

/// Errors that stop a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// An allocator could not be opened or allocate.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// A frame layout could not be made.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The producer's side of a session failed.
    #[error(transparent)]
    Publish(#[from] frameshare::bus::PublishError),
    /// The consumer's side of a session failed.
    #[error(transparent)]
    Subscribe(#[from] frameshare::bus::SubscribeError),
    /// A channel failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// A buffer could not be mapped.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A system call failed.
    #[error("{op} failed: {errno}")]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// The error.
        errno: Errno,
    },
    /// The peer process failed, died, or broke the control protocol.
    #[error("bench peer: {0}")]
    Peer(String),
}

fn sys(op: &'static str) -> impl FnOnce(Errno) -> BenchError {
    move |errno| BenchError::Sys { op, errno }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Frame sizes (width, height), `XR24`.
    pub sizes: Vec<(u32, u32)>,
    /// Allocator names (as [`alloc::open`] takes them); `["auto"]` means every kind of
    /// [`AUTO_ALLOCS`] this machine offers.
    pub allocs: Vec<String>,
    /// Ping-pongs per latency cell (each zero-copy cell, each baseline); the floor gets a third
    /// of each cell's batch right before it, the verify batches a third of it, and the fps
    /// batches as many, per side.
    pub frames: u64,
    /// Interleaved rounds the frames are split into.
    pub rounds: u32,
    /// Buffers in each zero-copy pool.
    pub buffers: usize,
    /// In latency batches, the time from one frame's release to the next frame's handoff
    /// (zero: back to back). The same for every cell and the floor, so the consumer has idled
    /// equally long before every measured handoff.
    pub pace: Duration,
    /// What the generator draws (the copying baselines draw the same).
    pub pattern: Pattern,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// The executable that runs the peer ([`peer`]).
    pub peer_exe: PathBuf,
    /// Its arguments; the control socket's fd number is appended.
    pub peer_args: Vec<String>,
    /// Also measure Vulkan import vs a staging copy (`bench_vulkan::figures`); why it measured
    /// nothing becomes the report's [`BenchReport::vulkan_note`].
    pub vulkan: bool,
}

impl BenchOptions {
    /// The default run (sizes 640x480, 1920x1080, 3840x2160; every available allocator;
    /// 300 ping-pongs per cell in 15 rounds; pools of 4) with the given peer command.
    pub fn new(peer_exe: PathBuf, peer_args: Vec<String>) -> BenchOptions {
        BenchOptions {
            sizes: vec![(640, 480), (1920, 1080), (3840, 2160)],
            allocs: vec!["auto".into()],
            frames: 300,
            rounds: 15,
            buffers: 4,
            pace: DEFAULT_PACE,
            pattern: DEFAULT_PATTERN,
            progress: false,
            peer_exe,
            peer_args,
            vulkan: false,
        }
    }
}

/// The benchmark's results (`frameshare bench --json` prints this).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// Pixel format of every frame.
    pub format: String,
    /// Generator pattern.
    pub pattern: String,
    /// Ping-pongs per latency cell.
    pub frames: u64,
    /// Frames per zero-copy cell through the verify sink.
    pub verify_frames: u64,
    /// Frames per zero-copy cell per side of the fps comparison.
    pub fps_frames: u64,
    /// Interleaved rounds.
    pub rounds: u32,
    /// Unmeasured warm-up frames per cell and batch kind.
    pub warmup_frames: u64,
    /// Buffers per zero-copy pool.
    pub buffers: usize,
    /// Release-to-next-handoff interval of latency batches, µs (0: back to back).
    pub pace_us: f64,
    /// Allocators measured.
    pub allocs: Vec<String>,
    /// Allocators `auto` passed over, and why.
    pub skipped_allocs: Vec<SkippedAlloc>,
    /// Frame sizes measured (`WxH`).
    pub sizes: Vec<String>,
    /// The zero-copy allocator the copying baselines are compared with (the first measured).
    pub reference_alloc: String,
    /// The floor: a bare SEQPACKET ping-pong, interleaved with every latency cell.
    pub floor: FloorFigure,
    /// a. Handoff latency per allocator and size.
    pub handoff: Vec<HandoffFigure>,
    /// a. Handoff at the largest size over the smallest, per allocator (acceptance: ≤ 1.5).
    pub size_scaling: Vec<SizeScaling>,
    /// b. Consumer CPU time per frame.
    pub consumer_cpu: Vec<CpuFigure>,
    /// c. Two-process fps against the same generator in one process.
    pub fps: Vec<FpsFigure>,
    /// d. Copying baselines: pipe and shared ring.
    pub copy_baselines: Vec<CopyBaseline>,
    /// e. Allocations, mappings and imports during the measured zero-copy frames.
    pub after_warmup: AfterWarmup,
    /// The Vulkan import-vs-staging figure, when a measurement exists.
    pub vulkan: Option<VulkanFigures>,
    /// Why `vulkan` is empty.
    pub vulkan_note: Option<String>,
    /// Wall time of the whole benchmark, seconds.
    pub elapsed_s: f64,
}

/// An allocator `--allocs auto` did not measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SkippedAlloc {
    /// Allocator name.
    pub alloc: String,
    /// Why.
    pub reason: String,
}

/// The bare ping-pong.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloorFigure {
    /// One-way latency (ping sent → ping received), µs.
    pub latency_us: Latency,
    /// Samples.
    pub samples: u64,
    /// Handoffs that came later than the pace (the frame took longer to draw or copy).
    pub late_frames: u64,
    /// Driver CPU per ping (receive + answer), µs, median over batches.
    pub consumer_cpu_us_per_frame: f64,
}

/// Handoff latency of one zero-copy cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandoffFigure {
    /// Allocator.
    pub alloc: String,
    /// Frame size `WxH`.
    pub size: String,
    /// Bytes per frame.
    pub frame_bytes: u64,
    /// Producer "frame ready" → consumer "frame received", µs.
    pub latency_us: Latency,
    /// Samples.
    pub samples: u64,
    /// Handoffs that came later than the pace (the frame took longer to draw or copy).
    pub late_frames: u64,
    /// p50 over the floor's p50.
    pub p50_vs_floor: f64,
    /// p99 over the floor's p99.
    pub p99_vs_floor: f64,
    /// Pixel bytes copied to deliver the frames, per frame (sinks' count; 0 is zero copy).
    pub bytes_copied_per_frame: f64,
    /// Bytes that crossed the socket per frame (Frame + Release messages).
    pub socket_bytes_per_frame: u64,
}

/// Handoff at the largest size over the smallest, for one allocator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeScaling {
    /// Allocator.
    pub alloc: String,
    /// The smallest size measured.
    pub small: String,
    /// The largest size measured.
    pub large: String,
    /// Bytes per frame, large over small.
    pub bytes_ratio: f64,
    /// Handoff p50, large over small.
    pub p50_ratio: f64,
    /// Handoff p99, large over small.
    pub p99_ratio: f64,
    /// The limit (1.5).
    pub limit: f64,
    /// `p50_ratio <= limit`.
    pub within_limit: bool,
}

/// Consumer CPU time per frame of one zero-copy cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpuFigure {
    /// Allocator.
    pub alloc: String,
    /// Frame size.
    pub size: String,
    /// Null sink: receive, hand over, release; µs per frame.
    pub null_us_per_frame: f64,
    /// Verify sink: the same plus comparing every pixel; µs per frame.
    pub verify_us_per_frame: f64,
    /// Null over the floor's consumer CPU.
    pub null_vs_floor: f64,
    /// Verify over the floor's consumer CPU.
    pub verify_vs_floor: f64,
    /// Frames through the verify sink.
    pub verify_frames: u64,
    /// Of those, frames whose every pixel was right.
    pub frames_verified: u64,
}

/// Two-process fps against the generator alone, for one zero-copy cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FpsFigure {
    /// Allocator.
    pub alloc: String,
    /// Frame size.
    pub size: String,
    /// Producer → consumer (null sink) through the session, pool running ahead; median of rounds.
    pub two_process_fps: f64,
    /// The same generator filling the same buffers in the peer, no transport; median of rounds.
    pub in_process_fps: f64,
    /// Two-process over in-process: median of per-round ratios.
    pub ratio: f64,
}

/// A copying baseline at one size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyBaseline {
    /// `pipe` or `shm-ring`.
    pub method: String,
    /// What it does.
    pub detail: String,
    /// Frame size.
    pub size: String,
    /// Bytes per frame.
    pub frame_bytes: u64,
    /// Producer "frame ready" → consumer holds the whole frame, µs.
    pub latency_us: Latency,
    /// Samples.
    pub samples: u64,
    /// Handoffs that came later than the pace (the frame took longer to draw or copy).
    pub late_frames: u64,
    /// p50 over the floor's p50.
    pub p50_vs_floor: f64,
    /// p50 over the reference zero-copy cell's p50 at this size.
    pub p50_vs_zero_copy: f64,
    /// Pixel bytes copied per frame (counted as copied, both sides).
    pub bytes_copied_per_frame: f64,
    /// The reference zero-copy cell's pixel bytes copied per frame.
    pub zero_copy_bytes_copied_per_frame: f64,
    /// Consumer CPU per frame, µs, median over batches.
    pub consumer_cpu_us_per_frame: f64,
    /// Over the reference zero-copy cell's null-sink consumer CPU.
    pub cpu_vs_zero_copy: f64,
}

/// Setup work done while measuring zero-copy frames (target: none).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AfterWarmup {
    /// Frames those counts cover (every measured zero-copy frame, all batch kinds).
    pub frames: u64,
    /// In the producer process.
    pub producer: Counters,
    /// In the consumer process.
    pub consumer: Counters,
    /// Both.
    pub total: Counters,
    /// Whether every count is zero.
    pub zero: bool,
}

/// The Vulkan import-vs-staging figure: importing the shared buffer into the GPU against
/// copying it through a staging buffer, per frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VulkanFigures {
    /// The GPU.
    pub device: String,
    /// Frame size.
    pub size: String,
    /// Per frame, imported buffer, µs.
    pub import_us_per_frame: f64,
    /// Per frame, staging copy, µs.
    pub staging_us_per_frame: f64,
    /// Staging time over import time (above 1: importing is faster).
    pub ratio: f64,
}

/// The note when the Vulkan measurement was not asked for.
pub const VULKAN_NOT_MEASURED: &str =
    "not measured (pass --vulkan to measure import vs staging upload)";

// ------------------------------------------------------------------------------------------------
// Control protocol between the driver and the peer.

/// What the peer is asked to do.
#[derive(Debug, Serialize, Deserialize)]
enum ToPeer {
    /// Take the attached socket as the floor ping-pong.
    Floor { cell: usize },
    /// Allocate a pool and be the producer on the attached socket.
    ZeroCopy {
        cell: usize,
        alloc: String,
        width: u32,
        height: u32,
        buffers: usize,
        pattern: String,
    },
    /// Write frames into the attached pipe; wait for acks on the attached socket.
    Pipe {
        cell: usize,
        width: u32,
        height: u32,
        pattern: String,
    },
    /// Copy frames into the attached ring memfd; notify on the attached socket.
    Ring {
        cell: usize,
        width: u32,
        height: u32,
        slots: usize,
        pattern: String,
    },
    /// Run a batch; in ping-pong modes each frame is handed over `pace_ns` after the previous
    /// release (or as soon as it is ready, if later).
    Run {
        cell: usize,
        mode: Mode,
        frames: u64,
        pace_ns: u64,
    },
    /// Exit.
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Mode {
    /// One frame in flight: wait for every release before the next frame.
    PingPong,
    /// The producer runs ahead through its pool.
    Pipelined,
    /// The generator fills the pool's buffers; nothing is sent.
    InProcess,
}

#[derive(Debug, Serialize, Deserialize)]
enum FromPeer {
    Ready {
        cell: usize,
    },
    Done {
        cell: usize,
        elapsed_ns: u64,
        counters: Counters,
        bytes_copied: u64,
        late: u64,
    },
    Failed {
        error: String,
    },
}

/// A SEQPACKET control socket carrying JSON datagrams and fds.
struct Ctl {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Ctl {
    fn send<T: Serialize>(&mut self, msg: &T, fds: &[BorrowedFd<'_>]) -> Result<(), BenchError> {
        let bytes = serde_json::to_vec(msg).map_err(|e| BenchError::Peer(e.to_string()))?;
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(BenchError::Peer(
                "too many fds for one control message".into(),
            ));
        }
        loop {
            match rustix::net::sendmsg(
                &self.fd,
                &[IoSlice::new(&bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(Errno::PIPE) | Err(Errno::CONNRESET) => {
                    return Err(BenchError::Peer(
                        "the other side closed the control socket".into(),
                    ))
                }
                Err(e) => return Err(sys("sendmsg (control)")(e)),
            }
        }
    }

    /// Receives one message; `Ok(None)` when the other side closed the socket.
    fn recv<T: DeserializeOwned>(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(T, Vec<OwnedFd>)>, BenchError> {
        if !wait_readable(self.fd.as_fd(), timeout)? {
            return Err(BenchError::Peer(format!(
                "no answer within {:?}",
                timeout.unwrap_or_default()
            )));
        }
        self.buf.resize(1 << 16, 0);
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = loop {
            match rustix::net::recvmsg(
                &self.fd,
                &mut [IoSliceMut::new(&mut self.buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(r) => break r,
                Err(Errno::INTR) => continue,
                Err(Errno::CONNRESET) => return Ok(None),
                Err(e) => return Err(sys("recvmsg (control)")(e)),
            }
        };
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = m {
                fds.extend(rights);
            }
        }
        if got.flags.contains(ReturnFlags::CTRUNC) || got.flags.contains(ReturnFlags::TRUNC) {
            return Err(BenchError::Peer("truncated control message".into()));
        }
        if got.bytes == 0 && fds.is_empty() {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&self.buf[..got.bytes])
            .map_err(|e| BenchError::Peer(format!("bad control message: {e}")))?;
        Ok(Some((msg, fds)))
    }
}

fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool, BenchError> {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let n = frameshare::sync::poll_until(&mut fds, frameshare::sync::deadline_after(timeout))
        .map_err(sys("poll"))?;
    Ok(n > 0)
}

fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), BenchError> {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(sys("socketpair"))
}

/// Sends one datagram of `bytes`.
fn send_dgram(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<(), BenchError> {
    loop {
        match rustix::net::send(fd, bytes, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(sys("send")(e)),
        }
    }
}

/// Receives one datagram of exactly `buf.len()` bytes (blocking).
fn recv_dgram(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(), BenchError> {
    loop {
        match rustix::net::recv(fd, &mut *buf, RecvFlags::empty()) {
            Ok((_, 0)) => return Err(BenchError::Peer("the other side closed its socket".into())),
            Ok((_, n)) if n == buf.len() => return Ok(()),
            Ok((_, n)) => {
                return Err(BenchError::Peer(format!(
                    "datagram of {n} bytes, expected {}",
                    buf.len()
                )))
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(sys("recv")(e)),
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> Result<(), BenchError> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(sys("write (pipe)")(e)),
        }
    }
    Ok(())
}

fn read_all(fd: BorrowedFd<'_>, mut buf: &mut [u8]) -> Result<(), BenchError> {
    while !buf.is_empty() {
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) => return Err(BenchError::Peer("the pipe closed mid-frame".into())),
            Ok(n) => buf = &mut buf[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(sys("read (pipe)")(e)),
        }
    }
    Ok(())
}

/// CPU time this thread has used, ns.
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn parse_pattern(name: &str) -> Result<Pattern, BenchError> {
    name.parse().map_err(BenchError::Usage)
}

fn layout_of((w, h): (u32, u32)) -> Result<FrameLayout, FormatError> {
    FrameLayout::linear(FORMAT, w, h, STRIDE_ALIGN)
}

/// The shared ring of the copying baseline: `slots` frames one after the other, as one memfd
/// buffer `slots` frames high.
fn ring_layout((w, h): (u32, u32), slots: usize) -> Result<FrameLayout, FormatError> {
    layout_of((w, h * slots as u32))
}

fn take_fds<const N: usize>(fds: Vec<OwnedFd>, what: &str) -> Result<[OwnedFd; N], BenchError> {
    let n = fds.len();
    fds.try_into()
        .map_err(|_| BenchError::Peer(format!("{what}: {n} fds attached, expected {N}")))
}

// ------------------------------------------------------------------------------------------------
// The peer (producer side).

/// A frame the peer generates in its own memory, for the copying baselines.
struct LocalFrame {
    mapping: BufferMapping,
    generator: Generator,
    bytes: usize,
}

impl LocalFrame {
    fn new(layout: &FrameLayout, pattern: Pattern) -> Result<LocalFrame, BenchError> {
        let (mut allocator, _) = alloc::open("memfd")?;
        let buffer = allocator.allocate(layout)?;
        Ok(LocalFrame {
            mapping: buffer.map(true)?,
            generator: Generator::new(pattern, layout),
            bytes: layout.size() as usize,
        })
    }

    fn fill(&mut self, seq: u64) -> Result<(), BenchError> {
        let mut access = self.mapping.access(Access::Write)?;
        self.generator.fill(0, &mut access, seq);
        Ok(())
    }

    /// Calls `f` with the frame's bytes.
    fn with_bytes<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, BenchError> {
        let access = self.mapping.access(Access::Read)?;
        Ok(f(&access.bytes(0)[..self.bytes]))
    }
}

enum PeerCell {
    Floor(OwnedFd),
    ZeroCopy {
        producer: Box<Publisher>,
        generator: Generator,
        seq: u64,
    },
    Pipe {
        pipe: OwnedFd,
        ack: OwnedFd,
        frame: LocalFrame,
        seq: u64,
    },
    Ring {
        notify: OwnedFd,
        ring: BufferMapping,
        slots: usize,
        frame: LocalFrame,
        seq: u64,
    },
}

/// Takes a buffer and draws frame `seq` into it.
fn zero_copy_fill<'p>(
    producer: &'p mut Publisher,
    generator: &mut Generator,
    seq: u64,
) -> Result<frameshare::bus::Loan<'p>, BenchError> {
    let mut loan = producer
        .loan()?
        .ok_or_else(|| BenchError::Peer("the producer dropped a frame".into()))?;
    let id = loan.id();
    generator.fill(id, &mut loan.write()?, seq);
    Ok(loan)
}

/// Waits until the consumer gave every frame back.
fn drain(producer: &mut Publisher) -> Result<(), BenchError> {
    if producer.drain(FRAME_PATIENCE)? {
        Ok(())
    } else {
        Err(BenchError::Peer(format!(
            "the consumer held frames for more than {FRAME_PATIENCE:?}"
        )))
    }
}

/// Sleeps until `deadline`; false if it had already passed.
fn sleep_until(deadline: Instant) -> bool {
    match deadline.checked_duration_since(Instant::now()) {
        Some(wait) => {
            std::thread::sleep(wait);
            true
        }
        None => false,
    }
}

impl PeerCell {
    /// Runs one batch; returns the pixel bytes it copied and how many frames were handed over
    /// late. In ping-pong batches each frame is handed over `pace` after the previous one came
    /// back, or when it is ready if that is later (a late frame: drawing it took longer).
    fn run(&mut self, mode: Mode, frames: u64, pace: Duration) -> Result<(u64, u64), BenchError> {
        let mut copied = 0u64;
        let mut late = 0u64;
        let mut pace_until = |deadline: Instant| {
            if !sleep_until(deadline) && !pace.is_zero() {
                late += 1;
            }
        };
        let mut released = Instant::now();
        match self {
            PeerCell::Floor(fd) => {
                let mut ping = [0u8; FLOOR_PING_BYTES];
                let mut pong = [0u8; FLOOR_PONG_BYTES];
                for seq in 0..frames {
                    pace_until(released + pace);
                    ping[8..16].copy_from_slice(&seq.to_le_bytes());
                    ping[..8].copy_from_slice(&monotonic_ns().to_le_bytes());
                    send_dgram(fd.as_fd(), &ping)?;
                    recv_dgram(fd.as_fd(), &mut pong)?;
                    released = Instant::now();
                }
            }
            PeerCell::ZeroCopy {
                producer,
                generator,
                seq,
            } => match mode {
                Mode::PingPong => {
                    for _ in 0..frames {
                        drain(producer)?;
                        released = Instant::now();
                        let loan = zero_copy_fill(producer, generator, *seq)?;
                        pace_until(released + pace);
                        loan.publish(*seq)?;
                        *seq += 1;
                    }
                    drain(producer)?;
                }
                Mode::Pipelined => {
                    for _ in 0..frames {
                        zero_copy_fill(producer, generator, *seq)?.publish(*seq)?;
                        *seq += 1;
                    }
                    drain(producer)?;
                }
                Mode::InProcess => {
                    for _ in 0..frames {
                        // Drawn and not sent: the loan goes back unpublished.
                        drop(zero_copy_fill(producer, generator, *seq)?);
                        *seq += 1;
                    }
                }
            },
            PeerCell::Pipe {
                pipe,
                ack,
                frame,
                seq,
            } => {
                let mut header = [0u8; PIPE_HEADER_BYTES];
                let mut ack_buf = [0u8; 8];
                for _ in 0..frames {
                    frame.fill(*seq)?;
                    pace_until(released + pace);
                    header[8..].copy_from_slice(&seq.to_le_bytes());
                    header[..8].copy_from_slice(&monotonic_ns().to_le_bytes());
                    write_all(pipe.as_fd(), &header)?;
                    frame.with_bytes(|b| write_all(pipe.as_fd(), b))??;
                    copied += frame.bytes as u64;
                    recv_dgram(ack.as_fd(), &mut ack_buf)?;
                    released = Instant::now();
                    *seq += 1;
                }
            }
            PeerCell::Ring {
                notify,
                ring,
                slots,
                frame,
                seq,
            } => {
                let mut msg = [0u8; FLOOR_PING_BYTES];
                let mut release = [0u8; FLOOR_PONG_BYTES];
                let n = frame.bytes;
                for _ in 0..frames {
                    frame.fill(*seq)?;
                    let slot = (*seq % *slots as u64) as usize;
                    pace_until(released + pace);
                    let ts = monotonic_ns();
                    let mut ring = ring.access(Access::Write)?;
                    frame.with_bytes(|b| {
                        ring.bytes_mut(0)[slot * n..(slot + 1) * n].copy_from_slice(b)
                    })?;
                    copied += n as u64;
                    msg[..8].copy_from_slice(&ts.to_le_bytes());
                    msg[8..16].copy_from_slice(&seq.to_le_bytes());
                    msg[16..24].copy_from_slice(&(slot as u64).to_le_bytes());
                    send_dgram(notify.as_fd(), &msg)?;
                    recv_dgram(notify.as_fd(), &mut release)?;
                    released = Instant::now();
                    *seq += 1;
                }
            }
        }
        Ok((copied, late))
    }
}

fn peer_setup(msg: ToPeer, fds: Vec<OwnedFd>) -> Result<(usize, PeerCell), BenchError> {
    match msg {
        ToPeer::Floor { cell } => {
            let [fd] = take_fds(fds, "Floor")?;
            Ok((cell, PeerCell::Floor(fd)))
        }
        ToPeer::ZeroCopy {
            cell,
            alloc,
            width,
            height,
            buffers,
            pattern,
        } => {
            let pattern = parse_pattern(&pattern)?;
            let [fd] = take_fds(fds, "ZeroCopy")?;
            let layout = layout_of((width, height))?;
            // Open the allocator before saying Hello: an unavailable kind closes the socket
            // at once, and the Failed message says why.
            let (mut allocator, _) = alloc::open(&alloc)?;
            let opts = PublisherOptions {
                name: "generator".into(),
                pattern: Some(pattern_name(pattern)),
                stall_timeout: FRAME_PATIENCE,
                ..Default::default()
            };
            let mut producer = Publisher::new(opts)?;
            producer.add_connection(Channel::from_fd(fd), false)?;
            if !producer.wait_for_consumers(1, Some(FRAME_PATIENCE))? {
                return Err(BenchError::Peer("the consumer said no Hello".into()));
            }
            producer.set_buffers(
                (0..buffers)
                    .map(|_| allocator.allocate(&layout))
                    .collect::<Result<_, _>>()?,
            )?;
            Ok((
                cell,
                PeerCell::ZeroCopy {
                    producer: Box::new(producer),
                    generator: Generator::new(pattern, &layout),
                    seq: 0,
                },
            ))
        }
        ToPeer::Pipe {
            cell,
            width,
            height,
            pattern,
        } => {
            let [pipe, ack] = take_fds(fds, "Pipe")?;
            let frame = LocalFrame::new(&layout_of((width, height))?, parse_pattern(&pattern)?)?;
            Ok((
                cell,
                PeerCell::Pipe {
                    pipe,
                    ack,
                    frame,
                    seq: 0,
                },
            ))
        }
        ToPeer::Ring {
            cell,
            width,
            height,
            slots,
            pattern,
        } => {
            let [ring_fd, notify] = take_fds(fds, "Ring")?;
            let frame = LocalFrame::new(&layout_of((width, height))?, parse_pattern(&pattern)?)?;
            let ring = Buffer::from_fds(
                BufferKind::Memfd,
                ring_layout((width, height), slots)?,
                vec![ring_fd],
            )?
            .map(true)?;
            Ok((
                cell,
                PeerCell::Ring {
                    notify,
                    ring,
                    slots,
                    frame,
                    seq: 0,
                },
            ))
        }
        ToPeer::Run { .. } | ToPeer::Quit => unreachable!("not a setup message"),
    }
}

/// The peer's main loop: the producer side of every cell, driven over the control socket
/// `fd` by [`run`]. Returns when told to quit or when the driver goes away. A failed batch is
/// reported to the driver and then ends the peer, which closes every cell's socket, so the driver
/// never waits on a frame that will not come.
pub fn peer(fd: OwnedFd) -> Result<(), BenchError> {
    let mut ctl = Ctl {
        fd,
        buf: Vec::new(),
    };
    let mut cells: Vec<Option<PeerCell>> = Vec::new();
    loop {
        let Some((msg, fds)) = ctl.recv::<ToPeer>(None)? else {
            return Ok(());
        };
        let reply = match msg {
            ToPeer::Quit => return Ok(()),
            ToPeer::Run {
                cell,
                mode,
                frames,
                pace_ns,
            } => match cells.get_mut(cell).and_then(Option::as_mut) {
                None => FromPeer::Failed {
                    error: format!("no cell {cell}"),
                },
                Some(c) => {
                    let c0 = Counters::now();
                    let t0 = Instant::now();
                    match c.run(mode, frames, Duration::from_nanos(pace_ns)) {
                        Ok((bytes_copied, late)) => FromPeer::Done {
                            cell,
                            elapsed_ns: t0.elapsed().as_nanos() as u64,
                            counters: Counters::now().since(c0),
                            bytes_copied,
                            late,
                        },
                        Err(e) => {
                            let _ = ctl.send(
                                &FromPeer::Failed {
                                    error: format!("cell {cell}: {e}"),
                                },
                                &[],
                            );
                            return Err(e);
                        }
                    }
                }
            },
            setup => match peer_setup(setup, fds) {
                Ok((cell, c)) => {
                    if cells.len() <= cell {
                        cells.resize_with(cell + 1, || None);
                    }
                    cells[cell] = Some(c);
                    FromPeer::Ready { cell }
                }
                Err(e) => FromPeer::Failed {
                    error: e.to_string(),
                },
            },
        };
        ctl.send(&reply, &[])?;
    }
}

// ------------------------------------------------------------------------------------------------
// The driver (consumer side).

struct ZeroCopyEnd {
    consumer: Subscriber,
    null: NullSink,
    verify: VerifySink,
}

enum DriverEnd {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    Latency,
    Verify,
    Pipelined,
    InProcess,
}

#[derive(Default)]
struct Stats {
    latency_ns: Vec<u64>,
    cpu_per_frame_ns: Vec<f64>,
    verify_cpu_per_frame_ns: Vec<f64>,
    verify_frames: u64,
    verified: u64,
    bytes_copied: u64,
    copied_frames: u64,
    late: u64,
    two_process_fps: Vec<f64>,
    in_process_fps: Vec<f64>,
    producer_counters: Counters,
    consumer_counters: Counters,
    counted_frames: u64,
}

struct Cell {
    alloc: Option<String>,
    method: &'static str,
    size: (u32, u32),
    frame_bytes: u64,
    end: DriverEnd,
    stats: Stats,
}

impl Cell {
    fn label(&self) -> String {
        match &self.alloc {
            _ if self.method == "floor" => "floor".into(),
            Some(a) => format!("{a} {}", size_name(self.size)),
            None => format!("{} {}", self.method, size_name(self.size)),
        }
    }
}

fn size_name((w, h): (u32, u32)) -> String {
    format!("{w}x{h}")
}

/// Kills the peer if the driver stops early.
struct PeerProcess(Option<Child>);

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Driver {
    ctl: Ctl,
    cells: Vec<Cell>,
    pace: Duration,
    pattern: Pattern,
}

fn add(a: Counters, b: Counters) -> Counters {
    Counters {
        buffers: a.buffers + b.buffers,
        mappings: a.mappings + b.mappings,
        gpu_imports: a.gpu_imports + b.gpu_imports,
    }
}

impl Driver {
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

    fn add_floor(&mut self) -> Result<(), BenchError> {
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

    fn add_zero_copy(
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

    fn add_pipe(&mut self, size: (u32, u32)) -> Result<(), BenchError> {
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

    fn add_ring(&mut self, size: (u32, u32)) -> Result<(), BenchError> {
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
    fn batch(
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

/// `total` split into `parts` nearly equal batches (none empty).
fn split(total: u64, parts: u32) -> Vec<u64> {
    let parts = (parts as u64).clamp(1, total.max(1));
    (0..parts)
        .map(|i| total / parts + u64::from(i < total % parts))
        .filter(|&n| n > 0)
        .collect()
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// Which allocators to measure: the named ones, or for `auto` every kind of [`AUTO_ALLOCS`]
/// that opens here (with the reasons for the others).
pub fn resolve_allocs(names: &[String]) -> Result<(Vec<String>, Vec<SkippedAlloc>), BenchError> {
    if names.len() == 1 && names[0] == "auto" {
        let mut ok = Vec::new();
        let mut skipped = Vec::new();
        for name in AUTO_ALLOCS {
            match alloc::open(name) {
                Ok(_) => ok.push(name.to_owned()),
                Err(e) => skipped.push(SkippedAlloc {
                    alloc: name.to_owned(),
                    reason: e.to_string(),
                }),
            }
        }
        return Ok((ok, skipped));
    }
    if names.is_empty() {
        return Err(BenchError::Usage("no allocator to measure".into()));
    }
    for name in names {
        alloc::open(name)?;
    }
    Ok((names.to_vec(), Vec::new()))
}

/// Runs the benchmark (see the module documentation for the method).
pub fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let start = Instant::now();
    if opts.frames == 0 {
        return Err(BenchError::Usage("--frames must be at least 1".into()));
    }
    if opts.sizes.is_empty() {
        return Err(BenchError::Usage("no frame size to measure".into()));
    }
    if opts.buffers == 0 {
        return Err(BenchError::Usage("the pool needs at least 1 buffer".into()));
    }
    for &s in &opts.sizes {
        layout_of(s)?;
    }
    let (allocs, skipped_allocs) = resolve_allocs(&opts.allocs)?;
    if allocs.is_empty() {
        return Err(BenchError::Usage(
            "no allocator available to measure".into(),
        ));
    }
    let rounds = opts
        .rounds
        .clamp(1, opts.frames.min(u32::MAX as u64) as u32);
    let verify_frames = opts.frames.div_ceil(3);
    let fps_frames = opts.frames;
    let warmup = 2 * opts.buffers as u64;

    // Start the peer with one end of the control socket.
    let (ours, theirs) = seqpacket_pair()?;
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty()).map_err(sys("fcntl"))?;
    let child = Command::new(&opts.peer_exe)
        .args(&opts.peer_args)
        .arg(theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::Peer(format!("starting {}: {e}", opts.peer_exe.display())))?;
    let mut process = PeerProcess(Some(child));
    drop(theirs);
    let mut d = Driver {
        ctl: Ctl {
            fd: ours,
            buf: Vec::new(),
        },
        cells: Vec::new(),
        pace: opts.pace,
        pattern: opts.pattern,
    };

    // Cells: the floor, zero-copy per (alloc, size), then the baselines per size.
    d.add_floor()?;
    for a in &allocs {
        for &s in &opts.sizes {
            d.add_zero_copy(a, s, opts.buffers)?;
        }
    }
    for &s in &opts.sizes {
        d.add_pipe(s)?;
        d.add_ring(s)?;
    }
    let zero_copy: Vec<usize> = (0..d.cells.len())
        .filter(|&i| matches!(d.cells[i].end, DriverEnd::ZeroCopy(_)))
        .collect();
    let latency_cells: Vec<usize> = (1..d.cells.len()).collect();

    // The plan: warm-up, then interleaved rounds.
    let mut plan: Vec<(usize, Batch, u64, bool)> = Vec::new();
    plan.push((0, Batch::Latency, warmup, true));
    for &i in &latency_cells {
        plan.push((i, Batch::Latency, warmup, true));
    }
    for &i in &zero_copy {
        plan.push((i, Batch::Verify, warmup, true));
        plan.push((i, Batch::Pipelined, warmup, true));
        plan.push((i, Batch::InProcess, warmup, true));
    }
    let lat = split(opts.frames, rounds);
    let ver = split(verify_frames, rounds);
    let fps = split(fps_frames, rounds);
    for r in 0..rounds as usize {
        let mut order = latency_cells.clone();
        if r % 2 == 1 {
            order.reverse();
        }
        if let Some(&n) = lat.get(r) {
            for &i in &order {
                plan.push((0, Batch::Latency, n.div_ceil(3), false));
                plan.push((i, Batch::Latency, n, false));
            }
        }
        if let Some(&n) = ver.get(r) {
            for &i in &zero_copy {
                plan.push((i, Batch::Verify, n, false));
            }
        }
        if let Some(&n) = fps.get(r) {
            for &i in &zero_copy {
                let pair = if r % 2 == 0 {
                    [Batch::Pipelined, Batch::InProcess]
                } else {
                    [Batch::InProcess, Batch::Pipelined]
                };
                for b in pair {
                    plan.push((i, b, n, false));
                }
            }
        }
    }

    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(plan.iter().map(|p| p.2).sum());
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} frames  {msg}")
                .expect("valid template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    for &(i, kind, n, warm) in &plan {
        if opts.progress {
            bar.set_message(format!(
                "{} {:?}{}",
                d.cells[i].label(),
                kind,
                if warm { " (warm-up)" } else { "" }
            ));
        }
        d.batch(i, kind, n, warm)?;
        bar.inc(n);
    }
    bar.finish_and_clear();
    d.ctl.send(&ToPeer::Quit, &[])?;
    if let Some(mut child) = process.0.take() {
        let status = child
            .wait()
            .map_err(|e| BenchError::Peer(format!("waiting for the peer: {e}")))?;
        if !status.success() {
            return Err(BenchError::Peer(format!("the peer exited with {status}")));
        }
    }

    #[cfg(feature = "vulkan")]
    let vulkan = opts
        .vulkan
        .then(|| crate::bench_vulkan::figures(&opts.sizes, opts.frames));
    #[cfg(not(feature = "vulkan"))]
    let vulkan = opts
        .vulkan
        .then(|| Err("this build has no vulkan feature".to_owned()));
    let (vulkan, vulkan_note) = match vulkan {
        None => (None, Some(VULKAN_NOT_MEASURED.to_owned())),
        Some(Ok(v)) => (Some(v), None),
        Some(Err(why)) => (None, Some(format!("not measured: {why}"))),
    };
    Ok(report(
        &d,
        ReportInputs {
            allocs,
            skipped_allocs,
            sizes: &opts.sizes,
            frames: opts.frames,
            verify_frames,
            fps_frames,
            rounds,
            warmup,
            buffers: opts.buffers,
            pace: opts.pace,
            pattern: opts.pattern,
            vulkan,
            vulkan_note,
            elapsed_s: start.elapsed().as_secs_f64(),
        },
    ))
}

struct ReportInputs<'a> {
    allocs: Vec<String>,
    skipped_allocs: Vec<SkippedAlloc>,
    sizes: &'a [(u32, u32)],
    frames: u64,
    verify_frames: u64,
    fps_frames: u64,
    rounds: u32,
    warmup: u64,
    buffers: usize,
    pace: Duration,
    pattern: Pattern,
    vulkan: Option<VulkanFigures>,
    vulkan_note: Option<String>,
    elapsed_s: f64,
}

fn latency(samples: &[u64]) -> Latency {
    Latency::from_ns(&mut samples.to_vec())
}

fn report(d: &Driver, inp: ReportInputs<'_>) -> BenchReport {
    let floor_cell = &d.cells[0];
    let floor_lat = latency(&floor_cell.stats.latency_ns);
    let floor_cpu_us = median(&floor_cell.stats.cpu_per_frame_ns) / 1000.0;
    let floor = FloorFigure {
        latency_us: floor_lat,
        samples: floor_cell.stats.latency_ns.len() as u64,
        late_frames: floor_cell.stats.late,
        consumer_cpu_us_per_frame: floor_cpu_us,
    };
    let zc = |alloc: &str, size: (u32, u32)| {
        d.cells
            .iter()
            .find(|c| c.alloc.as_deref() == Some(alloc) && c.size == size)
    };
    let per_frame = |s: &Stats| {
        if s.copied_frames == 0 {
            0.0
        } else {
            s.bytes_copied as f64 / s.copied_frames as f64
        }
    };
    let mut handoff = Vec::new();
    let mut consumer_cpu = Vec::new();
    let mut fps = Vec::new();
    let mut size_scaling = Vec::new();
    let mut producer = Counters::default();
    let mut consumer = Counters::default();
    let mut counted = 0;
    for c in d.cells.iter().filter(|c| c.alloc.is_some()) {
        let s = &c.stats;
        let l = latency(&s.latency_ns);
        let alloc = c.alloc.clone().unwrap_or_default();
        handoff.push(HandoffFigure {
            alloc: alloc.clone(),
            size: size_name(c.size),
            frame_bytes: c.frame_bytes,
            latency_us: l,
            samples: s.latency_ns.len() as u64,
            late_frames: s.late,
            p50_vs_floor: ratio(l.p50, floor_lat.p50),
            p99_vs_floor: ratio(l.p99, floor_lat.p99),
            bytes_copied_per_frame: per_frame(s),
            // A Frame message (12 + 24 bytes) and a Release (12 + 16 bytes).
            socket_bytes_per_frame: (FLOOR_PING_BYTES + FLOOR_PONG_BYTES) as u64,
        });
        let null_us = median(&s.cpu_per_frame_ns) / 1000.0;
        let verify_us = median(&s.verify_cpu_per_frame_ns) / 1000.0;
        consumer_cpu.push(CpuFigure {
            alloc: alloc.clone(),
            size: size_name(c.size),
            null_us_per_frame: null_us,
            verify_us_per_frame: verify_us,
            null_vs_floor: ratio(null_us, floor_cpu_us),
            verify_vs_floor: ratio(verify_us, floor_cpu_us),
            verify_frames: s.verify_frames,
            frames_verified: s.verified,
        });
        let ratios: Vec<f64> = s
            .two_process_fps
            .iter()
            .zip(&s.in_process_fps)
            .map(|(a, b)| ratio(*a, *b))
            .collect();
        fps.push(FpsFigure {
            alloc,
            size: size_name(c.size),
            two_process_fps: median(&s.two_process_fps),
            in_process_fps: median(&s.in_process_fps),
            ratio: median(&ratios),
        });
        producer = add(producer, s.producer_counters);
        consumer = add(consumer, s.consumer_counters);
        counted += s.counted_frames;
    }
    let pixels = |s: &(u32, u32)| s.0 as u64 * s.1 as u64;
    let small = inp.sizes.iter().min_by_key(|s| pixels(s)).copied();
    let large = inp.sizes.iter().max_by_key(|s| pixels(s)).copied();
    if let (Some(small), Some(large)) = (small, large) {
        if small != large {
            for a in &inp.allocs {
                if let (Some(cs), Some(cl)) = (zc(a, small), zc(a, large)) {
                    let (ls, ll) = (latency(&cs.stats.latency_ns), latency(&cl.stats.latency_ns));
                    let p50_ratio = ratio(ll.p50, ls.p50);
                    size_scaling.push(SizeScaling {
                        alloc: a.clone(),
                        small: size_name(small),
                        large: size_name(large),
                        bytes_ratio: ratio(cl.frame_bytes as f64, cs.frame_bytes as f64),
                        p50_ratio,
                        p99_ratio: ratio(ll.p99, ls.p99),
                        limit: SIZE_SCALING_LIMIT,
                        within_limit: p50_ratio <= SIZE_SCALING_LIMIT,
                    });
                }
            }
        }
    }
    let reference_alloc = inp.allocs[0].clone();
    let mut copy_baselines = Vec::new();
    for c in d
        .cells
        .iter()
        .filter(|c| c.method == "pipe" || c.method == "shm-ring")
    {
        let s = &c.stats;
        let l = latency(&s.latency_ns);
        let reference = zc(&reference_alloc, c.size);
        let (ref_p50, ref_copied, ref_cpu) = reference
            .map(|r| {
                (
                    latency(&r.stats.latency_ns).p50,
                    per_frame(&r.stats),
                    median(&r.stats.cpu_per_frame_ns) / 1000.0,
                )
            })
            .unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        let cpu_us = median(&s.cpu_per_frame_ns) / 1000.0;
        let detail = if c.method == "pipe" {
            format!("producer write()s each frame into a pipe ({} KiB asked), consumer read()s it all: 2 copies", PIPE_CAPACITY / 1024)
        } else {
            format!("producer memcpy()s each frame into a {RING_SLOTS}-slot shared memfd ring and notifies over a socket; consumer reads in place (shmsink/shmsrc): 1 copy")
        };
        copy_baselines.push(CopyBaseline {
            method: c.method.to_owned(),
            detail,
            size: size_name(c.size),
            frame_bytes: c.frame_bytes,
            latency_us: l,
            samples: s.latency_ns.len() as u64,
            late_frames: s.late,
            p50_vs_floor: ratio(l.p50, floor_lat.p50),
            p50_vs_zero_copy: ratio(l.p50, ref_p50),
            bytes_copied_per_frame: per_frame(s),
            zero_copy_bytes_copied_per_frame: ref_copied,
            consumer_cpu_us_per_frame: cpu_us,
            cpu_vs_zero_copy: ratio(cpu_us, ref_cpu),
        });
    }
    let total = add(producer, consumer);
    BenchReport {
        format: FORMAT.name(),
        pattern: pattern_name(inp.pattern),
        frames: inp.frames,
        verify_frames: inp.verify_frames,
        fps_frames: inp.fps_frames,
        rounds: inp.rounds,
        warmup_frames: inp.warmup,
        buffers: inp.buffers,
        pace_us: inp.pace.as_secs_f64() * 1e6,
        allocs: inp.allocs,
        skipped_allocs: inp.skipped_allocs,
        sizes: inp.sizes.iter().map(|&s| size_name(s)).collect(),
        reference_alloc,
        floor,
        handoff,
        size_scaling,
        consumer_cpu,
        fps,
        copy_baselines,
        after_warmup: AfterWarmup {
            frames: counted,
            producer,
            consumer,
            total,
            zero: total == Counters::default(),
        },
        vulkan: inp.vulkan,
        vulkan_note: inp.vulkan_note,
        elapsed_s: inp.elapsed_s,
    }
}

// ------------------------------------------------------------------------------------------------
// The table.

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "frameshare bench: {} frames, generator {}; {} ping-pongs per cell in {} interleaved rounds after {} warm-up frames; pools of {}; took {:.1} s",
            self.format, self.pattern, self.frames, self.rounds, self.warmup_frames, self.buffers, self.elapsed_s
        )?;
        writeln!(
            f,
            "Every ratio compares figures measured side by side in this run."
        )?;
        for s in &self.skipped_allocs {
            writeln!(f, "skipped {}: {}", s.alloc, s.reason)?;
        }
        let fl = &self.floor;
        writeln!(
            f,
            "\nfloor: bare SEQPACKET ping-pong ({FLOOR_PING_BYTES} B out, {FLOOR_PONG_BYTES} B back, same pace), {} samples: p50 {:.1} µs  p99 {:.1} µs  consumer CPU {:.2} µs/frame",
            fl.samples, fl.latency_us.p50, fl.latency_us.p99, fl.consumer_cpu_us_per_frame
        )?;

        writeln!(
            f,
            "\na. handoff latency, producer \"frame ready\" → consumer \"frame received\", one frame in flight, each handed over {:.0} µs after the previous release",
            self.pace_us
        )?;
        writeln!(
            f,
            "  {:<10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>11} {:>5}",
            "alloc",
            "size",
            "MB/frame",
            "p50 µs",
            "p99 µs",
            "p50/floor",
            "p99/floor",
            "copied B/fr",
            "late"
        )?;
        for h in &self.handoff {
            writeln!(
                f,
                "  {:<10} {:>10} {:>10.2} {:>9.1} {:>9.1} {:>9.2} {:>9.2} {:>11.0} {:>5}",
                h.alloc,
                h.size,
                h.frame_bytes as f64 / 1e6,
                h.latency_us.p50,
                h.latency_us.p99,
                h.p50_vs_floor,
                h.p99_vs_floor,
                h.bytes_copied_per_frame,
                h.late_frames
            )?;
        }
        for s in &self.size_scaling {
            writeln!(
                f,
                "  {}: handoff p50 at {} / at {} = {:.2} (p99 {:.2}; {:.0}x the bytes); limit {:.1}: {}",
                s.alloc,
                s.large,
                s.small,
                s.p50_ratio,
                s.p99_ratio,
                s.bytes_ratio,
                s.limit,
                if s.within_limit { "ok" } else { "EXCEEDED" }
            )?;
        }

        writeln!(
            f,
            "\nb. consumer CPU time per frame (thread CPU, median over batches)"
        )?;
        writeln!(
            f,
            "  {:<10} {:>10} {:>9} {:>10} {:>10} {:>12} {:>10}",
            "alloc", "size", "null µs", "null/floor", "verify µs", "verify/floor", "verified"
        )?;
        for c in &self.consumer_cpu {
            writeln!(
                f,
                "  {:<10} {:>10} {:>9.2} {:>10.2} {:>10.1} {:>12.1} {:>10}",
                c.alloc,
                c.size,
                c.null_us_per_frame,
                c.null_vs_floor,
                c.verify_us_per_frame,
                c.verify_vs_floor,
                format!("{}/{}", c.frames_verified, c.verify_frames)
            )?;
        }

        writeln!(
            f,
            "\nc. fps: two processes (null sink, pool running ahead) vs the same generator in one process, {} frames each",
            self.fps_frames
        )?;
        writeln!(
            f,
            "  {:<10} {:>10} {:>12} {:>12} {:>7}",
            "alloc", "size", "2-proc fps", "in-proc fps", "ratio"
        )?;
        for p in &self.fps {
            writeln!(
                f,
                "  {:<10} {:>10} {:>12.0} {:>12.0} {:>7.2}",
                p.alloc, p.size, p.two_process_fps, p.in_process_fps, p.ratio
            )?;
        }

        writeln!(
            f,
            "\nd. copying baselines vs zero copy ({}), same run",
            self.reference_alloc
        )?;
        writeln!(
            f,
            "  {:<9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9} {:>8} {:>5}",
            "method",
            "size",
            "p50 µs",
            "p99 µs",
            "p50/floor",
            "p50/zc",
            "copied B/fr",
            "cpu µs",
            "cpu/zc",
            "late"
        )?;
        for b in &self.copy_baselines {
            writeln!(
                f,
                "  {:<9} {:>10} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>12.0} {:>9.1} {:>8.1} {:>5}",
                b.method,
                b.size,
                b.latency_us.p50,
                b.latency_us.p99,
                b.p50_vs_floor,
                b.p50_vs_zero_copy,
                b.bytes_copied_per_frame,
                b.consumer_cpu_us_per_frame,
                b.cpu_vs_zero_copy,
                b.late_frames
            )?;
        }
        if let Some(b) = self.copy_baselines.first() {
            writeln!(
                f,
                "  zero copy copied {:.0} B/frame; pipe: write() in + read() out, 2 copies; shm-ring: memcpy in, read in place, 1 copy",
                b.zero_copy_bytes_copied_per_frame,
            )?;
        }
        writeln!(
            f,
            "  late: handoffs that came after the pace because drawing the frame took longer (timing still from ready to received)"
        )?;

        let a = &self.after_warmup;
        writeln!(
            f,
            "\ne. after warm-up, over {} zero-copy frames: buffer allocations+imports {}, mappings {}, GPU imports {} (producer {}/{}/{}, consumer {}/{}/{}); target 0: {}",
            a.frames,
            a.total.buffers,
            a.total.mappings,
            a.total.gpu_imports,
            a.producer.buffers,
            a.producer.mappings,
            a.producer.gpu_imports,
            a.consumer.buffers,
            a.consumer.mappings,
            a.consumer.gpu_imports,
            if a.zero { "ok" } else { "NOT MET" }
        )?;

        match (&self.vulkan, &self.vulkan_note) {
            (Some(v), _) => writeln!(
                f,
                "\nvulkan ({}, {}): import {:.1} µs/frame, staging {:.1} µs/frame, ratio {:.2}",
                v.device, v.size, v.import_us_per_frame, v.staging_us_per_frame, v.ratio
            ),
            (None, Some(note)) => writeln!(f, "\nvulkan: {note}"),
            (None, None) => writeln!(f, "\nvulkan: not measured"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_even_and_complete() {
        assert_eq!(split(10, 3), vec![4, 3, 3]);
        assert_eq!(split(2, 5), vec![1, 1]);
        assert_eq!(split(0, 3), Vec::<u64>::new());
        assert_eq!(split(300, 5).iter().sum::<u64>(), 300);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
