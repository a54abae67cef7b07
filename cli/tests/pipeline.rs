//! Host tests of the two-process pipeline over every shared-memory backend, every format and
//! pattern, the named-socket mode, pool policies and the summary's shape.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{frameshare, run_json};

const SHM_KINDS: [&str; 3] = ["memfd", "posix-shm", "sysv-shm"];

fn assert_all_verified(s: &serde_json::Value, frames: u64) {
    assert_eq!(s["frames_produced"], frames, "{s}");
    assert_eq!(s["frames_delivered"], frames, "{s}");
    assert_eq!(s["frames_verified"], frames, "{s}");
    assert_eq!(s["frames_dropped"], 0, "{s}");
    assert_eq!(s["bytes_copied"], 0, "{s}");
}

#[test]
fn every_shm_backend_delivers_verified_frames() {
    for kind in SHM_KINDS {
        let s = run_json(&["--alloc", kind, "--size", "640x480", "--frames", "200"]);
        assert_eq!(s["allocator"], kind);
        assert_all_verified(&s, 200);
        assert!(s["fps"].as_f64().unwrap() > 0.0);
        let handoffs = s["handoff_frames"].as_u64().unwrap();
        for key in ["queue_latency_us", "handoff_us"] {
            if key == "handoff_us" && handoffs == 0 {
                continue; // the consumer never waited: no handoff to measure
            }
            let lat = &s[key];
            assert!(
                lat["p50"].as_f64().unwrap() > 0.0 && lat["p50"].as_f64() <= lat["p99"].as_f64(),
                "{key}: {s}"
            );
            assert!(lat["p99"].as_f64() <= lat["max"].as_f64(), "{key}: {s}");
        }
        // The handoff figure covers only the frames the consumer was waiting for: never more.
        assert!(s["handoff_frames"].as_u64().unwrap() <= 200, "{s}");
    }
}

#[test]
fn every_format_and_pattern_verifies() {
    for format in [
        "XR24", "AR24", "XB24", "AB24", "RG24", "NV12", "YUYV", "UYVY", "NV21", "YU12", "NV16",
        "P010",
    ] {
        for pattern in ["bars", "box", "solid:336699"] {
            let s = run_json(&[
                "--alloc",
                "memfd",
                "--format",
                format,
                "--pattern",
                pattern,
                "--size",
                "322x242",
                "--frames",
                "40",
            ]);
            assert_all_verified(&s, 40);
        }
    }
}

#[test]
fn large_frames_verify_on_each_backend() {
    for kind in SHM_KINDS {
        let s = run_json(&[
            "--alloc",
            kind,
            "--size",
            "3840x2160",
            "--frames",
            "30",
            "--buffers",
            "3",
        ]);
        assert_all_verified(&s, 30);
    }
}

#[test]
fn summary_has_exactly_the_documented_keys() {
    let s = run_json(&["--alloc", "memfd", "--size", "64x64", "--frames", "3"]);
    let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "allocator",
            "allocator_note",
            "bytes_copied",
            "capture_to_flip_us",
            "command",
            "consumers",
            "conversion_cpu_waits",
            "conversion_in_fences",
            "cpu_us_per_frame",
            "elapsed_s",
            "ended",
            "error",
            "formats_seen",
            "fps",
            "frames_converted",
            "frames_delivered",
            "frames_dropped",
            "frames_produced",
            "frames_verified",
            "handoff_frames",
            "handoff_us",
            "queue_latency_us",
            "restarts",
            "schema",
            "sink",
            "stopped",
        ]
    );
    assert_eq!(s["schema"], 1, "{s}");
    assert_eq!(s["command"], "run", "{s}");
    assert_eq!(s["sink"], "verify", "{s}");
    // Figures of a display and its conversion: null or 0 for the verify sink.
    assert!(s["capture_to_flip_us"].is_null(), "{s}");
    assert_eq!(s["conversion_in_fences"], 0, "{s}");
    for key in ["queue_latency_us", "handoff_us"] {
        let mut lat: Vec<&str> = s[key]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        lat.sort();
        assert_eq!(
            lat,
            ["max", "mean", "min", "p25", "p50", "p75", "p99", "samples", "stddev"],
            "{key}"
        );
    }
}

#[test]
fn auto_says_what_it_chose() {
    let out = frameshare(&["run", "--alloc", "auto", "--size", "64x64", "--frames", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("auto chose"), "{text}");
}

#[test]
fn when_full_drop_counts_what_it_skips() {
    // One buffer and a slow sink (PNG encoding): the producer outruns the consumer and, with
    // `--when-full drop`, skips the frames for which no buffer is free.
    let dir = std::env::temp_dir().join(format!("frameshare-drop-{}", std::process::id()));
    let sink = format!("png:{}", dir.display());
    let s = run_json(&[
        "--alloc",
        "memfd",
        "--size",
        "320x240",
        "--frames",
        "60",
        "--buffers",
        "1",
        "--when-full",
        "drop",
        "--sink",
        &sink,
    ]);
    let (produced, dropped) = (
        s["frames_produced"].as_u64().unwrap(),
        s["frames_dropped"].as_u64().unwrap(),
    );
    assert_eq!(produced + dropped, 60, "{s}");
    assert!(
        dropped > 0,
        "a single buffer behind a PNG encoder must drop: {s}"
    );
    assert_eq!(
        s["frames_delivered"], produced,
        "every frame sent arrives: {s}"
    );
    let pngs = std::fs::read_dir(&dir).unwrap().count() as u64;
    assert_eq!(pngs, produced);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn png_sink_writes_viewable_frames() {
    let dir = std::env::temp_dir().join(format!("frameshare-png-{}", std::process::id()));
    let sink = format!("png:{}", dir.display());
    run_json(&[
        "--alloc",
        "posix-shm",
        "--format",
        "NV12",
        "--size",
        "160x120",
        "--frames",
        "3",
        "--sink",
        &sink,
    ]);
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(dir.join("frame-000002.png")).unwrap(),
    ));
    let reader = decoder.read_info().unwrap();
    assert_eq!((reader.info().width, reader.info().height), (160, 120));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn named_socket_connects_unrelated_processes() {
    let sock = std::env::temp_dir().join(format!("frameshare-test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let mut producer = Command::new(common::bin())
        .args([
            "produce",
            "--socket",
            sock.to_str().unwrap(),
            "--alloc",
            "sysv-shm",
            "--size",
            "320x240",
            "--frames",
            "50",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The socket appears with mode 0600 before anyone connects.
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "producer never created {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let out = frameshare(&[
        "consume",
        "--socket",
        sock.to_str().unwrap(),
        "--sink",
        "verify",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["frames_delivered"], 50);
    assert_eq!(report["frames_verified"], 50);
    assert!(report["error"].is_null());
    assert!(producer.wait().unwrap().success());
    assert!(!sock.exists(), "the producer removes its socket");
}

#[test]
fn bad_arguments_are_explained() {
    for (args, needle) in [
        (&["run", "--format", "ZZZZ9"][..], "unknown pixel format"),
        (
            &["run", "--format", "NV12", "--size", "641x480"][..],
            "width must be even",
        ),
        (&["run", "--alloc", "floppy"][..], "unknown allocator"),
        (&["run", "--sink", "tape"][..], "unknown sink"),
        (&["run", "--size", "big"][..], "bad size"),
        (&["run", "--policy", "maybe"][..], "unknown policy"),
        (
            &["run", "--when-full", "maybe"][..],
            "invalid value 'maybe'",
        ),
        (
            &["run", "--stall-timeout", "0"][..],
            "not a positive number of seconds",
        ),
        (
            &["produce", "--stream", "a/b"][..],
            "bad stream name \"a/b\"",
        ),
    ] {
        let out = frameshare(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn probe_reports_shm_kinds() {
    let out = frameshare(&["probe", "--json"]);
    assert!(out.status.success());
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for kind in SHM_KINDS {
        let a = p["allocators"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == kind)
            .unwrap();
        assert_eq!(a["available"], true, "{a}");
    }
    assert_eq!(p["schema"], 1, "{p}");
    let chose = p["auto"]["chose"].as_str().unwrap();
    assert!(
        p["allocators"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["available"] == true && a["name"].as_str().unwrap().starts_with(chose)),
        "auto chose a kind that works: {p}"
    );
    assert!(
        p["sysv_limits"]["shmmni_segments"].as_u64().unwrap() > 0,
        "{p}"
    );
    assert!(
        p["build"]["features"]
            .as_array()
            .unwrap()
            .contains(&"png".into()),
        "{p}"
    );
}

#[test]
fn ls_lists_the_buffers_of_a_running_pipeline() {
    let sock = std::env::temp_dir().join(format!("frameshare-ls-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let s = sock.to_str().unwrap();
    // Paced so that the pipeline is still running while we look.
    let mut producer = Command::new(common::bin())
        .args([
            "produce",
            "--socket",
            s,
            "--alloc",
            "memfd",
            "--size",
            "320x240",
            "--frames",
            "100",
            "--fps",
            "50",
            "--buffers",
            "3",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut consumer = Command::new(common::bin())
        .args(["consume", "--socket", s, "--sink", "verify", "--json"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let found = loop {
        let out = frameshare(&["ls", "--json"]);
        assert!(out.status.success());
        let ls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let items = ls["buffers"].as_array().unwrap().clone();
        let holders = |pid: u32| {
            items
                .iter()
                .filter(|h| h["pid"] == pid && h["kind"] == "memfd")
                .count()
        };
        if holders(producer.id()) >= 3 && holders(consumer.id()) >= 3 {
            break items;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ls never showed both ends' buffers: {items:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        found.iter().all(|h| h["comm"] == "frameshare"),
        "only frameshare processes by default"
    );
    assert!(consumer.wait().unwrap().success());
    assert!(producer.wait().unwrap().success());
}
