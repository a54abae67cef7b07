//! Hostile peers, one test per class of attack, on the host (memfd, POSIX and SysV shm exist
//! everywhere; `vm_hostile.rs` adds what needs dma-bufs). Each test plays the hostile side by
//! hand and checks what the trusted systems promise: the victim names the problem (a Bye to
//! the peer, an error in its report), the victim process keeps running or ends cleanly (an exit
//! status, never a signal or a panic), what was delivered before still counts, and nothing
//! leaks (fds, mappings in /proc/self/maps, /dev/shm entries, SysV segments).
//!
//! 1. A peer that truncates POSIX shm under the other side's mapping (both directions).
//! 2. A peer that names a SysV segment it could not attach itself (confused deputy).
//! 4. A peer that sends fds that are not memory — files on disk, pipes, sockets, files on a
//!    FUSE filesystem it serves (whose daemon never answers).
//! 5. A peer that announces shared memory in a tiled layout.
//!
//! And the bugs found with them: a 1-pixel-wide frame, a closed stdout, the consume child of a
//! killed `run`, MSG_CTRUNC caused by our own fd limit. Every test takes a process-wide lock:
//! most count this process's fds and mappings, and the others open fds of their own.

mod common;

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{bin, fd_count};
use frameshare::buffer::{Access, Buffer, BufferKind, KindSet};
use frameshare::bus::socket::{Channel, ChannelError, Listener};
use frameshare::bus::wire::{self, FrameMsg, Hello, Message, Role};
use frameshare::bus::{
    ByeCode, Policy, Publisher, PublisherOptions, Subscriber, SubscriberOptions,
};
use frameshare::format::{Fourcc, FrameLayout, Modifier};
use frameshare::meta::FrameMeta;
use frameshare::pipeline::{self, ConsumeOptions, ConsumeReport, ProduceOptions};
use frameshare::sink::verify::VerifySink;
use frameshare::source::{Generator, GeneratorSource, Pattern};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const WAIT: Duration = Duration::from_secs(20);

fn layout() -> FrameLayout {
    FrameLayout::linear(Fourcc::XR24, 64, 64, 64).unwrap()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A private directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "frameshare-hostile-{}-{tag}-{}",
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

/// What this process's fds are (for messages).
fn fd_links() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|e| {
            let link = std::fs::read_link(e.path()).unwrap_or_default();
            format!("{} -> {}", e.file_name().to_string_lossy(), link.display())
        })
        .collect()
}

/// Lines of /proc/self/maps that mention `needle`.
fn maps_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// /dev/shm entries whose name starts with `prefix`.
fn shm_entries(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A producer's Hello, announcing generated `box` frames (the verify sink recomputes them).
fn producer_hello() -> Message {
    Message::Hello(Hello {
        role: Role::Producer,
        features: wire::FEATURE_FENCES,
        kinds: KindSet::all(),
        name: "generator".into(),
        pattern: Some("box".into()),
        ..Default::default()
    })
}

fn consumer_hello(name: &str) -> Message {
    Message::Hello(Hello {
        role: Role::Consumer,
        features: wire::FEATURE_FENCES | wire::FEATURE_END_OF_STREAM,
        kinds: KindSet::all(),
        name: name.into(),
        policy: Some(Policy::Wait),
        ..Default::default()
    })
}

fn add_buffer(kind: BufferKind, layout: FrameLayout, sysv_id: Option<i32>) -> Message {
    Message::AddBuffer {
        id: 0,
        kind,
        layout,
        sysv_id,
    }
}

fn frame(seq: u64) -> Message {
    Message::Frame(FrameMsg {
        id: 0,
        seq,
        timestamp_ns: 0,
        flags: 0,
        meta: FrameMeta::default(),
    })
}

/// Waits for the peer's Bye, answering nothing else; `None` if the peer closed without one.
fn bye_from(chan: &mut Channel) -> Option<(ByeCode, String)> {
    loop {
        match chan.recv_timeout(Some(WAIT)) {
            Ok((Message::Bye { code, reason }, _)) => return Some((code, reason)),
            Ok(_) => continue,
            Err(ChannelError::Timeout(t)) => panic!("nothing from the peer within {t:?}"),
            Err(_) => return None,
        }
    }
}

/// A hostile producer's end against an in-process consumer (`pipeline::consume`, verify sink),
/// handshake done. `finish` returns the consumer's report.
struct InProcessConsumer {
    chan: Channel,
    consumer: thread::JoinHandle<ConsumeReport>,
}

impl InProcessConsumer {
    fn start() -> InProcessConsumer {
        let (mut p, c) = Channel::pair().unwrap();
        let consumer = thread::spawn(move || {
            let opts = SubscriberOptions {
                name: "verify".into(),
                ..Default::default()
            };
            let mut sub = Subscriber::from_channel(c, opts).expect("the handshake");
            let mut sink = VerifySink::new();
            pipeline::consume(&mut sub, &mut sink, &ConsumeOptions::default())
                .expect("the consumer returns a report")
        });
        p.send(&producer_hello(), &[]).unwrap();
        let (h, _) = p.recv_timeout(Some(WAIT)).unwrap();
        assert!(
            matches!(&h, Message::Hello(h) if h.role == Role::Consumer),
            "{h:?}"
        );
        InProcessConsumer { chan: p, consumer }
    }

    /// Sends frame `seq` of buffer 0 and waits for its Release.
    fn frame_and_release(&mut self, seq: u64) {
        self.chan.send(&frame(seq), &[]).unwrap();
        let (msg, _) = self.chan.recv_timeout(Some(WAIT)).unwrap();
        assert!(
            matches!(msg, Message::Release { id: 0, seq: s, .. } if s == seq),
            "{msg:?}"
        );
    }

    fn finish(self) -> ConsumeReport {
        drop(self.chan);
        self.consumer.join().unwrap()
    }
}

/// Asserts that a refused buffer got a protocol Bye naming `needle` and that the consumer
/// reports it, delivering nothing.
fn refused(case: &str, needle: &str, send: impl FnOnce(&mut Channel)) -> String {
    let fds = fd_count();
    let mut c = InProcessConsumer::start();
    send(&mut c.chan);
    let bye = bye_from(&mut c.chan);
    let report = c.finish();
    let (code, reason) = bye.unwrap_or_else(|| panic!("{case}: no Bye"));
    assert_eq!(code, ByeCode::Protocol, "{case}: {reason}");
    assert!(reason.contains(needle), "{case}: Bye {reason:?}");
    let err = report.error.unwrap_or_default();
    assert!(err.contains(needle), "{case}: consumer error {err:?}");
    assert_eq!(report.frames_delivered, 0, "{case}");
    wait_until(&format!("{case}: the consumer's fds closed"), || {
        fd_count() == fds
    });
    eprintln!("{case}: refused: {reason}");
    reason
}

/// A POSIX shm object of `size` bytes, read-write, already unlinked.
fn posix_shm(size: u64, tag: &str) -> OwnedFd {
    let name = format!("/frameshare-hostile-{}-{tag}", std::process::id());
    let fd = rustix::shm::open(
        name.as_str(),
        rustix::shm::OFlags::RDWR | rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    rustix::shm::unlink(name.as_str()).unwrap();
    rustix::fs::ftruncate(&fd, size).unwrap();
    fd
}

fn memfd(size: u64, seal: bool) -> OwnedFd {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create("hostile", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .unwrap();
    rustix::fs::ftruncate(&fd, size).unwrap();
    if seal {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .unwrap();
    }
    fd
}

/// Fills our own (guarded) mapping of `fd` with generator frame `seq`.
fn fill(buffer: &Buffer, seq: u64) {
    let mut map = buffer.map(true).unwrap();
    let mut gen = Generator::new(Pattern::MovingBox, buffer.layout());
    let mut a = map.access(Access::Write).unwrap();
    gen.fill(0, &mut a, seq);
    a.end().unwrap();
}

// ---- class 1: truncation under a mapping ----

/// A memory object a hostile producer can shrink, to be declared as posix-shm (which the
/// consumer cannot refuse: shm objects cannot be sealed): a POSIX shm object, or an unsealed
/// memfd. With the name it has in /proc/self/maps.
fn shrinkable(which: &str) -> (OwnedFd, String) {
    let size = frameshare::alloc::allocation_size(&layout());
    match which {
        "posix-shm object" => (
            posix_shm(size, "c"),
            format!("frameshare-hostile-{}-c", std::process::id()),
        ),
        _ => (memfd(size, false), "memfd:hostile".into()),
    }
}

#[test]
fn a_producer_truncating_shm_under_the_consumer_ends_only_that_session() {
    let _g = serial();
    for what in ["posix-shm object", "unsealed memfd"] {
        let fds = fd_count();
        let (fd, maps_tag) = shrinkable(what);
        let ours = Buffer::from_fds(BufferKind::PosixShm, layout(), vec![fd]).unwrap();
        let mut c = InProcessConsumer::start();
        c.chan
            .send(
                &add_buffer(BufferKind::PosixShm, layout(), None),
                &ours.fds(),
            )
            .unwrap();
        for seq in 0..3 {
            fill(&ours, seq);
            c.frame_and_release(seq);
        }
        rustix::fs::ftruncate(ours.fds()[0], 0).unwrap();
        // The consumer reads buffer 0 again: without the guard, SIGBUS kills this process.
        c.chan.send(&frame(3), &[]).unwrap();
        let bye = bye_from(&mut c.chan);
        let report = c.finish();
        let (_, reason) = bye.unwrap_or_else(|| panic!("{what}: no Bye"));
        let needle = "buffer 0 (posix-shm) was truncated by the peer while mapped";
        assert!(reason.contains(needle), "{what}: Bye {reason:?}");
        assert!(
            report.error.as_deref().unwrap_or("").contains(needle),
            "{what}: {report:?}"
        );
        assert_eq!(report.frames_delivered, 4, "{what}: {report:?}");
        assert_eq!(report.frames_verified, 3, "{what}: {report:?}");
        drop(ours);
        assert_eq!(fd_count(), fds, "{what}: fds left: {:?}", fd_links());
        assert_eq!(
            maps_with(&maps_tag),
            Vec::<String>::new(),
            "{what}: mappings left"
        );
        eprintln!("{what}: consumer survived the truncation: {reason}");
    }
    assert_eq!(
        shm_entries(&format!("frameshare-hostile-{}", std::process::id())),
        Vec::<String>::new()
    );
}

#[test]
fn the_cli_consumer_survives_a_truncating_producer_and_exits_cleanly() {
    let _g = serial();
    let dir = TempDir::new("cli-trunc");
    let sock = dir.0.join("s");
    let listener = Listener::bind(&sock).unwrap();
    let child = Command::new(bin())
        .args(["consume", "--sink", "verify", "--json", "--socket"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = listener.accept(Some(WAIT)).unwrap();
    p.send(&producer_hello(), &[]).unwrap();
    let _ = p.recv_timeout(Some(WAIT)).unwrap();
    let size = frameshare::alloc::allocation_size(&layout());
    let ours =
        Buffer::from_fds(BufferKind::PosixShm, layout(), vec![posix_shm(size, "cli")]).unwrap();
    p.send(
        &add_buffer(BufferKind::PosixShm, layout(), None),
        &ours.fds(),
    )
    .unwrap();
    for seq in 0..3 {
        fill(&ours, seq);
        p.send(&frame(seq), &[]).unwrap();
        let (msg, _) = p.recv_timeout(Some(WAIT)).unwrap();
        assert!(matches!(msg, Message::Release { .. }), "{msg:?}");
    }
    rustix::fs::ftruncate(ours.fds()[0], 0).unwrap();
    p.send(&frame(3), &[]).unwrap();
    let (_, reason) = bye_from(&mut p).expect("a Bye from the consumer");
    assert!(
        reason.contains("truncated by the peer while mapped"),
        "{reason}"
    );
    drop(p);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // `consume --json` prints the CLI's report (schema 1).
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&report["frames_delivered"], &report["frames_verified"]),
        (&4.into(), &3.into()),
        "{report}"
    );
    assert!(
        report["error"]
            .as_str()
            .unwrap_or("")
            .contains("buffer 0 (posix-shm) was truncated"),
        "{report}"
    );
}

/// Plays a consumer that truncates the producer's posix-shm buffer 0 (through a read-write
/// re-open of its fd in /proc, the one way left once the fd itself is read-only) and keeps
/// releasing frames without reading them. Returns the producer's Bye.
/// Returns the producer's Bye and the id of the buffer truncated.
fn truncate_the_producers_buffer(c: &mut Channel) -> (ByeCode, String, u32) {
    let (h, _) = c.recv_timeout(Some(WAIT)).unwrap();
    assert!(matches!(h, Message::Hello(_)), "{h:?}");
    c.send(&consumer_hello("truncator"), &[]).unwrap();
    // Once the buffer is truncated the producer may notice (at its next write into it) and end
    // the stream at any moment: a release may then find the socket closed, while the producer's
    // Bye is still queued for us to read.
    let release =
        |c: &mut Channel, id, seq| match c.send(&Message::Release { id, seq, flags: 0 }, &[]) {
            Ok(()) | Err(ChannelError::PeerClosed) => {}
            Err(e) => panic!("sending a release: {e}"),
        };
    let mut buffers = Vec::new();
    let truncated = loop {
        let (msg, fds) = c.recv_timeout(Some(WAIT)).unwrap();
        match msg {
            Message::AddBuffer {
                id,
                kind: BufferKind::PosixShm,
                ..
            } => buffers.push((id, fds.into_iter().next().unwrap())),
            Message::Frame(f) => {
                // Every buffer arrived: each fd is read-only, ftruncate through it fails.
                assert_eq!(buffers.len(), 4);
                for (_, fd) in &buffers {
                    let mode = rustix::fs::fcntl_getfl(fd).unwrap() & rustix::fs::OFlags::ACCMODE;
                    assert_eq!(mode, rustix::fs::OFlags::RDONLY);
                    assert_eq!(rustix::fs::ftruncate(fd, 0), Err(rustix::io::Errno::INVAL));
                }
                // The buffer of the frame we hold, so the producer cannot be writing it now.
                let (_, held) = buffers.iter().find(|(id, _)| *id == f.id).unwrap();
                let rw = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(format!("/proc/self/fd/{}", held.as_raw_fd()))
                    .expect("re-opening our own peer's object read-write (same user)");
                rw.set_len(0).unwrap();
                release(c, f.id, f.seq);
                break f.id;
            }
            other => panic!("{other:?}"),
        }
    };
    loop {
        match c.recv_timeout(Some(WAIT)).unwrap() {
            (Message::Frame(f), _) => release(c, f.id, f.seq),
            (Message::Bye { code, reason }, _) => return (code, reason, truncated),
            (other, _) => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_consumer_truncating_the_producers_shm_ends_the_stream_cleanly() {
    let _g = serial();
    let fds = fd_count();
    let me = format!("frameshare-{}-", std::process::id());
    let (p, mut c) = Channel::pair().unwrap();
    let producer = thread::spawn(move || -> Result<(), String> {
        let opts = PublisherOptions {
            name: "generator".into(),
            pattern: Some("box".into()),
            ..Default::default()
        };
        let mut publisher = Publisher::new(opts).map_err(|e| e.to_string())?;
        publisher
            .add_connection(p, true)
            .map_err(|e| e.to_string())?;
        let alloc = frameshare::alloc::AllocatorSpec::PosixShm.open().unwrap();
        let mut source =
            GeneratorSource::new(alloc, "posix-shm".into(), layout(), 4, Pattern::MovingBox);
        let opts = ProduceOptions {
            frames: Some(1000),
            wait_for: 1,
            ..Default::default()
        };
        pipeline::produce(publisher, &mut source, &opts)
            .map(|_| ())
            .map_err(|e| pipeline::error_chain(&e))
    });
    let (_, reason, id) = truncate_the_producers_buffer(&mut c);
    let err = producer.join().unwrap().expect_err("the stream ends");
    let needle = format!("buffer {id} (posix-shm) was truncated by the peer while mapped");
    assert!(reason.contains(&needle), "Bye {reason:?}");
    assert!(err.contains(&needle), "{err}");
    drop(c);
    assert_eq!(
        fd_count(),
        fds,
        "fds left in the producer: {:?}",
        fd_links()
    );
    assert_eq!(maps_with(&me), Vec::<String>::new(), "mappings left");
    assert_eq!(
        shm_entries(&me),
        Vec::<String>::new(),
        "/dev/shm entries left"
    );
    eprintln!("producer survived: {err}");
}

#[test]
fn the_cli_producer_survives_a_truncating_consumer_and_exits_cleanly() {
    let _g = serial();
    let dir = TempDir::new("cli-prod");
    let sock = dir.0.join("s");
    let child = Command::new(bin())
        .args(["produce", "--alloc", "posix-shm", "--size", "64x64"])
        .args(["--frames", "1000", "--socket"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut c = loop {
        match Channel::connect(&sock) {
            Ok(c) => break c,
            Err(_) if start.elapsed() < WAIT => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("no producer: {e}"),
        }
    };
    let (_, reason, id) = truncate_the_producers_buffer(&mut c);
    assert!(
        reason.contains("truncated by the peer while mapped"),
        "{reason}"
    );
    drop(c);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}: {stderr}", out.status);
    assert!(
        stderr.contains(&format!(
            "buffer {id} (posix-shm) was truncated by the peer while mapped"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// ---- class 2: SysV segments the peer could not attach ----

/// A SysV segment made by `ipcmk` (as `uid` if given), removed on drop.
struct Segment(i32);

impl Segment {
    fn make(uid: Option<u32>, mode: &str) -> Segment {
        let mut cmd = Command::new("ipcmk");
        cmd.args(["-M", "65536", "-p", mode]);
        if let Some(u) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(u).gid(u);
        }
        let out = cmd.output().expect("running ipcmk (util-linux)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ipcmk: {text}");
        let id = text
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("ipcmk said {text:?}"));
        Segment(id)
    }

    /// Attachments (`nattch` in /proc/sysvipc/shm).
    fn attachments(&self) -> u32 {
        let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
        text.lines()
            .skip(1)
            .find_map(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                (c.get(1)? == &self.0.to_string()).then(|| c.get(6)?.parse().ok())?
            })
            .expect("segment listed")
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = Command::new("ipcrm")
            .args(["-m", &self.0.to_string()])
            .output();
    }
}

#[test]
fn a_sysv_segment_the_peer_could_not_attach_is_refused() {
    let _g = serial();
    if !is_root() {
        eprintln!("skipped: needs root (to make another user's segment with ipcmk)");
        return;
    }
    // Another user's private segment: this process (root, the "peer") could attach it with
    // CAP_IPC_OWNER, but the rule is the peer's *permissions*, and a peer in another uid
    // (the realistic attacker) has none; the consumer must not lend it ours.
    let theirs = Segment::make(Some(65534), "0600");
    let reason = refused(
        "another user's 0600 segment",
        "could not attach it read-write itself",
        |p| {
            p.send(
                &add_buffer(BufferKind::SysvShm, layout(), Some(theirs.0)),
                &[],
            )
            .unwrap()
        },
    );
    assert!(
        reason.contains(&format!("segment {} (owner uid 65534", theirs.0)),
        "{reason}"
    );
    assert_eq!(theirs.attachments(), 0, "the consumer attached it");
    // Our own segment, but open to others.
    let open = Segment::make(None, "0666");
    refused("a segment open to others", "open to others", |p| {
        p.send(
            &add_buffer(BufferKind::SysvShm, layout(), Some(open.0)),
            &[],
        )
        .unwrap()
    });
    assert_eq!(open.attachments(), 0);
    // Our own private segment: the peer may, so the consumer does.
    let ours = Segment::make(None, "0600");
    let mut c = InProcessConsumer::start();
    c.chan
        .send(
            &add_buffer(BufferKind::SysvShm, layout(), Some(ours.0)),
            &[],
        )
        .unwrap();
    c.frame_and_release(0);
    assert!(ours.attachments() > 0, "the consumer holds our segment");
    let report = c.finish();
    assert_eq!(report.frames_delivered, 1, "{report:?}");
    assert_eq!(ours.attachments(), 0, "detached at the end");
}

// ---- class 4: fds that are not memory ----

#[test]
fn fds_that_are_not_memory_are_refused_by_what_the_kernel_says_they_are() {
    let _g = serial();
    let dir = TempDir::new("files");
    let path = dir.0.join("frame");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let disk = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let on_tmpfs = matches!(
        frameshare::buffer::classify_fd(disk.as_fd()),
        frameshare::buffer::FdClass::SharedMemory { .. }
    );
    if on_tmpfs {
        eprintln!(
            "note: {} is on tmpfs (shared memory): the disk case is skipped",
            path.display()
        );
    } else {
        let reason = refused("a regular file on disk", "fd 0 is a file on ", |p| {
            p.send(
                &add_buffer(BufferKind::PosixShm, layout(), None),
                &[disk.as_fd()],
            )
            .unwrap()
        });
        assert!(
            reason.contains(&*path.to_string_lossy())
                && reason.contains("not a shared-memory file"),
            "{reason}"
        );
    }
    let (r, _w) = rustix::pipe::pipe().unwrap();
    refused("a pipe", "fd 0 is a pipe, not a shared-memory file", |p| {
        p.send(
            &add_buffer(BufferKind::PosixShm, layout(), None),
            &[r.as_fd()],
        )
        .unwrap()
    });
    let (s, _t) = std::os::unix::net::UnixStream::pair().unwrap();
    refused(
        "a socket",
        "fd 0 is a socket, not a shared-memory file",
        |p| {
            p.send(&add_buffer(BufferKind::Memfd, layout(), None), &[s.as_fd()])
                .unwrap()
        },
    );
    let proc_file = std::fs::File::open("/proc/self/status").unwrap();
    refused("a file on procfs", "fd 0 is a file on proc", |p| {
        p.send(
            &add_buffer(BufferKind::PosixShm, layout(), None),
            &[proc_file.as_fd()],
        )
        .unwrap()
    });
    let sealed = memfd(frameshare::alloc::allocation_size(&layout()), true);
    refused(
        "shared memory sent as a dma-buf",
        "fd 0 is a shared-memory file, not a dma-buf",
        |p| {
            p.send(
                &add_buffer(BufferKind::DmaHeap, layout(), None),
                &[sealed.as_fd()],
            )
            .unwrap()
        },
    );
    refused(
        "a pipe as an acquire fence",
        "fd is a pipe, not a sync_file",
        |p| {
            p.send(
                &add_buffer(BufferKind::Memfd, layout(), None),
                &[sealed.as_fd()],
            )
            .unwrap();
            let msg = Message::Frame(FrameMsg {
                id: 0,
                seq: 0,
                timestamp_ns: 0,
                flags: wire::FLAG_FENCE,
                meta: FrameMeta::default(),
            });
            p.send(&msg, &[r.as_fd()]).unwrap();
        },
    );
}

#[test]
fn a_file_on_the_peers_fuse_filesystem_never_blocks_the_consumer() {
    let _g = serial();
    let dir = TempDir::new("fuse");
    let Some(fs) = fuse::Stalling::mount(&dir.0) else {
        return;
    };
    let fds = fd_count();
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(dir.0.join(fuse::FILE))
        .unwrap();
    // From here the daemon answers nothing: no getattr, no statfs, no flush.
    fs.stall();
    let mut c = InProcessConsumer::start();
    let t0 = Instant::now();
    c.chan
        .send(
            &add_buffer(BufferKind::PosixShm, layout(), None),
            &[file.as_fd()],
        )
        .unwrap();
    // Before classification came first, the consumer sat in fstat (D state) here for good.
    let bye = bye_from(&mut c.chan);
    let took = t0.elapsed();
    let report = c.finish();
    let (code, reason) = bye.expect("a Bye, not a consumer stuck on the daemon");
    assert_eq!(code, ByeCode::Protocol);
    assert!(
        reason.contains("fd 0 is a file on fuse.frameshare-hostile")
            && reason.contains("not a shared-memory file"),
        "{reason}"
    );
    assert!(report.error.unwrap_or_default().contains("fuse"));
    eprintln!("FUSE file refused in {took:?}: {reason}");
    // The refused fd's close waits on the daemon's flush, off the session thread; ending the
    // connection (as the daemon's death would) lets it finish. Nothing is left after that.
    drop(fs);
    drop(file);
    wait_until("the refused FUSE fd to be closed", || fd_count() == fds - 1);
}

#[path = "hostile/fuse.rs"]
mod fuse;

// ---- class 5: layouts the CPU cannot read ----

#[test]
fn shared_memory_must_be_linear() {
    let _g = serial();
    let size = frameshare::alloc::allocation_size(&layout());
    let x_tiled = Modifier(0x0100_0000_0000_0001);
    for modifier in [x_tiled, Modifier::INVALID] {
        let tiled = layout().with_modifier(modifier).unwrap();
        let fd = memfd(size, true);
        refused(
            &format!("a memfd with modifier {modifier}"),
            &format!("memfd buffer: modifier {modifier} is not LINEAR"),
            |p| {
                p.send(
                    &add_buffer(BufferKind::Memfd, tiled.clone(), None),
                    &[fd.as_fd()],
                )
                .unwrap()
            },
        );
    }
}

// ---- the bugs ----

#[test]
fn a_one_pixel_wide_frame_runs_and_verifies() {
    let _g = serial();
    for size in ["1x1", "1x9", "9x1", "3x2"] {
        let s = common::run_json(&["--alloc", "memfd", "--size", size, "--frames", "5"]);
        assert_eq!(s["frames_delivered"], 5, "{size}: {s}");
        assert_eq!(s["frames_verified"], 5, "{size}: {s}");
    }
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let _g = serial();
    let commands: &[&[&str]] = &[
        &["probe"],
        &["probe", "--json"],
        &["ls"],
        &["ls", "--json"],
        &["explain", "XR24", "64x64", "--alloc", "memfd"],
        &["explain", "XR24", "64x64", "--alloc", "memfd", "--json"],
        &[
            "run", "--alloc", "memfd", "--size", "64x64", "--frames", "3",
        ],
        &[
            "run", "--alloc", "memfd", "--size", "64x64", "--frames", "3", "--json",
        ],
    ];
    for args in commands {
        // A pipe whose reader is gone before the command starts: its first write is EPIPE.
        let (r, w) = rustix::pipe::pipe().unwrap();
        drop(r);
        let out = Command::new(bin())
            .args(*args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(w))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {}: {stderr}", out.status);
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn the_consumer_child_of_a_killed_run_ends_quietly() {
    let _g = serial();
    let mut run: Child = Command::new(bin())
        .args([
            "run",
            "--alloc",
            "memfd",
            "--size",
            "64x64",
            "--frames",
            "100000000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The consumer child is in the middle of the stream once it maps the parent's buffers.
    wait_until("the consumer child to map its buffers", || {
        children_of(run.id()).into_iter().any(|c| {
            std::fs::read_to_string(format!("/proc/{c}/maps"))
                .is_ok_and(|m| m.contains("memfd:frameshare-XR24"))
        })
    });
    run.kill().unwrap(); // SIGKILL: the child's stdout pipe and socket lose their other end
    run.wait().unwrap();
    // The child still holds the stderr pipe: reading it to the end waits for its exit.
    let mut stderr = String::new();
    let mut pipe = run.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let _ = pipe.read_to_string(&mut stderr);
        stderr
    });
    let start = Instant::now();
    while !reader.is_finished() {
        assert!(start.elapsed() < WAIT, "the consumer child did not end");
        thread::sleep(Duration::from_millis(10));
    }
    let stderr = reader.join().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Sends `bytes` with `fds` in one datagram, with room for as many fds as given (the channel's
/// own send refuses more than a message may carry).
fn send_with_fds(chan: &Channel, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(16))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    rustix::net::sendmsg(
        chan,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
}

#[test]
fn ctrunc_at_our_own_fd_limit_is_ours_not_the_peers() {
    let _g = serial();
    let dir = TempDir::new("nofile");
    let sock = dir.0.join("s");
    let listener = Listener::bind(&sock).unwrap();
    let child = Command::new(bin())
        .args(["consume", "--sink", "null", "--json", "--socket"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = listener.accept(Some(WAIT)).unwrap();
    p.send(&producer_hello(), &[]).unwrap();
    let _ = p.recv_timeout(Some(WAIT)).unwrap();
    // The consumer is set up and waits for buffers: leave it room for 2 more fds only.
    let open = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .count() as u64;
    let pid = rustix::process::Pid::from_raw(child.id() as i32);
    let limit = rustix::process::Rlimit {
        current: Some(open + 2),
        maximum: Some(open + 2),
    };
    rustix::process::prlimit(pid, rustix::process::Resource::Nofile, limit).unwrap();
    // Four fds, as many as a message may carry: the kernel installs two and sets MSG_CTRUNC.
    let fds: Vec<OwnedFd> = (0..4).map(|_| memfd(4096, true)).collect();
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let mut bytes = Vec::new();
    add_buffer(BufferKind::Memfd, layout(), None).encode(&mut bytes);
    p.send_raw(&bytes, &borrowed).unwrap();
    // No protocol Bye: the consumer does not blame us.
    let bye = bye_from(&mut p);
    assert!(
        !matches!(&bye, Some((ByeCode::Protocol, _))),
        "blamed on the peer: {bye:?}"
    );
    drop(p);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = report["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        err.contains(&format!(
            "this process's fd limit (RLIMIT_NOFILE {}) is reached",
            open + 2
        )),
        "{err}"
    );
    eprintln!("our own limit, said so: {err}");
    // With room for them, more fds than our control buffer holds are the peer's fault, and it
    // is told so.
    refused(
        "sixteen fds in one message",
        "more than 4 fds in one message",
        |p| {
            let fds: Vec<OwnedFd> = (0..16).map(|_| memfd(4096, true)).collect();
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            send_with_fds(p, &bytes, &borrowed);
        },
    );
}
