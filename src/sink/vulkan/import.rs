//! Getting a buffer's memory into the device, once per buffer:
//!
//! - dma-bufs as a `VkImage` with an explicit DRM-modifier layout (the planes' offsets and
//!   strides), multi-planar NV12 included, or as memory bound to a `VkBuffer`
//!   (`VK_EXT_external_memory_dma_buf`). The fd is dup'ed (`F_DUPFD_CLOEXEC`) and the dup handed
//!   to the driver; it owns it only if the import succeeds, otherwise we close it.
//! - memfd / POSIX / SysV mappings with `VK_EXT_external_memory_host` (the mapping is page
//!   aligned; its size is rounded up to `minImportedHostPointerAlignment` within the pages
//!   mapped).
//! - otherwise a staging buffer the CPU copies each frame into, counted in `bytes_copied`.
//!
//! Every object is recorded in an [`Objects`] list as soon as it exists, so a half-built import
//! is undone by dropping the list (the guard), and a whole one by dropping the [`Import`].
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;

use ash::vk;

use super::device::{call, image_plan, Gpu, ImagePlan, ImportPath, VulkanError};
use crate::buffer::{Access, Buffer, BufferMapping};
use crate::format::FrameLayout;

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
pub(crate) struct Objects {
    gpu: Arc<Gpu>,
    list: Vec<VkObject>,
}

impl Objects {
    pub(crate) fn new(gpu: &Arc<Gpu>) -> Self {
        Objects {
            gpu: gpu.clone(),
            list: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, o: VkObject) {
        self.list.push(o);
    }
}

impl Drop for Objects {
    fn drop(&mut self) {
        let d = &self.gpu.device;
        for o in self.list.drain(..).rev() {
            // SAFETY: each object was made on this device, is destroyed once (drained), after
            // everything made later (views before images, buffers/images before memory), and
            // no submission using it is pending (the sink waits for each frame's fence and for
            // the device to idle before dropping imports).
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

/// What the shader reads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reads {
    /// Plane memory as storage buffers (binding 0 and 1; the same buffer when one fd holds
    /// both planes), with their sizes in 32-bit words.
    Buffers {
        buffers: [vk::Buffer; 2],
        words: [u32; 2],
    },
    /// Image views (binding 2, and 3 for NV12 chroma).
    Images {
        views: [vk::ImageView; 2],
        nv12: bool,
    },
}

/// A per-frame CPU copy into host-visible memory, then (if that memory is not device-local) a
/// GPU copy into a device-local buffer.
pub(crate) struct Staging {
    /// Host pointer of each fd's staging memory.
    ptrs: Vec<*mut u8>,
    /// `(host-visible source, device-local destination, bytes)` per fd, when a GPU copy follows.
    pub(crate) device_copies: Vec<(vk::Buffer, vk::Buffer, u64)>,
}

/// A buffer's memory as the device sees it.
pub(crate) struct Import {
    /// How it got there.
    pub(crate) path: ImportPath,
    /// Why that path (the better ones' failures, if any).
    pub(crate) note: String,
    /// What the shader binds.
    pub(crate) reads: Reads,
    /// Buffers to move between `QUEUE_FAMILY_FOREIGN_EXT` and ours each frame.
    pub(crate) foreign_buffers: Vec<vk::Buffer>,
    /// Images to move between `QUEUE_FAMILY_FOREIGN_EXT` and ours each frame.
    pub(crate) foreign_images: Vec<vk::Image>,
    /// Scratch images (warm-up only) to bring from UNDEFINED to GENERAL each submission.
    pub(crate) scratch_images: Vec<vk::Image>,
    pub(crate) staging: Option<Staging>,
    // Declared before `mapping`: the device memory goes before the pages it imported.
    _objects: Objects,
    mapping: Option<BufferMapping>,
}

/// Which path to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// The best one that works: image, then buffer (dma-buf); host pointer (shm); else staging.
    Auto,
    /// dma-bufs as images only (fail otherwise); shm as in `Auto`.
    Image,
    /// dma-bufs as buffers only (fail otherwise); shm as in `Auto`.
    Buffer,
    /// Always the staging copy (the benchmark's reference).
    Staging,
}

fn round_up(v: u64, a: u64) -> u64 {
    if a <= 1 {
        v
    } else {
        v.div_ceil(a) * a
    }
}

/// Imports `buffer` for the compute shader by the best path `mode` allows.
pub(crate) fn import(
    gpu: &Arc<Gpu>,
    buffer: &Buffer,
    mode: ImportMode,
) -> Result<Import, VulkanError> {
    let layout = buffer.layout();
    let kind = buffer.kind();
    let caps = gpu.caps();
    let mut passed = Vec::new();
    if layout.modifier() != crate::format::Modifier::LINEAR && !kind.is_dma_buf() {
        return Err(VulkanError::Other(format!(
            "{kind} buffer with modifier {}: shared memory is read as LINEAR rows only",
            layout.modifier()
        )));
    }
    if mode != ImportMode::Staging {
        if kind.is_dma_buf() {
            if mode != ImportMode::Buffer {
                let r = if !caps.import_paths.contains(&ImportPath::DmaBufImage) {
                    Err(format!(
                        "dma-buf image import needs {}",
                        caps.missing(ImportPath::DmaBufImage).join(", ")
                    ))
                } else if image_plan(layout.fourcc()).is_none() {
                    Err(format!("{} has no storage-image format", layout.fourcc()))
                } else {
                    import_dma_buf_image(gpu, buffer).map_err(|e| e.to_string())
                };
                match r {
                    Ok(mut i) => {
                        i.note = note(ImportPath::DmaBufImage, &passed);
                        return Ok(i);
                    }
                    Err(e) if mode == ImportMode::Image => {
                        return Err(VulkanError::Other(format!("dma-buf image import: {e}")))
                    }
                    Err(e) => passed.push(format!("image: {e}")),
                }
            }
            let r = if layout.modifier() != crate::format::Modifier::LINEAR {
                Err(format!(
                    "modifier {} is not LINEAR, so the memory cannot be read as a buffer",
                    layout.modifier()
                ))
            } else if !caps.import_paths.contains(&ImportPath::DmaBufBuffer) {
                Err(format!(
                    "dma-buf import needs {}",
                    caps.missing(ImportPath::DmaBufBuffer).join(", ")
                ))
            } else {
                import_dma_buf_buffers(gpu, buffer).map_err(|e| e.to_string())
            };
            match r {
                Ok(mut i) => {
                    i.note = note(ImportPath::DmaBufBuffer, &passed);
                    return Ok(i);
                }
                Err(e) if mode == ImportMode::Buffer => {
                    return Err(VulkanError::Other(format!("dma-buf buffer import: {e}")))
                }
                Err(e) => passed.push(format!("buffer: {e}")),
            }
        } else {
            let r = if !caps.import_paths.contains(&ImportPath::HostPointer) {
                Err("host-pointer import needs VK_EXT_external_memory_host".to_string())
            } else {
                import_host(gpu, buffer).map_err(|e| e.to_string())
            };
            match r {
                Ok(mut i) => {
                    i.note = note(ImportPath::HostPointer, &passed);
                    return Ok(i);
                }
                Err(e) => passed.push(format!("host pointer: {e}")),
            }
        }
    } else {
        passed.push("staging forced".into());
    }
    if layout.modifier() != crate::format::Modifier::LINEAR {
        return Err(VulkanError::Other(format!(
            "no import works ({}), and a staging copy needs LINEAR, not {}",
            passed.join("; "),
            layout.modifier()
        )));
    }
    let mut i = import_staging(gpu, buffer)?;
    i.note = note(ImportPath::Staging, &passed);
    if mode != ImportMode::Staging {
        log::warn!(
            "vulkan: {kind} {} {}x{}: no zero-copy import ({}); copying every frame",
            layout.fourcc(),
            layout.width(),
            layout.height(),
            passed.join("; ")
        );
    }
    Ok(i)
}

fn note(path: ImportPath, passed: &[String]) -> String {
    if passed.is_empty() {
        path.name().to_owned()
    } else {
        format!("{} (passed over: {})", path.name(), passed.join("; "))
    }
}

/// Hands a dup of `fd` to `f`, which gives it to the driver: on success the driver owns it; on
/// failure it is closed here. The original fd stays ours.
fn with_dup<T>(
    fd: BorrowedFd<'_>,
    f: impl FnOnce(i32) -> Result<T, vk::Result>,
    what: &'static str,
) -> Result<T, VulkanError> {
    // `try_clone_to_owned` is fcntl(F_DUPFD_CLOEXEC).
    let dup: OwnedFd = fd
        .try_clone_to_owned()
        .map_err(|e| VulkanError::Other(format!("dup of a dma-buf fd: {e}")))?;
    let raw = dup.into_raw_fd();
    match f(raw) {
        Ok(v) => Ok(v),
        Err(e) => {
            // SAFETY: the import failed, so the driver did not take `raw`: it is still the dup
            // we made and nothing else owns it.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
            Err(VulkanError::Call {
                call: what,
                result: e,
            })
        }
    }
}

fn dma_buf_size(buffer: &Buffer, i: usize, fd: BorrowedFd<'_>) -> Result<u64, VulkanError> {
    crate::buffer::inspect_fd(buffer.kind(), i, fd)
        .map(|info| info.size)
        .map_err(|e| VulkanError::Other(e.to_string()))
}

fn fd_memory_types(gpu: &Gpu, fd: BorrowedFd<'_>) -> Result<u32, VulkanError> {
    let ext = gpu
        .mem_fd
        .as_ref()
        .ok_or_else(|| VulkanError::Other("VK_KHR_external_memory_fd missing".into()))?;
    let mut props = vk::MemoryFdPropertiesKHR::default();
    // SAFETY: the fd is borrowed for the call only; this query does not take ownership.
    unsafe {
        ext.get_memory_fd_properties(
            vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT,
            fd.as_raw_fd(),
            &mut props,
        )
    }
    .map_err(call("vkGetMemoryFdPropertiesKHR"))?;
    Ok(props.memory_type_bits)
}

/// Imports one dma-buf fd as device memory whose size is the dma-buf's, for a resource with
/// requirements `reqs`; `dedicated` names the resource when the driver wants a dedicated
/// allocation.
fn import_dma_buf_memory(
    gpu: &Gpu,
    objects: &mut Objects,
    fd: BorrowedFd<'_>,
    size: u64,
    reqs: vk::MemoryRequirements,
    dedicated: Option<vk::MemoryDedicatedAllocateInfo<'_>>,
) -> Result<vk::DeviceMemory, VulkanError> {
    let fd_bits = fd_memory_types(gpu, fd)?;
    let type_index = gpu
        .memory_type(
            reqs.memory_type_bits & fd_bits,
            vk::MemoryPropertyFlags::empty(),
            vk::MemoryPropertyFlags::DEVICE_LOCAL,
        )
        .ok_or_else(|| {
            VulkanError::Other(format!(
                "no memory type both the resource (0x{:x}) and the dma-buf (0x{fd_bits:x}) allow",
                reqs.memory_type_bits
            ))
        })?;
    if reqs.size > size {
        return Err(VulkanError::Other(format!(
            "the driver needs {} bytes for this layout; the dma-buf holds {size}",
            reqs.size
        )));
    }
    let memory = with_dup(
        fd,
        |raw| {
            let mut import = vk::ImportMemoryFdInfoKHR::default()
                .handle_type(vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT)
                .fd(raw);
            // Rule: allocationSize >= the resource's requirement (checked above) and, for an
            // imported dma-buf, no more than the dma-buf holds (we ask for exactly its size);
            // memoryTypeIndex is allowed by both vkGetMemoryFdPropertiesKHR and the resource.
            let mut info = vk::MemoryAllocateInfo::default()
                .allocation_size(size)
                .memory_type_index(type_index)
                .push_next(&mut import);
            let mut ded;
            if let Some(d) = dedicated {
                ded = d;
                info = info.push_next(&mut ded);
            }
            // SAFETY: the info chain lives across the call; on success the driver owns `raw`.
            unsafe { gpu.device.allocate_memory(&info, None) }
        },
        "vkAllocateMemory(import dma-buf)",
    )?;
    objects.push(VkObject::Memory(memory));
    crate::counters::bump(&crate::counters::GPU_IMPORTS);
    Ok(memory)
}

fn storage_buffer(
    gpu: &Gpu,
    objects: &mut Objects,
    size: u64,
    handle: vk::ExternalMemoryHandleTypeFlags,
    extra_usage: vk::BufferUsageFlags,
) -> Result<vk::Buffer, VulkanError> {
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
    let b = unsafe { gpu.device.create_buffer(&info, None) }.map_err(call("vkCreateBuffer"))?;
    objects.push(VkObject::Buffer(b));
    Ok(b)
}

fn check_storage_range(gpu: &Gpu, size: u64) -> Result<(), VulkanError> {
    let max = gpu.caps().max_storage_buffer_range;
    if size > max {
        return Err(VulkanError::Other(format!(
            "{size} bytes exceed maxStorageBufferRange ({max})"
        )));
    }
    Ok(())
}

fn buffer_reads(buffers: &[vk::Buffer], sizes: &[u64], layout: &FrameLayout) -> Reads {
    let fd_of = |p: usize| layout.planes().get(p).map_or(0, |pl| pl.fd_index as usize);
    let (b0, b1) = (fd_of(0), fd_of(1));
    Reads::Buffers {
        buffers: [buffers[b0], buffers[b1]],
        words: [(sizes[b0] / 4) as u32, (sizes[b1] / 4) as u32],
    }
}

/// dma-buf → memory → `VkBuffer`, one per fd.
fn import_dma_buf_buffers(gpu: &Arc<Gpu>, buffer: &Buffer) -> Result<Import, VulkanError> {
    let layout = buffer.layout();
    let mut objects = Objects::new(gpu);
    let mut buffers = Vec::new();
    let mut sizes = Vec::new();
    for (i, fd) in buffer.fds().into_iter().enumerate() {
        let have = dma_buf_size(buffer, i, fd)?;
        let size = round_up(
            layout
                .required_size(i as u32)
                .max(if i == 0 { layout.size() } else { 0 }),
            4,
        )
        .min(have);
        check_storage_range(gpu, size)?;
        let b = storage_buffer(
            gpu,
            &mut objects,
            size,
            vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT,
            vk::BufferUsageFlags::empty(),
        )?;
        // SAFETY: b is a live buffer of this device.
        let reqs = unsafe { gpu.device.get_buffer_memory_requirements(b) };
        let memory = import_dma_buf_memory(
            gpu,
            &mut objects,
            fd,
            have,
            reqs,
            Some(vk::MemoryDedicatedAllocateInfo::default().buffer(b)),
        )?;
        // SAFETY: b is unbound, memory is large enough (checked) and of an allowed type.
        unsafe { gpu.device.bind_buffer_memory(b, memory, 0) }
            .map_err(call("vkBindBufferMemory"))?;
        buffers.push(b);
        sizes.push(size);
    }
    Ok(Import {
        path: ImportPath::DmaBufBuffer,
        note: String::new(),
        reads: buffer_reads(&buffers, &sizes, layout),
        foreign_buffers: buffers,
        foreign_images: Vec::new(),
        scratch_images: Vec::new(),
        staging: None,
        _objects: objects,
        mapping: None,
    })
}

/// One image of the image path: its format, extent, plane layouts and the fd holding them.
pub(crate) struct ImageSpec {
    pub(crate) format: vk::Format,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) planes: Vec<(u64, u32)>,
    pub(crate) fd_index: usize,
    pub(crate) multi_planar: bool,
}

/// The images the image path makes for a layout.
pub(crate) fn image_specs(
    layout: &FrameLayout,
    plan: ImagePlan,
    multi_planar: bool,
) -> Vec<ImageSpec> {
    let pl = |p: usize| (layout.planes()[p].offset, layout.planes()[p].stride);
    match plan {
        ImagePlan::Packed { texel_pixels } => vec![ImageSpec {
            format: vk::Format::R8G8B8A8_UINT,
            width: layout.width() / texel_pixels,
            height: layout.height(),
            planes: vec![pl(0)],
            fd_index: layout.planes()[0].fd_index as usize,
            multi_planar: false,
        }],
        ImagePlan::Nv12 if multi_planar => vec![ImageSpec {
            format: vk::Format::G8_B8R8_2PLANE_420_UNORM,
            width: layout.width(),
            height: layout.height(),
            planes: vec![pl(0), pl(1)],
            fd_index: 0,
            multi_planar: true,
        }],
        ImagePlan::Nv12 => vec![
            ImageSpec {
                format: vk::Format::R8_UINT,
                width: layout.width(),
                height: layout.height(),
                planes: vec![pl(0)],
                fd_index: layout.planes()[0].fd_index as usize,
                multi_planar: false,
            },
            ImageSpec {
                format: vk::Format::R8G8_UINT,
                width: layout.width() / 2,
                height: layout.height() / 2,
                planes: vec![pl(1)],
                fd_index: layout.planes()[1].fd_index as usize,
                multi_planar: false,
            },
        ],
    }
}

/// Creates (without memory) the image for `spec` with the layout's explicit DRM-modifier plane
/// layout: the driver checks offsets and strides here. Used by the import and by `explain`.
pub(crate) fn create_modifier_image(
    gpu: &Gpu,
    objects: &mut Objects,
    spec: &ImageSpec,
    planes: &[(u64, u32)],
    modifier: u64,
) -> Result<vk::Image, VulkanError> {
    let (spec_format, width, height, multi_planar) =
        (spec.format, spec.width, spec.height, spec.multi_planar);
    let plane_layouts: Vec<vk::SubresourceLayout> = planes
        .iter()
        .map(|&(offset, stride)| vk::SubresourceLayout {
            offset,
            // Rule (VUID-VkImageDrmFormatModifierExplicitCreateInfoEXT-size-02267): size is 0.
            size: 0,
            row_pitch: stride as u64,
            // Rule (…-arrayPitch-02268, -depthPitch-02269): 0 for a single-layer 2D image.
            array_pitch: 0,
            depth_pitch: 0,
        })
        .collect();
    // Rule: drmFormatModifierPlaneCount equals the modifier's plane count for the format
    // (callers pass one layout per memory plane of the modifier).
    let mut explicit = vk::ImageDrmFormatModifierExplicitCreateInfoEXT::default()
        .drm_format_modifier(modifier)
        .plane_layouts(&plane_layouts);
    let mut external = vk::ExternalMemoryImageCreateInfo::default()
        .handle_types(vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT);
    let view_formats = [vk::Format::R8_UINT, vk::Format::R8G8_UINT];
    let mut format_list = vk::ImageFormatListCreateInfo::default().view_formats(&view_formats);
    let flags = if multi_planar {
        // Plane views in other formats (MUTABLE_FORMAT) with storage use that the multi-planar
        // format itself lacks but the plane formats have (EXTENDED_USAGE).
        vk::ImageCreateFlags::MUTABLE_FORMAT | vk::ImageCreateFlags::EXTENDED_USAGE
    } else {
        vk::ImageCreateFlags::empty()
    };
    // Rule (VUID-VkImageCreateInfo-tiling-02261): DRM_FORMAT_MODIFIER_EXT tiling comes with
    // exactly one of the modifier list / explicit create infos (explicit here);
    // initialLayout is UNDEFINED; one mip level and layer, one sample; external memory named
    // in VkExternalMemoryImageCreateInfo.
    let mut info = vk::ImageCreateInfo::default()
        .flags(flags)
        .image_type(vk::ImageType::TYPE_2D)
        .format(spec_format)
        .extent(vk::Extent3D {
            width,
            height,
            depth: 1,
        })
        .mip_levels(1)
        .array_layers(1)
        .samples(vk::SampleCountFlags::TYPE_1)
        .tiling(vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT)
        .usage(vk::ImageUsageFlags::STORAGE)
        .sharing_mode(vk::SharingMode::EXCLUSIVE)
        .initial_layout(vk::ImageLayout::UNDEFINED)
        .push_next(&mut explicit)
        .push_next(&mut external);
    if multi_planar {
        info = info.push_next(&mut format_list);
    }
    // SAFETY: the info chain lives across the call.
    let image = unsafe { gpu.device.create_image(&info, None) }.map_err(|e| match e {
        vk::Result::ERROR_INVALID_DRM_FORMAT_MODIFIER_PLANE_LAYOUT_EXT => {
            VulkanError::Other(format!(
                "the driver rejects the plane layout (offset, stride) {planes:?} for {spec_format:?} {width}x{height} with modifier 0x{modifier:x}"
            ))
        }
        e => VulkanError::Call {
            call: "vkCreateImage(DRM modifier)",
            result: e,
        },
    })?;
    objects.push(VkObject::Image(image));
    Ok(image)
}

/// dma-buf → `VkImage`(s) with explicit DRM-modifier layouts → storage views.
fn import_dma_buf_image(gpu: &Arc<Gpu>, buffer: &Buffer) -> Result<Import, VulkanError> {
    let layout = buffer.layout();
    let plan = image_plan(layout.fourcc()).expect("checked by the caller");
    let support = gpu
        .caps()
        .format(layout.fourcc())
        .ok_or_else(|| VulkanError::Other("no DRM-modifier support".into()))?;
    let modifier = support
        .modifiers
        .iter()
        .find(|m| m.modifier == layout.modifier())
        .ok_or_else(|| {
            VulkanError::Other(format!(
                "modifier {} is not listed for {} ({:?}); the driver lists {}",
                layout.modifier(),
                layout.fourcc(),
                support.vk_formats,
                support
                    .modifiers
                    .iter()
                    .map(|m| m.modifier.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    if !modifier.storage {
        return Err(VulkanError::Other(format!(
            "{} with modifier {}: the driver lists no storage-image use",
            layout.fourcc(),
            layout.modifier()
        )));
    }
    let multi = support.multi_planar;
    if multi && layout.fd_count() > 1 {
        return Err(VulkanError::Other(
            "NV12 planes in separate dma-bufs (disjoint images) are not handled".into(),
        ));
    }
    let mut objects = Objects::new(gpu);
    let fds = buffer.fds();
    let sizes: Vec<u64> = fds
        .iter()
        .enumerate()
        .map(|(i, fd)| dma_buf_size(buffer, i, *fd))
        .collect::<Result<_, _>>()?;
    let specs = image_specs(layout, plan, multi);
    let mut images = Vec::new();
    let mut memories: Vec<Option<vk::DeviceMemory>> = vec![None; fds.len()];
    for spec in &specs {
        let flags = if spec.multi_planar {
            vk::ImageCreateFlags::MUTABLE_FORMAT | vk::ImageCreateFlags::EXTENDED_USAGE
        } else {
            vk::ImageCreateFlags::empty()
        };
        let max = gpu
            .image_importable(spec.format, layout.modifier(), flags)
            .map_err(VulkanError::Other)?;
        if spec.width > max.width || spec.height > max.height {
            return Err(VulkanError::Other(format!(
                "{:?} {}x{} exceeds the driver's {}x{}",
                spec.format, spec.width, spec.height, max.width, max.height
            )));
        }
        let image =
            create_modifier_image(gpu, &mut objects, spec, &spec.planes, layout.modifier().0)?;
        let mut dedicated = vk::MemoryDedicatedRequirements::default();
        let mut reqs2 = vk::MemoryRequirements2::default().push_next(&mut dedicated);
        let info = vk::ImageMemoryRequirementsInfo2::default().image(image);
        // SAFETY: the image is live and not disjoint; the out chain lives across the call.
        unsafe { gpu.device.get_image_memory_requirements2(&info, &mut reqs2) };
        let reqs = reqs2.memory_requirements;
        let fd_i = spec.fd_index;
        let memory = if dedicated.requires_dedicated_allocation == vk::TRUE {
            // Its own import of the dma-buf, dedicated to this image.
            import_dma_buf_memory(
                gpu,
                &mut objects,
                fds[fd_i],
                sizes[fd_i],
                reqs,
                Some(vk::MemoryDedicatedAllocateInfo::default().image(image)),
            )?
        } else if let Some(m) = memories[fd_i] {
            m
        } else {
            let m = import_dma_buf_memory(gpu, &mut objects, fds[fd_i], sizes[fd_i], reqs, None)?;
            memories[fd_i] = Some(m);
            m
        };
        // SAFETY: the image is unbound; the memory holds reqs.size bytes (checked on import) of
        // an allowed type; offset 0 (plane offsets are in the explicit layout).
        unsafe { gpu.device.bind_image_memory(image, memory, 0) }
            .map_err(call("vkBindImageMemory"))?;
        images.push(image);
    }
    // Views: packed → one RGBA8_UINT view; NV12 → luma R8_UINT + chroma R8G8_UINT views (plane
    // aspects of one multi-planar image, or the two plane images).
    let mut views = [vk::ImageView::null(); 2];
    let view_specs: Vec<(vk::Image, vk::Format, vk::ImageAspectFlags)> = match (plan, multi) {
        (ImagePlan::Packed { .. }, _) => vec![(
            images[0],
            vk::Format::R8G8B8A8_UINT,
            vk::ImageAspectFlags::COLOR,
        )],
        (ImagePlan::Nv12, true) => vec![
            (
                images[0],
                vk::Format::R8_UINT,
                vk::ImageAspectFlags::PLANE_0,
            ),
            (
                images[0],
                vk::Format::R8G8_UINT,
                vk::ImageAspectFlags::PLANE_1,
            ),
        ],
        (ImagePlan::Nv12, false) => vec![
            (images[0], vk::Format::R8_UINT, vk::ImageAspectFlags::COLOR),
            (
                images[1],
                vk::Format::R8G8_UINT,
                vk::ImageAspectFlags::COLOR,
            ),
        ],
    };
    for (i, (image, format, aspect)) in view_specs.into_iter().enumerate() {
        let mut usage = vk::ImageViewUsageCreateInfo::default().usage(vk::ImageUsageFlags::STORAGE);
        // Rule: a view of one plane of a multi-planar image uses a single-plane aspect and a
        // format compatible with that plane (R8 for G8, R8G8 for B8R8); the image was created
        // MUTABLE_FORMAT. Storage use is restated per view (VkImageViewUsageCreateInfo).
        let info = vk::ImageViewCreateInfo::default()
            .image(image)
            .view_type(vk::ImageViewType::TYPE_2D)
            .format(format)
            .subresource_range(vk::ImageSubresourceRange {
                aspect_mask: aspect,
                base_mip_level: 0,
                level_count: 1,
                base_array_layer: 0,
                layer_count: 1,
            })
            .push_next(&mut usage);
        // SAFETY: the image is live and bound; the info chain lives across the call.
        let view = unsafe { gpu.device.create_image_view(&info, None) }
            .map_err(call("vkCreateImageView"))?;
        objects.push(VkObject::View(view));
        views[i] = view;
    }
    Ok(Import {
        path: ImportPath::DmaBufImage,
        note: String::new(),
        reads: Reads::Images {
            views,
            nv12: plan == ImagePlan::Nv12,
        },
        foreign_buffers: Vec::new(),
        foreign_images: images,
        scratch_images: Vec::new(),
        staging: None,
        _objects: objects,
        mapping: None,
    })
}

/// memfd / POSIX / SysV mapping → host-pointer memory → `VkBuffer`, one per memory object.
fn import_host(gpu: &Arc<Gpu>, buffer: &Buffer) -> Result<Import, VulkanError> {
    let layout = buffer.layout();
    let ext = gpu
        .host
        .as_ref()
        .ok_or_else(|| VulkanError::Other("VK_EXT_external_memory_host missing".into()))?;
    let align = gpu.caps().min_host_pointer_alignment.max(1);
    let page = crate::sys::mem::page_size() as u64;
    let mapping = buffer
        .map(false)
        .map_err(|e| VulkanError::Other(format!("mapping the buffer: {e}")))?;
    let mut objects = Objects::new(gpu);
    let mut buffers = Vec::new();
    let mut sizes = Vec::new();
    let regions = layout.fd_count().max(1);
    for i in 0..regions {
        let region = mapping.region(i);
        let ptr = region.as_ptr();
        if (ptr as u64) % align != 0 {
            return Err(VulkanError::Other(format!(
                "the mapping at {ptr:p} is not aligned to minImportedHostPointerAlignment ({align})"
            )));
        }
        // The kernel mapped whole pages; the import may cover them but no more.
        let size = round_up(region.len() as u64, align);
        let mapped = round_up(region.len() as u64, page);
        if size > mapped {
            return Err(VulkanError::Other(format!(
                "{} bytes rounded to minImportedHostPointerAlignment ({align}) is {size}, past the {mapped} bytes mapped",
                region.len()
            )));
        }
        check_storage_range(gpu, size)?;
        let mut props = vk::MemoryHostPointerPropertiesEXT::default();
        // SAFETY: ptr is the start of a live mapping of at least `size` bytes (whole pages),
        // kept alive by `mapping`, which the Import owns and drops after the memory.
        unsafe {
            (ext.fp().get_memory_host_pointer_properties_ext)(
                gpu.device.handle(),
                vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT,
                ptr.cast(),
                &mut props,
            )
        }
        .result()
        .map_err(call("vkGetMemoryHostPointerPropertiesEXT"))?;
        let b = storage_buffer(
            gpu,
            &mut objects,
            size,
            vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT,
            vk::BufferUsageFlags::empty(),
        )?;
        // SAFETY: b is a live buffer of this device.
        let reqs = unsafe { gpu.device.get_buffer_memory_requirements(b) };
        if reqs.size > size {
            return Err(VulkanError::Other(format!(
                "the driver wants {} bytes for a {size}-byte buffer over host memory",
                reqs.size
            )));
        }
        let type_index = gpu
            .memory_type(
                reqs.memory_type_bits & props.memory_type_bits,
                vk::MemoryPropertyFlags::empty(),
                vk::MemoryPropertyFlags::DEVICE_LOCAL,
            )
            .ok_or_else(|| {
                VulkanError::Other("no memory type allows importing this host pointer".into())
            })?;
        let mut import = vk::ImportMemoryHostPointerInfoEXT::default()
            .handle_type(vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT)
            .host_pointer(ptr as *mut std::ffi::c_void);
        // Rule (VUID-VkImportMemoryHostPointerInfoEXT-pHostPointer-01749 and
        // VUID-VkMemoryAllocateInfo-allocationSize-01745): the pointer and allocationSize are
        // multiples of minImportedHostPointerAlignment; the memory type is one
        // vkGetMemoryHostPointerPropertiesEXT allows.
        let info = vk::MemoryAllocateInfo::default()
            .allocation_size(size)
            .memory_type_index(type_index)
            .push_next(&mut import);
        // SAFETY: as for the properties query; the pages stay mapped while the memory lives.
        let memory = unsafe { gpu.device.allocate_memory(&info, None) }
            .map_err(call("vkAllocateMemory(import host pointer)"))?;
        objects.push(VkObject::Memory(memory));
        crate::counters::bump(&crate::counters::GPU_IMPORTS);
        // SAFETY: b is unbound, memory is big enough and of an allowed type.
        unsafe { gpu.device.bind_buffer_memory(b, memory, 0) }
            .map_err(call("vkBindBufferMemory"))?;
        buffers.push(b);
        sizes.push(size);
    }
    Ok(Import {
        path: ImportPath::HostPointer,
        note: String::new(),
        reads: buffer_reads(&buffers, &sizes, layout),
        foreign_buffers: Vec::new(),
        foreign_images: Vec::new(),
        scratch_images: Vec::new(),
        staging: None,
        _objects: objects,
        mapping: Some(mapping),
    })
}

/// A host-visible (and, if possible, device-local) buffer the CPU writes through a persistent
/// mapping.
pub(crate) fn host_buffer(
    gpu: &Gpu,
    objects: &mut Objects,
    size: u64,
    usage: vk::BufferUsageFlags,
) -> Result<(vk::Buffer, *mut u8, bool), VulkanError> {
    let b = storage_buffer(
        gpu,
        objects,
        size,
        vk::ExternalMemoryHandleTypeFlags::empty(),
        usage,
    )?;
    // SAFETY: b is a live buffer of this device.
    let reqs = unsafe { gpu.device.get_buffer_memory_requirements(b) };
    let host = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
    let type_index = gpu
        .memory_type(
            reqs.memory_type_bits,
            host,
            vk::MemoryPropertyFlags::DEVICE_LOCAL,
        )
        .ok_or_else(|| VulkanError::Other("no host-visible coherent memory".into()))?;
    let device_local = gpu.mem_props.memory_types[type_index as usize]
        .property_flags
        .contains(vk::MemoryPropertyFlags::DEVICE_LOCAL);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(reqs.size)
        .memory_type_index(type_index);
    // SAFETY: plain allocation.
    let memory =
        unsafe { gpu.device.allocate_memory(&info, None) }.map_err(call("vkAllocateMemory"))?;
    objects.push(VkObject::Memory(memory));
    // SAFETY: b unbound, memory fits; then map the whole (host-visible) allocation once.
    let ptr = unsafe {
        gpu.device
            .bind_buffer_memory(b, memory, 0)
            .map_err(call("vkBindBufferMemory"))?;
        gpu.device
            .map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
            .map_err(call("vkMapMemory"))?
    };
    Ok((b, ptr.cast(), device_local))
}

/// Device-local buffer memory for the staging path's GPU copy.
fn device_buffer(gpu: &Gpu, objects: &mut Objects, size: u64) -> Result<vk::Buffer, VulkanError> {
    let b = storage_buffer(
        gpu,
        objects,
        size,
        vk::ExternalMemoryHandleTypeFlags::empty(),
        vk::BufferUsageFlags::TRANSFER_DST,
    )?;
    // SAFETY: b is a live buffer.
    let reqs = unsafe { gpu.device.get_buffer_memory_requirements(b) };
    let type_index = gpu
        .memory_type(
            reqs.memory_type_bits,
            vk::MemoryPropertyFlags::DEVICE_LOCAL,
            vk::MemoryPropertyFlags::empty(),
        )
        .ok_or_else(|| VulkanError::Other("no device-local memory".into()))?;
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(reqs.size)
        .memory_type_index(type_index);
    // SAFETY: plain allocation, then binding an unbound buffer to memory that fits.
    unsafe {
        let memory = gpu
            .device
            .allocate_memory(&info, None)
            .map_err(call("vkAllocateMemory"))?;
        objects.push(VkObject::Memory(memory));
        gpu.device
            .bind_buffer_memory(b, memory, 0)
            .map_err(call("vkBindBufferMemory"))?;
    }
    Ok(b)
}

/// The staging path: a CPU mapping of the buffer, copied every frame into host-visible memory
/// laid out like the source (same offsets and strides), plus a GPU copy into device-local
/// memory where host-visible memory is not device-local.
fn import_staging(gpu: &Arc<Gpu>, buffer: &Buffer) -> Result<Import, VulkanError> {
    let layout = buffer.layout();
    let mapping = buffer
        .map(false)
        .map_err(|e| VulkanError::Other(format!("mapping the buffer: {e}")))?;
    let mut objects = Objects::new(gpu);
    let mut ptrs = Vec::new();
    let mut device_copies = Vec::new();
    let mut buffers = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..layout.fd_count().max(1) {
        let need = layout
            .required_size(i as u32)
            .max(if i == 0 { layout.size() } else { 0 });
        let size = round_up(need, 4);
        check_storage_range(gpu, size)?;
        let (host, ptr, device_local) =
            host_buffer(gpu, &mut objects, size, vk::BufferUsageFlags::TRANSFER_SRC)?;
        ptrs.push(ptr);
        if device_local {
            buffers.push(host);
        } else {
            let dev = device_buffer(gpu, &mut objects, size)?;
            device_copies.push((host, dev, size));
            buffers.push(dev);
        }
        sizes.push(size);
    }
    Ok(Import {
        path: ImportPath::Staging,
        note: String::new(),
        reads: buffer_reads(&buffers, &sizes, layout),
        foreign_buffers: Vec::new(),
        foreign_images: Vec::new(),
        scratch_images: Vec::new(),
        staging: Some(Staging {
            ptrs,
            device_copies,
        }),
        _objects: objects,
        mapping: Some(mapping),
    })
}

/// Device-only scratch memory shaped like `layout` (buffers, or optimal-tiling images when
/// `images`), with no content: running the pipelines on it once makes the driver compile them
/// (llvmpipe compiles on first dispatch) before any frame is waiting.
pub(crate) fn scratch(
    gpu: &Arc<Gpu>,
    layout: &FrameLayout,
    images: bool,
) -> Result<Import, VulkanError> {
    let mut objects = Objects::new(gpu);
    if !images {
        let size = round_up(layout.size().max(layout.required_size(0)), 4);
        let (b, _, _) = host_buffer(gpu, &mut objects, size, vk::BufferUsageFlags::empty())?;
        return Ok(Import {
            path: ImportPath::Staging,
            note: "warm-up".into(),
            reads: buffer_reads(&[b], &[size], layout),
            foreign_buffers: Vec::new(),
            foreign_images: Vec::new(),
            scratch_images: Vec::new(),
            staging: None,
            _objects: objects,
            mapping: None,
        });
    }
    let plan = image_plan(layout.fourcc())
        .ok_or_else(|| VulkanError::Other(format!("{} has no image path", layout.fourcc())))?;
    let specs = image_specs(layout, plan, false);
    let mut views = [vk::ImageView::null(); 2];
    let mut made = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        // Rule: an ordinary optimal-tiling storage image, one level and layer, UNDEFINED.
        let info = vk::ImageCreateInfo::default()
            .image_type(vk::ImageType::TYPE_2D)
            .format(spec.format)
            .extent(vk::Extent3D {
                width: spec.width,
                height: spec.height,
                depth: 1,
            })
            .mip_levels(1)
            .array_layers(1)
            .samples(vk::SampleCountFlags::TYPE_1)
            .tiling(vk::ImageTiling::OPTIMAL)
            .usage(vk::ImageUsageFlags::STORAGE)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .initial_layout(vk::ImageLayout::UNDEFINED);
        // SAFETY: the info lives across the call.
        let image =
            unsafe { gpu.device.create_image(&info, None) }.map_err(call("vkCreateImage"))?;
        objects.push(VkObject::Image(image));
        // SAFETY: a live image.
        let reqs = unsafe { gpu.device.get_image_memory_requirements(image) };
        let type_index = gpu
            .memory_type(
                reqs.memory_type_bits,
                vk::MemoryPropertyFlags::empty(),
                vk::MemoryPropertyFlags::DEVICE_LOCAL,
            )
            .ok_or_else(|| VulkanError::Other("no memory type for a scratch image".into()))?;
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(reqs.size)
            .memory_type_index(type_index);
        // SAFETY: plain allocation; binding an unbound image to memory that fits.
        unsafe {
            let memory = gpu
                .device
                .allocate_memory(&alloc, None)
                .map_err(call("vkAllocateMemory"))?;
            objects.push(VkObject::Memory(memory));
            gpu.device
                .bind_image_memory(image, memory, 0)
                .map_err(call("vkBindImageMemory"))?;
        }
        let view_info = vk::ImageViewCreateInfo::default()
            .image(image)
            .view_type(vk::ImageViewType::TYPE_2D)
            .format(spec.format)
            .subresource_range(vk::ImageSubresourceRange {
                aspect_mask: vk::ImageAspectFlags::COLOR,
                base_mip_level: 0,
                level_count: 1,
                base_array_layer: 0,
                layer_count: 1,
            });
        // SAFETY: the image is live and bound.
        let view = unsafe { gpu.device.create_image_view(&view_info, None) }
            .map_err(call("vkCreateImageView"))?;
        objects.push(VkObject::View(view));
        views[i] = view;
        made.push(image);
    }
    Ok(Import {
        path: ImportPath::Staging,
        note: "warm-up".into(),
        reads: Reads::Images {
            views,
            nv12: plan == ImagePlan::Nv12,
        },
        foreign_buffers: Vec::new(),
        foreign_images: Vec::new(),
        scratch_images: made,
        staging: None,
        _objects: objects,
        mapping: None,
    })
}

impl Import {
    /// For the staging path: copies the frame's visible bytes (row by row, same offsets and
    /// strides) into the staging memory. Returns the bytes copied (0 on zero-copy paths). The
    /// CPU access bracket makes dma-buf reads coherent.
    pub(crate) fn stage(&mut self) -> Result<u64, VulkanError> {
        let (Some(staging), Some(mapping)) = (&self.staging, &mut self.mapping) else {
            return Ok(0);
        };
        let access = mapping
            .access(Access::Read)
            .map_err(|e| VulkanError::Other(format!("CPU access for the staging copy: {e}")))?;
        let layout = access.layout().clone();
        let mut copied = 0u64;
        for (p, pl) in layout.planes().iter().enumerate() {
            let dst = staging.ptrs[pl.fd_index as usize];
            for r in 0..layout.plane_rows(p) {
                let row = access.row(p, r);
                let at = pl.offset as usize + r as usize * pl.stride as usize;
                // SAFETY: the staging memory is a live persistent mapping of at least
                // required_size(fd) bytes, laid out like the source, so [at, at + row.len())
                // is inside it; the GPU is not reading it (the previous frame's fence was
                // waited for); source and destination do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(row.as_ptr(), dst.add(at), row.len());
                }
                copied += row.len() as u64;
            }
        }
        if !staging.device_copies.is_empty() {
            copied *= 2; // and the GPU copies it once more
        }
        Ok(copied)
    }

    /// Whether the GPU reads the memory in place.
    pub(crate) fn is_foreign(&self) -> bool {
        !self.foreign_buffers.is_empty() || !self.foreign_images.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Fourcc;
    use crate::sink::vulkan::device::plane_formats;

    #[test]
    fn image_specs_follow_the_layout() {
        let l = FrameLayout::linear(Fourcc::YUYV, 640, 480, 256).unwrap();
        let s = image_specs(&l, image_plan(Fourcc::YUYV).unwrap(), false);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].width, s[0].height), (320, 480));
        assert_eq!(s[0].planes, vec![(0, 1280)]);
        let l = FrameLayout::linear(Fourcc::NV12, 640, 480, 64).unwrap();
        let s = image_specs(&l, ImagePlan::Nv12, false);
        assert_eq!(s.len(), 2);
        assert_eq!((s[1].width, s[1].height), (320, 240));
        assert_eq!(s[1].planes, vec![(640 * 480, 640)]);
        let s = image_specs(&l, ImagePlan::Nv12, true);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].planes.len(), 2);
        assert_eq!(
            plane_formats(ImagePlan::Nv12, true),
            vec![vk::Format::G8_B8R8_2PLANE_420_UNORM]
        );
    }
}
