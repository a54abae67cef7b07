//! Wires the pieces together: [`produce`] (allocator → generator → producer session) and
//! [`consume`] (consumer session → sink), each over a [`Channel`], plus the latency statistics
//! and the summary `frameshare run` prints. The two-process `run` itself lives in the binary,
//! which spawns the consumer as a child process over a socketpair.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::alloc::{self, AllocError};
use crate::format::{FormatError, FrameLayout};
use crate::ipc::consumer::{Consumer, ConsumerCaps, Event};
use crate::ipc::producer::{Producer, ProducerOptions};
use crate::ipc::socket::{Channel, ChannelError};
use crate::ipc::{wire, SessionError};
use crate::sink::{FrameIn, Sink, SinkError, StreamInfo, IDLE_TIMEOUT};
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
    /// The camera failed.
    #[cfg(feature = "v4l2")]
    #[error(transparent)]
    V4l2(#[from] crate::source::v4l2::V4l2Error),
    /// No format both ends take, and no conversion to bridge them.
    #[error("no path from source to sink: {0}")]
    NoPath(String),
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
    /// Pixel bytes the source copied to fill the buffers (camera copy mode; else 0).
    #[serde(default)]
    pub bytes_copied: u64,
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
        bytes_copied: 0,
        last_error,
    })
}

/// How long the camera producer waits for one frame before the camera counts as stalled.
#[cfg(feature = "v4l2")]
const CAMERA_FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// The format the camera should deliver: `wanted` if given, else, of the formats both the
/// camera offers and the consumer takes, an opaque one before one with alpha, then the one the
/// consumer lists first (a display lists what its plane scans out before what it converts on
/// the GPU), then the camera's own order. `None` leaves the choice to the camera source (the
/// consumer listed no formats). An error says exactly why no path exists.
#[cfg(feature = "v4l2")]
pub fn negotiate_camera_format(
    camera: &str,
    offered: &[crate::format::Fourcc],
    wanted: Option<crate::format::Fourcc>,
    consumer: &str,
    consumer_formats: &[crate::format::FormatModifier],
) -> Result<Option<crate::format::Fourcc>, PipelineError> {
    use crate::format::Fourcc;
    let takes: Vec<Fourcc> = consumer_formats.iter().map(|f| f.fourcc).collect();
    if takes.is_empty() {
        return Ok(wanted);
    }
    let pick = match wanted {
        Some(f) => takes.contains(&f).then_some(f),
        None => offered
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((takes.iter().position(|t| t == f)?, i, *f)))
            // A camera's alpha channel (often 0) would blend the picture away.
            .min_by_key(|&(rank, i, f)| ([Fourcc::AR24, Fourcc::AB24].contains(&f), rank, i))
            .map(|(_, _, f)| f),
    };
    pick.map(Some).ok_or_else(|| {
        PipelineError::NoPath(format!(
            "the camera {camera} {} {}; the consumer {:?} takes only {} (LINEAR), directly or \
             through its GPU conversion (pick a camera format it takes, or another sink)",
            if wanted.is_some() {
                "was asked for"
            } else {
                "offers"
            },
            match wanted {
                Some(f) => f.to_string(),
                None => crate::format::fourcc_names(offered.iter().copied()),
            },
            consumer,
            crate::format::fourcc_names(takes),
        ))
    })
}

/// Runs the producer end with a V4L2 camera as the source: negotiates the format with the
/// consumer, sets the camera's buffers up (export: the camera's own buffers as dma-bufs, else
/// import into ours, else copy — `cfg.mode` picks), announces them and sends `opts.frames`
/// camera frames. In export and import mode a buffer goes back to the camera only once the
/// consumer released it and its release fence signalled. `opts.pattern` and `opts.layout` are
/// not used; `opts.fps` is the camera's frame rate unless `cfg` names one.
#[cfg(feature = "v4l2")]
pub fn produce_v4l2(
    chan: Channel,
    opts: &ProduceOptions,
    cfg: &crate::source::v4l2::V4l2Config,
) -> Result<ProduceReport, PipelineError> {
    use crate::source::v4l2::{self, V4l2Config, V4l2Error};
    let cams = v4l2::devices();
    let cam = match &cfg.device {
        Some(p) => cams.iter().find(|c| std::path::Path::new(&c.path) == p),
        None => cams.first(),
    };
    let path = match (cam, &cfg.device) {
        (Some(c), _) => std::path::PathBuf::from(&c.path),
        (None, Some(p)) => p.clone(),
        (None, None) => {
            return Err(V4l2Error::NoDevice("no V4L2 capture device found".into()).into())
        }
    };
    let offered: Vec<crate::format::Fourcc> = cam
        .map(|c| {
            c.formats
                .iter()
                .filter_map(|(_, drm, _)| drm.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut session = opts.session.clone();
    session.name = format!("v4l2:{}", path.display());
    let mut producer = Producer::connect(chan, session, wire::FEATURE_FENCES)?;
    let run = |producer: &mut Producer| -> Result<ProduceReport, PipelineError> {
        let fourcc = negotiate_camera_format(
            &path.display().to_string(),
            &offered,
            cfg.fourcc,
            &producer.peer().name,
            &producer.peer().formats,
        )?;
        let mut src = v4l2::V4l2Source::open(&V4l2Config {
            device: Some(path.clone()),
            fourcc,
            fps: cfg.fps.or(opts.fps),
            ..cfg.clone()
        })?;
        let mut allocator = alloc::open(&opts.alloc).ok();
        let prepared = src.prepare(
            cfg.mode,
            opts.buffers as u32,
            allocator
                .as_mut()
                .map(|(a, _)| a.as_mut() as &mut dyn alloc::Allocator),
        )?;
        let kind = prepared
            .buffers
            .first()
            .map(|b| b.kind().name().to_owned())
            .unwrap_or_default();
        let copy = prepared.mode == v4l2::Mode::Copy;
        let count = prepared.buffers.len();
        for b in prepared.buffers {
            producer.add_buffer(b)?;
        }
        let layout = src.layout().clone();
        let note = format!(
            "{} ({}) {} {}x{}, {}",
            path.display(),
            src.driver(),
            layout.fourcc(),
            layout.width(),
            layout.height(),
            prepared.note
        );
        let fence_timeout = opts.session.fence_timeout;
        src.start()?;
        let start = Instant::now();
        let mut with_consumer = 0usize;
        let mut sent = 0u64;
        let mut corrupt = 0u64;
        while sent < opts.frames {
            if !copy {
                // Buffers the consumer gave back go back to the camera once their release
                // fence signalled (the camera takes no fences); with none left in the camera,
                // wait for one.
                let stall = producer.stall_timeout();
                let wait = if with_consumer >= count {
                    stall
                } else {
                    Duration::ZERO
                };
                let released = producer.take_released(Some(wait))?;
                if released.is_empty() && with_consumer >= count {
                    return Err(SessionError::Stalled(stall).into());
                }
                for (id, fence) in released {
                    if let Some(f) = fence {
                        f.wait(fence_timeout).map_err(|e| {
                            SessionError::Usage(format!("buffer {id}: release fence: {e}"))
                        })?;
                    }
                    src.requeue(id)?;
                    with_consumer -= 1;
                }
            }
            let f = src.next_frame(CAMERA_FRAME_TIMEOUT)?;
            if f.corrupt {
                corrupt += 1;
                src.requeue(f.index)?;
                continue;
            }
            if copy {
                let Some(id) = producer.acquire()? else {
                    src.requeue(f.index)?;
                    continue;
                };
                {
                    let mut access = producer.write_access(id)?;
                    src.copy_into(&f, &mut access)?;
                }
                producer.submit(id, f.sequence, None)?;
            } else {
                producer.submit(f.index, f.sequence, None)?;
                with_consumer += 1;
            }
            sent += 1;
            if let Some(cb) = opts.progress {
                cb(sent, opts.frames);
            }
        }
        Ok(ProduceReport {
            allocator: kind,
            allocator_note: note,
            frames_produced: producer.stats().produced,
            frames_dropped: corrupt,
            fence_timeouts: 0,
            elapsed_s: start.elapsed().as_secs_f64(),
            bytes_copied: src.bytes_copied(),
            last_error: None,
        })
    };
    match run(&mut producer) {
        Ok(mut report) => {
            report.last_error = producer.last_error().map(str::to_owned);
            let stats = producer.finish()?;
            report.frames_dropped += stats.dropped;
            report.fence_timeouts = stats.fence_timeouts;
            Ok(report)
        }
        Err(e) => {
            producer.abort(&e.to_string());
            Err(e)
        }
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
    /// Frames the sink converted on the GPU before showing them.
    pub frames_converted: u64,
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
    let mut consumer = Consumer::accept(chan, &consumer_caps(sink))?;
    if let Err(e) = sink.start(&stream_info(consumer.peer())) {
        consumer.bye(wire::BYE_INTERNAL_ERROR, &e.to_string());
        return Err(e.into());
    }
    let cpu0 = cpu_time();
    let mut report = ConsumeReport {
        sink: sink.name(),
        ..Default::default()
    };
    let mut latencies: Vec<u64> = Vec::with_capacity(1 << 16);
    let holds = sink.holds_frames();
    // For a sink that holds frames: how long without an event counts as idle — at least
    // IDLE_TIMEOUT, and four of the stream's recent frame intervals.
    let mut idle = IDLE_TIMEOUT;
    let mut last_frame: Option<Instant> = None;
    let result: Result<(), PipelineError> = loop {
        let event = match consumer.next_event(holds.then_some(idle)) {
            Ok(e) => e,
            Err(SessionError::Channel(ChannelError::Timeout(_))) => {
                if let Err(e) = sink.idle() {
                    consumer.bye(wire::BYE_INTERNAL_ERROR, &e.to_string());
                    break Err(e.into());
                }
                if let Err(e) = give_back(&mut consumer, sink) {
                    break Err(e);
                }
                continue;
            }
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
                let now = Instant::now();
                if let Some(t) = last_frame.replace(now) {
                    idle = idle.max(4 * (now - t)).min(Duration::from_secs(5));
                }
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
                if !holds {
                    if let Err(e) = consumer.release(f.id, f.seq, out.release) {
                        break Err(e.into());
                    }
                }
            }
            // No more frames: a holding sink lets go of everything now (the display takes
            // its last frame off the screen) instead of after the idle timeout.
            Event::EndOfStream { last_seq } => {
                if holds {
                    log::debug!("end of stream after frame {last_seq}: giving back held frames");
                    if let Err(e) = sink.idle() {
                        consumer.bye(wire::BYE_INTERNAL_ERROR, &e.to_string());
                        break Err(e.into());
                    }
                }
            }
            Event::Bye {
                code: wire::BYE_DONE,
                ..
            } => break Ok(()),
            Event::Bye { code, reason } => break Err(SessionError::PeerBye { code, reason }.into()),
        }
        if holds {
            if let Err(e) = give_back(&mut consumer, sink) {
                break Err(e);
            }
        }
    };
    if let Err(e) = sink.finish() {
        report.error.get_or_insert(e.to_string());
    }
    if let Err(e) = result {
        report.error = Some(e.to_string());
    }
    report.bytes_copied = sink.bytes_copied();
    report.frames_converted = sink.frames_converted();
    report.latency_us = Latency::from_ns(&mut latencies);
    if report.frames_delivered > 0 {
        report.cpu_us_per_frame =
            (cpu_time() - cpu0).as_secs_f64() * 1e6 / report.frames_delivered as f64;
    }
    Ok(report)
}

/// What a consumer feeding `sink` announces in its Hello.
pub fn consumer_caps(sink: &dyn Sink) -> ConsumerCaps {
    let caps = sink.caps();
    ConsumerCaps {
        features: if caps.fences { wire::FEATURE_FENCES } else { 0 },
        kinds: caps.kinds.bits(),
        formats: caps.formats,
        name: sink.name(),
    }
}

/// What the producer's Hello says of the stream, for the sink.
pub fn stream_info(producer: &crate::ipc::PeerInfo) -> StreamInfo {
    StreamInfo {
        producer: producer.name.clone(),
        pattern: producer
            .name
            .strip_prefix("generator:")
            .and_then(|p| p.parse().ok()),
    }
}

/// Sends back the frames a holding sink let go of.
fn give_back(consumer: &mut Consumer, sink: &mut dyn Sink) -> Result<(), PipelineError> {
    for r in sink.take_released() {
        consumer.release(r.id, r.seq, r.release)?;
    }
    Ok(())
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

    #[cfg(feature = "v4l2")]
    #[test]
    fn camera_format_negotiation() {
        use crate::format::FormatModifier;
        use crate::format::{Fourcc, Modifier};
        use crate::ipc::PeerInfo;
        let kms = PeerInfo {
            formats: [Fourcc::AR24, Fourcc::XR24]
                .iter()
                .map(|&fourcc| FormatModifier {
                    fourcc,
                    modifier: Modifier::LINEAR,
                })
                .collect(),
            name: "kms".into(),
            ..Default::default()
        };
        let cam = [Fourcc::YUYV, Fourcc::NV12, Fourcc::AR24, Fourcc::XR24];
        let pick = |offered: &[Fourcc], wanted, peer: &PeerInfo| {
            negotiate_camera_format("/dev/video1", offered, wanted, &peer.name, &peer.formats)
        };
        assert_eq!(pick(&cam, None, &kms).unwrap(), Some(Fourcc::XR24));
        assert_eq!(
            pick(&cam, Some(Fourcc::AR24), &kms).unwrap(),
            Some(Fourcc::AR24)
        );
        // A consumer that lists no formats leaves the choice to the camera.
        let any = PeerInfo::default();
        assert_eq!(pick(&cam, None, &any).unwrap(), None);
        let e = pick(&[Fourcc::YUYV, Fourcc::NV12], None, &kms)
            .unwrap_err()
            .to_string();
        assert!(e.contains("offers YUYV NV12"), "{e}");
        assert!(e.contains("takes only AR24 XR24"), "{e}");
        assert!(e.contains("GPU conversion"), "{e}");
        let e = pick(&cam, Some(Fourcc::YUYV), &kms)
            .unwrap_err()
            .to_string();
        assert!(e.contains("was asked for YUYV"), "{e}");
        // A display that also converts: what it scans out wins over what it converts, even
        // where the camera offers the convertible format first; alone, that one is taken.
        let mut converting = kms.clone();
        converting
            .formats
            .extend([Fourcc::YUYV, Fourcc::NV12].map(|fourcc| FormatModifier {
                fourcc,
                modifier: Modifier::LINEAR,
            }));
        assert_eq!(pick(&cam, None, &converting).unwrap(), Some(Fourcc::XR24));
        assert_eq!(
            pick(&[Fourcc::NV12, Fourcc::YUYV], None, &converting).unwrap(),
            Some(Fourcc::YUYV)
        );
        assert_eq!(
            pick(&cam, Some(Fourcc::NV12), &converting).unwrap(),
            Some(Fourcc::NV12)
        );
        // Opaque before alpha, whatever the order.
        assert_eq!(
            pick(&[Fourcc::AR24, Fourcc::YUYV], None, &converting).unwrap(),
            Some(Fourcc::YUYV)
        );
    }
}
