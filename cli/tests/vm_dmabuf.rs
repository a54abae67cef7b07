//! VM tests of the dma-buf backends: two-process `run`s over dma-heap (system and CMA), udmabuf
//! and DRM dumb buffers (vkms and vgem, PRIME-exported), 640x480 and 3840x2160; `auto` choosing
//! a dma-buf; the CPU-access guard (`DMA_BUF_IOCTL_SYNC` start/end) on each kind, including
//! that it waits for an implicit write fence. Each test needs a device: inside the VM (`ci/vm-run`)
//! a missing one fails the test, on a host the test says "skipped: needs the VM".
//!
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/vm-run cargo test --release --test vm_dmabuf`

mod common;

use std::time::{Duration, Instant};

use common::{need, run_json};
use frameshare::alloc::{self, drm_dumb, Allocator};
use frameshare::buffer::{Access, BufferKind};
use frameshare::format::{Fourcc, FrameLayout};
use frameshare::sync::{import_sync_file, FenceAccess, SwSyncTimeline};

fn assert_all_verified(s: &serde_json::Value, kind: &str, frames: u64) {
    assert_eq!(s["allocator"], kind, "{s}");
    assert_eq!(s["frames_produced"], frames, "{s}");
    assert_eq!(s["frames_delivered"], frames, "{s}");
    assert_eq!(s["frames_verified"], frames, "{s}");
    assert_eq!(s["frames_dropped"], 0, "{s}");
    assert_eq!(s["bytes_copied"], 0, "{s}");
}

fn run_verified(alloc: &str, kind: &str, size: &str, frames: u64, extra: &[&str]) {
    let n = frames.to_string();
    let mut args = vec!["--alloc", alloc, "--size", size, "--frames", &n];
    args.extend_from_slice(extra);
    let s = run_json(&args);
    assert_all_verified(&s, kind, frames);
}

#[test]
fn dma_heap_system_two_processes_verified() {
    if !need("/dev/dma_heap/system") {
        return;
    }
    run_verified("dma-heap", "dma-heap", "640x480", 200, &[]);
    run_verified(
        "dma-heap:system",
        "dma-heap",
        "640x480",
        50,
        &["--format", "NV12"],
    );
}

#[test]
fn dma_heap_system_4k_verified() {
    if !need("/dev/dma_heap/system") {
        return;
    }
    run_verified("dma-heap", "dma-heap", "3840x2160", 8, &[]);
}

#[test]
fn dma_heap_cma_two_processes_verified() {
    if !need("/dev/dma_heap") {
        return;
    }
    // The VM's CMA area is 64 MiB: four 640x480 buffers fit, four 4K ones (4 x 33 MB) do not,
    // one does.
    run_verified("dma-heap:cma", "dma-heap", "640x480", 100, &[]);
    run_verified(
        "dma-heap:cma",
        "dma-heap",
        "3840x2160",
        3,
        &["--buffers", "1"],
    );
}

#[test]
fn udmabuf_two_processes_verified() {
    if !need("/dev/udmabuf") {
        return;
    }
    run_verified("udmabuf", "udmabuf", "640x480", 200, &[]);
    run_verified("udmabuf", "udmabuf", "322x242", 40, &["--format", "YUYV"]);
}

#[test]
fn udmabuf_4k_verified() {
    if !need("/dev/udmabuf") {
        return;
    }
    run_verified("udmabuf", "udmabuf", "3840x2160", 8, &[]);
}

#[test]
fn auto_prefers_a_dma_heap() {
    if !need("/dev/dma_heap/system") {
        return;
    }
    run_verified("auto", "dma-heap", "640x480", 20, &[]);
}

fn drm_driver_present(driver: &str) -> bool {
    if !need("/dev/dri") {
        return false;
    }
    let cards = drm_dumb::cards();
    let found = cards.iter().any(|(_, d)| d == driver);
    if !found && common::in_vm() {
        panic!("no {driver} card inside the VM (cards: {cards:?})");
    }
    found
}

#[test]
fn drm_dumb_vkms_prime_buffers_through_the_pipeline() {
    if !drm_driver_present("vkms") {
        return;
    }
    run_verified("drm-dumb:vkms", "drm-dumb", "640x480", 100, &[]);
    run_verified(
        "drm-dumb:vkms",
        "drm-dumb",
        "320x240",
        30,
        &["--format", "NV12"],
    );
    run_verified("drm-dumb:vkms", "drm-dumb", "3840x2160", 4, &[]);
}

#[test]
fn drm_dumb_vgem_prime_buffers_through_the_pipeline() {
    if !drm_driver_present("vgem") {
        return;
    }
    run_verified("drm-dumb:vgem", "drm-dumb", "640x480", 100, &[]);
    run_verified("drm-dumb", "drm-dumb", "322x242", 20, &["--format", "RG24"]);
}

#[test]
fn drm_dumb_uses_the_driver_pitch() {
    if !drm_driver_present("vkms") {
        return;
    }
    let mut a = drm_dumb::DrmDumbAllocator::open(Some("vkms")).unwrap();
    assert_eq!(a.driver(), "vkms");
    let layout = FrameLayout::linear(Fourcc::XR24, 100, 50, 1).unwrap();
    let b = a.allocate(&layout).unwrap();
    assert_eq!(b.kind(), BufferKind::DrmDumb);
    assert!(b.layout().planes()[0].stride >= 400, "{:?}", b.layout());
    assert_eq!((b.layout().width(), b.layout().height()), (100, 50));
    // Allocate-and-drop many times: nothing may accumulate (the GEM handle is closed right
    // after the PRIME export; the memory goes with the last dma-buf fd).
    for _ in 0..200 {
        drop(a.allocate(&layout).unwrap());
    }
    assert!(matches!(
        drm_dumb::DrmDumbAllocator::open(Some("no-such-driver")),
        Err(alloc::AllocError::Unavailable { .. })
    ));
}

/// Writes a pattern through the guard, reads it back through a second (read-only) mapping.
fn cpu_access_round_trip(alloc_name: &str) {
    let (mut a, _) = alloc::open(alloc_name).unwrap();
    let layout = FrameLayout::linear(Fourcc::XR24, 64, 16, 64).unwrap();
    let buffer = a.allocate(&layout).unwrap();
    assert!(buffer.kind().is_dma_buf());
    let mut w = buffer.map(true).unwrap();
    {
        let mut access = w.access(Access::Write).unwrap();
        for row in 0..16 {
            access.row_mut(0, row).fill(row as u8 + 1);
        }
    } // DMA_BUF_IOCTL_SYNC(END|WRITE) here
    let mut r = buffer.map(false).unwrap();
    let access = r.access(Access::Read).unwrap();
    for row in 0..16 {
        assert!(
            access.row(0, row).iter().all(|&b| b == row as u8 + 1),
            "{alloc_name}: row {row} reads back wrong"
        );
    }
}

#[test]
fn cpu_access_guard_round_trips_on_every_dma_buf_kind() {
    if !need("/dev/dma_heap/system") || !need("/dev/udmabuf") || !need("/dev/dri") {
        return;
    }
    for kind in ["dma-heap", "dma-heap:cma", "udmabuf", "drm-dumb"] {
        cpu_access_round_trip(kind);
    }
}

#[test]
fn cpu_access_guard_waits_for_an_implicit_write_fence() {
    if !need("/dev/dma_heap/system") || !need(frameshare::sync::sw_sync::SW_SYNC_PATH) {
        return;
    }
    for kind in ["dma-heap", "udmabuf"] {
        let (mut a, _) = alloc::open(kind).unwrap();
        let layout = FrameLayout::linear(Fourcc::XR24, 64, 16, 64).unwrap();
        let buffer = a.allocate(&layout).unwrap();
        let timeline = SwSyncTimeline::open().unwrap();
        let fence = timeline.create_fence(1).unwrap();
        import_sync_file(buffer.fds()[0], &fence, FenceAccess::Write).unwrap();
        let reader = {
            let buffer = buffer.clone();
            std::thread::spawn(move || {
                let mut m = buffer.map(false).unwrap();
                let t = Instant::now();
                let access = m.access(Access::Read).unwrap(); // SYNC(START|READ) waits here
                let waited = t.elapsed();
                drop(access);
                waited
            })
        };
        let hold = Duration::from_millis(300);
        std::thread::sleep(hold);
        assert!(
            !reader.is_finished(),
            "{kind}: CPU read began before the write fence signalled"
        );
        timeline.advance(1).unwrap();
        let waited = reader.join().unwrap();
        assert!(
            waited >= hold - Duration::from_millis(50),
            "{kind}: waited only {waited:?}"
        );
        eprintln!("{kind}: CPU-access guard waited {waited:?} for the implicit fence");
        // With the fence signalled, access begins at once.
        let mut m = buffer.map(false).unwrap();
        let t = Instant::now();
        drop(m.access(Access::Read).unwrap());
        assert!(t.elapsed() < Duration::from_millis(200));
    }
}

#[test]
fn dma_bufs_carry_their_names_in_fdinfo() {
    if !need("/dev/dma_heap/system") || !need("/dev/udmabuf") {
        return;
    }
    use std::os::fd::AsRawFd;
    for (kind, exporter) in [("dma-heap", "system"), ("udmabuf", "udmabuf")] {
        let (mut a, _) = alloc::open(kind).unwrap();
        let buffer = a
            .allocate(&FrameLayout::linear(Fourcc::XR24, 64, 16, 64).unwrap())
            .unwrap();
        let fd = buffer.fds()[0].as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        assert!(
            info.contains(&format!("exp_name:\t{exporter}")),
            "{kind}: {info}"
        );
        assert!(info.contains("name:\tframeshare XR24"), "{kind}: {info}");
    }
}
