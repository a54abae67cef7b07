//! Conversions between this crate's terms and Vulkan's: which Vulkan formats and images a
//! fourcc is read through ([`image_plan`], [`plane_formats`], [`image_specs`]), the shaders'
//! format codes, and the names reports use for device types and versions.

use ash::vk;

use super::error::VulkanError;
use crate::format::{Fourcc, FrameLayout};

/// How a format is read through the image path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePlan {
    /// One `R8G8B8A8_UINT` image, `width / texel_pixels` texels wide (2 for YUYV/UYVY).
    Packed {
        /// Pixels per 4-byte texel.
        texel_pixels: u32,
    },
    /// NV12: a multi-planar `G8_B8R8_2PLANE_420_UNORM` image with `R8_UINT`/`R8G8_UINT` plane
    /// views, or (where the driver cannot) one `R8_UINT` and one `R8G8_UINT` image.
    Nv12,
}

/// The image plan for a fourcc, `None` where no storage-image format fits (RG24: buffer path).
pub fn image_plan(fourcc: Fourcc) -> Option<ImagePlan> {
    match fourcc {
        Fourcc::XR24 | Fourcc::AR24 | Fourcc::XB24 | Fourcc::AB24 => {
            Some(ImagePlan::Packed { texel_pixels: 1 })
        }
        Fourcc::YUYV | Fourcc::UYVY => Some(ImagePlan::Packed { texel_pixels: 2 }),
        Fourcc::NV12 => Some(ImagePlan::Nv12),
        _ => None,
    }
}

/// The Vulkan formats the image path creates for a plan (one per image).
pub(crate) fn plane_formats(plan: ImagePlan, multi_planar: bool) -> Vec<vk::Format> {
    match plan {
        ImagePlan::Packed { .. } => vec![vk::Format::R8G8B8A8_UINT],
        ImagePlan::Nv12 if multi_planar => vec![vk::Format::G8_B8R8_2PLANE_420_UNORM],
        ImagePlan::Nv12 => vec![vk::Format::R8_UINT, vk::Format::R8G8_UINT],
    }
}

/// The storage views the shader reads for a plan: `(image index, view format, aspect)`, the
/// packed view, or NV12's luma and chroma (plane aspects of one multi-planar image, or the two
/// plane images).
pub(crate) fn plane_views(
    plan: ImagePlan,
    multi_planar: bool,
) -> Vec<(usize, vk::Format, vk::ImageAspectFlags)> {
    match (plan, multi_planar) {
        (ImagePlan::Packed { .. }, _) => {
            vec![(0, vk::Format::R8G8B8A8_UINT, vk::ImageAspectFlags::COLOR)]
        }
        (ImagePlan::Nv12, true) => vec![
            (0, vk::Format::R8_UINT, vk::ImageAspectFlags::PLANE_0),
            (0, vk::Format::R8G8_UINT, vk::ImageAspectFlags::PLANE_1),
        ],
        (ImagePlan::Nv12, false) => vec![
            (0, vk::Format::R8_UINT, vk::ImageAspectFlags::COLOR),
            (1, vk::Format::R8G8_UINT, vk::ImageAspectFlags::COLOR),
        ],
    }
}

/// Image creation flags for an image of the plan: a multi-planar image is read through plane
/// views of other formats (`MUTABLE_FORMAT`) with storage use that the multi-planar format
/// lacks but the plane formats have (`EXTENDED_USAGE`).
pub(crate) fn image_flags(multi_planar: bool) -> vk::ImageCreateFlags {
    if multi_planar {
        vk::ImageCreateFlags::MUTABLE_FORMAT | vk::ImageCreateFlags::EXTENDED_USAGE
    } else {
        vk::ImageCreateFlags::empty()
    }
}

/// One image of the image path: its format, extent, plane layouts and the fd holding them.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub(crate) format: vk::Format,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) planes: Vec<(u64, u32)>,
    pub(crate) first_plane: usize,
    pub(crate) fd_index: usize,
    pub(crate) multi_planar: bool,
}

impl ImageSpec {
    /// The Vulkan format, as Vulkan spells it (`R8G8B8A8_UINT`).
    pub fn format_name(&self) -> String {
        format!("{:?}", self.format)
    }

    /// Width in texels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in texels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// `(offset, stride)` of each memory plane of the image.
    pub fn planes(&self) -> &[(u64, u32)] {
        &self.planes
    }

    /// The frame plane the image's first memory plane is (1 for NV12's separate chroma image).
    pub fn first_plane(&self) -> usize {
        self.first_plane
    }

    /// Whether it is one multi-planar image holding every plane.
    pub fn multi_planar(&self) -> bool {
        self.multi_planar
    }
}

/// The images the image path makes for a layout.
pub fn image_specs(layout: &FrameLayout, plan: ImagePlan, multi_planar: bool) -> Vec<ImageSpec> {
    let pl = |p: usize| (layout.planes()[p].offset, layout.planes()[p].stride);
    let fd = |p: usize| layout.planes()[p].fd_index as usize;
    match plan {
        ImagePlan::Packed { texel_pixels } => vec![ImageSpec {
            format: vk::Format::R8G8B8A8_UINT,
            width: layout.width() / texel_pixels,
            height: layout.height(),
            planes: vec![pl(0)],
            first_plane: 0,
            fd_index: fd(0),
            multi_planar: false,
        }],
        ImagePlan::Nv12 if multi_planar => vec![ImageSpec {
            format: vk::Format::G8_B8R8_2PLANE_420_UNORM,
            width: layout.width(),
            height: layout.height(),
            planes: vec![pl(0), pl(1)],
            first_plane: 0,
            fd_index: 0,
            multi_planar: true,
        }],
        ImagePlan::Nv12 => vec![
            ImageSpec {
                format: vk::Format::R8_UINT,
                width: layout.width(),
                height: layout.height(),
                planes: vec![pl(0)],
                first_plane: 0,
                fd_index: fd(0),
                multi_planar: false,
            },
            ImageSpec {
                format: vk::Format::R8G8_UINT,
                width: layout.width() / 2,
                height: layout.height() / 2,
                planes: vec![pl(1)],
                first_plane: 1,
                fd_index: fd(1),
                multi_planar: false,
            },
        ],
    }
}

/// The shaders' format code (`FMT_*` in `shaders/common.glsl`).
pub(crate) fn shader_format(f: Fourcc) -> Result<u32, VulkanError> {
    Ok(match f {
        Fourcc::XR24 | Fourcc::AR24 => 0,
        Fourcc::XB24 | Fourcc::AB24 => 1,
        Fourcc::RG24 => 2,
        Fourcc::YUYV => 3,
        Fourcc::UYVY => 4,
        Fourcc::NV12 => 5,
        Fourcc::NV21 => 6,
        Fourcc::NV16 => 7,
        Fourcc::P010 => 8,
        Fourcc::YU12 => 9,
        other => return Err(VulkanError::unsupported(format!("{other} has no shader"))),
    })
}

/// A device type as reports name it.
pub(crate) fn device_type(t: vk::PhysicalDeviceType) -> &'static str {
    match t {
        vk::PhysicalDeviceType::DISCRETE_GPU => "discrete-gpu",
        vk::PhysicalDeviceType::INTEGRATED_GPU => "integrated-gpu",
        vk::PhysicalDeviceType::VIRTUAL_GPU => "virtual-gpu",
        vk::PhysicalDeviceType::CPU => "cpu",
        _ => "other",
    }
}

/// `major.minor.patch` of a packed Vulkan version.
pub(crate) fn version_string(v: u32) -> String {
    format!(
        "{}.{}.{}",
        vk::api_version_major(v),
        vk::api_version_minor(v),
        vk::api_version_patch(v)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s[1].first_plane(), 1);
        let s = image_specs(&l, ImagePlan::Nv12, true);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].planes.len(), 2);
        assert_eq!(
            plane_formats(ImagePlan::Nv12, true),
            vec![vk::Format::G8_B8R8_2PLANE_420_UNORM]
        );
        // One view per plane the shader reads, on the images the specs make.
        assert_eq!(plane_views(ImagePlan::Nv12, false)[1].0, 1);
        assert_eq!(plane_views(ImagePlan::Nv12, true)[1].0, 0);
    }

    #[test]
    fn every_format_with_a_layout_has_a_shader() {
        for f in Fourcc::ALL {
            assert!(shader_format(f).is_ok(), "{f}");
        }
    }
}
