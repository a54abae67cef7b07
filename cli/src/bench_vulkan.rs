//! `frameshare bench --vulkan`: importing buffers into Vulkan versus copying every frame through
//! a staging buffer, on the GPU layer's public API (`frameshare::gpu::vulkan`). The same
//! generated frames, in the same run, on one device and queue, through two jobs per buffer —
//! one reading the buffer's import (dma-buf or host pointer), one the staging copy — timing
//! each frame's upload (the staging copy, or nothing), submission, GPU convert + checksum and
//! wait. Frames alternate between the two paths so both see the same load; every frame's GPU
//! checksum is then checked against the generator's, outside the clock.

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

use crate::bench::VulkanFigures;

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
    let job = |mode| -> Result<Vec<FrameJob>, VulkanError> {
        buffers
            .iter()
            .map(|b| {
                let import = Import::new(&device, b, mode)?;
                FrameJob::new(&pipelines, import, &layout, Conversion::Rgba)
            })
            .collect()
    };
    let mut import = job(mode)?;
    let mut staging = job(ImportMode::Staging)?;

    let mut run = |job: &mut FrameJob| -> Result<(f64, u64), VulkanError> {
        let t = Instant::now();
        let copied = job.stage()?;
        queue.submit(job)?;
        queue.wait(FRAME_TIMEOUT)?;
        Ok((t.elapsed().as_secs_f64(), copied))
    };
    let (mut t_import, mut t_staging) = (0.0f64, 0.0f64);
    let (mut import_verified, mut staging_verified, mut staged) = (0u64, 0u64, 0u64);
    for seq in 0..frames + WARMUP {
        let id = (seq % 2) as usize;
        generator.fill(id as u32, &mut maps[id].access(Access::Write)?, seq);
        // Alternate which goes first, so neither always finds the caches warm.
        let ((a, _), (b, copied)) = if seq % 2 == 0 {
            let a = run(&mut import[id])?;
            (a, run(&mut staging[id])?)
        } else {
            let b = run(&mut staging[id])?;
            (run(&mut import[id])?, b)
        };
        staged += copied;
        if seq >= WARMUP {
            t_import += a;
            t_staging += b;
        }
        let frame = scene.frame(seq);
        let want = checksum::checksum(&layout, |p, r| frame.row(p, r));
        import_verified += (import[id].checksum() == Some(want)) as u64;
        staging_verified += (staging[id].checksum() == Some(want)) as u64;
    }
    let n = frames.max(1) as f64;
    let import_us = t_import * 1e6 / n;
    let staging_us = t_staging * 1e6 / n;
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
        ratio: if import_us > 0.0 {
            staging_us / import_us
        } else {
            0.0
        },
        import_verified,
        staging_verified,
        staging_bytes_per_frame: staged / (frames + WARMUP),
    })
}

/// The figure `frameshare bench --vulkan` adds to its report: XR24 at the first size, on the
/// best allocator here (a dma-buf where there is one, else memfd). `Err` says why nothing was
/// measured.
pub fn figures(sizes: &[(u32, u32)], frames: u64) -> Result<VulkanFigures, String> {
    let size = *sizes.first().ok_or("no frame size")?;
    let (alloc, _) = alloc::open("auto").map_err(|e| e.to_string())?;
    let frames = frames.clamp(10, 120);
    let r = import_vs_staging(
        alloc.kind().name(),
        Fourcc::XR24,
        size,
        frames,
        ImportMode::Auto,
    )
    .map_err(|e| frameshare::gpu::vulkan::chain(&e))?;
    Ok(VulkanFigures {
        device: format!("{} via {:?} from {}", r.device, r.import_path, r.alloc),
        size: format!("{}x{}", size.0, size.1),
        import_us_per_frame: r.import_us,
        staging_us_per_frame: r.staging_us,
        ratio: r.ratio,
    })
}

impl std::fmt::Display for ImportVsStaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "vulkan {} {} {}x{} on {}: import ({}) {:.1} µs/frame, staging {:.1} µs/frame ({} bytes copied a frame), ratio {:.2}; verified {} + {} of {} frames each",
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
            self.import_verified,
            self.staging_verified,
            self.frames + WARMUP
        )
    }
}
