//! The frame bus from outside: named streams served by a real `frameshare produce` to
//! `frameshare consume` processes that join and leave at any time, are killed, stopped,
//! restarted or refused; per-consumer policies; format changes mid-stream; `ls` and `top`;
//! access control by peer credentials; per-frame metadata through the library. Each test has
//! its own `FRAMESHARE_RUNTIME_DIR`. Waits are for events (a consumer listed, frames counted,
//! a process gone), never sleeps used as margins; each has a deadline that only a broken run
//! reaches.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{fds_of, shm_entries, shm_maps_of, sysv_segments, RuntimeDir};
use frameshare::bus::subscriber::Target;
use frameshare::bus::wire::{Hello, Message, Role};
use frameshare::bus::{
    ByeCode, Channel, ChannelError, Publisher, PublisherOptions, StreamStatus, Subscriber,
    SubscriberEvent, SubscriberOptions,
};
use frameshare::sink::verify::VerifySink;
use frameshare::sink::{FrameIn, Sink, StreamInfo};
use rustix::process::{Pid, Signal};
use serde_json::Value;

/// Deadline for anything that must happen (a broken run fails here, a slow machine does not).
const WAIT: Duration = Duration::from_secs(60);

// ---- processes ----

/// A `frameshare` child with its output in files; killed if the test fails before it ends.
struct Proc {
    child: Option<Child>,
    pid: u32,
    what: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// What a finished child left.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

impl Proc {
    fn start(rt: &RuntimeDir, args: &[&str]) -> Proc {
        Proc::start_with(rt, args, |_| {})
    }

    fn start_with(rt: &RuntimeDir, args: &[&str], setup: impl FnOnce(&mut Command)) -> Proc {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let logs = std::env::temp_dir().join(format!("frameshare-bus-{}-{n}", std::process::id()));
        let (stdout, stderr) = (logs.with_extension("out"), logs.with_extension("err"));
        let mut cmd = rt.command(args);
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        setup(&mut cmd);
        let child = cmd.spawn().unwrap();
        Proc {
            pid: child.id(),
            child: Some(child),
            what: args.join(" "),
            stdout,
            stderr,
        }
    }

    fn signal(&self, sig: Signal) {
        rustix::process::kill_process(Pid::from_raw(self.pid as i32).unwrap(), sig).unwrap();
    }

    /// Waits for the child to exit (it must, within [`WAIT`]).
    fn finish(mut self) -> Finished {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > WAIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`frameshare {}` did not exit within {WAIT:?}:\n{}",
                    self.what,
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        Finished {
            status,
            stdout: std::fs::read_to_string(&self.stdout).unwrap(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap(),
        }
    }

    /// Exits 0 with a JSON report on stdout.
    fn report(self) -> Value {
        let what = self.what.clone();
        let f = self.finish();
        assert!(
            f.status.success(),
            "`frameshare {what}`: {}\n{}{}",
            f.status,
            f.stdout,
            f.stderr
        );
        f.json()
    }

    fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        assert!(!child.wait().unwrap().success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let mut state = String::from("finished");
        if let Some(mut c) = self.child.take() {
            state = match c.try_wait() {
                Ok(Some(s)) => format!("exited: {s}"),
                _ => "running, killed".into(),
            };
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- `frameshare {}` (pid {}, {state}):\n{}{}",
                self.what,
                self.pid,
                std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

// ---- the stream as its producer sees it ----

/// Asks the producer of `name` for its status (as `frameshare ls` does) and waits until it has
/// closed that monitor connection: then its fd count is exactly that of its consumers and
/// buffers, and a consumer the status no longer lists is closed too.
fn settled_status(rt: &RuntimeDir, name: &str) -> StreamStatus {
    let mut c = Channel::connect(&rt.0.join(name)).unwrap();
    assert!(matches!(
        c.recv_timeout(Some(WAIT)).unwrap().0,
        Message::Hello(h) if h.role == Role::Producer
    ));
    let hello = Message::Hello(Hello {
        role: Role::Monitor,
        name: "test".into(),
        ..Hello::default()
    });
    c.send(&hello, &[]).unwrap();
    let Message::Status(status) = c.recv_timeout(Some(WAIT)).unwrap().0 else {
        panic!("no status");
    };
    loop {
        match c.recv_timeout(Some(WAIT)) {
            Ok((Message::Bye { code, .. }, _)) => assert_eq!(code, ByeCode::Done),
            Err(ChannelError::PeerClosed) => return status,
            other => panic!("after the status: {other:?}"),
        }
    }
}

/// The status of stream `name` (through the library's monitor, as `ls` asks), if it answers.
fn status(rt: &RuntimeDir, name: &str) -> Option<StreamStatus> {
    frameshare::bus::monitor::status_at(&rt.0.join(name), WAIT).ok()
}

/// Waits until the status of `name` satisfies `cond`; returns it.
fn wait_status(
    rt: &RuntimeDir,
    name: &str,
    what: &str,
    mut cond: impl FnMut(&StreamStatus) -> bool,
) -> StreamStatus {
    let mut last = None;
    let start = Instant::now();
    loop {
        if let Some(s) = status(rt, name) {
            if cond(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out waiting for {what}; last status: {last:#?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Consumer `pid` in a status.
fn consumer(s: &StreamStatus, pid: u32) -> Option<&frameshare::bus::wire::ConsumerStatus> {
    s.consumers.iter().find(|c| c.pid == pid)
}

/// Waits until consumer `pid` has had at least `frames` frames.
fn wait_delivered(rt: &RuntimeDir, name: &str, pid: u32, frames: u64) -> StreamStatus {
    wait_status(
        rt,
        name,
        &format!("pid {pid} to get {frames} frames"),
        |s| consumer(s, pid).is_some_and(|c| c.delivered >= frames),
    )
}

/// A verifying consumer's report: every frame it got was right, and it ended as `ended` says.
fn assert_verified(what: &str, r: &Value, ended: Option<&str>) -> u64 {
    let delivered = r["frames_delivered"].as_u64().unwrap();
    assert!(delivered > 0, "{what}: {r}");
    assert_eq!(r["frames_verified"], delivered, "{what}: {r}");
    assert_eq!(r["frames_dropped"], 0, "{what}: {r}");
    assert!(r["error"].is_null(), "{what}: {r}");
    assert_eq!(r["ended"].as_str(), ended, "{what}: {r}");
    delivered
}

/// Nothing of processes `pids` is left in /dev/shm or the SysV shm table.
fn nothing_left(pids: &[u32], what: &str) {
    assert_eq!(shm_entries(pids), Vec::<String>::new(), "{what}: /dev/shm");
    assert_eq!(sysv_segments(pids), Vec::<String>::new(), "{what}: ipcs -m");
}

fn produce(rt: &RuntimeDir, name: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["-v", "produce", "--stream", name, "--frames", "0"];
    args.extend_from_slice(extra);
    Proc::start(rt, &args)
}

fn consume(rt: &RuntimeDir, name: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["-v", "consume", "--stream", name, "--json"];
    args.extend_from_slice(extra);
    Proc::start(rt, &args)
}

/// The producer's plain-text summary after SIGINT: it stopped, and its consumer counters
/// (the report's `name  value` lines, compared word by word).
fn assert_summary(out: &Finished, joined: u64, left: u64, evicted: u64, refused: u64) {
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let has_line = |want: &str| {
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == want)
    };
    assert!(has_line("stopped by a signal"), "{}", out.stdout);
    let want = format!("consumers joined {joined} left {left} evicted {evicted} refused {refused}");
    assert!(has_line(&want), "want {want:?}:\n{}", out.stdout);
}

// ---- a witness in this process ----

/// A subscriber thread (in this process) that verifies every frame and checks that it got
/// every frame from its first to its last, with no gap; returns (first, last, why it ended).
fn witness(sock: PathBuf) -> thread::JoinHandle<(u64, u64, String)> {
    thread::spawn(move || {
        let mut sink = VerifySink::new();
        let mut sub = Subscriber::to(
            Target::Path(sock),
            SubscriberOptions {
                name: "witness".into(),
                ..common::subscriber_options(&sink)
            },
        )
        .unwrap();
        let mut seqs: Option<(u64, u64)> = None;
        loop {
            match sub.next(Some(WAIT)).unwrap() {
                SubscriberEvent::Connected { producer, .. } => sink
                    .start(&StreamInfo {
                        producer: producer.name.clone(),
                        pattern: producer.pattern.as_deref().and_then(|p| p.parse().ok()),
                    })
                    .unwrap(),
                SubscriberEvent::BufferAdded { id, buffer } => {
                    sink.add_buffer(id, &buffer).unwrap()
                }
                SubscriberEvent::BufferRemoved { id } => sink.remove_buffer(id),
                SubscriberEvent::Frame(mut f) => {
                    let acquire = f.take_acquire_fence();
                    let out = sink
                        .frame(FrameIn {
                            id: f.id,
                            seq: f.seq,
                            buffer: f.buffer(),
                            acquire,
                            meta: &f.meta,
                        })
                        .unwrap();
                    assert!(out.verified, "witness: frame {} wrong", f.seq);
                    seqs = Some(match seqs {
                        None => (f.seq, f.seq),
                        Some((first, last)) => {
                            assert_eq!(f.seq, last + 1, "witness: a frame was lost");
                            (first, f.seq)
                        }
                    });
                }
                SubscriberEvent::EndOfStream { .. } => {}
                SubscriberEvent::Ended { code, reason } => {
                    assert_eq!(code, ByeCode::Done, "{reason}");
                    let (first, last) = seqs.expect("the witness got frames");
                    return (first, last, reason);
                }
                SubscriberEvent::Restarting { reason } => panic!("witness: {reason}"),
            }
        }
    })
}

// ---- the tests ----

/// One producer, 8 verifying consumers joining one after another (two leave on their own); one
/// more is killed with SIGKILL mid-stream and one is SIGSTOPped (evicted after the stall
/// timeout): the others verify every frame, and a witness in this process sees no gap. The
/// producer's fds grow by exactly one per connected consumer and come back; its shared
/// mappings never grow. SIGINT: it prints its summary, removes its socket and lock, exits 0;
/// the consumers end with "stream ended"; nothing is left in /dev/shm or SysV shm.
#[test]
fn eight_consumers_join_leave_die_and_stall_and_the_others_lose_nothing() {
    let rt = RuntimeDir::new("eight");
    let name = "eight";
    let sock = rt.0.join(name);
    let producer = produce(
        &rt,
        name,
        &[
            "--alloc",
            "sysv-shm",
            "--size",
            "160x120",
            "--fps",
            "100",
            "--stall-timeout",
            "3",
        ],
    );
    let mut pids = vec![producer.pid];
    // The first two leave on their own after 20 frames; the baseline is taken without them.
    for i in 0..2 {
        let c = consume(&rt, name, &["--frames", "20"]);
        pids.push(c.pid);
        let r = c.report();
        assert_eq!(assert_verified(&format!("leaver {i}"), &r, None), 20, "{r}");
    }
    wait_status(&rt, name, "the leavers to be gone", |s| {
        s.consumer_count == 0
    });
    let s = settled_status(&rt, name);
    assert_eq!((s.consumer_count, s.frames >= 40), (0, true), "{s:#?}");
    let (fds0, maps0) = (fds_of(producer.pid), shm_maps_of(producer.pid));
    assert!(maps0 > 0, "the producer maps its buffers");
    let fds_now = |n: u32| {
        let s = settled_status(&rt, name);
        assert_eq!(s.consumer_count, n, "{s:#?}");
        assert_eq!(
            fds_of(producer.pid),
            fds0 + n as usize,
            "producer fds with {n} consumers (one socket each)"
        );
        assert_eq!(shm_maps_of(producer.pid), maps0, "producer mappings");
    };
    // Six more verifying consumers, each joining once the one before has frames.
    let mut stayers = Vec::new();
    for _ in 0..6 {
        let c = consume(&rt, name, &[]);
        wait_delivered(&rt, name, c.pid, 5);
        pids.push(c.pid);
        stayers.push(c);
    }
    let witness = witness(sock.clone());
    wait_status(&rt, name, "the witness", |s| {
        s.consumers
            .iter()
            .any(|c| c.name == "witness" && c.delivered >= 5)
    });
    let doomed = consume(&rt, name, &[]);
    wait_delivered(&rt, name, doomed.pid, 5);
    let stopped = consume(&rt, name, &[]);
    wait_delivered(&rt, name, stopped.pid, 5);
    pids.extend([doomed.pid, stopped.pid]);
    fds_now(9);

    // kill -9: forgotten at once, the others go on.
    let doomed_pid = doomed.pid;
    doomed.kill9();
    let s = wait_status(&rt, name, "the killed consumer to be forgotten", |s| {
        consumer(s, doomed_pid).is_none()
    });
    let frames_at_kill = s.frames;
    fds_now(8);

    // SIGSTOP: it holds its frames; evicted after the stall timeout; the others go on.
    let stopped_pid = stopped.pid;
    stopped.signal(Signal::STOP);
    let s = wait_status(&rt, name, "the stopped consumer's eviction", |s| {
        consumer(s, stopped.pid).is_none()
    });
    wait_status(&rt, name, "frames after the eviction", |t| {
        t.frames >= s.frames + 20
    });
    fds_now(7);
    stopped.signal(Signal::CONT);
    let evicted = stopped.finish();
    assert_eq!(evicted.status.code(), Some(1), "{}", evicted.stderr);
    let err = evicted.json()["error"].as_str().unwrap().to_owned();
    assert!(err.contains("(evicted): stalled: held frame"), "{err}");

    // Ctrl-C: the summary, nothing left behind, every remaining consumer told.
    let before_stop = status(&rt, name).unwrap();
    assert!(before_stop.frames > frames_at_kill + 20);
    producer.signal(Signal::INT);
    let out = producer.finish();
    // Joined: 2 leavers, 6 stayers, the witness, the killed and the stopped one.
    assert_summary(&out, 11, 10, 1, 0);
    assert!(
        out.stderr
            .contains(&format!("verify (pid {stopped_pid}) evicted: stalled")),
        "{}",
        out.stderr
    );
    for (i, c) in stayers.into_iter().enumerate() {
        let r = c.report();
        assert_verified(&format!("consumer {i}"), &r, Some("stream ended"));
    }
    let (first, last, ended) = witness.join().unwrap();
    assert_eq!(ended, "stream ended");
    assert!(last > first + 40, "{first}..{last}");
    assert_eq!(
        rt.entries(),
        Vec::<String>::new(),
        "socket and lock removed"
    );
    nothing_left(&pids, "eight consumers");
}

/// A `drop` and a `latest` consumer that stop taking frames beside a `wait` consumer: the wait
/// consumer gets every frame, the producer never waits for the other two, which skip frames
/// (counted: every frame is delivered or counted dropped for them) and resume when they go on.
#[test]
fn drop_and_latest_consumers_skip_and_never_stall_the_producer() {
    let rt = RuntimeDir::new("policies");
    let name = "policies";
    // Eight buffers: a stopped drop consumer may hold half, a stopped latest one two (one
    // held, one waiting in its mailbox); the wait consumer has the rest.
    let producer = produce(
        &rt,
        name,
        &[
            "--alloc",
            "posix-shm",
            "--size",
            "160x120",
            "--fps",
            "100",
            "--buffers",
            "8",
            "--stall-timeout",
            "60",
        ],
    );
    let waiter = consume(&rt, name, &["--policy", "wait"]);
    wait_delivered(&rt, name, waiter.pid, 1);
    let dropper = consume(&rt, name, &["--policy", "drop"]);
    wait_delivered(&rt, name, dropper.pid, 5);
    let latest = consume(&rt, name, &["--policy", "latest"]);
    wait_delivered(&rt, name, latest.pid, 5);
    let pids = [producer.pid, waiter.pid, dropper.pid, latest.pid];

    dropper.signal(Signal::STOP);
    latest.signal(Signal::STOP);
    let s0 = status(&rt, name).unwrap();
    let s1 = wait_status(
        &rt,
        name,
        "40 frames while two consumers are stopped",
        |s| s.frames >= s0.frames + 40,
    );
    let delta = |pid: u32| {
        let (a, b) = (consumer(&s0, pid).unwrap(), consumer(&s1, pid).unwrap());
        (b.delivered - a.delivered, b.dropped - a.dropped, b.held)
    };
    let frames = s1.frames - s0.frames;
    let (w_delivered, w_dropped, _) = delta(waiter.pid);
    assert_eq!((w_delivered, w_dropped), (frames, 0), "wait: {s1:#?}");
    let (d_delivered, d_dropped, d_held) = delta(dropper.pid);
    assert_eq!(d_delivered + d_dropped, frames, "drop: {s0:#?} {s1:#?}");
    assert!(d_dropped >= frames - 4 && d_held <= 4, "drop: {s1:#?}");
    // Latest: a frame either goes out, or waits in the mailbox (replacing one: dropped); one
    // that waited at the first look may have gone out since, one may wait at the second.
    let (l_delivered, l_dropped, l_held) = delta(latest.pid);
    assert!(
        (frames - 1..=frames + 1).contains(&(l_delivered + l_dropped)),
        "latest: {s0:#?} {s1:#?}"
    );
    assert!(l_dropped >= frames - 3 && l_held <= 1, "latest: {s1:#?}");
    // The counts are what `ls --json` shows.
    let ls = ls_json(&rt);
    let listed = ls_stream(&ls, name);
    let policy_of = |pid: u32| {
        listed["status"]["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["pid"] == pid)
            .map(|c| (c["policy"].clone(), c["dropped"].as_u64().unwrap()))
            .unwrap()
    };
    assert_eq!(policy_of(waiter.pid), ("wait".into(), 0));
    let (p, dropped) = policy_of(dropper.pid);
    assert!(p == "drop" && dropped >= d_dropped, "{listed}");
    let (p, dropped) = policy_of(latest.pid);
    assert!(p == "latest" && dropped >= l_dropped, "{listed}");

    dropper.signal(Signal::CONT);
    latest.signal(Signal::CONT);
    wait_status(&rt, name, "the drop and latest consumers to resume", |s| {
        consumer(s, dropper.pid).unwrap().delivered > consumer(&s1, dropper.pid).unwrap().delivered
            && consumer(s, latest.pid).unwrap().delivered
                > consumer(&s1, latest.pid).unwrap().delivered
    });
    producer.signal(Signal::INT);
    let out = producer.finish();
    assert_summary(&out, 3, 3, 0, 0);
    let produced: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("frames produced "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let w = waiter.report();
    assert_eq!(
        assert_verified("wait", &w, Some("stream ended")),
        produced,
        "the wait consumer gets every frame"
    );
    for (what, p) in [("drop", dropper), ("latest", latest)] {
        let r = p.report();
        let got = assert_verified(what, &r, Some("stream ended"));
        assert!(got < produced, "{what} skipped nothing: {r}");
    }
    assert_eq!(rt.entries(), Vec::<String>::new());
    nothing_left(&pids, "policies");
}

/// A producer killed with SIGKILL leaves its socket and its lock file, but not the lock: a new
/// producer of the same name replaces the stale socket, and `--reconnect` consumers resume
/// with it (verifying every frame, `restarts: 1`). A second live producer of the name is
/// refused with an error naming the first one's pid.
#[test]
fn a_restarted_producer_is_found_again_by_name() {
    let rt = RuntimeDir::new("restart");
    let name = "restart";
    let args = ["--alloc", "posix-shm", "--size", "160x120", "--fps", "100"];
    let first = produce(&rt, name, &args);
    let a = consume(&rt, name, &["--reconnect"]);
    wait_delivered(&rt, name, a.pid, 10);
    let b = consume(&rt, name, &["--reconnect", "--policy", "latest"]);
    wait_delivered(&rt, name, b.pid, 10);
    let first_pid = first.pid;
    first.kill9();
    nothing_left(&[first_pid], "the killed producer");
    // Its socket and lock file stay, but no one holds the lock.
    assert_eq!(rt.entries(), [name.to_owned(), format!("{name}.lock")]);
    let lock = std::fs::File::open(rt.0.join(format!("{name}.lock"))).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .expect("the dead producer's lock is free");
    drop(lock);
    assert!(
        status(&rt, name).is_none(),
        "a stale socket answers no monitor"
    );

    let second = produce(&rt, name, &args);
    wait_delivered(&rt, name, a.pid, 10);
    wait_delivered(&rt, name, b.pid, 10);
    let refused = produce(&rt, name, &args).finish();
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains(&format!(
            "stream {name} is already published by pid {}",
            second.pid
        )),
        "{}",
        refused.stderr
    );
    second.signal(Signal::INT);
    let out = second.finish();
    assert_summary(&out, 2, 2, 0, 0);
    for (what, c) in [("wait", a), ("latest", b)] {
        let r = c.report();
        assert_verified(what, &r, Some("stream ended"));
        assert_eq!(r["restarts"], 1, "{what}: {r}");
    }
    assert_eq!(rt.entries(), Vec::<String>::new());
}

/// Three resolution changes in one run (buffers retired and re-added): every frame verified, on
/// each shared-memory kind, by a consumer there from the start and one that joins mid-stream.
#[test]
fn three_resolution_changes_in_one_run_every_frame_verified() {
    for alloc in ["memfd", "posix-shm", "sysv-shm"] {
        let rt = RuntimeDir::new("sizes");
        let name = "sizes";
        let producer = produce(
            &rt,
            name,
            &[
                "--alloc",
                alloc,
                "--size",
                "128x96",
                "--fps",
                "100",
                "--change-size-every",
                "10",
                "--sizes",
                "320x240,160x120,64x48",
            ],
        );
        // There from the first frame: frames 0-39 are 128x96, 320x240, 160x120, 64x48.
        let first = consume(&rt, name, &["--frames", "40"]);
        wait_delivered(&rt, name, first.pid, 1);
        wait_status(&rt, name, "the second size", |s| s.frames >= 12);
        let late = consume(&rt, name, &["--frames", "20"]);
        let pids = [producer.pid, first.pid, late.pid];
        let r = first.report();
        assert_eq!(assert_verified(alloc, &r, None), 40, "{alloc}: {r}");
        assert_eq!(r["formats_seen"], 4, "{alloc}: {r}");
        let r = late.report();
        assert_eq!(assert_verified(alloc, &r, None), 20, "{alloc}: {r}");
        assert!(r["formats_seen"].as_u64().unwrap() >= 2, "{alloc}: {r}");
        producer.signal(Signal::INT);
        assert_summary(&producer.finish(), 2, 2, 0, 0);
        assert_eq!(rt.entries(), Vec::<String>::new());
        nothing_left(&pids, alloc);
    }
}

fn ls_json(rt: &RuntimeDir) -> Value {
    let out = rt.command(&["ls", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ls_stream<'a>(ls: &'a Value, name: &str) -> &'a Value {
    ls["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {ls}"))
}

/// `frameshare ls` (and `--json`) during a run shows the stream (name, producer pid, format,
/// size, rate) and its consumers with policy and counters; `top --count 2` prints it twice.
#[test]
fn ls_and_top_show_the_stream_and_its_consumers() {
    let rt = RuntimeDir::new("ls");
    let name = "cam0";
    let producer = produce(
        &rt,
        name,
        &["--alloc", "memfd", "--size", "320x240", "--fps", "50"],
    );
    let a = consume(&rt, name, &[]);
    wait_delivered(&rt, name, a.pid, 1);
    let b = consume(&rt, name, &["--policy", "drop", "--sink", "null"]);
    wait_delivered(&rt, name, b.pid, 5);
    // The rate needs two frames of history, which there are by now.
    let ls = ls_json(&rt);
    let s = ls_stream(&ls, name);
    assert!(s["error"].is_null(), "{s}");
    let st = &s["status"];
    assert_eq!(st["stream"], name, "{st}");
    assert_eq!(st["pid"], producer.pid, "{st}");
    assert_eq!(st["source"], "generator:box", "{st}");
    assert_eq!(
        (&st["format"], &st["width"], &st["height"]),
        (&"XR24".into(), &320.into(), &240.into()),
        "{st}"
    );
    assert_eq!(
        (&st["memory"], &st["buffers"]),
        (&"memfd".into(), &4.into())
    );
    assert!(st["fps_milli"].as_u64().unwrap() > 0, "{st}");
    assert!(st["frames"].as_u64().unwrap() >= 5, "{st}");
    assert_eq!(st["consumer_count"], 2, "{st}");
    let listed: Vec<(u64, &str, &str)> = st["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(c["delivered"].as_u64().unwrap() >= 1, "{c}");
            assert!(c["dropped"].is_u64(), "{c}");
            (
                c["pid"].as_u64().unwrap(),
                c["name"].as_str().unwrap(),
                c["policy"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (a.pid as u64, "verify", "wait"),
            (b.pid as u64, "null", "drop")
        ]
    );
    // The same, as a table.
    let out = rt.command(&["ls"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{text}"));
    for want in [
        format!("pid {}", producer.pid),
        "generator:box".into(),
        "XR24 320x240 memfd ×4".into(),
        " fps ".into(),
        "2 consumer(s)".into(),
    ] {
        assert!(line.contains(&want), "{want:?} not in {line:?}");
    }
    for (pid, sink, policy) in [(a.pid, "verify", "wait"), (b.pid, "null", "drop")] {
        let l = text
            .lines()
            .find(|l| l.contains(&format!("└ pid {pid} ")))
            .unwrap_or_else(|| panic!("consumer {pid} not in {text}"));
        assert!(
            l.contains(sink) && l.contains(policy) && l.contains("delivered"),
            "{l}"
        );
    }
    // `top`, twice.
    let out = rt
        .command(&["top", "--count", "2", "--interval", "0.1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with(name)).count(),
        2,
        "{text}"
    );
    assert_eq!(text.matches(&format!("└ pid {} ", a.pid)).count(), 2);
    producer.signal(Signal::INT);
    assert_summary(&producer.finish(), 2, 2, 0, 0);
    for c in [a, b] {
        let r = c.report();
        assert_eq!(r["ended"], "stream ended", "{r}");
        assert!(r["error"].is_null(), "{r}");
    }
    // A stream that is gone is not listed.
    let ls = ls_json(&rt);
    assert_eq!(ls["streams"], serde_json::json!([]), "{ls}");
}

const NOBODY: u32 = 65534;

/// A consumer process of another user: the runtime dir reachable (searchable), output piped.
fn nobody_consumer(rt: &RuntimeDir, name: &str, extra: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut args = vec!["consume", "--stream", name, "--json"];
    args.extend_from_slice(extra);
    rt.command(&args)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Peer credentials on every connection: a consumer of another user is refused with a Bye
/// saying why (even where file modes would let it connect), and the stream goes on for the
/// others; a producer that allows that user admits it.
#[test]
fn another_user_is_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root (to run a consumer as uid {NOBODY})");
        return;
    }
    let rt = RuntimeDir::new("access");
    let args = ["--alloc", "memfd", "--size", "160x120", "--fps", "100"];
    let producer = produce(&rt, "closed", &args);
    let ours = consume(&rt, "closed", &[]);
    wait_delivered(&rt, "closed", ours.pid, 5);
    // Past the file modes (as on a file system that ignores them): the credentials decide.
    std::fs::set_permissions(&rt.0, PermissionsExt::from_mode(0o711)).unwrap();
    std::fs::set_permissions(rt.0.join("closed"), PermissionsExt::from_mode(0o666)).unwrap();
    let out = nobody_consumer(&rt, "closed", &[]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let why = format!("(uid {NOBODY}, gid {NOBODY}) may not connect (allowed: uid 0)");
    assert!(
        text.contains("the producer ended the session (refused)") && text.contains(&why),
        "{text}"
    );
    // The stream goes on for ours.
    let s = status(&rt, "closed").unwrap();
    wait_delivered(
        &rt,
        "closed",
        ours.pid,
        consumer(&s, ours.pid).unwrap().delivered + 10,
    );
    producer.signal(Signal::INT);
    let out = producer.finish();
    assert_summary(&out, 1, 1, 0, 1);
    assert!(out.stderr.contains(&why), "{}", out.stderr);
    assert_verified("ours", &ours.report(), Some("stream ended"));

    // Allowed by uid: admitted, and it verifies.
    let producer = produce(
        &rt,
        "open",
        &[&args[..], &["--allow-uid", &NOBODY.to_string()]].concat(),
    );
    let out = nobody_consumer(&rt, "open", &["--frames", "20"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(assert_verified("uid 65534", &r, None), 20, "{r}");
    producer.signal(Signal::INT);
    assert_summary(&producer.finish(), 1, 1, 0, 0);
}

/// Every metadata field and application key/values set on a frame arrive with it, and the
/// frame's timestamp is on the clock the metadata names (library level: a publisher and a
/// subscriber in two threads).
#[test]
fn metadata_arrives_with_each_frame() {
    use frameshare::meta::{
        Clock, Colorimetry, Crop, FrameMeta, Matrix, Primaries, Range, Timestamp, Transfer,
        MAX_KEY, MAX_KEY_VALUES, MAX_VALUE,
    };
    let layout =
        frameshare::format::FrameLayout::linear(frameshare::format::Fourcc::NV12, 64, 48, 64)
            .unwrap();
    // Field by field: the key/values are set through `set`, which checks them.
    let mut full = FrameMeta::default();
    full.clock = Clock::Boottime;
    full.source_seq = Some(u64::MAX - 1);
    full.source_time = Some(Timestamp {
        ns: 123_456_789_012,
        clock: Clock::Realtime,
    });
    full.crop = Some(Crop {
        x: 2,
        y: 4,
        width: 60,
        height: 40,
    });
    full.colorimetry = Some(Colorimetry {
        matrix: Matrix::Bt709,
        range: Range::Limited,
        primaries: Primaries::Bt2020,
        transfer: Transfer::Pq,
    });
    full.corrupt = true;
    full.bytes_used = Some(4096);
    for i in 0..MAX_KEY_VALUES {
        let key = format!("{i:0>width$}", width = if i == 0 { MAX_KEY } else { 3 });
        let value: Vec<u8> = (0..if i == 0 { MAX_VALUE } else { i })
            .map(|b| b as u8)
            .collect();
        full.set(&key, &value).unwrap();
    }
    let mut realtime = FrameMeta::default();
    realtime.clock = Clock::Realtime;
    realtime.set("exposure_us", b"8000").unwrap();
    let sent = [full, FrameMeta::default(), realtime];

    let (ours, theirs) = Channel::pair().unwrap();
    let subscriber = thread::spawn(move || {
        let mut sub = Subscriber::from_channel(theirs, SubscriberOptions::default()).unwrap();
        let mut got = Vec::new();
        loop {
            match sub.next(Some(WAIT)).unwrap() {
                SubscriberEvent::Frame(f) => got.push((f.seq, f.timestamp_ns, f.meta.clone())),
                SubscriberEvent::Ended { .. } => return got,
                _ => {}
            }
        }
    });
    let mut publisher = Publisher::new(PublisherOptions::default()).unwrap();
    publisher.add_connection(ours, true).unwrap();
    assert!(publisher.wait_for_consumers(1, Some(WAIT)).unwrap());
    let (mut alloc, _) = frameshare::alloc::open("memfd").unwrap();
    publisher
        .set_buffers(vec![alloc.allocate(&layout).unwrap()])
        .unwrap();
    let mut clocks = Vec::new();
    for (seq, meta) in sent.iter().enumerate() {
        let mut loan = publisher.loan().unwrap().expect("the buffer is back");
        *loan.meta_mut() = meta.clone();
        let before = meta.clock.now_ns();
        loan.publish(seq as u64).unwrap();
        clocks.push((before, meta.clock.now_ns()));
    }
    publisher.finish().unwrap();
    let got = subscriber.join().unwrap();
    assert_eq!(got.len(), sent.len());
    for (i, ((seq, ts, meta), sent)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(meta, sent, "frame {i}");
        let (before, after) = clocks[i];
        assert!(
            (before..=after).contains(ts),
            "frame {i}: timestamp {ts} not on the {} clock ({before}..{after})",
            sent.clock
        );
    }
    assert!(got[1].2.is_empty());
    assert_eq!(got[2].2.get("exposure_us"), Some(&b"8000"[..]));
    assert_eq!(got[0].2.key_values().count(), MAX_KEY_VALUES);
}
