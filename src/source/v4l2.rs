//! The V4L2 camera source (feature `v4l2`): a capture device whose frames become frameshare
//! buffers without pixel copies where the device allows it.
//!
//! Three ways to get frames out, chosen by [`Mode`] (or tried in this order by [`Mode::Auto`]):
//! - **export**: the device allocates its buffers (`V4L2_MEMORY_MMAP`) and each is exported as a
//!   dma-buf with `VIDIOC_EXPBUF` — [`BufferKind::V4l2Export`] buffers, one fd per memory plane;
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

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::io::Errno;

use crate::alloc::{AllocError, Allocator};
use crate::buffer::{Buffer, BufferError, BufferKind, CpuAccess};
use crate::format::{Fourcc, FrameLayout, Modifier, PlaneLayout};
use crate::sys::v4l2::{self as sys, PixFormat, PlaneMap, QueueMem};

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
    #[error("V4L2 {path}: open failed: {source}")]
    Open {
        /// The node.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
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

fn capture_type(caps: u32) -> Option<u32> {
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

fn open_node(path: &Path) -> Result<v4l::Device, V4l2Error> {
    let dev = v4l::Device::with_path(path).map_err(|source| V4l2Error::Open {
        path: path.to_owned(),
        source,
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

fn formats_of(fd: BorrowedFd<'_>, buf_type: u32) -> Vec<u32> {
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

fn fps_of(interval: Option<(u32, u32)>) -> String {
    match interval {
        Some((n, d)) if n > 0 => format!("{:.3} fps", d as f64 / n as f64),
        _ => "unknown".into(),
    }
}

impl V4l2Source {
    /// Opens the device and negotiates format, size and frame rate (no buffers yet).
    pub fn open(cfg: &V4l2Config) -> Result<Self, V4l2Error> {
        let (dev, path, caps, buf_type) = match &cfg.device {
            Some(p) => {
                let dev = open_node(p)?;
                let caps = sys::querycap(sys::device_fd(&dev)).map_err(|errno| V4l2Error::Sys {
                    path: p.clone(),
                    op: "VIDIOC_QUERYCAP".into(),
                    errno,
                })?;
                let bt = capture_type(caps.device_caps).ok_or_else(|| V4l2Error::NotCapture {
                    path: p.clone(),
                    driver: caps.driver.clone(),
                    caps: caps.device_caps,
                })?;
                (dev, p.clone(), caps, bt)
            }
            None => {
                let mut seen = Vec::new();
                let mut found = None;
                for p in video_nodes() {
                    match open_node(&p) {
                        Ok(dev) => match sys::querycap(sys::device_fd(&dev)) {
                            Ok(caps) => match capture_type(caps.device_caps) {
                                Some(bt) => {
                                    found = Some((dev, p, caps, bt));
                                    break;
                                }
                                None => seen.push(format!(
                                    "{} ({}) is not a capture node",
                                    p.display(),
                                    caps.driver
                                )),
                            },
                            Err(e) => seen.push(format!("{}: QUERYCAP: {e}", p.display())),
                        },
                        Err(e) => seen.push(e.to_string()),
                    }
                }
                found.ok_or_else(|| {
                    V4l2Error::NoDevice(if seen.is_empty() {
                        "no /dev/video* nodes".into()
                    } else {
                        seen.join("; ")
                    })
                })?
            }
        };
        let mut src = V4l2Source {
            dev,
            path,
            caps,
            buf_type,
            format: PixFormat::default(),
            layout: FrameLayout::linear(Fourcc::XR24, 1, 1, 1).expect("valid"),
            interval: None,
            mode: None,
            count: 0,
            queued: Vec::new(),
            streaming: false,
            maps: Vec::new(),
            imports: Vec::new(),
            bytes_copied: 0,
            last_seq: None,
        };
        src.negotiate(cfg)?;
        Ok(src)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        sys::device_fd(&self.dev)
    }

    fn sys_err(&self, op: &str) -> impl Fn(Errno) -> V4l2Error {
        let path = self.path.clone();
        let op = op.to_owned();
        move |errno| V4l2Error::Sys {
            path: path.clone(),
            op: op.clone(),
            errno,
        }
    }

    fn negotiate(&mut self, cfg: &V4l2Config) -> Result<(), V4l2Error> {
        let offered = formats_of(self.fd(), self.buf_type);
        let offered_names = || {
            offered
                .iter()
                .map(|&f| fourcc_name(f))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let pick = match cfg.fourcc {
            Some(want) => {
                let mut candidates = v4l2_fourccs(want);
                if cfg.separate_planes {
                    candidates.reverse();
                }
                candidates
            }
            .into_iter()
            .find(|f| offered.contains(f))
                .ok_or_else(|| V4l2Error::Format {
                    path: self.path.clone(),
                    why: format!("no V4L2 format matches {want}"),
                    offered: offered_names(),
                })?,
            None => FORMAT_MAP
                .iter()
                .map(|(v, _)| u32::from_le_bytes(**v))
                .find(|f| offered.contains(f))
                .ok_or_else(|| V4l2Error::Format {
                    path: self.path.clone(),
                    why: "none of its formats is one frameshare handles (YUYV, NV12, UYVY, XR24, AR24, XB24, AB24, BGR3)".into(),
                    offered: offered_names(),
                })?,
        };
        let current = sys::g_fmt(self.fd(), self.buf_type).map_err(self.sys_err("VIDIOC_G_FMT"))?;
        let (w, h) = cfg.size.unwrap_or((current.width, current.height));
        let want = PixFormat {
            width: w,
            height: h,
            pixelformat: pick,
            field: sys::FIELD_NONE,
            planes: Vec::new(),
        };
        let got = sys::s_fmt(self.fd(), self.buf_type, &want)
            .map_err(self.sys_err(&format!("VIDIOC_S_FMT({} {w}x{h})", fourcc_name(pick))))?;
        if got.pixelformat != pick || (got.width, got.height) != (w, h) {
            let sizes: Vec<String> = (0..)
                .map_while(|i| sys::enum_framesize(self.fd(), pick, i).ok())
                .take(32)
                .map(|s| match s {
                    sys::FrameSize::Discrete(w, h) => format!("{w}x{h}"),
                    sys::FrameSize::Stepwise(a, b, _, c, d, _) => format!("{a}x{c}..{b}x{d}"),
                })
                .collect();
            return Err(V4l2Error::Format {
                path: self.path.clone(),
                why: format!(
                    "asked for {} {w}x{h}, the driver chose {} {}x{}",
                    fourcc_name(pick),
                    fourcc_name(got.pixelformat),
                    got.width,
                    got.height
                ),
                offered: format!("{} sizes {}", fourcc_name(pick), sizes.join(" ")),
            });
        }
        if got.field != sys::FIELD_NONE && got.field != 0 {
            return Err(V4l2Error::Format {
                path: self.path.clone(),
                why: format!("interlaced video (field {}) is not supported", got.field),
                offered: offered_names(),
            });
        }
        self.layout = layout_of(&got).ok_or_else(|| V4l2Error::Format {
            path: self.path.clone(),
            why: format!(
                "the driver's layout of {} {}x{} ({:?}) is not one frameshare can describe",
                fourcc_name(got.pixelformat),
                got.width,
                got.height,
                got.planes
            ),
            offered: offered_names(),
        })?;
        self.format = got;
        if let Some(fps) = cfg.fps {
            let interval = if fps.fract() == 0.0 {
                (1, fps as u32)
            } else {
                (1000, (fps * 1000.0).round() as u32)
            };
            self.interval = Some(
                sys::s_parm(self.fd(), self.buf_type, interval)
                    .map_err(self.sys_err(&format!("VIDIOC_S_PARM({fps} fps)")))?,
            );
        } else {
            self.interval = sys::g_parm(self.fd(), self.buf_type).ok().map(|(i, _)| i);
        }
        log::info!(
            "V4L2 {} ({}): {} {}x{} ({}), {}, {} API",
            self.path.display(),
            self.caps.driver,
            fourcc_name(self.format.pixelformat),
            self.format.width,
            self.format.height,
            self.layout.fourcc(),
            fps_of(self.interval),
            if self.multiplanar() {
                "multi-planar"
            } else {
                "single-planar"
            }
        );
        Ok(())
    }

    /// The node.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The driver (`vivid`, `uvcvideo`, …).
    pub fn driver(&self) -> &str {
        &self.caps.driver
    }

    /// Whether the node uses the multi-planar API.
    pub fn multiplanar(&self) -> bool {
        self.buf_type == sys::BUF_TYPE_CAPTURE_MPLANE
    }

    /// The layout frames have (what import-mode buffers must be allocated with).
    pub fn layout(&self) -> &FrameLayout {
        &self.layout
    }

    /// The negotiated frame rate, if the driver reports one.
    pub fn fps(&self) -> Option<f64> {
        self.interval
            .filter(|(n, d)| *n > 0 && *d > 0)
            .map(|(n, d)| d as f64 / n as f64)
    }

    /// The mode set up by [`V4l2Source::prepare`] (or the per-mode calls).
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// Pixel bytes copied (copy mode only; 0 otherwise).
    pub fn bytes_copied(&self) -> u64 {
        self.bytes_copied
    }

    /// The `v4l` device, for controls.
    pub fn device(&self) -> &v4l::Device {
        &self.dev
    }

    /// Sets the control named `name` (as `v4l2-ctl -L` lists it, case and `_`/space
    /// insensitive) to `value`.
    pub fn set_control(&self, name: &str, value: i64) -> Result<(), V4l2Error> {
        let norm = |s: &str| s.to_ascii_lowercase().replace([' ', '_'], "");
        let ctrls = self.dev.query_controls().map_err(|e| V4l2Error::Sys {
            path: self.path.clone(),
            op: "VIDIOC_QUERY_EXT_CTRL".into(),
            errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
        })?;
        let c = ctrls
            .iter()
            .find(|c| norm(&c.name) == norm(name))
            .ok_or_else(|| {
                V4l2Error::Usage(format!("no control named {name:?}"), self.path.clone())
            })?;
        let value = match c.typ {
            v4l::control::Type::Boolean => v4l::control::Value::Boolean(value != 0),
            // A button has no value: setting it presses it.
            v4l::control::Type::Button => v4l::control::Value::None,
            _ => v4l::control::Value::Integer(value),
        };
        self.dev
            .set_control(v4l::control::Control { id: c.id, value })
            .map_err(|e| V4l2Error::Sys {
                path: self.path.clone(),
                op: format!("VIDIOC_S_EXT_CTRLS({name})"),
                errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
            })
    }

    fn nplanes(&self) -> usize {
        self.format.planes.len().max(1)
    }

    fn mode_err(&self, mode: Mode, why: String) -> V4l2Error {
        V4l2Error::Mode {
            path: self.path.clone(),
            mode: mode.name(),
            why,
        }
    }

    fn ensure_idle(&self, mode: Mode) -> Result<(), V4l2Error> {
        if self.streaming || self.count > 0 {
            return Err(self.mode_err(mode, "buffers are already set up".into()));
        }
        Ok(())
    }

    fn free_buffers(&mut self, memory: u32) {
        self.maps.clear();
        self.imports.clear();
        if let Err(e) = sys::reqbufs(self.fd(), self.buf_type, memory, 0) {
            log::debug!("V4L2 {}: REQBUFS(0): {e}", self.path.display());
        }
        self.count = 0;
        self.queued.clear();
    }

    /// Export mode: `count` device buffers, each exported as a dma-buf per memory plane.
    pub fn export_buffers(&mut self, count: u32) -> Result<Vec<Buffer>, V4l2Error> {
        self.ensure_idle(Mode::Export)?;
        let n = sys::reqbufs(self.fd(), self.buf_type, sys::MEMORY_MMAP, count)
            .map_err(self.sys_err("VIDIOC_REQBUFS(MMAP)"))?;
        if n == 0 {
            return Err(self.mode_err(Mode::Export, "the driver gave no buffers".into()));
        }
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut fds = Vec::new();
            for p in 0..self.nplanes() {
                match sys::expbuf(self.fd(), self.buf_type, i, p as u32) {
                    Ok(fd) => fds.push(fd),
                    Err(errno) => {
                        drop(out);
                        drop(fds);
                        self.free_buffers(sys::MEMORY_MMAP);
                        return Err(self.mode_err(
                            Mode::Export,
                            format!("VIDIOC_EXPBUF(buffer {i}, plane {p}) failed: {errno}"),
                        ));
                    }
                }
            }
            match Buffer::from_fds(BufferKind::V4l2Export, self.layout.clone(), fds) {
                Ok(b) => out.push(b),
                Err(e) => {
                    drop(out);
                    self.free_buffers(sys::MEMORY_MMAP);
                    return Err(e.into());
                }
            }
        }
        self.count = n;
        self.queued = vec![false; n as usize];
        self.mode = Some(Mode::Export);
        Ok(out)
    }

    /// Import mode: the device will write into `buffers` (dma-bufs whose layout matches
    /// [`V4l2Source::layout`]; where their strides differ the driver is asked for them first).
    pub fn attach(&mut self, buffers: &[Buffer]) -> Result<(), V4l2Error> {
        self.ensure_idle(Mode::Import)?;
        let first = buffers
            .first()
            .ok_or_else(|| self.mode_err(Mode::Import, "no buffers given".into()))?;
        let bl = first.layout().clone();
        if bl
            .planes()
            .iter()
            .zip(self.layout.planes())
            .any(|(a, b)| a.stride != b.stride)
        {
            // Ask the driver for the buffers' strides.
            let mut want = self.format.clone();
            for (i, p) in want.planes.iter_mut().enumerate() {
                if let Some(pl) = bl.planes().get(i) {
                    p.bytesperline = pl.stride;
                    p.sizeimage = 0;
                }
            }
            if let Ok(got) = sys::s_fmt(self.fd(), self.buf_type, &want) {
                if let Some(l) = layout_of(&got) {
                    self.format = got;
                    self.layout = l;
                }
            }
        }
        let mplane_separate = self.multiplanar() && self.format.planes.len() > 1;
        let mut slots = Vec::with_capacity(buffers.len());
        for (i, b) in buffers.iter().enumerate() {
            let l = b.layout();
            let bad = |why: String| self.mode_err(Mode::Import, format!("buffer {i}: {why}"));
            if !b.kind().is_dma_buf() {
                return Err(bad(format!(
                    "{} buffers cannot be queued (V4L2 imports dma-bufs)",
                    b.kind()
                )));
            }
            if (l.fourcc(), l.width(), l.height())
                != (
                    self.layout.fourcc(),
                    self.layout.width(),
                    self.layout.height(),
                )
            {
                return Err(bad(format!(
                    "is {} {}x{}, the camera captures {} {}x{}",
                    l.fourcc(),
                    l.width(),
                    l.height(),
                    self.layout.fourcc(),
                    self.layout.width(),
                    self.layout.height()
                )));
            }
            if l.modifier() != Modifier::LINEAR {
                return Err(bad(format!(
                    "modifier {} (cameras write LINEAR)",
                    l.modifier()
                )));
            }
            for (p, (have, want)) in l.planes().iter().zip(self.layout.planes()).enumerate() {
                if have.stride != want.stride {
                    return Err(bad(format!(
                        "plane {p} stride {} but the camera writes {} bytes per row (the driver would not change it)",
                        have.stride, want.stride
                    )));
                }
                if !mplane_separate && have.offset != want.offset {
                    return Err(bad(format!(
                        "plane {p} at offset {} but the camera puts it at {}",
                        have.offset, want.offset
                    )));
                }
            }
            let fds = b.fds();
            let size_of = |fd: BorrowedFd<'_>| -> u32 {
                let s = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0)).unwrap_or(0);
                let _ = rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(0));
                s.min(u32::MAX as u64) as u32
            };
            let planes: Vec<(usize, u32, u32)> = if mplane_separate {
                l.planes()
                    .iter()
                    .map(|p| {
                        let fdi = p.fd_index as usize;
                        (fdi, size_of(fds[fdi]), p.offset as u32)
                    })
                    .collect()
            } else {
                vec![(0, size_of(fds[0]), 0)]
            };
            for (p, &(_, len, off)) in planes.iter().enumerate() {
                let need = self.format.planes[p.min(self.format.planes.len() - 1)].sizeimage;
                if (len as u64) < off as u64 + need as u64 {
                    return Err(bad(format!(
                        "memory plane {p} holds {len} bytes, the camera writes {need} at offset {off}"
                    )));
                }
            }
            slots.push(ImportSlot {
                buffer: b.clone(),
                planes,
            });
        }
        let n = sys::reqbufs(
            self.fd(),
            self.buf_type,
            sys::MEMORY_DMABUF,
            buffers.len() as u32,
        )
        .map_err(|errno| {
            self.mode_err(
                Mode::Import,
                format!(
                    "VIDIOC_REQBUFS(DMABUF) failed: {errno} (the driver does not import dma-bufs)"
                ),
            )
        })?;
        if (n as usize) < buffers.len() {
            self.free_buffers(sys::MEMORY_DMABUF);
            return Err(self.mode_err(
                Mode::Import,
                format!("asked for {} DMABUF slots, got {n}", buffers.len()),
            ));
        }
        self.imports = slots;
        self.count = buffers.len() as u32;
        self.queued = vec![false; buffers.len()];
        self.mode = Some(Mode::Import);
        Ok(())
    }

    /// Copy mode: `count` device buffers, mapped read-only for [`V4l2Source::copy_into`].
    pub fn mmap_buffers(&mut self, count: u32) -> Result<(), V4l2Error> {
        self.ensure_idle(Mode::Copy)?;
        let n = sys::reqbufs(self.fd(), self.buf_type, sys::MEMORY_MMAP, count)
            .map_err(self.sys_err("VIDIOC_REQBUFS(MMAP)"))?;
        let mut maps = Vec::with_capacity(n as usize);
        for i in 0..n {
            let info = sys::querybuf(self.fd(), self.buf_type, i, self.nplanes())
                .map_err(self.sys_err(&format!("VIDIOC_QUERYBUF({i})")))?;
            let mut planes = Vec::new();
            for p in &info.planes {
                planes.push(
                    PlaneMap::new(self.fd(), p.mem_offset, p.length)
                        .map_err(self.sys_err(&format!("mmap(buffer {i})")))?,
                );
            }
            maps.push(planes);
        }
        self.maps = maps;
        self.count = n;
        self.queued = vec![false; n as usize];
        self.mode = Some(Mode::Copy);
        Ok(())
    }

    /// Sets up buffers in `mode` (for [`Mode::Auto`]: export, else import, else copy) and returns
    /// the pool to announce. Import and copy allocate `count` buffers of [`V4l2Source::layout`]
    /// from `alloc`.
    pub fn prepare(
        &mut self,
        mode: Mode,
        count: u32,
        mut alloc: Option<&mut dyn Allocator>,
    ) -> Result<Prepared, V4l2Error> {
        let mut passed = Vec::new();
        if matches!(mode, Mode::Auto | Mode::Export) {
            match self.export_buffers(count) {
                Ok(buffers) => {
                    return Ok(Prepared {
                        mode: Mode::Export,
                        buffers,
                        note: "export: the camera's own buffers as dma-bufs".into(),
                    })
                }
                Err(e) if mode == Mode::Auto => passed.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        let layout = self.layout.clone();
        let path = self.path.clone();
        let mut allocate = |what: Mode| -> Result<Vec<Buffer>, V4l2Error> {
            let a = alloc.as_deref_mut().ok_or_else(|| V4l2Error::Mode {
                path: path.clone(),
                mode: what.name(),
                why: "needs an allocator for its buffers".into(),
            })?;
            (0..count)
                .map(|_| a.allocate(&layout).map_err(V4l2Error::from))
                .collect()
        };
        if matches!(mode, Mode::Auto | Mode::Import) {
            let r = allocate(Mode::Import).and_then(|b| self.attach(&b).map(|()| b));
            match r {
                Ok(buffers) => {
                    return Ok(Prepared {
                        mode: Mode::Import,
                        buffers,
                        note: if passed.is_empty() {
                            "import: the camera writes into our dma-bufs".into()
                        } else {
                            format!("import; passed over: {}", passed.join("; "))
                        },
                    })
                }
                Err(e) if mode == Mode::Auto => passed.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        let buffers = allocate(Mode::Copy)?;
        self.mmap_buffers(count.max(2))?;
        Ok(Prepared {
            mode: Mode::Copy,
            buffers,
            note: if passed.is_empty() {
                "copy: frames are copied (bytes_copied counts them)".into()
            } else {
                format!(
                    "copy (frames are copied); passed over: {}",
                    passed.join("; ")
                )
            },
        })
    }

    /// Queues one buffer to the device.
    pub fn requeue(&mut self, index: u32) -> Result<(), V4l2Error> {
        let i = index as usize;
        if i >= self.queued.len() {
            return Err(V4l2Error::Usage(
                format!(
                    "requeue of buffer {index}: only {} buffers",
                    self.queued.len()
                ),
                self.path.clone(),
            ));
        }
        if self.queued[i] {
            return Err(V4l2Error::Usage(
                format!("requeue of buffer {index}, which the device already holds"),
                self.path.clone(),
            ));
        }
        let fd = self.fd();
        let r = match self.mode {
            Some(Mode::Import) => {
                let slot = &self.imports[i];
                let fds = slot.buffer.fds();
                let planes: Vec<(BorrowedFd<'_>, u32, u32)> = slot
                    .planes
                    .iter()
                    .map(|&(fdi, len, off)| (fds[fdi], len, off))
                    .collect();
                sys::qbuf(
                    fd,
                    self.buf_type,
                    index,
                    self.nplanes(),
                    QueueMem::Dmabuf(&planes),
                )
            }
            Some(_) => sys::qbuf(fd, self.buf_type, index, self.nplanes(), QueueMem::Mmap),
            None => {
                return Err(V4l2Error::Usage(
                    "requeue before buffers were set up".into(),
                    self.path.clone(),
                ))
            }
        };
        r.map_err(|errno| self.gone_or(errno, &format!("VIDIOC_QBUF({index})")))?;
        self.queued[i] = true;
        Ok(())
    }

    fn gone_or(&self, errno: Errno, op: &str) -> V4l2Error {
        if errno == Errno::NODEV || errno == Errno::NXIO {
            V4l2Error::Disappeared {
                path: self.path.clone(),
                errno,
            }
        } else {
            V4l2Error::Sys {
                path: self.path.clone(),
                op: op.into(),
                errno,
            }
        }
    }

    /// Queues every buffer not queued yet and starts streaming.
    pub fn start(&mut self) -> Result<(), V4l2Error> {
        for i in 0..self.count {
            if !self.queued[i as usize] {
                self.requeue(i)?;
            }
        }
        sys::streamon(self.fd(), self.buf_type)
            .map_err(|errno| self.gone_or(errno, "VIDIOC_STREAMON"))?;
        self.streaming = true;
        Ok(())
    }

    /// Stops streaming; the device gives every buffer back.
    pub fn stop(&mut self) -> Result<(), V4l2Error> {
        if self.streaming {
            self.streaming = false;
            sys::streamoff(self.fd(), self.buf_type)
                .map_err(|errno| self.gone_or(errno, "VIDIOC_STREAMOFF"))?;
        }
        self.queued.iter_mut().for_each(|q| *q = false);
        Ok(())
    }

    /// Waits up to `timeout` for the next frame and dequeues it. The buffer stays with the
    /// caller until [`V4l2Source::requeue`] (or [`V4l2Source::copy_into`] in copy mode).
    pub fn next_frame(&mut self, timeout: Duration) -> Result<Frame, V4l2Error> {
        use rustix::event::{PollFd, PollFlags};
        if !self.streaming {
            return Err(V4l2Error::Usage(
                "next_frame before start".into(),
                self.path.clone(),
            ));
        }
        if !self.queued.iter().any(|q| *q) {
            return Err(V4l2Error::Usage(
                "every buffer is dequeued: requeue some before waiting for a frame".into(),
                self.path.clone(),
            ));
        }
        let memory = if self.mode == Some(Mode::Import) {
            sys::MEMORY_DMABUF
        } else {
            sys::MEMORY_MMAP
        };
        let deadline = Instant::now() + timeout;
        loop {
            match sys::dqbuf(self.fd(), self.buf_type, memory, self.nplanes()) {
                Ok(info) => {
                    let i = info.index as usize;
                    if i < self.queued.len() {
                        self.queued[i] = false;
                    }
                    let seq = self.widen(info.sequence);
                    return Ok(Frame {
                        index: info.index,
                        sequence: seq,
                        timestamp_ns: info.timestamp_ns,
                        bytesused: info.planes.first().map_or(0, |p| p.bytesused),
                        corrupt: info.flags & sys::BUF_FLAG_ERROR != 0,
                    });
                }
                Err(Errno::AGAIN) => {}
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(self.gone_or(errno, "VIDIOC_DQBUF")),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(V4l2Error::Stalled {
                    path: self.path.clone(),
                    timeout,
                    fps: fps_of(self.interval),
                });
            }
            let fd = self.fd();
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match crate::sync::poll_until(&mut fds, Some(deadline)) {
                Ok(_) => {
                    let rev = fds[0].revents();
                    if rev.contains(PollFlags::HUP) || rev.contains(PollFlags::NVAL) {
                        return Err(V4l2Error::Disappeared {
                            path: self.path.clone(),
                            errno: Errno::NODEV,
                        });
                    }
                }
                Err(errno) => return Err(self.gone_or(errno, "poll")),
            }
        }
    }

    fn widen(&mut self, seq: u32) -> u64 {
        let v = widen_sequence(self.last_seq, seq);
        self.last_seq = Some(v);
        v
    }

    /// Copy mode: copies the frame's pixels into `dst` (a buffer of [`V4l2Source::layout`]'s
    /// format and size; its strides may differ), counts the bytes, and requeues the device's
    /// buffer.
    pub fn copy_into(&mut self, frame: &Frame, dst: &mut CpuAccess<'_>) -> Result<u64, V4l2Error> {
        if self.mode != Some(Mode::Copy) {
            return Err(V4l2Error::Usage(
                "copy_into outside copy mode".into(),
                self.path.clone(),
            ));
        }
        let maps = &self.maps[frame.index as usize];
        let mut copied = 0u64;
        for (p, pl) in self.layout.planes().iter().enumerate() {
            let map = maps[(pl.fd_index as usize).min(maps.len() - 1)].as_slice();
            let row_bytes = self.layout.plane_row_bytes(p);
            for r in 0..self.layout.plane_rows(p) {
                let start = pl.offset as usize + r as usize * pl.stride as usize;
                let src = map.get(start..start + row_bytes).ok_or_else(|| {
                    V4l2Error::Usage(
                        format!("plane {p} row {r} lies outside the device buffer"),
                        self.path.clone(),
                    )
                })?;
                dst.row_mut(p, r).copy_from_slice(src);
                copied += row_bytes as u64;
            }
        }
        self.bytes_copied += copied;
        self.requeue(frame.index)?;
        Ok(copied)
    }
}

impl AsFd for V4l2Source {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::error!("{e}");
        }
        if self.count > 0 {
            let memory = if self.mode == Some(Mode::Import) {
                sys::MEMORY_DMABUF
            } else {
                sys::MEMORY_MMAP
            };
            self.free_buffers(memory);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
