//! GBM backend (feature `gbm`): buffer objects from Mesa's GBM on a DRM node, made with
//! `gbm_bo_create_with_modifiers2` (falling back to `gbm_bo_create_with_modifiers`, then to
//! plain `gbm_bo_create` with `GBM_BO_USE_LINEAR`), flagged for scanout where the device takes
//! it, and exported as one dma-buf fd per distinct memory object (`gbm_bo_get_fd_for_plane`, fds
//! of the same dma-buf collapsed) with each plane's offset and stride and the BO's modifier.
//! The BO itself is dropped once exported: the dma-buf fds keep the memory alive.
//!
//! Devices: `gbm` tries render nodes, then card nodes, and keeps the first where a test BO can be
//! made; `gbm:DRIVER` (`gbm:vkms`) or `gbm:/dev/dri/NODE` names one. On drivers Mesa has no
//! hardware driver for (vgem, vkms) GBM runs its software `kms_swrast` path, which makes dumb
//! buffers — so it needs a card node, where the kernel allows `CREATE_DUMB`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use ::gbm::{BufferObject, BufferObjectFlags, Device, Format};

use super::{AllocError, Allocator};
use crate::buffer::{Buffer, BufferKind};
use crate::format::{FormatError, FrameLayout, Modifier, PlaneLayout};
use crate::sys::kms::{self as sys, DrmFile, NodeKind};

/// How the last buffer object was made (GBM entry point and flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreatePath {
    /// `gbm_bo_create_with_modifiers2` with the scanout flag.
    Modifiers2Scanout,
    /// `gbm_bo_create_with_modifiers2` without usage flags.
    Modifiers2,
    /// `gbm_bo_create_with_modifiers` (no usage flags).
    Modifiers,
    /// `gbm_bo_create` with `LINEAR | SCANOUT`.
    PlainScanout,
    /// `gbm_bo_create` with `LINEAR`.
    Plain,
}

/// Allocates GBM buffer objects on one DRM node.
pub struct GbmAllocator {
    device: Device<DrmFile>,
    path: PathBuf,
    driver: String,
    backend: String,
    modifiers: Option<Vec<Modifier>>,
    last_path: Option<CreatePath>,
    count: u64,
}

impl std::fmt::Debug for GbmAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GbmAllocator")
            .field("path", &self.path)
            .field("driver", &self.driver)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

fn unavailable(why: String) -> AllocError {
    AllocError::Unavailable { kind: "gbm", why }
}

impl GbmAllocator {
    /// Opens GBM on a node: `None` tries every render node, then every card node, keeping the
    /// first where a test buffer can be made; `Some("/dev/dri/…")` opens that node;
    /// `Some(driver)` the first node (render, then card) of that driver where GBM works.
    pub fn open(spec: Option<&str>) -> Result<Self, AllocError> {
        let candidates: Vec<PathBuf> = match spec {
            Some(p) if p.starts_with('/') => vec![PathBuf::from(p)],
            _ => sys::nodes(NodeKind::Render)
                .into_iter()
                .chain(sys::nodes(NodeKind::Card))
                .collect(),
        };
        if candidates.is_empty() {
            return Err(unavailable(format!("no DRM nodes in {}", sys::DRI_DIR)));
        }
        let mut tried = Vec::new();
        for path in candidates {
            match Self::try_node(&path, spec.filter(|s| !s.starts_with('/'))) {
                Ok(a) => return Ok(a),
                Err(why) => tried.push(format!("{}: {why}", path.display())),
            }
        }
        Err(unavailable(tried.join("; ")))
    }

    fn try_node(path: &Path, driver: Option<&str>) -> Result<Self, String> {
        let file = DrmFile::open(path).map_err(|e| format!("open: {e}"))?;
        file.drop_master();
        if let Some(want) = driver {
            if file.driver() != want {
                return Err(format!("driver is {}, not {want}", file.driver()));
            }
        }
        let driver = file.driver().to_owned();
        let device = Device::new(file).map_err(|e| format!("gbm_create_device: {e}"))?;
        let backend = device.backend_name().to_owned();
        let a = GbmAllocator {
            device,
            path: path.to_owned(),
            driver,
            backend,
            modifiers: None,
            last_path: None,
            count: 0,
        };
        // gbm_create_device succeeds on nodes where no buffer can be made (a render node with
        // only the software path): prove one can.
        a.device
            .create_buffer_object::<()>(64, 64, Format::Xrgb8888, BufferObjectFlags::LINEAR)
            .map_err(|e| format!("{} ({} backend): gbm_bo_create: {e}", a.driver, a.backend))?;
        Ok(a)
    }

    /// Restricts the modifiers offered to GBM (default: the layout's modifier, LINEAR for the
    /// layouts frameshare computes, since sources write rows with the CPU).
    pub fn with_modifiers(mut self, modifiers: Vec<Modifier>) -> Self {
        self.modifiers = Some(modifiers);
        self
    }

    /// The node.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node's kernel driver.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// GBM's backend name (`drm` for Mesa's DRI backend).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// How the last buffer object was made.
    pub fn last_create_path(&self) -> Option<CreatePath> {
        self.last_path
    }

    /// Whether the device says it can scan out `layout`'s format.
    pub fn scanout_supported(&self, format: Format) -> bool {
        self.device.is_format_supported(
            format,
            BufferObjectFlags::SCANOUT | BufferObjectFlags::LINEAR,
        )
    }

    fn create_bo(&mut self, layout: &FrameLayout) -> Result<BufferObject<()>, String> {
        let format = Format::try_from(layout.fourcc().0)
            .map_err(|_| format!("GBM does not know the format {}", layout.fourcc()))?;
        let mods: Vec<Modifier> = match &self.modifiers {
            Some(m) => m.clone(),
            None if layout.modifier() == Modifier::INVALID => vec![Modifier::LINEAR],
            None => vec![layout.modifier()],
        };
        let gbm_mods = || mods.iter().map(|m| ::gbm::Modifier::from(m.0));
        let (w, h) = (layout.width(), layout.height());
        let mut errors = Vec::new();
        let attempts: [(CreatePath, &MakeBo<'_>); 5] = [
            (CreatePath::Modifiers2Scanout, &|| {
                self.device.create_buffer_object_with_modifiers2(
                    w,
                    h,
                    format,
                    gbm_mods(),
                    BufferObjectFlags::SCANOUT,
                )
            }),
            (CreatePath::Modifiers2, &|| {
                self.device.create_buffer_object_with_modifiers2(
                    w,
                    h,
                    format,
                    gbm_mods(),
                    BufferObjectFlags::empty(),
                )
            }),
            (CreatePath::Modifiers, &|| {
                self.device
                    .create_buffer_object_with_modifiers(w, h, format, gbm_mods())
            }),
            (CreatePath::PlainScanout, &|| {
                self.device.create_buffer_object(
                    w,
                    h,
                    format,
                    BufferObjectFlags::LINEAR | BufferObjectFlags::SCANOUT,
                )
            }),
            (CreatePath::Plain, &|| {
                self.device
                    .create_buffer_object(w, h, format, BufferObjectFlags::LINEAR)
            }),
        ];
        let plain_ok = mods.contains(&Modifier::LINEAR);
        for (path, f) in attempts {
            if matches!(path, CreatePath::PlainScanout | CreatePath::Plain) && !plain_ok {
                continue;
            }
            match f() {
                Ok(bo) => {
                    self.last_path = Some(path);
                    return Ok(bo);
                }
                Err(e) => errors.push(format!("{path:?}: {e}")),
            }
        }
        Err(format!(
            "cannot make a {} {w}x{h} buffer with modifiers {:?} ({})",
            layout.fourcc(),
            mods,
            errors.join(", ")
        ))
    }
}

/// One way of making a buffer object.
type MakeBo<'a> = dyn Fn() -> std::io::Result<BufferObject<()>> + 'a;

impl GbmAllocator {
    /// PRIME-exports GEM handle `gem` read-write; falls back to GBM's own (read-only) export.
    fn export(&self, gem: u32, bo: &BufferObject<()>, plane: usize) -> Result<OwnedFd, AllocError> {
        use drm::control::Device as _;
        let handle = drm::control::from_u32::<drm::buffer::Handle>(gem);
        let file: &DrmFile = &self.device;
        match handle.map(|h| file.buffer_to_prime_fd(h, drm::CLOEXEC | drm::RDWR)) {
            Some(Ok(fd)) => Ok(fd),
            other => {
                if let Some(Err(e)) = other {
                    log::warn!(
                        "gbm {}: PRIME export of GEM handle {gem} read-write failed ({e}); using GBM's read-only export",
                        self.path.display()
                    );
                }
                bo.fd_for_plane(plane as i32).map_err(|_| AllocError::Sys {
                    kind: BufferKind::Gbm,
                    op: "gbm_bo_get_fd_for_plane",
                    path: Some(self.path.clone()),
                    errno: rustix::io::Errno::INVAL,
                })
            }
        }
    }
}

impl Allocator for GbmAllocator {
    fn kind(&self) -> BufferKind {
        BufferKind::Gbm
    }

    fn describe(&self) -> String {
        format!(
            "gbm {} ({}, GBM backend {})",
            self.path.display(),
            self.driver,
            self.backend
        )
    }

    fn allocate(&mut self, layout: &FrameLayout) -> Result<Buffer, AllocError> {
        layout.validate()?;
        let bo = self.create_bo(layout).map_err(|why| {
            unavailable(format!("{} ({}): {why}", self.path.display(), self.driver))
        })?;
        let planes = bo.plane_count() as usize;
        let want = layout.info().planes.len();
        if planes != want {
            return Err(FormatError::PlaneCount {
                fourcc: layout.fourcc(),
                want,
                got: planes,
            }
            .into());
        }
        // GBM reports INVALID for BOs made without modifiers; those were made LINEAR.
        let modifier = match Modifier(u64::from(bo.modifier())) {
            Modifier::INVALID => Modifier::LINEAR,
            m => m,
        };
        // Export each plane's GEM handle ourselves, read-write (`gbm_bo_get_fd_for_plane` exports
        // with DRM_CLOEXEC only: such a dma-buf cannot be mapped for writing). Planes sharing a
        // GEM handle share one fd.
        let mut fds: Vec<OwnedFd> = Vec::new();
        let mut gems: Vec<u32> = Vec::new();
        let mut plane_layouts = Vec::with_capacity(planes);
        for i in 0..planes {
            let gem = sys::gbm_gem_handle(bo.handle_for_plane(i as i32));
            let fd_index = match gems.iter().position(|&g| g == gem) {
                Some(k) => k,
                None => {
                    let fd = self.export(gem, &bo, i)?;
                    gems.push(gem);
                    fds.push(fd);
                    fds.len() - 1
                }
            };
            plane_layouts.push(PlaneLayout {
                fd_index: fd_index as u32,
                offset: bo.offset(i as i32) as u64,
                stride: bo.stride_for_plane(i as i32),
            });
        }
        let size =
            rustix::fs::seek(fds[0].as_fd(), rustix::fs::SeekFrom::End(0)).map_err(|errno| {
                AllocError::Sys {
                    kind: BufferKind::Gbm,
                    op: "lseek(dma-buf)",
                    path: Some(self.path.clone()),
                    errno,
                }
            })?;
        let _ = rustix::fs::seek(fds[0].as_fd(), rustix::fs::SeekFrom::Start(0));
        let actual = FrameLayout::new(
            layout.fourcc(),
            modifier,
            layout.width(),
            layout.height(),
            plane_layouts,
            size,
        )?;
        drop(bo); // the dma-buf fds own the memory now
        self.count += 1;
        if let Err(e) = crate::sys::dma_buf::set_name(
            fds[0].as_fd(),
            &format!("frameshare gbm {} {}", layout.fourcc(), self.count),
        ) {
            log::debug!("DMA_BUF_SET_NAME: {e}");
        }
        Ok(Buffer::from_fds(BufferKind::Gbm, actual, fds)?)
    }
}
