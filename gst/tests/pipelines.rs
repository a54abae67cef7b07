//! Host tests of the plugin in real pipelines: `videotestsrc ! framesharesink` read by a
//! frameshare consumer that checks every frame against what the same `videotestsrc` produces
//! into an appsink (bytes compared row by row, padding excluded), with nothing copied through
//! the proposed pool; the copy path counted when upstream refuses it; `frameshare produce` read
//! by `framesharesrc ! appsink`, every frame checked by the generator's own verifier, the
//! memory the producer's (fd memory, as many objects as the producer has buffers); a format
//! change followed; and frames leaving over RTP on loopback.

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

type Consumer = std::thread::JoinHandle<Result<Vec<(u64, Vec<u8>)>, String>>;

/// Runs `pipeline` to EOS (panicking on an error or a timeout, or when `consumer` ended first:
/// with its error); returns the warnings posted.
fn run_to_eos(pipeline: &gst::Element, consumer: Option<&mut Option<Consumer>>) -> Vec<String> {
    pipeline.set_state(gst::State::Playing).expect("PLAYING");
    let bus = pipeline.bus().expect("bus");
    let mut warnings = Vec::new();
    let mut consumer = consumer;
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "no EOS within {TIMEOUT:?}");
        if let Some(c) = consumer.as_deref_mut() {
            if c.as_ref().is_some_and(|h| h.is_finished()) {
                let r = c.take().unwrap().join();
                pipeline.set_state(gst::State::Null).expect("NULL");
                panic!("the consumer ended before the pipeline's EOS: {r:?}");
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
        let mut got = Vec::new();
        loop {
            match sub
                .next(Some(TIMEOUT))
                .map_err(|e| format!("after {} frames: {e}", got.len()))?
            {
                SubscriberEvent::Frame(f) => {
                    let read = f.read().map_err(|e| format!("map: {e}"))?;
                    got.push((f.seq, packed(&read)));
                }
                SubscriberEvent::EndOfStream { .. } | SubscriberEvent::Ended { .. } => break,
                _ => {}
            }
        }
        Ok(got)
    }))
}

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
    let mut consumer = consume(&name);
    let pipeline = gst::parse::launch(&format!(
        "{source} ! framesharesink name=sink stream={name} wait-for-consumers=1 sync=false"
    ))
    .expect("pipeline");
    let warnings = run_to_eos(&pipeline, Some(&mut consumer));
    let sink = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("sink")
        .unwrap();
    let published = sink.property::<u64>("published");
    let copies = sink.property::<u64>("copies");
    let bytes = sink.property::<u64>("bytes-copied");
    pipeline.set_state(gst::State::Null).expect("NULL");
    let got = consumer
        .unwrap()
        .join()
        .expect("consumer thread")
        .expect("consumer");
    assert_eq!(published, want.len() as u64);
    assert_eq!((copies, bytes), (0, 0), "the pool path copies nothing");
    assert!(
        warnings.is_empty(),
        "no warning on the pool path: {warnings:?}"
    );
    assert_eq!(got.len(), want.len(), "every frame reached the consumer");
    for (i, (seq, bytes)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64, "frames in order");
        assert!(
            bytes == &want[i],
            "frame {i} differs from videotestsrc's ({} vs {} bytes)",
            bytes.len(),
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
    let mut consumer = consume(&name);
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
    let warnings = run_to_eos(&pipeline, Some(&mut consumer));
    let sink = bin.by_name("sink").unwrap();
    let copies = sink.property::<u64>("copies");
    let bytes = sink.property::<u64>("bytes-copied");
    pipeline.set_state(gst::State::Null).expect("NULL");
    let got = consumer
        .unwrap()
        .join()
        .expect("consumer thread")
        .expect("consumer");
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
    assert_eq!(got.len(), want.len());
    for (i, (_, bytes)) in got.iter().enumerate() {
        assert!(bytes == &want[i], "copied frame {i} differs");
    }
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
    let mut r = Received {
        frames: 0,
        objects: HashSet::new(),
        not_fd: 0,
        sizes: HashSet::new(),
    };
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
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
        r.sizes.insert((info.width(), info.height()));
        let scene = Scene::new(Pattern::MovingBox, rows.layout());
        if let Err(m) = scene.frame(seq).verify(&rows) {
            panic!("frame {seq} ({}): {m}", rows.fourcc());
        }
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
