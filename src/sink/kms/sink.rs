//! The `kms` sink as the pipeline uses it: a [`KmsSink`] with, where the plane cannot scan a
//! buffer out (a camera's YUYV or NV12, a modifier it lacks, shared memory), the Vulkan
//! conversion in front of it. Owns the conversion's display buffers — one XR24 dumb buffer per
//! frame buffer, allocated on the display's own card and imported into both Vulkan (written in
//! place by the compute shader) and KMS — and the CPU check of each conversion when the sink
//! verifies through writeback.
//!
//! A converted frame keeps its buffer id: display buffer `id` shows frame buffer `id`, so the
//! frame buffer goes back to the producer exactly when its converted picture left the screen
//! (the same rule as for buffers scanned out directly), and a display buffer is never written
//! while it is on screen.

use std::collections::HashMap;

use super::kms::{ConvertPolicy, KmsOptions, KmsSink};
use super::vulkan::{VulkanOptions, VulkanSink};
use super::{FrameIn, FrameOut, HeldRelease, Sink, SinkCaps, SinkError, StreamInfo};
use crate::alloc::drm_dumb::DrmDumbAllocator;
use crate::alloc::Allocator;
use crate::buffer::{Access, Buffer, BufferKind, BufferMapping, CpuAccess, KindSet};
use crate::format::FormatModifier;
use crate::format::{fourcc_names, Fourcc, FrameLayout, Modifier};

/// Formats the conversion reads (the compute shaders' inputs), LINEAR.
const CONVERTIBLE: [Fourcc; 8] = [
    Fourcc::XR24,
    Fourcc::AR24,
    Fourcc::XB24,
    Fourcc::AB24,
    Fourcc::RG24,
    Fourcc::YUYV,
    Fourcc::UYVY,
    Fourcc::NV12,
];

/// Counters of the conversion stage.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ConvertStats {
    /// Buffers that go through the conversion.
    pub converted_buffers: u64,
    /// Frames converted.
    pub converted_frames: u64,
    /// Conversions whose output matched the CPU conversion of the frame, pixel for pixel.
    pub conversions_verified: u64,
    /// Conversions that did not.
    pub conversion_mismatches: u64,
}

/// One converted buffer: the display buffer its frames are written to, and (when verifying)
/// read mappings of both.
struct Converted {
    /// Kept for the life of the import (KMS and Vulkan hold their own references too).
    _display: Buffer,
    check: Option<(BufferMapping, BufferMapping)>,
}

/// The `kms[:…]` sink.
pub struct DisplaySink {
    kms: KmsSink,
    policy: ConvertPolicy,
    verify: bool,
    vulkan: Option<VulkanSink>,
    /// Why the conversion is unavailable, once tried and failed.
    vulkan_error: Option<String>,
    allocator: Option<DrmDumbAllocator>,
    converted: HashMap<u32, Converted>,
    stream: Option<StreamInfo>,
    /// Converted frames dropped before reaching the screen, to give back.
    dropped: Vec<HeldRelease>,
    stats: ConvertStats,
}

impl std::fmt::Debug for DisplaySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisplaySink")
            .field("kms", &self.kms)
            .field("policy", &self.policy)
            .field("converted", &self.converted.len())
            .finish_non_exhaustive()
    }
}

impl DisplaySink {
    /// Opens the display (see [`KmsOptions::parse`] for `args`).
    pub fn from_spec(args: &str) -> Result<DisplaySink, SinkError> {
        let opts = KmsOptions::parse(args)?;
        Ok(Self::new(KmsSink::open(opts.clone())?, &opts))
    }

    /// Wraps an open KMS sink.
    pub fn new(kms: KmsSink, opts: &KmsOptions) -> DisplaySink {
        DisplaySink {
            kms,
            policy: opts.convert,
            verify: opts.verify_writeback,
            vulkan: None,
            vulkan_error: None,
            allocator: None,
            converted: HashMap::new(),
            stream: None,
            dropped: Vec::new(),
            stats: ConvertStats::default(),
        }
    }

    /// The KMS sink behind.
    pub fn kms(&self) -> &KmsSink {
        &self.kms
    }

    /// Conversion counters.
    pub fn convert_stats(&self) -> &ConvertStats {
        &self.stats
    }

    /// Whether the plane takes `buffer` as it is.
    fn direct(&self, buffer: &Buffer) -> bool {
        let l = buffer.layout();
        buffer.kind().is_dma_buf() && self.kms.scans_out(l.fourcc(), l.modifier())
    }

    /// Whether the conversion may be offered at all (cheap: no device is opened).
    fn may_convert(&self) -> bool {
        self.policy != ConvertPolicy::Never
            && self.vulkan_error.is_none()
            && crate::gpu::vulkan::icd_installed()
    }

    fn vulkan(&mut self) -> Result<&mut VulkanSink, SinkError> {
        if let Some(e) = &self.vulkan_error {
            return Err(SinkError::Unsupported(e.clone()));
        }
        if self.vulkan.is_none() {
            let opts = VulkanOptions {
                convert: false,
                ..VulkanOptions::default()
            };
            match VulkanSink::new(opts) {
                Ok(mut v) => {
                    // The GPU checksums the frames against the generator's, when it is one.
                    if let Some(s) = self.stream.as_ref().filter(|s| s.pattern.is_some()) {
                        v.start(s)?;
                    }
                    self.vulkan = Some(v);
                }
                Err(e) => {
                    let why = format!("the Vulkan conversion is unavailable: {e}");
                    self.vulkan_error = Some(why.clone());
                    return Err(SinkError::Unsupported(why));
                }
            }
        }
        Ok(self.vulkan.as_mut().expect("opened above"))
    }

    /// Sets `buffer` up to be converted into a new display buffer of its size.
    fn add_converted(&mut self, id: u32, buffer: &Buffer) -> Result<(), SinkError> {
        let l = buffer.layout();
        if !CONVERTIBLE.contains(&l.fourcc()) || l.modifier() != Modifier::LINEAR {
            return Err(SinkError::Unsupported(format!(
                "buffer {id}: {} with modifier {} can be neither scanned out by {} ({}) nor \
                 converted (the conversion reads LINEAR {})",
                l.fourcc(),
                l.modifier(),
                self.kms.connector_name(),
                fourcc_names(self.kms.formats().iter().map(|f| f.fourcc)),
                fourcc_names(CONVERTIBLE),
            )));
        }
        if self.allocator.is_none() {
            let a = DrmDumbAllocator::open(Some(self.kms.driver())).map_err(|e| {
                SinkError::Device(format!("display buffers for the conversion: {e}"))
            })?;
            self.allocator = Some(a);
        }
        let want = FrameLayout::linear(Fourcc::XR24, l.width(), l.height(), 64)
            .map_err(|e| SinkError::Unsupported(format!("buffer {id}: {e}")))?;
        let display = self
            .allocator
            .as_mut()
            .expect("opened above")
            .allocate(&want)
            .map_err(|e| SinkError::Device(format!("display buffer for buffer {id}: {e}")))?;
        // Verify each converted frame against its own display buffer's pixels (the picture
        // the producer announced is the unconverted one).
        self.kms.set_pattern(None);
        let what = format!(
            "buffer {id} ({} {} {}) cannot be scanned out as it is",
            buffer.kind(),
            l.fourcc(),
            l.modifier()
        );
        self.vulkan()
            .map_err(|e| SinkError::Unsupported(format!("{what}, and {e}")))?
            .add_buffer_into(id, buffer, &display)?;
        self.kms.import(id, &display)?;
        let check = if self.verify {
            Some((buffer.map(false)?, display.map(false)?))
        } else {
            None
        };
        log::info!(
            "display: buffer {id} ({} {} {}x{}) is converted on the GPU into a {} {}x{} \
             display buffer",
            buffer.kind(),
            l.fourcc(),
            l.width(),
            l.height(),
            BufferKind::DrmDumb,
            l.width(),
            l.height()
        );
        self.stats.converted_buffers += 1;
        self.converted.insert(
            id,
            Converted {
                _display: display,
                check,
            },
        );
        Ok(())
    }
}

/// Compares an XR24 display buffer with the CPU conversion of `frame` (the same integer
/// BT.601 as the shader): the first differing pixel, if any.
pub fn conversion_mismatch(frame: &CpuAccess<'_>, display: &CpuAccess<'_>) -> Option<String> {
    let want = frame.to_rgba();
    let l = frame.layout();
    let d = display.layout();
    if d.fourcc() != Fourcc::XR24 || (d.width(), d.height()) != (l.width(), l.height()) {
        return Some(format!(
            "display buffer is {} {}x{}, not XR24 {}x{}",
            d.fourcc(),
            d.width(),
            d.height(),
            l.width(),
            l.height()
        ));
    }
    let w = l.width() as usize;
    for y in 0..l.height() {
        let got = display.row(0, y);
        let exp = &want[y as usize * w * 4..(y as usize + 1) * w * 4];
        for x in 0..w {
            let (g, e) = (&got[x * 4..x * 4 + 3], &exp[x * 4..x * 4 + 3]);
            let bgr = [e[2], e[1], e[0]];
            if g != bgr {
                return Some(format!(
                    "pixel ({x}, {y}): the display buffer has B,G,R {g:?}, the conversion of \
                     the {} frame gives {bgr:?}",
                    l.fourcc()
                ));
            }
        }
    }
    None
}

impl Sink for DisplaySink {
    fn name(&self) -> String {
        self.kms.name()
    }

    /// What the plane scans out first (a producer that can deliver one of those needs no
    /// conversion), then, if a Vulkan driver is installed, what the conversion reads, from any
    /// kind of memory.
    fn caps(&self) -> SinkCaps {
        let mut caps = self.kms.caps();
        if self.policy == ConvertPolicy::Always {
            caps.formats.clear();
        }
        if self.may_convert() {
            for f in CONVERTIBLE {
                let cap = FormatModifier {
                    fourcc: f,
                    modifier: Modifier::LINEAR,
                };
                if !caps.formats.contains(&cap) {
                    caps.formats.push(cap);
                }
            }
            caps.kinds = KindSet::all();
        }
        caps
    }

    fn start(&mut self, stream: &StreamInfo) -> Result<(), SinkError> {
        self.stream = Some(stream.clone());
        self.kms.start(stream)
    }

    fn add_buffer(&mut self, id: u32, buffer: &Buffer) -> Result<(), SinkError> {
        self.remove_buffer(id);
        let convert = match self.policy {
            ConvertPolicy::Always => true,
            ConvertPolicy::Never => false,
            ConvertPolicy::Auto => !self.direct(buffer),
        };
        if convert {
            self.add_converted(id, buffer)
        } else {
            self.kms.add_buffer(id, buffer)
        }
    }

    fn remove_buffer(&mut self, id: u32) {
        self.kms.remove_buffer(id);
        self.converted.remove(&id);
        if let Some(v) = &mut self.vulkan {
            v.remove_buffer(id);
        }
    }

    fn holds_frames(&self) -> bool {
        true
    }

    fn frame(&mut self, frame: FrameIn<'_>) -> Result<FrameOut, SinkError> {
        if !self.converted.contains_key(&frame.id) {
            return self.kms.frame(frame);
        }
        let (id, seq) = (frame.id, frame.seq);
        // The GPU writes the display buffer (waiting on the acquire fence itself); the commit
        // follows once it is done.
        let gpu = self.vulkan()?.frame(frame)?;
        if gpu.dropped {
            // Its acquire fence never signalled: the display keeps the last frame.
            self.dropped.push(HeldRelease {
                id,
                seq,
                release: None,
            });
            return Ok(gpu);
        }
        self.stats.converted_frames += 1;
        let mut converted_ok = true;
        if let Some(check) = self.converted.get_mut(&id).and_then(|c| c.check.as_mut()) {
            let (src, dst) = check;
            let (src, dst) = (src.access(Access::Read)?, dst.access(Access::Read)?);
            match conversion_mismatch(&src, &dst) {
                None => self.stats.conversions_verified += 1,
                Some(why) => {
                    converted_ok = false;
                    self.stats.conversion_mismatches += 1;
                    if self.stats.conversion_mismatches <= 5 {
                        log::error!("display: frame {seq} (buffer {id}) converted wrongly: {why}");
                    }
                }
            }
        }
        let shown = self.kms.show(id, seq, None)?;
        let producer_checked = self.vulkan.as_ref().is_some_and(|v| v.has_pattern());
        Ok(FrameOut {
            verified: self.verify
                && converted_ok
                && shown == Some(true)
                && (!producer_checked || gpu.verified),
            dropped: false,
            release: None,
        })
    }

    fn take_released(&mut self) -> Vec<HeldRelease> {
        let mut out = std::mem::take(&mut self.dropped);
        out.extend(self.kms.take_released());
        out
    }

    fn idle(&mut self) -> Result<(), SinkError> {
        self.kms.idle()
    }

    fn bytes_copied(&self) -> u64 {
        self.kms.bytes_copied() + self.vulkan.as_ref().map_or(0, |v| v.bytes_copied())
    }

    fn frames_converted(&self) -> u64 {
        self.stats.converted_frames
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        if self.stats.converted_frames > 0 {
            let s = &self.stats;
            log::info!(
                "display: {} frames converted on the GPU for the plane ({} buffers); {} \
                 conversions checked pixel-exact, {} wrong",
                s.converted_frames,
                s.converted_buffers,
                s.conversions_verified,
                s.conversion_mismatches
            );
        }
        if let Some(v) = &mut self.vulkan {
            v.finish()?;
        }
        self.kms.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::memfd::MemfdAllocator;
    use crate::source::{Generator, Pattern};

    /// A YUYV generator frame and its XR24 conversion done by hand: equal, and one wrong byte
    /// is named by its pixel.
    #[test]
    fn a_wrong_conversion_is_caught() {
        let mut a = MemfdAllocator::new();
        let src_layout = FrameLayout::linear(Fourcc::YUYV, 64, 16, 64).unwrap();
        let dst_layout = FrameLayout::linear(Fourcc::XR24, 64, 16, 64).unwrap();
        let src = a.allocate(&src_layout).unwrap();
        let dst = a.allocate(&dst_layout).unwrap();
        let (mut sm, mut dm) = (src.map(true).unwrap(), dst.map(true).unwrap());
        Generator::new(Pattern::MovingBox, &src_layout).fill(
            0,
            &mut sm.access(Access::Write).unwrap(),
            7,
        );
        let rgba = sm.access(Access::Read).unwrap().to_rgba();
        {
            let mut d = dm.access(Access::Write).unwrap();
            for y in 0..16u32 {
                let row = d.row_mut(0, y);
                for x in 0..64usize {
                    let p = &rgba[(y as usize * 64 + x) * 4..][..4];
                    row[x * 4..x * 4 + 4].copy_from_slice(&[p[2], p[1], p[0], 0]);
                }
            }
        }
        let check = |sm: &mut BufferMapping, dm: &mut BufferMapping| {
            conversion_mismatch(
                &sm.access(Access::Read).unwrap(),
                &dm.access(Access::Read).unwrap(),
            )
        };
        assert_eq!(check(&mut sm, &mut dm), None);
        dm.access(Access::Write).unwrap().row_mut(0, 9)[4 * 33 + 1] ^= 1;
        let why = check(&mut sm, &mut dm).expect("a changed green byte");
        assert!(why.contains("pixel (33, 9)"), "{why}");
    }
}
