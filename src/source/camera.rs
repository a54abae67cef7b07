//! A V4L2 camera as a [`Source`]: finds the node, negotiates the format with what the
//! consumers take, sets the camera's buffers up (export: the camera's own buffers as dma-bufs;
//! import: the camera writes into ours; copy: mmap and copy, counted), and per frame publishes
//! the buffer the camera filled, with its sequence number, capture time, `bytesused` and error
//! flag as metadata. In export and import mode a buffer goes back to the camera only once every
//! consumer released it and its release fences signalled.

use std::path::PathBuf;
use std::time::Duration;

use super::v4l2::{self, Mode, V4l2Config, V4l2Error, V4l2Source};
use super::{Source, SourceError, SourceInfo};
use crate::alloc::AllocatorSpec;
use crate::buffer::Buffer;
use crate::bus::Publisher;
use crate::format::{FormatModifier, Fourcc};
use crate::meta::{Clock, FrameMeta, Timestamp};

/// How long the camera may take to deliver one frame before it counts as stalled.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// The format the camera should deliver: `wanted` if given, else, of the formats both the
/// camera offers and the consumers take, an opaque one before one with alpha, then the one the
/// consumers list first (a display lists what its plane scans out before what it converts on
/// the GPU), then the camera's own order. `None` leaves the choice to the camera (the consumers
/// listed no formats). An error says exactly why no path exists.
pub fn negotiate_format(
    camera: &str,
    offered: &[Fourcc],
    wanted: Option<Fourcc>,
    consumer: &str,
    consumer_formats: &[FormatModifier],
) -> Result<Option<Fourcc>, SourceError> {
    let takes: Vec<Fourcc> = consumer_formats.iter().map(|f| f.fourcc).collect();
    if takes.is_empty() {
        return Ok(wanted);
    }
    let pick = match wanted {
        Some(f) => takes.contains(&f).then_some(f),
        None => offered
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((takes.iter().position(|t| t == f)?, i, *f)))
            // A camera's alpha channel (often 0) would blend the picture away.
            .min_by_key(|&(rank, i, f)| ([Fourcc::AR24, Fourcc::AB24].contains(&f), rank, i))
            .map(|(_, _, f)| f),
    };
    pick.map(Some).ok_or_else(|| {
        SourceError::NoPath(format!(
            "the camera {camera} {} {}; the consumer {consumer:?} takes only {} (LINEAR), directly or \
             through its GPU conversion (pick a camera format it takes, or another sink)",
            if wanted.is_some() {
                "was asked for"
            } else {
                "offers"
            },
            match wanted {
                Some(f) => f.to_string(),
                None => crate::format::fourcc_names(offered.iter().copied()),
            },
            crate::format::fourcc_names(takes),
        ))
    })
}

/// A camera feeding a stream.
pub struct CameraSource {
    cfg: V4l2Config,
    alloc: AllocatorSpec,
    count: u32,
    /// Who the consumers are, for the negotiation's error message.
    consumer: String,
    src: Option<V4l2Source>,
    mode: Mode,
    /// Buffers (export/import mode) the camera does not have: with consumers, or dequeued.
    out: u32,
    note: String,
    corrupt: u64,
}

impl CameraSource {
    /// A camera as `cfg` says, with `count` buffers (import and copy modes allocate them with
    /// `alloc`).
    pub fn new(cfg: V4l2Config, alloc: AllocatorSpec, count: u32) -> CameraSource {
        CameraSource {
            cfg,
            alloc,
            count,
            consumer: "the consumers".into(),
            src: None,
            mode: Mode::Auto,
            out: 0,
            note: String::new(),
            corrupt: 0,
        }
    }

    /// Names the consumer in negotiation errors.
    pub fn for_consumer(mut self, name: &str) -> Self {
        self.consumer = name.to_owned();
        self
    }

    fn path(&self) -> Result<(PathBuf, Vec<Fourcc>), SourceError> {
        let cams = v4l2::devices();
        let cam = match &self.cfg.device {
            Some(p) => cams.iter().find(|c| std::path::Path::new(&c.path) == p),
            None => cams.first(),
        };
        let path = match (cam, &self.cfg.device) {
            (Some(c), _) => PathBuf::from(&c.path),
            (None, Some(p)) => p.clone(),
            (None, None) => {
                return Err(V4l2Error::NoDevice("no V4L2 capture device found".into()).into())
            }
        };
        let offered = cam
            .map(|c| {
                c.formats
                    .iter()
                    .filter_map(|(_, drm, _)| drm.as_deref()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok((path, offered))
    }

    fn src(&mut self) -> Result<&mut V4l2Source, SourceError> {
        self.src
            .as_mut()
            .ok_or_else(|| V4l2Error::NoDevice("the camera was not started".into()).into())
    }
}

impl Source for CameraSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            // The node named before the camera is opened (at `start`, once the consumers
            // said what they take): consumers are told who the producer is in its Hello.
            name: match (&self.src, &self.cfg.device) {
                (Some(s), _) => format!("v4l2:{}", s.path().display()),
                (None, Some(p)) => format!("v4l2:{}", p.display()),
                (None, None) => "v4l2".into(),
            },
            pattern: None,
        }
    }

    fn start(&mut self, wanted: &[FormatModifier]) -> Result<Vec<Buffer>, SourceError> {
        let (path, offered) = self.path()?;
        let fourcc = negotiate_format(
            &path.display().to_string(),
            &offered,
            self.cfg.fourcc,
            &self.consumer,
            wanted,
        )?;
        let mut src = V4l2Source::open(&V4l2Config {
            device: Some(path.clone()),
            fourcc,
            ..self.cfg.clone()
        })?;
        let mut allocator = self.alloc.open().ok();
        let prepared = src.prepare(
            self.cfg.mode,
            self.count,
            allocator
                .as_mut()
                .map(|a| a.as_mut() as &mut dyn crate::alloc::Allocator),
        )?;
        let l = src.layout().clone();
        self.note = format!(
            "{} ({}) {} {}x{}, {}",
            path.display(),
            src.driver(),
            l.fourcc(),
            l.width(),
            l.height(),
            prepared.note
        );
        self.mode = prepared.mode;
        src.start()?;
        self.src = Some(src);
        Ok(prepared.buffers)
    }

    fn next(&mut self, publisher: &mut Publisher, _index: u64) -> Result<bool, SourceError> {
        let copy = self.mode == Mode::Copy;
        if !copy {
            // Buffers every consumer gave back go back to the camera (their release fences
            // were waited for); with none left in the camera, wait for one.
            loop {
                for id in publisher.take_released() {
                    self.src()?.requeue(id)?;
                    self.out = self.out.saturating_sub(1);
                }
                if self.out < self.count {
                    break;
                }
                publisher.dispatch(None)?;
            }
        }
        let f = self.src()?.next_frame(FRAME_TIMEOUT)?;
        let meta = FrameMeta {
            source_seq: Some(f.sequence),
            source_time: Some(Timestamp {
                ns: f.timestamp_ns,
                clock: Clock::Monotonic,
            }),
            corrupt: f.corrupt,
            bytes_used: Some(f.bytesused as u64),
            ..FrameMeta::default()
        };
        if f.corrupt {
            self.corrupt += 1;
        }
        if copy {
            let Some(mut frame) = publisher.loan()? else {
                self.src()?.requeue(f.index)?;
                return Ok(false);
            };
            {
                let src = self.src.as_mut().expect("checked by src() above");
                let mut access = frame.write()?;
                src.copy_into(&f, &mut access)?;
            }
            *frame.meta_mut() = meta;
            frame.publish(f.sequence)?;
        } else {
            self.out += 1;
            if let Err(e) = publisher.publish(f.index, f.sequence, meta, None) {
                self.src()?.requeue(f.index)?;
                self.out -= 1;
                return Err(e.into());
            }
        }
        Ok(true)
    }

    fn note(&self) -> String {
        self.note.clone()
    }

    fn bytes_copied(&self) -> u64 {
        self.src.as_ref().map_or(0, |s| s.bytes_copied())
    }

    fn dropped(&self) -> u64 {
        self.corrupt
    }

    fn stop(&mut self) -> Result<(), SourceError> {
        if let Some(s) = self.src.as_mut() {
            s.stop()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_format_negotiation() {
        let kms: Vec<FormatModifier> = [Fourcc::AR24, Fourcc::XR24]
            .map(FormatModifier::linear)
            .to_vec();
        let cam = [Fourcc::YUYV, Fourcc::NV12, Fourcc::AR24, Fourcc::XR24];
        let pick = |offered: &[Fourcc], wanted, takes: &[FormatModifier]| {
            negotiate_format("/dev/video1", offered, wanted, "kms", takes)
        };
        assert_eq!(pick(&cam, None, &kms).unwrap(), Some(Fourcc::XR24));
        assert_eq!(
            pick(&cam, Some(Fourcc::AR24), &kms).unwrap(),
            Some(Fourcc::AR24)
        );
        // A consumer that lists no formats leaves the choice to the camera.
        assert_eq!(pick(&cam, None, &[]).unwrap(), None);
        let e = pick(&[Fourcc::YUYV, Fourcc::NV12], None, &kms)
            .unwrap_err()
            .to_string();
        assert!(e.contains("offers YUYV NV12"), "{e}");
        assert!(e.contains("takes only AR24 XR24"), "{e}");
        assert!(e.contains("GPU conversion"), "{e}");
        let e = pick(&cam, Some(Fourcc::YUYV), &kms)
            .unwrap_err()
            .to_string();
        assert!(e.contains("was asked for YUYV"), "{e}");
        // A display that also converts: what it scans out wins over what it converts, even
        // where the camera offers the convertible format first; alone, that one is taken.
        let mut converting = kms.clone();
        converting.extend([Fourcc::YUYV, Fourcc::NV12].map(FormatModifier::linear));
        assert_eq!(pick(&cam, None, &converting).unwrap(), Some(Fourcc::XR24));
        assert_eq!(
            pick(&[Fourcc::NV12, Fourcc::YUYV], None, &converting).unwrap(),
            Some(Fourcc::YUYV)
        );
        assert_eq!(
            pick(&cam, Some(Fourcc::NV12), &converting).unwrap(),
            Some(Fourcc::NV12)
        );
        // Opaque before alpha, whatever the order.
        assert_eq!(
            pick(&[Fourcc::AR24, Fourcc::YUYV], None, &converting).unwrap(),
            Some(Fourcc::YUYV)
        );
    }
}
