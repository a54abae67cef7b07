//! Wires the pieces together: [`produce`] (allocator → generator → producer session) and
//! [`consume`] (consumer session → sink), each over a [`Channel`], plus the latency statistics
//! and the summary `frameshare run` prints. The two-process `run` itself lives in the binary,
//! which spawns the consumer as a child process over a socketpair.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::alloc::{self, AllocError};
use crate::format::{FormatError, FrameLayout};
use crate::ipc::consumer::{Consumer, Event};
use crate::ipc::producer::{Producer, ProducerOptions};
use crate::ipc::socket::Channel;
use crate::ipc::{wire, SessionError};
use crate::sink::{FrameIn, Sink, SinkError};
use crate::source::{Generator, Pattern};

/// Errors that stop a pipeline end.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Allocation failed.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// Bad format or size.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The session failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// What the producer makes.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// Allocator name (`auto`, `memfd`, `dma-heap`, …).
    pub alloc: String,
    /// Frame layout (format, size, strides).
    pub layout: FrameLayout,
    /// Buffers in the pool.
    pub buffers: usize,
    /// Frames to send.
    pub frames: u64,
    /// Generator pattern.
    pub pattern: Pattern,
    /// Frames per second to pace at (`None`: as fast as possible).
    pub fps: Option<f64>,
    /// Session settings.
    pub session: ProducerOptions,
    /// Called after each frame with the number sent so far (progress bars).
    pub progress: Option<fn(u64, u64)>,
}

/// What the producer did.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ProduceReport {
    /// Allocator that made the buffers.
    pub allocator: String,
    /// Why auto chose it (or the allocator description).
    pub allocator_note: String,
    /// Frames sent.
    pub frames_produced: u64,
    /// Frames skipped (pool policy `drop`, or release-fence timeouts).
    pub frames_dropped: u64,
    /// Release fences that timed out.
    pub fence_timeouts: u64,
    /// Seconds from the first frame to the last release.
    pub elapsed_s: f64,
    /// The last non-fatal error (a release fence that timed out), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Runs the producer end: allocates the pool, announces it, sends `frames` generated frames.
pub fn produce(chan: Channel, opts: &ProduceOptions) -> Result<ProduceReport, PipelineError> {
    let (mut allocator, note) = alloc::open(&opts.alloc)?;
    let mut session = opts.session.clone();
    session.name = format!("generator:{}", pattern_name(opts.pattern));
    let mut producer = Producer::connect(chan, session, wire::FEATURE_FENCES)?;
    for _ in 0..opts.buffers {
        let buffer = allocator.allocate(&opts.layout)?;
        producer.add_buffer(buffer)?;
    }
    let mut generator = Generator::new(opts.pattern, &opts.layout);
    let start = Instant::now();
    let period = opts
        .fps
        .filter(|f| *f > 0.0)
        .map(|f| Duration::from_secs_f64(1.0 / f));
    for seq in 0..opts.frames {
        if let Some(p) = period {
            let due = start + p * seq as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let Some(id) = producer.acquire()? else {
            continue;
        };
        producer.produce_frame(id, seq, |access| generator.fill(id, access, seq))?;
        if let Some(cb) = opts.progress {
            cb(seq + 1, opts.frames);
        }
    }
    let last_error = producer.last_error().map(str::to_owned);
    let stats = producer.finish()?;
    Ok(ProduceReport {
        allocator: allocator.kind().name().to_owned(),
        allocator_note: note,
        frames_produced: stats.produced,
        frames_dropped: stats.dropped,
        fence_timeouts: stats.fence_timeouts,
        elapsed_s: start.elapsed().as_secs_f64(),
        last_error,
    })
}

/// The name `generator:NAME` announces for a pattern.
pub fn pattern_name(p: Pattern) -> String {
    match p {
        Pattern::Bars => "bars".into(),
        Pattern::MovingBox => "box".into(),
        Pattern::Solid(c) => format!("solid:{:02x}{:02x}{:02x}", c.0, c.1, c.2),
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// Percentiles of samples in nanoseconds (sorted in place).
    pub fn from_ns(samples: &mut [u64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let pick =
            |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        Latency {
            p50: pick(0.5),
            p99: pick(0.99),
            max: *samples.last().unwrap() as f64 / 1000.0,
        }
    }
}

/// What the consumer saw.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ConsumeReport {
    /// Sink name.
    pub sink: String,
    /// Frames received and handed to the sink.
    pub frames_delivered: u64,
    /// Frames whose pixels were checked and right.
    pub frames_verified: u64,
    /// Frames the sink could not use (acquire fence timeouts).
    pub frames_dropped: u64,
    /// Pixel bytes copied by the sink to reach the frames.
    pub bytes_copied: u64,
    /// Handoff latency: producer "ready" → consumer "received".
    pub latency_us: Latency,
    /// Consumer CPU time (user + system) per delivered frame, µs.
    pub cpu_us_per_frame: f64,
    /// Why the session ended early, if it did (what was delivered before still counts).
    pub error: Option<String>,
}

/// Runs the consumer end until the producer says Bye (or fails), feeding every frame to `sink`.
/// Session failures after the handshake end the run but keep what was delivered: they are
/// reported in `error`, not returned.
pub fn consume(chan: Channel, sink: &mut dyn Sink) -> Result<ConsumeReport, PipelineError> {
    let mut consumer = Consumer::accept(chan, &sink.caps())?;
    if let Err(e) = sink.start(consumer.peer()) {
        consumer.bye(wire::BYE_INTERNAL_ERROR, &e.to_string());
        return Err(e.into());
    }
    let cpu0 = cpu_time();
    let mut report = ConsumeReport {
        sink: sink.name(),
        ..Default::default()
    };
    let mut latencies: Vec<u64> = Vec::with_capacity(1 << 16);
    let result: Result<(), PipelineError> = loop {
        let event = match consumer.next_event(None) {
            Ok(e) => e,
            Err(e) => break Err(e.into()),
        };
        match event {
            Event::BufferAdded(id) => {
                let buffer = consumer.buffer(id).expect("just added").clone();
                if let Err(e) = sink.add_buffer(id, &buffer) {
                    consumer.bye(wire::BYE_INTERNAL_ERROR, &format!("buffer {id}: {e}"));
                    break Err(e.into());
                }
            }
            Event::BufferRemoved(id) => sink.remove_buffer(id),
            Event::Frame(f) => {
                latencies.push(f.received_ns.saturating_sub(f.timestamp_ns));
                report.frames_delivered += 1;
                let buffer = consumer
                    .buffer(f.id)
                    .expect("checked by the session")
                    .clone();
                let out = match sink.frame(FrameIn {
                    id: f.id,
                    seq: f.seq,
                    buffer: &buffer,
                    acquire: f.acquire,
                }) {
                    Ok(o) => o,
                    Err(e) => {
                        consumer.bye(wire::BYE_INTERNAL_ERROR, &e.to_string());
                        break Err(e.into());
                    }
                };
                report.frames_verified += out.verified as u64;
                report.frames_dropped += out.dropped as u64;
                if let Err(e) = consumer.release(f.id, f.seq, out.release) {
                    break Err(e.into());
                }
            }
            Event::Bye {
                code: wire::BYE_DONE,
                ..
            } => break Ok(()),
            Event::Bye { code, reason } => break Err(SessionError::PeerBye { code, reason }.into()),
        }
    };
    if let Err(e) = sink.finish() {
        report.error.get_or_insert(e.to_string());
    }
    if let Err(e) = result {
        report.error = Some(e.to_string());
    }
    report.bytes_copied = sink.bytes_copied();
    report.latency_us = Latency::from_ns(&mut latencies);
    if report.frames_delivered > 0 {
        report.cpu_us_per_frame =
            (cpu_time() - cpu0).as_secs_f64() * 1e6 / report.frames_delivered as f64;
    }
    Ok(report)
}

/// CPU time (user + system) this process has used.
pub fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The summary of a two-process run (`frameshare run --json` prints exactly these keys).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Allocator used.
    pub allocator: String,
    /// Frames the producer sent.
    pub frames_produced: u64,
    /// Frames the consumer received.
    pub frames_delivered: u64,
    /// Frames whose pixels were verified.
    pub frames_verified: u64,
    /// Frames dropped on either side.
    pub frames_dropped: u64,
    /// Pixel bytes the transport copied (0 on every zero-copy path).
    pub bytes_copied: u64,
    /// Delivered frames per second.
    pub fps: f64,
    /// Handoff latency percentiles, µs.
    pub latency_us: Latency,
}

impl Summary {
    /// Combines both ends' reports.
    pub fn new(p: &ProduceReport, c: &ConsumeReport) -> Summary {
        Summary {
            allocator: p.allocator.clone(),
            frames_produced: p.frames_produced,
            frames_delivered: c.frames_delivered,
            frames_verified: c.frames_verified,
            frames_dropped: p.frames_dropped + c.frames_dropped,
            bytes_copied: c.bytes_copied,
            fps: if p.elapsed_s > 0.0 {
                c.frames_delivered as f64 / p.elapsed_s
            } else {
                0.0
            },
            latency_us: c.latency_us,
        }
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
        assert_eq!(Latency::from_ns(&mut []), Latency::default());
    }
}
