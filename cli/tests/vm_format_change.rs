//! VM tests of format change mid-stream on dma-buf: a producer publishing dma-heap buffers
//! changes resolution three times in one run (its buffers retired and re-added at each
//! change), and a consumer verifies every frame through the verify, Vulkan and KMS sinks —
//! each sink re-negotiates at each change. Each test needs its devices: inside the VM a
//! missing one fails the test, on a host it says "skipped: needs the VM".
//!
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/vm-run cargo test --release
//! --all-features -p frameshare-cli --test vm_format_change -- --test-threads=1`

mod common;

use std::process::Stdio;

use common::{need, RuntimeDir};
use serde_json::Value;

/// Frames per size, and the sizes after the first (640x480).
const EVERY: u64 = 10;
const SIZES: &str = "320x240,160x120,64x48";
const FRAMES: u64 = 4 * EVERY;

/// `produce` on dma-heap buffers changing size every [`EVERY`] frames, and `consume --sink
/// SINK` from its first frame to its last; returns the consumer's report.
fn sizes_through(sink: &str) -> Value {
    let rt = RuntimeDir::new("vm-sizes");
    let frames = FRAMES.to_string();
    let every = EVERY.to_string();
    let producer = rt
        .command(&[
            "produce",
            "--stream",
            "sizes",
            "--alloc",
            "dma-heap",
            "--size",
            "640x480",
            "--change-size-every",
            &every,
            "--sizes",
            SIZES,
            "--frames",
            &frames,
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The producer waits for its first consumer before its first frame; the consumer waits
    // for the stream as long as it takes (--wait 0), so the order of the two starts is free.
    let consumer = rt
        .command(&[
            "consume", "--stream", "sizes", "--wait", "0", "--sink", sink, "--json",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut producer = producer;
    if !consumer.status.success() {
        // The producer waits for a consumer as long as it takes: one that failed before it
        // joined would leave it (and this test) waiting for good instead of failing.
        let _ = producer.kill();
    }
    let produced = producer.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&consumer.stdout).into_owned();
    assert!(
        produced.status.success() && consumer.status.success(),
        "producer {}: {}{}\nconsumer {}: {report}{}",
        produced.status,
        String::from_utf8_lossy(&produced.stdout),
        String::from_utf8_lossy(&produced.stderr),
        consumer.status,
        String::from_utf8_lossy(&consumer.stderr)
    );
    serde_json::from_str(&report).unwrap_or_else(|e| panic!("consumer report ({e}): {report}"))
}

/// Every frame delivered and verified, across four layouts, with no pixel copied.
fn assert_every_frame_verified(sink: &str, r: &Value) {
    assert_eq!(r["frames_delivered"], FRAMES, "{sink}: {r}");
    assert_eq!(r["frames_verified"], FRAMES, "{sink}: {r}");
    assert_eq!(r["frames_dropped"], 0, "{sink}: {r}");
    assert_eq!(r["formats_seen"], 4, "{sink}: {r}");
    assert_eq!(r["bytes_copied"], 0, "{sink}: {r}");
    assert!(r["error"].is_null(), "{sink}: {r}");
}

#[test]
fn three_resolution_changes_verified_on_dma_heap() {
    if !need("/dev/dma_heap/system") {
        return;
    }
    let r = sizes_through("verify");
    assert_every_frame_verified("verify", &r);
}

#[test]
fn three_resolution_changes_through_the_vulkan_sink() {
    if !need("/dev/dma_heap/system") {
        return;
    }
    let r = sizes_through("vulkan");
    assert_every_frame_verified("vulkan", &r);
}

#[test]
fn three_resolution_changes_through_the_kms_sink() {
    if !need("/dev/dma_heap/system") || !need("/dev/dri/card1") {
        return;
    }
    let r = sizes_through("kms:vkms:verify-writeback");
    assert_every_frame_verified("kms", &r);
}
