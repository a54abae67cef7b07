//! Buffers as the display sees them: each buffer's dma-bufs imported once with PRIME
//! (`DRM_IOCTL_PRIME_FD_TO_HANDLE`) and wrapped in a framebuffer with `AddFB2` (with a modifier
//! when the driver takes them), cached by buffer id. PRIME gives the same GEM handle for the same
//! dma-buf, so handles are reference-counted across buffers, keyed by drm-rs's typed handle.

use std::collections::HashMap;

use drm::buffer::{DrmFourcc, DrmModifier, Handle as GemHandle, PlanarBuffer};
use drm::control::{framebuffer, Device as _, FbCmd2Flags};
use drm::{Device as _, DriverCapability};

use super::output::Card;
use super::KmsError;
use crate::buffer::{Buffer, BufferMapping};
use crate::format::{FrameLayout, Modifier};
use crate::sys::kms::DrmFile;

/// One imported buffer: its framebuffer, its GEM handles (one per distinct dma-buf), and, when
/// the writeback capture is compared with the buffer's own pixels, a read mapping of it.
#[derive(Debug)]
pub(super) struct Framebuffer {
    pub(super) fb: framebuffer::Handle,
    gems: Vec<GemHandle>,
    pub(super) layout: FrameLayout,
    pub(super) mapping: Option<BufferMapping>,
}

/// The import cache: framebuffers by buffer id, and the GEM handles they share.
#[derive(Debug)]
pub(super) struct Framebuffers {
    imported: HashMap<u32, Framebuffer>,
    gem_refs: HashMap<GemHandle, usize>,
    /// The driver takes a modifier with `AddFB2` (`DRM_CAP_ADDFB2_MODIFIERS`).
    addfb_modifiers: bool,
}

impl Framebuffers {
    /// An empty cache for `card`.
    pub(super) fn new(card: &DrmFile) -> Framebuffers {
        Framebuffers {
            imported: HashMap::new(),
            gem_refs: HashMap::new(),
            addfb_modifiers: card
                .get_driver_capability(DriverCapability::AddFB2Modifiers)
                .is_ok_and(|v| v != 0),
        }
    }

    /// Buffer `id`'s framebuffer, if imported.
    pub(super) fn get_mut(&mut self, id: u32) -> Option<&mut Framebuffer> {
        self.imported.get_mut(&id)
    }

    /// Imports buffer `id` for `output`'s plane (PRIME + AddFB2), mapped for reading if `map`.
    /// Returns false if it already was (later calls with the same id are free).
    pub(super) fn import(
        &mut self,
        dev: &Card,
        id: u32,
        buffer: &Buffer,
        map: bool,
    ) -> Result<bool, KmsError> {
        let Card { drm: card, output } = dev;
        if self.imported.contains_key(&id) {
            return Ok(false);
        }
        if !buffer.kind().is_dma_buf() {
            return Err(KmsError::NotDmaBuf {
                id,
                kind: buffer.kind(),
            });
        }
        let layout = buffer.layout().clone();
        let unsupported = |supported: String| KmsError::Unsupported {
            path: card.path().to_owned(),
            plane: output.plane.into(),
            fourcc: layout.fourcc(),
            modifier: layout.modifier(),
            supported,
        };
        if !output.scans_out(layout.fourcc(), layout.modifier()) {
            let mut have: Vec<String> = output
                .formats
                .iter()
                .map(|f| format!("{}/{}", f.fourcc, f.modifier))
                .collect();
            have.dedup();
            return Err(unsupported(have.join(" ")));
        }
        let format = DrmFourcc::try_from(layout.fourcc().0)
            .map_err(|_| unsupported("formats the drm crate names".into()))?;
        let with_modifier = self.addfb_modifiers && layout.modifier() != Modifier::INVALID;
        // Without the modifiers flag the driver assumes its default layout, which is LINEAR for
        // every driver that lacks ADDFB2_MODIFIERS.
        if !with_modifier && ![Modifier::LINEAR, Modifier::INVALID].contains(&layout.modifier()) {
            return Err(unsupported(
                "LINEAR only (driver lacks DRM_CAP_ADDFB2_MODIFIERS)".into(),
            ));
        }
        let mut gems = Vec::new();
        for fd in buffer.fds() {
            match card.prime_fd_to_buffer(fd) {
                Ok(h) => {
                    *self.gem_refs.entry(h).or_insert(0) += 1;
                    gems.push(h);
                }
                Err(e) => {
                    self.unref_gems(card, &gems);
                    return Err(KmsError::sys(
                        card.path(),
                        "DRM_IOCTL_PRIME_FD_TO_HANDLE",
                        e,
                    ));
                }
            }
        }
        let mut handles = [None; 4];
        for (h, plane) in handles.iter_mut().zip(layout.planes()) {
            *h = gems.get(plane.fd_index as usize).copied();
        }
        let desc = FbDesc {
            layout: &layout,
            handles,
            format,
        };
        let fb = match add_framebuffer(card, &desc, with_modifier) {
            Ok(fb) => fb,
            Err(e) => {
                let op = format!(
                    "DRM_IOCTL_MODE_ADDFB2 ({} {}x{} {}, pitches {:?}, offsets {:?})",
                    layout.fourcc(),
                    layout.width(),
                    layout.height(),
                    layout.modifier(),
                    desc.pitches(),
                    desc.offsets()
                );
                self.unref_gems(card, &gems);
                return Err(KmsError::sys(card.path(), op, e));
            }
        };
        let mapping = match map.then(|| buffer.map(false)).transpose() {
            Ok(m) => m,
            Err(e) => {
                destroy_framebuffer(card, fb);
                self.unref_gems(card, &gems);
                return Err(e.into());
            }
        };
        self.imported.insert(
            id,
            Framebuffer {
                fb,
                gems,
                layout,
                mapping,
            },
        );
        Ok(true)
    }

    /// Forgets buffer `id`: removes its framebuffer and lets go of its GEM handles. The caller
    /// takes it off the screen first.
    pub(super) fn remove(&mut self, card: &DrmFile, id: u32) {
        if let Some(f) = self.imported.remove(&id) {
            destroy_framebuffer(card, f.fb);
            self.unref_gems(card, &f.gems);
        }
    }

    /// Forgets every buffer.
    pub(super) fn clear(&mut self, card: &DrmFile) {
        let ids: Vec<u32> = self.imported.keys().copied().collect();
        for id in ids {
            self.remove(card, id);
        }
    }

    fn unref_gems(&mut self, card: &DrmFile, gems: &[GemHandle]) {
        for &gem in gems {
            let Some(n) = self.gem_refs.get_mut(&gem) else {
                continue;
            };
            *n -= 1;
            if *n == 0 {
                self.gem_refs.remove(&gem);
                if let Err(e) = card.close_buffer(gem) {
                    log::error!(
                        "KMS {}: DRM_IOCTL_GEM_CLOSE({gem:?}) failed: {e}",
                        card.path().display()
                    );
                }
            }
        }
    }
}

/// `AddFB2` of `desc`, announcing its modifier or not (drivers without
/// `DRM_CAP_ADDFB2_MODIFIERS`, and dumb buffers, get none).
pub(super) fn add_framebuffer(
    card: &DrmFile,
    desc: &FbDesc<'_>,
    with_modifier: bool,
) -> std::io::Result<framebuffer::Handle> {
    if with_modifier {
        card.add_planar_framebuffer(desc, FbCmd2Flags::MODIFIERS)
    } else {
        card.add_planar_framebuffer(&WithoutModifier(desc), FbCmd2Flags::empty())
    }
}

/// `RMFB`, logged on failure (nothing else to do then).
pub(super) fn destroy_framebuffer(card: &DrmFile, fb: framebuffer::Handle) {
    if let Err(e) = card.destroy_framebuffer(fb) {
        log::error!(
            "KMS {}: DRM_IOCTL_MODE_RMFB({fb:?}) failed: {e}",
            card.path().display()
        );
    }
}

/// `drm::buffer::PlanarBuffer` over a frameshare layout and imported GEM handles.
pub(super) struct FbDesc<'a> {
    pub(super) layout: &'a FrameLayout,
    pub(super) handles: [Option<GemHandle>; 4],
    pub(super) format: DrmFourcc,
}

impl PlanarBuffer for FbDesc<'_> {
    fn size(&self) -> (u32, u32) {
        (self.layout.width(), self.layout.height())
    }
    fn format(&self) -> DrmFourcc {
        self.format
    }
    fn modifier(&self) -> Option<DrmModifier> {
        (self.layout.modifier() != Modifier::INVALID)
            .then(|| DrmModifier::from(self.layout.modifier().0))
    }
    fn pitches(&self) -> [u32; 4] {
        let mut p = [0; 4];
        for (i, pl) in self.layout.planes().iter().enumerate() {
            p[i] = pl.stride;
        }
        p
    }
    fn handles(&self) -> [Option<GemHandle>; 4] {
        self.handles
    }
    fn offsets(&self) -> [u32; 4] {
        let mut o = [0; 4];
        for (i, pl) in self.layout.planes().iter().enumerate() {
            o[i] = pl.offset as u32;
        }
        o
    }
}

/// The same buffer description, announced without a modifier.
struct WithoutModifier<'a>(&'a FbDesc<'a>);

impl PlanarBuffer for WithoutModifier<'_> {
    fn size(&self) -> (u32, u32) {
        self.0.size()
    }
    fn format(&self) -> DrmFourcc {
        self.0.format
    }
    fn modifier(&self) -> Option<DrmModifier> {
        None
    }
    fn pitches(&self) -> [u32; 4] {
        self.0.pitches()
    }
    fn handles(&self) -> [Option<GemHandle>; 4] {
        self.0.handles
    }
    fn offsets(&self) -> [u32; 4] {
        self.0.offsets()
    }
}
