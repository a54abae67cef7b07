//! [`FrameQueue`]: submitting jobs one frame at a time, with the frame's fences — the acquire
//! fence as a SYNC_FD semaphore the submission waits on (where the device can import one), the
//! release fence exported from the semaphore it signals (where the device can export one), and
//! a `VkFence` the CPU waits on before it reads the job's outputs.
//!
//! A submission that waits on an acquire fence that never signals never completes, and nothing
//! in Vulkan cancels it: the queue, and every object it uses, stays busy until the fence
//! signals (or its timeline is closed). [`FrameQueue::is_idle`] tells; a caller that cannot wait
//! that long parks the device and everything on it rather than dropping them (dropping waits
//! for the queue), as the Vulkan sink does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ash::vk;

use super::device::Device;
use super::error::{map_oom_and_lost_err, map_oom_err, map_wait_err, VulkanError};
use super::job::FrameJob;
use super::sync::{Fence, Semaphore};
use crate::sync::SyncFile;

/// A submission not yet seen complete.
struct InFlight {
    /// The job's busy flag, cleared on completion.
    job: Arc<AtomicBool>,
    /// Whether it waits on an imported acquire fence.
    waits_on_acquire: bool,
}

/// A device's queue, one frame in flight at a time (see the module docs).
pub struct FrameQueue {
    // Declared first: dropped (waiting for the queue) before the sync objects it uses.
    in_flight: Option<InFlight>,
    /// The next submission waits on `acquire` (a payload was imported).
    acquire_armed: bool,
    /// The last submission signalled `release` and its payload was not exported yet.
    release_unexported: bool,
    fence: Fence,
    acquire: Semaphore,
    release: Semaphore,
    device: Arc<Device>,
}

impl FrameQueue {
    /// A queue on `device`, with its fence and semaphores.
    pub fn new(device: &Arc<Device>) -> Result<FrameQueue, VulkanError> {
        let caps = device.caps();
        Ok(FrameQueue {
            in_flight: None,
            acquire_armed: false,
            release_unexported: false,
            fence: Fence::new(device)?,
            acquire: Semaphore::new(device, false)?,
            release: Semaphore::new(device, caps.sync_fd_export && device.sem_fd.is_some())?,
            device: device.clone(),
        })
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Whether submissions signal a release fence ([`FrameQueue::release_fence`]).
    pub fn exports_release(&self) -> bool {
        self.device.caps().sync_fd_export && self.device.sem_fd.is_some()
    }

    /// Makes the next submission wait, on the GPU, for `fence`. `Err` gives the fence back
    /// when the device cannot import it (no SYNC_FD import, the driver refused it, or a
    /// submission is still in flight): wait for it on the CPU instead.
    pub fn wait_on_gpu(&mut self, fence: SyncFile) -> Result<(), SyncFile> {
        if !self.device.caps().sync_fd_import || self.in_flight.is_some() {
            return Err(fence);
        }
        match self.acquire.import_sync_file(fence) {
            Ok(()) => {
                self.acquire_armed = true;
                Ok(())
            }
            Err((e, fence)) => {
                log::warn!("vulkan: SYNC_FD semaphore import failed ({e}); waiting on the CPU");
                Err(fence)
            }
        }
    }

    /// Submits `job`'s commands (waiting for the acquire fence given to
    /// [`FrameQueue::wait_on_gpu`], if any). One submission at a time: wait for the last one
    /// first.
    pub fn submit(&mut self, job: &FrameJob) -> Result<(), VulkanError> {
        if self.in_flight.is_some() {
            return Err(VulkanError::InFlight { what: "the queue" });
        }
        if !Arc::ptr_eq(&job.pipelines.device, &self.device) {
            return Err(VulkanError::unsupported(
                "the job belongs to another device",
            ));
        }
        if job.busy.swap(true, Ordering::AcqRel) {
            return Err(VulkanError::InFlight { what: "the job" });
        }
        if self.release_unexported {
            // The binary semaphore must be unsignalled before it is signalled again: take the
            // last (completed) submission's payload, which nobody asked for.
            if let Err(e) = self.release.export_sync_file() {
                job.busy.store(false, Ordering::Release);
                return Err(e);
            }
            self.release_unexported = false;
        }
        let cmds = [job.command_buffer()];
        let wait = [self.acquire.handle()];
        let wait_stages = [vk::PipelineStageFlags::COMPUTE_SHADER];
        let signal = [self.release.handle()];
        let mut submit = vk::SubmitInfo::default().command_buffers(&cmds);
        if self.acquire_armed {
            submit = submit
                .wait_semaphores(&wait)
                .wait_dst_stage_mask(&wait_stages);
        }
        let exports = self.exports_release();
        if exports {
            submit = submit.signal_semaphores(&signal);
        }
        // Rule: the command buffer is not pending (its busy flag was clear) and the fence is
        // unsignalled (reset after every completed wait); a waited semaphore has a payload
        // (imported by wait_on_gpu); a signalled one is unsignalled (exported above).
        if let Err(e) = self.device.submit(&[submit], self.fence.handle) {
            job.busy.store(false, Ordering::Release);
            return Err(e);
        }
        self.in_flight = Some(InFlight {
            job: job.busy.clone(),
            waits_on_acquire: self.acquire_armed,
        });
        self.acquire_armed = false;
        self.release_unexported = exports;
        Ok(())
    }

    /// The release fence of the last submission: it signals when the GPU is done with the
    /// frame's buffer (`None`: no release fence, or it has already signalled). Once per
    /// submission. While a submission that waits on an acquire fence is in flight this would
    /// block until that fence signals, so it is refused then: call it after
    /// [`FrameQueue::wait`].
    pub fn release_fence(&mut self) -> Result<Option<SyncFile>, VulkanError> {
        if !self.release_unexported {
            return Ok(None);
        }
        if self.in_flight.as_ref().is_some_and(|f| f.waits_on_acquire) {
            return Err(VulkanError::InFlight {
                what: "the release fence (its submission waits on an acquire fence)",
            });
        }
        self.release_unexported = false;
        self.release.export_sync_file()
    }

    /// The acquire fence the submission in flight waits on has signalled (its caller watched
    /// it): exporting the release fence no longer blocks ([`FrameQueue::release_fence`]).
    pub fn acquire_signalled(&mut self) {
        if let Some(f) = &mut self.in_flight {
            f.waits_on_acquire = false;
        }
    }

    /// Waits for the submission in flight to complete, at most `timeout` (none in flight: at
    /// once). On a timeout it stays in flight.
    pub fn wait(&mut self, timeout: Duration) -> Result<(), VulkanError> {
        if self.in_flight.is_none() {
            return Ok(());
        }
        let ns = timeout.as_nanos().min(u64::MAX as u128) as u64;
        // SAFETY: the fence is live and was submitted with the work in flight.
        unsafe {
            self.device
                .device
                .wait_for_fences(&[self.fence.handle], true, ns)
        }
        .map_err(map_wait_err("a GPU submission to complete", timeout))?;
        self.completed()
    }

    /// Whether no submission is in flight (one that completed is taken as done, without
    /// waiting).
    pub fn is_idle(&mut self) -> Result<bool, VulkanError> {
        if self.in_flight.is_none() {
            return Ok(true);
        }
        // SAFETY: the fence is live.
        let done = unsafe { self.device.device.get_fence_status(self.fence.handle) }
            .map_err(map_oom_and_lost_err("vkGetFenceStatus"))?;
        if done {
            self.completed()?;
        }
        Ok(done)
    }

    /// The submission in flight completed: reset the fence, free the job.
    fn completed(&mut self) -> Result<(), VulkanError> {
        // SAFETY: the fence is signalled and nothing waits on it.
        unsafe { self.device.device.reset_fences(&[self.fence.handle]) }
            .map_err(map_oom_err("vkResetFences"))?;
        if let Some(f) = self.in_flight.take() {
            f.job.store(false, Ordering::Release);
        }
        Ok(())
    }
}

impl Drop for FrameQueue {
    fn drop(&mut self) {
        if self.in_flight.is_some() {
            // The fence and semaphores are in use until the submission completes.
            let _ = self.device.wait_queue_idle();
        }
    }
}
