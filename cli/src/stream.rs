//! `run`, `produce` and `consume`: the options, the sources and sinks they name (checked before
//! anything is forked or connected), the two-process `run` over a socketpair, clean stops on
//! SIGINT/SIGTERM (the summary printed, the socket removed), and the reports.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use frameshare::alloc::AllocatorSpec;
use frameshare::bus::subscriber::Target;
use frameshare::bus::{
    AccessPolicy, Channel, Policy, Publisher, PublisherOptions, StreamName, Subscriber,
    SubscriberOptions, Waker, WhenFull,
};
use frameshare::format::{parse_size, Fourcc, FrameLayout};
use frameshare::pipeline::{
    self, ConsumeOptions, ConsumeReport, ProduceOptions, ProduceReport, Summary,
};
use frameshare::sink::SinkSpec;
use frameshare::source::{GeneratorSource, Pattern, Source};

/// What fills the frames, and how the producer runs.
#[derive(Args, Clone)]
pub struct ProduceArgs {
    /// Frame source: `generator` or `generator:PATTERN` (bars, box, solid[:RRGGBB]); with the
    /// v4l2 feature also `v4l2[:/dev/videoN][:export|import|copy][:fps=N][:separate-planes]`
    /// (a camera; the first capture device unless named; its format is negotiated with the
    /// first consumer unless `--format` is given, its size is the camera's unless `--size` is).
    #[arg(long, default_value = "generator")]
    source: String,
    /// Pattern for the generator (overridden by `--source generator:PATTERN`).
    #[arg(long, default_value = "box")]
    pattern: String,
    /// Buffer kind: auto, dma-heap[:NAME], udmabuf, drm-dumb[:DRIVER], gbm, memfd, posix-shm,
    /// sysv-shm.
    #[arg(long, default_value = "auto")]
    alloc: String,
    /// Pixel format (DRM fourcc) [default for the generator: XR24].
    #[arg(long)]
    format: Option<String>,
    /// Frame size WIDTHxHEIGHT [default for the generator: 1920x1080].
    #[arg(long)]
    size: Option<String>,
    /// Frames to send; 0 runs until stopped (Ctrl-C).
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// Buffers in the pool.
    #[arg(long, default_value_t = 4)]
    buffers: usize,
    /// When every buffer is still with consumers: wait for one, or drop the frame (counted).
    #[arg(long, default_value = "wait", value_parser = ["wait", "drop"])]
    when_full: String,
    /// Pace at this many frames per second (default: as fast as the consumers take them).
    #[arg(long)]
    fps: Option<f64>,
    /// Stride alignment in bytes (power of two).
    #[arg(long, default_value_t = 256)]
    stride_align: u32,
    /// Seconds a consumer may hold a frame (or leave its socket unread) before it is evicted.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = positive_secs)]
    stall_timeout: Duration,
    /// Change the frame size every N frames (generator), cycling through `--sizes`: a
    /// mid-stream format change (buffers re-added, sinks re-negotiate).
    #[arg(long, value_name = "N")]
    change_size_every: Option<u64>,
    /// The sizes `--change-size-every` cycles through, comma-separated.
    #[arg(long, default_value = "640x480,1280x720,320x240")]
    sizes: String,
    /// Testing aid for fence handling: `sw-sync[:DELAY_MS]` attaches a sw_sync acquire fence to
    /// every frame, sends the frame BEFORE writing its pixels, writes them DELAY_MS later and
    /// only then signals the fence, so a consumer that ignores acquire fences fails
    /// verification. Needs root and debugfs sync/sw_sync (the VM rig has both).
    #[arg(long, value_name = "sw-sync[:DELAY_MS]")]
    acquire_fence: Option<String>,
}

/// Where a producer publishes.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub struct PublishTarget {
    /// Publish under this stream name (socket in $XDG_RUNTIME_DIR/frameshare/, or
    /// /run/frameshare/ for root, or $FRAMESHARE_RUNTIME_DIR).
    #[arg(long)]
    stream: Option<String>,
    /// Listen at this socket path instead.
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// Who else may connect, and when to start.
#[derive(Args, Clone)]
pub struct AccessArgs {
    /// Let this user id connect too (repeatable; default: only this user and root).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uids: Vec<u32>,
    /// Let members of this group id connect too (repeatable).
    #[arg(long = "allow-gid", value_name = "GID")]
    allow_gids: Vec<u32>,
}

impl AccessArgs {
    fn policy(&self) -> AccessPolicy {
        AccessPolicy {
            allow_uids: self.allow_uids.clone(),
            allow_gids: self.allow_gids.clone(),
        }
    }
}

/// Where a consumer connects.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub struct SubscribeTarget {
    /// Subscribe to this stream name.
    #[arg(long)]
    stream: Option<String>,
    /// Connect to this socket path instead.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// An inherited, connected SEQPACKET socket fd (how `run` starts its consumer).
    #[arg(long, hide = true)]
    fd: Option<i32>,
}

/// What the consumer does with frames.
#[derive(Args, Clone)]
pub struct ConsumeArgs {
    /// Sink: verify, null, png:DIR, vulkan[:…], kms[:…].
    #[arg(long, default_value = "verify")]
    sink: String,
    /// Policy when frames come faster than the sink: wait (the producer waits for us), drop
    /// (skip frames while busy), latest (always the newest frame).
    #[arg(long, default_value = "wait")]
    policy: Policy,
    /// When the producer goes away (not a clean end), wait for it to come back and resume.
    #[arg(long)]
    reconnect: bool,
    /// Leave after this many frames (default: until the stream ends).
    #[arg(long)]
    frames: Option<u64>,
    /// Seconds to wait for the stream to appear (0: as long as it takes).
    #[arg(long, default_value_t = 10.0)]
    wait: f64,
    #[command(flatten)]
    access: AccessArgs,
}

/// A positive, finite number of seconds.
fn positive_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a positive number of seconds"))
}

/// The source `--source` names, built and checked (nothing opened yet for a camera).
fn source(args: &ProduceArgs) -> Result<Box<dyn Source>> {
    let (name, rest) = args
        .source
        .split_once(':')
        .unwrap_or((args.source.as_str(), ""));
    match name {
        "generator" => {
            let pattern = if rest.is_empty() { &args.pattern } else { rest };
            let pattern: Pattern = pattern.parse().map_err(anyhow::Error::msg)?;
            let fourcc: Fourcc = args.format.as_deref().unwrap_or("XR24").parse()?;
            let (w, h) = parse_size(args.size.as_deref().unwrap_or("1920x1080"))?;
            if args.buffers == 0 {
                bail!("--buffers must be at least 1");
            }
            let layout = FrameLayout::linear(fourcc, w, h, args.stride_align)?;
            let spec: AllocatorSpec = args.alloc.parse()?;
            let (alloc, note) = spec.open_noted()?;
            let mut g = GeneratorSource::new(alloc, note, layout, args.buffers, pattern);
            if let Some(every) = args.change_size_every {
                let sizes = args
                    .sizes
                    .split(',')
                    .map(|s| parse_size(s.trim()))
                    .collect::<Result<Vec<_>, _>>()?;
                for &(w, h) in &sizes {
                    FrameLayout::linear(fourcc, w, h, args.stride_align)?;
                }
                g = g.with_size_changes(every, sizes, args.stride_align);
            }
            if let Some(mode) = &args.acquire_fence {
                let delay = match mode
                    .split_once(':')
                    .map_or((mode.as_str(), None), |(a, b)| (a, Some(b)))
                {
                    ("sw-sync", None) => Duration::ZERO,
                    ("sw-sync", Some(ms)) => Duration::from_millis(
                        ms.parse()
                            .with_context(|| format!("bad delay {ms:?} in --acquire-fence"))?,
                    ),
                    ("none", None) => return Ok(Box::new(g)),
                    _ => bail!("unknown --acquire-fence {mode:?} (none, sw-sync[:DELAY_MS])"),
                };
                g = g.with_late_acquire_fence(delay)?;
            }
            Ok(Box::new(g))
        }
        #[cfg(feature = "v4l2")]
        "v4l2" => {
            use frameshare::source::v4l2::V4l2Config;
            let mut cfg = V4l2Config::parse(rest).map_err(anyhow::Error::msg)?;
            if let Some(f) = &args.format {
                cfg.fourcc = Some(f.parse()?);
            }
            if let Some(s) = &args.size {
                cfg.size = Some(parse_size(s)?);
            }
            if cfg.fps.is_none() {
                cfg.fps = args.fps;
            }
            let spec: AllocatorSpec = args.alloc.parse()?;
            Ok(Box::new(frameshare::source::camera::CameraSource::new(
                cfg,
                spec,
                args.buffers as u32,
            )))
        }
        #[cfg(not(feature = "v4l2"))]
        "v4l2" => bail!("--source v4l2 needs a build with the v4l2 feature"),
        _ => bail!(
            "unknown source {:?} (want generator[:PATTERN]{})",
            args.source,
            if cfg!(feature = "v4l2") {
                ", v4l2[:/dev/videoN]"
            } else {
                ""
            }
        ),
    }
}

fn publisher_options(
    args: &ProduceArgs,
    src: &dyn Source,
    access: AccessPolicy,
) -> PublisherOptions {
    let info = src.info();
    PublisherOptions {
        name: info.name,
        pattern: info.pattern.map(pipeline::pattern_name),
        access,
        when_full: if args.when_full == "drop" {
            WhenFull::Drop
        } else {
            WhenFull::Wait
        },
        stall_timeout: args.stall_timeout,
        ..PublisherOptions::default()
    }
}

fn produce_options(args: &ProduceArgs, progress: bool, wait_for: usize) -> ProduceOptions {
    ProduceOptions {
        frames: (args.frames > 0).then_some(args.frames),
        fps: args.fps,
        wait_for,
        stop: None,
        progress: progress.then_some(show_progress as fn(u64, Option<u64>)),
    }
}

/// SIGINT and SIGTERM set the returned flag and wake `waker` (so a blocked wait ends at once).
fn stop_on_signals(waker: &Waker) -> Result<Arc<AtomicBool>> {
    use std::os::fd::AsFd;
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())?;
        // The handler writes a byte to (its own copy of) the waker's pipe: async-signal-safe.
        signal_hook::low_level::pipe::register(sig, waker.as_fd().try_clone_to_owned()?)?;
    }
    Ok(flag)
}

/// `frameshare produce`: publishes until the frames are out or SIGINT/SIGTERM.
pub fn produce(
    target: &PublishTarget,
    args: &ProduceArgs,
    access: &AccessArgs,
    json: bool,
) -> Result<i32> {
    let mut src = source(args)?;
    let opts = publisher_options(args, src.as_ref(), access.policy());
    let publisher = match (&target.stream, &target.socket) {
        (Some(name), None) => Publisher::bind(&StreamName::new(name)?, opts)?,
        (None, Some(path)) => Publisher::listen(path, opts)?,
        _ => bail!("give --stream NAME or --socket PATH"),
    };
    let mut popts = produce_options(args, !json && std::io::stderr().is_terminal(), 1);
    popts.stop = Some(stop_on_signals(&publisher.waker())?);
    eprintln!(
        "frameshare: publishing {}; waiting for a consumer",
        publisher
            .socket_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let report = pipeline::produce(publisher, src.as_mut(), &popts)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_produce(&report);
    }
    Ok(0)
}

/// Adopts the inherited socket `fd` (from `run`).
pub fn inherited_channel(fd: i32) -> Result<Channel> {
    Channel::from_inherited_fd(fd).with_context(|| format!("--fd {fd}"))
}

/// `frameshare consume`: feeds a stream's frames to a sink until the stream ends.
pub fn consume(target: &SubscribeTarget, args: &ConsumeArgs, json: bool) -> Result<i32> {
    // Everything pure first: a bad sink name fails before any connection.
    let spec: SinkSpec = args.sink.parse()?;
    let (target, fd) = match (&target.stream, &target.socket, target.fd) {
        (Some(n), None, None) => (Some(Target::Stream(StreamName::new(n)?)), None),
        (None, Some(p), None) => (Some(Target::Path(p.clone())), None),
        (None, None, Some(fd)) => (None, Some(fd)),
        _ => bail!("give one of --stream NAME, --socket PATH"),
    };
    // The sink's slow set-up (GPU instance, pipelines, display) happens before we connect:
    // once connected we are ready, and no producer clock runs across it.
    let mut sink = spec.open()?;
    let caps = sink.caps();
    let opts = SubscriberOptions {
        name: sink.name(),
        fences: caps.fences,
        kinds: caps.kinds,
        formats: caps.formats,
        policy: args.policy,
        reconnect: args.reconnect,
        connect_timeout: (args.wait > 0.0).then(|| Duration::from_secs_f64(args.wait)),
        access: args.access.policy(),
        ..SubscriberOptions::default()
    };
    let mut sub = match (target, fd) {
        (Some(t), _) => Subscriber::to(t, opts)?,
        (None, Some(fd)) => Subscriber::from_channel(inherited_channel(fd)?, opts)?,
        (None, None) => bail!("give --stream NAME or --socket PATH"),
    };
    let stop = stop_on_signals(&sub.waker())?;
    let report = pipeline::consume(
        &mut sub,
        sink.as_mut(),
        &ConsumeOptions {
            stop: Some(stop),
            frames: args.frames,
        },
    )?;
    if json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        print_consume(&report);
    }
    let unverified =
        spec.verifies() && report.frames_verified + report.frames_dropped < report.frames_delivered;
    Ok(if report.error.is_some() || unverified {
        1
    } else {
        0
    })
}

/// Two processes: this one produces; a child `frameshare consume --fd N` consumes and reports
/// back as JSON on its stdout.
pub fn run(args: &ProduceArgs, sink: &str, policy: Policy, json: bool, verbose: u8) -> Result<i32> {
    // Everything pure first, before forking: a bad source, allocator or sink name fails here.
    let spec: SinkSpec = sink.parse()?;
    let mut src = source(args)?;
    let (ours, theirs) = Channel::pair()?;
    let theirs: OwnedFd = theirs.into();
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())?; // inherited by the child only
    let exe = std::env::current_exe().context("finding our own executable")?;
    let mut cmd = Command::new(exe);
    if verbose > 0 {
        cmd.arg(format!("-{}", "v".repeat(verbose as usize)));
    }
    let child = cmd
        .args([
            "consume",
            "--json",
            "--sink",
            sink,
            "--policy",
            policy.name(),
            "--fd",
            &theirs.as_raw_fd().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the consumer process")?;
    drop(theirs);
    let mut publisher = Publisher::new(publisher_options(
        args,
        src.as_ref(),
        AccessPolicy::default(),
    ))?;
    publisher.add_connection(ours, true)?;
    let popts = produce_options(args, !json && std::io::stderr().is_terminal(), 1);
    let produced = pipeline::produce(publisher, src.as_mut(), &popts);
    let out = child
        .wait_with_output()
        .context("waiting for the consumer")?;
    let consumed: Option<ConsumeReport> = serde_json::from_slice(&out.stdout).ok();
    let produced = match (produced, &consumed) {
        (Ok(p), _) => p,
        (Err(e), Some(c)) if c.error.is_some() => {
            bail!(
                "producer: {}; consumer: {}",
                pipeline::error_chain(&e),
                c.error.as_deref().unwrap_or_default()
            )
        }
        (Err(e), _) => return Err(e).context("producer"),
    };
    let consumed =
        consumed.with_context(|| format!("the consumer process failed ({})", out.status))?;
    let summary = Summary::new(&produced, &consumed);
    if json {
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        outln!("{}", produced.allocator_note);
        print_summary(&summary, &consumed);
    }
    let mut code = 0;
    if let Some(e) = &consumed.error {
        eprintln!("frameshare: consumer error: {e}");
        code = 1;
    }
    if spec.verifies()
        && summary.frames_verified + consumed.frames_dropped != summary.frames_delivered
    {
        eprintln!(
            "frameshare: {} of {} delivered frames failed verification",
            summary.frames_delivered - summary.frames_verified,
            summary.frames_delivered
        );
        code = 1;
    }
    std::io::stdout().flush()?;
    Ok(code)
}

static PROGRESS: std::sync::OnceLock<indicatif::ProgressBar> = std::sync::OnceLock::new();

fn show_progress(done: u64, total: Option<u64>) {
    let bar = PROGRESS.get_or_init(|| {
        let b = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(match total {
            Some(_) => "{bar:40} {pos}/{len} frames {per_sec} eta {eta}",
            None => "{spinner} {pos} frames {per_sec}",
        }) {
            b.set_style(style);
        }
        b
    });
    if done % 16 == 0 || Some(done) == total {
        bar.set_position(done);
    }
    if Some(done) == total {
        bar.finish_and_clear();
    }
}

fn print_summary(s: &Summary, c: &ConsumeReport) {
    outln!("allocator         {}", s.allocator);
    outln!("sink              {}", c.sink);
    outln!("frames produced   {}", s.frames_produced);
    outln!("frames delivered  {}", s.frames_delivered);
    outln!("frames verified   {}", s.frames_verified);
    outln!("frames dropped    {}", s.frames_dropped);
    if s.frames_converted > 0 {
        outln!(
            "frames converted  {} (GPU, for the display)",
            s.frames_converted
        );
    }
    outln!("bytes copied      {}", s.bytes_copied);
    outln!("fps               {:.1}", s.fps);
    outln!(
        "latency µs        p50 {:.1}  p99 {:.1}  max {:.1}",
        s.latency_us.p50,
        s.latency_us.p99,
        s.latency_us.max
    );
}

fn print_produce(r: &ProduceReport) {
    outln!("{}", r.allocator_note);
    outln!(
        "frames produced {}  dropped {}  in {:.2} s{}",
        r.frames_produced,
        r.frames_dropped,
        r.elapsed_s,
        if r.stopped { " (stopped)" } else { "" }
    );
    let c = r.consumers;
    outln!(
        "consumers joined {}  left {}  evicted {}  refused {}",
        c.joined,
        c.left,
        c.evicted,
        c.refused
    );
}

fn print_consume(r: &ConsumeReport) {
    outln!(
        "sink {}: delivered {}  verified {}  dropped {}  bytes copied {}  latency p50 {:.1} µs p99 {:.1} µs",
        r.sink, r.frames_delivered, r.frames_verified, r.frames_dropped, r.bytes_copied, r.latency_us.p50, r.latency_us.p99
    );
    if r.restarts > 0 {
        outln!("the producer restarted {} time(s)", r.restarts);
    }
    match (&r.error, &r.ended) {
        (Some(e), _) => outln!("ended early: {e}"),
        (None, Some(why)) => outln!("{why}"),
        _ => {}
    }
}
