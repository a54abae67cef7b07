//! Memory the CPU maps into the device: memfd / POSIX / SysV mappings imported with
//! `VK_EXT_external_memory_host` (the mapping is page aligned; its size is rounded up to
//! `minImportedHostPointerAlignment` within the pages mapped); the staging path, where the CPU
//! copies each frame into host-visible memory (and the GPU on into device-local memory where
//! that is not the same); and content-less scratch memory the warm-up runs the pipelines on.

use std::sync::Arc;

use ash::vk;

use super::{buffer_reads, storage_image_info, Import, Reads, Staging};
use crate::buffer::Buffer;
use crate::format::FrameLayout;
use crate::gpu::vulkan::conv::{image_plan, image_specs, ImagePlan};
use crate::gpu::vulkan::device::Device;
use crate::gpu::vulkan::error::{map_oom_err, VulkanError};
use crate::gpu::vulkan::instance::ImportPath;
use crate::gpu::vulkan::memory::{
    allocate_and_bind, device_buffer, host_buffer, round_up, storage_buffer, Backing, BindTarget,
    DeviceObjects, VkObject,
};

/// memfd / POSIX / SysV mapping → host-pointer memory → `VkBuffer`, one per memory object.
pub(crate) fn import_host_pointer(
    device: &Arc<Device>,
    buffer: &Buffer,
) -> Result<Import, VulkanError> {
    let layout = buffer.layout();
    let align = device.caps().min_host_pointer_alignment.max(1);
    let page = crate::sys::mem::page_size() as u64;
    let mapping = buffer.map(false)?;
    let mut objects = DeviceObjects::new(device);
    let mut buffers = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..layout.fd_count().max(1) {
        let region = mapping.region(i);
        let ptr = region.as_ptr();
        if (ptr as u64) % align != 0 {
            return Err(VulkanError::unsupported(format!(
                "the mapping at {ptr:p} is not aligned to minImportedHostPointerAlignment ({align})"
            )));
        }
        // The kernel mapped whole pages; the import may cover them but no more.
        let size = round_up(region.len() as u64, align);
        let mapped = round_up(region.len() as u64, page);
        if size > mapped {
            return Err(VulkanError::unsupported(format!(
                "{} bytes rounded to minImportedHostPointerAlignment ({align}) is {size}, past the {mapped} bytes mapped",
                region.len()
            )));
        }
        let b = storage_buffer(
            device,
            &mut objects,
            size,
            vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT,
            vk::BufferUsageFlags::empty(),
        )?;
        // The pointer and size are aligned (checked above) and cover whole pages of `mapping`,
        // which the Import owns and drops after the memory.
        let backing = Backing::HostPointer {
            ptr: ptr.cast_mut().cast(),
            size,
        };
        allocate_and_bind(device, &mut objects, BindTarget::Buffer(b), backing)?;
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

/// The staging path: a CPU mapping of the buffer, copied every frame into host-visible memory
/// laid out like the source (same offsets and strides), plus a GPU copy into device-local
/// memory where host-visible memory is not device-local.
pub(crate) fn import_staging(device: &Arc<Device>, buffer: &Buffer) -> Result<Import, VulkanError> {
    let layout = buffer.layout();
    let mapping = buffer.map(false)?;
    let mut objects = DeviceObjects::new(device);
    let mut ptrs = Vec::new();
    let mut device_copies = Vec::new();
    let mut buffers = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..layout.fd_count().max(1) {
        let need = layout
            .required_size(i as u32)
            .max(if i == 0 { layout.size() } else { 0 });
        let size = round_up(need, 4);
        let (host, ptr, device_local) = host_buffer(
            device,
            &mut objects,
            size,
            vk::BufferUsageFlags::TRANSFER_SRC,
        )?;
        ptrs.push(ptr);
        if device_local {
            buffers.push(host);
        } else {
            let dev = device_buffer(device, &mut objects, size)?;
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
    device: &Arc<Device>,
    layout: &FrameLayout,
    images: bool,
) -> Result<Import, VulkanError> {
    let mut objects = DeviceObjects::new(device);
    if !images {
        let size = round_up(layout.size().max(layout.required_size(0)), 4);
        let (b, _, _) = host_buffer(device, &mut objects, size, vk::BufferUsageFlags::empty())?;
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
    let plan = image_plan(layout.fourcc()).ok_or_else(|| {
        VulkanError::unsupported(format!("{} has no image path", layout.fourcc()))
    })?;
    let mut views = [vk::ImageView::null(); 2];
    let mut made = Vec::new();
    for (i, spec) in image_specs(layout, plan, false).iter().enumerate() {
        // Rule: an ordinary optimal-tiling storage image, one level and layer, UNDEFINED.
        let info = storage_image_info(spec, vk::ImageTiling::OPTIMAL);
        // SAFETY: the info lives across the call.
        let image = unsafe { device.device.create_image(&info, None) }
            .map_err(map_oom_err("vkCreateImage"))?;
        objects.push(VkObject::Image(image));
        let backing = Backing::New {
            want: vk::MemoryPropertyFlags::empty(),
            prefer: vk::MemoryPropertyFlags::DEVICE_LOCAL,
        };
        allocate_and_bind(device, &mut objects, BindTarget::Image(image), backing)?;
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
        let view = unsafe { device.device.create_image_view(&view_info, None) }
            .map_err(map_oom_err("vkCreateImageView"))?;
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
