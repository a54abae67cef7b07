//! The figures of the later sections — what a handoff costs each side with nothing drawn (f),
//! fan-out to several consumers (g), GStreamer's shm pair (h) — and the targets (i): each a
//! ratio of two figures from this run, against the limit issue 15 sets.

use serde::{Deserialize, Serialize};

use frameshare::pipeline::Latency;

use super::driver::{Cell, DriverEnd};
use super::stats::{latency, median, ratio};
use super::{size_name, FpsFigure, HandoffFigure, SizeScaling};

/// f. One zero-copy cell with a static source (nothing drawn): what the handoff costs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StaticFigure {
    /// Allocator.
    pub alloc: String,
    /// Frame size.
    pub size: String,
    /// Paced, one frame in flight: handoff latency, µs.
    pub latency_us: Latency,
    /// Its p50 over the floor's.
    pub p50_vs_floor: f64,
    /// Paced: the consumer's CPU per frame (null sink), µs, median over batches.
    pub consumer_cpu_us_per_frame: f64,
    /// Over the floor's consumer side.
    pub consumer_vs_floor: f64,
    /// Paced: the producer's CPU per frame (loan, publish, take the release), µs.
    pub producer_cpu_us_per_frame: f64,
    /// Over the floor's producer side.
    pub producer_vs_floor: f64,
    /// Unpaced, the pool running ahead: frames per second.
    pub unpaced_fps: f64,
    /// Unpaced: consumer CPU per frame, µs.
    pub unpaced_consumer_cpu_us_per_frame: f64,
    /// Unpaced: producer CPU per frame, µs.
    pub unpaced_producer_cpu_us_per_frame: f64,
}

/// g. One producer and `consumers` subscribers (threads of the bench, each its own
/// `Subscriber`), nothing drawn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanOutFigure {
    /// Allocator.
    pub alloc: String,
    /// Frame size.
    pub size: String,
    /// Consumers.
    pub consumers: usize,
    /// Paced: the producer's CPU per frame, µs.
    pub producer_cpu_us_per_frame: f64,
    /// (This − the one-consumer cell's) ÷ (consumers − 1): what each further consumer adds, µs.
    pub producer_cpu_us_per_extra_consumer: Option<f64>,
    /// Unpaced: frames per second (every consumer takes every frame).
    pub unpaced_fps: f64,
    /// Unpaced: the producer's CPU per frame, µs.
    pub unpaced_producer_cpu_us_per_frame: f64,
    /// Each consumer, in the order they joined (the order the producer sends in).
    pub per_consumer: Vec<ConsumerFigure>,
    /// The last consumer's handoff p50 over the one-consumer cell's.
    pub last_p50_vs_lone: f64,
}

/// One fan-out consumer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumerFigure {
    /// Its join order, from 1.
    pub index: usize,
    /// Handoff latency, µs.
    pub latency_us: Latency,
    /// Its thread's CPU per frame, µs.
    pub cpu_us_per_frame: f64,
}

/// h. Unpaced fps against GStreamer's shmsink → shmsrc, both producers clearing each frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GstFigure {
    /// Frame size.
    pub size: String,
    /// The frameshare allocator compared.
    pub alloc: String,
    /// frameshare, producer → consumer (null sink), each frame cleared; median of rounds.
    pub frameshare_fps: f64,
    /// GStreamer `videotestsrc pattern=black ! shmsink` → `shmsrc ! fakesink`; median of
    /// rounds.
    pub gstreamer_fps: f64,
    /// frameshare over GStreamer: median of per-round ratios (rounds where both ran).
    pub ratio: f64,
    /// GStreamer runs that failed or hung (their rounds are left out), and why.
    pub failed_runs: Vec<String>,
}

/// i. One target: a ratio from this run against its limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// What is compared.
    pub what: String,
    /// The ratio (the worst over the reference allocator's sizes, where there are several).
    pub value: Option<f64>,
    /// `<=` or `>=`.
    pub op: String,
    /// The limit.
    pub limit: f64,
    /// Whether `value op limit`; `None`: not measured.
    pub met: Option<bool>,
    /// Which cell gave the value, or why nothing was measured.
    pub detail: String,
}

/// f: the zero-copy cells' static figures.
pub(super) fn static_figures(cells: &[Cell], floor: (&Latency, f64, f64)) -> Vec<StaticFigure> {
    let (floor_lat, floor_consumer, floor_producer) = floor;
    cells
        .iter()
        .filter(|c| matches!(c.end, DriverEnd::ZeroCopy(_)))
        .map(|c| {
            let s = &c.stats;
            let l = latency(&s.static_latency_ns);
            let consumer = median(&s.static_cpu_per_frame_ns) / 1000.0;
            let producer = median(&s.static_producer_cpu_per_frame_ns) / 1000.0;
            StaticFigure {
                alloc: c.alloc.clone().unwrap_or_default(),
                size: size_name(c.size),
                latency_us: l,
                p50_vs_floor: ratio(l.p50, floor_lat.p50),
                consumer_cpu_us_per_frame: consumer,
                consumer_vs_floor: ratio(consumer, floor_consumer),
                producer_cpu_us_per_frame: producer,
                producer_vs_floor: ratio(producer, floor_producer),
                unpaced_fps: median(&s.static_fps),
                unpaced_consumer_cpu_us_per_frame: median(&s.static_unpaced_cpu_per_frame_ns)
                    / 1000.0,
                unpaced_producer_cpu_us_per_frame: median(
                    &s.static_unpaced_producer_cpu_per_frame_ns,
                ) / 1000.0,
            }
        })
        .collect()
}

/// g: the fan-out cells' figures, fewest consumers first.
pub(super) fn fan_out_figures(cells: &[Cell]) -> Vec<FanOutFigure> {
    let mut out: Vec<FanOutFigure> = cells
        .iter()
        .filter(|c| matches!(c.end, DriverEnd::FanOut(_)))
        .map(|c| {
            let s = &c.stats;
            FanOutFigure {
                alloc: c.alloc.clone().unwrap_or_default(),
                size: size_name(c.size),
                consumers: s.consumers.len(),
                producer_cpu_us_per_frame: median(&s.static_producer_cpu_per_frame_ns) / 1000.0,
                producer_cpu_us_per_extra_consumer: None,
                unpaced_fps: median(&s.static_fps),
                unpaced_producer_cpu_us_per_frame: median(
                    &s.static_unpaced_producer_cpu_per_frame_ns,
                ) / 1000.0,
                per_consumer: s
                    .consumers
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ConsumerFigure {
                        index: i + 1,
                        latency_us: latency(&c.latency_ns),
                        cpu_us_per_frame: median(&c.cpu_per_frame_ns) / 1000.0,
                    })
                    .collect(),
                last_p50_vs_lone: f64::NAN,
            }
        })
        .collect();
    out.sort_by_key(|f| f.consumers);
    let lone = out.iter().find(|f| f.consumers == 1).map(|f| {
        (
            f.producer_cpu_us_per_frame,
            f.per_consumer[0].latency_us.p50,
        )
    });
    if let Some((lone_cpu, lone_p50)) = lone {
        for f in &mut out {
            if f.consumers > 1 {
                f.producer_cpu_us_per_extra_consumer =
                    Some((f.producer_cpu_us_per_frame - lone_cpu) / (f.consumers - 1) as f64);
            }
            if let Some(last) = f.per_consumer.last() {
                f.last_p50_vs_lone = ratio(last.latency_us.p50, lone_p50);
            }
        }
    }
    out
}

/// h: each GStreamer cell against the zero-copy cell it ran beside.
pub(super) fn gst_figures(cells: &[Cell], pairs: &[(usize, usize)]) -> Vec<GstFigure> {
    pairs
        .iter()
        .map(|&(gst, zc)| {
            let (g, z) = (&cells[gst].stats.clear_fps, &cells[zc].stats.clear_fps);
            // A round where GStreamer failed is NaN on its side: left out.
            let finite = |v: &[f64]| {
                v.iter()
                    .copied()
                    .filter(|x| x.is_finite())
                    .collect::<Vec<_>>()
            };
            let ratios = finite(
                &z.iter()
                    .zip(g)
                    .map(|(a, b)| ratio(*a, *b))
                    .collect::<Vec<_>>(),
            );
            GstFigure {
                size: size_name(cells[gst].size),
                alloc: cells[zc].alloc.clone().unwrap_or_default(),
                frameshare_fps: median(z),
                gstreamer_fps: median(&finite(g)),
                ratio: median(&ratios),
                failed_runs: cells[gst].stats.failed_runs.clone(),
            }
        })
        .collect()
}

/// The sections' figures the targets are taken from.
pub(super) struct TargetInputs<'a> {
    pub(super) reference_alloc: &'a str,
    pub(super) handoff: &'a [HandoffFigure],
    pub(super) size_scaling: &'a [SizeScaling],
    pub(super) fps: &'a [FpsFigure],
    pub(super) static_cost: &'a [StaticFigure],
    pub(super) fan_out: &'a [FanOutFigure],
    pub(super) gstreamer: &'a [GstFigure],
    pub(super) gstreamer_note: Option<&'a str>,
}

/// i: the targets, each the worst value over the reference allocator's cells.
pub(super) fn targets(t: &TargetInputs<'_>) -> Vec<Target> {
    let reference = |alloc: &str| alloc == t.reference_alloc;
    let mut out = vec![
        worst(
            "consumer CPU per frame (nothing drawn, paced) ÷ the ping's consumer side",
            Op::AtMost(1.2),
            t.static_cost
                .iter()
                .filter(|f| reference(&f.alloc))
                .map(|f| (f.consumer_vs_floor, f.size.clone())),
        ),
        worst(
            "producer CPU per frame (nothing drawn, paced) ÷ the ping's producer side",
            Op::AtMost(1.5),
            t.static_cost
                .iter()
                .filter(|f| reference(&f.alloc))
                .map(|f| (f.producer_vs_floor, f.size.clone())),
        ),
        worst(
            "two-process fps ÷ one-process fps, same generator",
            Op::AtLeast(0.9),
            t.fps
                .iter()
                .filter(|f| reference(&f.alloc))
                .map(|f| (f.ratio, f.size.clone())),
        ),
    ];
    let mut gst = worst(
        "unpaced fps ÷ GStreamer shmsink→shmsrc's, both producers clearing each frame",
        Op::AtLeast(1.0),
        t.gstreamer.iter().map(|f| (f.ratio, f.size.clone())),
    );
    if t.gstreamer.is_empty() {
        gst.detail = t
            .gstreamer_note
            .unwrap_or("not measured (pass --gstreamer)")
            .to_owned();
    }
    out.push(gst);
    out.push(worst(
        "handoff p50 ÷ the ping's p50",
        Op::AtMost(1.3),
        t.handoff
            .iter()
            .filter(|f| reference(&f.alloc))
            .map(|f| (f.p50_vs_floor, f.size.clone())),
    ));
    out.push(worst(
        "handoff p50, largest size ÷ smallest",
        Op::AtMost(1.1),
        t.size_scaling
            .iter()
            .filter(|f| reference(&f.alloc))
            .map(|f| (f.p50_ratio, format!("{} / {}", f.large, f.small))),
    ));
    out.push(worst(
        "fan-out: the last consumer's handoff p50 ÷ a lone consumer's",
        Op::AtMost(2.0),
        t.fan_out
            .iter()
            .filter(|f| f.consumers > 1)
            .map(|f| (f.last_p50_vs_lone, format!("{} consumers", f.consumers))),
    ));
    out
}

enum Op {
    AtMost(f64),
    AtLeast(f64),
}

/// The worst of `values` (highest for an upper limit, lowest for a lower one), checked.
fn worst(what: &str, op: Op, values: impl Iterator<Item = (f64, String)>) -> Target {
    let (limit, sign, upper) = match op {
        Op::AtMost(l) => (l, "<=", true),
        Op::AtLeast(l) => (l, ">=", false),
    };
    let all: Vec<(f64, String)> = values.filter(|(v, _)| v.is_finite()).collect();
    let pick = all.iter().cloned().reduce(|a, b| {
        let b_worse = if upper { b.0 > a.0 } else { b.0 < a.0 };
        if b_worse {
            b
        } else {
            a
        }
    });
    let detail = if all.len() > 1 {
        all.iter()
            .map(|(v, w)| format!("{w} {v:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        all.first()
            .map(|(_, w)| w.clone())
            .unwrap_or_else(|| "not measured".into())
    };
    let value = pick.map(|p| p.0);
    Target {
        what: what.to_owned(),
        value,
        op: sign.to_owned(),
        limit,
        met: value.map(|v| if upper { v <= limit } else { v >= limit }),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_picks_by_direction_and_checks() {
        let v = || vec![(1.1, "a".to_string()), (1.4, "b".to_string())].into_iter();
        let t = worst("x", Op::AtMost(1.2), v());
        assert_eq!(t.value, Some(1.4));
        assert_eq!(t.met, Some(false));
        let t = worst("x", Op::AtLeast(1.0), v());
        assert_eq!(t.value, Some(1.1));
        assert_eq!(t.met, Some(true));
        let t = worst("x", Op::AtMost(1.0), std::iter::empty());
        assert_eq!((t.value, t.met), (None, None));
        let t = worst(
            "x",
            Op::AtMost(1.0),
            vec![(f64::NAN, "n".into())].into_iter(),
        );
        assert_eq!(t.met, None);
    }
}
