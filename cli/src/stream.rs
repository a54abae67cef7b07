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
use frameshare::bus::wire::MAX_BUFFERS;
use frameshare::bus::{
    AccessPolicy, Channel, Policy, Publisher, PublisherOptions, StreamName, Subscriber,
    SubscriberOptions, Waker,
};
use frameshare::format::{Fourcc, FrameLayout};
use frameshare::pipeline::{self, ConsumeOptions, ProduceOptions};
use frameshare::source::{GeneratorSource, Pattern, Source};

use crate::args::{
    self, AcquireFence, Fps, SinkArg, Size, Sizes, SourceSpec, SupportedFourcc, WhenFullArg,
};
use crate::logging::Verbosity;
use crate::report::StreamReport;
use crate::usage;

/// What fills the frames, and how the producer runs.
#[derive(Args, Clone)]
pub struct ProduceArgs {
    /// Frame source: `generator[:PATTERN]`, or with the v4l2 feature
    /// `v4l2[:/dev/videoN][:export|import|copy][:fps=N][:separate-planes]` (a camera; the first
    /// capture device unless named; its format is negotiated with the first consumer unless
    /// `--format` is given, its size is the camera's unless `--size` is). A camera's MJPEG is
    /// not taken (frameshare moves raw frames only).
    #[arg(long, default_value = "generator", value_parser = args::source())]
    source: SourceSpec,
    /// Pattern for the generator (overridden by `--source generator:PATTERN`); solid:RRGGBB for
    /// a colour.
    #[arg(long, default_value = "box", value_parser = args::pattern())]
    pattern: Pattern,
    /// Buffer kind: auto, dma-heap[:NAME], udmabuf, drm-dumb[:DRIVER|:/dev/dri/cardN],
    /// gbm[:/dev/dri/renderDN], memfd, posix-shm, sysv-shm.
    #[arg(long, default_value = "auto", value_parser = args::alloc())]
    alloc: AllocatorSpec,
    /// Pixel format (DRM fourcc, or a long name such as XRGB8888) [default for the generator:
    /// XR24].
    #[arg(long, value_parser = args::format())]
    format: Option<SupportedFourcc>,
    /// Frame size WIDTHxHEIGHT [default for the generator: 1920x1080].
    #[arg(long, value_parser = clap::value_parser!(Size))]
    size: Option<Size>,
    /// Frames to send; 0 runs until stopped (Ctrl-C).
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// Buffers in the pool (1 to 64).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=MAX_BUFFERS as i64))]
    buffers: u32,
    /// When every buffer is still with consumers: wait for one, or drop the frame (counted).
    #[arg(long, value_enum, default_value = "wait")]
    when_full: WhenFullArg,
    /// Pace at this many frames per second (default: as fast as the consumers take them).
    #[arg(long, value_parser = clap::value_parser!(Fps))]
    fps: Option<Fps>,
    /// Stride alignment in bytes (a power of two, 1 to 4096).
    #[arg(long, default_value_t = 256, value_parser = stride_align)]
    stride_align: u32,
    /// Seconds a consumer may hold a frame (or leave its socket unread) before it is evicted.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = positive_secs)]
    stall_timeout: Duration,
    /// Change the frame size every N frames (generator), cycling through `--sizes`: a
    /// mid-stream format change (buffers re-added, sinks re-negotiate).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    change_size_every: Option<u64>,
    /// The sizes `--change-size-every` cycles through, comma-separated.
    #[arg(long, default_value = "640x480,1280x720,320x240", value_parser = clap::value_parser!(Sizes))]
    sizes: Sizes,
    /// Testing aid for fence handling: `sw-sync[:DELAY_MS]` attaches a sw_sync acquire fence to
    /// every frame, sends the frame BEFORE writing its pixels, writes them DELAY_MS later and
    /// only then signals the fence, so a consumer that ignores acquire fences fails
    /// verification. Needs root and debugfs sync/sw_sync (the VM rig has both).
    #[arg(long, value_name = "sw-sync[:DELAY_MS]", value_parser = clap::value_parser!(AcquireFence))]
    acquire_fence: Option<AcquireFence>,
}

fn stride_align(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v) if v.is_power_of_two() && v <= 4096 => Ok(v),
        _ => Err(format!("{s:?} is not a power of two between 1 and 4096")),
    }
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
    /// Use this inherited, connected SEQPACKET socket (how `run` starts its consumer; also for
    /// a supervisor that connects for us).
    #[arg(long, value_name = "FD")]
    fd: Option<i32>,
}

impl SubscribeTarget {
    /// Whether the consumer runs on an inherited socket (as `run`'s child).
    pub fn is_inherited(&self) -> bool {
        self.fd.is_some()
    }
}

/// What the consumer does with frames.
#[derive(Args, Clone)]
pub struct ConsumeArgs {
    /// Sink: verify, null, png:DIR, vulkan[:image|buffer|staging][:png:DIR],
    /// kms[:vkms|:/dev/dri/cardN][:connector=NAME][:verify-writeback][:convert|:direct].
    #[arg(long, default_value = "verify", value_parser = args::sink())]
    sink: SinkArg,
    /// Policy when frames come faster than the sink: wait (the producer waits for us), drop
    /// (skip frames while busy), latest (always the newest frame).
    #[arg(long, default_value = "wait", value_parser = args::policy())]
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

/// The layouts the generator will use, checked: a size the format cannot have (an odd width
/// for NV12, 0x0, beyond 16384) is a usage error, found before anything is opened.
fn generator_layouts(args: &ProduceArgs) -> Result<(FrameLayout, Vec<(u32, u32)>)> {
    let fourcc = args.format.map_or(Fourcc::XR24, |f| f.0);
    let Size(w, h) = args.size.unwrap_or(Size(1920, 1080));
    let layout = FrameLayout::linear(fourcc, w, h, args.stride_align).map_err(usage)?;
    let mut sizes = Vec::new();
    if args.change_size_every.is_some() {
        for &(w, h) in &args.sizes.0 {
            FrameLayout::linear(fourcc, w, h, args.stride_align).map_err(usage)?;
            sizes.push((w, h));
        }
    }
    Ok((layout, sizes))
}

/// Checks everything about the source that needs no device (usage errors, exit 2).
fn check_source(args: &ProduceArgs) -> Result<()> {
    if let SourceSpec::Generator(_) = args.source {
        generator_layouts(args)?;
    }
    Ok(())
}

/// Builds the source `--source` names; the allocator is opened here (before any fork or
/// connection), a camera only when the stream starts.
fn source(args: &ProduceArgs) -> Result<Box<dyn Source>> {
    match &args.source {
        SourceSpec::Generator(pattern) => {
            let pattern = pattern.unwrap_or(args.pattern);
            let (layout, sizes) = generator_layouts(args)?;
            let (alloc, note) = args
                .alloc
                .open_noted()
                .with_context(|| format!("producer: opening the {} allocator", args.alloc))?;
            log::info!("producer: {note}");
            let mut g = GeneratorSource::new(alloc, note, layout, args.buffers as usize, pattern);
            if let Some(every) = args.change_size_every {
                g = g.with_size_changes(every, sizes, args.stride_align);
            }
            if let Some(AcquireFence::SwSync(delay)) = args.acquire_fence {
                // The fence timeline is ours: a missing sw_sync is this machine's, not the peer's.
                g = g
                    .with_late_acquire_fence(delay)
                    .context("producer: setting up sw_sync acquire fences on this machine")?;
            }
            Ok(Box::new(g))
        }
        #[cfg(feature = "v4l2")]
        SourceSpec::V4l2(rest) => {
            use frameshare::source::v4l2::V4l2Config;
            let mut cfg = V4l2Config::parse(rest).map_err(usage)?;
            if let Some(f) = args.format {
                cfg.fourcc = Some(f.0);
            }
            if let Some(Size(w, h)) = args.size {
                cfg.size = Some((w, h));
            }
            if cfg.fps.is_none() {
                cfg.fps = args.fps.map(|f| f.0);
            }
            Ok(Box::new(frameshare::source::camera::CameraSource::new(
                cfg,
                args.alloc.clone(),
                args.buffers,
            )))
        }
        #[cfg(not(feature = "v4l2"))]
        SourceSpec::V4l2(_) => Err(usage(
            "--source v4l2 needs a build with the v4l2 feature (cargo build --features v4l2)",
        )),
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
        when_full: args.when_full.into(),
        stall_timeout: args.stall_timeout,
        ..PublisherOptions::default()
    }
}

fn produce_options(args: &ProduceArgs, progress: bool, wait_for: usize) -> ProduceOptions {
    ProduceOptions {
        frames: (args.frames > 0).then_some(args.frames),
        fps: args.fps.map(|f| f.0),
        wait_for,
        stop: None,
        progress: progress.then_some(show_progress as fn(u64, Option<u64>)),
    }
}

/// SIGINT and SIGTERM set the returned flag.
fn stop_flag_on_signals() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
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

/// Prints a report as text or JSON.
fn print_report(r: &StreamReport, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(r)?);
    } else {
        out!("{}", r.text());
    }
    Ok(())
}

/// `frameshare produce`: publishes until the frames are out or SIGINT/SIGTERM.
pub fn produce(
    target: &PublishTarget,
    args: &ProduceArgs,
    access: &AccessArgs,
    json: bool,
    verbosity: Verbosity,
) -> Result<i32> {
    check_source(args)?;
    let name = match (&target.stream, &target.socket) {
        (Some(name), None) => Some(StreamName::new(name).map_err(usage)?),
        (None, Some(_)) => None,
        _ => return Err(usage("give --stream NAME or --socket PATH")),
    };
    let mut src = source(args)?;
    let opts = publisher_options(args, src.as_ref(), access.policy());
    let publisher = match (&name, &target.socket) {
        (Some(name), _) => Publisher::bind(name, opts)
            .with_context(|| format!("producer: publishing stream {name}"))?,
        (None, Some(path)) => Publisher::listen(path, opts)
            .with_context(|| format!("producer: listening at {}", path.display()))?,
        (None, None) => unreachable!("checked above"),
    };
    let mut popts = produce_options(
        args,
        !json && !verbosity.quiet && std::io::stderr().is_terminal(),
        1,
    );
    popts.stop = Some(stop_on_signals(&publisher.waker())?);
    log::info!(
        "publishing at {}; waiting for a consumer",
        publisher
            .socket_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let report = pipeline::produce(publisher, src.as_mut(), &popts).context("producer")?;
    print_report(&StreamReport::produced(&report), json)?;
    Ok(0)
}

/// Adopts the inherited socket `fd` (from `run`).
pub fn inherited_channel(fd: i32) -> Result<Channel> {
    Channel::from_inherited_fd(fd).with_context(|| format!("--fd {fd}"))
}

/// `frameshare consume`: feeds a stream's frames to a sink until the stream ends.
pub fn consume(target: &SubscribeTarget, args: &ConsumeArgs, json: bool) -> Result<i32> {
    // Everything pure first (the sink's name was parsed by clap): a bad target fails before
    // any connection.
    let (target, fd) = match (&target.stream, &target.socket, target.fd) {
        (Some(n), None, None) => (
            Some(Target::Stream(StreamName::new(n).map_err(usage)?)),
            None,
        ),
        (None, Some(p), None) => (Some(Target::Path(p.clone())), None),
        (None, None, Some(fd)) => (None, Some(fd)),
        _ => return Err(usage("give one of --stream NAME, --socket PATH, --fd FD")),
    };
    // The sink's slow set-up (GPU instance, pipelines, display) happens before we connect:
    // once connected we are ready, and no producer clock runs across it.
    let mut sink = args
        .sink
        .spec
        .open()
        .context("consumer: opening the sink")?;
    let caps = sink.caps();
    log::debug!(
        "consumer: sink {} takes {:?} with{} fences; formats {}",
        sink.name(),
        caps.kinds,
        if caps.fences { "" } else { "out" },
        if caps.formats.is_empty() {
            "any".into()
        } else {
            caps.formats
                .iter()
                .map(|f| format!("{}/{}", f.fourcc, f.modifier))
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
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
        (Some(t), _) => Subscriber::to(t, opts).context("consumer: connecting")?,
        (None, Some(fd)) => Subscriber::from_channel(inherited_channel(fd)?, opts)
            .context("consumer: starting on the inherited socket")?,
        (None, None) => unreachable!("checked above"),
    };
    // A flag, not a waker: the subscriber then waits in its socket's own recvmsg (one system
    // call per frame), and a signal ends that wait all the same.
    let stop = stop_flag_on_signals()?;
    sub.stop_on(stop.clone());
    let report = pipeline::consume(
        &mut sub,
        sink.as_mut(),
        &ConsumeOptions {
            stop: Some(stop.clone()),
            frames: args.frames,
        },
    )
    .context("consumer")?;
    let stopped = stop.load(std::sync::atomic::Ordering::Relaxed);
    print_report(&StreamReport::consumed(&report, stopped), json)?;
    let unverified = args.sink.spec.verifies()
        && report.frames_verified + report.frames_dropped < report.frames_delivered;
    Ok(if report.error.is_some() || unverified {
        1
    } else {
        0
    })
}

/// Two processes: this one produces; a child `frameshare consume --fd N` consumes and reports
/// back as JSON on its stdout.
pub fn run(
    args: &ProduceArgs,
    sink: &SinkArg,
    policy: Policy,
    json: bool,
    verbosity: Verbosity,
) -> Result<i32> {
    // Everything pure was checked by clap and here, and the allocator is opened, before the
    // fork: a bad source, allocator, size or sink fails in this process, said once.
    check_source(args)?;
    let mut src = source(args)?;
    let (ours, theirs) = Channel::pair()?;
    let theirs: OwnedFd = theirs.into();
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())?; // inherited by the child only
    let exe = std::env::current_exe().context("finding our own executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(verbosity.child_args());
    let child = cmd
        .args([
            "consume",
            "--json",
            "--sink",
            &sink.text,
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
    let popts = produce_options(
        args,
        !json && !verbosity.quiet && std::io::stderr().is_terminal(),
        1,
    );
    let produced = pipeline::produce(publisher, src.as_mut(), &popts);
    let out = child
        .wait_with_output()
        .context("waiting for the consumer process")?;
    let consumed: Option<StreamReport> = serde_json::from_slice(&out.stdout).ok();
    let produced = match (produced, &consumed) {
        (Ok(p), _) => p,
        // The consumer said why it left; the producer's failure (the connection closed, a
        // Bye) is its echo.
        (Err(e), Some(c)) if c.error.is_some() => {
            log::debug!("producer: {}", pipeline::error_chain(&e));
            bail!("consumer: {}", c.error.as_deref().unwrap_or_default())
        }
        // The consumer failed before it could report: it said why on stderr, above.
        (Err(e), None) if !out.status.success() => {
            log::debug!("producer: {}", pipeline::error_chain(&e));
            bail!(
                "the consumer process failed ({}); its error is above",
                out.status
            )
        }
        (Err(e), _) => return Err(e).context("producer"),
    };
    let consumed = consumed.with_context(|| {
        format!(
            "the consumer process gave no report ({}); its error is above",
            out.status
        )
    })?;
    let summary = StreamReport::run(&produced, &consumed);
    print_report(&summary, json)?;
    let mut code = 0;
    if let Some(e) = &consumed.error {
        eprintln!("frameshare: consumer: error: {e}");
        code = 1;
    }
    let delivered = summary.frames_delivered.unwrap_or(0);
    let verified = summary.frames_verified.unwrap_or(0);
    if sink.spec.verifies() && verified + consumed.frames_dropped != delivered {
        eprintln!(
            "frameshare: consumer: {} of {} delivered frames failed verification",
            delivered - verified,
            delivered
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
            Some(_) => "{bar:40} {pos}/{len} frames {per_sec:.1} eta {eta}",
            None => "{spinner} {pos} frames {per_sec:.1}",
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
