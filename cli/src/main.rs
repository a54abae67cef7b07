//! The `frameshare` command line: probe, run (two processes over a socketpair), produce and
//! consume (across unrelated processes over a named socket), bench, explain.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

mod bench;
mod ls;
mod probe;

use frameshare::format::{parse_size, Fourcc, FrameLayout};
use frameshare::ipc::producer::{PoolPolicy, ProducerOptions};
use frameshare::ipc::socket::{Channel, Listener};
use frameshare::pipeline::{self, ConsumeReport, ProduceOptions, ProduceReport, Summary};
use frameshare::source::Pattern;

#[derive(Parser)]
#[command(
    name = "frameshare",
    version,
    about = "Zero-copy video frame sharing between Linux processes"
)]
struct Cli {
    /// Log more (repeat for debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// What this machine offers: shm kinds, dma-buf heaps, udmabuf, DRM, V4L2, sw_sync.
    Probe {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Shared frame buffers in use on this machine, per process (an `ipcs` for frames).
    Ls {
        /// Every process's shared buffers, not only frameshare's.
        #[arg(long, short)]
        all: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark: zero-copy handoff per allocator and size against a bare socket ping-pong,
    /// consumer CPU, fps, and copying baselines (pipe, shared ring), measured side by side.
    Bench(BenchArgs),
    /// Producer and consumer as two processes over a socketpair; prints a summary.
    Run {
        #[command(flatten)]
        produce: ProduceArgs,
        /// Sink: verify, null, png:DIR.
        #[arg(long, default_value = "verify")]
        sink: String,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The producer end, listening on a unix socket (created 0600) for one consumer.
    Produce {
        /// Socket path to create.
        #[arg(long)]
        socket: PathBuf,
        #[command(flatten)]
        produce: ProduceArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The consumer end, connecting to a producer's socket (or using an inherited fd).
    Consume {
        /// Socket path to connect to (retried for 10 s while the producer starts).
        #[arg(long, conflicts_with = "fd")]
        socket: Option<PathBuf>,
        /// An inherited, connected SEQPACKET socket fd (how `run` starts its consumer).
        #[arg(long, hide = true)]
        fd: Option<i32>,
        /// Sink: verify, null, png:DIR.
        #[arg(long, default_value = "verify")]
        sink: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Would a buffer import into this machine's Vulkan device without a copy? If not, why.
    Explain {
        /// Pixel format (DRM fourcc: XR24, NV12, YUYV, …).
        fourcc: String,
        /// Frame size WIDTHxHEIGHT.
        size: String,
        /// Format modifier: LINEAR, or a number (0x0100000000000001).
        #[arg(long, default_value = "LINEAR")]
        modifier: String,
        /// Buffer kind: auto, dma-heap, udmabuf, memfd, posix-shm, sysv-shm.
        #[arg(long, default_value = "auto")]
        alloc: String,
        /// Stride alignment the allocator uses (as `run --stride-align`).
        #[arg(long, default_value_t = 256)]
        stride_align: u32,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
struct ProduceArgs {
    /// Frame source: `generator` or `generator:PATTERN` (bars, box, solid[:RRGGBB]); with the
    /// v4l2 feature also `v4l2[:/dev/videoN][:export|import|copy][:fps=N]` (a camera; the
    /// first capture device unless named; its format is negotiated with the sink unless
    /// `--format` is given, its size is the camera's unless `--size` is).
    #[arg(long, default_value = "generator")]
    source: String,
    /// Pattern for the generator (overridden by `--source generator:PATTERN`).
    #[arg(long, default_value = "box")]
    pattern: String,
    /// Buffer kind: auto, dma-heap[:NAME], udmabuf, gbm, memfd, posix-shm, sysv-shm.
    #[arg(long, default_value = "auto")]
    alloc: String,
    /// Pixel format (DRM fourcc) [default for the generator: XR24].
    #[arg(long)]
    format: Option<String>,
    /// Frame size WIDTHxHEIGHT [default for the generator: 1920x1080].
    #[arg(long)]
    size: Option<String>,
    /// Frames to send.
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// Buffers in the pool.
    #[arg(long, default_value_t = 4)]
    buffers: usize,
    /// When every buffer is with the consumer: wait, or drop the frame.
    #[arg(long, default_value = "wait")]
    policy: String,
    /// Pace at this many frames per second (default: as fast as possible).
    #[arg(long)]
    fps: Option<f64>,
    /// Stride alignment in bytes (power of two).
    #[arg(long, default_value_t = 256)]
    stride_align: u32,
    /// Testing aid for fence handling: `sw-sync[:DELAY_MS]` attaches a sw_sync acquire fence to
    /// every frame, sends the frame BEFORE writing its pixels, writes them DELAY_MS later and
    /// only then signals the fence, so a consumer that ignores acquire fences fails
    /// verification. Needs root and debugfs sync/sw_sync (the VM rig has both).
    #[arg(long, value_name = "sw-sync[:DELAY_MS]")]
    acquire_fence: Option<String>,
}

/// What fills the frames.
enum Source {
    Generator,
    #[cfg(feature = "v4l2")]
    V4l2(frameshare::source::v4l2::V4l2Config),
}

impl ProduceArgs {
    /// The source `--source` names (with `--format`/`--size` applied to a camera).
    fn source(&self) -> Result<Source> {
        let (name, rest) = self
            .source
            .split_once(':')
            .unwrap_or((self.source.as_str(), ""));
        match name {
            "generator" => Ok(Source::Generator),
            #[cfg(feature = "v4l2")]
            "v4l2" => {
                let mut cfg = frameshare::source::v4l2::V4l2Config::parse(rest)
                    .map_err(anyhow::Error::msg)?;
                if let Some(f) = &self.format {
                    cfg.fourcc = Some(f.parse()?);
                }
                if let Some(s) = &self.size {
                    cfg.size = Some(parse_size(s)?);
                }
                Ok(Source::V4l2(cfg))
            }
            #[cfg(not(feature = "v4l2"))]
            "v4l2" => {
                let _ = rest;
                bail!("--source v4l2 needs a build with the v4l2 feature")
            }
            _ => bail!(
                "unknown source {:?} (want generator[:PATTERN]{})",
                self.source,
                if cfg!(feature = "v4l2") {
                    ", v4l2[:/dev/videoN]"
                } else {
                    ""
                }
            ),
        }
    }

    fn options(&self, progress: bool) -> Result<ProduceOptions> {
        let pattern = match self.source.split_once(':') {
            Some(("generator", p)) => p.to_owned(),
            _ => self.pattern.clone(),
        };
        let pattern: Pattern = pattern.parse().map_err(anyhow::Error::msg)?;
        let fourcc: Fourcc = self.format.as_deref().unwrap_or("XR24").parse()?;
        let (w, h) = parse_size(self.size.as_deref().unwrap_or("1920x1080"))?;
        if self.buffers == 0 {
            bail!("--buffers must be at least 1");
        }
        Ok(ProduceOptions {
            alloc: self.alloc.clone(),
            layout: FrameLayout::linear(fourcc, w, h, self.stride_align)?,
            buffers: self.buffers,
            frames: self.frames,
            pattern,
            fps: self.fps,
            session: ProducerOptions {
                policy: self
                    .policy
                    .parse::<PoolPolicy>()
                    .map_err(anyhow::Error::msg)?,
                acquire_fence: match &self.acquire_fence {
                    Some(m) => m.parse().map_err(anyhow::Error::msg)?,
                    None => Default::default(),
                },
                ..Default::default()
            },
            progress: progress.then_some(show_progress as fn(u64, u64)),
        })
    }
}

static PROGRESS: std::sync::OnceLock<indicatif::ProgressBar> = std::sync::OnceLock::new();

fn show_progress(done: u64, total: u64) {
    let bar = PROGRESS.get_or_init(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} frames {per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        b
    });
    if done % 16 == 0 || done == total {
        bar.set_position(done);
    }
    if done == total {
        bar.finish_and_clear();
    }
}

fn main() {
    let cli = Cli::parse();
    init_log(cli.verbose);
    match real_main(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("frameshare: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn init_log(verbose: u8) {
    struct Stderr(log::LevelFilter);
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= self.0
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                eprintln!(
                    "frameshare[{}]: {}: {}",
                    std::process::id(),
                    r.level().as_str().to_lowercase(),
                    r.args()
                );
            }
        }
        fn flush(&self) {}
    }
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    if log::set_boxed_logger(Box::new(Stderr(level))).is_ok() {
        log::set_max_level(level);
    }
}

fn real_main(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Probe { json } => {
            let p = crate::probe::probe();
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                print!("{p}");
            }
            Ok(0)
        }
        Cmd::Ls { all, json } => {
            let items = crate::ls::inventory(!all);
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", crate::ls::table(&items));
            }
            Ok(0)
        }
        Cmd::Bench(args) => bench(&args),
        Cmd::Run {
            produce,
            sink,
            json,
        } => run(&produce, &sink, json),
        Cmd::Produce {
            socket,
            produce,
            json,
        } => {
            let opts = produce.options(!json && std::io::stderr().is_terminal())?;
            produce.source()?;
            let listener = Listener::bind(&socket)
                .with_context(|| format!("listening on {}", socket.display()))?;
            eprintln!("frameshare: waiting for a consumer on {}", socket.display());
            let chan = listener.accept(None)?;
            drop(listener); // one consumer; the path goes away now
            let report = self::produce(chan, &produce, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_produce(&report);
            }
            Ok(0)
        }
        Cmd::Consume {
            socket,
            fd,
            sink,
            json,
        } => {
            let chan = match (socket, fd) {
                (Some(path), None) => connect_retrying(&path, Duration::from_secs(10))?,
                (None, Some(fd)) => inherited_channel(fd)?,
                _ => bail!("give --socket PATH"),
            };
            let mut sink = frameshare::sink::open(&sink)?;
            let report = pipeline::consume(chan, sink.as_mut())?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_consume(&report);
            }
            Ok(if report.error.is_some() { 1 } else { 0 })
        }
        Cmd::Explain {
            fourcc,
            size,
            modifier,
            alloc,
            stride_align,
            json,
        } => explain(&fourcc, &size, &modifier, alloc, stride_align, json),
    }
}

/// `frameshare explain`: prints the verdict; exit status 0 if the import works, 1 if not.
fn explain(
    fourcc: &str,
    size: &str,
    modifier: &str,
    alloc: String,
    stride_align: u32,
    json: bool,
) -> Result<i32> {
    let (width, height) = parse_size(size)?;
    let verdict = frameshare::explain::explain(&frameshare::explain::Request {
        fourcc: fourcc.parse()?,
        width,
        height,
        modifier: modifier.parse()?,
        alloc,
        stride_align,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        print!("{verdict}");
    }
    Ok(if verdict.works { 0 } else { 1 })
}

fn connect_retrying(path: &std::path::Path, patience: Duration) -> Result<Channel> {
    let start = Instant::now();
    loop {
        match Channel::connect(path) {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() < patience => {
                log::debug!("connect: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).with_context(|| format!("no producer at {}", path.display())),
        }
    }
}

fn inherited_channel(fd: i32) -> Result<Channel> {
    Channel::from_inherited_fd(fd).with_context(|| format!("--fd {fd}"))
}

/// Runs the producer end with the source `args` names.
fn produce(
    chan: Channel,
    args: &ProduceArgs,
    opts: &ProduceOptions,
) -> Result<ProduceReport, pipeline::PipelineError> {
    match args.source().map_err(|e| {
        pipeline::PipelineError::Session(frameshare::ipc::SessionError::Usage(e.to_string()))
    })? {
        Source::Generator => pipeline::produce(chan, opts),
        #[cfg(feature = "v4l2")]
        Source::V4l2(cfg) => pipeline::produce_v4l2(chan, opts, &cfg),
    }
}

/// Two processes: this one produces; a child `frameshare consume --fd N` consumes and reports
/// back as JSON on its stdout.
fn run(args: &ProduceArgs, sink: &str, json: bool) -> Result<i32> {
    let opts = args.options(!json && std::io::stderr().is_terminal())?;
    args.source()?; // fail fast on a bad source, before forking
    frameshare::sink::open(sink)?; // fail fast on a bad sink name, before forking
    let (ours, theirs) = Channel::pair()?;
    let theirs: OwnedFd = theirs.into();
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())?; // inherited by the child only
    let exe = std::env::current_exe().context("finding our own executable")?;
    let child = Command::new(exe)
        .args([
            "consume",
            "--json",
            "--sink",
            sink,
            "--fd",
            &theirs.as_raw_fd().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the consumer process")?;
    drop(theirs);
    let produced = produce(ours, args, &opts);
    let out = child
        .wait_with_output()
        .context("waiting for the consumer")?;
    let consumed: Option<ConsumeReport> = serde_json::from_slice(&out.stdout).ok();
    let produced = match (produced, &consumed) {
        (Ok(p), _) => p,
        (Err(e), Some(c)) if c.error.is_some() => {
            bail!(
                "producer: {e}; consumer: {}",
                c.error.as_deref().unwrap_or_default()
            )
        }
        (Err(e), _) => return Err(e).context("producer"),
    };
    let consumed =
        consumed.with_context(|| format!("the consumer process failed ({})", out.status))?;
    let summary = Summary::new(&produced, &consumed);
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{}", produced.allocator_note);
        print_summary(&summary, &consumed);
    }
    let mut code = 0;
    if let Some(e) = &consumed.error {
        eprintln!("frameshare: consumer error: {e}");
        code = 1;
    }
    let verifying = sink == "verify" || consumed.sink == "kms:verify-writeback";
    if verifying && summary.frames_verified != summary.frames_delivered {
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

fn print_summary(s: &Summary, c: &ConsumeReport) {
    println!("allocator         {}", s.allocator);
    println!("sink              {}", c.sink);
    println!("frames produced   {}", s.frames_produced);
    println!("frames delivered  {}", s.frames_delivered);
    println!("frames verified   {}", s.frames_verified);
    println!("frames dropped    {}", s.frames_dropped);
    if s.frames_converted > 0 {
        println!(
            "frames converted  {} (GPU, for the display)",
            s.frames_converted
        );
    }
    println!("bytes copied      {}", s.bytes_copied);
    println!("fps               {:.1}", s.fps);
    println!(
        "latency µs        p50 {:.1}  p99 {:.1}  max {:.1}",
        s.latency_us.p50, s.latency_us.p99, s.latency_us.max
    );
}

fn print_produce(r: &ProduceReport) {
    println!("{}", r.allocator_note);
    println!(
        "frames produced {}  dropped {}  in {:.2} s",
        r.frames_produced, r.frames_dropped, r.elapsed_s
    );
}

fn print_consume(r: &ConsumeReport) {
    println!(
        "sink {}: delivered {}  verified {}  dropped {}  bytes copied {}  latency p50 {:.1} µs p99 {:.1} µs",
        r.sink, r.frames_delivered, r.frames_verified, r.frames_dropped, r.bytes_copied, r.latency_us.p50, r.latency_us.p99
    );
    if let Some(e) = &r.error {
        println!("ended early: {e}");
    }
}

/// `frameshare bench` options.
#[derive(Args)]
struct BenchArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also measure Vulkan import vs a staging-copy upload (first size, XR24).
    #[arg(long)]
    vulkan: bool,
    /// Ping-pongs per measured cell (verify batches get a third of it, fps batches as many).
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// Frame sizes (XR24), comma-separated.
    #[arg(long, default_value = "640x480,1920x1080,3840x2160")]
    sizes: String,
    /// Allocators, comma-separated, or `auto`: every kind this machine offers.
    #[arg(long, default_value = "auto")]
    allocs: String,
    /// Rounds the measurements are interleaved in.
    #[arg(long, default_value_t = 15)]
    rounds: u32,
    /// Buffers per zero-copy pool.
    #[arg(long, default_value_t = 4)]
    buffers: usize,
    /// In latency batches, µs from a release to the next handoff (0: back to back).
    #[arg(long, default_value_t = 2000)]
    pace_us: u64,
    /// Generator pattern: box, bars, solid[:RRGGBB] (solid rewrites only the stamp rows).
    #[arg(long, default_value = "box")]
    pattern: String,
    /// Internal: be the benchmark's producer peer on this inherited control socket.
    #[arg(long, hide = true)]
    peer_fd: Option<i32>,
}

/// Runs `frameshare bench` (or its peer) and prints the table or JSON. Exits 1 if a frame
/// failed verification; the figures themselves are reported, never turned into a failure.
fn bench(args: &BenchArgs) -> Result<i32> {
    if let Some(fd) = args.peer_fd {
        crate::bench::peer(inherited_channel(fd)?.into())?;
        return Ok(0);
    }
    let mut opts = crate::bench::BenchOptions::new(
        std::env::current_exe().context("finding our own executable")?,
        vec!["bench".into(), "--peer-fd".into()],
    );
    opts.sizes = args
        .sizes
        .split(',')
        .map(|s| parse_size(s.trim()))
        .collect::<Result<_, _>>()?;
    opts.allocs = args
        .allocs
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    opts.frames = args.frames;
    opts.rounds = args.rounds;
    opts.buffers = args.buffers;
    opts.pace = Duration::from_micros(args.pace_us);
    opts.pattern = args.pattern.parse().map_err(anyhow::Error::msg)?;
    opts.progress = std::io::stderr().is_terminal();
    if args.vulkan {
        opts.vulkan = Some(crate::bench::vulkan_import_vs_staging);
    }
    let report = crate::bench::run(&opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    let bad = report
        .consumer_cpu
        .iter()
        .any(|c| c.frames_verified != c.verify_frames);
    if bad {
        eprintln!("frameshare: some frames failed verification during the benchmark");
    }
    Ok(if bad { 1 } else { 0 })
}
