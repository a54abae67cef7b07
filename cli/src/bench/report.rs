//! The report: every figure `frameshare bench` prints (and `--json` writes), and how each is
//! computed from the cells' samples after the run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use frameshare::counters::Counters;
use frameshare::pipeline::{pattern_name, Latency};
use frameshare::source::Pattern;

use super::driver::Driver;
use super::figures::{
    fan_out_figures, gst_figures, static_figures, targets, FanOutFigure, GstFigure, StaticFigure,
    Target, TargetInputs,
};
use super::plan::Cells;
use super::stats::{add, latency, median, ratio, Stats};
use super::vulkan::VulkanFigures;
use super::{
    size_name, FLOOR_PING_BYTES, FLOOR_PONG_BYTES, FORMAT, PIPE_CAPACITY, RING_SLOTS,
    SIZE_SCALING_LIMIT,
};

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
    /// f. What a handoff costs each side with a static source (nothing drawn).
    pub static_cost: Vec<StaticFigure>,
    /// g. One producer, several consumers.
    pub fan_out: Vec<FanOutFigure>,
    /// h. Unpaced fps against GStreamer's shm pair (with `--gstreamer`).
    pub gstreamer: Vec<GstFigure>,
    /// The GStreamer version measured, or why nothing was.
    pub gstreamer_note: Option<String>,
    /// i. The targets, each a ratio from this run.
    pub targets: Vec<Target>,
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
    /// Peer CPU per ping (pace, send, receive the answer), µs, median over batches.
    pub producer_cpu_us_per_frame: f64,
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

/// What the report needs besides the cells.
pub(super) struct ReportInputs<'a> {
    pub(super) allocs: Vec<String>,
    pub(super) skipped_allocs: Vec<SkippedAlloc>,
    pub(super) sizes: &'a [(u32, u32)],
    pub(super) frames: u64,
    pub(super) verify_frames: u64,
    pub(super) fps_frames: u64,
    pub(super) rounds: u32,
    pub(super) warmup: u64,
    pub(super) buffers: usize,
    pub(super) pace: Duration,
    pub(super) pattern: Pattern,
    pub(super) vulkan: Option<VulkanFigures>,
    pub(super) vulkan_note: Option<String>,
    pub(super) gstreamer_note: Option<String>,
    pub(super) cells: Cells,
    pub(super) elapsed_s: f64,
}

/// Builds the report from the driver's cells.
pub(super) fn report(d: &Driver, inp: ReportInputs<'_>) -> BenchReport {
    let floor_cell = &d.cells[inp.cells.floor];
    let floor_lat = latency(&floor_cell.stats.latency_ns);
    let floor_cpu_us = median(&floor_cell.stats.cpu_per_frame_ns) / 1000.0;
    let floor_producer_us = median(&floor_cell.stats.producer_cpu_per_frame_ns) / 1000.0;
    let floor = FloorFigure {
        latency_us: floor_lat,
        samples: floor_cell.stats.latency_ns.len() as u64,
        late_frames: floor_cell.stats.late,
        consumer_cpu_us_per_frame: floor_cpu_us,
        producer_cpu_us_per_frame: floor_producer_us,
    };
    let zero_copy = || inp.cells.zero_copy.iter().map(|&i| &d.cells[i]);
    let zc = |alloc: &str, size: (u32, u32)| {
        zero_copy().find(|c| c.alloc.as_deref() == Some(alloc) && c.size == size)
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
    for c in zero_copy() {
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
    for &i in &inp.cells.fan_out {
        let s = &d.cells[i].stats;
        producer = add(producer, s.producer_counters);
        consumer = add(consumer, s.consumer_counters);
        counted += s.counted_frames;
    }
    let total = add(producer, consumer);
    let static_cost = static_figures(&d.cells, (&floor_lat, floor_cpu_us, floor_producer_us));
    let fan_out = fan_out_figures(&d.cells);
    let gstreamer = gst_figures(&d.cells, &inp.cells.gstreamer);
    let targets = targets(&TargetInputs {
        reference_alloc: &reference_alloc,
        handoff: &handoff,
        size_scaling: &size_scaling,
        fps: &fps,
        static_cost: &static_cost,
        fan_out: &fan_out,
        gstreamer: &gstreamer,
        gstreamer_note: inp.gstreamer_note.as_deref(),
    });
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
        static_cost,
        fan_out,
        gstreamer,
        gstreamer_note: inp.gstreamer_note,
        targets,
        vulkan: inp.vulkan,
        vulkan_note: inp.vulkan_note,
        elapsed_s: inp.elapsed_s,
    }
}
