//! VM tests of the KMS sink on vkms: generator frames shown with atomic commits and captured
//! through the writeback connector, compared pixel-exact; release fences from the out-fence of
//! the replacing commit; IN_FENCE_FD honoured; non-dma-buf buffers refused; the two-process run
//! with `--sink kms:vkms:verify-writeback`; GBM buffers scanned out; held releases (a frame
//! goes back only once it left the screen, the last one when the stream goes idle).
//!
//! Run: `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/vm-run cargo test --release
//! --features gbm,v4l2 --test vm_kms`. On a host without vkms each test says "skipped".

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use frameshare::alloc;
use frameshare::buffer::{Access, Buffer};
use frameshare::format::{Fourcc, FrameLayout};
use frameshare::sink::kms::{Captured, DeviceSpec, KmsDisplay, KmsError, KmsOptions, KmsSink};
use frameshare::source::{Generator, Pattern, Scene};
use frameshare::sync::SwSyncTimeline;

/// vkms is one display with one DRM master at a time: tests take it one at a time, so the file
/// passes with parallel test threads too.
static DISPLAY: Mutex<()> = Mutex::new(());

/// vkms's card node, found by driver (its number differs between kernels); while the returned
/// lock is held, no other test of this file uses the display.
fn vkms() -> Option<MutexGuard<'static, ()>> {
    if !common::need("/dev/dri/card1") {
        return None;
    }
    let found = std::fs::read_dir("/sys/class/drm")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_link(e.path().join("device"))
                .map(|p| p.to_string_lossy().ends_with("vkms"))
                .unwrap_or(false)
        });
    if !found {
        assert!(!common::in_vm(), "no vkms device inside the VM");
        eprintln!("skipped: needs the VM (no vkms)");
    }
    found.then(|| DISPLAY.lock().unwrap_or_else(|e| e.into_inner()))
}

fn vkms_options(verify: bool) -> KmsOptions {
    KmsOptions {
        device: DeviceSpec::Driver("vkms".into()),
        connector: None,
        verify_writeback: verify,
        ..Default::default()
    }
}

fn display(verify: bool) -> KmsDisplay {
    KmsDisplay::open(&vkms_options(verify)).unwrap_or_else(|e| panic!("opening vkms: {e}"))
}

fn pool(alloc_name: &str, layout: &FrameLayout, n: usize) -> Vec<Buffer> {
    let (mut a, _) = alloc::open(alloc_name).unwrap_or_else(|e| panic!("{alloc_name}: {e}"));
    (0..n)
        .map(|_| {
            a.allocate(layout)
                .unwrap_or_else(|e| panic!("{alloc_name}: {e}"))
        })
        .collect()
}

/// Checks a capture against the generator's frame, independently of the sink's own check.
fn assert_capture_matches(cap: &Captured, scene: &Scene, layout: &FrameLayout, seq: u64) {
    assert!(cap.width >= layout.width() && cap.height >= layout.height());
    let (ox, oy) = (
        (cap.width - layout.width()) / 2,
        (cap.height - layout.height()) / 2,
    );
    let frame = scene.frame(seq);
    for y in 0..layout.height() {
        let want = frame.row(0, y);
        let got = cap.row(oy + y);
        for x in 0..layout.width() as usize {
            let w = &want[4 * x..4 * x + 3];
            let g = &got[4 * (ox as usize + x)..4 * (ox as usize + x) + 3];
            assert_eq!(g, w, "frame {seq}: pixel ({x}, {y}) differs on screen");
        }
    }
}

/// Generator XR24 → KMS (vkms), writeback pixel-exact for 12 frames, on each dma-buf kind.
fn generator_to_writeback(alloc_name: &str, fourcc: Fourcc, frames: u64) {
    let layout = FrameLayout::linear(fourcc, 640, 480, 256).unwrap();
    let buffers = pool(alloc_name, &layout, 3);
    let mut kms = display(true);
    kms.set_pattern(Some(Pattern::MovingBox));
    for (id, b) in buffers.iter().enumerate() {
        kms.import(id as u32, b).unwrap();
    }
    let mut gen = Generator::new(Pattern::MovingBox, &layout);
    let scene = Scene::new(Pattern::MovingBox, &layout);
    let mut maps: Vec<_> = buffers.iter().map(|b| b.map(true).unwrap()).collect();
    let mut free: Vec<(u32, Option<frameshare::sync::SyncFile>)> =
        (0..buffers.len() as u32).map(|i| (i, None)).collect();
    let mut on_screen: Option<u32> = None;
    for seq in 0..frames {
        let (id, fence) = free.remove(0);
        if let Some(f) = fence {
            f.wait(Duration::from_secs(3))
                .expect("release fence signals");
        }
        assert_ne!(Some(id), on_screen, "never write the buffer on screen");
        gen.fill(
            id,
            &mut maps[id as usize].access(Access::Write).unwrap(),
            seq,
        );
        let presented = kms
            .present(id, seq, None)
            .unwrap_or_else(|e| panic!("{alloc_name} frame {seq}: {e}"));
        let cap = kms.capture().unwrap();
        assert_eq!(presented.verified, Some(true), "{alloc_name} frame {seq}");
        if fourcc == Fourcc::XR24 || fourcc == Fourcc::AR24 {
            assert_capture_matches(&cap, &scene, &layout, seq);
        }
        match (presented.released, on_screen) {
            (None, None) => {}
            (Some(r), Some(prev)) => {
                assert_eq!(r.id, prev, "the replaced frame comes back");
                assert_eq!(r.seq, seq - 1);
                assert!(
                    r.release.is_some(),
                    "with the out-fence of the replacing commit"
                );
                free.push((r.id, r.release));
            }
            (r, prev) => panic!("released {r:?} with {prev:?} on screen"),
        }
        on_screen = Some(id);
    }
    assert_eq!(
        kms.mode_size(),
        Some((640, 480)),
        "a mode of the frame size"
    );
    let back = kms.turn_off().unwrap().expect("the last frame comes back");
    assert_eq!(back.id, on_screen.unwrap());
    assert!(back.release.is_none(), "off the screen already: {back:?}");
    assert!(kms.turn_off().unwrap().is_none(), "nothing is on screen");
    let st = kms.stats();
    assert_eq!(st.verified, frames);
    assert_eq!(st.mismatches, 0);
    assert_eq!(st.imports, 3, "one import per buffer");
    eprintln!(
        "{alloc_name} {fourcc}: {frames} frames verified by writeback; flip intervals (µs) {:?}",
        &st.flip_intervals_us[..st.flip_intervals_us.len().min(8)]
    );
}

#[test]
fn dma_heap_xr24_writeback_pixel_exact() {
    if let Some(_display) = vkms() {
        generator_to_writeback("dma-heap", Fourcc::XR24, 12);
    }
}

#[test]
fn udmabuf_xr24_writeback_pixel_exact() {
    if let Some(_display) = vkms() {
        generator_to_writeback("udmabuf", Fourcc::XR24, 6);
    }
}

#[test]
fn drm_dumb_ar24_writeback_pixel_exact() {
    if let Some(_display) = vkms() {
        generator_to_writeback("drm-dumb:vkms", Fourcc::AR24, 6);
    }
}

/// GBM buffers (allocated on vkms's card node) imported by Vulkan: the Vulkan sink checksums
/// every frame against the generator, and the display's conversion stage reads them on the GPU
/// and writes what vkms then scans out, verified through writeback.
#[cfg(feature = "gbm")]
#[test]
fn gbm_buffers_imported_by_vulkan() {
    let Some(_display) = vkms() else {
        return;
    };
    for sink in ["vulkan", "kms:vkms:verify-writeback:convert"] {
        let v = generator_to(sink, "gbm:vkms", "XR24", "640x480", 20, &[]);
        assert_eq!(v["allocator"], "gbm", "{sink}: {v}");
    }
}

#[cfg(feature = "gbm")]
#[test]
fn gbm_buffers_scan_out_pixel_exact() {
    if let Some(_display) = vkms() {
        generator_to_writeback("gbm", Fourcc::XR24, 6);
    }
}

#[test]
fn a_wrong_frame_is_caught_by_writeback() {
    let Some(_display) = vkms() else {
        return;
    };
    let layout = FrameLayout::linear(Fourcc::XR24, 640, 480, 256).unwrap();
    let buffers = pool("dma-heap", &layout, 1);
    let mut kms = display(true);
    kms.set_pattern(Some(Pattern::Bars));
    kms.import(0, &buffers[0]).unwrap();
    let mut gen = Generator::new(Pattern::Bars, &layout);
    let mut map = buffers[0].map(true).unwrap();
    gen.fill(0, &mut map.access(Access::Write).unwrap(), 5);
    // Announce it as frame 6: the stamp differs, so the capture must not verify.
    let p = kms.present(0, 6, None).unwrap();
    assert_eq!(p.verified, Some(false));
    assert_eq!(kms.stats().mismatches, 1);
}

#[test]
fn in_fence_holds_the_flip_until_it_signals() {
    let Some(_display) = vkms() else {
        return;
    };
    if !common::need("/sys/kernel/debug/sync/sw_sync") {
        return;
    }
    let layout = FrameLayout::linear(Fourcc::XR24, 640, 480, 256).unwrap();
    let buffers = pool("dma-heap", &layout, 2);
    let mut kms = display(false);
    for (id, b) in buffers.iter().enumerate() {
        kms.import(id as u32, b).unwrap();
    }
    kms.present(0, 0, None).unwrap();
    kms.wait_flip(Duration::from_secs(3)).unwrap();
    let timeline = SwSyncTimeline::open().unwrap();
    let fence = timeline.create_fence(1).unwrap();
    let p = kms.present(1, 1, Some(fence)).unwrap();
    assert_eq!(kms.stats().in_fences, 1);
    let release = p
        .released
        .expect("frame 0 comes back")
        .release
        .expect("fence");
    // The display waits for the acquire fence: no flip, and frame 0 stays on screen.
    match kms.wait_flip(Duration::from_millis(300)) {
        Err(KmsError::Timeout { note, .. }) => {
            assert!(note.unwrap_or_default().contains("acquire fence"))
        }
        other => panic!("flip completed before its IN_FENCE_FD signalled: {other:?}"),
    }
    assert!(
        !release.is_signalled(),
        "frame 0 released while still on screen"
    );
    timeline.advance(1).unwrap();
    kms.wait_flip(Duration::from_secs(3)).unwrap();
    release.wait(Duration::from_secs(3)).unwrap();
}

#[test]
fn non_dma_buf_buffers_are_refused_clearly() {
    let Some(_display) = vkms() else {
        return;
    };
    let layout = FrameLayout::linear(Fourcc::XR24, 64, 64, 64).unwrap();
    let b = pool("memfd", &layout, 1).remove(0);
    let mut kms = display(false);
    let e = kms.import(0, &b).unwrap_err();
    assert!(e.is_unsupported(), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("KMS needs dma-buf buffers"), "{e}");
    assert!(e.contains("memfd"), "{e}");
}

#[test]
fn two_process_run_with_writeback_verification() {
    let Some(_display) = vkms() else {
        return;
    };
    let v = generator_to(
        "kms:vkms:verify-writeback",
        "dma-heap",
        "XR24",
        "640x480",
        30,
        &[],
    );
    assert_eq!(v["frames_converted"], 0, "{v}");
}

#[test]
fn kms_sink_lists_what_the_plane_scans_out() {
    let Some(_display) = vkms() else {
        return;
    };
    let kms = display(false);
    assert_eq!(kms.driver(), "vkms");
    assert!(!kms.connector_name().starts_with("Writeback"));
    let formats: Vec<String> = kms
        .formats()
        .iter()
        .map(|f| format!("{}/{}", f.fourcc, f.modifier))
        .collect();
    eprintln!("vkms primary plane: {}", formats.join(" "));
    assert!(formats.iter().any(|f| f == "XR24/LINEAR"), "{formats:?}");
}

/// Where GBM works in the VM, and how (printed for the report); it must work on vkms's card
/// node, with per-plane fds, strides and a LINEAR modifier, and map for writing.
#[cfg(feature = "gbm")]
#[test]
fn gbm_allocator_on_each_node() {
    use frameshare::alloc::gbm::GbmAllocator;
    use frameshare::alloc::Allocator;
    let Some(_display) = vkms() else {
        return;
    };
    let mut nodes: Vec<String> = std::fs::read_dir("/dev/dri")
        .unwrap()
        .flatten()
        .map(|e| e.path().to_string_lossy().into_owned())
        .collect();
    nodes.sort();
    for spec in nodes.iter().map(String::as_str).chain(["vkms", "vgem"]) {
        match GbmAllocator::open(Some(spec)) {
            Ok(mut a) => {
                let mut made = Vec::new();
                for (f, w, h) in [
                    (Fourcc::XR24, 640, 480),
                    (Fourcc::YUYV, 640, 480),
                    (Fourcc::NV12, 640, 480),
                ] {
                    let l = FrameLayout::linear(f, w, h, 64).unwrap();
                    match a.allocate(&l) {
                        Ok(b) => made.push(format!(
                            "{f}: {:?} via {:?}, {} fd(s), modifier {}",
                            b.layout().planes(),
                            a.last_create_path().unwrap(),
                            b.fds().len(),
                            b.layout().modifier()
                        )),
                        Err(e) => made.push(format!("{f}: {e}")),
                    }
                }
                eprintln!("gbm {spec}: {} — {}", a.describe(), made.join("; "));
            }
            Err(e) => eprintln!("gbm {spec}: {e}"),
        }
    }
    let (mut a, _) = alloc::open("gbm:vkms").expect("GBM works on vkms's card node");
    let l = FrameLayout::linear(Fourcc::XR24, 320, 240, 64).unwrap();
    let b = a.allocate(&l).unwrap();
    assert_eq!(b.kind(), frameshare::BufferKind::Gbm);
    assert_eq!(b.layout().modifier(), frameshare::Modifier::LINEAR);
    assert!(b.layout().planes()[0].stride >= 320 * 4);
    let mut m = b.map(true).expect("GBM dma-bufs map for writing");
    m.access(Access::Write).unwrap().row_mut(0, 0)[0] = 7;
}

/// Held releases through the frame bus: the KMS sink keeps the frame on screen, so its buffer
/// goes back only once the next frame replaced it — with the replacing commit's out-fence as
/// its release fence — and the last frame comes back when the stream goes idle (plane off),
/// so the producer's final drain does not stall.
#[test]
fn kms_sink_keeps_a_frame_until_it_left_the_screen() {
    use frameshare::bus::{Channel, Publisher, PublisherOptions, Subscriber, SubscriberOptions};
    use frameshare::meta::FrameMeta;
    use frameshare::pipeline::ConsumeOptions;
    use frameshare::sink::{FrameIn, FrameOut, HeldRelease, Sink, SinkCaps, SinkError, StreamInfo};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// The KMS sink, with a record of what it gave back: (id, seq, with a release fence).
    struct Recorded {
        kms: KmsSink,
        given_back: Arc<Mutex<Vec<(u32, u64, bool)>>>,
    }
    impl Sink for Recorded {
        fn name(&self) -> String {
            self.kms.name()
        }
        fn caps(&self) -> SinkCaps {
            self.kms.caps()
        }
        fn start(&mut self, stream: &StreamInfo) -> Result<(), SinkError> {
            self.kms.start(stream)
        }
        fn add_buffer(&mut self, id: u32, buffer: &Buffer) -> Result<(), SinkError> {
            self.kms.add_buffer(id, buffer)
        }
        fn remove_buffer(&mut self, id: u32) {
            self.kms.remove_buffer(id)
        }
        fn frame(&mut self, frame: FrameIn<'_>) -> Result<FrameOut, SinkError> {
            self.kms.frame(frame)
        }
        fn holds_frames(&self) -> bool {
            self.kms.holds_frames()
        }
        fn take_released(&mut self) -> Vec<HeldRelease> {
            let r = self.kms.take_released();
            let mut log = self.given_back.lock().unwrap();
            log.extend(r.iter().map(|h| (h.id, h.seq, h.release.is_some())));
            r
        }
        fn idle(&mut self) -> Result<(), SinkError> {
            self.kms.idle()
        }
        fn finish(&mut self) -> Result<(), SinkError> {
            self.kms.finish()
        }
    }

    /// Serves the consumer for up to `timeout`, until a buffer comes back; returns those that
    /// did (their release fences waited for).
    fn released(p: &mut Publisher, timeout: Duration) -> Vec<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = p.take_released();
            let left = deadline.saturating_duration_since(Instant::now());
            if !r.is_empty() || left.is_zero() {
                return r;
            }
            p.dispatch(Some(left)).unwrap();
        }
    }
    let held = |p: &Publisher| p.status().consumers.iter().map(|c| c.held).sum::<u32>();

    let Some(_display) = vkms() else {
        return;
    };
    let given_back = Arc::new(Mutex::new(Vec::new()));
    let log = given_back.clone();
    let (ours, theirs) = Channel::pair().unwrap();
    let consumer = std::thread::spawn(move || {
        let kms = KmsSink::open(&vkms_options(false)).unwrap();
        let mut sink = Recorded {
            kms,
            given_back: log,
        };
        let caps = sink.caps();
        let opts = SubscriberOptions {
            name: sink.name(),
            fences: caps.fences,
            kinds: caps.kinds,
            formats: caps.formats,
            ..SubscriberOptions::default()
        };
        let mut sub = Subscriber::from_channel(theirs, opts).unwrap();
        frameshare::pipeline::consume(&mut sub, &mut sink, &ConsumeOptions::default()).unwrap()
    });
    let layout = FrameLayout::linear(Fourcc::XR24, 640, 480, 256).unwrap();
    let mut p = Publisher::new(PublisherOptions::default()).unwrap();
    p.add_connection(ours, true).unwrap();
    // The consumer says Hello once its sink is open (the conversion's pipelines compiled: ~40 s
    // cold under TCG); a consumer that fails first closes its end, which ends the wait.
    assert!(p.wait_for_consumers(1, None).unwrap());
    let ids = p.set_buffers(pool("dma-heap", &layout, 3)).unwrap();
    p.publish(ids[0], 0, FrameMeta::default(), None).unwrap();
    // Frame 0 is on screen: buffer 0 stays with the consumer.
    let r = released(&mut p, Duration::from_millis(150));
    assert!(r.is_empty(), "released while on screen: {r:?}");
    assert_eq!(held(&p), 1);
    p.publish(ids[1], 1, FrameMeta::default(), None).unwrap();
    let r = released(&mut p, Duration::from_secs(3));
    assert_eq!(r, [ids[0]]);
    assert_eq!(
        given_back.lock().unwrap()[..],
        [(ids[0], 0, true)],
        "frame 0 goes back with the out-fence of the replacing commit"
    );
    // The stream goes idle: the last frame comes back after the idle timeout, with no fence
    // (the plane is already off).
    let t = Instant::now();
    let r = released(&mut p, Duration::from_secs(5));
    let waited = t.elapsed();
    assert_eq!(r, [ids[1]]);
    assert_eq!(given_back.lock().unwrap()[1..], [(ids[1], 1, false)]);
    assert!(
        waited >= frameshare::sink::IDLE_TIMEOUT / 2,
        "the last frame came back after {waited:?}, before the idle timeout"
    );
    assert_eq!(held(&p), 0);
    let t = Instant::now();
    p.finish().unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let report = consumer.join().unwrap();
    assert_eq!(report.frames_delivered, 2);
    assert!(report.error.is_none(), "{report:?}");
}

/// The two-process generator → KMS run with held releases still paces and drains: 60 frames
/// through three buffers, every one verified by writeback.
#[test]
fn two_process_run_with_held_releases_and_three_buffers() {
    let Some(_display) = vkms() else {
        return;
    };
    let sink = "kms:vkms:verify-writeback";
    generator_to(sink, "dma-heap", "XR24", "640x480", 60, &["--buffers", "3"]);
}

/// Buffers the plane cannot scan out (allocator, format): YUYV and NV12 it cannot show, XR24 in
/// memory KMS cannot import.
const CONVERTED: [(&str, &str); 3] = [
    ("dma-heap", "YUYV"),
    ("dma-heap", "NV12"),
    ("memfd", "XR24"),
];

/// What the plane cannot scan out goes through the Vulkan conversion in front of it: generator
/// YUYV and NV12 in dma-heap buffers, and XR24 in memfd (memory KMS cannot import), 30 frames
/// each. Every frame is verified three ways: the GPU checksum of the frame against the
/// generator, the display buffer against the CPU conversion of the frame (pixel-exact), and the
/// writeback capture against the display buffer. No pixel byte is copied.
#[test]
fn formats_the_plane_cannot_take_are_converted_on_the_gpu() {
    let Some(_display) = vkms() else {
        return;
    };
    for (alloc, format) in CONVERTED {
        let v = generator_to(
            "kms:vkms:verify-writeback",
            alloc,
            format,
            "640x480",
            30,
            &[],
        );
        assert_eq!(v["frames_converted"], 30, "{alloc} {format}: {v}");
        // Verifying reads the display buffer: each conversion is waited for on the CPU.
        assert_eq!(v["conversion_cpu_waits"], 30, "{alloc} {format}: {v}");
    }
}

/// On the plain display path nothing waits for the GPU on the CPU: every converted frame's
/// conversion is exported from its SYNC_FD semaphore and goes to the plane as the commit's
/// IN_FENCE_FD (lavapipe exports SYNC_FD, so this is asserted, not skipped). Every frame is
/// delivered and shown, and every held frame comes back (the run ends).
#[test]
fn converted_frames_go_to_the_display_as_in_fences() {
    let Some(_display) = vkms() else {
        return;
    };
    for (alloc, format) in CONVERTED {
        let v = common::run_json(&[
            "--alloc", alloc, "--format", format, "--size", "640x480", "--sink", "kms:vkms",
            "--frames", "30",
        ]);
        let what = format!("{alloc} {format}: {v}");
        assert_eq!(v["frames_delivered"], 30, "{what}");
        assert_eq!(v["frames_dropped"], 0, "{what}");
        assert_eq!(v["frames_converted"], 30, "{what}");
        assert_eq!(v["conversion_in_fences"], 30, "{what}");
        assert_eq!(v["conversion_cpu_waits"], 0, "{what}");
        assert_eq!(v["bytes_copied"], 0, "{what}");
    }
}

/// `kms:…:convert` sends even a format the plane takes through the GPU; `kms:…:direct` never
/// does, and then a YUYV stream is refused with the reason.
#[test]
fn conversion_can_be_forced_or_forbidden() {
    let Some(_display) = vkms() else {
        return;
    };
    let sink = "kms:vkms:verify-writeback:convert";
    let v = generator_to(sink, "dma-heap", "XR24", "320x240", 10, &[]);
    assert_eq!(v["frames_converted"], 10, "{v}");
    let sink = "kms:vkms:verify-writeback";
    let v = generator_to(sink, "dma-heap", "XR24", "320x240", 10, &[]);
    assert_eq!(
        v["frames_converted"], 0,
        "XR24 is scanned out directly: {v}"
    );
    let e = common::run_fails(&[
        "run",
        "--alloc",
        "dma-heap",
        "--format",
        "YUYV",
        "--sink",
        "kms:vkms:direct",
        "--size",
        "320x240",
        "--frames",
        "5",
    ]);
    assert!(e.contains("YUYV") && e.contains("XR24"), "{e}");
}

/// `frameshare run` of `frames` generator frames (`alloc`, `format`, `size`, then `extra`
/// options) to `sink`: every frame delivered and verified, none dropped, no byte copied.
/// Returns the summary for what else a test checks.
fn generator_to(
    sink: &str,
    alloc: &str,
    format: &str,
    size: &str,
    frames: u64,
    extra: &[&str],
) -> serde_json::Value {
    let n = frames.to_string();
    let mut args = vec![
        "--alloc", alloc, "--format", format, "--size", size, "--sink", sink, "--frames", &n,
    ];
    args.extend_from_slice(extra);
    let v = common::run_json(&args);
    let what = format!("{alloc} {format} {size} → {sink}: {v}");
    assert_eq!(v["frames_delivered"], frames, "{what}");
    assert_eq!(v["frames_verified"], frames, "{what}");
    assert_eq!(v["frames_dropped"], 0, "{what}");
    assert_eq!(v["bytes_copied"], 0, "{what}");
    v
}
