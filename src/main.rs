//! The `frameshare` command line: probe, run (two processes over a socketpair), produce and
//! consume (across unrelated processes over a named socket), bench, explain.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

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
}

#[derive(Args, Clone)]
struct ProduceArgs {
    /// Frame source: `generator` or `generator:PATTERN` (bars, box, solid[:RRGGBB]).
    #[arg(long, default_value = "generator")]
    source: String,
    /// Pattern for the generator (overridden by `--source generator:PATTERN`).
    #[arg(long, default_value = "box")]
    pattern: String,
    /// Buffer kind: auto, dma-heap[:NAME], udmabuf, gbm, memfd, posix-shm, sysv-shm.
    #[arg(long, default_value = "auto")]
    alloc: String,
    /// Pixel format (DRM fourcc).
    #[arg(long, default_value = "XR24")]
    format: String,
    /// Frame size WIDTHxHEIGHT.
    #[arg(long, default_value = "1920x1080")]
    size: String,
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
}

impl ProduceArgs {
    fn options(&self, progress: bool) -> Result<ProduceOptions> {
        let pattern = match self.source.split_once(':') {
            Some(("generator", p)) => p.to_owned(),
            None if self.source == "generator" => self.pattern.clone(),
            _ => bail!(
                "unknown source {:?} (this build has: generator[:PATTERN])",
                self.source
            ),
        };
        let pattern: Pattern = pattern.parse().map_err(anyhow::Error::msg)?;
        let fourcc: Fourcc = self.format.parse()?;
        let (w, h) = parse_size(&self.size)?;
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
            let p = frameshare::probe::probe();
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                print!("{p}");
            }
            Ok(0)
        }
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
            let listener = Listener::bind(&socket)
                .with_context(|| format!("listening on {}", socket.display()))?;
            eprintln!("frameshare: waiting for a consumer on {}", socket.display());
            let chan = listener.accept(None)?;
            drop(listener); // one consumer; the path goes away now
            let report = pipeline::produce(chan, &opts)?;
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
    }
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
    // The fd number comes from our own parent (`run`); check it is a SEQPACKET socket before
    // taking ownership of it.
    let st = rustix::fs::fstat(unsafe_free_borrow(fd)?).context("--fd is not an open fd")?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Socket {
        bail!("--fd {fd} is not a socket");
    }
    #[allow(unsafe_code)]
    // SAFETY: `run` passed this fd to us and nothing else in this process owns it; it was just
    // checked to be an open socket.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)?;
    Ok(Channel::from_fd(owned))
}

fn unsafe_free_borrow(fd: i32) -> Result<std::os::fd::BorrowedFd<'static>> {
    if fd < 0 {
        bail!("bad fd {fd}");
    }
    #[allow(unsafe_code)]
    // SAFETY: fstat only reads; an fd number that is not open yields EBADF, not UB, for syscalls.
    Ok(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
}

/// Two processes: this one produces; a child `frameshare consume --fd N` consumes and reports
/// back as JSON on its stdout.
fn run(args: &ProduceArgs, sink: &str, json: bool) -> Result<i32> {
    let opts = args.options(!json && std::io::stderr().is_terminal())?;
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
    let produced = pipeline::produce(ours, &opts);
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
    if sink == "verify" && summary.frames_verified != summary.frames_delivered {
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
