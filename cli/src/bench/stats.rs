//! What a cell collects over the run, and the arithmetic the report does with it: batches split
//! over rounds, medians, ratios that say NaN rather than divide by zero, latency percentiles.

use frameshare::counters::Counters;
use frameshare::pipeline::Latency;

/// A cell's samples, pooled over the rounds.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) latency_ns: Vec<u64>,
    pub(super) cpu_per_frame_ns: Vec<f64>,
    pub(super) verify_cpu_per_frame_ns: Vec<f64>,
    pub(super) verify_frames: u64,
    pub(super) verified: u64,
    pub(super) bytes_copied: u64,
    pub(super) copied_frames: u64,
    pub(super) late: u64,
    pub(super) two_process_fps: Vec<f64>,
    pub(super) in_process_fps: Vec<f64>,
    pub(super) producer_counters: Counters,
    pub(super) consumer_counters: Counters,
    pub(super) counted_frames: u64,
    /// The peer's CPU per frame in latency batches (drawing included; for the floor, its side
    /// of the ping).
    pub(super) producer_cpu_per_frame_ns: Vec<f64>,
    pub(super) static_latency_ns: Vec<u64>,
    pub(super) static_cpu_per_frame_ns: Vec<f64>,
    pub(super) static_producer_cpu_per_frame_ns: Vec<f64>,
    pub(super) static_fps: Vec<f64>,
    pub(super) static_unpaced_cpu_per_frame_ns: Vec<f64>,
    pub(super) static_unpaced_producer_cpu_per_frame_ns: Vec<f64>,
    /// Unpaced fps with every frame cleared (frameshare), or of the GStreamer pair.
    pub(super) clear_fps: Vec<f64>,
    /// GStreamer cells: runs that failed or hung, and why.
    pub(super) failed_runs: Vec<String>,
    /// Fan-out cells: each consumer's samples, in join order.
    pub(super) consumers: Vec<ConsumerStats>,
}

/// One fan-out consumer's samples.
#[derive(Default)]
pub(super) struct ConsumerStats {
    pub(super) latency_ns: Vec<u64>,
    pub(super) cpu_per_frame_ns: Vec<f64>,
}

/// Two counter snapshots' sum.
pub(super) fn add(a: Counters, b: Counters) -> Counters {
    Counters {
        buffers: a.buffers + b.buffers,
        mappings: a.mappings + b.mappings,
        gpu_imports: a.gpu_imports + b.gpu_imports,
    }
}

/// The median (0 for no samples).
pub(super) fn median(v: &[f64]) -> f64 {
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

/// `a / b`, NaN when `b` is not positive (JSON writes it as null).
pub(super) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// Percentiles of latency samples in ns, as µs.
pub(super) fn latency(samples: &[u64]) -> Latency {
    Latency::from_ns(&mut samples.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
