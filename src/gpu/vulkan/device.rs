//! The logical device (wgpu-hal's device): opened on an [`Adapter`] with one compute queue and
//! every extension the import paths can use that the device has, plus the extension entry
//! points and memory properties the rest of the layer reads.

use std::ffi::{c_char, CString};
use std::sync::{Arc, Mutex};

use ash::vk;

use super::conv::{image_flags, ImageSpec};
use super::error::{map_device_err, map_oom_and_lost_err, VulkanError};
use super::import::dma_buf::create_modifier_image;
use super::instance::{select, Adapter, DeviceCaps, ImportPath, Instance};
use super::memory::DeviceObjects;
use crate::buffer::BufferKind;
use crate::format::Modifier;

/// An open logical device with one compute queue, and the extension entry points in use.
pub struct Device {
    pub(crate) device: ash::Device,
    pub(crate) physical: vk::PhysicalDevice,
    /// The compute queue; Vulkan wants its use externally synchronized, so every submission
    /// and idle wait goes through [`Device::submit`] / [`Device::wait_queue_idle`], under
    /// `queue_lock`.
    queue: vk::Queue,
    queue_lock: Mutex<()>,
    pub(crate) queue_family: u32,
    /// The queue's timestamps: `(valid bits, nanoseconds per tick)`, `None` if it has none.
    pub(crate) timestamps: Option<(u32, f64)>,
    pub(crate) mem_props: vk::PhysicalDeviceMemoryProperties,
    pub(crate) host: Option<ash::ext::external_memory_host::Device>,
    pub(crate) mem_fd: Option<ash::khr::external_memory_fd::Device>,
    pub(crate) sem_fd: Option<ash::khr::external_semaphore_fd::Device>,
    caps: DeviceCaps,
    // Destroyed after the device (see Drop).
    instance: Instance,
}

impl Device {
    /// Loads Vulkan and opens the best device (see [`select`]) with every useful extension it
    /// has.
    pub fn open() -> Result<Arc<Device>, VulkanError> {
        Self::open_preferring(&[])
    }

    /// Opens a device for buffers of `kind` (what `explain` checks against): one that has the
    /// extensions of the best path for that kind (else of the next), else the best device.
    pub fn open_for(kind: BufferKind) -> Result<Arc<Device>, VulkanError> {
        Self::open_preferring(ImportPath::for_kind(kind))
    }

    fn open_preferring(paths: &[ImportPath]) -> Result<Arc<Device>, VulkanError> {
        let instance = Instance::load()?;
        let mut adapters = instance.adapters()?;
        let best = paths.iter().find_map(|p| select(&adapters, &[*p]).ok());
        let i = match best {
            Some(i) => i,
            None => select(&adapters, &[])?,
        };
        Self::open_adapter(instance, adapters.swap_remove(i))
    }

    /// Opens `adapter`, one of `instance`'s.
    pub fn open_adapter(instance: Instance, adapter: Adapter) -> Result<Arc<Device>, VulkanError> {
        let caps = adapter.caps().clone();
        let physical = adapter.physical;
        let ash_instance = &instance.instance;
        // SAFETY: the physical device came from this instance.
        let families =
            unsafe { ash_instance.get_physical_device_queue_family_properties(physical) };
        let queue_family = families
            .iter()
            .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
            .ok_or_else(|| VulkanError::unsupported(format!("{}: no compute queue", caps.name)))?
            as u32;
        // Extension names come from the driver's own list, so they hold no NUL; one that did
        // would simply not be enabled.
        let names: Vec<CString> = caps
            .extensions
            .iter()
            .filter_map(|e| CString::new(e.as_str()).ok())
            .collect();
        let name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let priorities = [1.0f32];
        // Rule: one VkDeviceQueueCreateInfo per family, queueCount <= the family's count (1).
        let queue_info = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(queue_family)
            .queue_priorities(&priorities)];
        // Rule: every enabled extension is supported (we enable only listed ones) and its
        // dependencies are enabled or core: external_memory_fd/dma_buf need external_memory
        // (core 1.1); image_drm_format_modifier needs image_format_list (enabled when listed;
        // core in 1.2) and bind_memory2/get_memory_requirements2/sampler_ycbcr (core 1.1).
        let info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queue_info)
            .enabled_extension_names(&name_ptrs);
        // SAFETY: `info` and what it points to live across the call.
        let device =
            unsafe { ash_instance.create_device(physical, &info, None) }.map_err(map_device_err)?;
        // SAFETY: the family was created with one queue.
        let queue = unsafe { device.get_device_queue(queue_family, 0) };
        // SAFETY: plain query on a physical device of this instance.
        let mem_props = unsafe { ash_instance.get_physical_device_memory_properties(physical) };
        // SAFETY: as above.
        let limits = unsafe { ash_instance.get_physical_device_properties(physical) }.limits;
        let bits = families[queue_family as usize].timestamp_valid_bits;
        let timestamps = (bits > 0 && limits.timestamp_period > 0.0)
            .then_some((bits, limits.timestamp_period as f64));
        let has = |e: &str| caps.has(e);
        Ok(Arc::new(Device {
            host: has("VK_EXT_external_memory_host")
                .then(|| ash::ext::external_memory_host::Device::new(ash_instance, &device)),
            mem_fd: has("VK_KHR_external_memory_fd")
                .then(|| ash::khr::external_memory_fd::Device::new(ash_instance, &device)),
            sem_fd: has("VK_KHR_external_semaphore_fd")
                .then(|| ash::khr::external_semaphore_fd::Device::new(ash_instance, &device)),
            device,
            physical,
            queue,
            queue_lock: Mutex::new(()),
            queue_family,
            timestamps,
            mem_props,
            caps,
            instance,
        }))
    }

    /// The device's capabilities.
    pub fn caps(&self) -> &DeviceCaps {
        &self.caps
    }

    /// Submits `submits` to the queue, signalling `fence` when they complete.
    pub(crate) fn submit(
        &self,
        submits: &[vk::SubmitInfo<'_>],
        fence: vk::Fence,
    ) -> Result<(), VulkanError> {
        let _queue = self
            .queue_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: the queue is used under its lock only; the caller passes live handles in
        // submits that outlive the call, command buffers that are not pending and an
        // unsignalled fence (FrameQueue checks both).
        unsafe { self.device.queue_submit(self.queue, submits, fence) }
            .map_err(map_oom_and_lost_err("vkQueueSubmit"))
    }

    /// Waits until the queue has no pending work.
    pub(crate) fn wait_queue_idle(&self) -> Result<(), VulkanError> {
        let _queue = self
            .queue_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: the queue is used under its lock only.
        unsafe { self.device.queue_wait_idle(self.queue) }
            .map_err(map_oom_and_lost_err("vkQueueWaitIdle"))
    }

    /// A memory type in `bits` with all of `want`, preferring one that also has `prefer`.
    pub(crate) fn memory_type(
        &self,
        bits: u32,
        want: vk::MemoryPropertyFlags,
        prefer: vk::MemoryPropertyFlags,
    ) -> Option<u32> {
        let types = &self.mem_props.memory_types[..self.mem_props.memory_type_count as usize];
        let ok = |i: usize, f: vk::MemoryPropertyFlags| {
            bits & (1 << i) != 0 && types[i].property_flags.contains(f)
        };
        (0..types.len())
            .find(|&i| ok(i, want | prefer))
            .or_else(|| (0..types.len()).find(|&i| ok(i, want)))
            .map(|i| i as u32)
    }

    /// The queue family external memory is owned by outside this device.
    pub(crate) fn foreign_family(&self) -> u32 {
        if self.caps.queue_family_foreign {
            vk::QUEUE_FAMILY_FOREIGN_EXT
        } else {
            vk::QUEUE_FAMILY_EXTERNAL
        }
    }

    /// Whether a dma-buf-importable storage image of `format` with `modifier` can be made, and
    /// its largest extent.
    pub(crate) fn image_importable(
        &self,
        format: vk::Format,
        modifier: Modifier,
        flags: vk::ImageCreateFlags,
    ) -> Result<vk::Extent3D, VulkanError> {
        self.instance
            .image_importable(self.physical, format, modifier, flags)
    }

    /// The largest `(width, height)` the driver allows for the image `spec` as a dma-buf
    /// storage image with `modifier`; unsupported if it allows none.
    pub fn image_limits(
        &self,
        spec: &ImageSpec,
        modifier: Modifier,
    ) -> Result<(u32, u32), VulkanError> {
        self.image_importable(spec.format, modifier, image_flags(spec.multi_planar))
            .map(|e| (e.width, e.height))
    }

    /// Whether the driver accepts the image `spec` with `modifier` and these plane layouts
    /// (`(offset, stride)` per memory plane): a real `vkCreateImage` with the explicit layout,
    /// no memory bound, destroyed at once. `explain` searches the alignment a driver wants
    /// with it.
    pub fn check_image_layout(
        self: &Arc<Self>,
        spec: &ImageSpec,
        planes: &[(u64, u32)],
        modifier: Modifier,
    ) -> Result<(), VulkanError> {
        let mut objects = DeviceObjects::new(self);
        create_modifier_image(self, &mut objects, spec, planes, modifier).map(|_| ())
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every object made from the device is owned by values that hold an Arc of it
        // and were dropped first, so none is in use; the device is idle after the wait. The
        // instance field is dropped after this, so the device goes first.
        unsafe {
            let _ = self.device.device_wait_idle();
            self.device.destroy_device(None);
        }
    }
}
