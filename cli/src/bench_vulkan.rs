//! `frameshare bench --vulkan`: importing buffers into Vulkan versus copying every frame through
//! a staging buffer, on the GPU layer's public API (`frameshare::gpu::vulkan`). The same
//! generated frames, in the same run, on one device and queue, through two jobs per buffer —
//! one reading the buffer's import (dma-buf or host pointer), one the staging copy — timing
//! each frame's upload (the staging copy, or nothing), submission, GPU convert + checksum and
//! wait. Frames alternate between the two paths so both see the same load; every frame's GPU
//! checksum is then checked against the generator's, outside the clock.
//!
//! The whole frame hides what import saves behind the shader, so the transfer step is also
//! timed alone: the CPU's staging copy plus the GPU time between two timestamps around the
//! commands that bring the memory to the shader (the staging path's GPU copy where memory is
//! not device-local, the ownership acquire of imported memory), and the CPU time of the one
//! import call per buffer that replaces all of it.

use std::time::{Duration, Instant};

use serde::Serialize;

use frameshare::alloc::{self, AllocError};
use frameshare::buffer::{Access, BufferError};
use frameshare::format::{FormatError, Fourcc, FrameLayout};
use frameshare::gpu::vulkan::{
    checksum, Conversion, Device, FrameJob, FrameQueue, Import, ImportMode, ImportPath, Pipelines,
    VulkanError,
};
use frameshare::source::{Generator, Pattern, Scene};

use crate::bench::{VulkanFigures, VulkanSize};

/// One import-versus-staging result (`frameshare bench --vulkan-only --json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct ImportVsStaging {
    /// Allocator kind.
    pub alloc: String,
    /// Format.
    pub fourcc: String,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Timed frames per path (after warm-up).
    pub frames: u64,
    /// Vulkan device.
    pub device: String,
    /// The zero-copy path the import took.
    pub import_path: ImportPath,
    /// Mean µs per frame, import path.
    pub import_us: f64,
    /// Mean µs per frame, staging copy.
    pub staging_us: f64,
    /// `staging_us / import_us` (above 1: importing is faster).
    pub ratio: f64,
    /// Mean µs per frame of the transfer step alone, import path: GPU time between the
    /// timestamps around the ownership acquire (no CPU copy).
    pub import_transfer_us: f64,
    /// Mean µs per frame of the transfer step alone, staging path: the CPU copy plus the GPU
    /// time between the timestamps around its GPU copy (if any).
    pub staging_transfer_us: f64,
    /// `staging_transfer_us / import_transfer_us`.
    pub transfer_ratio: f64,
    /// Whether the GPU part of the transfer figures comes from timestamps (`false`: the queue
    /// has none, and only the CPU part is counted).
    pub gpu_timestamps: bool,
    /// CPU µs of one import call (per buffer, once: it replaces every frame's copy).
    pub import_call_us: f64,
    /// CPU µs of setting up the staging path (per buffer, once).
    pub staging_setup_us: f64,
    /// Frames whose GPU checksum matched the generator's through the import (of `frames` +
    /// warm-up).
    pub import_verified: u64,
    /// Frames verified through the staging copy.
    pub staging_verified: u64,
    /// Bytes the staging path copied per frame.
    pub staging_bytes_per_frame: u64,
}

/// Why the measurement could not run.
#[derive(Debug, thiserror::Error)]
pub enum VulkanBenchError {
    /// The GPU layer failed.
    #[error(transparent)]
    Vulkan(#[from] VulkanError),
    /// The allocator could not be opened or allocate.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// A buffer could not be mapped or written.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// The frame layout is impossible.
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// Unmeasured frames per path before the timed ones.
pub const WARMUP: u64 = 3;

/// How long a frame may take on the GPU (llvmpipe under emulation is slow).
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `frames` frames of `fourcc` `width`x`height` from allocator `alloc` through the import
/// path `mode` allows (`ImportMode::Buffer` compares like with like: the same buffer-reading
/// shader on both sides) and through the staging copy.
pub fn import_vs_staging(
    alloc: &str,
    fourcc: Fourcc,
    (width, height): (u32, u32),
    frames: u64,
    mode: ImportMode,
) -> Result<ImportVsStaging, VulkanBenchError> {
    let layout = FrameLayout::linear(fourcc, width, height, 256)?;
    let (mut allocator, _) = alloc::open(alloc)?;
    let buffers = (0..2)
        .map(|_| allocator.allocate(&layout))
        .collect::<Result<Vec<_>, _>>()?;
    let mut maps = buffers
        .iter()
        .map(|b| b.map(true))
        .collect::<Result<Vec<_>, _>>()?;
    let pattern = Pattern::MovingBox;
    let mut generator = Generator::new(pattern, &layout);
    let scene = Scene::new(pattern, &layout);

    let device = Device::open()?;
    let pipelines = Pipelines::new(&device)?;
    let mut queue = FrameQueue::new(&device)?;
    pipelines.warm_up(&mut queue)?;
    // Each buffer's jobs, and the mean CPU seconds of its import call.
    let job = |mode| -> Result<(Vec<FrameJob>, f64), VulkanError> {
        let mut import_s = 0.0;
        let jobs = buffers
            .iter()
            .map(|b| {
                let t = Instant::now();
                let import = Import::new(&device, b, mode)?;
                import_s += t.elapsed().as_secs_f64();
                FrameJob::timed(&pipelines, import, &layout, Conversion::Rgba)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((jobs, import_s / buffers.len() as f64))
    };
    let (mut import, import_call_s) = job(mode)?;
    let (mut staging, staging_setup_s) = job(ImportMode::Staging)?;

    let mut timestamps = true;
    let mut run = |job: &mut FrameJob| -> Result<Timed, VulkanError> {
        let t = Instant::now();
        let copied = job.stage()?;
        let staged = t.elapsed().as_secs_f64();
        queue.submit(job)?;
        queue.wait(FRAME_TIMEOUT)?;
        let whole = t.elapsed().as_secs_f64();
        let gpu = job.transfer_gpu_ns();
        timestamps &= gpu.is_some();
        Ok(Timed {
            whole,
            transfer: staged + gpu.unwrap_or(0.0) * 1e-9,
            copied,
        })
    };
    let (mut t_import, mut t_staging) = (Timed::default(), Timed::default());
    let (mut import_verified, mut staging_verified, mut staged) = (0u64, 0u64, 0u64);
    for seq in 0..frames + WARMUP {
        let id = (seq % 2) as usize;
        generator.fill(id as u32, &mut maps[id].access(Access::Write)?, seq);
        // Alternate which goes first, so neither always finds the caches warm.
        let (a, b) = if seq % 2 == 0 {
            let a = run(&mut import[id])?;
            (a, run(&mut staging[id])?)
        } else {
            let b = run(&mut staging[id])?;
            (run(&mut import[id])?, b)
        };
        staged += b.copied;
        if seq >= WARMUP {
            t_import.add(&a);
            t_staging.add(&b);
        }
        let frame = scene.frame(seq);
        let want = checksum::checksum(&layout, |p, r| frame.row(p, r));
        import_verified += (import[id].checksum() == Some(want)) as u64;
        staging_verified += (staging[id].checksum() == Some(want)) as u64;
    }
    let n = frames.max(1) as f64;
    let import_us = t_import.whole * 1e6 / n;
    let staging_us = t_staging.whole * 1e6 / n;
    let import_transfer_us = t_import.transfer * 1e6 / n;
    let staging_transfer_us = t_staging.transfer * 1e6 / n;
    Ok(ImportVsStaging {
        alloc: allocator.kind().name().to_owned(),
        fourcc: fourcc.name(),
        width,
        height,
        frames,
        device: device.caps().name.clone(),
        import_path: import[0].import().path(),
        import_us,
        staging_us,
        ratio: ratio(staging_us, import_us),
        import_transfer_us,
        staging_transfer_us,
        transfer_ratio: ratio(staging_transfer_us, import_transfer_us),
        gpu_timestamps: timestamps,
        import_call_us: import_call_s * 1e6,
        staging_setup_us: staging_setup_s * 1e6,
        import_verified,
        staging_verified,
        staging_bytes_per_frame: staged / (frames + WARMUP),
    })
}

/// Seconds of one path's frames: whole frames, the transfer step alone; bytes copied.
#[derive(Debug, Default)]
struct Timed {
    whole: f64,
    transfer: f64,
    copied: u64,
}

impl Timed {
    fn add(&mut self, o: &Timed) {
        self.whole += o.whole;
        self.transfer += o.transfer;
        self.copied += o.copied;
    }
}

/// `a / b`, 0 when `b` is not positive.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The sizes `frameshare bench --vulkan` measures: 1080p and 4K.
pub const SIZES: [(u32, u32); 2] = [(1920, 1080), (3840, 2160)];

/// The figures `frameshare bench --vulkan` adds to its report: XR24 at 1080p and 4K, on the
/// best allocator here (a dma-buf where there is one, else memfd), whole frames and the
/// transfer step alone. `Err` says why nothing was measured.
pub fn figures(frames: u64) -> Result<VulkanFigures, String> {
    let (alloc, _) = alloc::open("auto").map_err(|e| e.to_string())?;
    let frames = frames.clamp(10, 120);
    let mut per_size = Vec::new();
    let mut device = String::new();
    for size in SIZES {
        let r = import_vs_staging(
            alloc.kind().name(),
            Fourcc::XR24,
            size,
            frames,
            ImportMode::Auto,
        )
        .map_err(|e| frameshare::gpu::vulkan::chain(&e))?;
        device = format!("{} via {:?} from {}", r.device, r.import_path, r.alloc);
        per_size.push(VulkanSize {
            size: format!("{}x{}", size.0, size.1),
            import_us_per_frame: r.import_us,
            staging_us_per_frame: r.staging_us,
            ratio: r.ratio,
            import_transfer_us: r.import_transfer_us,
            staging_transfer_us: r.staging_transfer_us,
            transfer_ratio: r.transfer_ratio,
            gpu_timestamps: r.gpu_timestamps,
            import_call_us: r.import_call_us,
        });
    }
    let first = &per_size[0];
    Ok(VulkanFigures {
        device,
        size: first.size.clone(),
        import_us_per_frame: first.import_us_per_frame,
        staging_us_per_frame: first.staging_us_per_frame,
        ratio: first.ratio,
        per_size,
    })
}

impl std::fmt::Display for ImportVsStaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "vulkan {} {} {}x{} on {}: import ({}) {:.1} µs/frame, staging {:.1} µs/frame ({} bytes copied a frame), ratio {:.2}; transfer step alone{}: import {:.1} µs/frame, staging {:.1} µs/frame, ratio {:.1} (one import call {:.1} µs per buffer, staging set-up {:.1} µs); verified {} + {} of {} frames each",
            self.alloc,
            self.fourcc,
            self.width,
            self.height,
            self.device,
            self.import_path,
            self.import_us,
            self.staging_us,
            self.staging_bytes_per_frame,
            self.ratio,
            if self.gpu_timestamps { " (CPU + GPU timestamps)" } else { " (CPU only: no GPU timestamps)" },
            self.import_transfer_us,
            self.staging_transfer_us,
            self.transfer_ratio,
            self.import_call_us,
            self.staging_setup_us,
            self.import_verified,
            self.staging_verified,
            self.frames + WARMUP
        )
    }
}
