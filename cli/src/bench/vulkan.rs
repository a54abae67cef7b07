//! The Vulkan import-vs-staging figures as the report carries them (the measurement itself is the
//! CLI's `bench_vulkan`, over the library's GPU layer; the bench only reports what it measured).

use serde::{Deserialize, Serialize};

/// The Vulkan import-vs-staging figure: importing the shared buffer into the GPU against
/// copying it through a staging buffer, per frame. The top-level figures are the first size's
/// whole frames; `per_size` has every size, whole frames and the transfer step alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VulkanFigures {
    /// The GPU and the allocator.
    pub device: String,
    /// Frame size.
    pub size: String,
    /// Per frame, imported buffer, µs.
    pub import_us_per_frame: f64,
    /// Per frame, staging copy, µs.
    pub staging_us_per_frame: f64,
    /// Staging time over import time (above 1: importing is faster).
    pub ratio: f64,
    /// Every size measured (1080p and 4K).
    #[serde(default)]
    pub per_size: Vec<VulkanSize>,
}

/// Import against staging at one size: whole frames (upload, shader, wait) and the transfer
/// step alone (the staging copy, CPU + GPU, against the import's ownership acquire on the GPU).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VulkanSize {
    /// Frame size.
    pub size: String,
    /// Whole frame, imported buffer, µs.
    pub import_us_per_frame: f64,
    /// Whole frame, staging copy, µs.
    pub staging_us_per_frame: f64,
    /// Whole frames, staging over import.
    pub ratio: f64,
    /// The transfer step alone, import path, µs per frame.
    pub import_transfer_us: f64,
    /// The transfer step alone, staging path, µs per frame.
    pub staging_transfer_us: f64,
    /// The transfer step alone, staging over import.
    pub transfer_ratio: f64,
    /// Whether the GPU part comes from timestamps (else only the CPU part is counted).
    pub gpu_timestamps: bool,
    /// CPU µs of one import call (per buffer, once).
    pub import_call_us: f64,
}

/// The note when the Vulkan measurement was not asked for.
pub const VULKAN_NOT_MEASURED: &str =
    "not measured (pass --vulkan to measure import vs staging upload)";
