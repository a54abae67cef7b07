//! Helpers shared by the plugin's integration tests: the built plugin and `frameshare` binary,
//! a private runtime directory for stream sockets, GStreamer set up in-process with the plugin,
//! and frames read through `PixelRows` so the generator's checks apply to `GstBuffer`s.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use frameshare::buffer::PixelRows;
use frameshare::format::{Fourcc, FrameLayout, Modifier, PlaneLayout};
use gst_video::prelude::*;

/// `target/<profile>`: where cargo put the plugin (`libgstframeshare.so`) and, when the CLI was
/// built with the same profile, `frameshare`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable inside target/<profile>/deps")
        .to_path_buf()
}

/// The `frameshare` binary of the same build (build it first: `cargo build [--release]
/// --all-features -p frameshare-cli`; `ci/gst` does).
pub fn frameshare_bin() -> PathBuf {
    let p = target_dir().join("frameshare");
    assert!(
        p.exists(),
        "{} is missing: build the CLI with the same profile first (ci/gst does)",
        p.display()
    );
    p
}

/// The directory holding the built plugin, for GST_PLUGIN_PATH.
pub fn plugin_dir() -> PathBuf {
    let d = target_dir();
    assert!(
        d.join("libgstframeshare.so").exists(),
        "libgstframeshare.so missing in {}",
        d.display()
    );
    d
}

/// Whether this process runs inside `ci/vm-run` (its guest init sets FRAMESHARE_IN_VM=1).
pub fn in_vm() -> bool {
    std::env::var_os("FRAMESHARE_IN_VM").is_some_and(|v| v == "1")
}

/// Device gate: true if `path` exists. Inside the VM a missing device is a failure; on a host
/// the test prints "skipped: needs the VM" and should return.
pub fn need(path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if in_vm() {
        panic!("{path} is missing inside the VM: the VM kernel or rig is broken");
    }
    eprintln!("skipped: needs the VM (no {path})");
    false
}

static INIT: Once = Once::new();

/// Sets up the process once: a private runtime directory for stream sockets (inherited by the
/// processes the tests start), a private GStreamer registry, GStreamer itself with the plugin
/// registered from this build's code (in-process pipelines); `gst-launch-1.0` and
/// `gst-inspect-1.0` children load the built `libgstframeshare.so` instead (GST_PLUGIN_PATH).
pub fn init() {
    INIT.call_once(|| {
        let dir = std::env::temp_dir().join(format!("frameshare-gst-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("runtime dir");
        std::env::set_var("FRAMESHARE_RUNTIME_DIR", &dir);
        std::env::set_var("GST_REGISTRY", dir.join("registry.bin"));
        gst::init().expect("gst::init");
        gstframeshare::plugin_register_static().expect("registering the plugin");
    });
}

/// A stream name unique to this process and `tag`.
pub fn stream_name(tag: &str) -> String {
    format!("gst-{tag}-{}", std::process::id())
}

/// A child process that is killed if the test ends before it does.
pub struct Proc(pub Option<Child>, pub String);

impl Proc {
    /// Starts `cmd` (stdout and stderr captured).
    pub fn spawn(mut cmd: Command, what: &str) -> Proc {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Proc(Some(child), what.to_owned())
    }

    /// Waits up to `timeout` for it to exit; returns (success, stdout, stderr).
    pub fn finish(mut self, timeout: Duration) -> (bool, String, String) {
        let mut child = self.0.take().expect("not finished yet");
        let deadline = Instant::now() + timeout;
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "{} did not finish in {timeout:?}\nstdout: {}\nstderr: {}",
                    self.1,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `frameshare ARGS` as a command.
pub fn frameshare(args: &[&str]) -> Command {
    let mut c = Command::new(frameshare_bin());
    c.args(args);
    c
}

/// `gst-launch-1.0 -m PIPELINE` as a command, finding the built plugin.
pub fn gst_launch(pipeline: &str) -> Command {
    let mut c = Command::new("gst-launch-1.0");
    c.arg("-m");
    c.args(pipeline.split_whitespace());
    c.env("GST_PLUGIN_PATH", plugin_dir());
    c
}

/// A mapped video frame read through [`PixelRows`], so frameshare's checks apply to it.
pub struct GstRows {
    layout: FrameLayout,
    frame: gst_video::VideoFrame<gst_video::video_frame::Readable>,
}

impl GstRows {
    /// Maps `buffer` (of `info`) for reading, described as a one-memory frameshare layout.
    pub fn new(buffer: gst::Buffer, info: &gst_video::VideoInfo) -> GstRows {
        let frame = gst_video::VideoFrame::from_buffer_readable(buffer, info).expect("map");
        let fourcc = gstframeshare::format::fourcc_of(info.format()).expect("a known format");
        let planes = (0..frame.n_planes())
            .map(|p| PlaneLayout {
                fd_index: 0,
                offset: 0,
                stride: frame.plane_stride()[p as usize] as u32,
            })
            .collect();
        let layout = FrameLayout::new(
            fourcc,
            Modifier::LINEAR,
            info.width(),
            info.height(),
            planes,
            u64::MAX,
        )
        .unwrap_or_else(|e| panic!("layout of {info:?}: {e}"));
        GstRows { layout, frame }
    }

    /// The fourcc.
    pub fn fourcc(&self) -> Fourcc {
        self.layout.fourcc()
    }
}

impl PixelRows for GstRows {
    fn layout(&self) -> &FrameLayout {
        &self.layout
    }

    fn row(&self, plane: usize, row: u32) -> &[u8] {
        let data = self.frame.plane_data(plane as u32).expect("plane");
        let stride = self.frame.plane_stride()[plane] as usize;
        let at = row as usize * stride;
        &data[at..at + self.layout.plane_row_bytes(plane)]
    }
}
