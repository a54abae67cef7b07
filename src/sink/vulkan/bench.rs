//! The import-versus-staging benchmark: the same generated frames, in the same run, through two
//! Vulkan sinks — one importing the buffers (dma-buf or host pointer), one copying every frame
//! through a staging buffer — timing each sink's `frame` (submit, GPU convert + checksum, wait,
//! verify). Frames alternate between the two sinks so both see the same load.

use std::time::Instant;

use serde::Serialize;

use super::{ImportMode, ImportPath, VulkanOptions, VulkanSink};
use crate::buffer::Access;
use crate::format::{Fourcc, FrameLayout};
use crate::sink::{FrameIn, Sink, SinkError};
use crate::source::{Generator, Pattern};

/// One benchmark result.
#[derive(Debug, Clone, Serialize)]
pub struct ImportVsStaging {
    /// Allocator.
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
    /// The zero-copy path the import sink took.
    pub import_path: ImportPath,
    /// Mean µs per frame, import path.
    pub import_us: f64,
    /// Mean µs per frame, staging copy.
    pub staging_us: f64,
    /// `staging_us / import_us` (above 1: importing is faster).
    pub ratio: f64,
    /// Frames the import sink verified (of `frames` + warm-up).
    pub import_verified: u64,
    /// Frames the staging sink verified.
    pub staging_verified: u64,
    /// Bytes the staging sink copied per frame.
    pub staging_bytes_per_frame: u64,
}

const WARMUP: u64 = 3;

/// Runs `frames` frames of `fourcc` `width`x`height` from allocator `alloc` through the best
/// import path and through the staging copy.
pub fn import_vs_staging(
    alloc: &str,
    fourcc: Fourcc,
    width: u32,
    height: u32,
    frames: u64,
) -> Result<ImportVsStaging, SinkError> {
    import_vs_staging_with(alloc, fourcc, width, height, frames, ImportMode::Auto)
}

/// As [`import_vs_staging`], with the import sink forced to `mode` (`ImportMode::Buffer`
/// compares like with like: the same buffer-reading shader on both sides).
pub fn import_vs_staging_with(
    alloc: &str,
    fourcc: Fourcc,
    width: u32,
    height: u32,
    frames: u64,
    mode: ImportMode,
) -> Result<ImportVsStaging, SinkError> {
    let layout = FrameLayout::linear(fourcc, width, height, 256)
        .map_err(|e| SinkError::Unsupported(e.to_string()))?;
    let (mut allocator, _) =
        crate::alloc::open(alloc).map_err(|e| SinkError::Unsupported(e.to_string()))?;
    let buffers: Vec<_> = (0..2)
        .map(|_| allocator.allocate(&layout))
        .collect::<Result<_, _>>()
        .map_err(|e| SinkError::Unsupported(e.to_string()))?;
    let mut maps: Vec<_> = buffers
        .iter()
        .map(|b| b.map(true))
        .collect::<Result<_, _>>()?;
    let pattern = Pattern::MovingBox;
    let mut generator = Generator::new(pattern, &layout);
    let mut import = VulkanSink::new(VulkanOptions {
        mode,
        ..Default::default()
    })?;
    let mut staging = VulkanSink::new(VulkanOptions {
        mode: ImportMode::Staging,
        ..Default::default()
    })?;
    for s in [&mut import, &mut staging] {
        s.set_pattern(Some(pattern));
        for (id, b) in buffers.iter().enumerate() {
            s.add_buffer(id as u32, b)?;
        }
    }
    let (mut t_import, mut t_staging) = (0.0f64, 0.0f64);
    for seq in 0..frames + WARMUP {
        let id = (seq % 2) as u32;
        {
            let mut access = maps[id as usize].access(Access::Write)?;
            generator.fill(id, &mut access, seq);
        }
        let run = |s: &mut VulkanSink| -> Result<f64, SinkError> {
            let t = Instant::now();
            s.frame(FrameIn {
                id,
                seq,
                buffer: &buffers[id as usize],
                acquire: None,
                meta: &Default::default(),
            })?;
            Ok(t.elapsed().as_secs_f64())
        };
        // Alternate which goes first, so neither always finds the caches warm.
        let (a, b) = if seq % 2 == 0 {
            let a = run(&mut import)?;
            (a, run(&mut staging)?)
        } else {
            let b = run(&mut staging)?;
            (run(&mut import)?, b)
        };
        if seq >= WARMUP {
            t_import += a;
            t_staging += b;
        }
    }
    let n = frames.max(1) as f64;
    let import_us = t_import * 1e6 / n;
    let staging_us = t_staging * 1e6 / n;
    let per_frame = staging.bytes_copied() / (frames + WARMUP);
    Ok(ImportVsStaging {
        alloc: allocator.kind().name().to_owned(),
        fourcc: fourcc.name(),
        width,
        height,
        frames,
        device: import.stats().device.clone(),
        import_path: import
            .stats()
            .imports
            .first()
            .map_or(ImportPath::Staging, |i| i.path),
        import_us,
        staging_us,
        ratio: if import_us > 0.0 {
            staging_us / import_us
        } else {
            0.0
        },
        import_verified: import.stats().verified,
        staging_verified: staging.stats().verified,
        staging_bytes_per_frame: per_frame,
    })
}
