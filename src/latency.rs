//! Latency figures: a distribution in microseconds ([`Latency`]), and the bounded set of
//! samples it is computed from. A module of its own, below every layer that reports one (the
//! pipeline's handoff and queue latency, a display's capture → flip).

use serde::{Deserialize, Serialize};

/// A latency distribution in microseconds: percentiles and spread.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Smallest.
    #[serde(default)]
    pub min: f64,
    /// 25th percentile.
    #[serde(default)]
    pub p25: f64,
    /// 75th percentile.
    #[serde(default)]
    pub p75: f64,
    /// Mean.
    #[serde(default)]
    pub mean: f64,
    /// Standard deviation (population).
    #[serde(default)]
    pub stddev: f64,
    /// Samples.
    #[serde(default)]
    pub samples: u64,
}

impl Latency {
    /// The distribution of samples in nanoseconds (sorted in place).
    pub fn from_ns(samples: &mut [u64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        let pick = |q: f64| us(samples[((samples.len() - 1) as f64 * q).round() as usize]);
        let n = samples.len() as f64;
        let mean = samples.iter().map(|&s| us(s)).sum::<f64>() / n;
        let var = samples.iter().map(|&s| (us(s) - mean).powi(2)).sum::<f64>() / n;
        Latency {
            p50: pick(0.5),
            p99: pick(0.99),
            max: us(samples[samples.len() - 1]),
            min: us(samples[0]),
            p25: pick(0.25),
            p75: pick(0.75),
            mean,
            stddev: var.sqrt(),
            samples: samples.len() as u64,
        }
    }
}

/// Latency samples in bounded memory: every sample up to [`LatencySamples::CAPACITY`], then a
/// uniform random subset of that many (reservoir sampling, Vitter's algorithm R), so a consumer
/// that runs for days keeps 64 KiB of samples rather than 8 bytes per frame. The minimum, the
/// maximum and the count are exact; the percentiles, mean and σ are exact up to `CAPACITY`
/// frames, and after that estimates (p50 within about half a percent of the frames, p99 a
/// tenth of one).
#[derive(Debug, Clone)]
pub(crate) struct LatencySamples {
    kept: Vec<u64>,
    pub(crate) seen: u64,
    min: u64,
    max: u64,
    /// xorshift64 state: a fixed seed, so a run's figures do not depend on chance.
    rng: u64,
}

impl LatencySamples {
    const CAPACITY: usize = 1 << 13;

    pub(crate) fn new() -> Self {
        LatencySamples {
            kept: Vec::with_capacity(Self::CAPACITY),
            seen: 0,
            min: u64::MAX,
            max: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    pub(crate) fn push(&mut self, ns: u64) {
        self.seen += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        if self.kept.len() < Self::CAPACITY {
            self.kept.push(ns);
            return;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        // Sample number `seen` replaces a kept one with probability CAPACITY / seen.
        if let Some(slot) = self.kept.get_mut((self.rng % self.seen) as usize) {
            *slot = ns;
        }
    }

    pub(crate) fn latency(mut self) -> Latency {
        let mut l = Latency::from_ns(&mut self.kept);
        if self.seen > 0 {
            // The extremes and the count are exact; the rest comes from the kept samples.
            l.min = self.min as f64 / 1000.0;
            l.max = self.max as f64 / 1000.0;
            l.samples = self.seen;
        }
        l
    }
}

impl Default for LatencySamples {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let l = Latency::from_ns(&mut v);
        assert_eq!(l.max, 100.0);
        assert_eq!(l.p50, 51.0);
        assert_eq!(l.p99, 99.0);
        assert_eq!((l.min, l.p25, l.p75), (1.0, 26.0, 75.0));
        assert_eq!(l.mean, 50.5);
        assert!((l.stddev - 28.866).abs() < 0.001, "{}", l.stddev);
        assert_eq!(l.samples, 100);
        assert_eq!(Latency::from_ns(&mut []), Latency::default());
    }

    #[test]
    fn latency_samples_are_exact_while_they_fit() {
        let mut s = LatencySamples::new();
        let mut v: Vec<u64> = (1..=1000).map(|i| i * 997 % 1000 * 1000).collect();
        for &x in &v {
            s.push(x);
        }
        assert_eq!(s.latency(), Latency::from_ns(&mut v));
        assert_eq!(LatencySamples::new().latency(), Latency::default());
    }

    /// A soak of 10^6 frames grew the consumer by 8 bytes a frame (every sample was kept): the
    /// samples now stay at a fixed size, and the percentiles stay close.
    #[test]
    fn latency_samples_stay_bounded_over_a_long_run() {
        let mut s = LatencySamples::new();
        let n = 1_000_000u64;
        // Every latency 1..=n µs once, in an order that is not sorted.
        for i in 0..n {
            s.push((i * 7919 % n + 1) * 1000);
        }
        assert_eq!(s.seen, n);
        assert_eq!(s.kept.len(), LatencySamples::CAPACITY);
        assert_eq!(s.kept.capacity(), LatencySamples::CAPACITY);
        let l = s.latency();
        assert_eq!(l.max, n as f64);
        assert_eq!((l.min, l.samples), (1.0, n));
        assert!((l.p50 - 500_000.0).abs() < 10_000.0, "p50 {}", l.p50);
        assert!((l.p99 - 990_000.0).abs() < 3_000.0, "p99 {}", l.p99);
    }
}
