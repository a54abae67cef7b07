//! The one report `run`, `produce` and `consume` print: the same text layout and the same JSON
//! object (every key always present, `null` where that side cannot know), versioned by
//! `"schema"`. Two latency figures, named for what they measure: `queue_latency_us` (frame
//! ready → received, every frame: includes the time frames waited behind a slow sink, which is
//! most of it when the producer is unpaced) and `handoff_us` (only the frames the consumer was
//! already waiting for: the transport's handoff alone).

use serde::{Deserialize, Serialize};

use frameshare::pipeline::{ConsumeReport, ConsumerCounts, Latency, ProduceReport};

/// The JSON schema version. 1: this layout.
pub const SCHEMA: u32 = 1;

/// What a stream command reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StreamReport {
    /// [`SCHEMA`].
    pub schema: u32,
    /// `run`, `produce` or `consume`.
    pub command: String,
    /// The producer's buffer kind (`memfd`, `dma-heap`, …); null for `consume`.
    pub allocator: Option<String>,
    /// What the allocator is and, for auto, why it was chosen; null for `consume`.
    pub allocator_note: Option<String>,
    /// The consumer's sink; null for `produce`.
    pub sink: Option<String>,
    /// Frames the producer sent; null for `consume`.
    pub frames_produced: Option<u64>,
    /// Frames the consumer received; null for `produce`.
    pub frames_delivered: Option<u64>,
    /// Frames whose pixels were checked and right; null for `produce`.
    pub frames_verified: Option<u64>,
    /// Frames dropped (the producer's skipped frames plus the consumer's unusable ones).
    pub frames_dropped: u64,
    /// Frames the display converted on the GPU; null for `produce`.
    pub frames_converted: Option<u64>,
    /// Of those, frames whose conversion's completion went to the display as the commit's
    /// `IN_FENCE_FD` (no CPU wait for the GPU); null for `produce`.
    pub conversion_in_fences: Option<u64>,
    /// Of those, frames whose conversion the CPU waited for before the commit (writeback
    /// verification; a device that cannot export SYNC_FD); null for `produce`.
    pub conversion_cpu_waits: Option<u64>,
    /// Pixel bytes copied on the way (0 on every zero-copy path).
    pub bytes_copied: u64,
    /// Seconds from the first frame to the end.
    pub elapsed_s: f64,
    /// Frames per second (delivered, or produced for `produce`).
    pub fps: f64,
    /// Frame ready → received, µs, every frame (queueing included); null for `produce`.
    pub queue_latency_us: Option<Latency>,
    /// Frame ready → received, µs, for the frames the consumer was already waiting for (the
    /// handoff alone); null for `produce`.
    pub handoff_us: Option<Latency>,
    /// Frames `handoff_us` covers; null for `produce`.
    pub handoff_frames: Option<u64>,
    /// A display sink's frames, capture time (the camera's buffer timestamp) → the page-flip
    /// event that showed them, µs; null unless the sink is a display (no samples when the
    /// source stamps no capture time, as the generator does not).
    pub capture_to_flip_us: Option<Latency>,
    /// The consumer's CPU time (user + system) per delivered frame, µs; null for `produce`.
    pub cpu_us_per_frame: Option<f64>,
    /// Consumers that joined, left, were evicted or refused; null for `consume`.
    pub consumers: Option<ConsumerCounts>,
    /// Times the producer came back (`consume --reconnect`); null for `produce`.
    pub restarts: Option<u32>,
    /// Buffer layouts the consumer saw (each mid-stream format change adds one); null for
    /// `produce`.
    pub formats_seen: Option<u32>,
    /// Whether a signal stopped the command.
    pub stopped: bool,
    /// How the stream ended, when the consumer saw it end; null otherwise.
    pub ended: Option<String>,
    /// Why it ended early, if it did (what was delivered before still counts).
    pub error: Option<String>,
}

fn fps(frames: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        frames as f64 / secs
    } else {
        0.0
    }
}

impl StreamReport {
    /// A producer's report.
    pub fn produced(p: &ProduceReport) -> Self {
        StreamReport {
            schema: SCHEMA,
            command: "produce".into(),
            allocator: Some(p.allocator.clone()).filter(|a| !a.is_empty()),
            allocator_note: Some(p.allocator_note.clone()).filter(|a| !a.is_empty()),
            sink: None,
            frames_produced: Some(p.frames_produced),
            frames_delivered: None,
            frames_verified: None,
            frames_dropped: p.frames_dropped,
            frames_converted: None,
            conversion_in_fences: None,
            conversion_cpu_waits: None,
            bytes_copied: p.bytes_copied,
            elapsed_s: p.elapsed_s,
            fps: fps(p.frames_produced, p.elapsed_s),
            queue_latency_us: None,
            handoff_us: None,
            handoff_frames: None,
            capture_to_flip_us: None,
            cpu_us_per_frame: None,
            consumers: Some(p.consumers),
            restarts: None,
            formats_seen: None,
            stopped: p.stopped,
            ended: None,
            error: None,
        }
    }

    /// A consumer's report.
    pub fn consumed(c: &ConsumeReport, stopped: bool) -> Self {
        StreamReport {
            schema: SCHEMA,
            command: "consume".into(),
            allocator: None,
            allocator_note: None,
            sink: Some(c.sink.clone()),
            frames_produced: None,
            frames_delivered: Some(c.frames_delivered),
            frames_verified: Some(c.frames_verified),
            frames_dropped: c.frames_dropped,
            frames_converted: Some(c.frames_converted),
            conversion_in_fences: Some(c.conversion_in_fences),
            conversion_cpu_waits: Some(c.conversion_cpu_waits),
            bytes_copied: c.bytes_copied,
            elapsed_s: c.elapsed_s,
            fps: fps(c.frames_delivered, c.elapsed_s),
            queue_latency_us: Some(c.latency_us),
            handoff_us: Some(c.handoff_us),
            handoff_frames: Some(c.handoff_frames),
            capture_to_flip_us: c.capture_to_flip_us,
            cpu_us_per_frame: Some(c.cpu_us_per_frame),
            consumers: None,
            restarts: Some(c.restarts),
            formats_seen: Some(c.formats_seen),
            stopped,
            ended: c.ended.clone(),
            error: c.error.clone(),
        }
    }

    /// `run`: the producer's side and the consumer child's report, together. The rate is
    /// frames delivered over the producer's time.
    pub fn run(p: &ProduceReport, c: &StreamReport) -> Self {
        let produced = Self::produced(p);
        let delivered = c.frames_delivered.unwrap_or(0);
        StreamReport {
            command: "run".into(),
            sink: c.sink.clone(),
            frames_delivered: c.frames_delivered,
            frames_verified: c.frames_verified,
            frames_dropped: p.frames_dropped + c.frames_dropped,
            frames_converted: c.frames_converted,
            conversion_in_fences: c.conversion_in_fences,
            conversion_cpu_waits: c.conversion_cpu_waits,
            bytes_copied: p.bytes_copied + c.bytes_copied,
            fps: fps(delivered, p.elapsed_s),
            queue_latency_us: c.queue_latency_us,
            handoff_us: c.handoff_us,
            handoff_frames: c.handoff_frames,
            capture_to_flip_us: c.capture_to_flip_us,
            cpu_us_per_frame: c.cpu_us_per_frame,
            restarts: c.restarts,
            formats_seen: c.formats_seen,
            stopped: p.stopped || c.stopped,
            ended: c.ended.clone(),
            error: c.error.clone(),
            ..produced
        }
    }

    /// The text layout: one `name  value` line per figure this side knows.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let mut line = |k: &str, v: String| {
            let _ = writeln!(s, "{k:<18}{v}");
        };
        if let Some(a) = &self.allocator {
            match &self.allocator_note {
                Some(n) if n != a => line("allocator", format!("{a} ({n})")),
                _ => line("allocator", a.clone()),
            }
        }
        if let Some(k) = &self.sink {
            line("sink", k.clone());
        }
        if let Some(n) = self.frames_produced {
            line("frames produced", n.to_string());
        }
        if let Some(n) = self.frames_delivered {
            line("frames delivered", n.to_string());
        }
        if let Some(n) = self.frames_verified {
            line("frames verified", n.to_string());
        }
        line("frames dropped", self.frames_dropped.to_string());
        if let Some(n) = self.frames_converted.filter(|n| *n > 0) {
            line(
                "frames converted",
                format!(
                    "{n} (GPU, for the display; {} as IN_FENCE_FD, {} waited for on the CPU)",
                    self.conversion_in_fences.unwrap_or(0),
                    self.conversion_cpu_waits.unwrap_or(0)
                ),
            );
        }
        line("bytes copied", self.bytes_copied.to_string());
        line(
            "fps",
            format!("{:.1} over {:.2} s", self.fps, self.elapsed_s),
        );
        let lat = |l: &Latency| format!("p50 {:.1}  p99 {:.1}  max {:.1}", l.p50, l.p99, l.max);
        if let Some(l) = &self.queue_latency_us {
            line(
                "queue latency µs",
                format!("{}  (ready → received, queueing included)", lat(l)),
            );
        }
        if let (Some(l), Some(n)) = (&self.handoff_us, self.handoff_frames) {
            if n > 0 {
                line(
                    "handoff µs",
                    format!("{}  ({n} frames the consumer was waiting for)", lat(l)),
                );
            } else {
                line(
                    "handoff µs",
                    "- (the consumer never waited: every frame queued behind the sink)".into(),
                );
            }
        }
        if let Some(l) = self.capture_to_flip_us.filter(|l| l.samples > 0) {
            line(
                "capture → flip µs",
                format!("{}  (camera timestamp → page-flip event)", lat(&l)),
            );
        }
        if let Some(c) = &self.consumers {
            line(
                "consumers",
                format!(
                    "joined {}  left {}  evicted {}  refused {}",
                    c.joined, c.left, c.evicted, c.refused
                ),
            );
        }
        if let Some(r) = self.restarts.filter(|r| *r > 0) {
            line("restarts", r.to_string());
        }
        if let Some(n) = self.formats_seen.filter(|n| *n > 1) {
            line(
                "formats seen",
                format!("{n} (the format changed mid-stream)"),
            );
        }
        if self.stopped {
            line("stopped", "by a signal".into());
        }
        match (&self.error, &self.ended) {
            (Some(e), _) => line("ended early", e.clone()),
            (None, Some(why)) => line("ended", why.clone()),
            _ => {}
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(r: &StreamReport) -> Vec<String> {
        let v = serde_json::to_value(r).unwrap();
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn one_schema_for_all_three() {
        let p = ProduceReport {
            allocator: "memfd".into(),
            frames_produced: 10,
            elapsed_s: 1.0,
            ..Default::default()
        };
        let c = ConsumeReport {
            sink: "verify".into(),
            frames_delivered: 10,
            frames_verified: 10,
            elapsed_s: 1.0,
            ..Default::default()
        };
        let (pr, cr) = (
            StreamReport::produced(&p),
            StreamReport::consumed(&c, false),
        );
        let rr = StreamReport::run(&p, &cr);
        assert_eq!(keys(&pr), keys(&cr));
        assert_eq!(keys(&pr), keys(&rr));
        assert_eq!(rr.schema, SCHEMA);
        assert_eq!(rr.fps, 10.0);
        assert_eq!(pr.fps, 10.0);
        assert_eq!(rr.sink.as_deref(), Some("verify"));
        assert!(rr.text().contains("frames verified   10"));
        assert!(pr.text().contains("consumers"));
        assert!(!pr.text().contains("queue latency"));
    }
}
