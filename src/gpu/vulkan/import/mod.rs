//! Getting a buffer's memory into the device, once per buffer, by the best path that works
//! ([`Import::new`]):
//!
//! - dma-bufs as a `VkImage` with an explicit DRM-modifier layout (the planes' offsets and
//!   strides), multi-planar NV12 included, or as memory bound to a `VkBuffer`
//!   (`VK_EXT_external_memory_dma_buf`) — see [`dma_buf`];
//! - memfd / POSIX / SysV mappings with `VK_EXT_external_memory_host`, else a staging buffer
//!   the CPU copies each frame into — see [`host`].
//!
//! Every object is recorded in a [`DeviceObjects`] list as soon as it exists, so a half-built
//! import is undone by dropping the list (the guard), and a whole one by dropping the
//! [`Import`].

pub(crate) mod dma_buf;
pub(crate) mod host;

use std::sync::Arc;

use ash::vk;

use super::conv::{image_plan, ImageSpec};
use super::device::Device;
use super::error::{PassedOver, VulkanError};
use super::instance::ImportPath;
use super::memory::DeviceObjects;
#[cfg(doc)]
use super::FrameJob;
use crate::buffer::{Access, Buffer, BufferMapping};
use crate::format::{FrameLayout, Modifier};

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
pub struct Import {
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
    pub(crate) _objects: DeviceObjects,
    pub(crate) mapping: Option<BufferMapping>,
}

impl Import {
    /// Imports `buffer` by the best path `mode` allows, once; a buffer no zero-copy path takes
    /// goes through the staging copy (with a warning, unless `mode` asks for it).
    pub fn new(
        device: &Arc<Device>,
        buffer: &Buffer,
        mode: ImportMode,
    ) -> Result<Import, VulkanError> {
        let layout = buffer.layout();
        let kind = buffer.kind();
        if layout.modifier() != Modifier::LINEAR && !kind.is_dma_buf() {
            return Err(VulkanError::unsupported(format!(
                "{kind} buffer with modifier {}: shared memory is read as LINEAR rows only",
                layout.modifier()
            )));
        }
        let mut passed = Vec::new();
        if mode != ImportMode::Staging {
            for &path in ImportPath::for_kind(kind) {
                let forced = matches!(
                    (mode, path),
                    (ImportMode::Image, ImportPath::DmaBufImage)
                        | (ImportMode::Buffer, ImportPath::DmaBufBuffer)
                );
                let skipped = matches!(
                    (mode, path),
                    (ImportMode::Buffer, ImportPath::DmaBufImage)
                        | (ImportMode::Image, ImportPath::DmaBufBuffer)
                );
                if skipped {
                    continue;
                }
                match Self::by(device, buffer, path) {
                    Ok(mut i) => {
                        i.note = note(path, &passed);
                        return Ok(i);
                    }
                    Err(e) if forced => {
                        return Err(VulkanError::Import {
                            path,
                            source: Box::new(e),
                        })
                    }
                    Err(why) => passed.push(PassedOver { path, why }),
                }
            }
        }
        if layout.modifier() != Modifier::LINEAR {
            return Err(VulkanError::NoImportPath {
                modifier: layout.modifier(),
                passed_over: passed,
            });
        }
        let mut i = host::import_staging(device, buffer)?;
        i.note = note(ImportPath::Staging, &passed);
        if mode != ImportMode::Staging {
            log::warn!(
                "vulkan: {kind} {} {}x{}: no zero-copy import ({}); copying every frame",
                layout.fourcc(),
                layout.width(),
                layout.height(),
                super::error::passed_over_list(&passed)
            );
        }
        Ok(i)
    }

    /// Imports `buffer` by one zero-copy `path`, checking first what the device lacks for it.
    fn by(device: &Arc<Device>, buffer: &Buffer, path: ImportPath) -> Result<Import, VulkanError> {
        let layout = buffer.layout();
        let caps = device.caps();
        if !caps.import_paths.contains(&path) {
            return Err(VulkanError::unsupported(format!(
                "{path} import needs {}",
                caps.missing(path).join(", ")
            )));
        }
        match path {
            ImportPath::DmaBufImage => {
                let plan = image_plan(layout.fourcc()).ok_or_else(|| {
                    VulkanError::unsupported(format!(
                        "{} has no storage-image format",
                        layout.fourcc()
                    ))
                })?;
                dma_buf::import_image(device, buffer, plan)
            }
            ImportPath::DmaBufBuffer if layout.modifier() != Modifier::LINEAR => {
                Err(VulkanError::unsupported(format!(
                    "modifier {} is not LINEAR, so the memory cannot be read as a buffer",
                    layout.modifier()
                )))
            }
            ImportPath::DmaBufBuffer => dma_buf::import_buffers(device, buffer),
            ImportPath::HostPointer => host::import_host_pointer(device, buffer),
            ImportPath::Staging => host::import_staging(device, buffer),
        }
    }

    /// How the memory reaches the device.
    pub fn path(&self) -> ImportPath {
        self.path
    }

    /// The path, and why the better ones were passed over (for logs and reports).
    pub fn note(&self) -> &str {
        &self.note
    }

    /// Whether each frame is copied by the CPU first (the staging path, [`FrameJob::stage`]).
    pub fn copies(&self) -> bool {
        self.staging.is_some()
    }

    /// For the staging path: copies the frame's visible bytes (row by row, same offsets and
    /// strides) into the staging memory. Returns the bytes copied (0 on zero-copy paths). The
    /// CPU access bracket makes dma-buf reads coherent. The caller makes sure no submission
    /// reading the staging memory is pending (the job does: see `FrameJob::stage`).
    pub(crate) fn stage(&mut self) -> Result<u64, VulkanError> {
        let (Some(staging), Some(mapping)) = (&self.staging, &mut self.mapping) else {
            return Ok(0);
        };
        let access = mapping.access(Access::Read)?;
        let layout = access.layout().clone();
        let mut copied = 0u64;
        for (p, pl) in layout.planes().iter().enumerate() {
            let dst = staging.ptrs[pl.fd_index as usize];
            for r in 0..layout.plane_rows(p) {
                let row = access.row(p, r);
                let at = pl.offset as usize + r as usize * pl.stride as usize;
                // SAFETY: the staging memory is a live persistent mapping of at least
                // required_size(fd) bytes, laid out like the source, so [at, at + row.len())
                // is inside it; the GPU is not reading it (no submission is pending, the
                // caller's contract); source and destination do not overlap.
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

    /// Whether the GPU reads the memory in place (so it moves between queue families).
    pub(crate) fn is_foreign(&self) -> bool {
        !self.foreign_buffers.is_empty() || !self.foreign_images.is_empty()
    }
}

fn note(path: ImportPath, passed: &[PassedOver]) -> String {
    if passed.is_empty() {
        path.name().to_owned()
    } else {
        format!(
            "{} (passed over: {})",
            path.name(),
            super::error::passed_over_list(passed)
        )
    }
}

/// A 2D storage image of `spec`'s format and size, laid out by `tiling` (OPTIMAL for the
/// device's own images, DRM_FORMAT_MODIFIER_EXT for dma-buf imports): one mip level and layer,
/// one sample, exclusive, initially UNDEFINED. Callers add flags and the create-info chain.
pub(crate) fn storage_image_info<'a>(
    spec: &ImageSpec,
    tiling: vk::ImageTiling,
) -> vk::ImageCreateInfo<'a> {
    vk::ImageCreateInfo::default()
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
        .tiling(tiling)
        .usage(vk::ImageUsageFlags::STORAGE)
        .sharing_mode(vk::SharingMode::EXCLUSIVE)
        .initial_layout(vk::ImageLayout::UNDEFINED)
}

/// The reads of a buffer-path import: the buffers holding planes 0 and 1, and their sizes.
pub(crate) fn buffer_reads(buffers: &[vk::Buffer], sizes: &[u64], layout: &FrameLayout) -> Reads {
    let fd_of = |p: usize| layout.planes().get(p).map_or(0, |pl| pl.fd_index as usize);
    let (b0, b1) = (fd_of(0), fd_of(1));
    Reads::Buffers {
        buffers: [buffers[b0], buffers[b1]],
        words: [(sizes[b0] / 4) as u32, (sizes[b1] / 4) as u32],
    }
}
