//! Smoke test of `frameshare bench`: tiny frames and few ping-pongs, checking the report's
//! structure and invariants (every ratio finite and positive, the copying baselines copy bytes
//! while the zero-copy paths copy none, nothing allocated, mapped or imported after warm-up,
//! every verified frame right, one fan-out row per consumer count with a figure per consumer,
//! every target consistent with its limit). Never asserts timings: those depend on the machine.

mod common;

use serde_json::Value;

const ALLOCS: [&str; 3] = ["memfd", "posix-shm", "sysv-shm"];
const SIZES: [&str; 2] = ["64x48", "128x96"];
const FRAMES: u64 = 6;

fn bench(extra: &[&str]) -> std::process::Output {
    let sizes = SIZES.join(",");
    let allocs = ALLOCS.join(",");
    let frames = FRAMES.to_string();
    let mut args = vec![
        "bench",
        "--frames",
        &frames,
        "--rounds",
        "2",
        "--pace-us",
        "100",
        "--sizes",
        &sizes,
        "--allocs",
        &allocs,
    ];
    args.extend_from_slice(extra);
    let out = common::frameshare(&args);
    assert!(
        out.status.success(),
        "frameshare {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number (null is how JSON writes NaN) in {v}"))
}

fn positive(v: &Value, key: &str) -> f64 {
    let x = num(v, key);
    assert!(x.is_finite() && x > 0.0, "{key} = {x} in {v}");
    x
}

fn latency_ok(v: &Value) {
    let l = &v["latency_us"];
    let (p50, p99, max) = (positive(l, "p50"), positive(l, "p99"), positive(l, "max"));
    assert!(p50 <= p99 && p99 <= max, "percentiles out of order in {v}");
}

#[test]
fn bench_json_report_is_complete_and_consistent() {
    let out = bench(&["--json"]);
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["format"], "XR24");
    assert_eq!(r["frames"], FRAMES);
    assert_eq!(r["allocs"], serde_json::json!(ALLOCS));
    assert_eq!(r["sizes"], serde_json::json!(SIZES));

    // The floor.
    let floor = &r["floor"];
    assert!(floor["samples"].as_u64().unwrap() > 0);
    latency_ok(floor);
    positive(floor, "consumer_cpu_us_per_frame");
    positive(floor, "producer_cpu_us_per_frame");

    // a. One handoff row per (alloc, size); zero copy copies nothing.
    let handoff = r["handoff"].as_array().unwrap();
    assert_eq!(handoff.len(), ALLOCS.len() * SIZES.len());
    for h in handoff {
        assert_eq!(h["samples"], FRAMES, "{h}");
        latency_ok(h);
        positive(h, "p50_vs_floor");
        positive(h, "p99_vs_floor");
        positive(h, "socket_bytes_per_frame");
        assert_eq!(num(h, "bytes_copied_per_frame"), 0.0, "{h}");
    }
    // The size-scaling check, one per allocator, consistent with its own limit.
    let scaling = r["size_scaling"].as_array().unwrap();
    assert_eq!(scaling.len(), ALLOCS.len());
    for s in scaling {
        assert_eq!(s["small"], SIZES[0]);
        assert_eq!(s["large"], SIZES[1]);
        assert_eq!(num(s, "bytes_ratio"), 4.0);
        let ratio = positive(s, "p50_ratio");
        positive(s, "p99_ratio");
        assert_eq!(s["within_limit"], ratio <= num(s, "limit"), "{s}");
    }

    // b. Consumer CPU, and every frame through the verify sink was right.
    let cpu = r["consumer_cpu"].as_array().unwrap();
    assert_eq!(cpu.len(), handoff.len());
    for c in cpu {
        for k in [
            "null_us_per_frame",
            "verify_us_per_frame",
            "null_vs_floor",
            "verify_vs_floor",
        ] {
            positive(c, k);
        }
        let checked = c["verify_frames"].as_u64().unwrap();
        assert!(checked > 0);
        assert_eq!(c["frames_verified"].as_u64().unwrap(), checked, "{c}");
    }

    // c. fps, two processes against one.
    let fps = r["fps"].as_array().unwrap();
    assert_eq!(fps.len(), handoff.len());
    for f in fps {
        positive(f, "two_process_fps");
        positive(f, "in_process_fps");
        positive(f, "ratio");
    }

    // d. Copying baselines: each size, pipe and ring; they copy, zero copy does not.
    let baselines = r["copy_baselines"].as_array().unwrap();
    assert_eq!(baselines.len(), 2 * SIZES.len());
    for b in baselines {
        assert_eq!(b["samples"], FRAMES, "{b}");
        latency_ok(b);
        let frame = positive(b, "frame_bytes");
        let copied = positive(b, "bytes_copied_per_frame");
        let copies = match b["method"].as_str().unwrap() {
            "pipe" => 2.0,
            "shm-ring" => 1.0,
            m => panic!("unknown baseline {m}"),
        };
        assert_eq!(copied, copies * frame, "{b}");
        assert_eq!(num(b, "zero_copy_bytes_copied_per_frame"), 0.0, "{b}");
        for k in [
            "p50_vs_floor",
            "p50_vs_zero_copy",
            "consumer_cpu_us_per_frame",
            "cpu_vs_zero_copy",
        ] {
            positive(b, k);
        }
    }

    // e. Nothing allocated, mapped or imported after warm-up.
    let a = &r["after_warmup"];
    assert!(a["frames"].as_u64().unwrap() > 0);
    for side in ["producer", "consumer", "total"] {
        for k in ["buffers", "mappings", "gpu_imports"] {
            assert_eq!(a[side][k], 0, "after_warmup.{side}.{k} in {a}");
        }
    }
    assert_eq!(a["zero"], true);

    // f. A handoff's cost with nothing drawn, per zero-copy cell, each side against the floor.
    let cost = r["static_cost"].as_array().unwrap();
    assert_eq!(cost.len(), handoff.len());
    for c in cost {
        latency_ok(c);
        for k in [
            "p50_vs_floor",
            "consumer_cpu_us_per_frame",
            "consumer_vs_floor",
            "producer_cpu_us_per_frame",
            "producer_vs_floor",
            "unpaced_fps",
            "unpaced_consumer_cpu_us_per_frame",
            "unpaced_producer_cpu_us_per_frame",
        ] {
            positive(c, k);
        }
    }

    // g. Fan-out: 1, 2, 4, 8 consumers, each with its own figures; the growth per consumer is
    // said from two consumers on.
    let fan = r["fan_out"].as_array().unwrap();
    let counts: Vec<u64> = fan
        .iter()
        .map(|f| f["consumers"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2, 4, 8]);
    for f in fan {
        let n = f["consumers"].as_u64().unwrap();
        let each = f["per_consumer"].as_array().unwrap();
        assert_eq!(each.len() as u64, n, "{f}");
        for (i, c) in each.iter().enumerate() {
            assert_eq!(c["index"], i + 1);
            latency_ok(c);
            positive(c, "cpu_us_per_frame");
        }
        positive(f, "producer_cpu_us_per_frame");
        positive(f, "unpaced_fps");
        positive(f, "last_p50_vs_lone");
        assert_eq!(
            f["producer_cpu_us_per_extra_consumer"].is_null(),
            n == 1,
            "{f}"
        );
    }
    assert_eq!(num(&fan[0], "last_p50_vs_lone"), 1.0);

    // h. GStreamer was not asked for.
    assert_eq!(r["gstreamer"], serde_json::json!([]));

    // i. Seven targets, each consistent with its own limit; only GStreamer's is unmeasured.
    let targets = r["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 7);
    for t in targets {
        let limit = num(t, "limit");
        match (t["value"].as_f64(), t["op"].as_str().unwrap()) {
            (Some(v), "<=") => assert_eq!(t["met"], v <= limit, "{t}"),
            (Some(v), ">=") => assert_eq!(t["met"], v >= limit, "{t}"),
            (None, _) => {
                assert!(t["what"].as_str().unwrap().contains("GStreamer"), "{t}");
                assert!(t["met"].is_null());
            }
            (_, op) => panic!("unknown op {op} in {t}"),
        }
    }

    // The Vulkan hook is empty and says so.
    assert!(r["vulkan"].is_null());
    assert!(r["vulkan_note"]
        .as_str()
        .unwrap()
        .starts_with("not measured"));
}

#[test]
fn bench_table_has_every_section() {
    let out = bench(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "floor:",
        "a. handoff latency",
        "b. consumer CPU",
        "c. fps",
        "d. copying baselines",
        "e. after warm-up",
        "f. per frame with a static source",
        "g. fan-out",
        "h. GStreamer shm: not measured",
        "i. targets",
        "vulkan: not measured",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    for alloc in ALLOCS {
        assert!(
            text.contains(&format!("{alloc}: handoff p50 at 128x96 / at 64x48")),
            "no size scaling line for {alloc} in:\n{text}"
        );
    }
}

#[test]
fn bench_rejects_an_unknown_allocator() {
    let out = common::frameshare(&["bench", "--frames", "1", "--allocs", "no-such-kind"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-kind"), "stderr: {err}");
}
