//! The Vulkan sink on the host: memfd, POSIX and SysV shared memory imported into lavapipe with
//! `VK_EXT_external_memory_host`, converted and checksummed by the compute shaders, every frame
//! verified with no copy; the staging path counted; the GPU's RGBA equal to the CPU's; a wrong
//! frame caught; `explain`; the import-vs-staging benchmark.
//!
//! Needs a Vulkan ICD: with none installed at all the tests print "skipped: no Vulkan ICD" and
//! pass; with one installed (lavapipe here) the sink must work, or they fail.

mod common;

use frameshare::buffer::Access;
use frameshare::format::{Fourcc, FrameLayout};
use frameshare::gpu::vulkan::{icd_installed, ImportPath};
use frameshare::sink::vulkan::{VulkanOptions, VulkanSink};
use frameshare::sink::{FrameIn, Sink};
use frameshare::source::{Generator, Pattern};

fn vulkan_here() -> bool {
    if icd_installed() {
        return true;
    }
    eprintln!("skipped: no Vulkan ICD");
    false
}

#[test]
fn shared_memory_into_vulkan_every_format_verified_without_copies() {
    if !vulkan_here() {
        return;
    }
    for alloc in ["memfd", "posix-shm", "sysv-shm"] {
        for format in ["XR24", "YUYV", "NV12"] {
            let s = common::run_json(&[
                "--alloc", alloc, "--sink", "vulkan", "--format", format, "--size", "640x480",
                "--frames", "40",
            ]);
            let what = format!("{alloc} {format}");
            assert_eq!(s["frames_delivered"], 40, "{what}: {s}");
            assert_eq!(s["frames_verified"], 40, "{what}: {s}");
            assert_eq!(s["bytes_copied"], 0, "{what}: {s}");
        }
    }
}

#[test]
fn full_hd_memfd_run_verifies_every_frame() {
    if !vulkan_here() {
        return;
    }
    let s = common::run_json(&[
        "--alloc",
        "memfd",
        "--sink",
        "vulkan",
        "--frames",
        "300",
        "--size",
        "1920x1080",
    ]);
    assert_eq!(s["frames_verified"], 300, "{s}");
    assert_eq!(s["bytes_copied"], 0, "{s}");
}

#[test]
fn unaligned_rows_and_other_rgb_formats_verify() {
    if !vulkan_here() {
        return;
    }
    // RG24 642 wide with no stride padding: 1926-byte rows, so words straddle rows and the last
    // word of each row is zero-padded in the checksum.
    for (format, size) in [
        ("RG24", "642x480"),
        ("XB24", "100x50"),
        ("UYVY", "98x20"),
        ("NV12", "34x8"),
        ("NV21", "34x8"),
        ("YU12", "34x8"),
        ("NV16", "34x8"),
        ("P010", "34x8"),
    ] {
        let s = common::run_json(&[
            "--alloc",
            "memfd",
            "--sink",
            "vulkan",
            "--format",
            format,
            "--size",
            size,
            "--stride-align",
            "1",
            "--frames",
            "20",
        ]);
        assert_eq!(s["frames_verified"], 20, "{format} {size}: {s}");
        assert_eq!(s["bytes_copied"], 0, "{format} {size}: {s}");
    }
}

#[test]
fn staging_path_copies_and_says_so() {
    if !vulkan_here() {
        return;
    }
    let s = common::run_json(&[
        "--alloc",
        "memfd",
        "--sink",
        "vulkan:staging",
        "--format",
        "XR24",
        "--size",
        "640x480",
        "--frames",
        "10",
    ]);
    assert_eq!(s["frames_verified"], 10, "{s}");
    let frame = 640 * 480 * 4u64;
    let copied = s["bytes_copied"].as_u64().unwrap();
    // One CPU copy per frame (plus a GPU copy where host-visible memory is not device-local).
    assert!(
        copied == 10 * frame || copied == 20 * frame,
        "bytes_copied {copied}, frame {frame}"
    );
}

fn decode_png(path: &std::path::Path) -> Vec<u8> {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    buf
}

#[test]
fn gpu_conversion_matches_the_cpu_png_sink() {
    if !vulkan_here() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("frameshare-vk-png-{}", std::process::id()));
    // png:DIR makes only DIR itself (a missing parent is an error, not `mkdir -p`).
    std::fs::create_dir_all(&dir).unwrap();
    for format in [
        "XR24", "RG24", "YUYV", "UYVY", "NV12", "NV21", "YU12", "NV16", "P010",
    ] {
        let cpu = dir.join(format!("{format}-cpu"));
        let gpu = dir.join(format!("{format}-gpu"));
        for (sink, d) in [("png", &cpu), ("vulkan:png", &gpu)] {
            let spec = format!("{sink}:{}", d.display());
            let out = common::frameshare(&[
                "run",
                "--alloc",
                "memfd",
                "--sink",
                &spec,
                "--format",
                format,
                "--size",
                "320x240",
                "--frames",
                "3",
                "--pattern",
                "bars",
            ]);
            assert!(out.status.success(), "{spec}: {out:?}");
        }
        for seq in 0..3 {
            let name = format!("frame-{seq:06}.png");
            let (a, b) = (decode_png(&cpu.join(&name)), decode_png(&gpu.join(&name)));
            assert_eq!(a.len(), 320 * 240 * 4);
            assert!(a == b, "{format} {name}: GPU RGBA differs from the CPU's");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wrong_frame_is_caught_and_imports_happen_once_per_buffer() {
    if !vulkan_here() {
        return;
    }
    let layout = FrameLayout::linear(Fourcc::YUYV, 320, 240, 256).unwrap();
    let (mut alloc, _) = frameshare::alloc::open("memfd").unwrap();
    let buffer = alloc.allocate(&layout).unwrap();
    let mut map = buffer.map(true).unwrap();
    let mut generator = Generator::new(Pattern::MovingBox, &layout);
    let mut sink = VulkanSink::new(VulkanOptions::default()).expect("lavapipe works");
    sink.set_pattern(Some(Pattern::MovingBox));
    let before = frameshare::counters::Counters::now();
    sink.add_buffer(0, &buffer).unwrap();
    assert_eq!(sink.stats().imports[0].path, ImportPath::HostPointer);
    let frame = |sink: &mut VulkanSink, seq| {
        sink.frame(FrameIn {
            id: 0,
            seq,
            buffer: &buffer,
            acquire: None,
            meta: &Default::default(),
        })
        .unwrap()
    };
    for seq in 0..5 {
        {
            let mut a = map.access(Access::Write).unwrap();
            generator.fill(0, &mut a, seq);
        }
        assert!(frame(&mut sink, seq).verified, "frame {seq}");
    }
    // The buffer holds frame 4; claiming it is frame 5 must fail verification.
    assert!(!frame(&mut sink, 5).verified, "a stale frame passed");
    // One changed byte in the middle of the picture must fail it too.
    {
        let mut a = map.access(Access::Write).unwrap();
        generator.fill(0, &mut a, 6);
        a.row_mut(0, 200)[333] ^= 0x10;
    }
    assert!(!frame(&mut sink, 6).verified, "a corrupted frame passed");
    assert_eq!(sink.stats().mismatches, 2);
    assert_eq!(sink.stats().verified, 5);
    let after = frameshare::counters::Counters::now().since(before);
    assert_eq!(
        after.gpu_imports, 1,
        "one import for one buffer, none per frame"
    );
    assert_eq!(sink.bytes_copied(), 0);
}

#[test]
fn explain_on_the_host() {
    if !vulkan_here() {
        return;
    }
    let explain = |args: &[&str]| {
        let mut all = vec!["explain"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = common::frameshare(&all);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("explain {args:?}: {e}: {out:?}"));
        (out.status.success(), v)
    };
    let (ok, v) = explain(&["XR24", "1920x1080", "--alloc", "memfd"]);
    assert!(ok, "{v}");
    assert_eq!(v["path"], "host-pointer", "{v}");
    let (ok, v) = explain(&[
        "NV12",
        "640x480",
        "--alloc",
        "posix-shm",
        "--modifier",
        "0x0100000000000001",
    ]);
    assert!(!ok);
    assert!(
        v["reasons"].to_string().contains("unsupported-modifier"),
        "{v}"
    );
    let (ok, v) = explain(&["RG24", "16384x16384", "--alloc", "memfd"]);
    assert!(!ok);
    assert!(v["reasons"].to_string().contains("too-large"), "{v}");
    let (ok, v) = explain(&["ABCD", "640x480", "--alloc", "memfd"]);
    assert!(!ok);
    assert!(
        v["reasons"].to_string().contains("unsupported-fourcc"),
        "{v}"
    );
    // A dma-buf kind on a device without VK_EXT_image_drm_format_modifier names the extension.
    let (_, v) = explain(&["XR24", "640x480", "--alloc", "udmabuf"]);
    let devices = frameshare::gpu::vulkan::probe().unwrap_or_default();
    if !devices
        .iter()
        .any(|d| d.has("VK_EXT_image_drm_format_modifier"))
    {
        assert!(
            v["reasons"].to_string().contains("missing-extension"),
            "{v}"
        );
    }
}

#[test]
fn probe_lists_vulkan_import_paths() {
    if !vulkan_here() {
        return;
    }
    let out = common::frameshare(&["probe"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("import paths"), "{text}");
    assert!(text.contains("host-pointer"), "{text}");
}

#[test]
fn import_beats_staging_in_the_same_run() {
    if !vulkan_here() {
        return;
    }
    let r = common::vulkan_bench_json(&[
        "--allocs",
        "memfd",
        "--sizes",
        "1920x1080",
        "--frames",
        "20",
    ]);
    eprintln!(
        "memfd XR24 1920x1080 on {}: {} {:.0} µs/frame, staging {:.0} µs/frame, ratio {:.2}",
        r["device"], r["import_path"], r["import_us"], r["staging_us"], r["ratio"]
    );
    assert_eq!(r["import_path"], "host-pointer", "{r}");
    assert_eq!(r["import_verified"], 23, "{r}");
    assert_eq!(r["staging_verified"], 23, "{r}");
    assert_eq!(r["staging_bytes_per_frame"], 1920 * 1080 * 4, "{r}");
    let us = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert!(us("import_us") > 0.0 && us("staging_us") > 0.0, "{r}");
    // The transfer step alone, beside the whole frame: the staging copy (CPU) against the
    // import's ownership acquire, timed on the GPU (lavapipe's queue has timestamps).
    eprintln!(
        "transfer alone: import {:.1} µs/frame, staging {:.1} µs/frame, ratio {:.1}; import call {:.1} µs",
        us("import_transfer_us"),
        us("staging_transfer_us"),
        us("transfer_ratio"),
        us("import_call_us")
    );
    assert_eq!(r["gpu_timestamps"], true, "{r}");
    assert!(
        us("staging_transfer_us") > 0.0 && us("import_transfer_us") >= 0.0,
        "{r}"
    );
    assert!(us("import_call_us") > 0.0, "{r}");
}
