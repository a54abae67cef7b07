//! [`KmsSink`], what `--sink kms[:…]` builds: a [`KmsDisplay`] behind the [`Sink`] trait. A
//! frame stays with the sink while it is on screen and goes back once the next frame replaced
//! it (with the out-fence of that commit as its release fence), or when the stream goes idle
//! and the plane is turned off. Where the plane cannot scan a buffer out (a camera's YUYV or
//! NV12, a modifier it lacks, shared memory), the Vulkan conversion goes in front of it
//! (`convert`, features `kms` and `vulkan`); a build without Vulkan refuses such buffers, and
//! `kms:…:convert`, saying so.

use super::display::KmsDisplay;
use super::options::{ConvertPolicy, KmsOptions};
use super::KmsError;
use crate::buffer::{Buffer, KindSet};
use crate::format::{fourcc_names, FormatModifier, Fourcc, Modifier};
use crate::latency::Latency;
use crate::meta::Clock;
use crate::sink::{
    ConversionSync, FrameIn, FrameOut, HeldRelease, Sink, SinkCaps, SinkError, StreamInfo,
};

/// Formats the conversion reads (the compute shaders' inputs), LINEAR.
pub(super) const CONVERTIBLE: [Fourcc; 12] = [
    Fourcc::XR24,
    Fourcc::AR24,
    Fourcc::XB24,
    Fourcc::AB24,
    Fourcc::RG24,
    Fourcc::YUYV,
    Fourcc::UYVY,
    Fourcc::NV12,
    Fourcc::NV21,
    Fourcc::NV16,
    Fourcc::P010,
    Fourcc::YU12,
];

/// Why the conversion in front of the plane cannot take a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversionRefusal {
    /// This build has no Vulkan (the `vulkan` feature is off).
    NotBuilt,
    /// The conversion reads only LINEAR buffers of the formats its shaders know.
    Format,
    /// Vulkan could not be opened here (why).
    Unavailable(String),
}

impl std::fmt::Display for ConversionRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConversionRefusal::NotBuilt => f.write_str(
                "this build has no Vulkan conversion (build frameshare with --features vulkan)",
            ),
            ConversionRefusal::Format => write!(
                f,
                "the conversion reads LINEAR {}",
                fourcc_names(CONVERTIBLE)
            ),
            ConversionRefusal::Unavailable(why) => {
                write!(f, "the Vulkan conversion is unavailable: {why}")
            }
        }
    }
}

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
    /// Frames whose conversion's completion fence went to the plane as the commit's
    /// `IN_FENCE_FD`: nothing waited for the GPU on the CPU.
    pub in_fences: u64,
    /// Frames whose conversion the CPU waited for before the commit (writeback verification
    /// reads the display buffer; a device that cannot export SYNC_FD).
    pub cpu_waits: u64,
}

/// The `kms[:…]` sink.
pub struct KmsSink {
    display: KmsDisplay,
    policy: ConvertPolicy,
    /// Frames off the screen (or about to be: see their fences), and converted frames dropped
    /// before reaching it, not yet given back through [`Sink::take_released`].
    to_release: Vec<HeldRelease>,
    #[cfg(feature = "vulkan")]
    conversion: super::convert::Conversion,
}

impl std::fmt::Debug for KmsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsSink")
            .field("display", &self.display)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The error for buffer `id`, which `display`'s plane cannot scan out and the conversion
/// cannot take (`why`).
pub(super) fn not_displayable(
    display: &KmsDisplay,
    id: u32,
    buffer: &Buffer,
    why: ConversionRefusal,
) -> KmsError {
    let l = buffer.layout();
    KmsError::NotDisplayable {
        id,
        kind: buffer.kind(),
        fourcc: l.fourcc(),
        modifier: l.modifier(),
        connector: display.connector_name().to_owned(),
        takes: fourcc_names(display.formats().iter().map(|f| f.fourcc)),
        why,
    }
}

impl KmsSink {
    /// Opens the display `opts` names (see [`KmsDisplay::open`]) and, unless the conversion
    /// is off (`direct`), the conversion too, compiling its pipelines: the sink is ready for
    /// any buffer once this returns, before its consumer says Hello. Where the conversion
    /// cannot open (no Vulkan driver, or a build without Vulkan), it is not offered, and
    /// `convert` is refused here.
    pub fn open(opts: &KmsOptions) -> Result<KmsSink, KmsError> {
        #[cfg(not(feature = "vulkan"))]
        if opts.convert == ConvertPolicy::Always {
            return Err(KmsError::ConversionUnavailable(ConversionRefusal::NotBuilt));
        }
        let display = KmsDisplay::open(opts)?;
        #[cfg(feature = "vulkan")]
        let conversion = super::convert::Conversion::open(opts.convert, display.verifies());
        #[cfg(feature = "vulkan")]
        if let (ConvertPolicy::Always, Some(why)) = (opts.convert, conversion.unavailable()) {
            return Err(KmsError::ConversionUnavailable(why));
        }
        Ok(KmsSink {
            #[cfg(feature = "vulkan")]
            conversion,
            display,
            policy: opts.convert,
            to_release: Vec::new(),
        })
    }

    /// The display behind.
    pub fn display(&self) -> &KmsDisplay {
        &self.display
    }

    /// Conversion counters (all zero in a build without Vulkan).
    pub fn convert_stats(&self) -> ConvertStats {
        #[cfg(feature = "vulkan")]
        return self.conversion.stats().clone();
        #[cfg(not(feature = "vulkan"))]
        ConvertStats::default()
    }

    /// Whether the plane takes `buffer` as it is.
    fn direct(&self, buffer: &Buffer) -> bool {
        let l = buffer.layout();
        buffer.kind().is_dma_buf() && self.display.scans_out(l.fourcc(), l.modifier())
    }

    /// Whether the conversion is offered (it is not off, and it opened).
    fn may_convert(&self) -> bool {
        #[cfg(feature = "vulkan")]
        return self.policy != ConvertPolicy::Never && self.conversion.unavailable().is_none();
        #[cfg(not(feature = "vulkan"))]
        false
    }

    /// Sets `buffer` up to be converted into a display buffer of its own.
    fn add_converted(&mut self, id: u32, buffer: &Buffer) -> Result<(), SinkError> {
        #[cfg(feature = "vulkan")]
        return self.conversion.add(&mut self.display, id, buffer);
        #[cfg(not(feature = "vulkan"))]
        Err(not_displayable(&self.display, id, buffer, ConversionRefusal::NotBuilt).into())
    }

    /// A converted frame: the GPU writes its display buffer (waiting on the acquire fence
    /// itself), and the commit follows at once, the plane waiting for the conversion
    /// (`IN_FENCE_FD`), not the CPU.
    #[cfg(feature = "vulkan")]
    fn frame_converted(&mut self, frame: FrameIn<'_>) -> Result<FrameOut, SinkError> {
        let (id, seq) = (frame.id, frame.seq);
        let captured_ns = captured_ns(&frame);
        let converted = self.conversion.convert(frame)?;
        if converted.dropped {
            // Its acquire fence never signalled: the display keeps the last frame.
            self.to_release.push(HeldRelease {
                id,
                seq,
                release: None,
            });
            return Ok(FrameOut {
                dropped: true,
                ..FrameOut::default()
            });
        }
        if converted.done.is_some() {
            self.conversion.count_in_fence();
        }
        let presented = self
            .display
            .present_after(id, seq, converted.done, captured_ns)?;
        self.to_release.extend(presented.released);
        Ok(FrameOut {
            verified: converted.verified && presented.verified == Some(true),
            dropped: false,
            release: None,
        })
    }
}

impl Sink for KmsSink {
    fn name(&self) -> String {
        if self.display.verifies() {
            "kms:verify-writeback".into()
        } else {
            "kms".into()
        }
    }

    /// What the plane scans out first (a producer that can deliver one of those needs no
    /// conversion), then, if the conversion opened, what it reads, from any kind of memory.
    fn caps(&self) -> SinkCaps {
        let mut caps = SinkCaps {
            fences: true,
            kinds: KindSet::dma_bufs(),
            formats: self.display.formats().to_vec(),
        };
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
        self.display.set_pattern(stream.pattern);
        #[cfg(feature = "vulkan")]
        self.conversion.start(stream)?;
        Ok(())
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
            Ok(self.display.import(id, buffer)?)
        }
    }

    fn remove_buffer(&mut self, id: u32) {
        self.display.remove(id);
        #[cfg(feature = "vulkan")]
        self.conversion.remove(id);
    }

    /// A frame stays with the sink while it is on screen: it goes back once the next frame
    /// replaced it, with the out-fence of that commit as its release fence (signalled when it
    /// has left the screen), or when the stream goes idle and the plane is turned off.
    fn holds_frames(&self) -> bool {
        true
    }

    fn frame(&mut self, frame: FrameIn<'_>) -> Result<FrameOut, SinkError> {
        #[cfg(feature = "vulkan")]
        if self.conversion.contains(frame.id) {
            return self.frame_converted(frame);
        }
        self.display.import(frame.id, frame.buffer)?;
        let captured_ns = captured_ns(&frame);
        let presented =
            self.display
                .present_captured(frame.id, frame.seq, frame.acquire, captured_ns)?;
        self.to_release.extend(presented.released);
        Ok(FrameOut {
            verified: presented.verified == Some(true),
            dropped: false,
            release: None,
        })
    }

    fn take_released(&mut self) -> Vec<HeldRelease> {
        std::mem::take(&mut self.to_release)
    }

    fn idle(&mut self) -> Result<(), SinkError> {
        if self.display.is_showing() {
            log::debug!("KMS: stream idle; taking the last frame off the screen");
            let off = self.display.turn_off()?;
            self.to_release.extend(off);
        }
        Ok(())
    }

    fn bytes_copied(&self) -> u64 {
        #[cfg(feature = "vulkan")]
        return self.conversion.bytes_copied();
        #[cfg(not(feature = "vulkan"))]
        0
    }

    fn frames_converted(&self) -> u64 {
        self.convert_stats().converted_frames
    }

    fn conversion_sync(&self) -> ConversionSync {
        let s = self.convert_stats();
        ConversionSync {
            in_fences: s.in_fences,
            cpu_waits: s.cpu_waits,
        }
    }

    fn capture_to_flip(&self) -> Option<Latency> {
        Some(self.display.stats().capture_to_flip_us())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        #[cfg(feature = "vulkan")]
        self.conversion.finish()?;
        self.display.turn_off()?;
        Ok(())
    }
}

/// When the frame was captured, on CLOCK_MONOTONIC (the page-flip event's clock): its source's
/// own timestamp (a camera's buffer time), if it has one on that clock.
fn captured_ns(frame: &FrameIn<'_>) -> Option<u64> {
    frame
        .meta
        .source_time
        .filter(|t| t.clock == Clock::Monotonic)
        .map(|t| t.ns)
}
