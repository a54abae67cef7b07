//! Device memory and the objects bound to it: [`DeviceObjects`], the owner (and, half-built,
//! the guard) of what an import or a job made, destroyed in reverse order; [`allocate_and_bind`],
//! the one place memory is allocated — new, or imported from a dma-buf or a host mapping — and
//! bound to a buffer or image; and the buffers built on it (storage, host-visible,
//! device-local).

use std::ffi::c_void;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

use ash::vk;

use super::device::Device;
use super::error::{map_external_handle_err, map_oom_err, VulkanError};

/// A Vulkan object this crate made and must destroy.
#[derive(Debug, Clone, Copy)]
pub(crate) enum VkObject {
    Buffer(vk::Buffer),
    Image(vk::Image),
    View(vk::ImageView),
    Memory(vk::DeviceMemory),
}

/// Objects owned together, destroyed in reverse order of creation when dropped — the guard that
/// undoes a half-built import, and the owner of a finished one.
pub(crate) struct DeviceObjects {
    device: Arc<Device>,
    list: Vec<VkObject>,
}

impl DeviceObjects {
    pub(crate) fn new(device: &Arc<Device>) -> Self {
        DeviceObjects {
            device: device.clone(),
            list: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, o: VkObject) {
        self.list.push(o);
    }
}

impl Drop for DeviceObjects {
    fn drop(&mut self) {
        let d = &self.device.device;
        for o in self.list.drain(..).rev() {
            // SAFETY: each object was made on this device, is destroyed once (drained), after
            // everything made later (views before images, buffers/images before memory), and
            // no submission using it is pending (jobs wait for their submissions before their
            // imports and outputs drop).
            unsafe {
                match o {
                    VkObject::Buffer(b) => d.destroy_buffer(b, None),
                    VkObject::Image(i) => d.destroy_image(i, None),
                    VkObject::View(v) => d.destroy_image_view(v, None),
                    VkObject::Memory(m) => d.free_memory(m, None),
                }
            }
        }
    }
}

/// What memory is bound to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BindTarget {
    Buffer(vk::Buffer),
    Image(vk::Image),
}

impl BindTarget {
    /// The target's memory requirements, and whether the driver wants a dedicated allocation.
    fn requirements(self, device: &Device) -> (vk::MemoryRequirements, bool) {
        let mut dedicated = vk::MemoryDedicatedRequirements::default();
        let mut reqs = vk::MemoryRequirements2::default().push_next(&mut dedicated);
        let d = &device.device;
        match self {
            BindTarget::Buffer(b) => {
                let info = vk::BufferMemoryRequirementsInfo2::default().buffer(b);
                // SAFETY: a live buffer of this device; the out chain lives across the call.
                unsafe { d.get_buffer_memory_requirements2(&info, &mut reqs) }
            }
            BindTarget::Image(i) => {
                let info = vk::ImageMemoryRequirementsInfo2::default().image(i);
                // SAFETY: a live, non-disjoint image of this device; the out chain lives
                // across the call.
                unsafe { d.get_image_memory_requirements2(&info, &mut reqs) }
            }
        }
        let requirements = reqs.memory_requirements;
        (
            requirements,
            dedicated.requires_dedicated_allocation == vk::TRUE,
        )
    }

    /// Whether the driver wants the target to have memory of its own.
    pub(crate) fn wants_dedicated(self, device: &Device) -> bool {
        self.requirements(device).1
    }

    /// Binds `memory` at offset 0.
    pub(crate) fn bind(self, device: &Device, memory: vk::DeviceMemory) -> Result<(), VulkanError> {
        let d = &device.device;
        match self {
            // SAFETY: the buffer is unbound; callers pass memory at least as large as its
            // requirements, of a type they allow (see allocate_and_bind).
            BindTarget::Buffer(b) => unsafe { d.bind_buffer_memory(b, memory, 0) }
                .map_err(map_oom_err("vkBindBufferMemory")),
            // SAFETY: as for buffers; offset 0 (plane offsets live in an explicit-modifier
            // layout).
            BindTarget::Image(i) => unsafe { d.bind_image_memory(i, memory, 0) }
                .map_err(map_oom_err("vkBindImageMemory")),
        }
    }
}

/// Where the memory comes from.
pub(crate) enum Backing<'a> {
    /// New memory of a type with all of `want`, preferring one with `prefer` too.
    New {
        want: vk::MemoryPropertyFlags,
        prefer: vk::MemoryPropertyFlags,
    },
    /// An import of a whole dma-buf of `size` bytes. The fd is dup'ed and the dup handed to the
    /// driver, which owns it only if the import succeeds; it is closed here otherwise.
    DmaBuf { fd: BorrowedFd<'a>, size: u64 },
    /// An import of `size` bytes of host memory at `ptr` (whole pages of a live mapping, both
    /// aligned to `minImportedHostPointerAlignment`; the mapping must outlive the memory).
    HostPointer { ptr: *mut c_void, size: u64 },
}

/// Memory [`allocate_and_bind`] made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub(crate) memory: vk::DeviceMemory,
    /// The properties of the memory type chosen.
    pub(crate) flags: vk::MemoryPropertyFlags,
}

/// Allocates (or imports) memory for `target` from `backing`, records it in `objects` and binds
/// it. Where the driver wants a dedicated allocation it gets one, and a dma-buf imported for a
/// buffer always does (one import per fd and buffer); host-pointer imports never may.
pub(crate) fn allocate_and_bind(
    device: &Device,
    objects: &mut DeviceObjects,
    target: BindTarget,
    backing: Backing<'_>,
) -> Result<Bound, VulkanError> {
    let (reqs, wants_dedicated) = target.requirements(device);
    let (allowed, want, prefer, size) = match &backing {
        Backing::New { want, prefer } => (u32::MAX, *want, *prefer, reqs.size),
        Backing::DmaBuf { fd, size } => {
            let allowed = dma_buf_memory_types(device, *fd)?;
            // Rule: for an imported dma-buf, allocationSize is at least the resource's
            // requirement and no more than the dma-buf holds (we ask for exactly its size).
            if reqs.size > *size {
                return Err(VulkanError::unsupported(format!(
                    "the driver needs {} bytes for this layout; the dma-buf holds {size}",
                    reqs.size
                )));
            }
            let no = vk::MemoryPropertyFlags::empty();
            (allowed, no, vk::MemoryPropertyFlags::DEVICE_LOCAL, *size)
        }
        Backing::HostPointer { ptr, size } => {
            let allowed = host_pointer_memory_types(device, *ptr)?;
            if reqs.size > *size {
                return Err(VulkanError::unsupported(format!(
                    "the driver wants {} bytes for a {size}-byte buffer over host memory",
                    reqs.size
                )));
            }
            let no = vk::MemoryPropertyFlags::empty();
            (allowed, no, vk::MemoryPropertyFlags::DEVICE_LOCAL, *size)
        }
    };
    let type_index = device
        .memory_type(reqs.memory_type_bits & allowed, want, prefer)
        .ok_or_else(|| {
            VulkanError::unsupported(format!(
                "no memory type with {want:?} that both the resource (0x{:x}) and the memory (0x{allowed:x}) allow",
                reqs.memory_type_bits
            ))
        })?;
    let mut dedicated = match target {
        BindTarget::Buffer(b) => vk::MemoryDedicatedAllocateInfo::default().buffer(b),
        BindTarget::Image(i) => vk::MemoryDedicatedAllocateInfo::default().image(i),
    };
    // Rule: memoryTypeIndex is allowed by both the resource and (for imports) the handle's
    // properties query; allocationSize is at least the requirement.
    let mut info = vk::MemoryAllocateInfo::default()
        .allocation_size(size)
        .memory_type_index(type_index);
    // Rule (VUID-VkMemoryAllocateInfo-pNext-02806 family): a host-pointer import names no
    // dedicated resource.
    let dedicate = match backing {
        Backing::New { .. } => wants_dedicated,
        Backing::DmaBuf { .. } => wants_dedicated || matches!(target, BindTarget::Buffer(_)),
        Backing::HostPointer { .. } => false,
    };
    if dedicate {
        info = info.push_next(&mut dedicated);
    }
    let memory = match backing {
        Backing::New { .. } => {
            // SAFETY: the info chain lives across the call.
            unsafe { device.device.allocate_memory(&info, None) }
                .map_err(map_oom_err("vkAllocateMemory"))?
        }
        Backing::DmaBuf { fd, .. } => import_dma_buf(device, fd, info)?,
        Backing::HostPointer { ptr, .. } => {
            let mut import = vk::ImportMemoryHostPointerInfoEXT::default()
                .handle_type(vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT)
                .host_pointer(ptr);
            // Rule (VUID-VkImportMemoryHostPointerInfoEXT-pHostPointer-01749 and
            // VUID-VkMemoryAllocateInfo-allocationSize-01745): the pointer and allocationSize
            // are multiples of minImportedHostPointerAlignment (Backing::HostPointer's
            // contract); the memory type is one vkGetMemoryHostPointerPropertiesEXT allows.
            let info = info.push_next(&mut import);
            // SAFETY: the info chain lives across the call; the pages stay mapped while the
            // memory lives (Backing::HostPointer's contract).
            let m = unsafe { device.device.allocate_memory(&info, None) }.map_err(
                map_external_handle_err("vkAllocateMemory(import host pointer)"),
            )?;
            crate::counters::bump(&crate::counters::GPU_IMPORTS);
            m
        }
    };
    objects.push(VkObject::Memory(memory));
    target.bind(device, memory)?;
    Ok(Bound {
        memory,
        flags: device.mem_props.memory_types[type_index as usize].property_flags,
    })
}

/// The memory types a dma-buf fd may be imported as.
fn dma_buf_memory_types(device: &Device, fd: BorrowedFd<'_>) -> Result<u32, VulkanError> {
    let ext = device.mem_fd.as_ref().ok_or_else(|| {
        VulkanError::unsupported("dma-buf import needs VK_KHR_external_memory_fd")
    })?;
    let mut props = vk::MemoryFdPropertiesKHR::default();
    // SAFETY: the fd is borrowed for the call only; this query does not take ownership.
    unsafe {
        ext.get_memory_fd_properties(
            vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT,
            fd.as_raw_fd(),
            &mut props,
        )
    }
    .map_err(map_external_handle_err("vkGetMemoryFdPropertiesKHR"))?;
    Ok(props.memory_type_bits)
}

/// The memory types host memory at `ptr` may be imported as.
fn host_pointer_memory_types(device: &Device, ptr: *mut c_void) -> Result<u32, VulkanError> {
    let ext = device.host.as_ref().ok_or_else(|| {
        VulkanError::unsupported("host-pointer import needs VK_EXT_external_memory_host")
    })?;
    let mut props = vk::MemoryHostPointerPropertiesEXT::default();
    // SAFETY: ptr is the start of a live mapping (Backing::HostPointer's contract); the query
    // only reads the pointer's value.
    unsafe {
        (ext.fp().get_memory_host_pointer_properties_ext)(
            device.device.handle(),
            vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT,
            ptr,
            &mut props,
        )
    }
    .result()
    .map_err(map_external_handle_err(
        "vkGetMemoryHostPointerPropertiesEXT",
    ))?;
    Ok(props.memory_type_bits)
}

/// Imports a dup of `fd` with `info` (its size and type already chosen): on success the driver
/// owns the dup; on failure it comes back and is closed.
fn import_dma_buf(
    device: &Device,
    fd: BorrowedFd<'_>,
    info: vk::MemoryAllocateInfo<'_>,
) -> Result<vk::DeviceMemory, VulkanError> {
    // `try_clone_to_owned` is fcntl(F_DUPFD_CLOEXEC).
    let dup = fd.try_clone_to_owned().map_err(|source| VulkanError::Fd {
        op: "dup of a dma-buf fd",
        source,
    })?;
    let memory = crate::sys::fd::hand_over(dup, |raw| {
        let mut import = vk::ImportMemoryFdInfoKHR::default()
            .handle_type(vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT)
            .fd(raw);
        let info = info.push_next(&mut import);
        // SAFETY: the info chain lives across the call; the driver takes `raw` only when the
        // allocation succeeds (hand_over's contract).
        unsafe { device.device.allocate_memory(&info, None) }
    })
    .map_err(|(result, _dup)| {
        map_external_handle_err("vkAllocateMemory(import dma-buf)")(result)
    })?;
    crate::counters::bump(&crate::counters::GPU_IMPORTS);
    Ok(memory)
}

/// Rounds `v` up to a multiple of `a` (`a` ≤ 1: unchanged).
pub(crate) fn round_up(v: u64, a: u64) -> u64 {
    if a <= 1 {
        v
    } else {
        v.div_ceil(a) * a
    }
}

/// A storage buffer of `size` bytes, without memory; `handle` names the external memory it
/// will be bound to (empty: ordinary memory).
pub(crate) fn storage_buffer(
    device: &Device,
    objects: &mut DeviceObjects,
    size: u64,
    handle: vk::ExternalMemoryHandleTypeFlags,
    extra_usage: vk::BufferUsageFlags,
) -> Result<vk::Buffer, VulkanError> {
    let max = device.caps().max_storage_buffer_range;
    if size > max {
        return Err(VulkanError::unsupported(format!(
            "{size} bytes exceed maxStorageBufferRange ({max})"
        )));
    }
    let mut ext = vk::ExternalMemoryBufferCreateInfo::default().handle_types(handle);
    // Rule: size > 0; a buffer bound to external memory names the handle type in
    // VkExternalMemoryBufferCreateInfo; storage-buffer use is what the shader needs.
    let mut info = vk::BufferCreateInfo::default()
        .size(size)
        .usage(vk::BufferUsageFlags::STORAGE_BUFFER | extra_usage)
        .sharing_mode(vk::SharingMode::EXCLUSIVE);
    if !handle.is_empty() {
        info = info.push_next(&mut ext);
    }
    // SAFETY: the info chain lives across the call.
    let b = unsafe { device.device.create_buffer(&info, None) }
        .map_err(map_oom_err("vkCreateBuffer"))?;
    objects.push(VkObject::Buffer(b));
    Ok(b)
}

/// A host-visible (and, if possible, device-local) buffer the CPU writes or reads through a
/// persistent mapping: the buffer, the mapping, and whether it is device-local.
pub(crate) fn host_buffer(
    device: &Device,
    objects: &mut DeviceObjects,
    size: u64,
    usage: vk::BufferUsageFlags,
) -> Result<(vk::Buffer, *mut u8, bool), VulkanError> {
    let none = vk::ExternalMemoryHandleTypeFlags::empty();
    let b = storage_buffer(device, objects, size, none, usage)?;
    let host = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
    let backing = Backing::New {
        want: host,
        prefer: vk::MemoryPropertyFlags::DEVICE_LOCAL,
    };
    let bound = allocate_and_bind(device, objects, BindTarget::Buffer(b), backing)?;
    // SAFETY: host-visible memory, not mapped before; mapped once for its whole life (freeing
    // the memory unmaps it).
    let ptr = unsafe {
        device
            .device
            .map_memory(bound.memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
    }
    .map_err(|e| match e {
        vk::Result::ERROR_MEMORY_MAP_FAILED => VulkanError::OutOfMemory {
            call: "vkMapMemory",
            memory: "host address space",
        },
        e => map_oom_err("vkMapMemory")(e),
    })?;
    let device_local = bound.flags.contains(vk::MemoryPropertyFlags::DEVICE_LOCAL);
    Ok((b, ptr.cast(), device_local))
}

/// A device-local storage buffer (the staging path's GPU copy lands there).
pub(crate) fn device_buffer(
    device: &Device,
    objects: &mut DeviceObjects,
    size: u64,
) -> Result<vk::Buffer, VulkanError> {
    let none = vk::ExternalMemoryHandleTypeFlags::empty();
    let b = storage_buffer(
        device,
        objects,
        size,
        none,
        vk::BufferUsageFlags::TRANSFER_DST,
    )?;
    let backing = Backing::New {
        want: vk::MemoryPropertyFlags::DEVICE_LOCAL,
        prefer: vk::MemoryPropertyFlags::empty(),
    };
    allocate_and_bind(device, objects, BindTarget::Buffer(b), backing)?;
    Ok(b)
}
