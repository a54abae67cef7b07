//! The Vulkan sink, a thin [`Sink`] over the GPU layer ([`crate::gpu::vulkan`]): each buffer is
//! imported once ([`Import`]: dma-bufs as images with explicit DRM-modifier layouts or as
//! buffers, shared memory through `VK_EXT_external_memory_host`, else a staging copy) into a
//! [`FrameJob`] whose compute shaders convert each frame to RGBA and checksum it; the checksum is
//! compared with the generator's (so `verified` means the GPU read the right pixels). Acquire
//! fences become SYNC_FD semaphores the submission waits on (else the CPU waits); release fences
//! are exported from the submission (else the CPU waits for the GPU before giving the buffer
//! back).
//!
//! An acquire fence the GPU waits on is watched from the CPU for [`ACQUIRE_TIMEOUT`], as the CPU
//! sinks wait for theirs: one that does not signal in time drops its frame. Its submission
//! cannot be cancelled and holds the queue until the fence signals, so the sink parks that
//! device (and everything on it) and goes on with a fresh one, the buffers imported again; a
//! parked device is let go once its submission completed (or left to the process's end).
//!
//! In front of a KMS plane ([`VulkanSink::frame_into_display`]) nothing waits for the GPU: the
//! conversion's completion is exported as a sync_file for the display to wait on, two
//! submissions may be in flight (one per [`FrameQueue`]: the frame being converted while the
//! last one waits for its flip), and a device that cannot export SYNC_FD falls back to the CPU
//! wait, saying so once.
//!
//! Names: `vulkan`, `vulkan:png:DIR` (also write the GPU's RGBA as PNG), and the path forcings
//! `vulkan:image`, `vulkan:buffer`, `vulkan:staging`, each optionally followed by `:png:DIR`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{
    wait_acquire, FrameIn, FrameOut, Sink, SinkCaps, SinkError, StreamInfo, ACQUIRE_TIMEOUT,
};
use crate::buffer::Buffer;
use crate::format::FrameLayout;
use crate::gpu::vulkan::{
    checksum, Conversion, Device, DeviceCaps, FrameJob, FrameQueue, Import, ImportMode, ImportPath,
    Pipelines, VulkanError,
};
use crate::source::{Pattern, Scene};
use crate::sync::{FenceError, SyncFile};

/// What `vulkan[:…]` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VulkanOptions {
    /// Which import path to use.
    pub mode: ImportMode,
    /// Write the converted frames here as PNG.
    pub png_dir: Option<PathBuf>,
    /// Convert to RGBA on the GPU (always on; the checksum pass alone when off).
    pub convert: bool,
}

impl Default for VulkanOptions {
    fn default() -> Self {
        VulkanOptions {
            mode: ImportMode::Auto,
            png_dir: None,
            convert: true,
        }
    }
}

impl VulkanOptions {
    /// Parses what follows `vulkan` in a sink name: ``, `png:DIR`, `image`, `buffer`,
    /// `staging`, or one of those three followed by `:png:DIR`.
    pub fn parse(rest: &str) -> Result<VulkanOptions, SinkError> {
        let bad = || SinkError::UnknownName(format!("vulkan:{rest}"));
        let mut o = VulkanOptions::default();
        let mut rest = rest;
        for (word, mode) in [
            ("image", ImportMode::Image),
            ("buffer", ImportMode::Buffer),
            ("staging", ImportMode::Staging),
        ] {
            if rest == word || rest.starts_with(&format!("{word}:")) {
                o.mode = mode;
                rest = rest[word.len()..].trim_start_matches(':');
            }
        }
        if let Some(dir) = rest.strip_prefix("png:") {
            if dir.is_empty() {
                return Err(bad());
            }
            if cfg!(not(feature = "png")) {
                return Err(SinkError::NotBuilt("vulkan:png", "png"));
            }
            o.png_dir = Some(dir.into());
        } else if !rest.is_empty() {
            return Err(bad());
        }
        Ok(o)
    }
}

/// One buffer's import, for reports and tests.
#[derive(Debug, Clone)]
pub struct ImportInfo {
    /// Buffer id.
    pub id: u32,
    /// The path used.
    pub path: ImportPath,
    /// Why (the better paths' failures).
    pub note: String,
}

/// What the sink did, for tests and reports.
#[derive(Debug, Clone, Default)]
pub struct VulkanStats {
    /// The device used.
    pub device: String,
    /// Imports made, in order.
    pub imports: Vec<ImportInfo>,
    /// Frames submitted.
    pub frames: u64,
    /// Frames whose GPU checksum matched the generator's.
    pub verified: u64,
    /// Frames whose GPU checksum did not match.
    pub mismatches: u64,
    /// Acquire fences the GPU waited on (imported as SYNC_FD semaphores).
    pub gpu_acquire_waits: u64,
    /// Acquire fences the CPU waited on.
    pub cpu_acquire_waits: u64,
    /// Release fences exported as sync_files.
    pub release_fences: u64,
    /// The last frame's GPU checksum.
    pub last_checksum: u32,
    /// Devices given up because a submission waited on an acquire fence that did not signal
    /// within the acquire timeout (the sink went on with a new one).
    pub devices_replaced: u64,
    /// Frames of [`VulkanSink::frame_into_display`] that found their queue or buffer still
    /// busy and waited (0 when the caller keeps the documented order).
    pub overlap_waits: u64,
}

/// How long the GPU may take for a frame once its acquire fence signalled (llvmpipe under
/// emulation converts 1080p in seconds).
const GPU_TIMEOUT: Duration = Duration::from_secs(30);

/// What the sink keeps on one device: the pipelines, a queue and a job per imported buffer.
struct GpuState {
    // Declared first: jobs go (waiting for their submissions) before the queues and pipelines.
    jobs: Vec<Option<FrameJob>>,
    queue: FrameQueue,
    /// A second queue for [`VulkanSink::frame_into_display`], made at its first frame: frames
    /// alternate between the two, so one conversion can run while the last awaits its flip.
    second: Option<FrameQueue>,
    /// The queue the next overlapped submission goes to (`false`: `queue`, `true`: `second`).
    next_second: bool,
    pipelines: Arc<Pipelines>,
}

impl GpuState {
    /// Opens the best device and sets everything up that does not depend on a buffer: the
    /// pipelines, built and run once (they serve every format).
    fn open() -> Result<GpuState, VulkanError> {
        let device = Device::open()?;
        let pipelines = Pipelines::new(&device)?;
        let mut queue = FrameQueue::new(&device)?;
        pipelines.warm_up(&mut queue)?;
        Ok(GpuState {
            jobs: Vec::new(),
            queue,
            second: None,
            next_second: false,
            pipelines,
        })
    }

    fn device(&self) -> &Arc<Device> {
        self.pipelines.device()
    }

    /// Whether no submission is in flight on either queue (completed ones are taken as done,
    /// which frees their jobs).
    fn is_idle(&mut self) -> Result<bool, VulkanError> {
        let first = self.queue.is_idle()?;
        let second = match &mut self.second {
            Some(q) => q.is_idle()?,
            None => true,
        };
        Ok(first && second)
    }

    /// Waits for everything in flight on both queues.
    fn wait_all(&mut self, timeout: Duration) -> Result<(), VulkanError> {
        self.queue.wait(timeout)?;
        if let Some(q) = &mut self.second {
            q.wait(timeout)?;
        }
        Ok(())
    }
}

/// A device whose queue is held by a submission waiting on an acquire fence that did not
/// signal in time.
struct Parked {
    gpu: GpuState,
    /// The fence it waits on.
    acquire: SyncFile,
}

/// A buffer as the producer added it (kept to import it again on a new device).
struct Added {
    buffer: Buffer,
    /// The display buffer its frames are converted into, if any.
    display: Option<Buffer>,
}

/// What [`VulkanSink::frame_into_display`] did with a frame.
#[derive(Debug)]
pub enum DisplayFrame {
    /// Its acquire fence did not signal in time: nothing was converted.
    Dropped,
    /// The conversion is on the GPU, nothing waited for it: `done` signals once it has written
    /// the display buffer and finished reading the frame (`None`: it already had when asked).
    Submitted {
        /// The conversion's completion, exported from the submission's SYNC_FD semaphore.
        done: Option<SyncFile>,
    },
    /// The conversion was waited for on the CPU and is complete (the device cannot export its
    /// completion as a SYNC_FD, or refused to).
    Completed,
}

/// The Vulkan sink.
pub struct VulkanSink {
    opts: VulkanOptions,
    /// The device in use (`None` once replacing a stuck one failed: every frame fails then).
    gpu: Option<GpuState>,
    caps: DeviceCaps,
    added: Vec<Option<Added>>,
    parked: Vec<Parked>,
    pattern: Option<Pattern>,
    scene: Option<(FrameLayout, Scene)>,
    bytes_copied: u64,
    stats: VulkanStats,
    /// Why [`VulkanSink::frame_into_display`] waits on the CPU, once it knows it must.
    no_overlap: Option<String>,
}

impl VulkanSink {
    /// Opens the best Vulkan device and builds (and runs once) the pipelines.
    pub fn new(opts: VulkanOptions) -> Result<VulkanSink, SinkError> {
        if let Some(dir) = &opts.png_dir {
            super::make_output_dir("vulkan:png", dir)?;
        }
        let gpu = GpuState::open()?;
        let caps = gpu.device().caps().clone();
        log::info!(
            "vulkan: {} ({}); import paths {:?}; SYNC_FD import {} export {}",
            caps.name,
            caps.api_version,
            caps.import_paths,
            caps.sync_fd_import,
            caps.sync_fd_export
        );
        Ok(VulkanSink {
            stats: VulkanStats {
                device: caps.name.clone(),
                ..Default::default()
            },
            opts,
            gpu: Some(gpu),
            caps,
            added: Vec::new(),
            parked: Vec::new(),
            pattern: None,
            scene: None,
            bytes_copied: 0,
            no_overlap: None,
        })
    }

    /// Opens from the text after `vulkan` in a sink name (see [`VulkanOptions::parse`]).
    pub fn open(rest: &str) -> Result<VulkanSink, SinkError> {
        Self::new(VulkanOptions::parse(rest)?)
    }

    /// The device's capabilities.
    pub fn caps_of_device(&self) -> &DeviceCaps {
        &self.caps
    }

    /// Counters so far.
    pub fn stats(&self) -> &VulkanStats {
        &self.stats
    }

    /// Whether frames are checked against a generator pattern.
    pub fn has_pattern(&self) -> bool {
        self.pattern.is_some()
    }

    /// Sets the generator pattern to verify against (what `start` learns from the producer).
    pub fn set_pattern(&mut self, pattern: Option<Pattern>) {
        self.pattern = pattern;
    }

    /// Imports `buffer` as buffer `id`; its frames are converted into `display` (an XR24
    /// dma-buf of the same size, written in place by the shader) instead of host memory.
    /// The conversion stage in front of a KMS plane that cannot scan `buffer`'s format out.
    pub fn add_buffer_into(
        &mut self,
        id: u32,
        buffer: &Buffer,
        display: &Buffer,
    ) -> Result<(), SinkError> {
        self.add(id, buffer, Some(display))
    }

    fn add(&mut self, id: u32, buffer: &Buffer, display: Option<&Buffer>) -> Result<(), SinkError> {
        let i = id as usize;
        if self.added.len() <= i {
            self.added.resize_with(i + 1, || None);
        }
        self.added[i] = None;
        if let Some(d) = display.filter(|d| !d.kind().is_dma_buf()) {
            return Err(SinkError::Unsupported(format!(
                "vulkan: the display buffer for buffer {id} is {}, not a dma-buf",
                d.kind()
            )));
        }
        let gpu = self.gpu.as_mut().ok_or_else(no_device)?;
        let conversion = if self.opts.convert {
            Conversion::Rgba
        } else {
            Conversion::ChecksumOnly
        };
        let (job, info) = gpu.add_job(id, buffer, display, self.opts.mode, conversion)?;
        self.stats.imports.push(info);
        self.added[i] = Some(Added {
            buffer: buffer.clone(),
            display: display.cloned(),
        });
        place(&mut gpu.jobs, id, job);
        Ok(())
    }

    /// The current device's queue is held by a submission waiting on `acquire`, which did not
    /// signal in time: park that device and go on with a new one, every buffer imported again.
    fn replace_stuck_device(&mut self, acquire: SyncFile) -> Result<(), SinkError> {
        log::warn!(
            "vulkan: an acquire fence did not signal within {ACQUIRE_TIMEOUT:?}; its submission \
             holds the GPU queue, so the sink goes on with a new device"
        );
        if let Some(gpu) = self.gpu.take() {
            self.parked.push(Parked { gpu, acquire });
        }
        let mut gpu = GpuState::open()?;
        self.stats.devices_replaced += 1;
        let conversion = || {
            if self.opts.convert {
                Conversion::Rgba
            } else {
                Conversion::ChecksumOnly
            }
        };
        for (id, a) in self.added.iter().enumerate() {
            let Some(a) = a else { continue };
            let (job, info) = gpu.add_job(
                id as u32,
                &a.buffer,
                a.display.as_ref(),
                self.opts.mode,
                conversion(),
            )?;
            self.stats.imports.push(info);
            place(&mut gpu.jobs, id as u32, job);
        }
        self.gpu = Some(gpu);
        Ok(())
    }

    /// Converts a frame into its display buffer (a buffer added with
    /// [`VulkanSink::add_buffer_into`]) for a KMS plane, without waiting for the GPU: the
    /// submission's completion comes back as a sync_file for the commit's `IN_FENCE_FD`. The
    /// frame's GPU checksum is not read (that would wait): the display path verifies through
    /// writeback, which goes through [`Sink::frame`] instead.
    ///
    /// The caller keeps the display buffer's rule: a frame of buffer `id` arrives only once
    /// display buffer `id` left the screen (its producer waited for the release fence that
    /// says so), and the conversion of the frame before has been committed. So when frames
    /// alternate between the two queues, the one taken was last used two frames ago, whose
    /// flip (and so, whose conversion) has completed: no wait. Where the device cannot export
    /// SYNC_FD, this is [`Sink::frame`] (the CPU waits), and the first such frame says why.
    pub fn frame_into_display(&mut self, frame: FrameIn<'_>) -> Result<DisplayFrame, SinkError> {
        if self.no_overlap.is_none() && !self.caps.sync_fd_export {
            self.overlap_off("the device cannot export SYNC_FD semaphores".into());
        }
        if self.no_overlap.is_some() {
            let out = self.frame(frame)?;
            return Ok(if out.dropped {
                DisplayFrame::Dropped
            } else {
                DisplayFrame::Completed
            });
        }
        self.release_parked();
        let gpu = self.gpu.as_mut().ok_or_else(no_device)?;
        if gpu.second.is_none() {
            gpu.second = Some(FrameQueue::new(gpu.device())?);
        }
        // Takes completed submissions as done (freeing their jobs); nothing waits here.
        gpu.is_idle()?;
        let GpuState {
            jobs,
            queue,
            second,
            next_second,
            ..
        } = gpu;
        let job = jobs
            .get_mut(frame.id as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| not_imported(&frame))?;
        let Some(second) = second.as_mut() else {
            return Err(no_device()); // (made above)
        };
        let (queue, other) = if *next_second {
            (second, queue)
        } else {
            (queue, second)
        };
        if job.is_busy() || !queue.is_idle()? {
            // Not expected (see the docs): a caller that broke the order gets correctness
            // from a wait, counted as one.
            log::debug!(
                "vulkan: frame {}: the queue or buffer {} is still busy; waiting",
                frame.seq,
                frame.id
            );
            queue.wait(GPU_TIMEOUT)?;
            other.wait(GPU_TIMEOUT)?;
            self.stats.overlap_waits += 1;
        }
        let watch = match acquire(queue, job, frame.acquire, &mut self.stats)? {
            Acquired::Ready => None,
            Acquired::OnGpu(watch) => Some(watch),
            Acquired::TimedOut => return Ok(DisplayFrame::Dropped),
        };
        self.bytes_copied += job.stage()?;
        queue.submit(job)?;
        *next_second = !*next_second;
        self.stats.frames += 1;
        if let Some(w) = watch {
            // The producer's fence, not the GPU: exporting would block until it signals.
            match w.wait(ACQUIRE_TIMEOUT) {
                Ok(()) => queue.acquire_signalled(),
                Err(FenceError::Timeout(_)) => {
                    self.replace_stuck_device(w)?;
                    return Ok(DisplayFrame::Dropped);
                }
                Err(e) => return Err(e.into()),
            }
        }
        match queue.release_fence() {
            Ok(done) => {
                self.stats.release_fences += done.is_some() as u64;
                Ok(DisplayFrame::Submitted { done })
            }
            Err(e) => {
                queue.wait(GPU_TIMEOUT)?;
                self.overlap_off(format!("exporting the conversion's SYNC_FD failed: {e}"));
                Ok(DisplayFrame::Completed)
            }
        }
    }

    /// From now on [`VulkanSink::frame_into_display`] waits on the CPU, because of `why`
    /// (said once).
    fn overlap_off(&mut self, why: String) {
        log::info!(
            "vulkan: {why}; each conversion for the display is waited for on the CPU before \
             its commit"
        );
        if let Some(gpu) = &mut self.gpu {
            // Sink::frame uses the first queue alone: nothing may stay in flight on either.
            if let Err(e) = gpu.wait_all(GPU_TIMEOUT) {
                log::warn!("vulkan: {e}");
            }
        }
        self.no_overlap = Some(why);
    }

    /// Lets go of parked devices whose submissions completed.
    fn release_parked(&mut self) {
        self.parked.retain_mut(|p| match p.gpu.is_idle() {
            Ok(idle) => !idle,
            // A lost device has nothing pending either.
            Err(e) => {
                log::warn!("vulkan: a parked device: {e}");
                !e.is_device_lost()
            }
        });
    }
}

impl GpuState {
    /// Imports `buffer` (and `display`, its conversion target) and records its job.
    fn add_job(
        &mut self,
        id: u32,
        buffer: &Buffer,
        display: Option<&Buffer>,
        mode: ImportMode,
        conversion: Conversion,
    ) -> Result<(FrameJob, ImportInfo), SinkError> {
        // The old job (and its import) goes first: a buffer is imported once at a time.
        if let Some(j) = self.jobs.get_mut(id as usize) {
            *j = None;
        }
        let device = self.device().clone();
        let import = Import::new(&device, buffer, mode)?;
        let layout = buffer.layout();
        log::info!(
            "vulkan: buffer {id} ({} {} {}x{}): {}",
            buffer.kind(),
            layout.fourcc(),
            layout.width(),
            layout.height(),
            import.note()
        );
        let info = ImportInfo {
            id,
            path: import.path(),
            note: import.note().to_owned(),
        };
        let conversion = match display {
            Some(d) => Conversion::IntoDisplay {
                target: Box::new(Import::new(&device, d, ImportMode::Buffer)?),
                layout: d.layout().clone(),
            },
            None => conversion,
        };
        let job = FrameJob::new(&self.pipelines, import, layout, conversion)?;
        Ok((job, info))
    }
}

/// Puts `job` in slot `id`.
fn place(jobs: &mut Vec<Option<FrameJob>>, id: u32, job: FrameJob) {
    let i = id as usize;
    if jobs.len() <= i {
        jobs.resize_with(i + 1, || None);
    }
    jobs[i] = Some(job);
}

/// The error once the sink has no device (replacing a stuck one failed).
fn not_imported(frame: &FrameIn<'_>) -> SinkError {
    SinkError::Unsupported(format!(
        "frame {} names buffer {}, which was not imported",
        frame.seq, frame.id
    ))
}

fn no_device() -> SinkError {
    SinkError::Unsupported("vulkan: no device (replacing a stuck one failed)".into())
}

/// The generator's checksum and row sums for frame `seq` of `pattern`, with the scene cached
/// per layout.
fn expected(
    scene: &mut Option<(FrameLayout, Scene)>,
    pattern: Pattern,
    layout: &FrameLayout,
    seq: u64,
) -> (u32, Vec<u32>) {
    let same = matches!(&*scene, Some((l, _)) if l.fourcc() == layout.fourcc() && l.width() == layout.width() && l.height() == layout.height());
    if !same {
        *scene = None;
    }
    let (_, scene) = scene.get_or_insert_with(|| (layout.clone(), Scene::new(pattern, layout)));
    let frame = scene.frame(seq);
    let rows = checksum::row_sums(layout, |p, r| frame.row(p, r));
    (checksum::fold(&rows), rows)
}

impl Drop for VulkanSink {
    fn drop(&mut self) {
        self.release_parked();
        for p in self.parked.drain(..) {
            if p.acquire.is_signalled() {
                drop(p); // completes now: dropping waits for it
            } else {
                // Dropping would wait for a fence that may never signal: leave the device (and
                // what it holds) to the end of the process.
                log::warn!(
                    "vulkan: a device still waits on an acquire fence that never signalled; \
                     leaving it to the end of the process"
                );
                std::mem::forget(p);
            }
        }
    }
}

impl Sink for VulkanSink {
    fn name(&self) -> String {
        match &self.opts.png_dir {
            Some(d) => format!("vulkan:png:{}", d.display()),
            None => "vulkan".into(),
        }
    }

    fn caps(&self) -> SinkCaps {
        SinkCaps {
            formats: self.caps.importable_formats(),
            ..SinkCaps::default()
        }
    }

    fn start(&mut self, stream: &StreamInfo) -> Result<(), SinkError> {
        match stream.require_pattern("vulkan") {
            Ok(p) => self.pattern = Some(p),
            Err(e) => log::warn!("vulkan: frames will not be verified: {e}"),
        }
        Ok(())
    }

    fn add_buffer(&mut self, id: u32, buffer: &Buffer) -> Result<(), SinkError> {
        self.add(id, buffer, None)
    }

    fn remove_buffer(&mut self, id: u32) {
        if let Some(j) = self.gpu.as_mut().and_then(|g| g.jobs.get_mut(id as usize)) {
            *j = None;
        }
        if let Some(a) = self.added.get_mut(id as usize) {
            *a = None;
        }
    }

    fn frame(&mut self, frame: FrameIn<'_>) -> Result<FrameOut, SinkError> {
        self.release_parked();
        let gpu = self.gpu.as_mut().ok_or_else(no_device)?;
        let GpuState { jobs, queue, .. } = gpu;
        let job = jobs
            .get_mut(frame.id as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| not_imported(&frame))?;
        let watch = match acquire(queue, job, frame.acquire, &mut self.stats)? {
            Acquired::Ready => None,
            Acquired::OnGpu(watch) => Some(watch),
            Acquired::TimedOut => return Ok(dropped()),
        };
        self.bytes_copied += job.stage()?;
        queue.submit(job)?;
        self.stats.frames += 1;
        // Exporting waits for the submission's waits, so export now only when it has none.
        let mut release = None;
        if watch.is_none() {
            release = queue.release_fence()?;
        }
        let layout = job.layout().clone();
        let want = self
            .pattern
            .map(|p| expected(&mut self.scene, p, &layout, frame.seq));
        if let Some(w) = watch {
            match w.wait(ACQUIRE_TIMEOUT) {
                Ok(()) => {}
                Err(FenceError::Timeout(_)) => {
                    self.replace_stuck_device(w)?;
                    return Ok(dropped());
                }
                Err(e) => return Err(e.into()),
            }
        }
        queue.wait(GPU_TIMEOUT)?;
        if release.is_none() {
            release = queue.release_fence()?;
        }
        if release.is_some() {
            self.stats.release_fences += 1;
        }
        let in_flight = VulkanError::InFlight {
            what: "the frame's checksum",
        };
        let got = job.checksum().ok_or(in_flight)?;
        self.stats.last_checksum = got;
        let verified = want.is_some_and(|want| check(&mut self.stats, job, frame.seq, got, want));
        #[cfg(feature = "png")]
        if let (Some(dir), Some(rgba)) = (&self.opts.png_dir, job.rgba()) {
            super::png::write_png(
                &dir.join(format!("frame-{:06}.png", frame.seq)),
                layout.width(),
                layout.height(),
                &rgba,
            )?;
        }
        Ok(FrameOut {
            verified,
            dropped: false,
            release,
        })
    }

    fn bytes_copied(&self) -> u64 {
        self.bytes_copied
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        let s = &self.stats;
        log::info!(
            "vulkan: {} frames on {}, {} verified by GPU checksum, {} mismatched; acquire fences: {} GPU waits, {} CPU waits; {} release fences exported; {} devices replaced",
            s.frames,
            s.device,
            s.verified,
            s.mismatches,
            s.gpu_acquire_waits,
            s.cpu_acquire_waits,
            s.release_fences,
            s.devices_replaced
        );
        Ok(())
    }
}

/// How a frame's acquire fence was honoured.
enum Acquired {
    /// It has signalled (or there was none).
    Ready,
    /// The submission will wait for it on the GPU; this dup of it is watched from the CPU.
    OnGpu(SyncFile),
    /// It did not signal within [`ACQUIRE_TIMEOUT`]: the frame is dropped.
    TimedOut,
}

/// Honours `fence` for `job`'s next submission: on the GPU (a semaphore) where possible,
/// watched from the CPU; else on the CPU now — always for the staging copy (a CPU read) and for
/// a fence that cannot be watched.
fn acquire(
    queue: &mut FrameQueue,
    job: &FrameJob,
    fence: Option<SyncFile>,
    stats: &mut VulkanStats,
) -> Result<Acquired, SinkError> {
    let Some(fence) = fence else {
        return Ok(Acquired::Ready);
    };
    let on_cpu = match fence.try_clone() {
        Ok(dup) if !job.import().copies() => match queue.wait_on_gpu(fence) {
            Ok(()) => {
                stats.gpu_acquire_waits += 1;
                return Ok(Acquired::OnGpu(dup));
            }
            Err(fence) => fence,
        },
        _ => fence,
    };
    stats.cpu_acquire_waits += 1;
    Ok(if wait_acquire(Some(on_cpu), ACQUIRE_TIMEOUT)? {
        Acquired::Ready
    } else {
        Acquired::TimedOut
    })
}

/// Compares the GPU's checksum `got` of frame `seq` with the generator's `(checksum, row sums)`
/// and counts the outcome; the first mismatches are logged with the first row that differs.
fn check(
    stats: &mut VulkanStats,
    job: &FrameJob,
    seq: u64,
    got: u32,
    want: (u32, Vec<u32>),
) -> bool {
    let (want, want_rows) = want;
    if got == want {
        stats.verified += 1;
        return true;
    }
    stats.mismatches += 1;
    if stats.mismatches <= 5 {
        let rows = job.row_sums().unwrap_or_default();
        log::error!(
            "vulkan: frame {seq}: GPU checksum 0x{got:08x}, expected 0x{want:08x}{}",
            first_difference(job.layout(), &rows, &want_rows)
        );
    }
    false
}

/// A frame that could not be used.
fn dropped() -> FrameOut {
    FrameOut {
        dropped: true,
        ..Default::default()
    }
}

/// `; first differing row: plane P row R` for the first row whose sums differ, if any.
fn first_difference(layout: &FrameLayout, got: &[u32], want: &[u32]) -> String {
    let rows0 = layout.plane_rows(0) as usize;
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(g) if g < rows0 => format!("; first differing row: plane 0 row {g}"),
        Some(g) if layout.planes().len() > 2 && g >= rows0 + layout.plane_rows(1) as usize => {
            format!(
                "; first differing row: plane 2 row {}",
                g - rows0 - layout.plane_rows(1) as usize
            )
        }
        Some(g) => format!("; first differing row: plane 1 row {}", g - rows0),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(VulkanOptions::parse("").unwrap(), VulkanOptions::default());
        let o = VulkanOptions::parse("png:/tmp/x").unwrap();
        assert_eq!(o.png_dir, Some("/tmp/x".into()));
        assert_eq!(o.mode, ImportMode::Auto);
        let o = VulkanOptions::parse("buffer:png:out").unwrap();
        assert_eq!(
            (o.mode, o.png_dir),
            (ImportMode::Buffer, Some("out".into()))
        );
        assert_eq!(
            VulkanOptions::parse("image").unwrap().mode,
            ImportMode::Image
        );
        assert_eq!(
            VulkanOptions::parse("staging").unwrap().mode,
            ImportMode::Staging
        );
        assert!(VulkanOptions::parse("png:").is_err());
        assert!(VulkanOptions::parse("bogus").is_err());
    }

    #[test]
    fn expected_checksums_match_a_direct_sum_of_the_generated_rows() {
        use crate::format::Fourcc;
        let mut cache = None;
        for fourcc in [
            Fourcc::XR24,
            Fourcc::RG24,
            Fourcc::YUYV,
            Fourcc::NV12,
            Fourcc::YU12,
            Fourcc::P010,
        ] {
            let layout = FrameLayout::linear(fourcc, 66, 20, 64).unwrap();
            let scene = Scene::new(Pattern::MovingBox, &layout);
            let frame = scene.frame(5);
            let mut direct = Vec::new();
            for p in 0..layout.planes().len() {
                for r in 0..layout.plane_rows(p) {
                    direct.push(checksum::row_sum(frame.row(p, r)));
                }
            }
            let (sum, rows) = expected(&mut cache, Pattern::MovingBox, &layout, 5);
            assert_eq!(rows, direct, "{fourcc}");
            assert_eq!(sum, checksum::fold(&direct), "{fourcc}");
            let (next, _) = expected(&mut cache, Pattern::MovingBox, &layout, 6);
            assert_ne!(sum, next, "{fourcc}: consecutive frames differ");
        }
    }
}
