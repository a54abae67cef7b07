//! Listing the machine's capture devices: video nodes, their drivers, formats and rates.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use super::*;
use crate::sys::v4l2::{self as sys};

/// Video nodes (`/dev/videoN`) in number order.
pub fn video_nodes() -> Vec<PathBuf> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e
                        .file_name()
                        .to_str()?
                        .strip_prefix("video")?
                        .parse()
                        .ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// What one capture node offers (for `frameshare probe`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    /// The node.
    pub path: String,
    /// Driver.
    pub driver: String,
    /// Card name.
    pub card: String,
    /// Whether it uses the multi-planar API.
    pub multiplanar: bool,
    /// Formats: (V4L2 fourcc, DRM fourcc frameshare maps it to, sizes as `WxH` or ranges).
    pub formats: Vec<(String, Option<String>, Vec<String>)>,
}

pub(super) fn capture_type(caps: u32) -> Option<u32> {
    if caps & sys::CAP_STREAMING == 0 {
        None
    } else if caps & sys::CAP_VIDEO_CAPTURE != 0 {
        Some(sys::BUF_TYPE_CAPTURE)
    } else if caps & sys::CAP_VIDEO_CAPTURE_MPLANE != 0 {
        Some(sys::BUF_TYPE_CAPTURE_MPLANE)
    } else {
        None
    }
}

pub(super) fn open_node(path: &Path) -> Result<v4l::Device, V4l2Error> {
    let dev = v4l::Device::with_path(path).map_err(|error| V4l2Error::Open {
        path: path.to_owned(),
        error,
    })?;
    // The crate opens without O_CLOEXEC; a camera fd must not leak into spawned processes.
    let fd = sys::device_fd(&dev);
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC).map_err(|errno| V4l2Error::Sys {
        path: path.to_owned(),
        op: "fcntl(FD_CLOEXEC)".into(),
        errno,
    })?;
    Ok(dev)
}

pub(super) fn formats_of(fd: BorrowedFd<'_>, buf_type: u32) -> Vec<u32> {
    (0..)
        .map_while(|i| sys::enum_fmt(fd, buf_type, i).ok().map(|(f, _)| f))
        .take(256)
        .collect()
}

/// Lists capture nodes and what they offer.
pub fn devices() -> Vec<DeviceInfo> {
    let mut out = Vec::new();
    for path in video_nodes() {
        let Ok(dev) = open_node(&path) else { continue };
        let fd = sys::device_fd(&dev);
        let Ok(caps) = sys::querycap(fd) else {
            continue;
        };
        let Some(bt) = capture_type(caps.device_caps) else {
            continue;
        };
        let formats = formats_of(fd, bt)
            .into_iter()
            .map(|f| {
                let sizes = (0..)
                    .map_while(|i| sys::enum_framesize(fd, f, i).ok())
                    .take(64)
                    .map(|s| match s {
                        sys::FrameSize::Discrete(w, h) => format!("{w}x{h}"),
                        sys::FrameSize::Stepwise(a, b, _, c, d, _) => format!("{a}x{c}-{b}x{d}"),
                    })
                    .collect();
                (fourcc_name(f), drm_fourcc(f).map(|d| d.name()), sizes)
            })
            .collect();
        out.push(DeviceInfo {
            path: path.display().to_string(),
            driver: caps.driver,
            card: caps.card,
            multiplanar: bt == sys::BUF_TYPE_CAPTURE_MPLANE,
            formats,
        });
    }
    out
}

pub(super) fn fps_of(interval: Option<(u32, u32)>) -> String {
    match interval {
        Some((n, d)) if n > 0 => format!("{:.3} fps", d as f64 / n as f64),
        _ => "unknown".into(),
    }
}
