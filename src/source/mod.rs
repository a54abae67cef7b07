//! Frame sources: what fills the producer's buffers, behind one [`Source`] trait so that one
//! loop ([`crate::pipeline::produce`]) runs them all. The software generator
//! ([`GeneratorSource`]) draws test patterns that carry their sequence number in their pixels,
//! into buffers of any allocator, and can change its frame size every N frames; the V4L2
//! camera ([`camera::CameraSource`], feature `v4l2`) publishes the camera's own buffers or
//! fills ours.

#[cfg(feature = "v4l2")]
pub mod camera;
pub mod generator;
#[cfg(feature = "v4l2")]
pub mod v4l2;

pub use generator::{Generator, Pattern, Rgb, Scene};

use crate::alloc::{AllocError, Allocator};
use crate::buffer::{Buffer, BufferError};
use crate::bus::{PublishError, Publisher};
use crate::format::{FormatError, FormatModifier, FrameLayout};

/// Errors of sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Allocation failed.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// Bad format or size.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A buffer could not be mapped or accessed.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// The publisher failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The camera failed.
    #[cfg(feature = "v4l2")]
    #[error(transparent)]
    V4l2(#[from] v4l2::V4l2Error),
    /// The acquire fences of the late-fence test mode.
    #[error("acquire fence")]
    Fence(#[source] crate::sync::FenceError),
    /// No format both the source and the consumers take.
    #[error("no path from source to sink: {0}")]
    NoPath(String),
}

/// What a source says of itself to consumers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceInfo {
    /// What it is: `generator`, `v4l2:/dev/video1`, ….
    pub name: String,
    /// The generator pattern (verifying consumers recompute frames from it).
    pub pattern: Option<Pattern>,
}

/// Something that fills frames into a [`Publisher`]'s buffers.
pub trait Source {
    /// What the source is, for the consumers' Hello.
    fn info(&self) -> SourceInfo;

    /// Sets the source up and returns the buffers to publish. `wanted` lists what the
    /// consumers take, best first (empty: anything), for a source that can choose its format.
    fn start(&mut self, wanted: &[FormatModifier]) -> Result<Vec<Buffer>, SourceError>;

    /// New buffers if the source changes format before frame `seq` (a size change), else
    /// `None`. The pipeline retires the old buffers and publishes these.
    fn reconfigure(&mut self, _seq: u64) -> Result<Option<Vec<Buffer>>, SourceError> {
        Ok(None)
    }

    /// Produces frame `seq` into `publisher` (loaning a buffer and filling it, or publishing a
    /// buffer a device filled). `Ok(false)`: the frame was dropped at the source (counted by
    /// the publisher or the source).
    fn next(&mut self, publisher: &mut Publisher, seq: u64) -> Result<bool, SourceError>;

    /// A line for reports: the memory, the device, the mode.
    fn note(&self) -> String;

    /// Pixel bytes the source copied to fill frames (a camera in copy mode; else 0).
    fn bytes_copied(&self) -> u64 {
        0
    }

    /// Frames the source itself dropped (a camera's corrupt frames).
    fn dropped(&self) -> u64 {
        0
    }

    /// Stops the source (a camera stops streaming).
    fn stop(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
}

/// The software generator as a [`Source`]: `count` buffers of `layout` from an allocator,
/// filled on the CPU, and optionally a new frame size every `change_every` frames, cycling
/// through `sizes` (a mid-stream format change).
pub struct GeneratorSource {
    allocator: Box<dyn Allocator>,
    note: String,
    layout: FrameLayout,
    count: usize,
    pattern: Pattern,
    generator: Generator,
    sizes: Vec<(u32, u32)>,
    change_every: Option<u64>,
    stride_align: u32,
    /// Frames go out before they are written (see [`GeneratorSource::with_gated_acquire_fence`]):
    /// the timeline their fences are on, and what each write waits for.
    late_fence: Option<(crate::sync::SwSyncTimeline, WriteGate)>,
}

/// What a frame sent before its pixels waits for before they are written (given its sequence
/// number).
type WriteGate = Box<dyn FnMut(u64) + Send>;

impl GeneratorSource {
    /// A generator of `pattern` frames in `layout`, `count` buffers from `allocator` (`note`
    /// says what the allocator is).
    pub fn new(
        allocator: Box<dyn Allocator>,
        note: String,
        layout: FrameLayout,
        count: usize,
        pattern: Pattern,
    ) -> GeneratorSource {
        GeneratorSource {
            allocator,
            note,
            generator: Generator::new(pattern, &layout),
            layout,
            count,
            pattern,
            sizes: Vec::new(),
            change_every: None,
            stride_align: 256,
            late_fence: None,
        }
    }

    /// Testing aid for fence handling: each frame is sent with a sw_sync acquire fence
    /// *before* its pixels are written; they are written `delay` later, and only then does the
    /// fence signal. A consumer that reads before its acquire fence signals sees stale pixels.
    /// Needs debugfs `sync/sw_sync` (root); `delay` must stay well under the consumers'
    /// acquire timeout (2 s for the CPU sinks).
    pub fn with_late_acquire_fence(self, delay: std::time::Duration) -> Result<Self, SourceError> {
        self.with_gated_acquire_fence(move |_| std::thread::sleep(delay))
    }

    /// The same, with the write of frame `seq` waiting for `gate(seq)` to return instead of a
    /// delay: a test that holds the gate knows the pixels are not written (and the fence has not
    /// signalled) until it lets them be, whatever the machine's load.
    pub fn with_gated_acquire_fence(
        mut self,
        gate: impl FnMut(u64) + Send + 'static,
    ) -> Result<Self, SourceError> {
        let timeline = crate::sync::SwSyncTimeline::open().map_err(SourceError::Fence)?;
        self.late_fence = Some((timeline, Box::new(gate)));
        Ok(self)
    }

    /// Changes the frame size every `every` frames, cycling through `sizes` after the first
    /// layout's (with rows aligned to `stride_align` bytes).
    pub fn with_size_changes(
        mut self,
        every: u64,
        sizes: Vec<(u32, u32)>,
        stride_align: u32,
    ) -> Self {
        self.change_every = (every > 0 && !sizes.is_empty()).then_some(every);
        self.sizes = sizes;
        self.stride_align = stride_align;
        self
    }

    /// The layout frames have now.
    pub fn layout(&self) -> &FrameLayout {
        &self.layout
    }

    fn allocate(&mut self) -> Result<Vec<Buffer>, SourceError> {
        (0..self.count)
            .map(|_| Ok(self.allocator.allocate(&self.layout)?))
            .collect()
    }
}

impl Source for GeneratorSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            name: "generator".into(),
            pattern: Some(self.pattern),
        }
    }

    fn start(&mut self, _wanted: &[FormatModifier]) -> Result<Vec<Buffer>, SourceError> {
        self.allocate()
    }

    fn reconfigure(&mut self, seq: u64) -> Result<Option<Vec<Buffer>>, SourceError> {
        let Some(every) = self.change_every else {
            return Ok(None);
        };
        if seq == 0 || seq % every != 0 {
            return Ok(None);
        }
        let (w, h) = self.sizes[((seq / every - 1) as usize) % self.sizes.len()];
        self.layout = FrameLayout::linear(self.layout.fourcc(), w, h, self.stride_align)?;
        self.generator = Generator::new(self.pattern, &self.layout);
        log::info!("generator: frame {seq} onwards is {w}x{h}");
        self.allocate().map(Some)
    }

    fn next(&mut self, publisher: &mut Publisher, seq: u64) -> Result<bool, SourceError> {
        let Some(mut frame) = publisher.loan()? else {
            return Ok(false);
        };
        let id = frame.id();
        let Some((timeline, gate)) = &mut self.late_fence else {
            {
                let mut access = frame.write()?;
                self.generator.fill(id, &mut access, seq);
            }
            frame.publish(seq)?;
            return Ok(true);
        };
        let fence = timeline
            .create_fence(timeline.value().wrapping_add(1))
            .map_err(SourceError::Fence)?;
        let generator = &mut self.generator;
        let written = frame.publish_then_write(seq, fence, |access| {
            gate(seq);
            generator.fill(id, access, seq);
        });
        // Signal even if the write failed, so no consumer is left waiting; it then sees (and
        // reports) the wrong pixels.
        let signalled = timeline.advance(1).map_err(SourceError::Fence);
        written?;
        signalled?;
        Ok(true)
    }

    fn note(&self) -> String {
        self.note.clone()
    }
}
