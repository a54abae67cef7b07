//! The conversion in front of the plane (features `kms` and `vulkan`): buffers the plane cannot
//! scan out are converted by a Vulkan compute shader, reading the frame in place, into XR24
//! display buffers — one dumb buffer per frame buffer, allocated on the display's own card and
//! imported into both Vulkan (written in place by the shader) and KMS — and, when the sink
//! verifies through writeback, each conversion is checked against the CPU's.
//!
//! A converted frame keeps its buffer id: display buffer `id` shows frame buffer `id`, so the
//! frame buffer goes back to the producer exactly when its converted picture left the screen
//! (the same rule as for buffers scanned out directly), and a display buffer is never written
//! while it is on screen.
//!
//! Nothing waits for the GPU on the plain display path: the conversion's completion is exported
//! from its SYNC_FD semaphore and the commit hands it to the plane as `IN_FENCE_FD`, so the
//! display waits, not the CPU. The frame's release fence needs nothing more: it is the
//! out-fence of the commit that replaces the converted picture, which cannot signal before
//! that commit's flip, which follows the flip of this frame, which waited for the conversion
//! (so for the GPU's reads of the frame). Writeback verification reads the display buffer, so
//! it waits for each conversion on the CPU; so does a device that cannot export SYNC_FD.

use std::collections::HashMap;

use super::display::KmsDisplay;
use super::options::ConvertPolicy;
use super::sink::{not_displayable, ConversionRefusal, ConvertStats, CONVERTIBLE};
use super::KmsError;
use crate::alloc::drm_dumb::DrmDumbAllocator;
use crate::alloc::Allocator;
use crate::buffer::{Access, Buffer, BufferKind, BufferMapping, CpuAccess};
use crate::format::pixel::compare_bgr;
use crate::format::{Fourcc, FrameLayout, Modifier};
use crate::gpu::vulkan::icd_installed;
use crate::sink::vulkan::{DisplayFrame, VulkanOptions, VulkanSink};
use crate::sink::{FrameIn, Sink, SinkError, StreamInfo};
use crate::sync::SyncFile;

/// One converted buffer: the display buffer its frames are written to, and (when verifying)
/// read mappings of both.
struct Converted {
    /// Kept for the life of the import (KMS and Vulkan hold their own references too).
    _display: Buffer,
    check: Option<(BufferMapping, BufferMapping)>,
}

/// What converting one frame did.
#[derive(Debug)]
pub(super) struct ConvertedFrame {
    /// Its acquire fence never signalled: nothing was converted.
    pub(super) dropped: bool,
    /// The conversion matched the CPU's (when verifying) and the GPU's checksum of the frame
    /// matched the generator's (when the producer is the generator).
    pub(super) verified: bool,
    /// The conversion's completion, for the commit's `IN_FENCE_FD` (`None`: it is complete).
    pub(super) done: Option<SyncFile>,
}

/// The conversion stage.
pub(super) struct Conversion {
    /// The Vulkan device, opened with the stage, or why there is none.
    gpu: Result<VulkanSink, String>,
    allocator: Option<DrmDumbAllocator>,
    converted: HashMap<u32, Converted>,
    /// Check each conversion against the CPU's.
    verify: bool,
    stats: ConvertStats,
}

impl Conversion {
    /// Opens the stage, all of it unless `policy` is `Never` or no Vulkan driver is installed:
    /// instance, device, every compute pipeline compiled and run once (they serve every
    /// format: the format is a push constant). So the consumer is ready when it says Hello,
    /// and no producer clock runs across a one-time compile (lavapipe under TCG: ~40 s cold,
    /// ~1 s from Mesa's shader cache). `verify` checks every conversion.
    pub(super) fn open(policy: ConvertPolicy, verify: bool) -> Conversion {
        let gpu = if policy == ConvertPolicy::Never {
            Err("the conversion is off (kms:…:direct)".to_owned())
        } else if !icd_installed() {
            Err("no Vulkan driver is installed (no ICD manifest)".to_owned())
        } else {
            open_vulkan()
        };
        if let Err(why) = &gpu {
            if policy != ConvertPolicy::Never {
                log::info!("display: the Vulkan conversion is unavailable: {why}");
            }
        }
        Conversion {
            gpu,
            allocator: None,
            converted: HashMap::new(),
            verify,
            stats: ConvertStats::default(),
        }
    }

    /// Why the conversion cannot be offered, if it cannot (it did not open).
    pub(super) fn unavailable(&self) -> Option<ConversionRefusal> {
        self.gpu
            .as_ref()
            .err()
            .map(|why| ConversionRefusal::Unavailable(why.clone()))
    }

    pub(super) fn stats(&self) -> &ConvertStats {
        &self.stats
    }

    /// A conversion's completion went to the plane as `IN_FENCE_FD`.
    pub(super) fn count_in_fence(&mut self) {
        self.stats.in_fences += 1;
    }

    /// The GPU checksums the frames against the generator's, when the stream comes from it.
    pub(super) fn start(&mut self, stream: &StreamInfo) -> Result<(), SinkError> {
        if let Ok(v) = &mut self.gpu {
            if stream.pattern.is_some() {
                v.start(stream)?;
            } else {
                v.set_pattern(None);
            }
        }
        Ok(())
    }

    /// Whether buffer `id` goes through the conversion.
    pub(super) fn contains(&self, id: u32) -> bool {
        self.converted.contains_key(&id)
    }

    /// The Vulkan device, or why there is none.
    fn vulkan(&mut self) -> Result<&mut VulkanSink, ConversionRefusal> {
        self.gpu
            .as_mut()
            .map_err(|why| ConversionRefusal::Unavailable(why.clone()))
    }

    /// Sets `buffer` up to be converted into a new display buffer of its size, shown on
    /// `display`.
    pub(super) fn add(
        &mut self,
        display: &mut KmsDisplay,
        id: u32,
        buffer: &Buffer,
    ) -> Result<(), SinkError> {
        let l = buffer.layout();
        if !CONVERTIBLE.contains(&l.fourcc()) || l.modifier() != Modifier::LINEAR {
            return Err(not_displayable(display, id, buffer, ConversionRefusal::Format).into());
        }
        let display_buffer = |source| KmsError::DisplayBuffer { id, source };
        let allocator = match self.allocator.take() {
            Some(a) => a,
            None => DrmDumbAllocator::open(Some(display.driver())).map_err(display_buffer)?,
        };
        let allocator = self.allocator.insert(allocator);
        let want = FrameLayout::linear(Fourcc::XR24, l.width(), l.height(), 64)
            .map_err(KmsError::Format)?;
        let target = allocator.allocate(&want).map_err(display_buffer)?;
        // Verify each converted frame against its own display buffer's pixels (the picture
        // the producer announced is the unconverted one).
        display.set_pattern(None);
        match self.vulkan() {
            Ok(v) => v.add_buffer_into(id, buffer, &target)?,
            Err(why) => return Err(not_displayable(display, id, buffer, why).into()),
        }
        display.import(id, &target)?;
        let check = if self.verify {
            Some((buffer.map(false)?, target.map(false)?))
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
                _display: target,
                check,
            },
        );
        Ok(())
    }

    /// Forgets buffer `id` (the display forgets its display buffer itself).
    pub(super) fn remove(&mut self, id: u32) {
        self.converted.remove(&id);
        if let Ok(v) = &mut self.gpu {
            v.remove_buffer(id);
        }
    }

    /// Converts one frame into its display buffer: without waiting, unless verifying (then the
    /// conversion is checked, see the module docs).
    pub(super) fn convert(&mut self, frame: FrameIn<'_>) -> Result<ConvertedFrame, SinkError> {
        let dropped = ConvertedFrame {
            dropped: true,
            verified: false,
            done: None,
        };
        if !self.verify {
            let vulkan = self.vulkan().map_err(KmsError::ConversionUnavailable)?;
            let done = match vulkan.frame_into_display(frame)? {
                DisplayFrame::Dropped => return Ok(dropped),
                DisplayFrame::Submitted { done } => done,
                DisplayFrame::Completed => {
                    self.stats.cpu_waits += 1;
                    None
                }
            };
            self.stats.converted_frames += 1;
            return Ok(ConvertedFrame {
                dropped: false,
                verified: false,
                done,
            });
        }
        let (id, seq) = (frame.id, frame.seq);
        let vulkan = self.vulkan().map_err(KmsError::ConversionUnavailable)?;
        // The GPU checksums the frames against the generator's, when it is one.
        let producer_checked = vulkan.has_pattern();
        let gpu = vulkan.frame(frame)?;
        if gpu.dropped {
            return Ok(dropped);
        }
        self.stats.converted_frames += 1;
        self.stats.cpu_waits += 1;
        let mut converted_ok = true;
        if let Some((src, dst)) = self.converted.get_mut(&id).and_then(|c| c.check.as_mut()) {
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
        Ok(ConvertedFrame {
            dropped: false,
            verified: converted_ok && (!producer_checked || gpu.verified),
            done: None,
        })
    }

    pub(super) fn bytes_copied(&self) -> u64 {
        match &self.gpu {
            Ok(v) => v.bytes_copied(),
            Err(_) => 0,
        }
    }

    pub(super) fn finish(&mut self) -> Result<(), SinkError> {
        if self.stats.converted_frames > 0 {
            let s = &self.stats;
            log::info!(
                "display: {} frames converted on the GPU for the plane ({} buffers); {} \
                 conversions checked pixel-exact, {} wrong; {} went to the display as \
                 IN_FENCE_FD, {} were waited for on the CPU",
                s.converted_frames,
                s.converted_buffers,
                s.conversions_verified,
                s.conversion_mismatches,
                s.in_fences,
                s.cpu_waits
            );
        }
        // (Opened at open, used only if a buffer needed it: its summary says nothing else.)
        match &mut self.gpu {
            Ok(v) if self.stats.converted_buffers > 0 => v.finish(),
            _ => Ok(()),
        }
    }
}

/// Opens the Vulkan device the conversion runs on, or says why it cannot.
fn open_vulkan() -> Result<VulkanSink, String> {
    let opts = VulkanOptions {
        convert: false,
        ..VulkanOptions::default()
    };
    VulkanSink::new(opts).map_err(|e| e.to_string())
}

/// Compares an XR24 display buffer with the CPU conversion of `frame` (the same integer BT.601
/// as the shader): the first differing pixel, if any.
fn conversion_mismatch(frame: &CpuAccess<'_>, display: &CpuAccess<'_>) -> Option<String> {
    let (l, d) = (frame.layout(), display.layout());
    if d.fourcc() != Fourcc::XR24 || d.size_px() != l.size_px() {
        return Some(format!(
            "display buffer is {} {}x{}, not XR24 {}x{}",
            d.fourcc(),
            d.width(),
            d.height(),
            l.width(),
            l.height()
        ));
    }
    // The CPU conversion is RGBA8: bytes R, G, B, A, which is AB24.
    let want = frame.to_rgba();
    let row_bytes = l.width() as usize * 4;
    compare_bgr(
        Fourcc::AB24,
        l.size_px(),
        (0, 0),
        |y| &want[y as usize * row_bytes..(y as usize + 1) * row_bytes],
        |y| display.row(0, y),
    )
    .err()
    .map(|why| {
        format!(
            "the display buffer differs from the CPU conversion of the {} frame: {why}",
            l.fourcc()
        )
    })
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
