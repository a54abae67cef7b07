//! The order of the batches: a warm-up of every cell (not measured), then interleaved rounds
//! in which every cell gets its batches, latency cells each right after a floor batch, the order
//! of cells reversing from round to round, so that every ratio compares figures measured side by
//! side, under the same load.

use super::driver::Batch;

/// One batch: cell, kind, frames, warm-up (not recorded).
pub(super) type Step = (usize, Batch, u64, bool);

/// The cells, by what they are (indexes into the driver's cells).
#[derive(Debug, Default)]
pub(super) struct Cells {
    pub(super) floor: usize,
    /// Zero-copy cells.
    pub(super) zero_copy: Vec<usize>,
    /// Copying baselines.
    pub(super) baselines: Vec<usize>,
    /// Fan-out cells, fewest consumers first.
    pub(super) fan_out: Vec<usize>,
    /// (GStreamer cell, the zero-copy cell it is compared with).
    pub(super) gstreamer: Vec<(usize, usize)>,
}

/// How many frames each kind of batch gets in all (split over the rounds).
#[derive(Debug, Clone, Copy)]
pub(super) struct Frames {
    pub(super) latency: u64,
    pub(super) verify: u64,
    pub(super) fps: u64,
    pub(super) warmup: u64,
    /// Per GStreamer comparison batch (each side), and in how many rounds.
    pub(super) gstreamer: fn(usize) -> u64,
    pub(super) gstreamer_rounds: u32,
}

/// Rounds the GStreamer comparison runs in (each run starts two processes).
pub(super) const GSTREAMER_ROUNDS: u32 = 3;

/// Frames of one GStreamer comparison run at a size: about a second's worth at the rates seen
/// here, and enough for `fpsdisplaysink` to report several averages.
pub(super) fn gstreamer_frames(cell_pixels: usize) -> u64 {
    (600_000_000 / cell_pixels.max(1) as u64).clamp(300, 3000)
}

/// `total` split into `parts` nearly equal batches (none empty).
pub(super) fn split(total: u64, parts: u32) -> Vec<u64> {
    let parts = (parts as u64).clamp(1, total.max(1));
    (0..parts)
        .map(|i| total / parts + u64::from(i < total % parts))
        .filter(|&n| n > 0)
        .collect()
}

/// The whole run, in order. `pixels` gives a cell's frame size in pixels.
pub(super) fn build(
    cells: &Cells,
    frames: Frames,
    rounds: u32,
    pixels: impl Fn(usize) -> usize,
) -> Vec<Step> {
    let w = frames.warmup;
    let mut plan: Vec<Step> = vec![(cells.floor, Batch::Latency, w, true)];
    for &i in cells.zero_copy.iter().chain(&cells.baselines) {
        plan.push((i, Batch::Latency, w, true));
    }
    for &i in &cells.zero_copy {
        for b in [
            Batch::Static,
            Batch::Verify,
            Batch::Pipelined,
            Batch::PipelinedStatic,
            Batch::InProcess,
        ] {
            plan.push((i, b, w, true));
        }
    }
    for &i in &cells.fan_out {
        plan.push((i, Batch::Static, w, true));
        plan.push((i, Batch::PipelinedStatic, w, true));
    }
    for &(_, zc) in &cells.gstreamer {
        plan.push((zc, Batch::PipelinedClear, w, true));
    }

    let latency_cells: Vec<usize> = cells
        .zero_copy
        .iter()
        .chain(&cells.baselines)
        .copied()
        .collect();
    let lat = split(frames.latency, rounds);
    let ver = split(frames.verify, rounds);
    let fps = split(frames.fps, rounds);
    for r in 0..rounds as usize {
        let forward = r % 2 == 0;
        let ordered = |v: &[usize]| -> Vec<usize> {
            let mut v = v.to_vec();
            if !forward {
                v.reverse();
            }
            v
        };
        if let Some(&n) = lat.get(r) {
            for &i in &ordered(&latency_cells) {
                plan.push((cells.floor, Batch::Latency, n.div_ceil(3), false));
                plan.push((i, Batch::Latency, n, false));
            }
            for &i in &ordered(&cells.zero_copy) {
                plan.push((cells.floor, Batch::Latency, n.div_ceil(3), false));
                plan.push((i, Batch::Static, n, false));
            }
            for &i in &ordered(&cells.fan_out) {
                plan.push((i, Batch::Static, n, false));
            }
        }
        if let Some(&n) = ver.get(r) {
            for &i in &cells.zero_copy {
                plan.push((i, Batch::Verify, n, false));
            }
        }
        if let Some(&n) = fps.get(r) {
            for &i in &ordered(&cells.zero_copy) {
                let pair = if forward {
                    [Batch::Pipelined, Batch::InProcess]
                } else {
                    [Batch::InProcess, Batch::Pipelined]
                };
                for b in pair {
                    plan.push((i, b, n, false));
                }
                plan.push((i, Batch::PipelinedStatic, n, false));
            }
            for &i in &ordered(&cells.fan_out) {
                plan.push((i, Batch::PipelinedStatic, n, false));
            }
        }
        if (r as u32) < frames.gstreamer_rounds {
            for &(gst, zc) in &cells.gstreamer {
                let n = (frames.gstreamer)(pixels(gst));
                let pair = if forward {
                    [(zc, Batch::PipelinedClear), (gst, Batch::PipelinedClear)]
                } else {
                    [(gst, Batch::PipelinedClear), (zc, Batch::PipelinedClear)]
                };
                for (i, b) in pair {
                    plan.push((i, b, n, false));
                }
            }
        }
    }
    plan
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
    fn every_cell_is_measured_and_latency_batches_follow_a_floor_batch() {
        let cells = Cells {
            floor: 0,
            zero_copy: vec![1, 2],
            baselines: vec![3],
            fan_out: vec![4, 5],
            gstreamer: vec![(6, 1)],
        };
        let frames = Frames {
            latency: 30,
            verify: 10,
            fps: 30,
            warmup: 4,
            gstreamer: |_| 7,
            gstreamer_rounds: 1,
        };
        let plan = build(&cells, frames, 3, |_| 1);
        for (k, &(i, b, n, warm)) in plan.iter().enumerate() {
            if !warm && b == Batch::Latency && i != 0 {
                assert_eq!(
                    plan[k - 1].0,
                    0,
                    "latency batch of cell {i} without a floor before"
                );
            }
            assert!(n > 0);
        }
        let measured = |cell: usize, kind: Batch| -> u64 {
            plan.iter()
                .filter(|s| s.0 == cell && s.1 == kind && !s.3)
                .map(|s| s.2)
                .sum()
        };
        for i in [1, 2, 3] {
            assert_eq!(measured(i, Batch::Latency), 30);
        }
        for i in [1, 2] {
            assert_eq!(measured(i, Batch::Static), 30);
            assert_eq!(measured(i, Batch::Verify), 10);
            assert_eq!(measured(i, Batch::Pipelined), 30);
            assert_eq!(measured(i, Batch::InProcess), 30);
            assert_eq!(measured(i, Batch::PipelinedStatic), 30);
        }
        for i in [4, 5] {
            assert_eq!(measured(i, Batch::Static), 30);
            assert_eq!(measured(i, Batch::PipelinedStatic), 30);
        }
        assert_eq!(measured(6, Batch::PipelinedClear), 7);
        assert_eq!(measured(1, Batch::PipelinedClear), 7);
    }
}
