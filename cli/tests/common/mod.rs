//! Helpers shared by the integration tests: where the binary is, whether we are inside the
//! project's VM, and the device gate (fail inside the VM, skip loudly on a host); a publisher
//! and a subscriber in one process; leak checks (fds, /dev/shm, SysV); the library's log
//! lines; a private runtime directory for named streams.
#![allow(dead_code)]

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use frameshare::bus::{Channel, Publisher, PublisherOptions, Subscriber, SubscriberOptions};
use frameshare::format::FrameLayout;
use frameshare::pipeline::{
    self, ConsumeOptions, ConsumeReport, PipelineError, ProduceOptions, ProduceReport,
};
use frameshare::sink::Sink;
use frameshare::source::{GeneratorSource, Pattern, Source};

/// The built `frameshare` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_frameshare")
}

/// Whether this process runs inside `ci/vm-run` (its guest init sets FRAMESHARE_IN_VM=1).
pub fn in_vm() -> bool {
    std::env::var_os("FRAMESHARE_IN_VM").is_some_and(|v| v == "1")
}

/// Device gate: true if `path` exists. Inside the VM a missing device is a failure (panic);
/// on a host the test prints "skipped: needs the VM (no PATH)" and should return.
pub fn need(path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if in_vm() {
        panic!("{path} is missing inside the VM: the VM kernel or rig is broken");
    }
    eprintln!("skipped: needs the VM (no {path})");
    false
}

/// Runs `frameshare ARGS`, returning its output.
pub fn frameshare(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("running frameshare")
}

/// Runs `frameshare run ... --json` and parses the summary, asserting exit status 0.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    json_of(&["run"], args)
}

/// Runs `frameshare bench --vulkan-only ... --json` (Vulkan import vs staging) and parses the
/// result, asserting exit status 0 (every frame verified on both paths).
pub fn vulkan_bench_json(args: &[&str]) -> serde_json::Value {
    json_of(&["bench", "--vulkan-only"], args)
}

/// Runs `frameshare FIRST... ARGS... --json` and parses its output, asserting exit status 0.
fn json_of(first: &[&str], args: &[&str]) -> serde_json::Value {
    let mut all = first.to_vec();
    all.extend_from_slice(args);
    all.push("--json");
    let out = frameshare(&all);
    assert!(
        out.status.success(),
        "frameshare {all:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON from {all:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `frameshare ARGS`, asserting that it fails, and returns its stderr.
pub fn run_fails(args: &[&str]) -> String {
    let out = frameshare(args);
    assert!(
        !out.status.success(),
        "frameshare {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Open fds of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

// ---- the frame bus, in one process ----

/// Publisher options of the generator's moving box (what verifying sinks recompute).
pub fn generator_options() -> PublisherOptions {
    PublisherOptions {
        name: "generator".into(),
        pattern: Some(pipeline::pattern_name(Pattern::MovingBox)),
        ..PublisherOptions::default()
    }
}

/// A moving-box generator of `buffers` buffers of `layout` from allocator `alloc`.
pub fn generator(alloc: &str, layout: &FrameLayout, buffers: usize) -> GeneratorSource {
    let (a, note) =
        frameshare::alloc::open(alloc).unwrap_or_else(|e| panic!("allocator {alloc}: {e}"));
    GeneratorSource::new(a, note, layout.clone(), buffers, Pattern::MovingBox)
}

/// Subscriber options saying what `sink` takes (as `frameshare consume` builds them).
pub fn subscriber_options(sink: &dyn Sink) -> SubscriberOptions {
    let caps = sink.caps();
    SubscriberOptions {
        name: sink.name(),
        fences: caps.fences,
        kinds: caps.kinds,
        formats: caps.formats,
        ..SubscriberOptions::default()
    }
}

/// `frames` frames of `source` published (in a thread, through `pipeline::produce`) to one
/// consumer that feeds `sink` here (through `pipeline::consume`), over a socketpair.
pub fn in_process<S: Source + Send + 'static>(
    opts: PublisherOptions,
    mut source: S,
    frames: u64,
    sink: &mut dyn Sink,
) -> (
    Result<ProduceReport, PipelineError>,
    Result<ConsumeReport, PipelineError>,
) {
    let (ours, theirs) = Channel::pair().unwrap();
    let producer = std::thread::spawn(move || {
        let mut publisher = Publisher::new(opts)?;
        publisher.add_connection(ours, true)?;
        let popts = ProduceOptions {
            frames: Some(frames),
            wait_for: 1,
            ..ProduceOptions::default()
        };
        pipeline::produce(publisher, &mut source, &popts)
    });
    let consumed = Subscriber::from_channel(theirs, subscriber_options(sink))
        .map_err(PipelineError::from)
        .and_then(|mut sub| pipeline::consume(&mut sub, sink, &ConsumeOptions::default()));
    (producer.join().unwrap(), consumed)
}

/// A consumer thread: subscribes over `chan` and feeds a verify sink until the stream ends.
pub fn verify_consumer(chan: Channel) -> JoinHandle<ConsumeReport> {
    std::thread::spawn(move || {
        let mut sink = frameshare::sink::verify::VerifySink::new();
        let mut sub = Subscriber::from_channel(chan, subscriber_options(&sink)).unwrap();
        pipeline::consume(&mut sub, &mut sink, &ConsumeOptions::default()).unwrap()
    })
}

// ---- leaks ----

/// POSIX shm names our allocator made in processes `pids` (`/dev/shm/frameshare-PID-…`).
pub fn shm_entries(pids: &[u32]) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    pids.iter()
                        .any(|p| n.starts_with(&format!("frameshare-{p}-")))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// SysV segments created by processes `pids` (`ipcs -m`, from /proc/sysvipc/shm: key shmid
/// perms size cpid …), including ones marked for removal but still attached.
pub fn sysv_segments(pids: &[u32]) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(4)
                .and_then(|c| c.parse::<u32>().ok())
                .is_some_and(|cpid| pids.contains(&cpid))
        })
        .map(str::to_owned)
        .collect()
}

/// No /dev/shm name and no SysV segment of processes `pids` is left.
pub fn assert_nothing_left(pids: &[u32], what: &str) {
    assert_eq!(shm_entries(pids), Vec::<String>::new(), "{what}: /dev/shm");
    assert_eq!(
        sysv_segments(pids),
        Vec::<String>::new(),
        "{what}: SysV shm"
    );
}

/// Open fds of process `pid`.
pub fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
}

/// Mappings of shared frame memory in process `pid` (memfd, /dev/shm, SysV).
pub fn shm_maps_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/maps: {e}"))
        .lines()
        .filter(|l| l.contains("/memfd:") || l.contains("/dev/shm/") || l.contains("SYSV"))
        .count()
}

/// Waits for `cond`, failing with `what` if it does not hold within `limit` (a deadline for a
/// broken run, not a margin: every wait is for something that must happen).
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- log capture ----

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!("{}: {}", r.level().as_str().to_lowercase(), r.args());
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    }
    fn flush(&self) {}
}

static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();

/// The library's log lines (info and up) so far that contain every one of `needles` (the
/// capture starts at the first call; tests run in parallel, so match on something unique).
pub fn logged(needles: &[&str]) -> Vec<String> {
    let c = CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).expect("no other logger in the tests");
        log::set_max_level(log::LevelFilter::Info);
        c
    });
    c.0.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .cloned()
        .collect()
}

/// Starts the log capture (call before the code whose lines a test reads).
pub fn capture_logs() {
    logged(&[]);
}

// ---- named streams ----

/// A private `FRAMESHARE_RUNTIME_DIR` for one test (tests run in parallel), removed on drop.
pub struct RuntimeDir(pub PathBuf);

impl RuntimeDir {
    /// A fresh directory, mode 0700, under the temp dir.
    pub fn new(tag: &str) -> RuntimeDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "frameshare-rt-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        RuntimeDir(p)
    }

    /// `frameshare ARGS` with this runtime directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args).env("FRAMESHARE_RUNTIME_DIR", &self.0);
        c
    }

    /// What is in the directory, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `fd` is readable within `timeout` (a raw test peer waiting for a message).
pub fn readable(fd: impl AsFd, timeout: Duration) -> bool {
    let mut p = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    rustix::event::poll(&mut p, Some(&ts)).unwrap() > 0
}
