//! VM tests of the V4L2 source on vivid: export, import (dma-heap, GBM) and copy modes, with the
//! content of every frame checked against vivid's test pattern set to a solid colour (and the
//! OSD text off), a colour switch mid-stream that must show up within the queue depth, sequence
//! numbers and timestamps that advance, a camera stall that ends in a clear error, vivid XR24
//! frames scanned out by KMS with the writeback equal to the camera's buffer, and the two-process
//! `frameshare run --source v4l2 --sink kms` (export, import, copy; format negotiation).
//!
//! Run: `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/vm-run cargo test --release
//! --features gbm,v4l2 --test vm_camera`. On a host without vivid each test says "skipped".
#![cfg(feature = "v4l2")]

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use frameshare::alloc;
use frameshare::buffer::{Access, Buffer};
use frameshare::format::Fourcc;
use frameshare::source::v4l2::{Mode, V4l2Config, V4l2Error, V4l2Source};

/// vivid is one device: tests take it one at a time (the lock is held as long as the source
/// [`vivid`] returns lives), so the file passes with parallel test threads too.
static CAMERA: Mutex<()> = Mutex::new(());

/// An open vivid source and the camera lock.
struct Vivid {
    src: V4l2Source,
    lock: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Vivid {
    type Target = V4l2Source;
    fn deref(&self) -> &V4l2Source {
        &self.src
    }
}

impl std::ops::DerefMut for Vivid {
    fn deref_mut(&mut self) -> &mut V4l2Source {
        &mut self.src
    }
}

/// vivid's capture node, found by driver and caps (not by number).
fn vivid(cfg: V4l2Config) -> Option<Vivid> {
    if !common::need("/dev/video1") {
        return None;
    }
    let lock = CAMERA.lock().unwrap_or_else(|e| e.into_inner());
    let mut last = String::new();
    for path in frameshare::source::v4l2::video_nodes() {
        let c = V4l2Config {
            device: Some(path.clone()),
            ..cfg.clone()
        };
        match V4l2Source::open(&c) {
            Ok(s) if s.driver() == "vivid" => {
                // Deterministic content: one colour, no OSD text, no movement.
                s.set_control("osd_text_mode", 2).unwrap();
                s.set_control("horizontal_movement", 3).unwrap();
                s.set_control("vertical_movement", 3).unwrap();
                s.set_control("test_pattern", RED).unwrap();
                // Buffer timestamps at the start of the frame: vivid's default end-of-frame
                // stamp is computed ahead, up to a frame period later than the buffer is
                // ready, so a fast pipeline could show a frame "before" it was captured.
                s.set_control("timestamp_source", 1).unwrap();
                return Some(Vivid { src: s, lock });
            }
            Ok(s) => last = format!("{} is {}", path.display(), s.driver()),
            Err(e) => last = e.to_string(),
        }
    }
    panic!("no vivid capture node inside the VM ({last})");
}

/// vivid test_pattern menu entries.
const RED: i64 = 7;
const BLUE: i64 = 9;

/// The value every pixel of a solid-colour frame has, per format: (YUYV bytes) or (B,G,R).
fn expected(fourcc: Fourcc, pattern: i64) -> Vec<u8> {
    match (fourcc, pattern) {
        // BT.601 limited range, as vivid's default sRGB colorspace encodes it (vivid's own
        // rounding differs by one from the exact values: compared with a tolerance of 1).
        (Fourcc::YUYV, RED) => vec![82, 90, 82, 240],
        (Fourcc::YUYV, BLUE) => vec![41, 240, 41, 110],
        (Fourcc::XR24, RED) => vec![0, 0, 255],
        (Fourcc::XR24, BLUE) => vec![255, 0, 0],
        _ => unreachable!(),
    }
}

/// Whether every pixel of the frame in `buffer` is `pattern`'s colour; else the first
/// difference.
fn check_frame(buffer: &Buffer, pattern: i64) -> Result<(), String> {
    let l = buffer.layout().clone();
    let want = expected(l.fourcc(), pattern);
    let mut m = buffer.map(false).map_err(|e| e.to_string())?;
    let a = m.access(Access::Read).map_err(|e| e.to_string())?;
    for y in 0..l.height() {
        let row = a.row(0, y);
        for (x, px) in row.chunks_exact(4).enumerate() {
            let tol = if l.fourcc() == Fourcc::YUYV { 1 } else { 0 };
            if px[..want.len()]
                .iter()
                .zip(&want)
                .any(|(g, w)| g.abs_diff(*w) > tol)
            {
                return Err(format!(
                    "pixel group {x} of row {y} is {:?}, want {want:?}",
                    &px[..want.len()]
                ));
            }
        }
    }
    Ok(())
}

/// Captures `n` frames from a prepared source, checking each one's pixels, sequence and
/// timestamp; switches the pattern to blue after `n / 2` and expects blue within the queue depth.
fn capture_and_check(src: &mut V4l2Source, buffers: &[Buffer], n: u64) {
    src.start().unwrap();
    let depth = buffers.len() as u64 + 2;
    let mut last_seq = None;
    let mut last_ts = 0;
    let mut switched_at = None;
    for k in 0..n {
        let f = src.next_frame(Duration::from_secs(5)).unwrap();
        assert!(!f.corrupt);
        // A buffer dequeued twice would repeat its timestamp. vivid itself, when its capture
        // thread falls behind under TCG, can give two frames the same sequence number.
        assert!(f.timestamp_ns > last_ts, "timestamps advance");
        if let Some(s) = last_seq {
            assert!(f.sequence >= s, "sequence {s} then {}", f.sequence);
        }
        last_seq = Some(f.sequence);
        last_ts = f.timestamp_ns;
        let buffer = &buffers[f.index as usize];
        match switched_at {
            None => check_frame(buffer, RED).unwrap_or_else(|e| panic!("frame {k} (red): {e}")),
            Some(at) if k >= at + depth => {
                check_frame(buffer, BLUE).unwrap_or_else(|e| panic!("frame {k} (blue): {e}"))
            }
            Some(_) => assert!(
                check_frame(buffer, RED).is_ok() || check_frame(buffer, BLUE).is_ok(),
                "frame {k}: neither red nor blue"
            ),
        }
        src.requeue(f.index).unwrap();
        if k == n / 2 {
            src.set_control("test_pattern", BLUE).unwrap();
            switched_at = Some(k);
        }
    }
    src.stop().unwrap();
}

fn config(fourcc: Fourcc, mode: Mode) -> V4l2Config {
    V4l2Config {
        device: None,
        fourcc: Some(fourcc),
        size: Some((640, 480)),
        fps: Some(60.0),
        mode,
        separate_planes: false,
    }
}

#[test]
fn export_mode_yuyv_content_checked() {
    let Some(mut src) = vivid(config(Fourcc::YUYV, Mode::Export)) else {
        return;
    };
    let p = src.prepare(Mode::Export, 4, None).unwrap();
    assert_eq!(p.mode, Mode::Export);
    assert!(p
        .buffers
        .iter()
        .all(|b| b.kind() == frameshare::BufferKind::V4l2Export));
    assert_eq!(src.layout().planes()[0].stride, 1280);
    capture_and_check(&mut src, &p.buffers, 24);
    assert_eq!(src.bytes_copied(), 0);
}

#[test]
fn import_mode_dma_heap_yuyv_content_checked() {
    let Some(mut src) = vivid(config(Fourcc::YUYV, Mode::Import)) else {
        return;
    };
    let (mut a, _) = alloc::open("dma-heap").unwrap();
    let p = src.prepare(Mode::Import, 4, Some(a.as_mut())).unwrap();
    assert_eq!(p.mode, Mode::Import);
    assert!(p
        .buffers
        .iter()
        .all(|b| b.kind() == frameshare::BufferKind::DmaHeap));
    capture_and_check(&mut src, &p.buffers, 24);
    assert_eq!(src.bytes_copied(), 0);
}

#[cfg(feature = "gbm")]
#[test]
fn import_mode_gbm_xr24_content_checked() {
    let Some(mut src) = vivid(config(Fourcc::XR24, Mode::Import)) else {
        return;
    };
    let (mut a, _) = alloc::open("gbm").unwrap();
    let p = src.prepare(Mode::Import, 3, Some(a.as_mut())).unwrap();
    assert_eq!(p.mode, Mode::Import);
    assert!(p
        .buffers
        .iter()
        .all(|b| b.kind() == frameshare::BufferKind::Gbm));
    capture_and_check(&mut src, &p.buffers, 16);
}

#[test]
fn copy_mode_counts_every_byte() {
    let Some(mut src) = vivid(config(Fourcc::YUYV, Mode::Copy)) else {
        return;
    };
    let (mut a, _) = alloc::open("memfd").unwrap();
    let p = src.prepare(Mode::Copy, 3, Some(a.as_mut())).unwrap();
    assert_eq!(p.mode, Mode::Copy);
    src.start().unwrap();
    let mut maps: Vec<_> = p.buffers.iter().map(|b| b.map(true).unwrap()).collect();
    for k in 0..6u64 {
        let f = src.next_frame(Duration::from_secs(5)).unwrap();
        let dst = (k % 3) as usize;
        let n = src
            .copy_into(&f, &mut maps[dst].access(Access::Write).unwrap())
            .unwrap();
        assert_eq!(n, 640 * 480 * 2);
        check_frame(&p.buffers[dst], RED).unwrap();
    }
    assert_eq!(src.bytes_copied(), 6 * 640 * 480 * 2);
}

#[test]
fn auto_mode_picks_export() {
    let Some(mut src) = vivid(config(Fourcc::YUYV, Mode::Auto)) else {
        return;
    };
    let (mut a, _) = alloc::open("dma-heap").unwrap();
    let p = src.prepare(Mode::Auto, 3, Some(a.as_mut())).unwrap();
    assert_eq!(p.mode, Mode::Export, "{}", p.note);
}

#[test]
fn a_stalled_camera_is_a_clear_error() {
    let cfg = V4l2Config {
        fps: Some(1.0),
        ..config(Fourcc::YUYV, Mode::Export)
    };
    let Some(mut src) = vivid(cfg) else {
        return;
    };
    assert_eq!(src.fps(), Some(1.0));
    let p = src.prepare(Mode::Export, 2, None).unwrap();
    src.start().unwrap();
    // vivid delivers its first frame at once, the next one a second later.
    let f = src.next_frame(Duration::from_secs(5)).unwrap();
    src.requeue(f.index).unwrap();
    match src.next_frame(Duration::from_millis(200)) {
        Err(e @ V4l2Error::Stalled { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("stalled") && msg.contains("/dev/video"),
                "{msg}"
            );
        }
        other => panic!("expected a stall, got {other:?}"),
    }
    // It still delivers once a frame is due.
    let f = src.next_frame(Duration::from_secs(5)).unwrap();
    check_frame(&p.buffers[f.index as usize], RED).unwrap();
}

#[test]
fn unsupported_requests_say_what_the_camera_offers() {
    let Some(src) = vivid(config(Fourcc::YUYV, Mode::Export)) else {
        return;
    };
    let path = src.path().to_owned();
    drop(src);
    let bad_size = V4l2Config {
        device: Some(path.clone()),
        size: Some((123, 45)),
        ..config(Fourcc::YUYV, Mode::Export)
    };
    let e = V4l2Source::open(&bad_size).unwrap_err().to_string();
    assert!(e.contains("123x45") && e.contains("640x480"), "{e}");
    let bad_format = V4l2Config {
        device: Some(path),
        ..config(Fourcc::AB24, Mode::Export)
    };
    match V4l2Source::open(&bad_format) {
        // vivid lists AB24 (RGBA32 in V4L2 terms is another code): either it maps, or the
        // error lists what the camera offers.
        Ok(s) => assert_eq!(s.layout().fourcc(), Fourcc::AB24),
        Err(e) => assert!(e.to_string().contains("YUYV"), "{e}"),
    }
}

/// vivid XR24 frames (export mode) scanned out by vkms; the writeback must equal the camera's
/// own buffer, pixel for pixel — camera to display with no copy, checked end to end.
#[test]
fn camera_xr24_to_kms_writeback_matches_the_buffer() {
    use frameshare::sink::kms::{DeviceSpec, KmsDisplay, KmsOptions};
    if !common::need("/dev/dri/card1") {
        return;
    }
    let Some(mut src) = vivid(config(Fourcc::XR24, Mode::Export)) else {
        return;
    };
    let p = src.prepare(Mode::Export, 4, None).unwrap();
    let mut kms = KmsDisplay::open(&KmsOptions {
        device: DeviceSpec::Driver("vkms".into()),
        connector: None,
        verify_writeback: true,
        ..Default::default()
    })
    .unwrap();
    for (i, b) in p.buffers.iter().enumerate() {
        kms.import(i as u32, b).unwrap();
    }
    src.start().unwrap();
    let mut on_screen: Option<u32> = None;
    for k in 0..12 {
        let f = src.next_frame(Duration::from_secs(5)).unwrap();
        if k == 6 {
            src.set_control("test_pattern", BLUE).unwrap();
        }
        let presented = kms.present(f.index, f.sequence, None).unwrap();
        assert_eq!(presented.verified, Some(true), "frame {k}");
        if let Some(r) = presented.released {
            assert_eq!(Some(r.id), on_screen);
            if let Some(fence) = r.release {
                fence.wait(Duration::from_secs(3)).unwrap();
            }
            src.requeue(r.id).unwrap();
        }
        on_screen = Some(f.index);
    }
    if let Some(r) = kms.turn_off().unwrap() {
        src.requeue(r.id).unwrap();
    }
    assert_eq!(kms.stats().verified, 12);
}

#[test]
fn export_mode_nv12_planes_content_checked() {
    let Some(mut src) = vivid(config(Fourcc::NV12, Mode::Export)) else {
        return;
    };
    let l = src.layout().clone();
    assert_eq!(l.planes().len(), 2);
    assert_eq!(l.planes()[1].offset, l.planes()[0].stride as u64 * 480);
    let p = src.prepare(Mode::Export, 3, None).unwrap();
    src.start().unwrap();
    for _ in 0..4 {
        let f = src.next_frame(Duration::from_secs(5)).unwrap();
        let mut m = p.buffers[f.index as usize].map(false).unwrap();
        let a = m.access(Access::Read).unwrap();
        for y in 0..480 {
            assert!(
                a.row(0, y).iter().all(|&v| v.abs_diff(82) <= 1),
                "Y row {y}"
            );
        }
        for y in 0..240 {
            for uv in a.row(1, y).chunks_exact(2) {
                assert!(
                    uv[0].abs_diff(90) <= 1 && uv[1].abs_diff(240) <= 1,
                    "UV row {y}: {uv:?}"
                );
            }
        }
        drop(a);
        src.requeue(f.index).unwrap();
    }
}

/// The vivid capture node's path (found by driver), and the camera lock: hold it while a
/// child process uses the camera.
fn vivid_path() -> Option<(String, MutexGuard<'static, ()>)> {
    let Vivid { src, lock } = vivid(config(Fourcc::XR24, Mode::Export))?;
    let path = src.path().display().to_string();
    drop(src);
    Some((path, lock))
}

/// `frameshare run --source v4l2:NODE --sink kms:vkms:verify-writeback`: camera → producer
/// process → consumer process → vkms, 300 frames in export mode with no byte copied, each
/// frame's writeback equal to the camera's buffer.
#[test]
fn two_process_camera_to_kms_300_frames_zero_copy() {
    if !common::need("/dev/dri/card1") {
        return;
    }
    let Some((node, _camera)) = vivid_path() else {
        return;
    };
    // vivid's rate at its default size is 5 fps; 30 keeps the test short. No format named:
    // the negotiation picks one the plane scans out.
    camera_to_vkms(&node, "export", None, 300, 0);
}

/// The same without naming anything: the first capture device, the first display, export mode.
#[test]
fn plain_v4l2_to_kms_run() {
    if !common::need("/dev/dri/card1") {
        return;
    }
    let Some((_, _camera)) = vivid_path() else {
        return;
    };
    let v = common::run_json(&["--source", "v4l2", "--sink", "kms", "--frames", "30"]);
    assert_eq!(v["frames_delivered"], 30, "{v}");
    assert_eq!(v["bytes_copied"], 0, "{v}");
}

/// The verify sink needs the generator: a camera producer is refused with a clear reason.
#[test]
fn verify_sink_refuses_a_camera_producer() {
    let Some((node, _camera)) = vivid_path() else {
        return;
    };
    let source = format!("v4l2:{node}");
    let e = common::run_fails(&[
        "run", "--source", &source, "--sink", "verify", "--frames", "5", "--json",
    ]);
    assert!(
        e.contains("verify needs the generator source") && e.contains(&source),
        "{e}"
    );
}

/// A camera format the display cannot scan out, with the conversion forbidden
/// (`kms:…:direct`): the run says exactly why there is no path.
#[test]
fn yuyv_camera_on_a_direct_only_display_says_why_there_is_no_path() {
    if !common::need("/dev/dri/card1") {
        return;
    }
    let Some((node, _camera)) = vivid_path() else {
        return;
    };
    let source = format!("v4l2:{node}");
    let e = common::run_fails(&[
        "run",
        "--source",
        &source,
        "--format",
        "YUYV",
        "--sink",
        "kms:vkms:direct",
        "--frames",
        "5",
    ]);
    assert!(e.contains("no path from source to sink"), "{e}");
    assert!(
        e.contains("was asked for YUYV") && e.contains("XR24"),
        "{e}"
    );
}

/// vivid → Vulkan convert → KMS: the camera's YUYV buffers (exported, not copied) are
/// converted by the compute shader straight into XR24 display buffers that vkms scans out,
/// 300 frames. Each conversion equals the CPU's pixel for pixel and each writeback capture
/// equals the display buffer, so the screen shows the converted camera frames.
#[test]
fn yuyv_camera_converted_on_the_gpu_to_kms_300_frames() {
    if !common::need("/dev/dri/card1") {
        return;
    }
    let Some((node, _camera)) = vivid_path() else {
        return;
    };
    camera_to_vkms(&node, "export", Some("YUYV"), 300, 300);
}

/// The same for NV12 (two planes in one camera buffer), and with the camera writing into our
/// dma-heap buffers (import mode), 30 frames each.
#[test]
fn nv12_camera_and_import_mode_converted_on_the_gpu() {
    if !common::need("/dev/dri/card1") {
        return;
    }
    let Some((node, _camera)) = vivid_path() else {
        return;
    };
    for (mode, format) in [("export", "NV12"), ("import", "YUYV")] {
        camera_to_vkms(&node, mode, Some(format), 30, 30);
    }
}

/// The other two camera modes through the two processes: import (the camera writes into our
/// dma-heap buffers: no copy) and copy (every byte counted), each frame checked on screen.
#[test]
fn two_process_camera_import_and_copy_modes() {
    if !common::need("/dev/dri/card1") {
        return;
    }
    let Some((node, _camera)) = vivid_path() else {
        return;
    };
    for (mode, copied) in [("import", 0u64), ("copy", 30 * 640 * 360 * 4)] {
        let source = format!("v4l2:{node}:{mode}:fps=30");
        let v = common::run_json(&[
            "--source",
            &source,
            "--alloc",
            "dma-heap",
            "--size",
            "640x360",
            "--sink",
            "kms:vkms:verify-writeback",
            "--frames",
            "30",
        ]);
        assert_eq!(v["allocator"], "dma-heap", "{mode}: {v}");
        assert_eq!(v["frames_delivered"], 30, "{mode}: {v}");
        assert_eq!(v["frames_verified"], 30, "{mode}: {v}");
        assert_eq!(v["bytes_copied"], copied, "{mode}: {v}");
    }
}

/// `examples/camera_to_display` (built by `cargo test` beside the test binaries) shows vivid on
/// vkms in one process: direct XR24, and YUYV through the Vulkan conversion, every frame
/// verified through writeback.
#[test]
fn camera_to_display_example_direct_and_converted() {
    if !common::need("/dev/dri/card1") {
        return;
    }
    let Some((node, _camera)) = vivid_path() else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples/camera_to_display"))
        .unwrap();
    assert!(example.exists(), "{} not built", example.display());
    for (format, converted) in [("XR24", ", 0 converted"), ("YUYV", ", 40 converted")] {
        let out = std::process::Command::new(&example)
            .args([
                "--camera",
                &node,
                "--display",
                "vkms",
                "--format",
                format,
                "--frames",
                "40",
                "--fps",
                "30",
                "--verify",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{format}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(converted), "{format}: {stdout}");
        assert!(stdout.contains("verified 40/40"), "{format}: {stdout}");
        assert!(stdout.contains("bytes copied 0"), "{format}: {stdout}");
    }
}

/// The multi-planar vivid instance (the guest boots with `vivid.n_devs=2
/// vivid.multiplanar=1,2`: the second instance speaks the multi-planar API) through the two
/// processes to vkms: export and import, scanned out directly (XR24) and converted on the GPU
/// (NV12, YUYV), every frame verified on screen, no byte copied.
#[test]
fn multi_planar_camera_to_kms() {
    if !common::need("/dev/dri/card1") {
        return;
    }
    let Some((_, _camera)) = vivid_path() else {
        return;
    };
    let node = frameshare::source::v4l2::devices()
        .into_iter()
        .find(|d| d.driver == "vivid" && d.multiplanar)
        .expect("a multi-planar vivid node inside the VM (vivid.multiplanar=1,2)")
        .path;
    for (mode, format, converted) in [
        ("export", "XR24", 0),
        ("import", "XR24", 0),
        ("export", "NV12", 20),
        ("import", "YUYV", 20),
    ] {
        camera_to_vkms(&node, mode, Some(format), 20, converted);
    }
}

/// `frameshare run` from camera `node` (`mode`, `format` or the negotiated one, 640x360 at
/// 30 fps; dma-heap buffers for import mode) to vkms with writeback verification: every frame
/// arrives and is verified on screen, none is dropped, `converted` of them went through the GPU
/// conversion, and no byte was copied.
fn camera_to_vkms(node: &str, mode: &str, format: Option<&str>, frames: u64, converted: u64) {
    let source = format!("v4l2:{node}:{mode}:fps=30");
    let n = frames.to_string();
    let mut args = vec![
        "--source",
        &source,
        "--alloc",
        "dma-heap",
        "--size",
        "640x360",
        "--sink",
        "kms:vkms:verify-writeback",
        "--frames",
        &n,
    ];
    if let Some(f) = format {
        args.extend(["--format", f]);
    }
    let v = common::run_json(&args);
    let what = format!("{node} {mode} {format:?}: {v}");
    let allocator = if mode == "import" {
        "dma-heap"
    } else {
        "v4l2-export"
    };
    assert_eq!(v["allocator"], allocator, "{what}");
    assert_eq!(v["frames_produced"], frames, "{what}");
    assert_eq!(v["frames_delivered"], frames, "{what}");
    assert_eq!(v["frames_verified"], frames, "{what}");
    assert_eq!(v["frames_dropped"], 0, "{what}");
    assert_eq!(v["frames_converted"], converted, "{what}");
    assert_eq!(v["bytes_copied"], 0, "{what}");
    // The frames shown have their capture → flip time: the camera stamped them (monotonic),
    // the display's page-flip events came after. Not necessarily every frame: vivid computes
    // its stamps on a schedule that can run a few ms ahead of the buffer (a jiffy's rounding),
    // and a frame flipped within that is left out (1 of 300 in a fast direct run).
    let c2f = &v["capture_to_flip_us"];
    let samples = c2f["samples"].as_u64().unwrap_or(0);
    assert!(samples > 0 && samples <= frames, "{what}");
    assert!(c2f["min"].as_f64().is_some_and(|m| m > 0.0), "{what}");
}

/// A camera that disappears mid-stream (vivid's "Disconnect" button unregisters the device, as
/// a USB unplug does) ends capture with a clear error naming the node, at once, not a hang.
/// It uses the multi-planar instance, which no later test of this file needs (in CI each test
/// gets its own guest anyway).
#[test]
fn unplugged_camera_is_a_clear_error() {
    use std::time::Instant;
    let Some((_, _camera)) = vivid_path() else {
        return;
    };
    let node = frameshare::source::v4l2::devices()
        .into_iter()
        .find(|d| d.driver == "vivid" && d.multiplanar)
        .expect("a multi-planar vivid node inside the VM (vivid.multiplanar=1,2)")
        .path;
    let mut src = V4l2Source::open(&V4l2Config {
        device: Some(node.clone().into()),
        ..config(Fourcc::YUYV, Mode::Export)
    })
    .unwrap();
    let p = src.prepare(Mode::Export, 4, None).unwrap();
    assert_eq!(p.mode, Mode::Export);
    src.start().unwrap();
    for _ in 0..3 {
        let f = src.next_frame(Duration::from_secs(5)).unwrap();
        src.requeue(f.index).unwrap();
    }
    src.set_control("disconnect", 1).unwrap();
    let t = Instant::now();
    let err = loop {
        match src.next_frame(Duration::from_secs(5)) {
            Ok(f) => {
                // Frames already captured may still come out; then the end.
                let _ = src.requeue(f.index);
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "frames after the unplug"
                );
            }
            Err(e) => break e,
        }
    };
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
    let msg = err.to_string();
    assert!(
        matches!(err, V4l2Error::Disappeared { .. }) && msg.contains(&node),
        "{msg}"
    );
    // The exported buffers stay valid for whoever still holds them.
    for b in &p.buffers {
        let mut m = b.map(false).unwrap();
        let a = m.access(Access::Read).unwrap();
        assert!(!a.row(0, 0).is_empty());
    }
}

/// NV12 as `NM12` from the multi-planar node (`separate-planes`): luma and chroma in separate
/// camera buffers, exported as two fds per frame, imported by Vulkan plane by plane, converted
/// and shown on vkms, every frame verified on screen.
#[test]
fn separate_plane_nv12_camera_to_kms() {
    if !common::need("/dev/dri/card1") {
        return;
    }
    let Some((_, _camera)) = vivid_path() else {
        return;
    };
    let node = frameshare::source::v4l2::devices()
        .into_iter()
        .find(|d| d.driver == "vivid" && d.multiplanar)
        .expect("a multi-planar vivid node inside the VM (vivid.multiplanar=1,2)")
        .path;
    let mut src = V4l2Source::open(&V4l2Config {
        device: Some(node.clone().into()),
        separate_planes: true,
        ..config(Fourcc::NV12, Mode::Export)
    })
    .unwrap();
    let p = src.prepare(Mode::Export, 4, None).unwrap();
    for b in &p.buffers {
        assert_eq!(b.fds().len(), 2, "one fd per plane: {:?}", b.layout());
        let fd_of = |i: usize| b.layout().planes()[i].fd_index;
        assert_eq!((fd_of(0), fd_of(1)), (0, 1));
    }
    drop(p);
    drop(src);
    camera_to_vkms(
        &format!("{node}:separate-planes"),
        "export",
        Some("NV12"),
        20,
        20,
    );
}
