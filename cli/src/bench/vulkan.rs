//! The Vulkan import-vs-staging figure as the report carries it (the measurement itself is the
//! CLI's `bench_vulkan`, over the library's GPU layer; the bench only reports what it measured).

use serde::{Deserialize, Serialize};

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
