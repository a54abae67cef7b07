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
//!
//! # Layout
//! [`control`] the driver–peer protocol and raw I/O; [`peer`] the producer side; [`driver`]
//! the consumer side and the batches; [`stats`] the arithmetic; [`report`] the figures and how
//! they are computed; [`table`] how they are printed; [`vulkan`] the import-vs-staging figure as reported.

mod control;
mod driver;
mod fanout;
mod figures;
mod gst;
mod peer;
mod plan;
mod report;
mod stats;
mod table;
mod vulkan;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::io::Errno;

use frameshare::alloc::{self, AllocError};
use frameshare::buffer::BufferError;
use frameshare::bus::socket::ChannelError;
use frameshare::format::{FormatError, Fourcc, FrameLayout};
use frameshare::sink::SinkError;
use frameshare::source::Pattern;

use control::{seqpacket_pair, Ctl, ToPeer};
use driver::{Driver, PeerProcess};
pub use peer::peer;
use report::{report, ReportInputs};
pub use report::{BenchReport, FpsFigure, HandoffFigure, SizeScaling, SkippedAlloc};
pub use vulkan::VULKAN_NOT_MEASURED;
#[cfg(feature = "vulkan")]
pub use vulkan::{VulkanFigures, VulkanSize};

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
/// The limit: handoff p50 at the largest size over that at the smallest (issue 15: 4K ÷ 480p).
pub const SIZE_SCALING_LIMIT: f64 = 1.1;
/// The allocators `--allocs auto` tries, best first; those this machine lacks are skipped.
pub const AUTO_ALLOCS: [&str; 5] = ["dma-heap", "udmabuf", "memfd", "posix-shm", "sysv-shm"];

/// The default consumer counts of the fan-out section.
pub const DEFAULT_FAN_OUT: [usize; 4] = [1, 2, 4, 8];

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

fn size_name((w, h): (u32, u32)) -> String {
    format!("{w}x{h}")
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
    /// Consumer counts of the fan-out section (one producer, that many subscribers, the first
    /// allocator and size); empty: no fan-out section.
    pub fan_out: Vec<usize>,
    /// Also measure GStreamer's shmsink → shmsrc pair (if `gst-launch-1.0` is installed).
    pub gstreamer: bool,
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
            fan_out: DEFAULT_FAN_OUT.to_vec(),
            gstreamer: false,
        }
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
    if opts.fan_out.contains(&0) {
        return Err(BenchError::Usage(
            "a fan-out cell needs at least 1 consumer".into(),
        ));
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
    let mut d = Driver::new(Ctl::new(ours), opts.pace, opts.pattern);

    // Cells: the floor, zero-copy per (alloc, size), the baselines per size, the fan-out cells
    // (the first allocator and size), the GStreamer pairs (per size, if asked for).
    let mut cells = plan::Cells {
        floor: d.cells.len(),
        ..Default::default()
    };
    d.add_floor()?;
    for a in &allocs {
        for &s in &opts.sizes {
            cells.zero_copy.push(d.cells.len());
            d.add_zero_copy(a, s, opts.buffers)?;
        }
    }
    for &s in &opts.sizes {
        cells.baselines.push(d.cells.len());
        d.add_pipe(s)?;
        cells.baselines.push(d.cells.len());
        d.add_ring(s)?;
    }
    for &n in &opts.fan_out {
        cells.fan_out.push(d.cells.len());
        d.add_fan_out(&allocs[0], opts.sizes[0], opts.buffers, n)?;
    }
    let mut gstreamer_note = None;
    if opts.gstreamer {
        match gst::Gst::find() {
            Ok(g) => {
                gstreamer_note = Some(g.version.clone());
                for (k, &s) in opts.sizes.iter().enumerate() {
                    cells.gstreamer.push((d.cells.len(), cells.zero_copy[k]));
                    d.add_gst(g.clone(), s)?;
                }
            }
            Err(why) => gstreamer_note = Some(format!("not measured: {why}")),
        }
    }

    let frames = plan::Frames {
        latency: opts.frames,
        verify: verify_frames,
        fps: fps_frames,
        warmup,
        gstreamer: plan::gstreamer_frames,
        gstreamer_rounds: plan::GSTREAMER_ROUNDS.min(rounds),
    };
    let plan = plan::build(&cells, frames, rounds, |i| {
        let (w, h) = d.cells[i].size;
        w as usize * h as usize
    });

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
        .then(|| crate::bench_vulkan::figures(opts.frames));
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
            gstreamer_note,
            cells,
            elapsed_s: start.elapsed().as_secs_f64(),
        },
    ))
}
