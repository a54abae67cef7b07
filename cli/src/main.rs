//! The `frameshare` command line: probe, run (a producer and a consumer process over a
//! socketpair), produce and consume (named streams, any number of consumers), ls and top
//! (streams and shared buffers in use), bench, explain.

/// `print!` that ends the process quietly when stdout is a closed pipe (`frameshare ls | head
/// -1`), as Unix filters do, instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        if let Err(e) = write!(o, $($t)*).and_then(|()| o.flush()) {
            $crate::stdout_failed(e);
        }
    }};
}

/// `println!`, likewise.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        if let Err(e) = writeln!(o, $($t)*).and_then(|()| o.flush()) {
            $crate::stdout_failed(e);
        }
    }};
}

/// Stdout is gone: a closed pipe ends us quietly (exit 0); anything else is an error.
pub(crate) fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("frameshare: error: writing to stdout: {e}");
    std::process::exit(1);
}

mod bench;
#[cfg(feature = "vulkan")]
mod bench_vulkan;
mod ls;
mod probe;
mod stream;
mod top;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use frameshare::bus::Policy;
use frameshare::format::parse_size;

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
    /// Live streams (producer, format, rate, consumers) and the shared frame buffers in use
    /// on this machine, per process (an `ipcs` for frames).
    Ls {
        /// Every process's shared buffers, not only frameshare's.
        #[arg(long, short)]
        all: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Live streams and their consumers, refreshed (like `pw-top`); Ctrl-C ends it.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Refreshes before exiting (default: until stopped).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Benchmark: zero-copy handoff per allocator and size against a bare socket ping-pong,
    /// consumer CPU, fps, and copying baselines (pipe, shared ring), measured side by side.
    Bench(bench_args::BenchArgs),
    /// Producer and consumer as two processes over a socketpair; prints a summary.
    Run {
        #[command(flatten)]
        produce: stream::ProduceArgs,
        /// Sink: verify, null, png:DIR, vulkan[:…], kms[:…].
        #[arg(long, default_value = "verify")]
        sink: String,
        /// The consumer's policy: wait (every frame), drop (skip while busy), latest (newest).
        #[arg(long, default_value = "wait")]
        policy: Policy,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The producer of a stream: publishes it under a name (or at a socket path) for any number
    /// of consumers; `--frames 0` runs until Ctrl-C.
    Produce {
        #[command(flatten)]
        target: stream::PublishTarget,
        #[command(flatten)]
        produce: stream::ProduceArgs,
        #[command(flatten)]
        access: stream::AccessArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A consumer of a stream, by name (or socket path), feeding a sink.
    Consume {
        #[command(flatten)]
        target: stream::SubscribeTarget,
        #[command(flatten)]
        consume: stream::ConsumeArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Would a buffer import into this machine's Vulkan device without a copy? If not, why.
    #[cfg(feature = "vulkan")]
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

mod bench_args {
    use clap::Args;

    /// `frameshare bench` options.
    #[derive(Args)]
    pub struct BenchArgs {
        /// Print the report as JSON.
        #[arg(long)]
        pub json: bool,
        /// Also measure Vulkan import vs a staging-copy upload (first size, XR24).
        #[arg(long)]
        pub vulkan: bool,
        /// Measure only Vulkan import vs staging: the first of --allocs (`auto`: the best
        /// here) and of --sizes, in --format, through --vulkan-path, for --frames frames.
        #[arg(long)]
        pub vulkan_only: bool,
        /// Pixel format of the --vulkan-only measurement.
        #[arg(long, default_value = "XR24")]
        pub format: String,
        /// Import path of the --vulkan-only measurement: auto, image or buffer (dma-bufs).
        #[arg(long, default_value = "auto")]
        pub vulkan_path: String,
        /// Ping-pongs per measured cell (verify batches get a third of it, fps batches as many).
        #[arg(long, default_value_t = 300)]
        pub frames: u64,
        /// Frame sizes (XR24), comma-separated.
        #[arg(long, default_value = "640x480,1920x1080,3840x2160")]
        pub sizes: String,
        /// Allocators, comma-separated, or `auto`: every kind this machine offers.
        #[arg(long, default_value = "auto")]
        pub allocs: String,
        /// Rounds the measurements are interleaved in.
        #[arg(long, default_value_t = 15)]
        pub rounds: u32,
        /// Buffers per zero-copy pool.
        #[arg(long, default_value_t = 4)]
        pub buffers: usize,
        /// In latency batches, µs from a release to the next handoff (0: back to back).
        #[arg(long, default_value_t = 2000)]
        pub pace_us: u64,
        /// Generator pattern: box, bars, solid[:RRGGBB] (solid rewrites only the stamp rows).
        #[arg(long, default_value = "box")]
        pub pattern: String,
        /// Internal: be the benchmark's producer peer on this inherited control socket.
        #[arg(long, hide = true)]
        pub peer_fd: Option<i32>,
    }
}

fn main() {
    let cli = Cli::parse();
    init_log(cli.verbose);
    match real_main(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("frameshare: error: {}", chain(&e));
            std::process::exit(1);
        }
    }
}

/// An error and its causes, each said once (thiserror messages that already include their
/// source are not repeated).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let s = c.to_string();
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
    }
    out
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
            let p = probe::probe();
            if json {
                outln!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                out!("{p}");
            }
            Ok(0)
        }
        Cmd::Ls { all, json } => top::ls(all, json),
        Cmd::Top { interval, count } => top::top(Duration::from_secs_f64(interval.max(0.1)), count),
        Cmd::Bench(args) => bench_cmd(&args),
        Cmd::Run {
            produce,
            sink,
            policy,
            json,
        } => stream::run(&produce, &sink, policy, json, cli.verbose),
        Cmd::Produce {
            target,
            produce,
            access,
            json,
        } => stream::produce(&target, &produce, &access, json),
        Cmd::Consume {
            target,
            consume,
            json,
        } => stream::consume(&target, &consume, json),
        #[cfg(feature = "vulkan")]
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
#[cfg(feature = "vulkan")]
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
        outln!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        out!("{verdict}");
    }
    Ok(if verdict.works { 0 } else { 1 })
}

/// Runs `frameshare bench` (or its peer) and prints the table or JSON. Exits 1 if a frame
/// failed verification; the figures themselves are reported, never turned into a failure.
fn bench_cmd(args: &bench_args::BenchArgs) -> Result<i32> {
    if let Some(fd) = args.peer_fd {
        bench::peer(stream::inherited_channel(fd)?.into())?;
        return Ok(0);
    }
    let mut opts = bench::BenchOptions::new(
        std::env::current_exe()?,
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
    opts.vulkan = args.vulkan;
    #[cfg(not(feature = "vulkan"))]
    if args.vulkan || args.vulkan_only {
        anyhow::bail!("--vulkan needs a build with the vulkan feature");
    }
    #[cfg(feature = "vulkan")]
    if args.vulkan_only {
        return bench_vulkan_only(args, &opts);
    }
    let report = bench::run(&opts)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{report}");
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

/// `frameshare bench --vulkan-only`: the import-vs-staging measurement alone. Exits 1 if a
/// frame failed verification.
#[cfg(feature = "vulkan")]
fn bench_vulkan_only(args: &bench_args::BenchArgs, opts: &bench::BenchOptions) -> Result<i32> {
    use anyhow::Context;
    use frameshare::gpu::vulkan::ImportMode;
    let mode = match args.vulkan_path.as_str() {
        "auto" => ImportMode::Auto,
        "image" => ImportMode::Image,
        "buffer" => ImportMode::Buffer,
        other => anyhow::bail!("unknown --vulkan-path {other:?} (want auto, image or buffer)"),
    };
    let size = *opts.sizes.first().context("no --sizes")?;
    let alloc = match opts.allocs.first().map(String::as_str) {
        None | Some("auto") => frameshare::alloc::open("auto")?.0.kind().name().to_owned(),
        Some(name) => name.to_owned(),
    };
    let fourcc: frameshare::format::Fourcc = args.format.parse()?;
    let r = bench_vulkan::import_vs_staging(&alloc, fourcc, size, opts.frames, mode)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        out!("{r}");
    }
    let all = opts.frames + bench_vulkan::WARMUP;
    let bad = r.import_verified != all || r.staging_verified != all;
    if bad {
        eprintln!("frameshare: some frames failed verification during the benchmark");
    }
    Ok(if bad { 1 } else { 0 })
}
