//! The PNG sink: converts each frame to RGBA on the CPU (BT.601 limited range for YUV) and
//! writes `DIR/frame-NNNNNN.png`, for a person to look at. It reads LINEAR buffers only.

use std::path::PathBuf;

use super::{wait_acquire, FrameIn, FrameOut, Sink, SinkError, ACQUIRE_TIMEOUT};
use crate::buffer::{Access, Buffer, Mappings};

/// Writes frames as PNG files.
pub struct PngSink {
    dir: PathBuf,
    mappings: Mappings,
    written: u64,
}

impl PngSink {
    /// Creates `dir` if needed (its parent must exist; see [`super::make_output_dir`]).
    pub fn new(dir: PathBuf) -> Result<Self, SinkError> {
        super::make_output_dir("png", &dir)?;
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

/// Writes RGBA8 pixels as a PNG file.
pub fn write_png(
    path: &std::path::Path,
    width: u32,
    height: u32,
    rgba: &[u8],
) -> Result<(), SinkError> {
    let io = |error: std::io::Error| SinkError::Io {
        sink: "png",
        op: "writing",
        path: path.to_owned(),
        error,
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
        super::require_linear("png", id, buffer)?;
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
            let rgba = access.to_rgba();
            // No picture of memory the peer truncated under us (it would be zeros).
            access.end()?;
            rgba
        };
        write_png(
            &self.dir.join(format!("frame-{:06}.png", frame.seq)),
            l.width(),
            l.height(),
            &rgba,
        )?;
        self.written += 1;
        Ok(FrameOut::default())
    }
}
