//! VM tests of the plugin on devices (run inside the project's qemu guest, `ci/gst --vm`): a
//! vivid camera's dma-bufs through `v4l2src io-mode=dmabuf ! framesharesink` to
//! `frameshare consume --sink kms:vkms:verify-writeback` (every frame scanned out on vkms and
//! compared with its buffer through writeback), and `frameshare produce --alloc dma-heap` through
//! `framesharesrc ! kmssink` (kmssink imports the dma-bufs by PRIME). Both without copies: the
//! sink reports 0 bytes copied, kmssink's performance log shows no frame copy. On a host without
//! the devices each test says "skipped".
//!
//! `ci/gst --vm` runs both in one guest, once each, in name order (libtest sorts them): the
//! camera test, which verifies through vkms writeback, first, on a vkms no display session has
//! used yet; then the kmssink test, which does not depend on writeback.

mod common;

use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(240);

/// vivid's capture node: the `/dev/video*` whose driver (sysfs name) is vivid's capture.
fn vivid_node() -> Option<String> {
    if !need("/dev/video0") {
        return None;
    }
    let mut nodes: Vec<_> = std::fs::read_dir("/sys/class/video4linux")
        .expect("video4linux in sysfs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    nodes.sort();
    for n in nodes {
        let name =
            std::fs::read_to_string(format!("/sys/class/video4linux/{n}/name")).unwrap_or_default();
        // vivid names its nodes "vivid-000-vid-cap", "-vid-out", "-vbi-cap", …; instance 0
        // is the single-planar one v4l2src's dma-buf export is tested on.
        if name.trim() == "vivid-000-vid-cap" {
            return Some(format!("/dev/{n}"));
        }
    }
    panic!("no vivid video capture node inside the VM");
}

/// vkms (the guest's `/dev/dri/card1`; card0 is vgem).
fn vkms_present() -> bool {
    need("/dev/dri/card1")
}

/// A value from `frameshare consume --json`'s report.
fn json_u64(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in the consumer's report: {v}"))
}

#[test]
fn camera_dmabufs_through_framesharesink_to_kms_writeback() {
    let Some(node) = vivid_node() else { return };
    if !vkms_present() {
        return;
    }
    init();
    let name = stream_name("cam");
    let frames = 30;
    let sender = Proc::spawn(
        gst_launch(&format!(
            "v4l2src device={node} io-mode=dmabuf num-buffers={frames} ! \
             video/x-raw,format=BGRx,width=640,height=480 ! \
             framesharesink stream={name} wait-for-consumers=1 sync=false"
        )),
        "gst-launch-1.0 v4l2src ! framesharesink",
    );
    // The stream's socket appears once the sink started; the consumer waits for it.
    let consumer = Proc::spawn(
        frameshare(&[
            "consume",
            "--stream",
            &name,
            "--sink",
            "kms:vkms:verify-writeback",
            "--wait",
            "60",
            "--json",
        ]),
        "frameshare consume --sink kms:vkms:verify-writeback",
    );
    let (ok, out, err) = sender.finish(TIMEOUT);
    assert!(ok, "the GStreamer pipeline failed:\n{out}\n{err}");
    let (cok, cout, cerr) = consumer.finish(TIMEOUT);
    assert!(cok, "the consumer failed:\n{cout}\n{cerr}");
    // What the sink said at EOS (gst-launch -m prints element messages).
    let stats = out
        .lines()
        .find(|l| l.contains("frameshare-sink-stats"))
        .unwrap_or_else(|| panic!("no frameshare-sink-stats message:\n{out}"));
    assert!(stats.contains("copies=(guint64)0,"), "{stats}");
    assert!(stats.contains("bytes-copied=(guint64)0;"), "{stats}");
    assert!(
        stats.contains(&format!("shared=(guint64){frames},")),
        "every frame crossed as the camera's dma-buf: {stats}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&cout).unwrap_or_else(|e| panic!("consumer JSON: {e}:\n{cout}"));
    eprintln!("consumer report: {report}");
    assert_eq!(json_u64(&report, "frames_delivered"), frames, "{report}");
    assert_eq!(json_u64(&report, "bytes_copied"), 0, "{report}");
    assert_eq!(
        json_u64(&report, "frames_verified"),
        frames,
        "every frame's writeback matched its buffer: {report}"
    );
}

#[test]
fn dma_heap_stream_through_framesharesrc_to_kmssink() {
    if !need("/dev/dma_heap/system") || !vkms_present() {
        return;
    }
    init();
    let name = stream_name("kms");
    let frames = 30u64;
    let producer = Proc::spawn(
        frameshare(&[
            "produce",
            "--stream",
            &name,
            "--alloc",
            "dma-heap",
            "--format",
            "XR24",
            "--size",
            "640x480",
            "--frames",
            &frames.to_string(),
            "--json",
        ]),
        "frameshare produce --alloc dma-heap",
    );
    let mut player = gst_launch(&format!(
        "framesharesrc stream={name} ! kmssink driver-name=vkms force-modesetting=true sync=false"
    ));
    // kmssink logs each buffer's dma-buf import ("Found a dmabuf", then the framebuffer it
    // made for that memory, cached on it: "found KMS mem … with fb id = N"), and "frame copy"
    // on the performance category when it cannot import and copies instead.
    player.env("GST_DEBUG", "GST_PERFORMANCE:5,kmssink:7");
    let player = Proc::spawn(player, "gst-launch-1.0 framesharesrc ! kmssink");
    let (ok, out, err) = player.finish(TIMEOUT);
    assert!(ok, "framesharesrc ! kmssink failed:\n{out}\n{err}");
    let (pok, pout, perr) = producer.finish(TIMEOUT);
    assert!(pok, "the producer failed:\n{pout}\n{perr}");
    let log = format!("{out}\n{err}");
    assert!(
        !log.contains("frame copy"),
        "kmssink copied frames instead of importing the dma-bufs:\n{log}"
    );
    // (kmssink shows the last buffer once more as it stops.)
    let imports = log.matches("Found a dmabuf with 1 planes").count() as u64;
    assert!(
        imports >= frames,
        "every frame reached kmssink as a dma-buf: {imports} imports"
    );
    let framebuffers: std::collections::HashSet<&str> = log
        .lines()
        .filter(|l| l.contains("found KMS mem"))
        .filter_map(|l| l.split("fb id = ").nth(1))
        .map(str::trim)
        .collect();
    assert!(
        (1..=4).contains(&framebuffers.len()),
        "one framebuffer per producer buffer (4), made once and reused: {framebuffers:?}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&pout).unwrap_or_else(|e| panic!("producer JSON: {e}:\n{pout}"));
    eprintln!("producer report: {report}");
    assert_eq!(report["frames_produced"].as_u64(), Some(frames), "{report}");
    assert_eq!(report["consumers"]["joined"].as_u64(), Some(1), "{report}");
}
