//! Sinks: what the consumer does with each frame. `verify` checks every pixel against the
//! generator, `null` only takes and returns buffers, `png:DIR` writes pictures; the Vulkan and
//! KMS sinks import the buffers into a GPU or display. [`open`] builds one from its name.

#[cfg(feature = "kms")]
pub mod kms;
pub mod null;
#[cfg(feature = "png")]
pub mod png;
pub mod verify;
#[cfg(feature = "vulkan")]
pub mod vulkan;

use std::time::Duration;

use crate::buffer::KindSet;
use crate::buffer::{Buffer, BufferError};
use crate::format::{FormatModifier, Modifier};
use crate::source::Pattern;
use crate::sync::{FenceError, SyncFile};

/// One frame handed to a sink.
pub struct FrameIn<'a> {
    /// Buffer id.
    pub id: u32,
    /// Sequence number.
    pub seq: u64,
    /// The buffer.
    pub buffer: &'a Buffer,
    /// Signals when the pixels may be read.
    pub acquire: Option<SyncFile>,
    /// The frame's metadata (crop, colorimetry, the source's own sequence and time, …).
    pub meta: &'a crate::meta::FrameMeta,
}

/// What a sink did with a frame.
#[derive(Debug, Default)]
pub struct FrameOut {
    /// The pixels were checked and right.
    pub verified: bool,
    /// The frame could not be used (its acquire fence timed out): counted as dropped.
    pub dropped: bool,
    /// Signals when the sink is done reading the buffer (sent back with `Release`).
    pub release: Option<SyncFile>,
}

/// A frame a sink kept past [`Sink::frame`] (see [`Sink::holds_frames`]) and gives back now.
#[derive(Debug)]
pub struct HeldRelease {
    /// Buffer id.
    pub id: u32,
    /// The frame it held.
    pub seq: u64,
    /// Signals when the sink is done with the buffer (`None`: it already is).
    pub release: Option<SyncFile>,
}

/// How long a sink that holds frames waits for the next event before [`Sink::idle`] gives them
/// back, at the least (the consume loop stretches it to a few frame intervals of the stream,
/// so a slow camera is not mistaken for the end of the stream).
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(300);

/// Errors from sinks.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The buffer could not be mapped or accessed.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A fence operation failed.
    #[error(transparent)]
    Fence(#[from] FenceError),
    /// A file or directory could not be written or made.
    #[error("{sink} sink: {op} {}: {error}", path.display())]
    Io {
        /// The sink (`png`, `vulkan:png`).
        sink: &'static str,
        /// What was attempted (`writing`, `creating directory`).
        op: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The error (said in the message, so not a `source`: once is enough).
        error: std::io::Error,
    },
    /// The sink cannot take this stream.
    #[error("{0}")]
    Unsupported(String),
    /// A CPU sink was given a buffer in a tiled or otherwise non-linear layout, which it cannot
    /// read row by row.
    #[error("{sink} reads LINEAR buffers only: buffer {id} has modifier {modifier}")]
    NotLinear {
        /// The sink.
        sink: String,
        /// Buffer id.
        id: u32,
        /// The buffer's modifier.
        modifier: Modifier,
    },
    /// Unknown sink name.
    #[error("unknown sink {0:?} (want verify, null, png:DIR, vulkan[:image|buffer|staging][:png:DIR], kms[:vkms|:/dev/dri/cardN][:connector=NAME][:verify-writeback][:convert|:direct])")]
    UnknownName(String),
    /// The sink exists, but this build left it out.
    #[error("this build has no {0} sink (build with --features {1})")]
    NotBuilt(&'static str, &'static str),
    /// The GPU layer failed (device lost, out of memory, unsupported, …).
    #[cfg(feature = "vulkan")]
    #[error(transparent)]
    Vulkan(#[from] crate::gpu::vulkan::VulkanError),
    /// The display failed, or cannot take this stream (see [`SinkError::is_unsupported`]).
    #[cfg(feature = "kms")]
    #[error(transparent)]
    Kms(#[from] kms::KmsError),
}

impl SinkError {
    /// Whether the sink cannot take this stream (its buffers' memory, format or modifier, or
    /// its source), as opposed to a sink or device that failed.
    pub fn is_unsupported(&self) -> bool {
        match self {
            SinkError::Unsupported(_) => true,
            #[cfg(feature = "kms")]
            SinkError::Kms(e) => e.is_unsupported(),
            _ => false,
        }
    }
}

/// What a sink can take: the consumer announces it to the producer, which picks buffers and a
/// format to match.
#[derive(Debug, Clone)]
pub struct SinkCaps {
    /// Whether the sink waits on acquire fences and can hand back release fences.
    pub fences: bool,
    /// The buffer kinds it can import.
    pub kinds: KindSet,
    /// The formats it can import, best first (empty: any format the crate knows).
    pub formats: Vec<FormatModifier>,
}

impl Default for SinkCaps {
    /// Fences, every kind, every format (a CPU sink).
    fn default() -> Self {
        SinkCaps {
            fences: true,
            kinds: KindSet::all(),
            formats: Vec::new(),
        }
    }
}

/// What a sink learns of the stream it joins.
#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    /// What the producer says it is (`generator:bars`, `v4l2:/dev/video1`, …), for messages.
    pub producer: String,
    /// The generator pattern, when the frames come from the generator (the verifying sinks
    /// recompute every frame from it).
    pub pattern: Option<Pattern>,
}

impl StreamInfo {
    /// The pattern, or an error saying that `sink` can only verify generated frames.
    pub fn require_pattern(&self, sink: &str) -> Result<Pattern, SinkError> {
        self.pattern.ok_or_else(|| {
            SinkError::Unsupported(format!(
                "{sink} needs the generator source; the producer is {:?}",
                self.producer
            ))
        })
    }
}

/// A consumer of frames.
pub trait Sink {
    /// Name for reports and the Hello (`verify`, `vulkan`, …).
    fn name(&self) -> String;

    /// What the sink can import (the consumer announces it).
    fn caps(&self) -> SinkCaps {
        SinkCaps::default()
    }

    /// Called once the stream is known, before its first buffer.
    fn start(&mut self, _stream: &StreamInfo) -> Result<(), SinkError> {
        Ok(())
    }

    /// A buffer joined the pool (import or map it here, once).
    fn add_buffer(&mut self, id: u32, buffer: &Buffer) -> Result<(), SinkError>;

    /// A buffer left the pool.
    fn remove_buffer(&mut self, id: u32);

    /// Consumes one frame.
    fn frame(&mut self, frame: FrameIn<'_>) -> Result<FrameOut, SinkError>;

    /// Whether this sink keeps frames after [`Sink::frame`] returns (KMS: until a frame has left
    /// the screen). If so, the consume loop sends no release when `frame` returns (its
    /// `FrameOut::release` is ignored); the sink gives every frame back through
    /// [`Sink::take_released`], dropped frames included. Default: no.
    fn holds_frames(&self) -> bool {
        false
    }

    /// Frames kept earlier that may go back to the producer now, with their release fences.
    /// The consume loop drains this after every event (and after [`Sink::idle`]).
    fn take_released(&mut self) -> Vec<HeldRelease> {
        Vec::new()
    }

    /// The producer announced the end of the stream, or nothing arrived for a while (see
    /// [`IDLE_TIMEOUT`]: a producer waiting for its buffers) and the sink holds frames. Let go
    /// of everything held, so that [`Sink::take_released`] returns it (KMS: the plane is
    /// turned off).
    fn idle(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Pixel bytes this sink copied to get at frames (0 when it reads them in place).
    fn bytes_copied(&self) -> u64 {
        0
    }

    /// Frames converted on the GPU before use (the display's conversion stage).
    fn frames_converted(&self) -> u64 {
        0
    }

    /// How the display waited for those conversions.
    fn conversion_sync(&self) -> ConversionSync {
        ConversionSync::default()
    }

    /// A display's capture → page flip distribution (the run report's `capture_to_flip_us`);
    /// `None` for sinks that show nothing.
    fn capture_to_flip(&self) -> Option<crate::latency::Latency> {
        None
    }

    /// Called at the end of the stream.
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// How a display waited for the GPU conversions in front of its plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversionSync {
    /// Conversions whose completion went to the plane as the commit's `IN_FENCE_FD` (the
    /// display waited, not the CPU).
    pub in_fences: u64,
    /// Conversions the CPU waited for before the commit.
    pub cpu_waits: u64,
}

/// How long CPU sinks wait for an acquire fence before dropping the frame.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits on an acquire fence on the CPU. `Ok(false)` if it timed out (the frame is dropped).
pub fn wait_acquire(fence: Option<SyncFile>, timeout: Duration) -> Result<bool, SinkError> {
    match fence.map(|f| f.wait(timeout)) {
        None | Some(Ok(())) => Ok(true),
        Some(Err(FenceError::Timeout(t))) => {
            log::warn!("acquire fence did not signal within {t:?}: frame dropped");
            Ok(false)
        }
        Some(Err(e)) => Err(e.into()),
    }
}

/// For sinks that read frames on the CPU (`verify`, `png`): refuses a buffer whose layout is
/// not LINEAR (a dma-buf with a tiling modifier, or INVALID), which such a sink would misread.
pub fn require_linear(sink: &str, id: u32, buffer: &Buffer) -> Result<(), SinkError> {
    let modifier = buffer.layout().modifier();
    if modifier == Modifier::LINEAR {
        return Ok(());
    }
    Err(SinkError::NotLinear {
        sink: sink.to_owned(),
        id,
        modifier,
    })
}

/// A sink, named: what `--sink` takes. Parsing is pure ([`str::parse`]: a bad name or option
/// is found before any device is opened); opening touches devices ([`SinkSpec::open`]).
#[derive(Debug, Clone)]
pub enum SinkSpec {
    /// `verify`.
    Verify,
    /// `null`.
    Null,
    /// `png:DIR` (feature `png`).
    Png(std::path::PathBuf),
    /// `vulkan[:…]` (feature `vulkan`).
    #[cfg(feature = "vulkan")]
    Vulkan(vulkan::VulkanOptions),
    /// `kms[:…]` (feature `kms`).
    #[cfg(feature = "kms")]
    Kms(kms::KmsOptions),
}

impl std::str::FromStr for SinkSpec {
    type Err = SinkError;
    fn from_str(spec: &str) -> Result<Self, SinkError> {
        match spec.split_once(':').map_or((spec, ""), |(a, b)| (a, b)) {
            ("verify", "") => Ok(SinkSpec::Verify),
            ("null", "") => Ok(SinkSpec::Null),
            ("png", dir) if !dir.is_empty() => {
                if cfg!(feature = "png") {
                    Ok(SinkSpec::Png(dir.into()))
                } else {
                    Err(SinkError::NotBuilt("png", "png"))
                }
            }
            #[cfg(feature = "vulkan")]
            ("vulkan", rest) => Ok(SinkSpec::Vulkan(vulkan::VulkanOptions::parse(rest)?)),
            #[cfg(not(feature = "vulkan"))]
            ("vulkan", _) => Err(SinkError::NotBuilt("vulkan", "vulkan")),
            #[cfg(feature = "kms")]
            ("kms", rest) => Ok(SinkSpec::Kms(rest.parse()?)),
            #[cfg(not(feature = "kms"))]
            ("kms", _) => Err(SinkError::NotBuilt("kms", "kms")),
            _ => Err(SinkError::UnknownName(spec.to_owned())),
        }
    }
}

impl SinkSpec {
    /// Opens the sink (devices, GPU instance, pipelines: all the slow one-time set-up).
    pub fn open(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            SinkSpec::Verify => Box::new(verify::VerifySink::new()),
            SinkSpec::Null => Box::new(null::NullSink::default()),
            #[cfg(feature = "png")]
            SinkSpec::Png(dir) => Box::new(png::PngSink::new(dir.clone())?),
            #[cfg(not(feature = "png"))]
            SinkSpec::Png(_) => return Err(SinkError::NotBuilt("png", "png")),
            #[cfg(feature = "vulkan")]
            SinkSpec::Vulkan(o) => Box::new(vulkan::VulkanSink::new(o.clone())?),
            #[cfg(feature = "kms")]
            SinkSpec::Kms(o) => Box::new(kms::KmsSink::open(o)?),
        })
    }

    /// Whether the sink checks every frame's pixels (a run fails if one is wrong).
    pub fn verifies(&self) -> bool {
        match self {
            SinkSpec::Verify => true,
            #[cfg(feature = "kms")]
            SinkSpec::Kms(o) => o.verify_writeback,
            _ => false,
        }
    }
}

/// Makes the directory a sink writes pictures into: only its last component (like `mkdir`, not
/// `mkdir -p`: a typo in a parent is an error, not a new tree); an existing directory is fine.
pub fn make_output_dir(sink: &'static str, dir: &std::path::Path) -> Result<(), SinkError> {
    let io = |op, error| SinkError::Io {
        sink,
        op,
        path: dir.to_owned(),
        error,
    };
    match std::fs::create_dir(dir) {
        Ok(()) => {
            log::info!("{sink} sink: created directory {}", dir.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if dir.is_dir() {
                Ok(())
            } else {
                Err(io(
                    "using",
                    std::io::Error::other("it exists and is not a directory"),
                ))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(io(
            "creating directory",
            std::io::Error::other("its parent directory does not exist"),
        )),
        Err(e) => Err(io("creating directory", e)),
    }
}

/// Builds a sink from its command-line name (see [`SinkSpec`]).
pub fn open(spec: &str) -> Result<Box<dyn Sink>, SinkError> {
    spec.parse::<SinkSpec>()?.open()
}
