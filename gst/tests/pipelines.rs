//! Host tests of the plugin in real pipelines: `videotestsrc ! framesharesink` read by a
//! frameshare consumer that checks every frame against what the same `videotestsrc` produces
//! into an appsink (bytes compared row by row, padding excluded), with nothing copied through
//! the proposed pool; the copy path counted when upstream refuses it; `frameshare produce` read
//! by `framesharesrc ! appsink`, every frame checked by the generator's own verifier, the
//! memory the producer's (fd memory, as many objects as the producer has buffers); a format
//! change followed on both elements; one sink read by several consumers at once; the source's
//! EOS when its producer dies and its reconnect when one comes back; and frames leaving over
//! RTP on loopback.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use frameshare::buffer::PixelRows;
use frameshare::bus::{StreamName, Subscriber, SubscriberEvent, SubscriberOptions};
use frameshare::source::{Pattern, Scene};
use gst::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Every row of every plane, padding dropped, laid end to end.
fn packed(rows: &impl PixelRows) -> Vec<u8> {
    let l = rows.layout().clone();
    let mut out = Vec::new();
    for p in 0..l.planes().len() {
        for r in 0..l.plane_rows(p) {
            out.extend_from_slice(rows.row(p, r));
        }
    }
    out
}

/// One frame a consumer received.
struct Got {
    seq: u64,
    size: (u32, u32),
    /// Every row of every plane, padding dropped.
    bytes: Vec<u8>,
}

/// What a consumer received: the frames, and how many buffers were announced to it (each
/// buffer's fds cross once, when announced; frames name a buffer by id).
struct Consumed {
    frames: Vec<Got>,
    announced: usize,
}

type Consumer = std::thread::JoinHandle<Result<Consumed, String>>;

/// Runs `pipeline` to EOS (panicking on an error or a timeout, or when one of `consumers`
/// ended first: with its error); returns the warnings posted.
fn run_to_eos(pipeline: &gst::Element, consumers: &mut [Option<Consumer>]) -> Vec<String> {
    pipeline.set_state(gst::State::Playing).expect("PLAYING");
    let bus = pipeline.bus().expect("bus");
    let mut warnings = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "no EOS within {TIMEOUT:?}");
        for c in consumers.iter_mut() {
            if c.as_ref().is_some_and(|h| h.is_finished()) {
                let r = c.take().unwrap().join().map(|r| r.map(|c| c.frames.len()));
                pipeline.set_state(gst::State::Null).expect("NULL");
                panic!("a consumer ended before the pipeline's EOS (frames or error): {r:?}");
            }
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("pipeline error: {} ({:?})", e.error(), e.debug()),
            gst::MessageView::Warning(w) => warnings.push(format!("{} {:?}", w.error(), w.debug())),
            _ => {}
        }
    }
    warnings
}

/// The frames `source` (a videotestsrc branch ending in caps) produces, packed, in order.
fn reference_frames(source: &str) -> Vec<Vec<u8>> {
    let pipeline = gst::parse::launch(&format!("{source} ! appsink name=out sync=false"))
        .expect("reference pipeline");
    let bin = pipeline.downcast_ref::<gst::Bin>().expect("a bin");
    let sink = bin
        .by_name("out")
        .expect("appsink")
        .downcast::<gst_app::AppSink>()
        .expect("appsink");
    pipeline.set_state(gst::State::Playing).expect("PLAYING");
    let mut frames = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let info = gst_video::VideoInfo::from_caps(sample.caps().expect("caps")).expect("video");
        let rows = GstRows::new(sample.buffer_owned().expect("buffer"), &info);
        frames.push(packed(&rows));
    }
    pipeline.set_state(gst::State::Null).expect("NULL");
    assert!(
        !frames.is_empty(),
        "the reference pipeline produced nothing"
    );
    frames
}

/// A consumer in a thread: every frame of stream `name`, packed, with its sequence number.
fn consume(name: &str) -> Option<Consumer> {
    let name = StreamName::new(name).expect("stream name");
    Some(std::thread::spawn(move || {
        let opts = SubscriberOptions {
            name: "gst-test".into(),
            ..SubscriberOptions::default()
        };
        let mut sub = Subscriber::connect(name, opts).map_err(|e| format!("subscribe: {e}"))?;
        let mut got = Consumed {
            frames: Vec::new(),
            announced: 0,
        };
        loop {
            match sub
                .next(Some(TIMEOUT))
                .map_err(|e| format!("after {} frames: {e}", got.frames.len()))?
            {
                SubscriberEvent::Frame(f) => {
                    let read = f.read().map_err(|e| format!("map: {e}"))?;
                    let l = f.buffer().layout();
                    got.frames.push(Got {
                        seq: f.seq,
                        size: (l.width(), l.height()),
                        bytes: packed(&read),
                    });
                }
                SubscriberEvent::BufferAdded { .. } => got.announced += 1,
                SubscriberEvent::EndOfStream { .. } | SubscriberEvent::Ended { .. } => break,
                _ => {}
            }
        }
        Ok(got)
    }))
}

/// Joins a consumer thread.
fn joined(c: Option<Consumer>) -> Consumed {
    c.expect("a consumer")
        .join()
        .expect("consumer thread")
        .expect("consumer")
}

/// The sink's counters: (published, copies, bytes-copied).
fn sink_counters(pipeline: &gst::Element) -> (u64, u64, u64) {
    let sink = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("sink")
        .expect("an element named sink");
    (
        sink.property::<u64>("published"),
        sink.property::<u64>("copies"),
        sink.property::<u64>("bytes-copied"),
    )
}

/// Most buffers upstream may take from the sink's proposed pool (`MAX_POOL_BUFFERS`).
const MAX_POOL_BUFFERS: usize = 16;

/// `videotestsrc ! framesharesink`: the consumer sees exactly videotestsrc's frames, and the
/// sink copied nothing (videotestsrc wrote into the proposed pool's shared buffers).
fn sink_through_pool(format: &str) {
    init();
    let name = stream_name(&format!("pool-{format}"));
    // horizontal-speed moves the bars every frame: each frame differs from the one before.
    let source = format!(
        "videotestsrc num-buffers=24 pattern=smpte horizontal-speed=7 ! \
         video/x-raw,format={format},width=322,height=240,framerate=30/1"
    );
    let want = reference_frames(&source);
    let consumer = consume(&name);
    let pipeline = gst::parse::launch(&format!(
        "{source} ! framesharesink name=sink stream={name} wait-for-consumers=1 sync=false"
    ))
    .expect("pipeline");
    let mut consumers = [consumer];
    let warnings = run_to_eos(&pipeline, &mut consumers);
    let (published, copies, bytes) = sink_counters(&pipeline);
    pipeline.set_state(gst::State::Null).expect("NULL");
    let [consumer] = consumers;
    let got = joined(consumer);
    assert_eq!(published, want.len() as u64);
    assert_eq!((copies, bytes), (0, 0), "the pool path copies nothing");
    assert!(
        warnings.is_empty(),
        "no warning on the pool path: {warnings:?}"
    );
    assert_frames_are(&got, &want);
    // Zero copy, and each buffer's fds sent once: the pool's few buffers were announced, and
    // every frame after that named one of them.
    assert!(
        (1..=MAX_POOL_BUFFERS).contains(&got.announced) && got.announced < want.len(),
        "{} buffers announced for {} frames: fds are sent once per buffer",
        got.announced,
        want.len()
    );
}

/// `got` holds exactly the frames `want`, in order.
fn assert_frames_are(got: &Consumed, want: &[Vec<u8>]) {
    assert_eq!(
        got.frames.len(),
        want.len(),
        "every frame reached the consumer"
    );
    for (i, f) in got.frames.iter().enumerate() {
        assert_eq!(f.seq, i as u64, "frames in order");
        assert!(
            f.bytes == want[i],
            "frame {i} differs from videotestsrc's ({} vs {} bytes)",
            f.bytes.len(),
            want[i].len()
        );
    }
}

#[test]
fn sink_bgrx_through_the_proposed_pool_copies_nothing() {
    sink_through_pool("BGRx");
}

#[test]
fn sink_nv12_through_the_proposed_pool_copies_nothing() {
    sink_through_pool("NV12");
}

/// An upstream that brings its own system memory (appsrc) is copied, counted, warned about once.
#[test]
fn sink_copies_system_memory_and_says_so_once() {
    init();
    let name = stream_name("copy");
    let caps = "video/x-raw,format=RGBx,width=160,height=120,framerate=30/1";
    let want = reference_frames(&format!("videotestsrc num-buffers=6 pattern=ball ! {caps}"));
    let consumer = consume(&name);
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src caps={caps} format=time ! framesharesink name=sink stream={name} \
         wait-for-consumers=1 sync=false"
    ))
    .expect("pipeline");
    let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
    let src = bin
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    for (i, f) in want.iter().enumerate() {
        let mut b = gst::Buffer::from_slice(f.clone());
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(33 * i as u64));
        src.push_buffer(b).expect("push");
    }
    src.end_of_stream().expect("eos");
    let mut consumers = [consumer];
    let warnings = run_to_eos(&pipeline, &mut consumers);
    let (_, copies, bytes) = sink_counters(&pipeline);
    pipeline.set_state(gst::State::Null).expect("NULL");
    let [consumer] = consumers;
    let got = joined(consumer);
    assert_eq!(copies, want.len() as u64);
    assert_eq!(bytes, (want.len() * 160 * 120 * 4) as u64);
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.contains("copying frames"))
            .count(),
        1,
        "one warning for the copies: {warnings:?}"
    );
    assert_eq!(got.frames.len(), want.len());
    for (i, f) in got.frames.iter().enumerate() {
        assert!(f.bytes == want[i], "copied frame {i} differs");
    }
}

/// One sink, three consumers at once (two in this process, one `frameshare consume` process):
/// each gets every frame, the in-process ones byte for byte as videotestsrc made them; the
/// sink copied nothing.
#[test]
fn sink_serves_many_consumers() {
    init();
    let name = stream_name("many");
    let source = "videotestsrc num-buffers=20 pattern=smpte horizontal-speed=5 ! \
                  video/x-raw,format=BGRx,width=200,height=120,framerate=30/1";
    let want = reference_frames(source);
    let cli = Proc::spawn(
        frameshare(&[
            "consume", "--stream", &name, "--sink", "null", "--wait", "60", "--json",
        ]),
        "frameshare consume",
    );
    let mut consumers = [consume(&name), consume(&name)];
    let pipeline = gst::parse::launch(&format!(
        "{source} ! framesharesink name=sink stream={name} wait-for-consumers=3 sync=false"
    ))
    .expect("pipeline");
    let warnings = run_to_eos(&pipeline, &mut consumers);
    let (published, copies, bytes) = sink_counters(&pipeline);
    pipeline.set_state(gst::State::Null).expect("NULL");
    assert_eq!(published, want.len() as u64);
    assert_eq!((copies, bytes), (0, 0), "nothing copied for any consumer");
    assert!(warnings.is_empty(), "{warnings:?}");
    for c in consumers {
        assert_frames_are(&joined(c), &want);
    }
    let (ok, out, err) = cli.finish(TIMEOUT);
    assert!(ok, "frameshare consume failed:\n{out}\n{err}");
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("consumer JSON: {e}:\n{out}"));
    assert_eq!(
        report["frames_delivered"].as_u64(),
        Some(want.len() as u64),
        "{report}"
    );
    assert_eq!(report["bytes_copied"].as_u64(), Some(0), "{report}");
}

/// The caps change mid-stream (BGRx 320x240 to NV12 160x120, set on a capsfilter after the
/// tenth buffer): videotestsrc renegotiates, takes a new pool from the sink, and the consumer
/// gets the new format's buffers announced and every frame, still without a copy; the frames
/// before the change are videotestsrc's.
#[test]
fn sink_follows_a_caps_change() {
    init();
    let name = stream_name("sink-change");
    let first = "video/x-raw,format=BGRx,width=320,height=240,framerate=30/1";
    let second = "video/x-raw,format=NV12,width=160,height=120,framerate=30/1";
    let change_after = 10;
    let want = reference_frames(&format!(
        "videotestsrc num-buffers={change_after} pattern=smpte horizontal-speed=3 ! {first}"
    ));
    let consumer = consume(&name);
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=30 pattern=smpte horizontal-speed=3 ! capsfilter name=cf \
         caps={first} ! framesharesink name=sink stream={name} wait-for-consumers=1 sync=false"
    ))
    .expect("pipeline");
    let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
    let capsfilter = bin.by_name("cf").unwrap();
    let new_caps: gst::Caps = second.parse().unwrap();
    let seen = std::sync::atomic::AtomicU64::new(0);
    bin.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == change_after {
                capsfilter.set_property("caps", &new_caps);
            }
            gst::PadProbeReturn::Ok
        });
    let mut consumers = [consumer];
    let warnings = run_to_eos(&pipeline, &mut consumers);
    let (published, copies, bytes) = sink_counters(&pipeline);
    pipeline.set_state(gst::State::Null).expect("NULL");
    let [consumer] = consumers;
    let got = joined(consumer);
    assert_eq!(published, 30);
    assert_eq!((copies, bytes), (0, 0), "both formats through the pool");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(got.frames.len(), 30, "every frame reached the consumer");
    let sizes: Vec<(u32, u32)> = got.frames.iter().map(|f| f.size).collect();
    let switch = sizes
        .iter()
        .position(|s| *s == (160, 120))
        .unwrap_or_else(|| panic!("no frame after the change: {sizes:?}"));
    assert!(switch >= change_after as usize, "{sizes:?}");
    assert!(
        sizes[..switch].iter().all(|s| *s == (320, 240))
            && sizes[switch..].iter().all(|s| *s == (160, 120)),
        "one change, in order: {sizes:?}"
    );
    for (i, f) in got.frames[..change_after as usize].iter().enumerate() {
        assert!(f.bytes == want[i], "frame {i} differs from videotestsrc's");
    }
    let nv12_bytes = (160 * 120 * 3 / 2) as usize;
    assert!(
        got.frames[switch..]
            .iter()
            .all(|f| f.bytes.len() == nv12_bytes),
        "the frames after the change are NV12"
    );
    assert!(
        got.announced >= 2 && got.announced <= 2 * MAX_POOL_BUFFERS,
        "buffers of both pools announced, each once: {}",
        got.announced
    );
}

/// What `framesharesrc ! appsink` received from `frameshare produce`.
struct Received {
    frames: u64,
    /// Distinct memory objects (inodes) the frames were in.
    objects: HashSet<(u64, u64)>,
    /// Frames whose memory was not the producer's fds (wrapped SysV memory counts as its own).
    not_fd: u64,
    sizes: HashSet<(u32, u32)>,
}

/// Checks a sample from `framesharesrc` with the generator's verifier (its frame number is the
/// buffer's offset) and notes its memory in `r`; returns the frame number and size.
fn verified(sample: &gst::Sample, r: &mut Received) -> (u64, (u32, u32)) {
    let info = gst_video::VideoInfo::from_caps(sample.caps().expect("caps")).expect("video");
    let buffer = sample.buffer_owned().expect("buffer");
    let seq = buffer.offset();
    for mem in buffer.iter_memories() {
        match mem.downcast_memory_ref::<gst_allocators::FdMemory>() {
            Some(fd) => {
                let st = std::fs::metadata(format!("/proc/self/fd/{}", fd.fd()))
                    .expect("the memory's fd is open");
                use std::os::unix::fs::MetadataExt;
                r.objects.insert((st.dev(), st.ino()));
            }
            None => r.not_fd += 1,
        }
    }
    let rows = GstRows::new(buffer, &info);
    let scene = Scene::new(Pattern::MovingBox, rows.layout());
    if let Err(m) = scene.frame(seq).verify(&rows) {
        panic!("frame {seq} ({}): {m}", rows.fourcc());
    }
    (seq, (info.width(), info.height()))
}

impl Received {
    fn new() -> Received {
        Received {
            frames: 0,
            objects: HashSet::new(),
            not_fd: 0,
            sizes: HashSet::new(),
        }
    }
}

/// `frameshare produce ARGS` → `framesharesrc ! appsink`, every frame verified by the generator.
fn src_from_producer(tag: &str, produce: &[&str]) -> Received {
    init();
    let name = stream_name(tag);
    let mut args = vec!["produce", "--stream", &name];
    args.extend_from_slice(produce);
    let producer = Proc::spawn(frameshare(&args), "frameshare produce");
    let pipeline = gst::parse::launch(&format!(
        "framesharesrc name=src stream={name} ! appsink name=out sync=false"
    ))
    .expect("pipeline");
    let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
    let sink = bin
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).expect("PLAYING");
    let mut r = Received::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        let (_, size) = verified(&sample, &mut r);
        r.sizes.insert(size);
        r.frames += 1;
    }
    let frames_prop = bin.by_name("src").unwrap().property::<u64>("frames");
    pipeline.set_state(gst::State::Null).expect("NULL");
    let (ok, out, err) = producer.finish(TIMEOUT);
    assert!(ok, "frameshare produce failed:\n{out}\n{err}");
    assert!(sink.is_eos(), "the stream's end reached the appsink as EOS");
    assert_eq!(frames_prop, r.frames);
    r
}

#[test]
fn src_memfd_frames_verified_without_copies() {
    let r = src_from_producer(
        "src-memfd",
        &[
            "--frames", "40", "--size", "320x240", "--alloc", "memfd", "--format", "XR24",
        ],
    );
    assert_eq!(r.frames, 40, "every frame arrived");
    assert_eq!(r.not_fd, 0, "every memory wraps the producer's fds");
    assert!(
        (1..=4).contains(&r.objects.len()),
        "the frames lie in the producer's 4 buffers, not copies: {} objects",
        r.objects.len()
    );
}

#[test]
fn src_nv12_posix_shm_frames_verified_without_copies() {
    let r = src_from_producer(
        "src-nv12",
        &[
            "--frames",
            "30",
            "--size",
            "256x144",
            "--alloc",
            "posix-shm",
            "--format",
            "NV12",
        ],
    );
    assert_eq!(r.frames, 30);
    assert_eq!(r.not_fd, 0);
    assert!(
        (1..=4).contains(&r.objects.len()),
        "{} objects",
        r.objects.len()
    );
}

#[test]
fn src_sysv_frames_are_wrapped_memory() {
    let r = src_from_producer(
        "src-sysv",
        &[
            "--frames", "20", "--size", "160x120", "--alloc", "sysv-shm", "--format", "YUYV",
        ],
    );
    assert_eq!(r.frames, 20);
    assert_eq!(
        r.not_fd, 20,
        "SysV segments have no fd: wrapped memory over the mapping"
    );
}

#[test]
fn src_caps_follow_a_format_change() {
    let r = src_from_producer(
        "src-change",
        &[
            "--frames",
            "30",
            "--alloc",
            "memfd",
            "--size",
            "96x64",
            "--change-size-every",
            "10",
            "--sizes",
            "320x240,160x120",
        ],
    );
    assert_eq!(r.frames, 30);
    let want: HashSet<(u32, u32)> = [(320, 240), (160, 120), (96, 64)].into();
    assert_eq!(r.sizes, want, "caps followed each size");
}

/// `frameshare produce` at 30 fps, until killed, on stream `name`.
fn endless_producer(name: &str) -> Proc {
    Proc::spawn(
        frameshare(&[
            "produce", "--stream", name, "--frames", "0", "--fps", "30", "--size", "160x120",
            "--alloc", "memfd",
        ]),
        "frameshare produce (endless)",
    )
}

/// SIGKILL: the producer goes away without ending its stream.
fn kill(mut p: Proc) {
    let mut child = p.0.take().expect("running");
    child.kill().expect("kill");
    child.wait().expect("wait");
}

/// `framesharesrc stream=NAME PROPS ! appsink`, playing; returns the pipeline and its appsink.
fn src_pipeline(name: &str, props: &str) -> (gst::Element, gst_app::AppSink) {
    let pipeline = gst::parse::launch(&format!(
        "framesharesrc name=src stream={name} {props} ! appsink name=out sync=false"
    ))
    .expect("pipeline");
    let sink = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).expect("PLAYING");
    (pipeline, sink)
}

/// The errors `pipeline` posted.
fn errors(pipeline: &gst::Element) -> Vec<String> {
    let bus = pipeline.bus().expect("bus");
    std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Error]))
        .map(|m| format!("{m:?}"))
        .collect()
}

/// A producer killed mid-stream (no clean end) is the end of the stream for a source without
/// `reconnect`: EOS downstream, not an error.
#[test]
fn src_eos_when_the_producer_dies() {
    init();
    let name = stream_name("src-dies");
    let producer = endless_producer(&name);
    let (pipeline, sink) = src_pipeline(&name, "");
    let mut r = Received::new();
    for _ in 0..5 {
        let sample = sink
            .try_pull_sample(gst::ClockTime::from_seconds(30))
            .expect("a frame before the producer dies");
        verified(&sample, &mut r);
    }
    kill(producer);
    // The frames already queued, then the end.
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        verified(&sample, &mut r);
    }
    assert!(
        sink.is_eos(),
        "the producer's death reached the appsink as EOS"
    );
    assert_eq!(errors(&pipeline), Vec::<String>::new());
    pipeline.set_state(gst::State::Null).expect("NULL");
}

/// With `reconnect=true` the source outlives a killed producer: it waits, takes the restarted
/// producer's new buffers, and goes on with its frames (each verified) until that one ends the
/// stream cleanly, which is EOS.
#[test]
fn src_reconnects_to_a_restarted_producer() {
    init();
    let name = stream_name("src-reconnect");
    let producer = endless_producer(&name);
    let (pipeline, sink) = src_pipeline(&name, "reconnect=true");
    let mut r = Received::new();
    let mut seqs = Vec::new();
    for _ in 0..10 {
        let sample = sink
            .try_pull_sample(gst::ClockTime::from_seconds(30))
            .expect("a frame from the first producer");
        seqs.push(verified(&sample, &mut r).0);
    }
    kill(producer);
    let second_frames = 15u64;
    let second = Proc::spawn(
        frameshare(&[
            "produce",
            "--stream",
            &name,
            "--frames",
            &second_frames.to_string(),
            "--size",
            "160x120",
            "--alloc",
            "memfd",
        ]),
        "frameshare produce (restarted)",
    );
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        seqs.push(verified(&sample, &mut r).0);
    }
    assert!(sink.is_eos(), "the restarted producer's end is EOS");
    assert_eq!(errors(&pipeline), Vec::<String>::new());
    pipeline.set_state(gst::State::Null).expect("NULL");
    let (ok, out, err) = second.finish(TIMEOUT);
    assert!(ok, "the restarted producer failed:\n{out}\n{err}");
    // The first producer's frames 0..k, then the second's 0..15: nothing lost on either side.
    let restart = seqs
        .iter()
        .rposition(|&s| s == 0)
        .expect("frames numbered from 0");
    assert!(
        restart >= 10,
        "the second producer's frames come after the first's: {seqs:?}"
    );
    assert!(
        seqs[..restart].iter().copied().eq(0..restart as u64),
        "the first producer's frames in order: {seqs:?}"
    );
    assert!(
        seqs[restart..].iter().copied().eq(0..second_frames),
        "every frame of the restarted producer: {seqs:?}"
    );
    assert_eq!(r.not_fd, 0, "fd memory on both sides of the restart");
}

/// `policy=latest` with a downstream slower than the producer: the producer never waits for
/// this consumer (all its frames go out at its own pace), the source skips what it could not
/// take, and what it pushes is in order and verified.
#[test]
fn src_latest_policy_skips_frames_a_slow_downstream_cannot_take() {
    init();
    let name = stream_name("src-latest");
    let frames = 60u64;
    let producer = Proc::spawn(
        frameshare(&[
            "produce",
            "--stream",
            &name,
            "--frames",
            &frames.to_string(),
            "--fps",
            "60",
            "--size",
            "160x120",
            "--alloc",
            "memfd",
        ]),
        "frameshare produce",
    );
    let (pipeline, sink) = src_pipeline(&name, "policy=latest");
    sink.set_max_buffers(1);
    let mut r = Received::new();
    let mut seqs = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        seqs.push(verified(&sample, &mut r).0);
        drop(sample);
        // Downstream takes 50 ms a frame: about a third of the producer's rate.
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sink.is_eos(), "the stream's end is EOS");
    assert_eq!(errors(&pipeline), Vec::<String>::new());
    pipeline.set_state(gst::State::Null).expect("NULL");
    let (ok, out, err) = producer.finish(TIMEOUT);
    assert!(ok, "the producer failed:\n{out}\n{err}");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "frames in order: {seqs:?}"
    );
    assert!(
        !seqs.is_empty() && (seqs.len() as u64) < frames,
        "frames skipped for a slow downstream: {} of {frames}: {seqs:?}",
        seqs.len()
    );
}

/// Frames leave the machine encoded: `framesharesrc ! vp8enc ! rtpvp8pay ! udpsink` to
/// 127.0.0.1, received by `udpsrc ! rtpvp8depay ! vp8dec` in this process; every frame counted
/// and the picture checked (the producer's solid colour, within VP8's loss).
#[test]
fn frames_leave_over_rtp_on_loopback() {
    init();
    let name = stream_name("rtp");
    let frames = 30u64;
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port");
        s.local_addr().unwrap().port()
    };
    let rx = gst::parse::launch(&format!(
        "udpsrc address=127.0.0.1 port={port} \
         caps=application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=96 ! \
         rtpvp8depay ! vp8dec ! videoconvert ! video/x-raw,format=RGBx ! \
         appsink name=out sync=false"
    ))
    .expect("receiver");
    let sink = rx
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    rx.set_state(gst::State::Playing).expect("PLAYING");
    let producer = Proc::spawn(
        frameshare(&[
            "produce",
            "--stream",
            &name,
            "--frames",
            &frames.to_string(),
            "--size",
            "320x240",
            "--alloc",
            "memfd",
            "--pattern",
            "solid:2080c0",
            "--fps",
            "30",
        ]),
        "frameshare produce",
    );
    let sender = Proc::spawn(
        gst_launch(&format!(
            "framesharesrc stream={name} ! videoconvert ! vp8enc deadline=1 keyframe-max-dist=10 ! \
             rtpvp8pay pt=96 ! udpsink host=127.0.0.1 port={port}"
        )),
        "gst-launch-1.0 sender",
    );
    let mut got = 0u64;
    let mut worst = 0u32;
    while got < frames {
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(20)) else {
            break;
        };
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let rows = GstRows::new(sample.buffer_owned().unwrap(), &info);
        // Rows below the generator's stamp, centre columns: the solid colour.
        let row = rows.row(0, info.height() / 2);
        for px in row[row.len() / 4..row.len() * 3 / 4].chunks(4) {
            for (c, want) in px[..3].iter().zip([0x20u8, 0x80, 0xc0]) {
                worst = worst.max(c.abs_diff(want) as u32);
            }
        }
        got += 1;
    }
    let (ok, out, err) = sender.finish(TIMEOUT);
    assert!(ok, "sender failed:\n{out}\n{err}");
    let (ok, out, err) = producer.finish(TIMEOUT);
    assert!(ok, "producer failed:\n{out}\n{err}");
    rx.set_state(gst::State::Null).expect("NULL");
    assert_eq!(got, frames, "every frame crossed RTP and decoded");
    assert!(worst <= 16, "decoded colour off by {worst} from 20 80 c0");
}

/// `gst-inspect-1.0` finds both elements in the built plugin and lists their properties.
#[test]
fn gst_inspect_lists_the_properties() {
    init();
    for (element, props) in [
        (
            "framesharesink",
            &[
                "stream",
                "socket",
                "alloc",
                "wait-for-consumers",
                "pool-buffers",
                "published",
                "copies",
                "bytes-copied",
            ][..],
        ),
        (
            "framesharesrc",
            &[
                "stream",
                "socket",
                "policy",
                "reconnect",
                "connect-timeout",
                "frames",
            ][..],
        ),
    ] {
        let out = std::process::Command::new("gst-inspect-1.0")
            .arg(element)
            .env("GST_PLUGIN_PATH", plugin_dir())
            .output()
            .expect("gst-inspect-1.0");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "gst-inspect-1.0 {element}: {text}");
        for p in props {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{p} "))),
                "{element} lists no property {p}:\n{text}"
            );
        }
    }
}
