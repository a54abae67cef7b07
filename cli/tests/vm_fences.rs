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

use common::{capture_logs, generator, generator_options, logged, need, run_json};
use frameshare::alloc;
use frameshare::buffer::{Access, Buffer, BufferMapping};
use frameshare::bus::{
    ByeCode, Channel, Frame, Publisher, PublisherOptions, SubscribeError, Subscriber,
    SubscriberEvent, SubscriberOptions,
};
use frameshare::format::{Fourcc, FrameLayout};
use frameshare::pipeline::{self, ConsumeOptions, ProduceOptions, ProduceReport};
use frameshare::sink::verify::VerifySink;
use frameshare::source::{Generator, GeneratorSource, Pattern, Scene};
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

fn layout() -> FrameLayout {
    FrameLayout::linear(Fourcc::XR24, 160, 120, 64).unwrap()
}

/// A publisher (in a thread, options `opts`) of `frames` frames of the generator (as `source`
/// makes it) in `buffers` buffers to one consumer: the subscriber returned (for a
/// hand-written consumer).
fn spawn_producer(
    buffers: usize,
    frames: u64,
    opts: PublisherOptions,
    source: impl FnOnce(GeneratorSource) -> GeneratorSource,
) -> (
    thread::JoinHandle<Result<ProduceReport, pipeline::PipelineError>>,
    Subscriber,
) {
    let (ours, theirs) = Channel::pair().unwrap();
    let mut source = source(generator(pipeline_alloc(), &layout(), buffers));
    let producer = thread::spawn(move || {
        let mut publisher = Publisher::new(opts)?;
        publisher.add_connection(ours, true)?;
        let popts = ProduceOptions {
            frames: Some(frames),
            wait_for: 1,
            ..ProduceOptions::default()
        };
        pipeline::produce(publisher, &mut source, &popts)
    });
    let opts = SubscriberOptions {
        name: "fence-test".into(),
        ..SubscriberOptions::default()
    };
    (producer, Subscriber::from_channel(theirs, opts).unwrap())
}

/// A hand-written consumer's view of the pool: read-only mappings and the generator's scene.
struct Checker {
    scene: Scene,
    maps: HashMap<u32, BufferMapping>,
}

impl Checker {
    /// From the first event, the producer's Hello: its pattern.
    fn new(sub: &mut Subscriber) -> Checker {
        let SubscriberEvent::Connected { producer, .. } = sub.next(Some(WAIT)).unwrap() else {
            panic!("the first event is Connected");
        };
        let pattern: Pattern = producer.pattern.as_deref().unwrap().parse().unwrap();
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

    fn holds_frame(&mut self, f: &Frame) -> bool {
        self.holds(f.id, f.seq)
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn is_timeout(r: &Result<SubscriberEvent, SubscribeError>) -> bool {
    matches!(r, Err(SubscribeError::Timeout(_)))
}

/// The stream ended normally.
fn ended_done(code: ByeCode, reason: &str) {
    assert_eq!(code, ByeCode::Done, "{reason}");
    assert_eq!(reason, "stream ended");
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
/// pixels exist, so a consumer that does not wait reads stale pixels; waiting fixes it. The
/// producer writes each frame only when this consumer lets it (after it read the stale pixels),
/// so the order is the same on any machine, however loaded.
#[test]
fn acquire_fence_mode_sends_before_writing() {
    if !sw_sync() {
        return;
    }
    let frames = 8;
    let (write_now, may_write) = std::sync::mpsc::channel::<()>();
    let (producer, mut sub) = spawn_producer(2, frames, generator_options(), move |g| {
        // (Once this consumer is gone, nothing holds the writes.)
        g.with_gated_acquire_fence(move |_| {
            let _ = may_write.recv();
        })
        .unwrap()
    });
    let mut check = Checker::new(&mut sub);
    let (mut stale, mut good) = (0, 0);
    loop {
        match sub.next(Some(WAIT)).unwrap() {
            SubscriberEvent::BufferAdded { id, buffer } => check.add(id, &buffer),
            SubscriberEvent::Frame(mut f) => {
                let fence = f
                    .take_acquire_fence()
                    .expect("every frame carries an acquire fence");
                assert_eq!(fence.status().unwrap(), FenceStatus::Active);
                if !check.holds_frame(&f) {
                    stale += 1;
                }
                assert_eq!(
                    fence.status().unwrap(),
                    FenceStatus::Active,
                    "the fence signalled before the producer was let write frame {}",
                    f.seq
                );
                write_now.send(()).unwrap();
                fence.wait(Duration::from_secs(2)).unwrap();
                if check.holds_frame(&f) {
                    good += 1;
                }
                f.release(None).unwrap();
            }
            // Every frame was released already: nothing to give back.
            SubscriberEvent::EndOfStream { .. } => {}
            SubscriberEvent::Ended { code, reason } => {
                ended_done(code, &reason);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let report = producer.join().unwrap().unwrap();
    assert_eq!(report.frames_produced, frames);
    assert_eq!(stale, frames, "every frame read before its fence was stale");
    assert_eq!(good, frames, "every frame read after its fence was right");
}

#[test]
fn producer_waits_for_release_fences_before_rewriting() {
    if !sw_sync() {
        return;
    }
    let frames = 5;
    let hold = Duration::from_millis(300);
    // One buffer: every frame after the first must wait for the previous release fence.
    let opts = PublisherOptions {
        fence_timeout: Duration::from_secs(5),
        ..generator_options()
    };
    let (producer, mut sub) = spawn_producer(1, frames, opts, |g| g);
    let mut check = Checker::new(&mut sub);
    let tl = SwSyncTimeline::open().unwrap();
    let mut pending: Option<SubscriberEvent> = None;
    let mut seen = 0;
    let mut resume = Vec::new();
    loop {
        let event = match pending.take() {
            Some(e) => e,
            None => sub.next(Some(WAIT)).unwrap(),
        };
        match event {
            SubscriberEvent::BufferAdded { id, buffer } => check.add(id, &buffer),
            SubscriberEvent::Frame(f) => {
                seen += 1;
                let (id, seq) = (f.id, f.seq);
                assert!(check.holds(id, seq), "frame {seq} pixels");
                let fence = tl.create_fence(tl.value() + 1).unwrap();
                f.release(Some(fence)).unwrap();
                // Released, but fenced: the producer must neither send nor write the buffer.
                let next = sub.next(Some(hold));
                if seen < frames {
                    assert!(
                        is_timeout(&next),
                        "frame {seq}: producer went on before the release fence signalled: {next:?}"
                    );
                }
                assert!(
                    check.holds(id, seq),
                    "frame {seq}: buffer rewritten under an unsignalled release fence"
                );
                let t = Instant::now();
                tl.advance(1).unwrap();
                if seen < frames {
                    let e = sub.next(Some(Duration::from_secs(5))).unwrap();
                    resume.push(t.elapsed());
                    assert!(matches!(e, SubscriberEvent::Frame(_)), "{e:?}");
                    pending = Some(e);
                } else if let Ok(e) = next {
                    pending = Some(e);
                }
            }
            // Every frame was released already: nothing to give back.
            SubscriberEvent::EndOfStream { .. } => {}
            SubscriberEvent::Ended { code, reason } => {
                ended_done(code, &reason);
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
    capture_logs();
    let frames = 10;
    let opts = PublisherOptions {
        fence_timeout: Duration::from_millis(200),
        ..generator_options()
    };
    let (producer, mut sub) = spawn_producer(2, frames, opts, |g| g);
    let mut check = Checker::new(&mut sub);
    let tl = SwSyncTimeline::open().unwrap(); // never advanced; alive until the end
    let mut poisoned = None;
    let mut delivered = 0;
    loop {
        match sub.next(Some(WAIT)).unwrap() {
            SubscriberEvent::BufferAdded { id, buffer } => check.add(id, &buffer),
            SubscriberEvent::Frame(f) => {
                delivered += 1;
                assert!(check.holds_frame(&f), "frame {}", f.seq);
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
                f.release(fence).unwrap();
            }
            // Every frame was released already: nothing to give back.
            SubscriberEvent::EndOfStream { .. } => {}
            SubscriberEvent::Ended { code, reason } => {
                ended_done(code, &reason);
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
    let said = logged(&[
        &format!("buffer {}: release fence", poisoned.unwrap()),
        "did not signal",
        "frame dropped",
    ]);
    assert_eq!(said.len() as u64, report.fence_timeouts, "{said:?}");
    drop(tl);
}

#[test]
fn never_signalling_acquire_fence_drops_the_frame_and_the_session_goes_on() {
    if !sw_sync() {
        return;
    }
    let (ours, theirs) = Channel::pair().unwrap();
    let mut publisher = Publisher::new(generator_options()).unwrap();
    publisher.add_connection(ours, true).unwrap();
    let consumer = thread::spawn(move || {
        let mut sink = VerifySink::new();
        let mut sub = Subscriber::from_channel(theirs, common::subscriber_options(&sink))?;
        pipeline::consume(&mut sub, &mut sink, &ConsumeOptions::default())
    });
    assert!(publisher.wait_for_consumers(1, Some(WAIT)).unwrap());
    let (mut a, _) = alloc::open(pipeline_alloc()).unwrap();
    let buffers = (0..2).map(|_| a.allocate(&layout()).unwrap()).collect();
    publisher.set_buffers(buffers).unwrap();
    let mut gen = Generator::new(Pattern::MovingBox, &layout());
    let tl = SwSyncTimeline::open().unwrap();
    for seq in 0..3u64 {
        let mut loan = publisher.loan().unwrap().unwrap();
        let id = loan.id();
        gen.fill(id, &mut loan.write().unwrap(), seq);
        // Frame 1's acquire fence never signals.
        if seq == 1 {
            loan.set_acquire_fence(tl.create_fence(1).unwrap());
        }
        loan.publish(seq).unwrap();
    }
    let stats = publisher.finish().unwrap();
    assert_eq!(stats.published, 3);
    let report = consumer.join().unwrap().unwrap();
    assert_eq!(report.error, None);
    assert_eq!(report.frames_delivered, 3);
    assert_eq!(report.frames_dropped, 1, "{report:?}");
    assert_eq!(report.frames_verified, 2, "{report:?}");
    drop(tl);
}
