//! VM tests of fences: sync_file wait/info/merge on sw_sync timelines; the implicit-fence bridge
//! round trip on dma-bufs; and fence ordering through the pipeline — the consumer honours acquire
//! fences (`--acquire-fence sw-sync` sends each frame before writing it), the producer honours
//! release fences (never rewrites a buffer before its release fence signals), and fences that
//! never signal end in a clean timeout, a dropped frame and a session that goes on. Needs
//! debugfs `sync/sw_sync` (and dma-heap/udmabuf for the bridge): inside the VM a missing device
//! fails, on a host these tests say "skipped: needs the VM".
//!
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/vm-run cargo test --release --test vm_fences`

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::{need, run_json};
use frameshare::alloc;
use frameshare::buffer::{Access, Buffer, BufferMapping};
use frameshare::bus::consumer::{Consumer, ConsumerCaps, Event, IncomingFrame};
use frameshare::bus::producer::{AcquireFenceMode, PoolPolicy, Producer, ProducerOptions};
use frameshare::bus::socket::{Channel, ChannelError};
use frameshare::bus::{all_kinds, wire, SessionError};
use frameshare::format::{Fourcc, FrameLayout};
use frameshare::pipeline::{self, ProduceOptions, ProduceReport};
use frameshare::sink::verify::VerifySink;
use frameshare::source::{Generator, Pattern, Scene};
use frameshare::sync::sw_sync::SW_SYNC_PATH;
use frameshare::sync::{
    export_sync_file, import_sync_file, FenceAccess, FenceError, FenceStatus, SwSyncTimeline,
};

fn sw_sync() -> bool {
    need(SW_SYNC_PATH)
}

/// The best dma-buf allocator the machine has (dma-heap in the VM), else memfd.
fn pipeline_alloc() -> &'static str {
    if std::path::Path::new("/dev/dma_heap/system").exists() {
        "dma-heap"
    } else {
        "memfd"
    }
}

fn caps() -> ConsumerCaps {
    ConsumerCaps {
        features: wire::FEATURE_FENCES,
        kinds: all_kinds(),
        formats: Vec::new(),
        name: "fence-test".into(),
    }
}

fn layout() -> FrameLayout {
    FrameLayout::linear(Fourcc::XR24, 160, 120, 64).unwrap()
}

fn spawn_producer(
    chan: Channel,
    buffers: usize,
    frames: u64,
    session: ProducerOptions,
) -> thread::JoinHandle<Result<ProduceReport, pipeline::PipelineError>> {
    let opts = ProduceOptions {
        alloc: pipeline_alloc().into(),
        layout: layout(),
        buffers,
        frames,
        pattern: Pattern::MovingBox,
        fps: None,
        session,
        progress: None,
    };
    thread::spawn(move || pipeline::produce(chan, &opts))
}

/// A hand-written consumer's view of the pool: read-only mappings and the generator's scene.
struct Checker {
    scene: Scene,
    maps: HashMap<u32, BufferMapping>,
}

impl Checker {
    fn new(consumer: &Consumer) -> Checker {
        let pattern: Pattern = consumer.peer().name["generator:".len()..].parse().unwrap();
        Checker {
            scene: Scene::new(pattern, &layout()),
            maps: HashMap::new(),
        }
    }

    fn add(&mut self, id: u32, buffer: &Buffer) {
        self.maps.insert(id, buffer.map(false).unwrap());
    }

    /// Whether buffer `id` holds exactly frame `seq` now.
    fn holds(&mut self, id: u32, seq: u64) -> bool {
        let m = self.maps.get_mut(&id).expect("frame for an added buffer");
        let access = m.access(Access::Read).unwrap();
        self.scene.frame(seq).verify(&access).is_ok()
    }
}

fn is_timeout(r: &Result<Event, SessionError>) -> bool {
    matches!(r, Err(SessionError::Channel(ChannelError::Timeout(_))))
}

#[test]
fn sync_file_wait_info_and_merge() {
    if !sw_sync() {
        return;
    }
    let tl = SwSyncTimeline::open().unwrap();
    let tl2 = SwSyncTimeline::open().unwrap();
    let f1 = tl.create_fence(1).unwrap();
    let f2 = tl2.create_fence(1).unwrap();
    assert_eq!(f1.status().unwrap(), FenceStatus::Active);
    assert!(!f1.is_signalled());
    let t = Instant::now();
    assert!(matches!(
        f1.wait(Duration::from_millis(100)),
        Err(FenceError::Timeout(_))
    ));
    assert!(t.elapsed() >= Duration::from_millis(90));

    // Fences of two timelines merge into a sync_file holding both; fences of one timeline
    // collapse to the later one (the kernel keeps one fence per context).
    let merged = f1.merge(&f2, "both").unwrap();
    let info = merged.info().unwrap();
    assert_eq!(info.name, "both");
    assert_eq!(info.fences.len(), 2, "{info:?}");
    assert!(
        info.fences.iter().all(|f| f.driver == "sw_sync"),
        "{info:?}"
    );
    assert_eq!(info.status, FenceStatus::Active);
    let same = f1
        .merge(&tl.create_fence(3).unwrap(), "same timeline")
        .unwrap();
    assert_eq!(same.info().unwrap().fences.len(), 1);

    tl.advance(1).unwrap();
    f1.wait(Duration::ZERO).unwrap();
    assert!(f1.is_signalled());
    let i1 = f1.info().unwrap();
    assert_eq!(i1.fences.len(), 1);
    assert_eq!(i1.fences[0].status, FenceStatus::Signalled);
    assert!(i1.fences[0].timestamp_ns > 0);
    assert_eq!(
        merged.status().unwrap(),
        FenceStatus::Active,
        "needs f2 too"
    );
    assert!(!f2.is_signalled());
    assert!(!same.is_signalled(), "waits for value 3");

    // A waiter on another thread wakes when the second timeline gets there.
    let waiter = {
        let m = merged.try_clone().unwrap();
        thread::spawn(move || {
            let t = Instant::now();
            m.wait(Duration::from_secs(5)).map(|()| t.elapsed())
        })
    };
    thread::sleep(Duration::from_millis(100));
    tl2.advance(1).unwrap();
    let waited = waiter.join().unwrap().unwrap();
    assert!(waited >= Duration::from_millis(90), "{waited:?}");
    assert_eq!(merged.status().unwrap(), FenceStatus::Signalled);
    tl.advance(2).unwrap();
    assert!(same.is_signalled());
    assert_eq!(tl.value(), 3);
    // A fence for a value already reached is born signalled.
    assert!(tl.create_fence(1).unwrap().is_signalled());
}

#[test]
fn closing_a_timeline_fails_its_pending_fences() {
    if !sw_sync() {
        return;
    }
    let tl = SwSyncTimeline::open().unwrap();
    let f = tl.create_fence(5).unwrap();
    drop(tl);
    assert_eq!(
        f.status().unwrap(),
        FenceStatus::Error(rustix::io::Errno::NOENT)
    );
    assert!(matches!(
        f.wait(Duration::from_millis(10)),
        Err(FenceError::Signalled(_))
    ));
}

#[test]
fn implicit_fence_bridge_round_trip() {
    if !sw_sync() || !need("/dev/dma_heap/system") || !need("/dev/udmabuf") {
        return;
    }
    for kind in ["dma-heap", "udmabuf", "drm-dumb"] {
        let (mut a, _) = alloc::open(kind).unwrap();
        let buffer = a.allocate(&layout()).unwrap();
        let dmabuf = buffer.fds()[0];

        // No implicit fences yet: what comes out is already signalled.
        assert!(export_sync_file(dmabuf, FenceAccess::Read)
            .unwrap()
            .is_signalled());
        assert!(export_sync_file(dmabuf, FenceAccess::Write)
            .unwrap()
            .is_signalled());

        // A read fence: later writers wait for it, readers do not.
        let tl = SwSyncTimeline::open().unwrap();
        let reader = tl.create_fence(1).unwrap();
        import_sync_file(dmabuf, &reader, FenceAccess::Read).unwrap();
        assert!(export_sync_file(dmabuf, FenceAccess::Read)
            .unwrap()
            .is_signalled());
        let before_write = export_sync_file(dmabuf, FenceAccess::Write).unwrap();
        assert!(!before_write.is_signalled(), "{kind}");

        // A write fence: everyone waits for it.
        let writer = tl.create_fence(2).unwrap();
        import_sync_file(dmabuf, &writer, FenceAccess::Write).unwrap();
        let before_read = export_sync_file(dmabuf, FenceAccess::Read).unwrap();
        assert!(!before_read.is_signalled(), "{kind}");
        let info = before_read.info().unwrap();
        assert!(
            info.fences.iter().any(|f| f.driver == "sw_sync"),
            "{kind}: {info:?}"
        );

        tl.advance(1).unwrap();
        assert!(
            before_write.is_signalled(),
            "{kind}: the read fence signalled"
        );
        assert!(
            !before_read.is_signalled(),
            "{kind}: the write fence has not"
        );
        let t = Instant::now();
        let waiter = thread::spawn(move || before_read.wait(Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(50));
        tl.advance(1).unwrap();
        waiter.join().unwrap().unwrap();
        assert!(t.elapsed() >= Duration::from_millis(40));
        assert!(export_sync_file(dmabuf, FenceAccess::Write)
            .unwrap()
            .is_signalled());
    }
}

#[test]
fn verify_sink_honours_acquire_fences_written_late() {
    if !sw_sync() {
        return;
    }
    for alloc in [pipeline_alloc(), "udmabuf", "memfd"] {
        let s = run_json(&[
            "--alloc",
            alloc,
            "--acquire-fence",
            "sw-sync:20",
            "--size",
            "640x480",
            "--frames",
            "30",
        ]);
        assert_eq!(s["frames_delivered"], 30, "{alloc}: {s}");
        assert_eq!(s["frames_verified"], 30, "{alloc}: {s}");
        assert_eq!(s["frames_dropped"], 0, "{alloc}: {s}");
    }
    // And at full speed, with no delay between send and write.
    let s = run_json(&[
        "--alloc",
        pipeline_alloc(),
        "--acquire-fence",
        "sw-sync",
        "--size",
        "640x480",
        "--frames",
        "300",
    ]);
    assert_eq!(s["frames_verified"], 300, "{s}");
}

/// The control for the test above: the acquire-fence mode really sends frames before their
/// pixels exist, so a consumer that does not wait reads stale pixels; waiting fixes it.
#[test]
fn acquire_fence_mode_sends_before_writing() {
    if !sw_sync() {
        return;
    }
    let delay = Duration::from_millis(100);
    let frames = 8;
    let (p, c) = Channel::pair().unwrap();
    let producer = spawn_producer(
        p,
        2,
        frames,
        ProducerOptions {
            acquire_fence: AcquireFenceMode::SwSyncLate { delay },
            ..Default::default()
        },
    );
    let mut consumer = Consumer::accept(c, &caps()).unwrap();
    let mut check = Checker::new(&consumer);
    let (mut stale, mut good) = (0, 0);
    let mut waits = Vec::new();
    loop {
        match consumer.next_event(Some(Duration::from_secs(10))).unwrap() {
            Event::BufferAdded(id) => check.add(id, &consumer.buffer(id).unwrap().clone()),
            Event::Frame(IncomingFrame {
                id, seq, acquire, ..
            }) => {
                let fence = acquire.expect("every frame carries an acquire fence");
                assert_eq!(fence.status().unwrap(), FenceStatus::Active);
                if !check.holds(id, seq) {
                    stale += 1;
                }
                let t = Instant::now();
                fence.wait(Duration::from_secs(2)).unwrap();
                waits.push(t.elapsed());
                if check.holds(id, seq) {
                    good += 1;
                }
                consumer.release(id, seq, None).unwrap();
            }
            // Every frame was released already: nothing to give back.
            Event::EndOfStream { .. } => {}
            Event::Bye { code, reason } => {
                assert_eq!(code, wire::BYE_DONE, "{reason}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let report = producer.join().unwrap().unwrap();
    assert_eq!(report.frames_produced, frames);
    assert_eq!(stale, frames, "every frame read before its fence was stale");
    assert_eq!(good, frames, "every frame read after its fence was right");
    waits.sort();
    eprintln!(
        "acquire fence (sw_sync, {delay:?} hold): consumer waited min {:?} median {:?} max {:?}",
        waits[0],
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );
    assert!(waits[0] >= delay / 2, "{waits:?}");
}

#[test]
fn producer_waits_for_release_fences_before_rewriting() {
    if !sw_sync() {
        return;
    }
    let frames = 5;
    let hold = Duration::from_millis(300);
    let (p, c) = Channel::pair().unwrap();
    // One buffer: every frame after the first must wait for the previous release fence.
    let producer = spawn_producer(
        p,
        1,
        frames,
        ProducerOptions {
            policy: PoolPolicy::Wait,
            fence_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    );
    let mut consumer = Consumer::accept(c, &caps()).unwrap();
    let mut check = Checker::new(&consumer);
    let tl = SwSyncTimeline::open().unwrap();
    let mut pending: Option<Event> = None;
    let mut seen = 0;
    let mut resume = Vec::new();
    loop {
        let event = match pending.take() {
            Some(e) => e,
            None => consumer.next_event(Some(Duration::from_secs(10))).unwrap(),
        };
        match event {
            Event::BufferAdded(id) => check.add(id, &consumer.buffer(id).unwrap().clone()),
            Event::Frame(f) => {
                seen += 1;
                assert!(check.holds(f.id, f.seq), "frame {} pixels", f.seq);
                let fence = tl.create_fence(tl.value() + 1).unwrap();
                consumer.release(f.id, f.seq, Some(fence)).unwrap();
                // Released, but fenced: the producer must neither send nor write the buffer.
                let next = consumer.next_event(Some(hold));
                if seen < frames {
                    assert!(
                        is_timeout(&next),
                        "frame {}: producer went on before the release fence signalled: {next:?}",
                        f.seq
                    );
                }
                assert!(
                    check.holds(f.id, f.seq),
                    "frame {}: buffer rewritten under an unsignalled release fence",
                    f.seq
                );
                let t = Instant::now();
                tl.advance(1).unwrap();
                if seen < frames {
                    let e = consumer.next_event(Some(Duration::from_secs(5))).unwrap();
                    resume.push(t.elapsed());
                    assert!(matches!(e, Event::Frame(_)), "{e:?}");
                    pending = Some(e);
                } else if let Ok(e) = next {
                    pending = Some(e);
                }
            }
            // Every frame was released already: nothing to give back.
            Event::EndOfStream { .. } => {}
            Event::Bye { code, reason } => {
                assert_eq!(code, wire::BYE_DONE, "{reason}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let report = producer.join().unwrap().unwrap();
    assert_eq!(seen, frames);
    assert_eq!(report.frames_produced, frames);
    assert_eq!(report.frames_dropped, 0);
    assert_eq!(report.fence_timeouts, 0);
    resume.sort();
    eprintln!(
        "release fence: signal -> next frame received: min {:?} median {:?} max {:?}",
        resume[0],
        resume[resume.len() / 2],
        resume[resume.len() - 1]
    );
}

#[test]
fn never_signalling_release_fence_drops_frames_and_the_session_goes_on() {
    if !sw_sync() {
        return;
    }
    let frames = 10;
    let (p, c) = Channel::pair().unwrap();
    let producer = spawn_producer(
        p,
        2,
        frames,
        ProducerOptions {
            fence_timeout: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let mut consumer = Consumer::accept(c, &caps()).unwrap();
    let mut check = Checker::new(&consumer);
    let tl = SwSyncTimeline::open().unwrap(); // never advanced; alive until the end
    let mut poisoned = None;
    let mut delivered = 0;
    loop {
        match consumer.next_event(Some(Duration::from_secs(10))).unwrap() {
            Event::BufferAdded(id) => check.add(id, &consumer.buffer(id).unwrap().clone()),
            Event::Frame(f) => {
                delivered += 1;
                assert!(check.holds(f.id, f.seq), "frame {}", f.seq);
                assert_ne!(
                    Some(f.id),
                    poisoned,
                    "frame {}: buffer reused although its release fence never signalled",
                    f.seq
                );
                let fence = if poisoned.is_none() {
                    poisoned = Some(f.id);
                    Some(tl.create_fence(1).unwrap())
                } else {
                    None
                };
                consumer.release(f.id, f.seq, fence).unwrap();
            }
            // Every frame was released already: nothing to give back.
            Event::EndOfStream { .. } => {}
            Event::Bye { code, reason } => {
                assert_eq!(code, wire::BYE_DONE, "{reason}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let report = producer.join().unwrap().unwrap();
    eprintln!("{report:?}");
    assert!(report.frames_dropped >= 1, "{report:?}");
    assert_eq!(report.fence_timeouts, report.frames_dropped, "{report:?}");
    assert_eq!(report.frames_produced + report.frames_dropped, frames);
    assert_eq!(report.frames_produced, delivered);
    let err = report.last_error.as_deref().unwrap_or_default();
    assert!(
        err.contains("release fence") && err.contains("did not signal"),
        "{err:?}"
    );
    drop(tl);
}

#[test]
fn never_signalling_acquire_fence_drops_the_frame_and_the_session_goes_on() {
    if !sw_sync() {
        return;
    }
    let (p, c) = Channel::pair().unwrap();
    let consumer = thread::spawn(move || {
        let mut sink = VerifySink::new();
        pipeline::consume(c, &mut sink)
    });
    let mut prod = Producer::connect(
        p,
        ProducerOptions {
            name: "generator:box".into(),
            ..Default::default()
        },
        wire::FEATURE_FENCES,
    )
    .unwrap();
    let (mut a, _) = alloc::open(pipeline_alloc()).unwrap();
    for _ in 0..2 {
        prod.add_buffer(a.allocate(&layout()).unwrap()).unwrap();
    }
    let mut gen = Generator::new(Pattern::MovingBox, &layout());
    let tl = SwSyncTimeline::open().unwrap();
    for seq in 0..3u64 {
        let id = prod.acquire().unwrap().unwrap();
        gen.fill(id, &mut prod.write_access(id).unwrap(), seq);
        // Frame 1's acquire fence never signals.
        let fence = (seq == 1).then(|| tl.create_fence(1).unwrap());
        prod.submit(id, seq, fence).unwrap();
    }
    let stats = prod.finish().unwrap();
    assert_eq!(stats.produced, 3);
    let report = consumer.join().unwrap().unwrap();
    assert_eq!(report.error, None);
    assert_eq!(report.frames_delivered, 3);
    assert_eq!(report.frames_dropped, 1, "{report:?}");
    assert_eq!(report.frames_verified, 2, "{report:?}");
    drop(tl);
}
