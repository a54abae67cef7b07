//! Robustness: `kill -9` of either side mid-run leaves no /dev/shm entry, no SysV segment and no
//! stray fd in the survivor; the fd count stays flat over 10 000 frames; a peer that sends
//! malformed messages or the wrong fds gets a clear error and the other side survives, its fds
//! intact. The shared-memory kinds run everywhere; dma-heap and udmabuf join inside the VM
//! (`ci/vm-run`), where a missing device fails the test.
//!
//! One side runs in this process through the library (`pipeline::produce`/`consume` over
//! `ipc::socket`), the other as a `frameshare produce/consume --socket` child. Tests take a
//! process-wide lock: they count this process's fds.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{bin, fd_count, need};
use frameshare::alloc::{self, Allocator};
use frameshare::buffer::{Buffer, BufferKind};
use frameshare::bus::all_kinds;
use frameshare::bus::producer::{Producer, ProducerOptions};
use frameshare::bus::socket::{Channel, Listener};
use frameshare::bus::wire::{self, Message, Role};
use frameshare::format::{Fourcc, FrameLayout};
use frameshare::pipeline::{self, ConsumeReport, ProduceOptions};
use frameshare::sink::verify::VerifySink;
use frameshare::sink::{FrameIn, FrameOut, Sink, SinkCaps, SinkError, StreamInfo};
use frameshare::source::{Generator, Pattern};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The kinds to test here: shared memory everywhere, dma-bufs in the VM.
fn kinds() -> Vec<&'static str> {
    let mut v = vec!["memfd", "posix-shm", "sysv-shm"];
    if need("/dev/dma_heap/system") {
        v.push("dma-heap");
    }
    if need("/dev/udmabuf") {
        v.push("udmabuf");
    }
    v
}

fn layout() -> FrameLayout {
    FrameLayout::linear(Fourcc::XR24, 64, 64, 64).unwrap()
}

/// A private directory for sockets, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "frameshare-robust-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// POSIX shm names our allocator made in processes `pids` (`/dev/shm/frameshare-PID-…`).
fn shm_entries(pids: &[u32]) -> Vec<String> {
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

/// SysV segments created by processes `pids` (/proc/sysvipc/shm: key shmid perms size cpid …),
/// including ones marked for removal but still attached.
fn sysv_segments(pids: &[u32]) -> Vec<String> {
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

fn assert_nothing_left(pids: &[u32], what: &str) {
    assert_eq!(shm_entries(pids), Vec::<String>::new(), "{what}: /dev/shm");
    assert_eq!(
        sysv_segments(pids),
        Vec::<String>::new(),
        "{what}: SysV shm"
    );
}

fn connect_retrying(path: &Path) -> Channel {
    let start = Instant::now();
    loop {
        match Channel::connect(path) {
            Ok(c) => return c,
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no producer at {}: {e}", path.display()),
        }
    }
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn kill9(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
}

/// Verify sink that counts frames and samples this process's fd count at two frames.
struct Counting {
    inner: VerifySink,
    frames: Arc<AtomicU64>,
    sample_at: [u64; 2],
    samples: Vec<usize>,
}

impl Counting {
    fn new(frames: Arc<AtomicU64>) -> Counting {
        Counting {
            inner: VerifySink::new(),
            frames,
            sample_at: [u64::MAX; 2],
            samples: Vec::new(),
        }
    }
}

impl Sink for Counting {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn caps(&self) -> SinkCaps {
        self.inner.caps()
    }
    fn start(&mut self, stream: &StreamInfo) -> Result<(), SinkError> {
        self.inner.start(stream)
    }
    fn add_buffer(&mut self, id: u32, buffer: &Buffer) -> Result<(), SinkError> {
        self.inner.add_buffer(id, buffer)
    }
    fn remove_buffer(&mut self, id: u32) {
        self.inner.remove_buffer(id)
    }
    fn frame(&mut self, frame: FrameIn<'_>) -> Result<FrameOut, SinkError> {
        let out = self.inner.frame(frame)?;
        let n = self.frames.fetch_add(1, Ordering::AcqRel) + 1;
        if self.sample_at.contains(&n) {
            self.samples.push(fd_count());
        }
        Ok(out)
    }
}

#[test]
fn kill_9_of_the_producer_leaves_nothing_behind() {
    let _g = serial();
    for kind in kinds() {
        let dir = TempDir::new("kp");
        let sock = dir.0.join("s");
        let fds = fd_count();
        let mut child = Command::new(bin())
            .args(["produce", "--socket"])
            .arg(&sock)
            .args([
                "--alloc",
                kind,
                "--size",
                "320x240",
                "--frames",
                "100000000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let chan = connect_retrying(&sock);
        let frames = Arc::new(AtomicU64::new(0));
        let consumer = {
            let frames = frames.clone();
            thread::spawn(move || {
                let mut sink = Counting::new(frames);
                let r = pipeline::consume(chan, &mut sink);
                (r, sink.inner.mismatches())
            })
        };
        wait_until("frames from the producer", || {
            frames.load(Ordering::Acquire) >= 30
        });
        kill9(&mut child);
        let (report, mismatches) = consumer.join().unwrap();
        let report: ConsumeReport = report.unwrap();
        let err = report.error.clone().unwrap_or_default();
        assert!(err.contains("peer closed"), "{kind}: {err:?}");
        assert!(report.frames_delivered >= 30, "{kind}: {report:?}");
        assert_eq!(mismatches, 0, "{kind}: {report:?}");
        assert_eq!(fd_count(), fds, "{kind}: stray fds in the consumer");
        assert_nothing_left(&[child.id(), std::process::id()], kind);
        eprintln!(
            "{kind}: producer killed after {} frames; consumer clean",
            report.frames_delivered
        );
    }
}

static PRODUCED: AtomicU64 = AtomicU64::new(0);

fn count_produced(done: u64, _total: u64) {
    PRODUCED.store(done, Ordering::Release);
}

#[test]
fn kill_9_of_the_consumer_leaves_nothing_behind() {
    let _g = serial();
    for kind in kinds() {
        let dir = TempDir::new("kc");
        let sock = dir.0.join("s");
        let fds = fd_count();
        let listener = Listener::bind(&sock).unwrap();
        let mut child = Command::new(bin())
            .args(["consume", "--sink", "verify", "--socket"])
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let chan = listener.accept(Some(Duration::from_secs(30))).unwrap();
        drop(listener);
        PRODUCED.store(0, Ordering::Release);
        let opts = ProduceOptions {
            alloc: kind.into(),
            layout: FrameLayout::linear(Fourcc::XR24, 320, 240, 64).unwrap(),
            buffers: 4,
            frames: 100_000_000,
            pattern: Pattern::MovingBox,
            fps: None,
            session: ProducerOptions::default(),
            progress: Some(count_produced),
        };
        let producer = thread::spawn(move || pipeline::produce(chan, &opts));
        wait_until("frames to the consumer", || {
            PRODUCED.load(Ordering::Acquire) >= 30
        });
        kill9(&mut child);
        let err = producer
            .join()
            .unwrap()
            .expect_err("the producer must notice the consumer's death");
        let msg = err.to_string();
        assert!(msg.contains("peer closed"), "{kind}: {msg}");
        assert_eq!(fd_count(), fds, "{kind}: stray fds in the producer");
        assert_nothing_left(&[child.id(), std::process::id()], kind);
        eprintln!(
            "{kind}: consumer killed after {} frames; producer clean ({msg})",
            PRODUCED.load(Ordering::Acquire)
        );
    }
}

#[test]
fn fd_count_is_flat_over_10000_frames() {
    let _g = serial();
    for kind in kinds() {
        let before = fd_count();
        let (p, c) = Channel::pair().unwrap();
        let opts = ProduceOptions {
            alloc: kind.into(),
            layout: layout(),
            buffers: 4,
            frames: 10_000,
            pattern: Pattern::MovingBox,
            fps: None,
            session: ProducerOptions::default(),
            progress: None,
        };
        let producer = thread::spawn(move || pipeline::produce(p, &opts));
        let frames = Arc::new(AtomicU64::new(0));
        let mut sink = Counting::new(frames);
        sink.sample_at = [100, 10_000];
        let report = pipeline::consume(c, &mut sink).unwrap();
        let produced = producer.join().unwrap().unwrap();
        assert_eq!(report.error, None, "{kind}");
        assert_eq!(produced.frames_produced, 10_000, "{kind}");
        assert_eq!(report.frames_verified, 10_000, "{kind}: {report:?}");
        assert_eq!(
            sink.samples[0], sink.samples[1],
            "{kind}: fds grew between frame 100 and frame 10000"
        );
        drop(sink);
        assert_eq!(fd_count(), before, "{kind}: fds left after the session");
    }
}

// ---- malicious peers ----

fn hello_producer() -> Message {
    Message::Hello {
        role: Role::Producer,
        features: wire::FEATURE_FENCES,
        kinds: all_kinds(),
        formats: Vec::new(),
        name: "generator:box".into(),
    }
}

/// Plays a producer by hand against an in-process consumer (`pipeline::consume`, verify sink):
/// says Hello, then `attack`; returns the consumer's report and the Bye it sent us.
fn against_consumer(attack: impl FnOnce(&mut Channel)) -> (ConsumeReport, Option<String>) {
    let (mut p, c) = Channel::pair().unwrap();
    let consumer = thread::spawn(move || {
        let mut sink = VerifySink::new();
        pipeline::consume(c, &mut sink)
    });
    p.send(&hello_producer(), &[]).unwrap();
    let (hello, _) = p.recv_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(
        hello,
        Message::Hello {
            role: Role::Consumer,
            ..
        }
    ));
    attack(&mut p);
    let mut bye = None;
    while let Ok((msg, _fds)) = p.recv_timeout(Some(Duration::from_secs(10))) {
        if let Message::Bye { code, reason } = msg {
            assert_eq!(code, wire::BYE_PROTOCOL_ERROR, "{reason}");
            bye = Some(reason);
            break;
        }
    }
    let report = consumer
        .join()
        .unwrap()
        .expect("the consumer returns a report");
    (report, bye)
}

fn add_buffer(kind: BufferKind, layout: FrameLayout) -> Message {
    Message::AddBuffer {
        id: 0,
        kind,
        layout,
        sysv_id: -1,
    }
}

fn memfd(size: u64, seal: bool) -> OwnedFd {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd =
        rustix::fs::memfd_create("evil", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, size).unwrap();
    if seal {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .unwrap();
    }
    fd
}

/// Runs one malicious-producer case; the consumer must end with an error naming the problem,
/// deliver nothing, and keep no fd we sent. Messages that decode but are wrong are answered
/// with a Bye naming the problem; undecodable ones (`bye: false`) just end the session.
fn consumer_rejects(case: &str, needle: &str, bye: bool, attack: impl FnOnce(&mut Channel)) {
    let fds = fd_count();
    let (report, got_bye) = against_consumer(attack);
    let err = report.error.clone().unwrap_or_default();
    assert!(err.contains(needle), "{case}: consumer error {err:?}");
    if bye {
        let got = got_bye.unwrap_or_else(|| panic!("{case}: no Bye from the consumer"));
        assert!(got.contains(needle), "{case}: Bye {got:?}");
    }
    assert_eq!(report.frames_verified, 0, "{case}");
    assert_eq!(fd_count(), fds, "{case}: fds kept by the consumer");
    eprintln!("{case}: rejected: {err}");
}

#[test]
fn malicious_producer_is_rejected_and_the_consumer_survives() {
    let _g = serial();
    let l = layout();
    let need_bytes = l.size();
    consumer_rejects(
        "pipe fd in AddBuffer",
        "not a shared-memory file",
        true,
        |p| {
            let (r, _w) = rustix::pipe::pipe().unwrap();
            p.send(&add_buffer(BufferKind::Memfd, layout()), &[r.as_fd()])
                .unwrap();
        },
    );
    consumer_rejects(
        "memfd smaller than its layout",
        "which holds only 4096",
        true,
        |p| {
            let fd = memfd(4096, true);
            p.send(&add_buffer(BufferKind::Memfd, layout()), &[fd.as_fd()])
                .unwrap();
        },
    );
    assert!(need_bytes > 4096);
    consumer_rejects("unsealed memfd", "lacks F_SEAL_SHRINK", true, |p| {
        let fd = memfd(need_bytes, false);
        p.send(&add_buffer(BufferKind::Memfd, layout()), &[fd.as_fd()])
            .unwrap();
    });
    consumer_rejects(
        "memfd sent as a dma-heap buffer",
        "not a dma-buf",
        true,
        |p| {
            let fd = memfd(need_bytes, true);
            p.send(&add_buffer(BufferKind::DmaHeap, layout()), &[fd.as_fd()])
                .unwrap();
        },
    );
    consumer_rejects(
        "two fds for a one-fd layout",
        "needs 1 fd(s), 2 arrived",
        false,
        |p| {
            let (a, b) = (memfd(need_bytes, true), memfd(need_bytes, true));
            let mut bytes = Vec::new();
            add_buffer(BufferKind::Memfd, layout()).encode(&mut bytes);
            p.send_raw(&bytes, &[a.as_fd(), b.as_fd()]).unwrap();
        },
    );
    consumer_rejects("garbage datagram", "bad magic", true, |p| {
        p.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &[])
            .unwrap();
    });
    consumer_rejects("pipe as an acquire fence", "not a sync_file", true, |p| {
        let b = alloc::memfd::MemfdAllocator::new()
            .allocate(&layout())
            .unwrap();
        p.send(&add_buffer(BufferKind::Memfd, layout()), &b.fds())
            .unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let frame = Message::Frame {
            id: 0,
            seq: 0,
            timestamp_ns: 0,
            flags: wire::FLAG_FENCE,
        };
        p.send(&frame, &[r.as_fd()]).unwrap();
    });
    if need("/dev/dma_heap/system") {
        consumer_rejects(
            "dma-buf sent as a memfd buffer",
            "not a shared-memory file",
            true,
            |p| {
                let b = alloc::open("dma-heap")
                    .unwrap()
                    .0
                    .allocate(&layout())
                    .unwrap();
                p.send(&add_buffer(BufferKind::Memfd, layout()), &b.fds())
                    .unwrap();
            },
        );
    }
}

#[test]
fn malicious_consumer_is_rejected_and_the_producer_survives() {
    let _g = serial();
    let fds = fd_count();
    let (p, mut c) = Channel::pair().unwrap();
    let producer = thread::spawn(move || -> Result<(), String> {
        let opts = ProducerOptions {
            name: "generator:box".into(),
            ..Default::default()
        };
        let mut prod =
            Producer::connect(p, opts, wire::FEATURE_FENCES).map_err(|e| e.to_string())?;
        let buffer = alloc::memfd::MemfdAllocator::new()
            .allocate(&layout())
            .unwrap();
        prod.add_buffer(buffer).map_err(|e| e.to_string())?;
        let mut gen = Generator::new(Pattern::MovingBox, &layout());
        for seq in 0..2 {
            let id = prod.acquire().map_err(|e| e.to_string())?.unwrap();
            gen.fill(id, &mut prod.write_access(id).unwrap(), seq);
            prod.submit(id, seq, None).map_err(|e| e.to_string())?;
        }
        prod.finish().map(|_| ()).map_err(|e| e.to_string())
    });
    let (hello, _) = c.recv_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(hello, Message::Hello { .. }));
    c.send(
        &Message::Hello {
            role: Role::Consumer,
            features: wire::FEATURE_FENCES,
            kinds: all_kinds(),
            formats: Vec::new(),
            name: "evil".into(),
        },
        &[],
    )
    .unwrap();
    let (add, buffer_fds) = c.recv_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(add, Message::AddBuffer { id: 0, .. }));
    let (frame, _) = c.recv_timeout(Some(Duration::from_secs(10))).unwrap();
    let Message::Frame { id, seq, .. } = frame else {
        panic!("{frame:?}")
    };
    // Release with a pipe where the release fence should be.
    let (r, w) = rustix::pipe::pipe().unwrap();
    c.send(
        &Message::Release {
            id,
            seq,
            flags: wire::FLAG_FENCE,
        },
        &[r.as_fd()],
    )
    .unwrap();
    let err = producer
        .join()
        .unwrap()
        .expect_err("the producer must reject it");
    assert!(
        err.contains("release fence") && err.contains("not a sync_file"),
        "{err}"
    );
    let (bye, _) = c.recv_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(
        matches!(&bye, Message::Bye { code: wire::BYE_PROTOCOL_ERROR, reason } if reason.contains("not a sync_file")),
        "{bye:?}"
    );
    drop((c, buffer_fds, r, w));
    assert_eq!(fd_count(), fds, "stray fds in the producer");
}

#[test]
fn malicious_producer_against_the_cli_consumer() {
    let _g = serial();
    let dir = TempDir::new("cli");
    let sock = dir.0.join("s");
    let listener = Listener::bind(&sock).unwrap();
    let child = Command::new(bin())
        .args(["consume", "--sink", "verify", "--socket"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = listener.accept(Some(Duration::from_secs(30))).unwrap();
    p.send(&hello_producer(), &[]).unwrap();
    let _ = p.recv_timeout(Some(Duration::from_secs(10))).unwrap();
    let (r, _w) = rustix::pipe::pipe().unwrap();
    p.send(&add_buffer(BufferKind::Memfd, layout()), &[r.as_fd()])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("not a shared-memory file"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}
