//! What a GStreamer video format is in frameshare's terms and back: the fourcc table, the
//! caps both elements advertise, and a frame's plane layout from `GstVideoInfo` and
//! `GstVideoMeta` (strides and offsets as upstream laid them out).

use frameshare::format::{FormatError, Fourcc, FrameLayout, Modifier, PlaneLayout};
use gst_video::VideoFormat;

/// The formats both elements take: each frameshare fourcc and its GStreamer name (DRM fourccs
/// name bytes from the least significant end, GStreamer from the first byte in memory).
pub const FORMATS: [(Fourcc, VideoFormat); 8] = [
    (Fourcc::XR24, VideoFormat::Bgrx),
    (Fourcc::AR24, VideoFormat::Bgra),
    (Fourcc::XB24, VideoFormat::Rgbx),
    (Fourcc::AB24, VideoFormat::Rgba),
    (Fourcc::RG24, VideoFormat::Bgr),
    (Fourcc::NV12, VideoFormat::Nv12),
    (Fourcc::YUYV, VideoFormat::Yuy2),
    (Fourcc::UYVY, VideoFormat::Uyvy),
];

/// The fourcc of a GStreamer format, if frameshare knows it.
pub fn fourcc_of(format: VideoFormat) -> Option<Fourcc> {
    FORMATS.iter().find(|(_, v)| *v == format).map(|(f, _)| *f)
}

/// The GStreamer format of a fourcc, if it has one here.
pub fn video_format_of(fourcc: Fourcc) -> Option<VideoFormat> {
    FORMATS.iter().find(|(f, _)| *f == fourcc).map(|(_, v)| *v)
}

/// `video/x-raw` and `video/x-raw(memory:DMABuf)` in every format of [`FORMATS`], any size
/// and rate: the pad templates of both elements.
pub fn template_caps() -> gst::Caps {
    let formats = FORMATS.iter().map(|(_, v)| *v);
    let raw = gst_video::VideoCapsBuilder::new()
        .format_list(formats.clone())
        .build();
    let dmabuf = gst_video::VideoCapsBuilder::new()
        .features([gst_allocators::CAPS_FEATURE_MEMORY_DMABUF])
        .format_list(formats)
        .build();
    let mut caps = raw;
    caps.merge(dmabuf);
    caps
}

/// Errors turning GStreamer's description of a frame into a frameshare layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A format frameshare does not carry.
    #[error("format {0:?} is not one frameshare carries")]
    Format(VideoFormat),
    /// A plane lies in no memory of the buffer, or across two.
    #[error("plane {0} does not lie inside one memory of the buffer")]
    PlaneOutside(usize),
    /// The resulting layout failed frameshare's checks.
    #[error(transparent)]
    Layout(#[from] FormatError),
}

/// Where a plane starts: which of the buffer's memories holds it and at which byte of that
/// memory's fd (the memory's own offset into the fd included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySpan {
    /// The memory's first byte, counted over the buffer's memories laid end to end.
    pub start: u64,
    /// Its size in the buffer.
    pub size: u64,
    /// Its offset inside its fd.
    pub fd_offset: u64,
}

/// The frameshare layout of a buffer of `info` whose planes sit at `offsets`/`strides` over
/// the buffer's memories `spans` (one fd each): fd index = the memory holding the plane.
/// `fd_sizes` are the sizes of those fds (the layout's `size` is fd 0's).
pub fn layout_of(
    info: &gst_video::VideoInfo,
    offsets: &[usize],
    strides: &[i32],
    spans: &[MemorySpan],
    fd_sizes: &[u64],
) -> Result<FrameLayout, LayoutError> {
    let fourcc = fourcc_of(info.format()).ok_or(LayoutError::Format(info.format()))?;
    let mut planes = Vec::with_capacity(offsets.len());
    for (i, (&off, &stride)) in offsets.iter().zip(strides).enumerate() {
        let off = off as u64;
        let (fd_index, span) = spans
            .iter()
            .enumerate()
            .find(|(_, s)| off >= s.start && off < s.start + s.size)
            .ok_or(LayoutError::PlaneOutside(i))?;
        let stride = u32::try_from(stride).map_err(|_| LayoutError::PlaneOutside(i))?;
        planes.push(PlaneLayout {
            fd_index: fd_index as u32,
            offset: span.fd_offset + (off - span.start),
            stride,
        });
    }
    Ok(FrameLayout::new(
        fourcc,
        Modifier::LINEAR,
        info.width(),
        info.height(),
        planes,
        fd_sizes.first().copied().unwrap_or(0),
    )?)
}

/// Caps for frames of `layout` (`dmabuf`: with the `memory:DMABuf` feature).
pub fn caps_of(layout: &FrameLayout, dmabuf: bool) -> Option<gst::Caps> {
    let format = video_format_of(layout.fourcc())?;
    let b = gst_video::VideoCapsBuilder::new()
        .format(format)
        .width(layout.width() as i32)
        .height(layout.height() as i32)
        .framerate(gst::Fraction::new(0, 1));
    Some(if dmabuf {
        b.features([gst_allocators::CAPS_FEATURE_MEMORY_DMABUF])
            .build()
    } else {
        b.build()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_maps_both_ways() {
        for (f, v) in FORMATS {
            assert_eq!(fourcc_of(v), Some(f));
            assert_eq!(video_format_of(f), Some(v));
            assert!(f.info().is_some(), "{f} is laid out by frameshare");
        }
        assert_eq!(fourcc_of(VideoFormat::I420), None);
    }

    #[test]
    fn nv12_layout_follows_the_video_info() {
        gst::init().unwrap();
        let info = gst_video::VideoInfo::builder(VideoFormat::Nv12, 64, 48)
            .build()
            .unwrap();
        let size = info.size() as u64;
        let span = MemorySpan {
            start: 0,
            size,
            fd_offset: 4096,
        };
        let l = layout_of(&info, info.offset(), info.stride(), &[span], &[size + 4096]).unwrap();
        assert_eq!(l.fourcc(), Fourcc::NV12);
        assert_eq!(l.planes()[0].offset, 4096);
        assert_eq!(l.planes()[1].offset, 4096 + info.offset()[1] as u64);
        assert_eq!(l.planes()[1].stride, info.stride()[1] as u32);
        // A plane past the memory is refused.
        let short = MemorySpan { size: 10, ..span };
        assert!(matches!(
            layout_of(&info, info.offset(), info.stride(), &[short], &[size]),
            Err(LayoutError::PlaneOutside(1))
        ));
    }
}
