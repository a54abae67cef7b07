//! The PNG sink: converts each frame to RGBA on the CPU (BT.601 limited range for YUV) and
//! writes `DIR/frame-NNNNNN.png`, for a person to look at.

use std::path::PathBuf;

use super::{wait_acquire, FrameIn, FrameOut, Sink, SinkError, ACQUIRE_TIMEOUT};
use crate::buffer::{Access, Buffer, CpuAccess, Mappings};
use crate::format::Fourcc;

/// Writes frames as PNG files.
pub struct PngSink {
    dir: PathBuf,
    mappings: Mappings,
    written: u64,
}

impl PngSink {
    /// Creates `dir` if needed.
    pub fn new(dir: PathBuf) -> Result<Self, SinkError> {
        std::fs::create_dir_all(&dir).map_err(|source| SinkError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(PngSink {
            dir,
            mappings: Mappings::default(),
            written: 0,
        })
    }

    /// Files written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (y as i32 - 16) * 298;
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [
        clamp(c + 409 * e),
        clamp(c - 100 * d - 208 * e),
        clamp(c + 516 * d),
    ]
}

/// Converts a mapped frame to tightly packed RGBA8.
pub fn to_rgba(access: &CpuAccess<'_>) -> Vec<u8> {
    let l = access.layout();
    let (w, h) = (l.width as usize, l.height as usize);
    let mut out = Vec::with_capacity(w * h * 4);
    for y in 0..h {
        let row = access.row(0, y as u32);
        for x in 0..w {
            let px: [u8; 3] = match l.fourcc {
                Fourcc::XR24 | Fourcc::AR24 => [row[x * 4 + 2], row[x * 4 + 1], row[x * 4]],
                Fourcc::XB24 | Fourcc::AB24 => [row[x * 4], row[x * 4 + 1], row[x * 4 + 2]],
                Fourcc::RG24 => [row[x * 3 + 2], row[x * 3 + 1], row[x * 3]],
                Fourcc::YUYV => {
                    yuv_to_rgb(row[x * 2], row[(x & !1) * 2 + 1], row[(x & !1) * 2 + 3])
                }
                Fourcc::UYVY => {
                    yuv_to_rgb(row[x * 2 + 1], row[(x & !1) * 2], row[(x & !1) * 2 + 2])
                }
                Fourcc::NV12 => {
                    let uv = access.row(1, (y / 2) as u32);
                    yuv_to_rgb(row[x], uv[x & !1], uv[(x & !1) + 1])
                }
                _ => [0, 0, 0],
            };
            out.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
    }
    out
}

/// Writes RGBA8 pixels as a PNG file.
pub fn write_png(
    path: &std::path::Path,
    width: u32,
    height: u32,
    rgba: &[u8],
) -> Result<(), SinkError> {
    let io = |source: std::io::Error| SinkError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut enc = ::png::Encoder::new(std::io::BufWriter::new(file), width, height);
    enc.set_color(::png::ColorType::Rgba);
    enc.set_depth(::png::BitDepth::Eight);
    let mut w = enc
        .write_header()
        .map_err(|e| io(std::io::Error::other(e)))?;
    w.write_image_data(rgba)
        .map_err(|e| io(std::io::Error::other(e)))?;
    w.finish().map_err(|e| io(std::io::Error::other(e)))
}

impl Sink for PngSink {
    fn name(&self) -> String {
        format!("png:{}", self.dir.display())
    }

    fn add_buffer(&mut self, id: u32, buffer: &Buffer) -> Result<(), SinkError> {
        Ok(self.mappings.insert(id, buffer, false)?)
    }

    fn remove_buffer(&mut self, id: u32) {
        self.mappings.remove(id);
    }

    fn frame(&mut self, frame: FrameIn<'_>) -> Result<FrameOut, SinkError> {
        if !wait_acquire(frame.acquire, ACQUIRE_TIMEOUT)? {
            return Ok(FrameOut {
                dropped: true,
                ..Default::default()
            });
        }
        let mapping = self
            .mappings
            .get_mut(frame.id)
            .expect("frames name only added buffers");
        let l = frame.buffer.layout().clone();
        let rgba = {
            let access = mapping.access(Access::Read)?;
            to_rgba(&access)
        };
        write_png(
            &self.dir.join(format!("frame-{:06}.png", frame.seq)),
            l.width,
            l.height,
            &rgba,
        )?;
        self.written += 1;
        Ok(FrameOut::default())
    }
}
