//! dma-bufs into the device: as `VkBuffer`s bound to the imported memory (one per fd, LINEAR
//! only), or as `VkImage`s with an explicit DRM-modifier layout — the planes' offsets and
//! strides — read through storage views (multi-planar NV12 included). Each fd is dup'ed and the
//! dup handed to the driver, which owns it only if the import succeeds (see
//! `memory::Backing::DmaBuf`).

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use ash::vk;

use super::{buffer_reads, storage_image_info, Import, Reads};
use crate::buffer::Buffer;
use crate::format::Modifier;
use crate::gpu::vulkan::conv::{image_flags, image_specs, plane_views, ImagePlan, ImageSpec};
use crate::gpu::vulkan::device::Device;
use crate::gpu::vulkan::error::{map_modifier_image_err, map_oom_err, VulkanError};
use crate::gpu::vulkan::instance::ImportPath;
use crate::gpu::vulkan::memory::{
    allocate_and_bind, round_up, storage_buffer, Backing, BindTarget, DeviceObjects, VkObject,
};

/// The size of fd `i` of `buffer` (what an import of it may cover).
fn dma_buf_size(buffer: &Buffer, i: usize, fd: BorrowedFd<'_>) -> Result<u64, VulkanError> {
    Ok(crate::buffer::inspect_fd(buffer.kind(), i, fd)?.size)
}

/// dma-buf → memory → `VkBuffer`, one per fd.
pub(crate) fn import_buffers(device: &Arc<Device>, buffer: &Buffer) -> Result<Import, VulkanError> {
    let layout = buffer.layout();
    let mut objects = DeviceObjects::new(device);
    let mut buffers = Vec::new();
    let mut sizes = Vec::new();
    for (i, fd) in buffer.fds().into_iter().enumerate() {
        let have = dma_buf_size(buffer, i, fd)?;
        let need = layout
            .required_size(i as u32)
            .max(if i == 0 { layout.size() } else { 0 });
        let size = round_up(need, 4).min(have);
        let b = storage_buffer(
            device,
            &mut objects,
            size,
            vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT,
            vk::BufferUsageFlags::empty(),
        )?;
        let backing = Backing::DmaBuf { fd, size: have };
        allocate_and_bind(device, &mut objects, BindTarget::Buffer(b), backing)?;
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

/// Creates (without memory) the image for `spec` with an explicit DRM-modifier plane layout
/// (`(offset, stride)` per memory plane): the driver checks offsets and strides here. Used by
/// the import and by `Device::check_image_layout`.
pub(crate) fn create_modifier_image(
    device: &Device,
    objects: &mut DeviceObjects,
    spec: &ImageSpec,
    planes: &[(u64, u32)],
    modifier: Modifier,
) -> Result<vk::Image, VulkanError> {
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
        .drm_format_modifier(modifier.0)
        .plane_layouts(&plane_layouts);
    let mut external = vk::ExternalMemoryImageCreateInfo::default()
        .handle_types(vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT);
    let view_formats = [vk::Format::R8_UINT, vk::Format::R8G8_UINT];
    let mut format_list = vk::ImageFormatListCreateInfo::default().view_formats(&view_formats);
    // Rule (VUID-VkImageCreateInfo-tiling-02261): DRM_FORMAT_MODIFIER_EXT tiling comes with
    // exactly one of the modifier list / explicit create infos (explicit here);
    // initialLayout is UNDEFINED; one mip level and layer, one sample; external memory named
    // in VkExternalMemoryImageCreateInfo.
    let mut info = storage_image_info(spec, vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT)
        .flags(image_flags(spec.multi_planar))
        .push_next(&mut explicit)
        .push_next(&mut external);
    if spec.multi_planar {
        info = info.push_next(&mut format_list);
    }
    // SAFETY: the info chain lives across the call.
    let image = unsafe { device.device.create_image(&info, None) }.map_err(
        map_modifier_image_err(format!(
            "{:?} {}x{} with modifier {modifier} (offset, stride per plane: {planes:?})",
            spec.format, spec.width, spec.height
        )),
    )?;
    objects.push(VkObject::Image(image));
    Ok(image)
}

/// Checks that the image path can take the buffer's modifier (listed for its fourcc, with
/// storage use); returns whether NV12 goes in as one multi-planar image.
fn check_modifier(device: &Device, buffer: &Buffer) -> Result<bool, VulkanError> {
    let layout = buffer.layout();
    let support = device.caps().format(layout.fourcc()).ok_or_else(|| {
        VulkanError::unsupported(format!("no DRM-modifier support for {}", layout.fourcc()))
    })?;
    let modifier = support
        .modifiers
        .iter()
        .find(|m| m.modifier == layout.modifier())
        .ok_or_else(|| {
            VulkanError::unsupported(format!(
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
        return Err(VulkanError::unsupported(format!(
            "{} with modifier {}: the driver lists no storage-image use",
            layout.fourcc(),
            layout.modifier()
        )));
    }
    if support.multi_planar && layout.fd_count() > 1 {
        return Err(VulkanError::unsupported(
            "NV12 planes in separate dma-bufs (disjoint images) are not handled",
        ));
    }
    Ok(support.multi_planar)
}

/// dma-buf → `VkImage`(s) with explicit DRM-modifier layouts → storage views.
pub(crate) fn import_image(
    device: &Arc<Device>,
    buffer: &Buffer,
    plan: ImagePlan,
) -> Result<Import, VulkanError> {
    let layout = buffer.layout();
    let multi = check_modifier(device, buffer)?;
    let mut objects = DeviceObjects::new(device);
    let fds = buffer.fds();
    let sizes: Vec<u64> = fds
        .iter()
        .enumerate()
        .map(|(i, fd)| dma_buf_size(buffer, i, *fd))
        .collect::<Result<_, _>>()?;
    let mut images = Vec::new();
    // The import of each fd, shared by the images on it that need no memory of their own.
    let mut shared: Vec<Option<vk::DeviceMemory>> = vec![None; fds.len()];
    for spec in image_specs(layout, plan, multi) {
        let (max_width, max_height) = device.image_limits(&spec, layout.modifier())?;
        if spec.width > max_width || spec.height > max_height {
            return Err(VulkanError::unsupported(format!(
                "{:?} {}x{} exceeds the driver's {max_width}x{max_height}",
                spec.format, spec.width, spec.height
            )));
        }
        let image =
            create_modifier_image(device, &mut objects, &spec, &spec.planes, layout.modifier())?;
        let target = BindTarget::Image(image);
        let fd = spec.fd_index;
        let backing = Backing::DmaBuf {
            fd: fds[fd],
            size: sizes[fd],
        };
        if target.wants_dedicated(device) {
            allocate_and_bind(device, &mut objects, target, backing)?;
        } else if let Some(memory) = shared[fd] {
            target.bind(device, memory)?;
        } else {
            shared[fd] = Some(allocate_and_bind(device, &mut objects, target, backing)?.memory);
        }
        images.push(image);
    }
    let mut views = [vk::ImageView::null(); 2];
    for (i, (image, format, aspect)) in plane_views(plan, multi).into_iter().enumerate() {
        let mut usage = vk::ImageViewUsageCreateInfo::default().usage(vk::ImageUsageFlags::STORAGE);
        // Rule: a view of one plane of a multi-planar image uses a single-plane aspect and a
        // format compatible with that plane (R8 for G8, R8G8 for B8R8); the image was created
        // MUTABLE_FORMAT. Storage use is restated per view (VkImageViewUsageCreateInfo).
        let info = vk::ImageViewCreateInfo::default()
            .image(images[image])
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
        let view = unsafe { device.device.create_image_view(&info, None) }
            .map_err(map_oom_err("vkCreateImageView"))?;
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
