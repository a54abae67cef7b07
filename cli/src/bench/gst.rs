//! GStreamer's shared-memory pair as a reference (`--gstreamer`): `videotestsrc pattern=black !
//! shmsink` in one process, `shmsrc ! fpsdisplaysink video-sink=fakesink` in another, the frame
//! rate read from `fpsdisplaysink`'s running average (so the pipelines' start-up is not in it).
//! videotestsrc allocates from shmsink's own memory, so no frame is copied; it clears each frame
//! to black, which the frameshare side it is compared with does too (`Draw::Clear`): the same
//! work per frame on both producers, the transports differing. (A producer that draws nothing,
//! `imagefreeze`, deadlocks shmsink in GStreamer 1.22; `unixfdsink` needs 1.24.)

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{size_name, BenchError};

/// The GStreamer tools, found.
#[derive(Debug, Clone)]
pub(super) struct Gst {
    launch: PathBuf,
    /// `gst-launch-1.0 --version`'s first line.
    pub(super) version: String,
}

/// One run of the pair.
#[derive(Debug, Clone, Copy)]
pub(super) struct GstRun {
    /// Frames per second at the consumer (fpsdisplaysink's running average).
    pub(super) fps: f64,
}

/// How long one pair may run before it counts as hung: this, plus a few ms per frame.
const GST_PATIENCE: Duration = Duration::from_secs(20);

impl Gst {
    /// `gst-launch-1.0` on `PATH` with the elements the pair needs, or why not.
    pub(super) fn find() -> Result<Gst, String> {
        let launch = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join("gst-launch-1.0"))
            .find(|p| p.is_file())
            .ok_or("gst-launch-1.0 is not on PATH (Debian: gstreamer1.0-tools)")?;
        let inspect = launch.with_file_name("gst-inspect-1.0");
        for element in [
            "shmsink",
            "shmsrc",
            "videotestsrc",
            "fpsdisplaysink",
            "fakesink",
        ] {
            let ok = Command::new(&inspect)
                .arg(element)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!(
                    "GStreamer has no {element} (Debian: gstreamer1.0-plugins-base, -good, -bad)"
                ));
            }
        }
        let version = Command::new(&launch)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_default();
        Ok(Gst { launch, version })
    }

    /// Runs `frames` frames of `size` BGRx (XR24) through shmsink → shmsrc, unpaced.
    pub(super) fn shm_pair(&self, size: (u32, u32), frames: u64) -> Result<GstRun, BenchError> {
        let (w, h) = size;
        let frame = w as u64 * h as u64 * 4;
        let dir = std::env::temp_dir();
        let socket = dir.join(format!(
            "frameshare-bench-{}-gst-{}.sock",
            std::process::id(),
            size_name(size)
        ));
        let _ = std::fs::remove_file(&socket);
        let caps = format!("video/x-raw,format=BGRx,width={w},height={h},framerate=30/1");
        // Room for videotestsrc's whole pool and what the consumer holds: a smaller area makes
        // shmsink fall back to copying, and then wait for room that never comes.
        let shm_size = frame * 64;
        let gerr = |what: &str, e: std::io::Error| BenchError::Peer(format!("{what}: {e}"));
        let mut producer = Command::new(&self.launch)
            .args([
                "-q",
                "videotestsrc",
                &format!("num-buffers={frames}"),
                "pattern=black",
            ])
            .args(["!", &caps, "!", "shmsink"])
            .arg(format!("socket-path={}", socket.display()))
            .args(["wait-for-connection=true", "sync=false"])
            .arg(format!("shm-size={shm_size}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| gerr("starting gst-launch-1.0 (shmsink)", e))?;
        // shmsink makes its socket when it starts; shmsrc fails if it is not there yet.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !socket.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let consumer = Command::new(&self.launch)
            .args(["-v", "shmsrc"])
            .arg(format!("socket-path={}", socket.display()))
            .args(["!", &caps, "!", "fpsdisplaysink"])
            .args([
                "video-sink=fakesink enable-last-sample=false",
                "text-overlay=false",
                "sync=false",
                "fps-update-interval=50",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| gerr("starting gst-launch-1.0 (shmsrc)", e))?;
        let out = wait_output(consumer, GST_PATIENCE + Duration::from_millis(5 * frames));
        // The consumer ends when the producer's socket closes; the producer may need a push.
        let _ = producer.kill();
        let _ = producer.wait();
        let _ = std::fs::remove_file(&socket);
        let out = out?;
        let fps = last_average(&out).ok_or_else(|| {
            BenchError::Peer(format!(
                "GStreamer shm pair at {}: no fps measured (fpsdisplaysink printed nothing)",
                size_name(size)
            ))
        })?;
        Ok(GstRun { fps })
    }
}

/// The child's stdout once it exits, killing it after `patience`.
fn wait_output(mut child: std::process::Child, patience: Duration) -> Result<String, BenchError> {
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = std::time::Instant::now() + patience;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BenchError::Peer(format!(
                    "the GStreamer shm pair did not finish within {patience:?}"
                )));
            }
        }
    }
    reader
        .join()
        .map_err(|_| BenchError::Peer("reading gst-launch-1.0's output".into()))
}

/// The last `average: X` fpsdisplaysink printed.
fn last_average(out: &str) -> Option<f64> {
    out.rsplit("average: ")
        .next()
        .filter(|_| out.contains("average: "))
        .and_then(|rest| {
            rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()?
                .parse()
                .ok()
        })
}

#[cfg(test)]
mod tests {
    use super::last_average;

    #[test]
    fn reads_the_last_average() {
        let out = "last-message = rendered: 10, dropped: 0, current: 5.00, average: 4.50\n\
                   last-message = rendered: 20, dropped: 0, current: 7617.65, average: 7000.25\n";
        assert_eq!(last_average(out), Some(7000.25));
        assert_eq!(last_average("nothing"), None);
    }
}
