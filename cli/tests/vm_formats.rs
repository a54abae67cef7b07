//! VM tests of the formats cameras emit (NV21, YU12, NV16, P010): generated into dma-heap
//! dma-bufs and verified by a consumer process; captured from vivid in each format it offers
//! (its own buffers exported as dma-bufs) with every plane's samples checked; shown on vkms
//! through the GPU conversion, checked by writeback; and `explain --into kms` answering from
//! vkms's planes. Each test needs a device: inside the VM a missing one fails, on a host it
//! says "skipped: needs the VM".
//!
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/vm-run cargo test --release
//! --all-features -p frameshare-cli --test vm_formats`

mod common;

use common::{need, run_json};

const NEW_FORMATS: [&str; 4] = ["NV21", "YU12", "NV16", "P010"];

#[test]
fn camera_formats_in_dma_heap_buffers_verified() {
    if !need("/dev/dma_heap/system") {
        return;
    }
    for format in NEW_FORMATS {
        let s = run_json(&[
            "--alloc",
            "dma-heap",
            "--format",
            format,
            "--pattern",
            "bars",
            "--size",
            "640x480",
            "--frames",
            "30",
        ]);
        assert_eq!(s["allocator"], "dma-heap", "{format}: {s}");
        assert_eq!(s["frames_verified"], 30, "{format}: {s}");
        assert_eq!(s["bytes_copied"], 0, "{format}: {s}");
    }
}

/// The four formats on the display, through the Vulkan conversion in front of the plane
/// (forced, so that the answer does not depend on which formats this kernel's vkms lists):
/// every frame is checked three ways (the GPU checksum of the frame against the generator, the
/// display buffer against the CPU conversion of the frame, the writeback capture against the
/// display buffer), and no pixel byte is copied.
#[cfg(all(feature = "kms", feature = "vulkan"))]
#[test]
fn camera_formats_converted_for_the_display() {
    if !need("/dev/dri/card1") || !need("/dev/dma_heap/system") {
        return;
    }
    // The first Vulkan use in a fresh guest loads llvmpipe over 9p and compiles the pipelines
    // under TCG: over a minute, longer than the producer lets a consumer set up before it
    // evicts it. Opened here once (no stream, no timeout), the streams below find it warm.
    frameshare::sink::vulkan::VulkanSink::new(frameshare::sink::vulkan::VulkanOptions::default())
        .expect("the Vulkan sink opens inside the VM");
    for format in NEW_FORMATS {
        let s = run_json(&[
            "--alloc",
            "dma-heap",
            "--format",
            format,
            "--size",
            "320x240",
            "--frames",
            "10",
            "--sink",
            "kms:vkms:verify-writeback:convert",
        ]);
        assert_eq!(s["frames_delivered"], 10, "{format}: {s}");
        assert_eq!(s["frames_verified"], 10, "{format}: {s}");
        assert_eq!(s["frames_converted"], 10, "{format}: {s}");
        assert_eq!(s["frames_dropped"], 0, "{format}: {s}");
        assert_eq!(s["bytes_copied"], 0, "{format}: {s}");
    }
}

#[test]
fn explain_answers_from_the_display_planes() {
    if !need("/dev/dri/card1") {
        return;
    }
    // vkms's primary plane scans out XR24 LINEAR.
    let out = common::frameshare(&[
        "explain", "XR24", "640x480", "--alloc", "memfd", "--into", "kms",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("scans out on") && text.contains("(vkms)"),
        "{text}"
    );
    // A tiled modifier vkms does not list: "no", naming the planes' LINEAR entry.
    let out = common::frameshare(&[
        "explain",
        "XR24",
        "640x480",
        "--alloc",
        "memfd",
        "--into",
        "kms",
        "--modifier",
        "I915_X_TILED",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("no plane scans out XR24/I915_X_TILED"),
        "{text}"
    );
    assert!(text.contains("XR24/LINEAR"), "{text}");
    // The new formats get an answer (vkms may or may not list them), never a usage error.
    for format in NEW_FORMATS {
        let out = common::frameshare(&[
            "explain", format, "640x480", "--alloc", "memfd", "--into", "kms",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{format}: {text}");
        assert!(text.contains("(vkms)"), "{format}: {text}");
    }
}

#[cfg(feature = "v4l2")]
mod camera {
    use std::time::Duration;

    use frameshare::buffer::Access;
    use frameshare::format::Fourcc;
    use frameshare::source::v4l2::{Mode, V4l2Config, V4l2Source};

    /// vivid test_pattern menu entry: solid red.
    const RED: i64 = 7;

    /// vivid's capture node in `fourcc`, showing solid red (no OSD text, no movement).
    fn vivid(fourcc: Fourcc) -> Option<V4l2Source> {
        if !super::need("/dev/video1") {
            return None;
        }
        for path in frameshare::source::v4l2::video_nodes() {
            let cfg = V4l2Config {
                device: Some(path),
                fourcc: Some(fourcc),
                size: Some((640, 480)),
                fps: Some(60.0),
                mode: Mode::Export,
                separate_planes: false,
            };
            if let Ok(s) = V4l2Source::open(&cfg) {
                if s.driver() == "vivid" {
                    s.set_control("osd_text_mode", 2).unwrap();
                    s.set_control("horizontal_movement", 3).unwrap();
                    s.set_control("vertical_movement", 3).unwrap();
                    s.set_control("test_pattern", RED).unwrap();
                    return Some(s);
                }
            }
        }
        panic!("no vivid capture node inside the VM");
    }

    /// Red in BT.601 limited range, as vivid encodes it (±1): Y 82, U 90, V 240.
    fn close(got: u8, want: u8) -> bool {
        got.abs_diff(want) <= 1
    }

    #[test]
    fn vivid_camera_formats_exported_with_the_right_samples() {
        for fourcc in [Fourcc::NV21, Fourcc::YU12, Fourcc::NV16] {
            let Some(mut src) = vivid(fourcc) else {
                return;
            };
            let l = src.layout().clone();
            assert_eq!(l.fourcc(), fourcc);
            let p = src.prepare(Mode::Export, 3, None).unwrap();
            src.start().unwrap();
            for _ in 0..3 {
                let f = src.next_frame(Duration::from_secs(5)).unwrap();
                let mut m = p.buffers[f.index as usize].map(false).unwrap();
                let a = m.access(Access::Read).unwrap();
                for y in 0..l.plane_rows(0) {
                    assert!(
                        a.row(0, y).iter().all(|&v| close(v, 82)),
                        "{fourcc} Y row {y}"
                    );
                }
                for y in 0..l.plane_rows(1) {
                    let row = a.row(1, y);
                    let ok = match fourcc {
                        Fourcc::NV21 => row
                            .chunks_exact(2)
                            .all(|vu| close(vu[0], 240) && close(vu[1], 90)),
                        Fourcc::YU12 => row.iter().all(|&u| close(u, 90)),
                        _ => row
                            .chunks_exact(2)
                            .all(|uv| close(uv[0], 90) && close(uv[1], 240)),
                    };
                    assert!(
                        ok,
                        "{fourcc} chroma row {y}: {:?}",
                        &row[..8.min(row.len())]
                    );
                }
                if fourcc == Fourcc::YU12 {
                    for y in 0..l.plane_rows(2) {
                        assert!(a.row(2, y).iter().all(|&v| close(v, 240)), "V row {y}");
                    }
                }
                drop(a);
                src.requeue(f.index).unwrap();
            }
            src.stop().unwrap();
        }
    }
}
