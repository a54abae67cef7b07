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

mod args;
mod bench;
mod bench_export;
#[cfg(feature = "vulkan")]
mod bench_vulkan;
mod explain;
mod logging;
mod ls;
mod probe;
mod report;
mod stream;
mod top;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

/// Exit statuses, as `--help` and the README state them.
const EXIT_STATUS: &str = "\
Exit status: 0 success (explain: the buffer would work); 1 a runtime failure, a frame that \
failed verification, or explain's verdict \"no\"; 2 a usage error (a bad option or value, found \
before anything is opened, forked or connected).

Logging: -v info, -vv debug, -vvv trace, -q errors only; RUST_LOG (e.g. \
RUST_LOG=frameshare::bus=debug) overrides both.";

/// `frameshare --version`: the version, the commit, and what this build can do.
fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let features: [(&str, bool); 5] = [
            ("vulkan", cfg!(feature = "vulkan")),
            ("kms", cfg!(feature = "kms")),
            ("png", cfg!(feature = "png")),
            ("gbm", cfg!(feature = "gbm")),
            ("v4l2", cfg!(feature = "v4l2")),
        ];
        let on: Vec<&str> = features.iter().filter(|f| f.1).map(|f| f.0).collect();
        let off: Vec<&str> = features.iter().filter(|f| !f.1).map(|f| f.0).collect();
        format!(
            "{} (commit {})\nfeatures: {}{}\nprotocol: frameshare wire version {}",
            env!("CARGO_PKG_VERSION"),
            env!("FRAMESHARE_GIT_COMMIT"),
            if on.is_empty() {
                "none".into()
            } else {
                on.join(" ")
            },
            if off.is_empty() {
                String::new()
            } else {
                format!(" (without: {})", off.join(" "))
            },
            frameshare::bus::wire::VERSION,
        )
    })
}

#[derive(Parser)]
#[command(
    name = "frameshare",
    version = long_version(),
    about = "Zero-copy video frame sharing between Linux processes",
    after_help = EXIT_STATUS,
)]
struct Cli {
    /// Log more: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Errors only: no progress, no status lines, no warnings (the report is still printed).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
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
    /// Live streams (producer, format, rate, consumers), the shared frame buffers every
    /// frameshare process holds (dma-buf inode and exporter, totals), and orphans: SysV
    /// segments nobody attaches and /dev/shm files nobody holds (an `ipcs` for frames).
    Ls {
        /// Every process's shared buffers, not only those of processes using frameshare.
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
    /// Benchmark the zero-copy handoff per allocator and size against a bare socket
    /// ping-pong; also consumer CPU, fps, and copying baselines, measured side by side.
    Bench(bench_args::BenchArgs),
    /// Producer and consumer as two processes over a socketpair; prints a summary.
    Run {
        #[command(flatten)]
        produce: stream::ProduceArgs,
        /// Sink: verify, null, png:DIR, vulkan[:image|buffer|staging][:png:DIR],
        /// kms[:vkms|:/dev/dri/cardN][:connector=NAME][:verify-writeback][:convert|:direct].
        #[arg(long, default_value = "verify", value_parser = args::sink())]
        sink: args::SinkArg,
        /// The consumer's policy.
        #[arg(long, default_value = "wait", value_parser = args::policy())]
        policy: frameshare::bus::Policy,
        /// Print the report as JSON.
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
    /// A consumer of a stream, by name, socket path or inherited socket, feeding a sink.
    Consume {
        #[command(flatten)]
        target: stream::SubscribeTarget,
        #[command(flatten)]
        consume: stream::ConsumeArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Would such a buffer import into this machine's Vulkan device, and could its display scan
    /// it out, without a copy? If not, why. Exit 0 yes, 1 no, 2 bad input.
    Explain(explain::ExplainArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or write one page per command into a directory.
    Manpage {
        /// Write frameshare.1 and frameshare-COMMAND.1 here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

mod bench_args {
    use clap::Args;

    /// `bench --vulkan-path`.
    #[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
    pub enum VulkanPath {
        /// The best path the device offers.
        Auto,
        /// A VkImage with the buffer's modifier.
        Image,
        /// A VkBuffer over the dma-buf.
        Buffer,
    }

    use crate::args::Sizes;

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
        #[arg(long, default_value = "XR24", value_parser = crate::args::format())]
        pub format: crate::args::SupportedFourcc,
        /// Import path of the --vulkan-only measurement (image, buffer: dma-bufs).
        #[arg(long, value_enum, default_value = "auto")]
        pub vulkan_path: VulkanPath,
        /// Ping-pongs per measured cell (verify batches get a third of it, fps batches as many).
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
        pub frames: u64,
        /// Frame sizes (XR24), comma-separated.
        #[arg(long, default_value = "640x480,1920x1080,3840x2160")]
        pub sizes: Sizes,
        /// Allocators, comma-separated, or `auto`: every kind this machine offers.
        #[arg(long, default_value = "auto")]
        pub allocs: String,
        /// Rounds the measurements are interleaved in.
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
        pub rounds: u32,
        /// Buffers per zero-copy pool.
        #[arg(long, default_value_t = 4)]
        pub buffers: usize,
        /// In latency batches, µs from a release to the next handoff (0: back to back).
        #[arg(long, default_value_t = 2000)]
        pub pace_us: u64,
        /// Generator pattern.
        #[arg(long, default_value = "box", value_parser = crate::args::pattern())]
        pub pattern: frameshare::source::Pattern,
        /// Consumer counts of the fan-out section, comma-separated (`none`: no fan-out).
        #[arg(long, default_value = "1,2,4,8")]
        pub fan_out: String,
        /// Also measure GStreamer's shmsink → shmsrc pair (needs gst-launch-1.0).
        #[arg(long)]
        pub gstreamer: bool,
        /// `--export`, `--plot`, `--baseline`.
        #[command(flatten)]
        pub export: crate::bench_export::ExportArgs,
        /// Internal: be the benchmark's producer peer on this inherited control socket.
        #[arg(long, hide = true)]
        pub peer_fd: Option<i32>,
    }
}

/// A usage error found after parsing (values that are fine alone but not together, such as
/// an odd width for NV12): exit status 2, like clap's own.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Turns a pure check's failure into a [`UsageError`].
pub fn usage<E: std::fmt::Display>(e: E) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

/// Which process speaks, for error lines: `run`'s consumer child says so.
static SIDE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

fn main() {
    let cli = Cli::parse();
    let verbosity = logging::Verbosity {
        verbose: cli.verbose,
        quiet: cli.quiet,
    };
    // `run`'s consumer child (on an inherited socket) logs as loudly as `run` itself.
    let inherited = matches!(&cli.cmd, Cmd::Consume { target, .. } if target.is_inherited());
    if inherited {
        let _ = SIDE.set("consumer");
    }
    let stream_news = matches!(cli.cmd, Cmd::Produce { .. } | Cmd::Consume { .. }) && !inherited;
    logging::init(verbosity, stream_news);
    match real_main(cli, verbosity) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            if let Some(u) = e.downcast_ref::<UsageError>() {
                Cli::command()
                    .error(clap::error::ErrorKind::ValueValidation, &u.0)
                    .exit();
            }
            let msg = chain(&e);
            match SIDE.get() {
                Some(side) if !msg.starts_with(side) => {
                    eprintln!("frameshare: error: {side}: {msg}")
                }
                _ => eprintln!("frameshare: error: {msg}"),
            }
            std::process::exit(1);
        }
    }
}

/// An error and its causes, each said once.
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

fn real_main(cli: Cli, verbosity: logging::Verbosity) -> Result<i32> {
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
        Cmd::Bench(args) => bench_cmd(&args, verbosity),
        Cmd::Run {
            produce,
            sink,
            policy,
            json,
        } => stream::run(&produce, &sink, policy, json, verbosity),
        Cmd::Produce {
            target,
            produce,
            access,
            json,
        } => stream::produce(&target, &produce, &access, json, verbosity),
        Cmd::Consume {
            target,
            consume,
            json,
        } => stream::consume(&target, &consume, json),
        Cmd::Explain(args) => explain::explain(&args),
        Cmd::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "frameshare", &mut out);
            out!("{}", String::from_utf8_lossy(&out));
            Ok(0)
        }
        Cmd::Manpage { dir } => {
            let cmd = man_command();
            match dir {
                Some(dir) => {
                    clap_mangen::generate_to(cmd, &dir).map_err(|e| {
                        anyhow::anyhow!("writing man pages into {}: {e}", dir.display())
                    })?;
                }
                None => {
                    let mut out = Vec::new();
                    clap_mangen::Man::new(cmd).render(&mut out)?;
                    out!("{}", String::from_utf8_lossy(&out));
                }
            }
            Ok(0)
        }
    }
}

/// The command as the man pages describe it: the plain version (no commit, so that the
/// committed pages change only when the interface does).
pub fn man_command() -> clap::Command {
    Cli::command().version(env!("CARGO_PKG_VERSION"))
}

/// Runs `frameshare bench` (or its peer) and prints the table or JSON. Exits 1 if a frame
/// failed verification; the figures themselves are reported, never turned into a failure.
fn bench_cmd(args: &bench_args::BenchArgs, verbosity: logging::Verbosity) -> Result<i32> {
    if let Some(fd) = args.peer_fd {
        bench::peer(stream::inherited_channel(fd)?.into())?;
        return Ok(0);
    }
    let mut opts = bench::BenchOptions::new(
        std::env::current_exe()?,
        vec!["bench".into(), "--peer-fd".into()],
    );
    opts.sizes = args.sizes.0.clone();
    opts.allocs = args
        .allocs
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    opts.frames = args.frames;
    opts.rounds = args.rounds;
    opts.buffers = args.buffers;
    opts.pace = Duration::from_micros(args.pace_us);
    opts.pattern = args.pattern;
    opts.fan_out = match args.fan_out.trim() {
        "none" | "" => Vec::new(),
        list => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .map_err(|e| usage(format!("--fan-out {n:?}: {e}")))
            })
            .collect::<Result<_>>()?,
    };
    opts.gstreamer = args.gstreamer;
    opts.progress = !verbosity.quiet && std::io::stderr().is_terminal();
    opts.vulkan = args.vulkan;
    #[cfg(not(feature = "vulkan"))]
    if args.vulkan || args.vulkan_only {
        return Err(usage("--vulkan needs a build with the vulkan feature"));
    }
    #[cfg(feature = "vulkan")]
    if args.vulkan_only {
        return bench_vulkan_only(args, &opts);
    }
    // An unreadable baseline is found before minutes of measuring, not after.
    let baseline = args.export.load_baseline().map_err(usage)?;
    let report = bench::run(&opts).map_err(|e| match e {
        bench::BenchError::Usage(why) => usage(why),
        e => e.into(),
    })?;
    let value = serde_json::to_value(&report)?;
    out!(
        "{}",
        args.export.render(
            value.clone(),
            &report.to_string(),
            args.json,
            baseline.as_ref()
        )?
    );
    let title = format!(
        "frameshare bench: handoff latency ({} frames, paced {} µs)",
        report.frames, report.pace_us
    );
    if let Some(path) = args.export.write_plot(&value, &title)? {
        if !verbosity.quiet {
            eprintln!("frameshare: wrote the latency plot to {}", path.display());
        }
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
    let mode = match args.vulkan_path {
        bench_args::VulkanPath::Auto => ImportMode::Auto,
        bench_args::VulkanPath::Image => ImportMode::Image,
        bench_args::VulkanPath::Buffer => ImportMode::Buffer,
    };
    let size = *opts.sizes.first().context("no --sizes")?;
    let alloc = match opts.allocs.first().map(String::as_str) {
        None | Some("auto") => frameshare::alloc::open("auto")?.0.kind().name().to_owned(),
        Some(name) => name.to_owned(),
    };
    let fourcc = args.format.0;
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
