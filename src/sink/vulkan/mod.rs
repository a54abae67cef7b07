//! The Vulkan sink: frames arrive in a Vulkan device as imported memory — dma-bufs as images
//! with explicit DRM-modifier layouts or as buffers, shared memory through
//! `VK_EXT_external_memory_host` — imported once per buffer; compute shaders convert each frame
//! to RGBA and checksum it, and the checksum is compared with the generator's (so `verified`
//! means the GPU read the right pixels). Acquire fences become SYNC_FD semaphores the submission
//! waits on (else the CPU waits); release fences are exported from the submission as sync_files
//! (else the CPU waits for a `VkFence` before giving the buffer back).
//!
//! Names: `vulkan`, `vulkan:png:DIR` (also write the GPU's RGBA as PNG), and the path forcings
//! `vulkan:image`, `vulkan:buffer`, `vulkan:staging`, each optionally followed by `:png:DIR`.
#![allow(unsafe_code)]

pub mod bench;
pub mod checksum;
mod compute;
pub mod device;
pub(crate) mod import;

use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ash::vk;

pub use device::{
    DeviceCaps, FormatSupport, Gpu, ImportPath, ModifierSupport, Vulkan, VulkanError,
};
pub use import::ImportMode;

use self::compute::{Engine, Output, Slot};
use super::{
    wait_acquire, FrameIn, FrameOut, Sink, SinkCaps, SinkError, StreamInfo, ACQUIRE_TIMEOUT,
};
use crate::buffer::Buffer;
use crate::format::FormatModifier;
use crate::format::{Fourcc, FrameLayout, Modifier};
use crate::source::{Pattern, Scene};
use crate::sync::SyncFile;
use device::call;

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
}

/// The Vulkan sink.
pub struct VulkanSink {
    opts: VulkanOptions,
    slots: Vec<Option<Slot>>,
    fence: vk::Fence,
    acquire_sem: vk::Semaphore,
    release_sem: vk::Semaphore,
    pattern: Option<Pattern>,
    scene: Option<(FrameLayout, Scene)>,
    bytes_copied: u64,
    stats: VulkanStats,
    engine: Arc<Engine>,
}

impl VulkanSink {
    /// Opens the best Vulkan device and builds the pipelines.
    pub fn new(opts: VulkanOptions) -> Result<VulkanSink, SinkError> {
        if let Some(dir) = &opts.png_dir {
            std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let gpu = Arc::new(Gpu::open()?);
        let engine = Arc::new(Engine::new(gpu.clone())?);
        let d = &gpu.device;
        // SAFETY: plain object creation; each is destroyed in Drop (or below on failure).
        let fence = unsafe { d.create_fence(&vk::FenceCreateInfo::default(), None) }
            .map_err(call("vkCreateFence"))?;
        let mk_sem = |export: bool| {
            let mut ex = vk::ExportSemaphoreCreateInfo::default()
                .handle_types(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD);
            // Rule: a semaphore whose payload is exported as SYNC_FD is created exportable
            // with that handle type (binary: no VkSemaphoreTypeCreateInfo).
            let mut info = vk::SemaphoreCreateInfo::default();
            if export {
                info = info.push_next(&mut ex);
            }
            // SAFETY: the info chain lives across the call.
            unsafe { d.create_semaphore(&info, None) }.map_err(call("vkCreateSemaphore"))
        };
        let sems = mk_sem(false).and_then(|a| match mk_sem(gpu.caps.sync_fd_export) {
            Ok(r) => Ok((a, r)),
            Err(e) => {
                // SAFETY: unused semaphore.
                unsafe { d.destroy_semaphore(a, None) };
                Err(e)
            }
        });
        let (acquire_sem, release_sem) = match sems {
            Ok(s) => s,
            Err(e) => {
                // SAFETY: unused fence.
                unsafe { d.destroy_fence(fence, None) };
                return Err(e.into());
            }
        };
        if let Err(e) = engine.warm_up(fence) {
            // SAFETY: nothing is pending (warm_up waits for each submission or failed to submit).
            unsafe {
                let _ = d.queue_wait_idle(gpu.queue);
                d.destroy_fence(fence, None);
                d.destroy_semaphore(acquire_sem, None);
                d.destroy_semaphore(release_sem, None);
            }
            return Err(e.into());
        }
        log::info!(
            "vulkan: {} ({}); import paths {:?}; SYNC_FD import {} export {}",
            gpu.caps.name,
            gpu.caps.api_version,
            gpu.caps.import_paths,
            gpu.caps.sync_fd_import,
            gpu.caps.sync_fd_export
        );
        Ok(VulkanSink {
            stats: VulkanStats {
                device: gpu.caps.name.clone(),
                ..Default::default()
            },
            opts,
            slots: Vec::new(),
            fence,
            acquire_sem,
            release_sem,
            pattern: None,
            scene: None,
            bytes_copied: 0,
            engine,
        })
    }

    /// Opens from the text after `vulkan` in a sink name (see [`VulkanOptions::parse`]).
    pub fn open(rest: &str) -> Result<VulkanSink, SinkError> {
        Self::new(VulkanOptions::parse(rest)?)
    }

    /// The device's capabilities.
    pub fn caps_of_device(&self) -> &DeviceCaps {
        self.engine.gpu.caps()
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

    fn expected(&mut self, layout: &FrameLayout, seq: u64) -> Option<(u32, Vec<u32>)> {
        let pattern = self.pattern?;
        let same = matches!(&self.scene, Some((l, _)) if l.fourcc() == layout.fourcc() && l.width() == layout.width() && l.height() == layout.height());
        if !same {
            self.scene = Some((layout.clone(), Scene::new(pattern, layout)));
        }
        let scene = &self.scene.as_ref()?.1;
        let frame = scene.frame(seq);
        let rows = checksum::expected_row_sums(layout, &frame);
        Some((checksum::fold(&rows), rows))
    }

    /// Gives the acquire fence to the submission as a temporary SYNC_FD semaphore payload.
    /// `Ok(None)`: imported; `Ok(Some(fence))`: not imported, wait on the CPU.
    fn import_acquire(&self, fence: SyncFile) -> Result<Option<SyncFile>, SinkError> {
        let gpu = &self.engine.gpu;
        let Some(ext) = gpu.sem_fd.as_ref().filter(|_| gpu.caps.sync_fd_import) else {
            return Ok(Some(fence));
        };
        let raw = fence.into_fd().into_raw_fd();
        // Rule: SYNC_FD payloads are imported only temporarily (VUID-…-handleType-07307);
        // the semaphore has no pending wait (the previous frame's submission completed).
        let info = vk::ImportSemaphoreFdInfoKHR::default()
            .semaphore(self.acquire_sem)
            .flags(vk::SemaphoreImportFlags::TEMPORARY)
            .handle_type(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD)
            .fd(raw);
        // SAFETY: on success the driver owns `raw`; on failure it is still ours.
        match unsafe { ext.import_semaphore_fd(&info) } {
            Ok(()) => Ok(None),
            Err(e) => {
                log::warn!("vulkan: SYNC_FD semaphore import failed ({e}); waiting on the CPU");
                // SAFETY: the import failed, so `raw` is still the fd we took out of the
                // SyncFile and nobody else owns it.
                Ok(Some(SyncFile::from_fd(unsafe {
                    OwnedFd::from_raw_fd(raw)
                })))
            }
        }
    }

    fn export_release(&mut self) -> Result<Option<SyncFile>, SinkError> {
        let gpu = &self.engine.gpu;
        let Some(ext) = gpu.sem_fd.as_ref().filter(|_| gpu.caps.sync_fd_export) else {
            return Ok(None);
        };
        let info = vk::SemaphoreGetFdInfoKHR::default()
            .semaphore(self.release_sem)
            .handle_type(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD);
        // SAFETY: the semaphore was created exportable as SYNC_FD and has a signal operation
        // submitted (this frame's); the returned fd is new and ours.
        let fd = unsafe { ext.get_semaphore_fd(&info) }.map_err(call("vkGetSemaphoreFdKHR"))?;
        if fd < 0 {
            // -1: the payload was already signalled; no fence is needed.
            return Ok(None);
        }
        self.stats.release_fences += 1;
        // SAFETY: vkGetSemaphoreFdKHR returned a new fd that we own.
        Ok(Some(SyncFile::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })))
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
        self.add_slot(id, buffer, Some(display))
    }

    fn add_slot(
        &mut self,
        id: u32,
        buffer: &Buffer,
        display: Option<&Buffer>,
    ) -> Result<(), SinkError> {
        let i = id as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = None;
        let imported = import::import(&self.engine.gpu, buffer, self.opts.mode)?;
        log::info!(
            "vulkan: buffer {id} ({} {} {}x{}): {}",
            buffer.kind(),
            buffer.layout().fourcc(),
            buffer.layout().width(),
            buffer.layout().height(),
            imported.note
        );
        self.stats.imports.push(ImportInfo {
            id,
            path: imported.path,
            note: imported.note.clone(),
        });
        let output = match display {
            Some(d) => {
                if !d.kind().is_dma_buf() {
                    return Err(SinkError::Unsupported(format!(
                        "vulkan: the display buffer for buffer {id} is {}, not a dma-buf",
                        d.kind()
                    )));
                }
                let target = import::import(&self.engine.gpu, d, ImportMode::Buffer)?;
                Output::Display(Box::new(target), d.layout().clone())
            }
            None if self.opts.convert => Output::Rgba,
            None => Output::None,
        };
        self.slots[i] = Some(Slot::new(&self.engine, imported, buffer.layout(), output)?);
        Ok(())
    }
}

impl Drop for VulkanSink {
    fn drop(&mut self) {
        self.slots.clear();
        let d = &self.engine.gpu.device;
        // SAFETY: the queue is idle (slots waited on drop; waited again here), so the fence and
        // semaphores are not in use.
        unsafe {
            let _ = d.queue_wait_idle(self.engine.gpu.queue);
            d.destroy_fence(self.fence, None);
            d.destroy_semaphore(self.acquire_sem, None);
            d.destroy_semaphore(self.release_sem, None);
        }
    }
}

/// The (fourcc, modifier) pairs a device can import: LINEAR for every format (buffer paths),
/// plus every modifier the image path lists.
pub fn format_caps(caps: &DeviceCaps) -> Vec<FormatModifier> {
    let mut out = Vec::new();
    for f in Fourcc::ALL {
        out.push(FormatModifier {
            fourcc: f,
            modifier: Modifier::LINEAR,
        });
        if let Some(s) = caps.format(f) {
            for m in &s.modifiers {
                if m.storage && m.modifier != Modifier::LINEAR {
                    out.push(FormatModifier {
                        fourcc: f,
                        modifier: m.modifier,
                    });
                }
            }
        }
    }
    out
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
            formats: format_caps(self.engine.gpu.caps()),
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
        self.add_slot(id, buffer, None)
    }

    fn remove_buffer(&mut self, id: u32) {
        if let Some(s) = self.slots.get_mut(id as usize) {
            *s = None;
        }
    }

    fn frame(&mut self, frame: FrameIn<'_>) -> Result<FrameOut, SinkError> {
        let id = frame.id as usize;
        if self.slots.get(id).is_none_or(|s| s.is_none()) {
            return Err(SinkError::Unsupported(format!(
                "frame {} names buffer {id}, which was not imported",
                frame.seq
            )));
        }
        // Acquire: on the GPU (semaphore) where possible, else on the CPU now.
        let mut gpu_wait = false;
        let mut watch: Option<SyncFile> = None;
        let staging = self.slots[id]
            .as_ref()
            .is_some_and(|s| s.import.staging.is_some());
        if let Some(fence) = frame.acquire {
            // The staging copy is a CPU read: it needs the fence signalled first.
            let cpu_fence = if staging {
                Some(fence)
            } else {
                // A dup to tell a stuck queue from a slow one if the GPU wait runs long.
                watch = fence
                    .as_fd()
                    .try_clone_to_owned()
                    .map(SyncFile::from_fd)
                    .ok();
                self.import_acquire(fence)?
            };
            match cpu_fence {
                None => {
                    gpu_wait = true;
                    self.stats.gpu_acquire_waits += 1;
                }
                Some(f) => {
                    self.stats.cpu_acquire_waits += 1;
                    if !wait_acquire(Some(f), ACQUIRE_TIMEOUT)? {
                        return Ok(FrameOut {
                            dropped: true,
                            ..Default::default()
                        });
                    }
                }
            }
        }
        let slot = self.slots[id].as_mut().expect("checked above");
        let copied = slot.import.stage()?;
        self.bytes_copied += copied;
        let gpu = self.engine.gpu.clone();
        let d = &gpu.device;
        let cmds = [slot.command_buffer()];
        let wait_sems = [self.acquire_sem];
        let wait_stages = [vk::PipelineStageFlags::COMPUTE_SHADER];
        let export = gpu.caps.sync_fd_export && gpu.sem_fd.is_some();
        let signal = [self.release_sem];
        let mut submit = vk::SubmitInfo::default().command_buffers(&cmds);
        if gpu_wait {
            submit = submit
                .wait_semaphores(&wait_sems)
                .wait_dst_stage_mask(&wait_stages);
        }
        if export {
            submit = submit.signal_semaphores(&signal);
        }
        // Rule: the command buffer is not pending (the last frame's fence was waited for) and
        // the fence is unsignalled (reset after every wait); a waited semaphore has a payload
        // (imported just above).
        // SAFETY: all handles are live and the arrays outlive the call.
        unsafe { d.queue_submit(gpu.queue, &[submit], self.fence) }
            .map_err(call("vkQueueSubmit"))?;
        self.stats.frames += 1;
        // Exporting blocks until the submission's waits are resolved, so export before waiting
        // only when there are none; otherwise after the fence (below), which has a timeout.
        let mut release = None;
        if export && !gpu_wait {
            release = self.export_release()?;
        }
        let layout = self.slots[id].as_ref().expect("checked").layout.clone();
        let expected = self.expected(&layout, frame.seq);
        let limit = ACQUIRE_TIMEOUT + Duration::from_secs(30);
        // SAFETY: the fence is live and was submitted with the work above.
        match unsafe { d.wait_for_fences(&[self.fence], true, limit.as_nanos() as u64) } {
            Ok(()) => {}
            Err(vk::Result::TIMEOUT) => {
                let why = match &watch {
                    Some(w) if !w.is_signalled() => {
                        "its acquire fence never signalled, and the GPU queue is blocked on it"
                            .to_string()
                    }
                    _ => "the GPU did not finish".into(),
                };
                return Err(SinkError::Device(format!(
                    "vulkan: frame {} not done after {limit:?}: {why}",
                    frame.seq
                )));
            }
            Err(e) => {
                return Err(VulkanError::Call {
                    call: "vkWaitForFences",
                    result: e,
                }
                .into())
            }
        }
        // SAFETY: the fence is signalled and nothing waits on it.
        unsafe { d.reset_fences(&[self.fence]) }.map_err(call("vkResetFences"))?;
        if export && gpu_wait {
            release = self.export_release()?;
        }
        let slot = self.slots[id].as_ref().expect("checked");
        let got = slot.checksum();
        self.stats.last_checksum = got;
        let mut verified = false;
        if let Some((want, want_rows)) = expected {
            if got == want {
                verified = true;
                self.stats.verified += 1;
            } else {
                self.stats.mismatches += 1;
                if self.stats.mismatches <= 5 {
                    let rows = slot.row_sums();
                    let first = rows.iter().zip(&want_rows).position(|(a, b)| a != b);
                    let rows0 = layout.plane_rows(0) as usize;
                    let at = match first {
                        Some(g) if g < rows0 => format!("; first differing row: plane 0 row {g}"),
                        Some(g) => format!("; first differing row: plane 1 row {}", g - rows0),
                        None => String::new(),
                    };
                    log::error!(
                        "vulkan: frame {}: GPU checksum 0x{got:08x}, expected 0x{want:08x}{at}",
                        frame.seq
                    );
                }
            }
        }
        #[cfg(feature = "png")]
        if let Some(dir) = &self.opts.png_dir {
            super::png::write_png(
                &dir.join(format!("frame-{:06}.png", frame.seq)),
                layout.width(),
                layout.height(),
                &slot.rgba(),
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
            "vulkan: {} frames on {}, {} verified by GPU checksum, {} mismatched; acquire fences: {} GPU waits, {} CPU waits; {} release fences exported",
            s.frames,
            s.device,
            s.verified,
            s.mismatches,
            s.gpu_acquire_waits,
            s.cpu_acquire_waits,
            s.release_fences
        );
        Ok(())
    }
}

/// What `frameshare probe` shows of Vulkan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VulkanProbe {
    /// Why Vulkan is unusable here, if it is.
    pub error: Option<String>,
    /// Each device and what it can import.
    pub devices: Vec<DeviceCaps>,
}

/// Lists the Vulkan devices and their import capabilities.
pub fn probe() -> VulkanProbe {
    match Vulkan::load().and_then(|v| v.devices()) {
        Ok(d) => VulkanProbe {
            error: None,
            devices: d.into_iter().map(|(_, c)| c).collect(),
        },
        Err(e) => VulkanProbe {
            error: Some(e.to_string()),
            devices: Vec::new(),
        },
    }
}

impl std::fmt::Display for VulkanProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        if let Some(e) = &self.error {
            writeln!(f, "vulkan      none: {e}")?;
        }
        for d in &self.devices {
            writeln!(
                f,
                "vulkan      #{} {} ({}, Vulkan {})",
                d.index, d.name, d.device_type, d.api_version
            )?;
            writeln!(
                f,
                "  import paths    {}",
                d.import_paths
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(" ")
            )?;
            if d.min_host_pointer_alignment > 0 {
                writeln!(
                    f,
                    "  host pointer    minImportedHostPointerAlignment {}",
                    d.min_host_pointer_alignment
                )?;
            }
            writeln!(
                f,
                "  sync_fd         semaphore import {}, export {}; queue family foreign {}",
                yes(d.sync_fd_import),
                yes(d.sync_fd_export),
                yes(d.queue_family_foreign)
            )?;
            writeln!(
                f,
                "  buffer imports  up to {} bytes (maxStorageBufferRange)",
                d.max_storage_buffer_range
            )?;
            if d.formats.is_empty() {
                writeln!(
                    f,
                    "  modifiers       none listed (no VK_EXT_image_drm_format_modifier): dma-bufs go in as buffers, LINEAR only"
                )?;
            }
            for s in &d.formats {
                let mods: Vec<String> = s
                    .modifiers
                    .iter()
                    .map(|m| {
                        format!(
                            "{} ({} plane{}{})",
                            m.modifier,
                            m.planes,
                            if m.planes == 1 { "" } else { "s" },
                            if m.storage { "" } else { ", no storage use" }
                        )
                    })
                    .collect();
                writeln!(
                    f,
                    "  {:<4} as image  {}{}",
                    s.fourcc,
                    if s.vk_formats.is_empty() {
                        "no (buffer path)".to_string()
                    } else if mods.is_empty() {
                        "no modifier listed".to_string()
                    } else {
                        mods.join(", ")
                    },
                    if s.vk_formats.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " [{}{}]",
                            s.vk_formats.join(" + "),
                            if s.multi_planar { ", multi-planar" } else { "" }
                        )
                    }
                )?;
            }
        }
        Ok(())
    }
}

/// Whether a Vulkan ICD is installed (a JSON manifest in the loader's standard places, or
/// `VK_ICD_FILENAMES`/`VK_DRIVER_FILES`). Tests use this to tell "no Vulkan here" (skip) from
/// "Vulkan is here but broken" (fail).
pub fn icd_installed() -> bool {
    if std::env::var_os("VK_ICD_FILENAMES").is_some()
        || std::env::var_os("VK_DRIVER_FILES").is_some()
    {
        return true;
    }
    [
        "/usr/share/vulkan/icd.d",
        "/etc/vulkan/icd.d",
        "/usr/local/share/vulkan/icd.d",
    ]
    .iter()
    .any(|d| {
        std::fs::read_dir(d).is_ok_and(|mut r| {
            r.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
        })
    })
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
}
