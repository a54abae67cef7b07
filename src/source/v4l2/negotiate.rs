//! Opening a capture device and negotiating its format, size and rate; the source's accessors
//! and controls.

use std::os::fd::BorrowedFd;
use std::path::Path;

use rustix::io::Errno;

use super::devices::*;
use super::*;

use crate::format::{Fourcc, FrameLayout};
use crate::sys::v4l2::{self as sys, PixFormat};

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

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        sys::device_fd(&self.dev)
    }

    pub(super) fn sys_err(&self, op: &str) -> impl Fn(Errno) -> V4l2Error {
        let path = self.path.clone();
        let op = op.to_owned();
        move |errno| V4l2Error::Sys {
            path: path.clone(),
            op: op.clone(),
            errno,
        }
    }

    pub(super) fn negotiate(&mut self, cfg: &V4l2Config) -> Result<(), V4l2Error> {
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
                    why: format!(
                        "none of its formats is one frameshare handles ({})",
                        FORMAT_MAP
                            .iter()
                            .map(|(v, _)| String::from_utf8_lossy(&v[..]))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
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
}
