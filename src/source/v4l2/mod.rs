//! The V4L2 camera source (feature `v4l2`): a capture device whose frames become frameshare
//! buffers without pixel copies where the device allows it.
//!
//! Three ways to get frames out, chosen by [`Mode`] (or tried in this order by [`Mode::Auto`]):
//! - **export**: the device allocates its buffers (`V4L2_MEMORY_MMAP`) and each is exported as a
//!   dma-buf with `VIDIOC_EXPBUF` — [`BufferKind::V4l2Export`](crate::BufferKind::V4l2Export) buffers, one fd per memory plane;
//! - **import**: the device writes straight into buffers we allocated (dma-heap, GBM, udmabuf),
//!   queued with `V4L2_MEMORY_DMABUF`; the buffers' strides must match the format's
//!   `bytesperline` (the source asks the driver for the buffers' strides first);
//! - **copy**: last resort — MMAP buffers mapped read-only, each frame copied row by row into a
//!   buffer of ours, every byte counted in [`V4l2Source::bytes_copied`].
//!
//! Format, size and frame rate are negotiated with `VIDIOC_S_FMT` / `VIDIOC_S_PARM` (single- or
//! multi-planar, whichever the node offers). Frames are dequeued with `poll` and a timeout, so a
//! camera that stalls or disappears ends in a clear [`V4l2Error`], never a hang.
//!
//! The `v4l` crate opens the device and handles controls; buffers and formats go through
//! the crate's private `sys::v4l2`, which has the multi-planar and DMABUF ioctls the crate lacks.

use std::path::PathBuf;
use std::time::Duration;

use rustix::io::Errno;

use crate::alloc::AllocError;
use crate::buffer::{Buffer, BufferError};
use crate::format::{Fourcc, FrameLayout, Modifier, PlaneLayout};
use crate::sys::v4l2::{self as sys, PixFormat, PlaneMap};

/// How frames leave the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Export, else import, else copy.
    #[default]
    Auto,
    /// The device's own buffers, exported as dma-bufs (`VIDIOC_EXPBUF`).
    Export,
    /// Our dma-bufs, queued with `V4L2_MEMORY_DMABUF`.
    Import,
    /// MMAP buffers copied into ours (counted in `bytes_copied`).
    Copy,
}

impl Mode {
    /// The name (`export`, …).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Export => "export",
            Mode::Import => "import",
            Mode::Copy => "copy",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "export" | "expbuf" => Ok(Mode::Export),
            "import" | "dmabuf" => Ok(Mode::Import),
            "copy" | "mmap" => Ok(Mode::Copy),
            _ => Err(format!(
                "unknown V4L2 mode {s:?} (auto, export, import, copy)"
            )),
        }
    }
}

/// What to open and ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct V4l2Config {
    /// The node (`None`: the first video capture device).
    pub device: Option<PathBuf>,
    /// Pixel format (`None`: the first the device offers that frameshare handles, YUYV first).
    pub fourcc: Option<Fourcc>,
    /// Frame size (`None`: the device's current one).
    pub size: Option<(u32, u32)>,
    /// Frames per second (`None`: the device's current rate).
    pub fps: Option<f64>,
    /// How to get frames out.
    pub mode: Mode,
    /// Prefer the multi-planar variant of a format (NV12 as `NM12`: each plane in its own
    /// buffer, exported as its own fd) over the contiguous one.
    pub separate_planes: bool,
}

impl V4l2Config {
    /// Parses what follows `v4l2` in `--source v4l2[:…]`: `:`/`,`-separated tokens, each a node
    /// path (`/dev/video1`), a mode (`export`, `import`, `copy`, `auto`, or `mode=…`),
    /// `fps=N`, or `separate-planes` (see [`V4l2Config::separate_planes`]).
    pub fn parse(args: &str) -> Result<Self, String> {
        let mut c = V4l2Config::default();
        for tok in args.split([':', ',']).filter(|t| !t.is_empty()) {
            if tok.starts_with('/') {
                c.device = Some(tok.into());
            } else if let Some(f) = tok.strip_prefix("fps=") {
                c.fps = Some(
                    f.parse()
                        .ok()
                        .filter(|v: &f64| *v > 0.0)
                        .ok_or_else(|| format!("bad frame rate {f:?}"))?,
                );
            } else if tok == "separate-planes" {
                c.separate_planes = true;
            } else {
                c.mode = tok.strip_prefix("mode=").unwrap_or(tok).parse()?;
            }
        }
        Ok(c)
    }
}

/// Errors from the V4L2 source.
#[derive(Debug, thiserror::Error)]
pub enum V4l2Error {
    /// No capture device.
    #[error("V4L2: no video capture device: {0}")]
    NoDevice(String),
    /// The node could not be opened.
    #[error("V4L2 {path}: open failed: {error}")]
    Open {
        /// The node.
        path: PathBuf,
        /// The error (in the message, so not a `source`: said once).
        error: std::io::Error,
    },
    /// An ioctl failed.
    #[error("V4L2 {path}: {op} failed: {errno}")]
    Sys {
        /// The node.
        path: PathBuf,
        /// What was attempted.
        op: String,
        /// The error.
        errno: Errno,
    },
    /// The node cannot stream video captures.
    #[error(
        "V4L2 {path} ({driver}): not a streaming video capture node (device caps 0x{caps:08x})"
    )]
    NotCapture {
        /// The node.
        path: PathBuf,
        /// Driver.
        driver: String,
        /// Its device caps.
        caps: u32,
    },
    /// The format asked for is not offered, or none frameshare handles is.
    #[error("V4L2 {path}: {why} (the device offers: {offered})")]
    Format {
        /// The node.
        path: PathBuf,
        /// What went wrong.
        why: String,
        /// What the device lists.
        offered: String,
    },
    /// The mode asked for does not work with this device or these buffers.
    #[error("V4L2 {path}: {mode} mode: {why}")]
    Mode {
        /// The node.
        path: PathBuf,
        /// The mode.
        mode: &'static str,
        /// Why not.
        why: String,
    },
    /// No frame arrived in time.
    #[error("V4L2 {path}: no frame within {timeout:?}: the camera stalled (frame rate {fps})")]
    Stalled {
        /// The node.
        path: PathBuf,
        /// How long we waited.
        timeout: Duration,
        /// The negotiated rate, for context.
        fps: String,
    },
    /// The device went away.
    #[error("V4L2 {path}: the camera disappeared ({errno})")]
    Disappeared {
        /// The node.
        path: PathBuf,
        /// The error that said so.
        errno: Errno,
    },
    /// Misuse (requeue of a buffer the device holds, …).
    #[error("V4L2 {path}: {0}", path = .1.display())]
    Usage(String, PathBuf),
    /// A buffer could not be made or checked.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A buffer could not be allocated.
    #[error(transparent)]
    Alloc(#[from] AllocError),
}

/// V4L2 fourccs and the DRM fourccs with the same memory layout.
const FORMAT_MAP: &[(&[u8; 4], Fourcc)] = &[
    (b"YUYV", Fourcc::YUYV),
    (b"NV12", Fourcc::NV12),
    (b"NM12", Fourcc::NV12), // multi-planar NV12: Y and CbCr in separate memory
    (b"UYVY", Fourcc::UYVY),
    (b"XR24", Fourcc::XR24), // V4L2 BGRX32 = DRM XRGB8888
    (b"AR24", Fourcc::AR24),
    (b"XB24", Fourcc::XB24), // V4L2 RGBX32 = DRM XBGR8888
    (b"AB24", Fourcc::AB24),
    (b"BGR3", Fourcc::RG24), // V4L2 BGR24 = DRM RGB888 (bytes B, G, R)
    (b"NV21", Fourcc::NV21),
    (b"YU12", Fourcc::YU12), // V4L2 YUV420 (I420) = DRM YUV420
    (b"NV16", Fourcc::NV16),
    (b"P010", Fourcc::P010),
    // MJPG (UVC cameras' compressed frames) is not mapped: frameshare moves raw pixels only,
    // so negotiation passes it over for a raw format the camera also offers.
];

/// The DRM fourcc for a V4L2 pixel format, if frameshare handles it.
pub fn drm_fourcc(v4l2: u32) -> Option<Fourcc> {
    FORMAT_MAP
        .iter()
        .find(|(v, _)| u32::from_le_bytes(**v) == v4l2)
        .map(|(_, d)| *d)
}

/// The V4L2 pixel formats for a DRM fourcc (contiguous first, then multi-planar variants).
pub fn v4l2_fourccs(drm: Fourcc) -> Vec<u32> {
    FORMAT_MAP
        .iter()
        .filter(|(_, d)| *d == drm)
        .map(|(v, _)| u32::from_le_bytes(**v))
        .collect()
}

fn fourcc_name(v: u32) -> String {
    Fourcc(v).name()
}

/// The frame layout a V4L2 format describes (strides from `bytesperline`; for contiguous
/// multi-plane formats the planes follow each other; multi-planar formats use one fd per plane).
pub(crate) fn layout_of(fmt: &PixFormat) -> Option<FrameLayout> {
    let fourcc = drm_fourcc(fmt.pixelformat)?;
    let info = fourcc.info()?;
    let mut planes = Vec::with_capacity(info.planes.len());
    if fmt.planes.len() == info.planes.len() && fmt.planes.len() > 1 {
        for p in &fmt.planes {
            planes.push(PlaneLayout {
                fd_index: planes.len() as u32,
                offset: 0,
                stride: p.bytesperline,
            });
        }
    } else {
        let bpl = fmt.planes.first()?.bytesperline;
        let mut offset = 0u64;
        for (i, pi) in info.planes.iter().enumerate() {
            // Contiguous layouts give later planes a stride scaled like their row width.
            let stride = if i == 0 {
                bpl
            } else {
                (bpl as u64 * pi.bytes_per_block as u64
                    / pi.block_width as u64
                    / info.planes[0].bytes_per_block as u64) as u32
            };
            planes.push(PlaneLayout {
                fd_index: 0,
                offset,
                stride,
            });
            offset += stride as u64 * (fmt.height / pi.vsub) as u64;
        }
    }
    FrameLayout::new(
        fourcc,
        Modifier::LINEAR,
        fmt.width,
        fmt.height,
        planes,
        fmt.planes.first()?.sizeimage as u64,
    )
    .ok()
}

/// Widens a driver's 32-bit sequence number given the last widened one (wrap-around aware).
pub fn widen_sequence(last: Option<u64>, seq: u32) -> u64 {
    match last {
        None => seq as u64,
        Some(last) => {
            let cand = (last & !0xffff_ffff) | seq as u64;
            if cand + (1 << 31) < last {
                cand + (1 << 32)
            } else {
                cand
            }
        }
    }
}

/// A dequeued frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Index of the buffer it is in (the pool buffer in export and import modes; in copy mode
    /// the device's own buffer, requeued by [`V4l2Source::copy_into`]).
    pub index: u32,
    /// The driver's sequence number, widened past u32 wrap-around (gaps = frames it dropped).
    pub sequence: u64,
    /// Capture time, ns (CLOCK_MONOTONIC on nearly every driver).
    pub timestamp_ns: u64,
    /// Bytes of data in the first plane.
    pub bytesused: u32,
    /// The driver flagged the frame as corrupt (`V4L2_BUF_FLAG_ERROR`).
    pub corrupt: bool,
}

/// What [`V4l2Source::prepare`] set up.
#[derive(Debug)]
pub struct Prepared {
    /// The mode in use.
    pub mode: Mode,
    /// The buffer pool to announce: buffer `i` holds frames with `Frame::index == i` (export,
    /// import), or receives copies (copy).
    pub buffers: Vec<Buffer>,
    /// Why the better modes were passed over (`Auto`).
    pub note: String,
}

/// One memory object queued for import: the buffer's fd for a plane, its length and offset.
#[derive(Debug)]
struct ImportSlot {
    buffer: Buffer,
    /// Per V4L2 memory plane: (fd index in the buffer, length, data offset).
    planes: Vec<(usize, u32, u32)>,
}

/// An open V4L2 capture device.
pub struct V4l2Source {
    dev: v4l::Device,
    path: PathBuf,
    caps: sys::Caps,
    buf_type: u32,
    format: PixFormat,
    layout: FrameLayout,
    interval: Option<(u32, u32)>,
    mode: Option<Mode>,
    count: u32,
    queued: Vec<bool>,
    streaming: bool,
    maps: Vec<Vec<PlaneMap>>,
    imports: Vec<ImportSlot>,
    bytes_copied: u64,
    last_seq: Option<u64>,
}

impl std::fmt::Debug for V4l2Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Source")
            .field("path", &self.path)
            .field("driver", &self.caps.driver)
            .field("format", &self.format)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

mod buffers;
mod capture;
mod devices;
mod negotiate;

pub use devices::{devices, video_nodes, DeviceInfo};

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn config_parses() {
        assert_eq!(V4l2Config::parse("").unwrap(), V4l2Config::default());
        let c = V4l2Config::parse("/dev/video1:import,fps=30").unwrap();
        assert_eq!(c.device.as_deref(), Some(Path::new("/dev/video1")));
        assert_eq!(c.mode, Mode::Import);
        assert_eq!(c.fps, Some(30.0));
        assert_eq!(V4l2Config::parse("mode=copy").unwrap().mode, Mode::Copy);
        assert!(V4l2Config::parse("sideways").is_err());
        assert!(V4l2Config::parse("fps=-1").is_err());
    }

    #[test]
    fn fourccs_map_both_ways() {
        let v = |s: &[u8; 4]| u32::from_le_bytes(*s);
        assert_eq!(drm_fourcc(v(b"YUYV")), Some(Fourcc::YUYV));
        assert_eq!(drm_fourcc(v(b"BGR3")), Some(Fourcc::RG24));
        assert_eq!(drm_fourcc(v(b"NM12")), Some(Fourcc::NV12));
        assert_eq!(drm_fourcc(v(b"MJPG")), None);
        assert_eq!(v4l2_fourccs(Fourcc::NV12), vec![v(b"NV12"), v(b"NM12")]);
        for (v4l2, drm) in [
            (b"NV21", Fourcc::NV21),
            (b"YU12", Fourcc::YU12),
            (b"NV16", Fourcc::NV16),
            (b"P010", Fourcc::P010),
        ] {
            assert_eq!(drm_fourcc(v(v4l2)), Some(drm));
        }
    }

    #[test]
    fn camera_yuv_layouts_from_formats() {
        let v = |s: &[u8; 4]| u32::from_le_bytes(*s);
        let fmt = |f: &[u8; 4], bpl: u32, size: u32| PixFormat {
            width: 64,
            height: 32,
            pixelformat: v(f),
            field: sys::FIELD_NONE,
            planes: vec![sys::PlaneFmt {
                bytesperline: bpl,
                sizeimage: size,
            }],
        };
        let l = layout_of(&fmt(b"YU12", 64, 64 * 48)).unwrap();
        let p: Vec<(u64, u32)> = l.planes().iter().map(|p| (p.offset, p.stride)).collect();
        assert_eq!(p, [(0, 64), (64 * 32, 32), (64 * 32 + 32 * 16, 32)]);
        let l = layout_of(&fmt(b"NV16", 64, 64 * 64)).unwrap();
        assert_eq!((l.planes()[1].offset, l.planes()[1].stride), (64 * 32, 64));
        let l = layout_of(&fmt(b"P010", 128, 128 * 48)).unwrap();
        assert_eq!(
            (l.planes()[1].offset, l.planes()[1].stride),
            (128 * 32, 128)
        );
    }

    #[test]
    fn layouts_from_formats() {
        let v = |s: &[u8; 4]| u32::from_le_bytes(*s);
        let yuyv = PixFormat {
            width: 640,
            height: 480,
            pixelformat: v(b"YUYV"),
            field: sys::FIELD_NONE,
            planes: vec![sys::PlaneFmt {
                bytesperline: 1280,
                sizeimage: 1280 * 480,
            }],
        };
        let l = layout_of(&yuyv).unwrap();
        assert_eq!(
            (l.fourcc(), l.planes()[0].stride, l.size()),
            (Fourcc::YUYV, 1280, 614400)
        );
        let nv12 = PixFormat {
            width: 64,
            height: 32,
            pixelformat: v(b"NV12"),
            field: sys::FIELD_NONE,
            planes: vec![sys::PlaneFmt {
                bytesperline: 64,
                sizeimage: 64 * 48,
            }],
        };
        let l = layout_of(&nv12).unwrap();
        assert_eq!(l.planes()[1].offset, 64 * 32);
        assert_eq!(l.planes()[1].stride, 64);
        let nm12 = PixFormat {
            pixelformat: v(b"NM12"),
            planes: vec![
                sys::PlaneFmt {
                    bytesperline: 64,
                    sizeimage: 64 * 32,
                },
                sys::PlaneFmt {
                    bytesperline: 64,
                    sizeimage: 64 * 16,
                },
            ],
            ..nv12
        };
        let l = layout_of(&nm12).unwrap();
        assert_eq!(l.fd_count(), 2);
        assert_eq!((l.planes()[1].fd_index, l.planes()[1].offset), (1, 0));
    }

    #[test]
    fn sequence_numbers_widen_past_wraparound() {
        let mut last = None;
        let mut w = |seq: u32| {
            let v = widen_sequence(last, seq);
            last = Some(v);
            v
        };
        assert_eq!(w(u32::MAX - 1), u32::MAX as u64 - 1);
        assert_eq!(w(u32::MAX), u32::MAX as u64);
        assert_eq!(w(1), (1u64 << 32) + 1);
    }
}
