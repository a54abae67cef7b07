//! Vulkan sink inside the VM (`ci/vm-run`), where lavapipe (Mesa 25) imports dma-bufs and
//! handles SYNC_FD semaphores: dma-heap and udmabuf buffers into Vulkan as images and as buffers,
//! XR24/YUYV/NV12 at 640x480 and 1920x1080, every frame verified by the GPU checksum with no
//! copy; sw_sync acquire fences waited on by the GPU; release fences exported; an acquire fence
//! that never signals drops its frame and the session goes on; `explain`.
//! On a host without the VM devices each test prints "skipped: needs the VM" and passes.

mod common;

use std::time::Duration;

use frameshare::bus::{Channel, Publisher, PublisherOptions, Subscriber, SubscriberOptions};
use frameshare::format::{Fourcc, FrameLayout};
use frameshare::gpu::vulkan::{ImportMode, ImportPath};
use frameshare::pipeline::{self, ConsumeOptions, ConsumeReport, ProduceOptions, ProduceReport};
use frameshare::sink::vulkan::{VulkanOptions, VulkanSink, VulkanStats};
use frameshare::sink::Sink;
use frameshare::source::{Generator, GeneratorSource, Pattern};
use frameshare::sync::sw_sync::SW_SYNC_PATH;
use frameshare::sync::SwSyncTimeline;

fn vm_ready() -> bool {
    common::need("/dev/dma_heap/system") && common::need("/dev/udmabuf")
}

/// The generator's publisher, patient with an emulated GPU: the consumer's pipelines may take
/// tens of seconds to build before it says Hello, a frame seconds, and so may its release
/// fence.
fn publisher() -> Publisher {
    Publisher::new(PublisherOptions {
        name: "generator".into(),
        pattern: Some("box".into()),
        handshake_timeout: Duration::from_secs(300),
        stall_timeout: Duration::from_secs(120),
        fence_timeout: Duration::from_secs(120),
        ..Default::default()
    })
    .unwrap()
}

/// A Vulkan sink with `opts` on `chan`, in a thread of its own (the sink stays on the thread
/// that made it): the consumer's report and the sink's counters.
fn consume_in_thread(
    chan: Channel,
    opts: VulkanOptions,
) -> std::thread::JoinHandle<(ConsumeReport, VulkanStats)> {
    std::thread::spawn(move || {
        let mut sink = VulkanSink::new(opts).expect("the Vulkan sink opens inside the VM");
        let mut sub = subscriber(chan, &sink);
        let report =
            pipeline::consume(&mut sub, &mut sink, &ConsumeOptions::default()).expect("consumer");
        let stats = sink.stats().clone();
        (report, stats)
    })
}

/// A subscriber on `chan` that announces what `sink` takes.
fn subscriber(chan: Channel, sink: &dyn Sink) -> Subscriber {
    let caps = sink.caps();
    Subscriber::from_channel(
        chan,
        SubscriberOptions {
            name: sink.name(),
            fences: caps.fences,
            kinds: caps.kinds,
            formats: caps.formats,
            stall_timeout: Duration::from_secs(120),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Producer (a thread) and a Vulkan sink (this thread) over a socketpair, in one process;
/// `late_fence`: each frame goes out before it is written, with a sw_sync acquire fence that
/// signals this much later.
fn run_in_process(
    alloc: &str,
    fourcc: Fourcc,
    size: (u32, u32),
    frames: u64,
    mode: ImportMode,
    late_fence: Option<Duration>,
) -> (ProduceReport, ConsumeReport, VulkanStats) {
    let layout = FrameLayout::linear(fourcc, size.0, size.1, 256).unwrap();
    let (allocator, note) = frameshare::alloc::open(alloc).unwrap();
    let mut source = GeneratorSource::new(allocator, note, layout, 3, Pattern::MovingBox);
    if let Some(delay) = late_fence {
        source = source.with_late_acquire_fence(delay).unwrap();
    }
    let (a, b) = Channel::pair().unwrap();
    let consumer = consume_in_thread(
        b,
        VulkanOptions {
            mode,
            ..Default::default()
        },
    );
    let mut publisher = publisher();
    publisher.add_connection(a, true).unwrap();
    let opts = ProduceOptions {
        frames: Some(frames),
        wait_for: 1,
        ..Default::default()
    };
    let produced = pipeline::produce(publisher, &mut source, &opts).expect("producer");
    let (consumed, stats) = consumer.join().unwrap();
    (produced, consumed, stats)
}

fn check_all_verified(what: &str, p: &ProduceReport, c: &ConsumeReport, frames: u64) {
    assert_eq!(c.error, None, "{what}: consumer error");
    assert_eq!(p.frames_produced, frames, "{what}: produced");
    assert_eq!(c.frames_delivered, frames, "{what}: delivered");
    assert_eq!(
        c.frames_verified, frames,
        "{what}: every frame verified by the GPU checksum"
    );
    assert_eq!(c.bytes_copied, 0, "{what}: zero-copy");
}

#[test]
fn dma_bufs_import_as_images_and_as_buffers() {
    if !vm_ready() {
        return;
    }
    for alloc in ["dma-heap", "udmabuf"] {
        for (mode, path) in [
            (ImportMode::Image, ImportPath::DmaBufImage),
            (ImportMode::Buffer, ImportPath::DmaBufBuffer),
        ] {
            for fourcc in [Fourcc::XR24, Fourcc::YUYV, Fourcc::NV12] {
                for (size, frames) in [((640, 480), 8), ((1920, 1080), 4)] {
                    let what = format!("{alloc} {fourcc} {}x{} as {path}", size.0, size.1);
                    let (p, c, s) = run_in_process(alloc, fourcc, size, frames, mode, None);
                    check_all_verified(&what, &p, &c, frames);
                    assert_eq!(s.imports.len(), 3, "{what}: one import per buffer");
                    for i in &s.imports {
                        assert_eq!(i.path, path, "{what}: buffer {} took {}", i.id, i.note);
                    }
                    eprintln!("ok: {what}");
                }
            }
        }
    }
}

#[test]
fn rg24_dma_buf_falls_back_to_the_buffer_path() {
    if !vm_ready() {
        return;
    }
    let (p, c, s) = run_in_process(
        "dma-heap",
        Fourcc::RG24,
        (642, 480),
        6,
        ImportMode::Auto,
        None,
    );
    check_all_verified("RG24", &p, &c, 6);
    assert!(s.imports.iter().all(|i| i.path == ImportPath::DmaBufBuffer));
}

#[test]
fn acquire_fences_are_waited_on_by_the_gpu_and_release_fences_exported() {
    if !vm_ready() || !common::need("/sys/kernel/debug/sync/sw_sync") {
        return;
    }
    // The producer sends each frame before writing it and signals its fence 30 ms later: a
    // sink that ignored the fence would checksum stale pixels.
    let frames = 12;
    for fourcc in [Fourcc::XR24, Fourcc::NV12] {
        let (p, c, s) = run_in_process(
            "dma-heap",
            fourcc,
            (640, 480),
            frames,
            ImportMode::Auto,
            Some(Duration::from_millis(30)),
        );
        check_all_verified(
            &format!("{fourcc} with late acquire fences"),
            &p,
            &c,
            frames,
        );
        assert_eq!(
            s.gpu_acquire_waits, frames,
            "every acquire fence became a SYNC_FD semaphore the submission waited on"
        );
        assert_eq!(s.cpu_acquire_waits, 0);
        assert_eq!(
            s.release_fences, frames,
            "a release fence exported per frame"
        );
        assert_eq!(p.fence_timeouts, 0);
    }
}

#[test]
fn never_signalling_acquire_fence_drops_the_frame_and_the_session_goes_on() {
    if !vm_ready() || !common::need(SW_SYNC_PATH) {
        return;
    }
    let layout = FrameLayout::linear(Fourcc::XR24, 160, 120, 64).unwrap();
    // Never advanced: frame 1's fence does not signal while the stream runs.
    let tl = SwSyncTimeline::open().unwrap();
    let mut never = Some(tl.create_fence(1).unwrap());
    let (p, c) = Channel::pair().unwrap();
    let started = std::time::Instant::now();
    let consumer = consume_in_thread(c, VulkanOptions::default());
    let mut publisher = publisher();
    publisher.add_connection(p, true).unwrap();
    let (mut alloc, _) = frameshare::alloc::open("dma-heap").unwrap();
    let buffers = (0..2).map(|_| alloc.allocate(&layout).unwrap()).collect();
    publisher.set_buffers(buffers).unwrap();
    publisher.wait_for_consumers(1, None).unwrap();
    let mut gen = Generator::new(Pattern::MovingBox, &layout);
    for seq in 0..4u64 {
        let mut frame = publisher.loan().unwrap().expect("a free buffer");
        let id = frame.id();
        gen.fill(id, &mut frame.write().unwrap(), seq);
        if seq == 1 {
            frame.set_acquire_fence(never.take().unwrap());
        }
        frame.publish(seq).unwrap();
    }
    let stats = publisher.finish().unwrap();
    // Closing the timeline signals the fence (with an error), so the parked device can go;
    // before the sink dropped such frames this also ended its wait instead of hanging.
    drop(tl);
    let (report, s) = consumer.join().unwrap();
    eprintln!("{report:?}\n{s:?}\nin {:?}", started.elapsed());
    assert_eq!(stats.published, 4);
    assert_eq!(report.error, None);
    assert_eq!(report.frames_delivered, 4);
    assert_eq!(report.frames_dropped, 1, "{report:?}");
    assert_eq!(report.frames_verified, 3, "{report:?}");
    assert_eq!(
        s.gpu_acquire_waits, 1,
        "the fence was given to the GPU, not waited on by the CPU: {s:?}"
    );
    assert_eq!(
        s.devices_replaced, 1,
        "the stuck device was parked and a new one took the rest: {s:?}"
    );
}

#[test]
fn cli_runs_verify_every_frame() {
    if !vm_ready() {
        return;
    }
    for (alloc, format, extra) in [
        ("dma-heap", "XR24", None),
        ("dma-heap", "NV12", None),
        ("udmabuf", "YUYV", None),
        ("dma-heap", "XR24", Some("sw-sync:20")),
    ] {
        let mut args = vec![
            "--alloc", alloc, "--sink", "vulkan", "--format", format, "--size", "640x480",
            "--frames", "20",
        ];
        if let Some(f) = extra {
            args.extend(["--acquire-fence", f]);
        }
        let s = common::run_json(&args);
        assert_eq!(s["frames_verified"], 20, "{args:?}: {s}");
        assert_eq!(s["bytes_copied"], 0, "{args:?}: {s}");
    }
}

#[test]
fn explain_in_the_vm() {
    if !vm_ready() {
        return;
    }
    let explain = |args: &[&str]| {
        let mut all = vec!["explain"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = common::frameshare(&all);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "explain {args:?}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success(), v)
    };
    // Supported: a LINEAR XR24 dma-buf goes in as an image.
    let (ok, v) = explain(&["XR24", "1920x1080", "--alloc", "dma-heap"]);
    assert!(ok, "{v}");
    assert_eq!(v["works"], true, "{v}");
    assert_eq!(v["path"], "dma-buf-image", "{v}");
    // Unsupported: a tiled modifier lavapipe does not list.
    let (ok, v) = explain(&[
        "XR24",
        "640x480",
        "--alloc",
        "dma-heap",
        "--modifier",
        "0x0100000000000001",
    ]);
    assert!(!ok);
    assert!(
        v["reasons"].to_string().contains("unsupported-modifier"),
        "{v}"
    );
    // Unsupported: RG24 has no image path, and 16384x16384 exceeds the storage-buffer range.
    let (ok, v) = explain(&["RG24", "16384x16384", "--alloc", "udmabuf"]);
    assert!(!ok);
    assert!(v["reasons"].to_string().contains("too-large"), "{v}");
    // Unsupported: an unknown fourcc.
    let (ok, v) = explain(&["ABCD", "640x480", "--alloc", "dma-heap"]);
    assert!(!ok);
    assert!(
        v["reasons"].to_string().contains("unsupported-fourcc"),
        "{v}"
    );
}

#[test]
fn import_vs_staging_with_dma_bufs() {
    if !vm_ready() {
        return;
    }
    for (fourcc, mode, path) in [
        ("XR24", "image", ImportPath::DmaBufImage),
        ("XR24", "buffer", ImportPath::DmaBufBuffer),
        ("NV12", "image", ImportPath::DmaBufImage),
        ("NV12", "buffer", ImportPath::DmaBufBuffer),
    ] {
        let alloc = "dma-heap";
        let r = common::vulkan_bench_json(&[
            "--allocs",
            alloc,
            "--format",
            fourcc,
            "--sizes",
            "1920x1080",
            "--frames",
            "10",
            "--vulkan-path",
            mode,
        ]);
        eprintln!(
            "{alloc} {fourcc} 1920x1080 on {}: {} {:.0} µs/frame, staging {:.0} µs/frame, ratio {:.2}",
            r["device"], r["import_path"], r["import_us"], r["staging_us"], r["ratio"]
        );
        assert_eq!(r["import_path"], path.name(), "{r}");
        assert_eq!(r["import_verified"], 13, "{r}");
        assert_eq!(r["staging_verified"], 13, "{r}");
    }
}
