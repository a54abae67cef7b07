//! `frameshare probe`: what this machine offers for frame sharing — shared-memory kinds and
//! their limits, dma-buf heaps, udmabuf, DRM nodes, V4L2 devices, sw_sync — read from /dev,
//! /sys and /proc without side effects (beyond trying one tiny allocation per kind).

use std::path::Path;

use serde::Serialize;

use frameshare::alloc;
use frameshare::format::{Fourcc, FrameLayout};

/// One buffer kind and whether it works here.
#[derive(Debug, Clone, Serialize)]
pub struct KindStatus {
    /// Allocator name.
    pub name: String,
    /// Whether a test allocation succeeded.
    pub available: bool,
    /// The device, or why not.
    pub detail: String,
}

/// A DRM device node.
#[derive(Debug, Clone, Serialize)]
pub struct DrmNode {
    /// `/dev/dri/card0`, `/dev/dri/renderD128`, …
    pub path: String,
    /// Kernel driver (`vkms`, `vgem`, `i915`, …).
    pub driver: String,
    /// `kms` (card node with modesetting) or `render`.
    pub kind: String,
}

/// A V4L2 device node.
#[derive(Debug, Clone, Serialize)]
pub struct VideoNode {
    /// `/dev/videoN`.
    pub path: String,
    /// The device's name (`vivid`, …).
    pub name: String,
}

/// A V4L2 capture device (feature `v4l2`).
#[cfg(feature = "v4l2")]
pub type CameraInfo = frameshare::source::v4l2::DeviceInfo;

/// A V4L2 capture device (this build has no `v4l2` feature: never filled).
#[cfg(not(feature = "v4l2"))]
#[derive(Debug, Clone, Serialize)]
pub struct CameraInfo {}

fn cameras() -> Vec<CameraInfo> {
    #[cfg(feature = "v4l2")]
    {
        frameshare::source::v4l2::devices()
    }
    #[cfg(not(feature = "v4l2"))]
    {
        Vec::new()
    }
}

/// What `--alloc auto` picks here.
#[derive(Debug, Clone, Serialize)]
pub struct AutoChoice {
    /// The kind it picks (`memfd`, `dma-heap`, …), or null when nothing works.
    pub chose: Option<String>,
    /// The kinds it passed over (better ones that do not work here: see `allocators`).
    pub passed_over: Vec<String>,
}

/// SysV shared-memory limits (/proc/sys/kernel).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SysvLimits {
    /// Largest segment, bytes.
    pub shmmax_bytes: u64,
    /// All segments together, pages.
    pub shmall_pages: u64,
    /// Most segments.
    pub shmmni_segments: u64,
}

/// What this binary was built with.
#[derive(Debug, Clone, Serialize)]
pub struct Build {
    /// Version.
    pub version: &'static str,
    /// Git commit, or `unknown`.
    pub commit: &'static str,
    /// Features built in (gbm and v4l2 change what works).
    pub features: Vec<&'static str>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// The JSON schema version (1).
    pub schema: u32,
    /// This binary.
    pub build: Build,
    /// Kernel release.
    pub kernel: String,
    /// Every allocator and whether it works.
    pub allocators: Vec<KindStatus>,
    /// What `--alloc auto` picks.
    pub auto: AutoChoice,
    /// SysV shm limits.
    pub sysv_limits: Option<SysvLimits>,
    /// Bytes free in /dev/shm.
    pub dev_shm_free: Option<u64>,
    /// Heaps under /dev/dma_heap.
    pub dma_heaps: Vec<String>,
    /// Whether /dev/udmabuf exists.
    pub udmabuf: bool,
    /// DRM nodes.
    pub drm: Vec<DrmNode>,
    /// V4L2 nodes.
    pub video: Vec<VideoNode>,
    /// V4L2 capture devices with their formats and sizes (feature `v4l2`; empty without it).
    pub cameras: Vec<CameraInfo>,
    /// KMS devices: connectors, planes and the formats each plane scans out (feature `kms`).
    #[cfg(feature = "kms")]
    pub kms: Vec<frameshare::sink::kms::KmsDeviceInfo>,
    /// Whether debugfs `sync/sw_sync` is there (test fences).
    pub sw_sync: bool,
    /// Vulkan devices: import paths, SYNC_FD support, modifiers per fourcc.
    pub vulkan: VulkanProbe,
}

fn read_trim(p: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

fn driver_of(sys_dir: &Path) -> String {
    let dev = sys_dir.join("device");
    let base = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    if let Some(n) = std::fs::read_link(dev.join("driver"))
        .ok()
        .and_then(|p| base(&p))
    {
        return n;
    }
    // Built-in vgem/vkms are bare platform (or faux) devices without a driver link.
    if let Some(n) =
        read_trim(dev.join("modalias")).and_then(|m| m.strip_prefix("platform:").map(str::to_owned))
    {
        return n;
    }
    std::fs::canonicalize(&dev)
        .ok()
        .and_then(|p| base(&p))
        .unwrap_or_else(|| "?".into())
}

/// Whether card `name` has connectors (`cardN-CONNECTOR` entries): a modesetting device.
fn has_connectors(name: &str) -> bool {
    std::fs::read_dir("/sys/class/drm")
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_prefix(name)
                    .is_some_and(|r| r.starts_with('-'))
            })
        })
        .unwrap_or(false)
}

/// DRM nodes from /sys/class/drm, with their drivers (numbers differ between machines: find
/// devices by driver, not by index).
pub fn drm_nodes() -> Vec<DrmNode> {
    let mut v = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/sys/class/drm") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let kind = if name.starts_with("renderD") {
                "render"
            } else if name.starts_with("card") && !name.contains('-') {
                if has_connectors(&name) {
                    "kms"
                } else {
                    "primary (no KMS)"
                }
            } else {
                continue;
            };
            v.push(DrmNode {
                path: format!("/dev/dri/{name}"),
                driver: driver_of(&e.path()),
                kind: kind.into(),
            });
        }
    }
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// V4L2 nodes from /sys/class/video4linux.
pub fn video_nodes() -> Vec<VideoNode> {
    let mut v: Vec<VideoNode> = std::fs::read_dir("/sys/class/video4linux")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("video"))
                .map(|e| VideoNode {
                    path: format!("/dev/{}", e.file_name().to_string_lossy()),
                    name: read_trim(e.path().join("name")).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// Runs every check.
pub fn probe() -> Probe {
    let layout = FrameLayout::linear(Fourcc::XR24, 64, 64, 64).expect("valid");
    let allocators = [
        "dma-heap:system",
        "dma-heap:cma",
        "udmabuf",
        "gbm",
        "memfd",
        "posix-shm",
        "sysv-shm",
    ]
    .iter()
    .map(
        |name| match alloc::open(name).and_then(|(mut a, d)| a.allocate(&layout).map(|_| d)) {
            Ok(d) => KindStatus {
                name: name.to_string(),
                available: true,
                detail: d,
            },
            Err(e) => KindStatus {
                name: name.to_string(),
                available: false,
                detail: e.to_string(),
            },
        },
    )
    .collect();
    let sysv = (|| {
        Some(SysvLimits {
            shmmax_bytes: read_trim("/proc/sys/kernel/shmmax")?.parse().ok()?,
            shmall_pages: read_trim("/proc/sys/kernel/shmall")?.parse().ok()?,
            shmmni_segments: read_trim("/proc/sys/kernel/shmmni")?.parse().ok()?,
        })
    })();
    // auto tries dma-heap, udmabuf, gbm, then memfd: the first that works is its choice.
    let auto = match alloc::open("auto") {
        Ok((a, _)) => {
            let chose = a.kind().name().to_owned();
            let passed_over = alloc::AUTO_ORDER
                .iter()
                .map(|s| s.to_string())
                .take_while(|s| s.split(':').next() != Some(chose.as_str()))
                .collect();
            AutoChoice {
                chose: Some(chose),
                passed_over,
            }
        }
        Err(_) => AutoChoice {
            chose: None,
            passed_over: alloc::AUTO_ORDER.iter().map(|s| s.to_string()).collect(),
        },
    };
    let shm_free = rustix::fs::statvfs("/dev/shm")
        .ok()
        .map(|s| s.f_bavail * s.f_frsize);
    Probe {
        schema: crate::report::SCHEMA,
        build: Build {
            version: env!("CARGO_PKG_VERSION"),
            commit: env!("FRAMESHARE_GIT_COMMIT"),
            features: [
                ("vulkan", cfg!(feature = "vulkan")),
                ("kms", cfg!(feature = "kms")),
                ("png", cfg!(feature = "png")),
                ("gbm", cfg!(feature = "gbm")),
                ("v4l2", cfg!(feature = "v4l2")),
            ]
            .into_iter()
            .filter(|f| f.1)
            .map(|f| f.0)
            .collect(),
        },
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        allocators,
        auto,
        sysv_limits: sysv,
        dev_shm_free: shm_free,
        dma_heaps: alloc::dma_heap::heaps(),
        udmabuf: Path::new(alloc::udmabuf::UDMABUF_PATH).exists(),
        drm: drm_nodes(),
        video: video_nodes(),
        cameras: cameras(),
        #[cfg(feature = "kms")]
        kms: frameshare::sink::kms::outputs(),
        sw_sync: Path::new("/sys/kernel/debug/sync/sw_sync").exists(),
        vulkan: vulkan(),
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "kernel      {}", self.kernel)?;
        writeln!(f, "allocators")?;
        for a in &self.allocators {
            writeln!(
                f,
                "  {:<16} {:<4} {}",
                a.name,
                if a.available { "yes" } else { "no" },
                a.detail
            )?;
        }
        match &self.auto.chose {
            Some(k) if self.auto.passed_over.is_empty() => {
                writeln!(f, "auto        {k} (the best kind)")?
            }
            Some(k) => writeln!(
                f,
                "auto        {k} (passed over {}: see above)",
                self.auto.passed_over.join(", ")
            )?,
            None => writeln!(f, "auto        nothing works here (see above)")?,
        }
        if let Some(l) = self.sysv_limits {
            // The kernel's "no limit" is a number near 2^64: say so.
            let limit = |v: u64, unit: &str| {
                if v >= 1 << 62 {
                    "unlimited".to_owned()
                } else {
                    format!("{v} {unit}")
                }
            };
            writeln!(
                f,
                "sysv shm    shmmax {}, shmall {}, shmmni {} segments",
                limit(l.shmmax_bytes, "bytes"),
                limit(l.shmall_pages, "pages"),
                l.shmmni_segments
            )?;
        }
        if let Some(free) = self.dev_shm_free {
            writeln!(f, "/dev/shm    {} MiB free", free >> 20)?;
        }
        writeln!(
            f,
            "dma heaps   {}",
            if self.dma_heaps.is_empty() {
                "none".into()
            } else {
                self.dma_heaps.join(", ")
            }
        )?;
        writeln!(f, "udmabuf     {}", if self.udmabuf { "yes" } else { "no" })?;
        writeln!(
            f,
            "sw_sync     {}",
            if self.sw_sync {
                "yes"
            } else {
                "no (needs debugfs and CONFIG_SW_SYNC)"
            }
        )?;
        writeln!(
            f,
            "drm nodes   {}",
            if self.drm.is_empty() { "none" } else { "" }
        )?;
        for d in &self.drm {
            writeln!(f, "  {:<22} {:<8} {}", d.path, d.driver, d.kind)?;
        }
        writeln!(
            f,
            "v4l2 nodes  {}",
            if self.video.is_empty() { "none" } else { "" }
        )?;
        for v in &self.video {
            writeln!(f, "  {:<22} {}", v.path, v.name)?;
        }
        #[cfg(feature = "v4l2")]
        for c in &self.cameras {
            writeln!(
                f,
                "camera      {} ({}, {}{})",
                c.path,
                c.driver,
                c.card,
                if c.multiplanar { ", multi-planar" } else { "" }
            )?;
            for (v4l2, drm, sizes) in &c.formats {
                if let Some(drm) = drm {
                    writeln!(f, "  {v4l2} (= {drm})  {}", sizes.join(" "))?;
                }
            }
            let other: Vec<&str> = c
                .formats
                .iter()
                .filter(|(_, d, _)| d.is_none())
                .map(|(v, _, _)| v.as_str())
                .collect();
            if !other.is_empty() {
                writeln!(f, "  also (not handled): {}", other.join(" "))?;
            }
        }
        #[cfg(feature = "kms")]
        for k in &self.kms {
            writeln!(f, "kms         {} ({})", k.path, k.driver)?;
            for c in &k.connectors {
                writeln!(
                    f,
                    "  connector {:<14} {}{}{}",
                    c.name,
                    if c.connected {
                        "connected"
                    } else {
                        "disconnected"
                    },
                    if c.writeback { ", writeback" } else { "" },
                    c.mode
                        .as_deref()
                        .map(|m| format!(", {m}"))
                        .unwrap_or_default()
                )?;
            }
            for p in &k.planes {
                writeln!(
                    f,
                    "  plane {:<4} {:<8} {}",
                    p.id,
                    p.kind,
                    p.formats.join(" ")
                )?;
            }
        }
        write!(f, "{}", self.vulkan)?;
        Ok(())
    }
}

/// What `frameshare probe` shows of Vulkan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VulkanProbe {
    /// Why Vulkan is unusable here, if it is.
    pub error: Option<String>,
    /// Each device and what it can import (feature `vulkan`).
    #[cfg(feature = "vulkan")]
    pub devices: Vec<frameshare::gpu::vulkan::DeviceCaps>,
}

/// Lists the Vulkan devices and their import capabilities.
#[cfg(feature = "vulkan")]
pub fn vulkan() -> VulkanProbe {
    match frameshare::gpu::vulkan::probe() {
        Ok(devices) => VulkanProbe {
            error: None,
            devices,
        },
        Err(e) => VulkanProbe {
            error: Some(frameshare::gpu::vulkan::chain(&e)),
            devices: Vec::new(),
        },
    }
}

/// A build without the `vulkan` feature probes no GPU.
#[cfg(not(feature = "vulkan"))]
pub fn vulkan() -> VulkanProbe {
    VulkanProbe {
        error: Some("this build has no Vulkan (feature vulkan)".into()),
    }
}

impl std::fmt::Display for VulkanProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(feature = "vulkan")]
        let yes = |b: bool| if b { "yes" } else { "no" };
        if let Some(e) = &self.error {
            writeln!(f, "vulkan      none: {e}")?;
        }
        #[cfg(feature = "vulkan")]
        for d in &self.devices {
            writeln!(
                f,
                "vulkan      #{} {} ({}, Vulkan {})",
                d.index, d.name, d.device_type, d.api_version
            )?;
            writeln!(
                f,
                "  import paths    {}",
                d.import_paths
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(" ")
            )?;
            if d.min_host_pointer_alignment > 0 {
                writeln!(
                    f,
                    "  host pointer    minImportedHostPointerAlignment {}",
                    d.min_host_pointer_alignment
                )?;
            }
            writeln!(
                f,
                "  sync_fd         semaphore import {}, export {}; queue family foreign {}",
                yes(d.sync_fd_import),
                yes(d.sync_fd_export),
                yes(d.queue_family_foreign)
            )?;
            writeln!(
                f,
                "  buffer imports  up to {} bytes (maxStorageBufferRange)",
                d.max_storage_buffer_range
            )?;
            if d.formats.is_empty() {
                writeln!(
                    f,
                    "  modifiers       none listed (no VK_EXT_image_drm_format_modifier): dma-bufs go in as buffers, LINEAR only"
                )?;
            }
            for s in &d.formats {
                let mods: Vec<String> = s
                    .modifiers
                    .iter()
                    .map(|m| {
                        format!(
                            "{} ({} plane{}{})",
                            m.modifier,
                            m.planes,
                            if m.planes == 1 { "" } else { "s" },
                            if m.storage { "" } else { ", no storage use" }
                        )
                    })
                    .collect();
                writeln!(
                    f,
                    "  {:<4} as image  {}{}",
                    s.fourcc,
                    if s.vk_formats.is_empty() {
                        "no (buffer path)".to_string()
                    } else if mods.is_empty() {
                        "no modifier listed".to_string()
                    } else {
                        mods.join(", ")
                    },
                    if s.vk_formats.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " [{}{}]",
                            s.vk_formats.join(" + "),
                            if s.multi_planar { ", multi-planar" } else { "" }
                        )
                    }
                )?;
            }
        }
        Ok(())
    }
}
