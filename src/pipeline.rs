//! Wires the pieces together: [`produce`] runs any [`Source`] into a [`Publisher`] (format
//! negotiation with the consumers, pacing, mid-stream format changes, a clean end), and
//! [`consume`] feeds a [`Subscriber`]'s frames to a [`Sink`] (buffers imported once, frames
//! given back as the sink lets go of them, producer restarts followed); plus the figures both
//! report. The CLI's `run`, `produce` and `consume` are these two loops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bus::subscriber::SubscribeError;
use crate::bus::{ByeCode, Frame, PublishError, Publisher, Subscriber, SubscriberEvent};
pub use crate::latency::Latency;
use crate::latency::LatencySamples;
use crate::sink::{FrameIn, Sink, SinkError, StreamInfo, IDLE_TIMEOUT};
use crate::source::{Pattern, Source, SourceError};

/// Errors that stop a pipeline end.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The publisher failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The subscriber failed before the stream started.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// How the producer runs.
#[derive(Debug, Clone, Default)]
pub struct ProduceOptions {
    /// Frames to send (`None`: until stopped).
    pub frames: Option<u64>,
    /// Frames per second to pace at (`None`: as fast as the consumers take them).
    pub fps: Option<f64>,
    /// Consumers to wait for before the first frame (their formats steer a source that can
    /// choose, such as a camera).
    pub wait_for: usize,
    /// Set from elsewhere (a signal) to end the stream cleanly after the current frame; use
    /// it with the publisher's [`crate::bus::Waker`] so that waits end too.
    pub stop: Option<Arc<AtomicBool>>,
    /// Called after each frame with the number sent so far and the total (progress bars).
    pub progress: Option<fn(u64, Option<u64>)>,
}

/// What the producer did.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ProduceReport {
    /// The source and its memory (`memfd`, `dma-heap /dev/dma_heap/system`, a camera).
    pub allocator: String,
    /// Why auto chose it, the camera's mode, …
    pub allocator_note: String,
    /// Frames sent.
    pub frames_produced: u64,
    /// Frames skipped at the source.
    pub frames_dropped: u64,
    /// Release fences that timed out.
    pub fence_timeouts: u64,
    /// Seconds from the first frame to the end.
    pub elapsed_s: f64,
    /// Pixel bytes the source copied to fill the buffers (camera copy mode; else 0).
    #[serde(default)]
    pub bytes_copied: u64,
    /// Consumers that joined, left, were evicted, were refused.
    #[serde(default)]
    pub consumers: ConsumerCounts,
    /// Whether the stream was stopped from outside (a signal) rather than running out.
    #[serde(default)]
    pub stopped: bool,
}

/// Consumer counters of a producer's run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct ConsumerCounts {
    /// Joined.
    pub joined: u64,
    /// Left or died.
    pub left: u64,
    /// Evicted for stalling.
    pub evicted: u64,
    /// Refused.
    pub refused: u64,
}

/// Runs `source` into `publisher` until `opts.frames` frames are out or `opts.stop` is set,
/// then ends the stream ([`Publisher::finish`]).
pub fn produce(
    mut publisher: Publisher,
    source: &mut dyn Source,
    opts: &ProduceOptions,
) -> Result<ProduceReport, PipelineError> {
    let stopped = || {
        opts.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    };
    let mut report = ProduceReport::default();
    match publisher.wait_for_consumers(opts.wait_for, None) {
        Ok(_) => {}
        Err(PublishError::Interrupted) if stopped() => {
            report.stopped = true;
            let stats = publisher.finish()?;
            report.consumers = counts(&stats);
            return Ok(report);
        }
        Err(e) => return Err(e.into()),
    }
    let wanted = publisher
        .consumers()
        .first()
        .map(|c| c.hello.formats.clone())
        .unwrap_or_default();
    let buffers = match source.start(&wanted) {
        Ok(b) => b,
        Err(e) => {
            publisher.abort(&e.to_string());
            return Err(e.into());
        }
    };
    report.allocator = buffers
        .first()
        .map(|b| b.kind().name().to_owned())
        .unwrap_or_default();
    report.allocator_note = source.note();
    if let Some(b) = buffers.first() {
        let l = b.layout();
        log::info!(
            "producer: {} {}x{} modifier {} in {} {} buffer(s) ({}); {}",
            l.fourcc(),
            l.width(),
            l.height(),
            l.modifier(),
            buffers.len(),
            b.kind().name(),
            report.allocator_note,
            if wanted.is_empty() {
                "the first consumer takes any format".to_owned()
            } else {
                format!(
                    "the first consumer takes {}",
                    wanted
                        .iter()
                        .map(|f| format!("{}/{}", f.fourcc, f.modifier))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        );
    }
    publisher.set_buffers(buffers)?;
    let start = Instant::now();
    let period = opts
        .fps
        .filter(|f| *f > 0.0)
        .map(|f| Duration::from_secs_f64(1.0 / f));
    let mut seq = 0u64;
    let result: Result<(), PipelineError> = loop {
        if opts.frames.is_some_and(|n| seq >= n) {
            break Ok(());
        }
        if stopped() {
            report.stopped = true;
            break Ok(());
        }
        if let Some(p) = period {
            let due = start + p.mul_f64(seq as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                // Serve consumers while waiting for the frame's time (joins, releases).
                match publisher.dispatch(Some(wait)) {
                    Ok(_) => {}
                    Err(PublishError::Interrupted) => continue,
                    Err(e) => break Err(e.into()),
                }
                if Instant::now() < due {
                    continue;
                }
            }
        }
        match source.reconfigure(seq) {
            Ok(Some(b)) => {
                if let Err(e) = publisher.set_buffers(b) {
                    break Err(e.into());
                }
            }
            Ok(None) => {}
            Err(e) => break Err(e.into()),
        }
        match source.next(&mut publisher, seq) {
            Ok(_) => {}
            Err(SourceError::Publish(PublishError::Interrupted)) => continue,
            Err(e) => break Err(e.into()),
        }
        seq += 1;
        if let Some(cb) = opts.progress {
            cb(seq, opts.frames);
        }
    };
    report.elapsed_s = start.elapsed().as_secs_f64();
    let stop = source.stop();
    if let Err(e) = result {
        publisher.abort(&e.to_string());
        return Err(e);
    }
    stop?;
    report.bytes_copied = source.bytes_copied();
    let stats = publisher.finish()?;
    report.frames_produced = stats.published;
    report.frames_dropped = stats.dropped + source.dropped();
    report.fence_timeouts = stats.fence_timeouts;
    report.consumers = counts(&stats);
    Ok(report)
}

fn counts(s: &crate::bus::PublisherStats) -> ConsumerCounts {
    ConsumerCounts {
        joined: s.joined,
        left: s.left,
        evicted: s.evicted,
        refused: s.refused,
    }
}

/// The name `generator:NAME` announces for a pattern.
pub fn pattern_name(p: Pattern) -> String {
    match p {
        Pattern::Bars => "bars".into(),
        Pattern::MovingBox => "box".into(),
        Pattern::Solid(c) => format!("solid:{:02x}{:02x}{:02x}", c.0, c.1, c.2),
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
    /// Frames the sink could not use (acquire fence timeouts) or the source flagged corrupt.
    pub frames_dropped: u64,
    /// Pixel bytes copied by the sink to reach the frames.
    pub bytes_copied: u64,
    /// Frames the sink converted on the GPU before showing them.
    pub frames_converted: u64,
    /// Of those, frames whose conversion's completion went to the display as the commit's
    /// `IN_FENCE_FD` (no CPU wait for the GPU).
    #[serde(default)]
    pub conversion_in_fences: u64,
    /// Of those, frames whose conversion the CPU waited for before the commit.
    #[serde(default)]
    pub conversion_cpu_waits: u64,
    /// Producer "ready" → consumer "received", every frame: includes the time a frame waited
    /// in the queue behind the sink (unpaced, this is mostly queueing).
    pub latency_us: Latency,
    /// Producer "ready" → consumer "received" for the frames the consumer was already waiting
    /// for when they were made: the transport's handoff alone, no queueing.
    #[serde(default)]
    pub handoff_us: Latency,
    /// How many frames [`ConsumeReport::handoff_us`] covers.
    #[serde(default)]
    pub handoff_frames: u64,
    /// A display's figure: the frame's capture time (its source's own timestamp, a camera's
    /// `v4l2_buffer.timestamp`) → the page-flip event that put it on screen, every frame shown
    /// whose source stamped it on CLOCK_MONOTONIC; `None` for sinks that are not displays.
    #[serde(default)]
    pub capture_to_flip_us: Option<Latency>,
    /// Seconds from the first frame to the end.
    #[serde(default)]
    pub elapsed_s: f64,
    /// Consumer CPU time (user + system) per delivered frame, µs.
    pub cpu_us_per_frame: f64,
    /// Times the producer came back after going away (`reconnect`).
    #[serde(default)]
    pub restarts: u32,
    /// Buffer layouts seen (a format change adds one).
    #[serde(default)]
    pub formats_seen: u32,
    /// How the stream ended (`stream ended`, …), if it did.
    #[serde(default)]
    pub ended: Option<String>,
    /// Why the session ended early, if it did (what was delivered before still counts).
    pub error: Option<String>,
}

/// How the consumer runs.
#[derive(Debug, Clone, Default)]
pub struct ConsumeOptions {
    /// Set from elsewhere (a signal) to leave the stream; use it with the subscriber's
    /// [`crate::bus::Waker`] so that waits end too.
    pub stop: Option<Arc<AtomicBool>>,
    /// Leave after this many frames (`None`: until the stream ends).
    pub frames: Option<u64>,
}

/// Runs the consumer end until the stream ends, feeding every frame to `sink`. Failures after
/// the stream started end the run but keep what was delivered: they are reported in `error`,
/// not returned.
pub fn consume(
    subscriber: &mut Subscriber,
    sink: &mut dyn Sink,
    opts: &ConsumeOptions,
) -> Result<ConsumeReport, PipelineError> {
    let cpu0 = cpu_time();
    let mut report = ConsumeReport {
        sink: sink.name(),
        ..Default::default()
    };
    let mut latencies = LatencySamples::new();
    let mut handoffs = LatencySamples::new();
    let mut first_frame: Option<Instant> = None;
    let holds = sink.holds_frames();
    let mut held: HashMap<(u32, u64), Frame> = HashMap::new();
    let mut layouts = Vec::new();
    // For a sink that holds frames: how long without an event counts as idle — at least
    // IDLE_TIMEOUT, and four of the stream's recent frame intervals.
    let mut idle = IDLE_TIMEOUT;
    let mut last_frame: Option<Instant> = None;
    let mut started = false;
    let stopped = || {
        opts.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    };
    let result: Result<(), PipelineError> = loop {
        if stopped() || opts.frames.is_some_and(|n| report.frames_delivered >= n) {
            break Ok(());
        }
        // A frame made after this instant found the consumer idle: its latency is the handoff.
        let waiting_since = crate::bus::monotonic_ns();
        let event = match subscriber.next(holds.then_some(idle)) {
            Ok(e) => e,
            Err(SubscribeError::Timeout(_)) => {
                if let Err(e) = sink
                    .idle()
                    .map_err(PipelineError::from)
                    .and_then(|()| give_back(sink, &mut held))
                {
                    break Err(e);
                }
                continue;
            }
            Err(SubscribeError::Interrupted) => continue,
            Err(e) if !started => return Err(e.into()),
            Err(e) => break Err(e.into()),
        };
        match event {
            SubscriberEvent::Connected { producer, .. } => {
                let stream = StreamInfo {
                    producer: producer.name.clone(),
                    pattern: producer.pattern.as_deref().and_then(|p| p.parse().ok()),
                };
                if let Err(e) = sink.start(&stream) {
                    if !started {
                        return Err(e.into());
                    }
                    break Err(e.into());
                }
                started = true;
            }
            SubscriberEvent::BufferAdded { id, buffer } => {
                if !layouts.contains(buffer.layout()) {
                    let l = buffer.layout();
                    log::info!(
                        "consumer: buffers are {} {}x{} modifier {} in {} memory, for sink {}",
                        l.fourcc(),
                        l.width(),
                        l.height(),
                        l.modifier(),
                        buffer.kind().name(),
                        report.sink
                    );
                    layouts.push(buffer.layout().clone());
                }
                if let Err(e) = sink.add_buffer(id, &buffer) {
                    break Err(e.into());
                }
            }
            SubscriberEvent::BufferRemoved { id } => sink.remove_buffer(id),
            SubscriberEvent::Frame(mut f) => {
                let now = Instant::now();
                if let Some(t) = last_frame.replace(now) {
                    idle = idle.max(4 * (now - t)).min(Duration::from_secs(5));
                }
                first_frame.get_or_insert(now);
                let latency = f.received_ns.saturating_sub(f.timestamp_ns);
                latencies.push(latency);
                if f.timestamp_ns >= waiting_since {
                    handoffs.push(latency);
                }
                report.frames_delivered += 1;
                if f.meta.corrupt {
                    // The source said so: not worth showing or checking.
                    report.frames_dropped += 1;
                    continue;
                }
                let acquire = f.take_acquire_fence();
                let out = match sink.frame(FrameIn {
                    id: f.id,
                    seq: f.seq,
                    buffer: f.buffer(),
                    acquire,
                    meta: &f.meta,
                }) {
                    Ok(o) => o,
                    Err(e) => break Err(e.into()),
                };
                report.frames_verified += out.verified as u64;
                report.frames_dropped += out.dropped as u64;
                if holds {
                    held.insert((f.id, f.seq), f);
                } else if let Err(e) = f.release(out.release) {
                    break Err(e.into());
                }
            }
            // No more frames: a holding sink lets go of everything now (the display takes
            // its last frame off the screen) instead of after the idle timeout.
            SubscriberEvent::EndOfStream { last_seq } => {
                if holds {
                    log::debug!("end of stream after frame {last_seq}: giving back held frames");
                    if let Err(e) = sink.idle() {
                        break Err(e.into());
                    }
                }
            }
            SubscriberEvent::Restarting { reason } => {
                log::warn!("{reason}");
                report.restarts += 1;
                if holds {
                    if let Err(e) = sink.idle() {
                        break Err(e.into());
                    }
                }
            }
            SubscriberEvent::Ended { code, reason } => {
                report.ended = Some(reason.clone());
                if code != ByeCode::Done {
                    report.error = Some(reason);
                }
                break Ok(());
            }
        }
        if holds {
            if let Err(e) = give_back(sink, &mut held) {
                break Err(e);
            }
        }
    };
    if let Err(e) = sink.finish() {
        report.error.get_or_insert(e.to_string());
    }
    let _ = give_back(sink, &mut held);
    if let Err(e @ PipelineError::Sink(_)) = &result {
        // The producer hears why this consumer leaves (the subscriber's own failures said so).
        subscriber.abort(&error_chain(e));
    }
    if let Err(e) = result {
        report.error = Some(error_chain(&e));
    }
    report.bytes_copied = sink.bytes_copied();
    report.frames_converted = sink.frames_converted();
    let sync = sink.conversion_sync();
    report.conversion_in_fences = sync.in_fences;
    report.conversion_cpu_waits = sync.cpu_waits;
    report.capture_to_flip_us = sink.capture_to_flip();
    report.formats_seen = layouts.len() as u32;
    report.latency_us = latencies.latency();
    report.handoff_frames = handoffs.seen;
    report.handoff_us = handoffs.latency();
    report.elapsed_s = first_frame.map_or(0.0, |t| t.elapsed().as_secs_f64());
    if report.frames_delivered > 0 {
        report.cpu_us_per_frame =
            (cpu_time() - cpu0).as_secs_f64() * 1e6 / report.frames_delivered as f64;
    }
    Ok(report)
}

/// Sends back the frames a holding sink let go of.
fn give_back(
    sink: &mut dyn Sink,
    held: &mut HashMap<(u32, u64), Frame>,
) -> Result<(), PipelineError> {
    for r in sink.take_released() {
        if let Some(f) = held.remove(&(r.id, r.seq)) {
            f.release(r.release)?;
        }
    }
    Ok(())
}

/// An error and its sources on one line, each said once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
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
    /// Frames converted on the GPU for the display (a format its plane cannot scan out).
    pub frames_converted: u64,
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
            frames_converted: c.frames_converted,
            bytes_copied: c.bytes_copied + p.bytes_copied,
            fps: if p.elapsed_s > 0.0 {
                c.frames_delivered as f64 / p.elapsed_s
            } else {
                0.0
            },
            latency_us: c.latency_us,
        }
    }
}
