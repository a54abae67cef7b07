//! Robustness: `kill -9` of either side mid-run leaves no /dev/shm entry, no SysV segment and no
//! stray fd in the survivor; the fd count stays flat over 10 000 frames; a peer that sends
//! malformed messages or the wrong fds gets a clear error (and a Bye naming it) and the other
//! side survives, its fds intact — a publisher goes on serving its other consumers. The
//! shared-memory kinds run everywhere; dma-heap and udmabuf join inside the VM (`ci/vm-run`),
//! where a missing device fails the test.
//!
//! One side runs in this process through the library (`Publisher`/`Subscriber` with
//! `pipeline::produce`/`consume`), the other as a `frameshare produce/consume --socket` child
//! or a raw `Channel` playing a malicious peer. Tests take a process-wide lock: they count this
//! process's fds.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use common::{
    assert_nothing_left, bin, fd_count, generator, generator_options, need, subscriber_options,
    verify_consumer, wait_until, RuntimeDir,
};
use frameshare::alloc::{self, Allocator};
use frameshare::buffer::{Buffer, BufferKind, KindSet};
use frameshare::bus::subscriber::Target;
use frameshare::bus::wire::{self, ByeCode, FrameMsg, Hello, Message, Role};
use frameshare::bus::{Channel, Listener, Publisher, Subscriber};
use frameshare::format::{Fourcc, FrameLayout};
use frameshare::meta::FrameMeta;
use frameshare::pipeline::{self, ConsumeOptions, ConsumeReport, ProduceOptions};
use frameshare::sink::verify::VerifySink;
use frameshare::sink::{FrameIn, FrameOut, Sink, SinkCaps, SinkError, StreamInfo};
use frameshare::source::{Generator, Pattern};

const WAIT: Duration = Duration::from_secs(60);

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
        let dir = RuntimeDir::new("kp");
        let sock = dir.0.join("s");
        let fds = fd_count();
        let mut child = Command::new(bin())
            .args(["produce", "--socket"])
            .arg(&sock)
            .args(["--alloc", kind, "--size", "320x240", "--frames", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let frames = Arc::new(AtomicU64::new(0));
        let consumer = {
            let frames = frames.clone();
            let sock = sock.clone();
            thread::spawn(move || {
                let mut sink = Counting::new(frames);
                let mut opts = subscriber_options(&sink);
                opts.connect_timeout = Some(WAIT);
                let mut sub = Subscriber::to(Target::Path(sock), opts).unwrap();
                let r = pipeline::consume(&mut sub, &mut sink, &ConsumeOptions::default());
                (r, sink.inner.mismatches())
            })
        };
        wait_until("frames from the producer", WAIT, || {
            frames.load(Ordering::Acquire) >= 30
        });
        kill9(&mut child);
        let (report, mismatches) = consumer.join().unwrap();
        let report: ConsumeReport = report.unwrap();
        let err = report.error.clone().unwrap_or_default();
        assert!(err.contains("the producer went away"), "{kind}: {err:?}");
        assert!(report.frames_delivered >= 30, "{kind}: {report:?}");
        assert_eq!(mismatches, 0, "{kind}: {report:?}");
        assert_eq!(
            report.frames_verified, report.frames_delivered,
            "{kind}: {report:?}"
        );
        assert_eq!(fd_count(), fds, "{kind}: stray fds in the consumer");
        assert_nothing_left(&[child.id(), std::process::id()], kind);
        eprintln!(
            "{kind}: producer killed after {} frames; consumer clean",
            report.frames_delivered
        );
    }
}

static PRODUCED: AtomicU64 = AtomicU64::new(0);

fn count_produced(done: u64, _total: Option<u64>) {
    PRODUCED.store(done, Ordering::Release);
}

/// The consumer's death is no error for the producer: it forgets the consumer at once and
/// goes on (here until stopped), with nothing of the consumer's left.
#[test]
fn kill_9_of_the_consumer_leaves_nothing_behind() {
    let _g = serial();
    for kind in kinds() {
        let dir = RuntimeDir::new("kc");
        let sock = dir.0.join("s");
        let fds = fd_count();
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = Publisher::listen(&sock, generator_options()).unwrap();
        let waker = publisher.waker();
        let mut child = Command::new(bin())
            .args(["consume", "--sink", "verify", "--socket"])
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        PRODUCED.store(0, Ordering::Release);
        let opts = ProduceOptions {
            frames: None,
            wait_for: 1,
            stop: Some(stop.clone()),
            progress: Some(count_produced),
            ..ProduceOptions::default()
        };
        let layout = FrameLayout::linear(Fourcc::XR24, 320, 240, 64).unwrap();
        let mut source = generator(kind, &layout, 4);
        let producer = thread::spawn(move || pipeline::produce(publisher, &mut source, &opts));
        wait_until("frames to the consumer", WAIT, || {
            PRODUCED.load(Ordering::Acquire) >= 30
        });
        kill9(&mut child);
        let at_death = PRODUCED.load(Ordering::Acquire);
        // The stream goes on without it.
        wait_until("frames after the consumer's death", WAIT, || {
            PRODUCED.load(Ordering::Acquire) >= at_death + 30
        });
        stop.store(true, Ordering::Release);
        waker.wake();
        drop(waker); // it holds the publisher's wake pipe
        let report = producer
            .join()
            .unwrap()
            .expect("the consumer's death is not the producer's error");
        assert!(report.stopped, "{kind}: {report:?}");
        let c = report.consumers;
        assert_eq!((c.joined, c.left, c.evicted), (1, 1, 0), "{kind}: {c:?}");
        assert!(
            report.frames_produced >= at_death + 30,
            "{kind}: {report:?}"
        );
        assert_eq!(fd_count(), fds, "{kind}: stray fds in the producer");
        assert!(!sock.exists(), "{kind}: the socket outlived its publisher");
        assert_nothing_left(&[child.id(), std::process::id()], kind);
        eprintln!("{kind}: consumer killed after {at_death} frames; producer went on, clean");
    }
}

#[test]
fn fd_count_is_flat_over_10000_frames() {
    let _g = serial();
    for kind in kinds() {
        let before = fd_count();
        let frames = Arc::new(AtomicU64::new(0));
        let mut sink = Counting::new(frames);
        sink.sample_at = [100, 10_000];
        let (produced, report) = common::in_process(
            generator_options(),
            generator(kind, &layout(), 4),
            10_000,
            &mut sink,
        );
        let (produced, report) = (produced.unwrap(), report.unwrap());
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
    Message::Hello(Hello {
        role: Role::Producer,
        features: wire::FEATURE_FENCES,
        kinds: KindSet::all(),
        name: "generator".into(),
        pattern: Some("box".into()),
        ..Hello::default()
    })
}

/// Plays a producer by hand against an in-process consumer (`pipeline::consume`, verify sink):
/// says Hello, then `attack`; returns the consumer's report and the Bye it sent us.
fn against_consumer(attack: impl FnOnce(&mut Channel)) -> (ConsumeReport, Option<String>) {
    let (mut p, c) = Channel::pair().unwrap();
    let consumer = thread::spawn(move || {
        let mut sink = VerifySink::new();
        let mut sub = Subscriber::from_channel(c, subscriber_options(&sink))?;
        pipeline::consume(&mut sub, &mut sink, &ConsumeOptions::default())
    });
    p.send(&hello_producer(), &[]).unwrap();
    let (hello, _) = p.recv_timeout(Some(WAIT)).unwrap();
    assert!(matches!(hello, Message::Hello(h) if h.role == Role::Consumer));
    attack(&mut p);
    let mut bye = None;
    while let Ok((msg, _fds)) = p.recv_timeout(Some(WAIT)) {
        if let Message::Bye { code, reason } = msg {
            assert_eq!(code, ByeCode::Protocol, "{reason}");
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
        sysv_id: None,
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
/// tell us so in a Bye, deliver nothing, and keep no fd we sent.
fn consumer_rejects(case: &str, needle: &str, attack: impl FnOnce(&mut Channel)) {
    let fds = fd_count();
    let (report, got_bye) = against_consumer(attack);
    let err = report.error.clone().unwrap_or_default();
    assert!(err.contains(needle), "{case}: consumer error {err:?}");
    let got = got_bye.unwrap_or_else(|| panic!("{case}: no Bye from the consumer"));
    assert!(got.contains(needle), "{case}: Bye {got:?}");
    assert_eq!(report.frames_verified, 0, "{case}");
    assert_eq!(fd_count(), fds, "{case}: fds kept by the consumer");
    eprintln!("{case}: rejected: {err}");
}

#[test]
fn malicious_producer_is_rejected_and_the_consumer_survives() {
    let _g = serial();
    let l = layout();
    let need_bytes = l.size();
    consumer_rejects("pipe fd in AddBuffer", "not a shared-memory file", |p| {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        p.send(&add_buffer(BufferKind::Memfd, layout()), &[r.as_fd()])
            .unwrap();
    });
    consumer_rejects(
        "memfd smaller than its layout",
        "which holds only 4096",
        |p| {
            let fd = memfd(4096, true);
            p.send(&add_buffer(BufferKind::Memfd, layout()), &[fd.as_fd()])
                .unwrap();
        },
    );
    assert!(need_bytes > 4096);
    consumer_rejects("unsealed memfd", "lacks F_SEAL_SHRINK", |p| {
        let fd = memfd(need_bytes, false);
        p.send(&add_buffer(BufferKind::Memfd, layout()), &[fd.as_fd()])
            .unwrap();
    });
    consumer_rejects("memfd sent as a dma-heap buffer", "not a dma-buf", |p| {
        let fd = memfd(need_bytes, true);
        p.send(&add_buffer(BufferKind::DmaHeap, layout()), &[fd.as_fd()])
            .unwrap();
    });
    consumer_rejects(
        "two fds for a one-fd layout",
        "needs 1 fd(s), 2 arrived",
        |p| {
            let (a, b) = (memfd(need_bytes, true), memfd(need_bytes, true));
            let mut bytes = Vec::new();
            add_buffer(BufferKind::Memfd, layout()).encode(&mut bytes);
            p.send_raw(&bytes, &[a.as_fd(), b.as_fd()]).unwrap();
        },
    );
    consumer_rejects("garbage datagram", "bad magic", |p| {
        p.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &[])
            .unwrap();
    });
    consumer_rejects(
        "an unknown critical metadata field",
        "unknown critical field",
        |p| {
            let b = alloc::memfd::MemfdAllocator::new()
                .allocate(&layout())
                .unwrap();
            p.send(&add_buffer(BufferKind::Memfd, layout()), &b.fds())
                .unwrap();
            let mut bytes = Vec::new();
            frame_msg(0).encode(&mut bytes);
            // A tagged field (tag 0x8000 | 77, empty) this build cannot know, marked critical.
            bytes.extend_from_slice(&(0x8000u16 | 77).to_le_bytes());
            bytes.extend_from_slice(&0u16.to_le_bytes());
            let len = (bytes.len() - wire::HEADER_LEN) as u32;
            bytes[8..12].copy_from_slice(&len.to_le_bytes());
            p.send_raw(&bytes, &[]).unwrap();
        },
    );
    consumer_rejects("pipe as an acquire fence", "not a sync_file", |p| {
        let b = alloc::memfd::MemfdAllocator::new()
            .allocate(&layout())
            .unwrap();
        p.send(&add_buffer(BufferKind::Memfd, layout()), &b.fds())
            .unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let mut frame = frame_msg(0);
        if let Message::Frame(f) = &mut frame {
            f.flags = wire::FLAG_FENCE;
        }
        p.send(&frame, &[r.as_fd()]).unwrap();
    });
    if need("/dev/dma_heap/system") {
        consumer_rejects(
            "dma-buf sent as a memfd buffer",
            "not a shared-memory file",
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

fn frame_msg(seq: u64) -> Message {
    Message::Frame(FrameMsg {
        id: 0,
        seq,
        timestamp_ns: 0,
        flags: 0,
        meta: FrameMeta::default(),
    })
}

/// A consumer that sends a pipe as its release fence is told why and dropped; the publisher
/// keeps its fds straight and goes on serving the other consumer, which verifies every frame.
#[test]
fn malicious_consumer_is_rejected_and_the_producer_survives() {
    let _g = serial();
    let fds = fd_count();
    let (ours, mut c) = Channel::pair().unwrap();
    let mut publisher = Publisher::new(generator_options()).unwrap();
    publisher.add_connection(ours, false).unwrap();
    let (hello, _) = c.recv_timeout(Some(WAIT)).unwrap();
    assert!(matches!(hello, Message::Hello(_)));
    let evil = Message::Hello(Hello {
        role: Role::Consumer,
        features: wire::FEATURE_FENCES,
        kinds: KindSet::all(),
        name: "evil".into(),
        ..Hello::default()
    });
    c.send(&evil, &[]).unwrap();
    let (good_end, theirs) = Channel::pair().unwrap();
    publisher.add_connection(good_end, true).unwrap();
    let good = verify_consumer(theirs);
    assert!(publisher.wait_for_consumers(2, Some(WAIT)).unwrap());
    publisher
        .set_buffers(vec![alloc::memfd::MemfdAllocator::new()
            .allocate(&layout())
            .unwrap()])
        .unwrap();
    let mut gen = Generator::new(Pattern::MovingBox, &layout());
    let mut publish = |publisher: &mut Publisher, seq: u64| {
        let mut loan = publisher.loan().unwrap().expect("a free buffer");
        let id = loan.id();
        gen.fill(id, &mut loan.write().unwrap(), seq);
        loan.publish(seq).unwrap();
    };
    publish(&mut publisher, 0);
    let (add, buffer_fds) = c.recv_timeout(Some(WAIT)).unwrap();
    assert!(matches!(add, Message::AddBuffer { id: 0, .. }));
    let (frame, _) = c.recv_timeout(Some(WAIT)).unwrap();
    let Message::Frame(FrameMsg { id, seq, .. }) = frame else {
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
    // The one buffer comes back only when the evil consumer is gone: the next frame waits.
    publish(&mut publisher, 1);
    assert_eq!(publisher.stats().left, 1);
    let (bye, _) = c.recv_timeout(Some(WAIT)).unwrap();
    assert!(
        matches!(&bye, Message::Bye { code: ByeCode::Protocol, reason }
            if reason.contains("release fence") && reason.contains("not a sync_file")),
        "{bye:?}"
    );
    for seq in 2..20 {
        publish(&mut publisher, seq);
    }
    let stats = publisher.finish().unwrap();
    assert_eq!((stats.published, stats.joined, stats.left), (20, 2, 2));
    let good = good.join().unwrap();
    assert_eq!(good.error, None);
    assert_eq!((good.frames_delivered, good.frames_verified), (20, 20));
    drop((c, buffer_fds, r, w));
    assert_eq!(fd_count(), fds, "stray fds in the producer");
}

#[test]
fn malicious_producer_against_the_cli_consumer() {
    let _g = serial();
    let dir = RuntimeDir::new("cli");
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
    let mut p = listener.accept(Some(WAIT)).unwrap();
    p.send(&hello_producer(), &[]).unwrap();
    let _ = p.recv_timeout(Some(WAIT)).unwrap();
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
