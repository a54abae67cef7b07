//! The loader, the instance and the physical devices (wgpu-hal's instance and adapter): Vulkan
//! is loaded at run time (`ash::Entry::load`, so a machine without a loader or ICD gets an
//! error, not a crash); each physical device becomes an [`Adapter`] whose [`DeviceCaps`] say
//! what it can import (paths, host-pointer alignment, SYNC_FD semaphores, DRM modifiers per
//! format); [`select`] picks one for the import paths wanted.

use std::fmt;

use ash::vk;
use serde::Serialize;

use super::conv::{device_type, image_flags, image_plan, plane_formats, version_string, ImagePlan};
use super::error::{map_format_query_err, map_instance_err, map_oom_err, VulkanError};
use crate::buffer::BufferKind;
use crate::format::{FormatModifier, Fourcc, Modifier};

/// How a buffer's memory reaches the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportPath {
    /// dma-buf imported as a `VkImage` with an explicit DRM-modifier layout.
    DmaBufImage,
    /// dma-buf imported as memory bound to a `VkBuffer`.
    DmaBufBuffer,
    /// A CPU mapping imported with `VK_EXT_external_memory_host`, bound to a `VkBuffer`.
    HostPointer,
    /// Copied by the CPU into a staging buffer every frame (counted in `bytes_copied`).
    Staging,
}

impl ImportPath {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::DmaBufImage => "dma-buf-image",
            Self::DmaBufBuffer => "dma-buf-buffer",
            Self::HostPointer => "host-pointer",
            Self::Staging => "staging-copy",
        }
    }

    /// Whether the path reads the frame in place.
    pub fn zero_copy(self) -> bool {
        self != Self::Staging
    }

    /// Device extensions the path needs.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Self::DmaBufImage => &[
                "VK_KHR_external_memory_fd",
                "VK_EXT_external_memory_dma_buf",
                "VK_EXT_image_drm_format_modifier",
            ],
            Self::DmaBufBuffer => &[
                "VK_KHR_external_memory_fd",
                "VK_EXT_external_memory_dma_buf",
            ],
            Self::HostPointer => &["VK_EXT_external_memory_host"],
            Self::Staging => &[],
        }
    }

    /// The zero-copy paths for a buffer kind, best first.
    pub fn for_kind(kind: BufferKind) -> &'static [ImportPath] {
        if kind.is_dma_buf() {
            &[Self::DmaBufImage, Self::DmaBufBuffer]
        } else {
            &[Self::HostPointer]
        }
    }
}

impl fmt::Display for ImportPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One DRM modifier a format can be imported with.
#[derive(Debug, Clone, Serialize)]
pub struct ModifierSupport {
    /// The modifier.
    #[serde(serialize_with = "ser_modifier")]
    pub modifier: Modifier,
    /// Memory planes the modifier uses.
    pub planes: u32,
    /// Whether the driver lists storage-image use (what the compute shader needs).
    pub storage: bool,
}

fn ser_modifier<S: serde::Serializer>(m: &Modifier, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&m.to_string())
}

/// What the image path can do for one fourcc.
#[derive(Debug, Clone, Serialize)]
pub struct FormatSupport {
    /// The fourcc.
    pub fourcc: String,
    /// Vulkan formats the image path uses for it (empty: buffer path only).
    pub vk_formats: Vec<String>,
    /// Whether NV12 goes in as one multi-planar image (else one image per plane).
    pub multi_planar: bool,
    /// Modifiers usable for every image of the plan, as `VkDrmFormatModifierPropertiesListEXT`
    /// lists them.
    pub modifiers: Vec<ModifierSupport>,
}

/// A physical device and what it can import.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceCaps {
    /// Index in `vkEnumeratePhysicalDevices` order.
    pub index: usize,
    /// `deviceName`.
    pub name: String,
    /// Device type (`cpu`, `discrete-gpu`, …).
    pub device_type: String,
    /// API version.
    pub api_version: String,
    /// Relevant device extensions present.
    pub extensions: Vec<String>,
    /// Import paths available, best first.
    pub import_paths: Vec<ImportPath>,
    /// `minImportedHostPointerAlignment` (0 without `VK_EXT_external_memory_host`).
    pub min_host_pointer_alignment: u64,
    /// Binary semaphores import SYNC_FD payloads (acquire fences waited on by the GPU).
    pub sync_fd_import: bool,
    /// Binary semaphores export SYNC_FD payloads (release fences).
    pub sync_fd_export: bool,
    /// `VK_EXT_queue_family_foreign` (else ownership moves to `VK_QUEUE_FAMILY_EXTERNAL`).
    pub queue_family_foreign: bool,
    /// `maxStorageBufferRange`: the largest buffer-path import.
    pub max_storage_buffer_range: u64,
    /// `maxImageDimension2D`.
    pub max_image_dimension_2d: u32,
    /// Image-path support per fourcc.
    pub formats: Vec<FormatSupport>,
}

impl DeviceCaps {
    /// Whether a device extension is present.
    pub fn has(&self, ext: &str) -> bool {
        self.extensions.iter().any(|e| e == ext)
    }

    /// The image-path support for a fourcc.
    pub fn format(&self, fourcc: Fourcc) -> Option<&FormatSupport> {
        self.formats.iter().find(|f| f.fourcc == fourcc.name())
    }

    /// The extensions `path` needs that this device lacks.
    pub fn missing(&self, path: ImportPath) -> Vec<&'static str> {
        path.extensions()
            .iter()
            .copied()
            .filter(|e| !self.has(e))
            .collect()
    }

    /// The (fourcc, modifier) pairs the device can import: LINEAR for every format (buffer
    /// paths), plus every modifier the image path lists with storage use.
    pub fn importable_formats(&self) -> Vec<FormatModifier> {
        let mut out = Vec::new();
        for f in Fourcc::ALL {
            out.push(FormatModifier {
                fourcc: f,
                modifier: Modifier::LINEAR,
            });
            let listed = self.format(f).into_iter().flat_map(|s| &s.modifiers);
            for m in listed.filter(|m| m.storage && m.modifier != Modifier::LINEAR) {
                out.push(FormatModifier {
                    fourcc: f,
                    modifier: m.modifier,
                });
            }
        }
        out
    }
}

/// A physical device and its capabilities, from [`Instance::adapters`].
#[derive(Debug, Clone)]
pub struct Adapter {
    pub(crate) physical: vk::PhysicalDevice,
    caps: DeviceCaps,
}

impl Adapter {
    /// What the device can import.
    pub fn caps(&self) -> &DeviceCaps {
        &self.caps
    }

    /// Its capabilities, the adapter given up.
    pub fn into_caps(self) -> DeviceCaps {
        self.caps
    }
}

/// Device extensions this crate uses when present.
const WANTED_EXTENSIONS: &[&str] = &[
    "VK_KHR_external_memory_fd",
    "VK_EXT_external_memory_dma_buf",
    "VK_EXT_image_drm_format_modifier",
    "VK_KHR_image_format_list",
    "VK_EXT_external_memory_host",
    "VK_EXT_queue_family_foreign",
    "VK_KHR_external_semaphore_fd",
    "VK_KHR_external_fence_fd",
];

/// A loaded Vulkan instance (enough for capability queries: probe, explain).
pub struct Instance {
    pub(crate) instance: ash::Instance,
    // Keeps the loader library open while the instance lives; dropped after it.
    _entry: ash::Entry,
}

impl Instance {
    /// Opens the loader and creates an instance (Vulkan 1.1 or later).
    pub fn load() -> Result<Instance, VulkanError> {
        // SAFETY: loading libvulkan runs its initialisers; the loader is a well-behaved system
        // library, and the returned Entry keeps it loaded for as long as we use its functions.
        let entry = unsafe { ash::Entry::load() }.map_err(VulkanError::NoLoader)?;
        // SAFETY: a global command with no arguments besides the out value.
        let version = unsafe { entry.try_enumerate_instance_version() }
            .map_err(map_oom_err("vkEnumerateInstanceVersion"))?
            .unwrap_or(vk::API_VERSION_1_0);
        if version < vk::API_VERSION_1_1 {
            return Err(VulkanError::unsupported(format!(
                "the Vulkan loader is version {}; 1.1 or later is needed",
                version_string(version)
            )));
        }
        let app = vk::ApplicationInfo::default()
            .application_name(c"frameshare")
            .application_version(1)
            .engine_name(c"frameshare")
            // Rule: apiVersion is the highest version the application uses; 1.1 brings external
            // memory, get_physical_device_properties2 and sampler Y'CbCr conversion into core.
            .api_version(version.min(vk::API_VERSION_1_3));
        let info = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: `info` and everything it points to live across the call.
        let instance = unsafe { entry.create_instance(&info, None) }.map_err(map_instance_err)?;
        Ok(Instance {
            instance,
            _entry: entry,
        })
    }

    /// The physical devices, with their capabilities.
    pub fn adapters(&self) -> Result<Vec<Adapter>, VulkanError> {
        // SAFETY: the instance is live.
        let pdevs = unsafe { self.instance.enumerate_physical_devices() }.map_err(|e| match e {
            vk::Result::ERROR_INITIALIZATION_FAILED => VulkanError::NoDevice {
                why: "vkEnumeratePhysicalDevices: initialization failed",
            },
            e => map_oom_err("vkEnumeratePhysicalDevices")(e),
        })?;
        if pdevs.is_empty() {
            return Err(VulkanError::NoDevice {
                why: "no physical device",
            });
        }
        pdevs
            .into_iter()
            .enumerate()
            .map(|(i, physical)| {
                Ok(Adapter {
                    physical,
                    caps: self.caps(i, physical)?,
                })
            })
            .collect()
    }

    fn extension_names(&self, pdev: vk::PhysicalDevice) -> Result<Vec<String>, VulkanError> {
        // SAFETY: pdev came from this instance.
        let exts = unsafe { self.instance.enumerate_device_extension_properties(pdev) }
            .map_err(map_oom_err("vkEnumerateDeviceExtensionProperties"))?;
        Ok(exts
            .iter()
            .filter_map(|e| e.extension_name_as_c_str().ok())
            .map(|s| s.to_string_lossy().into_owned())
            .collect())
    }

    /// Reads one device's capabilities.
    fn caps(&self, index: usize, pdev: vk::PhysicalDevice) -> Result<DeviceCaps, VulkanError> {
        let all = self.extension_names(pdev)?;
        let extensions: Vec<String> = WANTED_EXTENSIONS
            .iter()
            .filter(|w| all.iter().any(|e| e == *w))
            .map(|s| s.to_string())
            .collect();
        let has = |e: &str| extensions.iter().any(|x| x == e);
        let mut host = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
        let mut props2 = vk::PhysicalDeviceProperties2::default();
        if has("VK_EXT_external_memory_host") {
            props2 = props2.push_next(&mut host);
        }
        // SAFETY: pdev came from this instance; the chain holds only structs of extensions the
        // device has.
        unsafe {
            self.instance
                .get_physical_device_properties2(pdev, &mut props2)
        };
        let p = props2.properties;
        let min_align = host.min_imported_host_pointer_alignment;
        let (sync_fd_import, sync_fd_export) = if has("VK_KHR_external_semaphore_fd") {
            let info = vk::PhysicalDeviceExternalSemaphoreInfo::default()
                .handle_type(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD);
            let mut out = vk::ExternalSemaphoreProperties::default();
            // SAFETY: plain query on a live physical device.
            unsafe {
                self.instance
                    .get_physical_device_external_semaphore_properties(pdev, &info, &mut out)
            };
            let f = out.external_semaphore_features;
            (
                f.contains(vk::ExternalSemaphoreFeatureFlags::IMPORTABLE),
                f.contains(vk::ExternalSemaphoreFeatureFlags::EXPORTABLE),
            )
        } else {
            (false, false)
        };
        let mut caps = DeviceCaps {
            index,
            name: p
                .device_name_as_c_str()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            device_type: device_type(p.device_type).into(),
            api_version: version_string(p.api_version),
            import_paths: Vec::new(),
            min_host_pointer_alignment: min_align,
            sync_fd_import,
            sync_fd_export,
            queue_family_foreign: has("VK_EXT_queue_family_foreign"),
            max_storage_buffer_range: p.limits.max_storage_buffer_range as u64,
            max_image_dimension_2d: p.limits.max_image_dimension2_d,
            formats: Vec::new(),
            extensions,
        };
        if caps.has("VK_EXT_image_drm_format_modifier") {
            caps.formats = Fourcc::ALL
                .iter()
                .map(|&f| self.format_support(pdev, f))
                .collect();
        }
        for path in [
            ImportPath::DmaBufImage,
            ImportPath::DmaBufBuffer,
            ImportPath::HostPointer,
        ] {
            if caps.missing(path).is_empty() {
                caps.import_paths.push(path);
            }
        }
        caps.import_paths.push(ImportPath::Staging);
        Ok(caps)
    }

    /// The DRM modifiers the driver lists for a Vulkan format.
    fn modifiers(
        &self,
        pdev: vk::PhysicalDevice,
        format: vk::Format,
    ) -> Vec<vk::DrmFormatModifierPropertiesEXT> {
        let mut list = vk::DrmFormatModifierPropertiesListEXT::default();
        let mut fp = vk::FormatProperties2::default().push_next(&mut list);
        // SAFETY: first call with a null array asks for the count only.
        unsafe {
            self.instance
                .get_physical_device_format_properties2(pdev, format, &mut fp)
        };
        let n = list.drm_format_modifier_count as usize;
        if n == 0 {
            return Vec::new();
        }
        let mut mods = vec![vk::DrmFormatModifierPropertiesEXT::default(); n];
        let mut list = vk::DrmFormatModifierPropertiesListEXT::default()
            .drm_format_modifier_properties(&mut mods);
        let mut fp = vk::FormatProperties2::default().push_next(&mut list);
        // SAFETY: the array has room for `n` entries, as the count says.
        unsafe {
            self.instance
                .get_physical_device_format_properties2(pdev, format, &mut fp)
        };
        let got = list.drm_format_modifier_count as usize;
        mods.truncate(got);
        mods
    }

    fn format_support(&self, pdev: vk::PhysicalDevice, fourcc: Fourcc) -> FormatSupport {
        let mut out = FormatSupport {
            fourcc: fourcc.name(),
            vk_formats: Vec::new(),
            multi_planar: false,
            modifiers: Vec::new(),
        };
        let Some(plan) = image_plan(fourcc) else {
            return out;
        };
        let try_plan = |multi: bool| -> Vec<ModifierSupport> {
            let formats = plane_formats(plan, multi);
            let lists: Vec<_> = formats.iter().map(|f| self.modifiers(pdev, *f)).collect();
            let mut common: Vec<ModifierSupport> = Vec::new();
            for m in &lists[0] {
                let all: Vec<_> = lists
                    .iter()
                    .filter_map(|l| {
                        l.iter()
                            .find(|x| x.drm_format_modifier == m.drm_format_modifier)
                    })
                    .collect();
                if all.len() != lists.len() {
                    continue;
                }
                let storage = if multi {
                    // Multi-planar images are read through per-plane views (EXTENDED_USAGE);
                    // ask whether such an image can be made at all.
                    self.image_importable(
                        pdev,
                        formats[0],
                        Modifier(m.drm_format_modifier),
                        image_flags(true),
                    )
                    .is_ok()
                } else {
                    all.iter().all(|x| {
                        x.drm_format_modifier_tiling_features
                            .contains(vk::FormatFeatureFlags::STORAGE_IMAGE)
                    })
                };
                common.push(ModifierSupport {
                    modifier: Modifier(m.drm_format_modifier),
                    planes: m.drm_format_modifier_plane_count,
                    storage,
                });
            }
            common
        };
        if plan == ImagePlan::Nv12 {
            let multi = try_plan(true);
            if multi.iter().any(|m| m.storage) {
                out.multi_planar = true;
                out.modifiers = multi;
            } else {
                out.modifiers = try_plan(false);
                // Per-plane images: the modifier covers one plane each, two in all.
                for m in &mut out.modifiers {
                    m.planes *= 2;
                }
            }
        } else {
            out.modifiers = try_plan(false);
        }
        out.vk_formats = plane_formats(plan, out.multi_planar)
            .iter()
            .map(|f| format!("{f:?}"))
            .collect();
        out
    }

    /// Whether a dma-buf-importable storage image of `format` with `modifier` can be made, and
    /// its largest extent.
    pub(crate) fn image_importable(
        &self,
        pdev: vk::PhysicalDevice,
        format: vk::Format,
        modifier: Modifier,
        flags: vk::ImageCreateFlags,
    ) -> Result<vk::Extent3D, VulkanError> {
        let mut ext_info = vk::PhysicalDeviceExternalImageFormatInfo::default()
            .handle_type(vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT);
        let mut mod_info = vk::PhysicalDeviceImageDrmFormatModifierInfoEXT::default()
            .drm_format_modifier(modifier.0)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        let info = vk::PhysicalDeviceImageFormatInfo2::default()
            .format(format)
            .ty(vk::ImageType::TYPE_2D)
            .tiling(vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT)
            .usage(vk::ImageUsageFlags::STORAGE)
            .flags(flags)
            .push_next(&mut ext_info)
            .push_next(&mut mod_info);
        let mut ext_props = vk::ExternalImageFormatProperties::default();
        let mut props = vk::ImageFormatProperties2::default().push_next(&mut ext_props);
        // SAFETY: all structs in both chains live across the call.
        unsafe {
            self.instance
                .get_physical_device_image_format_properties2(pdev, &info, &mut props)
        }
        .map_err(map_format_query_err(format!(
            "{format:?} with modifier {modifier} as a dma-buf storage image"
        )))?;
        let max_extent = props.image_format_properties.max_extent;
        let features = ext_props
            .external_memory_properties
            .external_memory_features;
        if !features.contains(vk::ExternalMemoryFeatureFlags::IMPORTABLE) {
            return Err(VulkanError::unsupported(format!(
                "{format:?} with {modifier}: dma-buf import not supported"
            )));
        }
        Ok(max_extent)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: every device made from this instance has been destroyed (a Device holds its
        // Instance and destroys itself first).
        unsafe { self.instance.destroy_instance(None) };
    }
}

/// Picks a device that has every path in `paths` (any path, if empty): `FRAMESHARE_VK_DEVICE`
/// (an index or a name substring) first if set, then the one with the most zero-copy paths,
/// preferring real GPUs over CPU renderers.
pub fn select(adapters: &[Adapter], paths: &[ImportPath]) -> Result<usize, VulkanError> {
    let wanted = std::env::var("FRAMESHARE_VK_DEVICE").ok();
    let mut why = Vec::new();
    let mut best: Option<(usize, u32)> = None;
    for (i, c) in adapters.iter().map(Adapter::caps).enumerate() {
        if let Some(w) = &wanted {
            if w.parse::<usize>().ok() != Some(i) && !c.name.contains(w.as_str()) {
                why.push(format!("{}: not FRAMESHARE_VK_DEVICE={w}", c.name));
                continue;
            }
        }
        let missing: Vec<_> = paths.iter().flat_map(|p| c.missing(*p)).collect();
        if !missing.is_empty() {
            why.push(format!("{}: lacks {}", c.name, missing.join(", ")));
            continue;
        }
        let score = c.import_paths.iter().filter(|p| p.zero_copy()).count() as u32 * 4
            + c.sync_fd_import as u32 * 2
            + (c.device_type != "cpu") as u32;
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
        .ok_or_else(|| VulkanError::NoSuitableDevice {
            what: if paths.is_empty() {
                "be used".into()
            } else {
                format!(
                    "import by {}",
                    paths
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(" and ")
                )
            },
            why: why.join("; "),
        })
}

/// Every Vulkan device here and what it can import (what `frameshare probe` shows).
pub fn probe() -> Result<Vec<DeviceCaps>, VulkanError> {
    let adapters = Instance::load()?.adapters()?;
    Ok(adapters.into_iter().map(Adapter::into_caps).collect())
}

/// Whether a Vulkan ICD is installed (a JSON manifest in the loader's standard places, or
/// `VK_ICD_FILENAMES`/`VK_DRIVER_FILES`), without loading anything. Tests use this to tell "no
/// Vulkan here" (skip) from "Vulkan is here but broken" (fail).
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
