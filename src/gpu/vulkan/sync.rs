//! Fences between the GPU and the rest of the system, as binary semaphores with SYNC_FD
//! payloads (`VK_KHR_external_semaphore_fd`): an acquire fence ([`SyncFile`]) imported for a
//! submission to wait on, and a release fence exported from the submission's signal. The fds
//! cross into the driver through `sys::fd::hand_over` (the driver owns an fd only when the
//! import succeeds) and come back as new [`SyncFile`]s.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use ash::vk;

use super::device::Device;
use super::error::{map_external_handle_err, map_oom_err, VulkanError};
use crate::sync::SyncFile;

/// A binary semaphore, destroyed on drop (its owner makes sure no submission uses it).
pub(crate) struct Semaphore {
    device: Arc<Device>,
    handle: vk::Semaphore,
}

impl Semaphore {
    /// A binary semaphore; `exportable`: its payload can be exported as a SYNC_FD.
    pub(crate) fn new(device: &Arc<Device>, exportable: bool) -> Result<Semaphore, VulkanError> {
        let mut export = vk::ExportSemaphoreCreateInfo::default()
            .handle_types(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD);
        // Rule: a semaphore whose payload is exported as SYNC_FD is created exportable with
        // that handle type (binary: no VkSemaphoreTypeCreateInfo).
        let mut info = vk::SemaphoreCreateInfo::default();
        if exportable {
            info = info.push_next(&mut export);
        }
        // SAFETY: the info chain lives across the call.
        let handle = unsafe { device.device.create_semaphore(&info, None) }
            .map_err(map_oom_err("vkCreateSemaphore"))?;
        Ok(Semaphore {
            device: device.clone(),
            handle,
        })
    }

    pub(crate) fn handle(&self) -> vk::Semaphore {
        self.handle
    }

    /// Makes `fence` the semaphore's temporary payload (the next wait on it waits for the
    /// fence, then the semaphore reverts). On failure the fence comes back with the error.
    ///
    /// The caller makes sure no wait on the semaphore is pending.
    pub(crate) fn import_sync_file(&self, fence: SyncFile) -> Result<(), (VulkanError, SyncFile)> {
        let Some(ext) = self.device.sem_fd.as_ref() else {
            let why = VulkanError::unsupported("SYNC_FD import needs VK_KHR_external_semaphore_fd");
            return Err((why, fence));
        };
        crate::sys::fd::hand_over(fence.into_fd(), |raw| {
            // Rule: SYNC_FD payloads are imported only temporarily (VUID-…-handleType-07307);
            // the semaphore has no pending wait (the caller's contract).
            let info = vk::ImportSemaphoreFdInfoKHR::default()
                .semaphore(self.handle)
                .flags(vk::SemaphoreImportFlags::TEMPORARY)
                .handle_type(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD)
                .fd(raw);
            // SAFETY: the info lives across the call; the driver takes `raw` only when the
            // import succeeds (hand_over's contract).
            unsafe { ext.import_semaphore_fd(&info) }
        })
        .map_err(|(result, fd)| {
            let e = map_external_handle_err("vkImportSemaphoreFdKHR")(result);
            (e, SyncFile::from_fd(fd))
        })
    }

    /// Exports the payload of a semaphore created exportable, with a signal operation
    /// submitted or done, as a sync_file (`None`: it has already signalled). Blocks until the
    /// signalling submission's own waits are resolved.
    pub(crate) fn export_sync_file(&self) -> Result<Option<SyncFile>, VulkanError> {
        let ext = self.device.sem_fd.as_ref().ok_or_else(|| {
            VulkanError::unsupported("SYNC_FD export needs VK_KHR_external_semaphore_fd")
        })?;
        let info = vk::SemaphoreGetFdInfoKHR::default()
            .semaphore(self.handle)
            .handle_type(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD);
        // SAFETY: the semaphore was created exportable as SYNC_FD and has a signal operation
        // submitted or done (the caller's contract); the returned fd is new and ours.
        let fd = unsafe { ext.get_semaphore_fd(&info) }.map_err(|e| match e {
            vk::Result::ERROR_TOO_MANY_OBJECTS => VulkanError::OutOfMemory {
                call: "vkGetSemaphoreFdKHR",
                memory: "file descriptors",
            },
            e => map_oom_err("vkGetSemaphoreFdKHR")(e),
        })?;
        if fd < 0 {
            // -1: the payload was already signalled; no fence is needed.
            return Ok(None);
        }
        // SAFETY: vkGetSemaphoreFdKHR returned a new fd that nothing else owns.
        Ok(Some(SyncFile::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })))
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        // SAFETY: the owner (a FrameQueue) has no submission using the semaphore pending when
        // it drops it.
        unsafe { self.device.device.destroy_semaphore(self.handle, None) };
    }
}

/// A fence the queue signals when a submission completes, destroyed on drop.
pub(crate) struct Fence {
    device: Arc<Device>,
    pub(crate) handle: vk::Fence,
}

impl Fence {
    /// An unsignalled fence.
    pub(crate) fn new(device: &Arc<Device>) -> Result<Fence, VulkanError> {
        // SAFETY: plain object creation.
        let handle = unsafe {
            device
                .device
                .create_fence(&vk::FenceCreateInfo::default(), None)
        }
        .map_err(map_oom_err("vkCreateFence"))?;
        Ok(Fence {
            device: device.clone(),
            handle,
        })
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        // SAFETY: the owner (a FrameQueue) has no submission signalling the fence pending when
        // it drops it.
        unsafe { self.device.device.destroy_fence(self.handle, None) };
    }
}
