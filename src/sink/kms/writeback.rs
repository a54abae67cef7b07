//! Writeback verification (`kms:verify-writeback`, vkms in CI): the commit that shows a frame
//! also attaches a framebuffer this display allocates (a dumb buffer, exported with PRIME and
//! mapped once) to the driver's writeback connector (`WRITEBACK_FB_ID`,
//! `WRITEBACK_OUT_FENCE_PTR`); once the writeback fence signals, the capture is compared with
//! what the frame must show — the generator's frame for its sequence number when the producer is
//! the generator, else the buffer's own pixels — pixel-exact on the colour channels
//! ([`crate::format::pixel::compare_bgr`]). Where the driver cannot drive the display and
//! writeback connectors from one CRTC at once (vkms: its encoders are not clones), the writeback
//! connector becomes the CRTC's only output while verifying (see [`super::commit`]).

use std::path::PathBuf;
use std::time::Duration;

use drm::buffer::DrmFourcc;
use drm::control::{atomic::AtomicModeReq, connector, crtc, framebuffer, Device as _};

use super::commit::Placement;
use super::framebuffer::{add_framebuffer, destroy_framebuffer, FbDesc, Framebuffer};
use super::output::{connector_name, Props};
use super::{KmsError, KmsStats};
use crate::buffer::{Access, Buffer, BufferKind, BufferMapping, CpuAccess};
use crate::format::pixel::{compare_bgr, BgrMismatch};
use crate::format::{Fourcc, FrameLayout, Modifier, PlaneLayout};
use crate::source::{Pattern, Scene};
use crate::sync::{deadline_after, poll_until, FenceStatus, SyncFile};
use crate::sys::kms::{DrmFile, FenceSlot};

/// How long a writeback job may take before it counts as lost (a driver bug: the display is
/// stuck). One job is pending at a time and the sink waits for its own fence: a job is never
/// queued again for being slow (a second job in flight would share the target, and the driver
/// completes the oldest first). Slow is normal under emulation on a loaded machine (over 1 s
/// seen under TCG): this bound is for a job that never completes, as long as a producer waits
/// for a frame (its stall timeout, 10 s).
const TIMEOUT: Duration = Duration::from_secs(10);

/// What the target is filled with before each capture: a capture vkms completed without
/// writing shows as this, not as the previous frame.
const SENTINEL: u8 = 0x5a;

/// A capture: `height` rows of `width` XR24 pixels (bytes B, G, R, X), tightly packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixels.
    pub data: Vec<u8>,
}

impl Captured {
    /// Row `y` (panics past the last row, as slice indexing does).
    pub fn row(&self, y: u32) -> &[u8] {
        let w = self.width as usize * 4;
        &self.data[y as usize * w..(y as usize + 1) * w]
    }
}

/// The framebuffer writeback goes into: a mode-sized XR24 dumb buffer on the same card,
/// exported with PRIME and mapped once.
struct Target {
    gem: drm::buffer::Handle,
    fb: framebuffer::Handle,
    mapping: BufferMapping,
    size: (u32, u32),
}

/// The writeback connector, its target, its pending job, and what captures are compared with.
pub(super) struct Writeback {
    connector: connector::Handle,
    props: Props,
    path: PathBuf,
    target: Option<Target>,
    slot: FenceSlot,
    /// The generator pattern the frames come from (else captures are compared with the
    /// buffers' own pixels), and its scene for the last frame layout.
    pattern: Option<Pattern>,
    scene: Option<(FrameLayout, Scene)>,
}

impl std::fmt::Debug for Writeback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writeback")
            .field("connector", &self.connector)
            .field("pattern", &self.pattern)
            .finish_non_exhaustive()
    }
}

impl Writeback {
    /// Finds the card's writeback connector that takes XR24 (listed only to clients with
    /// `DRM_CLIENT_CAP_WRITEBACK_CONNECTORS`, which [`super::output`] asks for).
    pub(super) fn find(card: &DrmFile) -> Result<Writeback, KmsError> {
        let path = card.path().to_owned();
        let fail = |why: String| KmsError::Writeback {
            path: path.clone(),
            why,
        };
        let res = card
            .resource_handles()
            .map_err(|e| KmsError::sys(&path, "DRM_IOCTL_MODE_GETRESOURCES", e))?;
        for &h in res.connectors() {
            let Ok(info) = card.get_connector(h, false) else {
                continue;
            };
            if info.interface() != connector::Interface::Writeback {
                continue;
            }
            let props = Props::load(card, h, "writeback connector")?;
            let formats: Vec<Fourcc> = props
                .value("WRITEBACK_PIXEL_FORMATS")
                .and_then(|b| card.get_property_blob(b).ok())
                .map(|b| {
                    b.chunks_exact(4)
                        .filter_map(|c| Some(Fourcc(u32::from_ne_bytes(c.try_into().ok()?))))
                        .collect()
                })
                .unwrap_or_default();
            if !formats.contains(&Fourcc::XR24) {
                return Err(fail(format!(
                    "writeback connector {} does not take XR24 (takes {})",
                    connector_name(&info),
                    crate::format::fourcc_names(formats)
                )));
            }
            for p in ["CRTC_ID", "WRITEBACK_FB_ID", "WRITEBACK_OUT_FENCE_PTR"] {
                props.need(p)?;
            }
            return Ok(Writeback {
                connector: h,
                props,
                path,
                target: None,
                slot: FenceSlot::new(),
                pattern: None,
                scene: None,
            });
        }
        Err(fail(format!(
            "driver {} has no writeback connector (vkms has one: use kms:vkms)",
            card.driver()
        )))
    }

    /// The writeback connector.
    pub(super) fn connector(&self) -> connector::Handle {
        self.connector
    }

    /// Compare captures with this generator pattern's frames (`None`: with the buffers' own
    /// pixels).
    pub(super) fn set_pattern(&mut self, pattern: Option<Pattern>) {
        self.pattern = pattern;
    }

    /// Whether captures are compared with the buffers' own pixels (which must then be mapped).
    pub(super) fn compares_buffers(&self) -> bool {
        self.pattern.is_none()
    }

    /// Puts the writeback connector on `crtc` (or, `None`, off any) in a commit.
    pub(super) fn attach(
        &self,
        req: &mut AtomicModeReq,
        crtc: Option<crtc::Handle>,
    ) -> Result<(), KmsError> {
        let raw = crtc.map_or(0, |c| u32::from(c) as u64);
        req.add_raw_property(self.connector.into(), self.props.need("CRTC_ID")?, raw);
        Ok(())
    }

    /// Adds a writeback job to a commit on a mode of `mode_size`: the target (made, or remade
    /// on a mode change, here) filled with [`SENTINEL`] first. No job is pending on it: each
    /// capture waits for its fence before the next is queued.
    pub(super) fn queue_job(
        &mut self,
        card: &DrmFile,
        mode_size: (u32, u32),
        req: &mut AtomicModeReq,
    ) -> Result<(), KmsError> {
        let fb_id = self.props.need("WRITEBACK_FB_ID")?;
        let fence_ptr = self.props.need("WRITEBACK_OUT_FENCE_PTR")?;
        if self.target.as_ref().is_some_and(|t| t.size != mode_size) {
            if let Some(old) = self.target.take() {
                drop_target(card, old);
            }
        }
        let target = match self.target.take() {
            Some(t) => t,
            None => make_target(card, mode_size)?,
        };
        let target = self.target.insert(target);
        let mut a = target.mapping.access(Access::Write)?;
        for y in 0..target.size.1 {
            a.row_mut(0, y).fill(SENTINEL);
        }
        drop(a);
        let c = self.connector.into();
        req.add_raw_property(c, fb_id, u32::from(target.fb) as u64);
        req.add_raw_property(c, fence_ptr, self.slot.prop_value());
        Ok(())
    }

    /// Waits until the pending writeback job completes (its fence is taken from the slot the
    /// commit that queued it filled).
    fn wait(&mut self, timeout: Duration) -> Result<(), KmsError> {
        use rustix::event::{PollFd, PollFlags};
        let Some(fence) = self.slot.take().map(SyncFile::from_fd) else {
            return Err(KmsError::Writeback {
                path: self.path.clone(),
                why: "the commit returned no writeback fence".into(),
            });
        };
        let mut fds = [PollFd::new(&fence, PollFlags::IN)];
        match poll_until(&mut fds, deadline_after(Some(timeout))) {
            Ok(0) => {
                return Err(KmsError::Timeout {
                    path: self.path.clone(),
                    what: "writeback".into(),
                    timeout,
                    note: None,
                })
            }
            Ok(_) => {}
            Err(errno) => {
                return Err(KmsError::Sys {
                    path: self.path.clone(),
                    op: "poll(writeback fence)".into(),
                    errno,
                })
            }
        }
        match fence.status() {
            Ok(FenceStatus::Error(errno)) => Err(KmsError::WritebackFailed {
                path: self.path.clone(),
                errno,
            }),
            _ => Ok(()),
        }
    }

    fn target_access(&mut self) -> Result<CpuAccess<'_>, KmsError> {
        match &mut self.target {
            Some(t) => Ok(t.mapping.access(Access::Read)?),
            None => Err(KmsError::Writeback {
                path: self.path.clone(),
                why: "nothing was captured yet".into(),
            }),
        }
    }

    /// A copy of the last capture.
    pub(super) fn captured(&mut self) -> Result<Captured, KmsError> {
        let a = self.target_access()?;
        let (width, height) = (a.layout().width(), a.layout().height());
        let mut data = Vec::with_capacity(width as usize * height as usize * 4);
        for y in 0..height {
            data.extend_from_slice(a.row(0, y));
        }
        Ok(Captured {
            width,
            height,
            data,
        })
    }

    /// Waits for the writeback of frame `seq` of buffer `id` (shown at `placement` by the
    /// commit that queued the job) and compares it with what the frame must show, once: a
    /// capture that differs is a mismatch. (Stock vkms up to at least 7.3 can complete a job
    /// uncomposed, or never; the CI kernel carries the fix, ci/kernel-patches.)
    pub(super) fn verify(
        &mut self,
        frame: &mut Framebuffer,
        placement: Placement,
        (id, seq): (u32, u64),
        stats: &KmsStats,
    ) -> Result<bool, KmsError> {
        self.wait(TIMEOUT)?;
        match self.compare(frame, placement, seq)? {
            None => Ok(true),
            Some(why) => {
                if stats.mismatches < 5 {
                    log::error!("KMS writeback: frame {seq} (buffer {id}): {why}");
                }
                Ok(false)
            }
        }
    }

    /// One capture of the frame on screen, compared with what it must show: `None` if equal,
    /// else why not.
    fn compare(
        &mut self,
        frame: &mut Framebuffer,
        pl: Placement,
        seq: u64,
    ) -> Result<Option<String>, KmsError> {
        let layout = &frame.layout;
        if let Some(p) = self.pattern {
            let same = matches!(&self.scene, Some((l, _)) if l.fourcc() == layout.fourcc() && l.size_px() == layout.size_px());
            if !same {
                self.scene = Some((layout.clone(), Scene::new(p, layout)));
            }
        }
        let scene = self.scene.as_ref().filter(|_| self.pattern.is_some());
        let path = self.path.clone();
        let Some(target) = &mut self.target else {
            return Err(KmsError::Writeback {
                path,
                why: "nothing was captured yet".into(),
            });
        };
        let capture = target.mapping.access(Access::Read)?;
        let fourcc = layout.fourcc();
        let result = match (scene, frame.mapping.as_mut()) {
            (Some((_, scene)), _) => {
                let want = scene.frame(seq);
                compare_placed(fourcc, pl, |y| want.row(0, y), &capture).map_err(|why| {
                    // Name a stale capture: one that shows the frame before.
                    let before = seq.checked_sub(1).map(|s| scene.frame(s));
                    match before {
                        Some(b)
                            if compare_placed(fourcc, pl, |y| b.row(0, y), &capture).is_ok() =>
                        {
                            format!("{why}; the capture shows frame {} instead", seq - 1)
                        }
                        _ => why.to_string(),
                    }
                })
            }
            (None, Some(m)) => {
                let a = m.access(Access::Read)?;
                compare_placed(fourcc, pl, |y| a.row(0, y), &capture).map_err(|why| why.to_string())
            }
            (None, None) => {
                return Err(KmsError::Writeback {
                    path,
                    why: "nothing to compare the capture with (no pattern, no mapping)".into(),
                })
            }
        };
        // Tell a job the driver completed without writing from a wrong picture.
        Ok(result.err().map(|why| {
            let untouched = (0..pl.src_h)
                .step_by(pl.src_h.max(8) as usize / 8)
                .all(|y| capture.row(0, pl.crtc_y + y).iter().all(|&b| b == SENTINEL));
            if untouched {
                format!("{why} (the capture was never written: the job completed uncomposed)")
            } else {
                why
            }
        }))
    }

    /// Lets go of the target (the display closes).
    pub(super) fn destroy(&mut self, card: &DrmFile) {
        if let Some(t) = self.target.take() {
            drop_target(card, t);
        }
    }
}

/// Compares a frame (format `fourcc`, row `y` from `picture(y)`) with the capture of a screen
/// that shows it at `pl`.
fn compare_placed<'p>(
    fourcc: Fourcc,
    pl: Placement,
    picture: impl Fn(u32) -> &'p [u8],
    capture: &CpuAccess<'_>,
) -> Result<(), BgrMismatch> {
    compare_bgr(
        fourcc,
        (pl.src_w, pl.src_h),
        (pl.crtc_x, pl.crtc_y),
        picture,
        |y| capture.row(0, y),
    )
}

/// Makes the mode-sized XR24 target: a dumb buffer, its PRIME fd mapped, and a framebuffer.
fn make_target(card: &DrmFile, size: (u32, u32)) -> Result<Target, KmsError> {
    use drm::buffer::Buffer as _;
    let dumb = card
        .create_dumb_buffer(size, DrmFourcc::Xrgb8888, 32)
        .map_err(|e| {
            KmsError::sys(
                card.path(),
                "writeback target: DRM_IOCTL_MODE_CREATE_DUMB",
                e,
            )
        })?;
    let gem = dumb.handle();
    match map_target(card, gem, dumb.pitch(), size) {
        Ok((fb, mapping)) => Ok(Target {
            gem,
            fb,
            mapping,
            size,
        }),
        Err(e) => {
            let _ = card.close_buffer(gem);
            Err(e)
        }
    }
}

/// The target's mapping (through a PRIME fd) and framebuffer, for dumb buffer `gem`.
fn map_target(
    card: &DrmFile,
    gem: drm::buffer::Handle,
    pitch: u32,
    (width, height): (u32, u32),
) -> Result<(framebuffer::Handle, BufferMapping), KmsError> {
    let sys = |op: &str, e| KmsError::sys(card.path(), format!("writeback target: {op}"), e);
    let fd = card
        .buffer_to_prime_fd(gem, drm::CLOEXEC | drm::RDWR)
        .map_err(|e| sys("DRM_IOCTL_PRIME_HANDLE_TO_FD", e))?;
    let plane = PlaneLayout {
        fd_index: 0,
        offset: 0,
        stride: pitch,
    };
    let bytes = pitch as u64 * height as u64;
    let layout = FrameLayout::new(
        Fourcc::XR24,
        Modifier::LINEAR,
        width,
        height,
        vec![plane],
        bytes,
    )?;
    let mapping = Buffer::from_fds(BufferKind::DrmDumb, layout.clone(), vec![fd])?.map(true)?;
    let desc = FbDesc {
        layout: &layout,
        handles: [Some(gem), None, None, None],
        format: DrmFourcc::Xrgb8888,
    };
    let fb = add_framebuffer(card, &desc, false).map_err(|e| sys("DRM_IOCTL_MODE_ADDFB2", e))?;
    Ok((fb, mapping))
}

fn drop_target(card: &DrmFile, t: Target) {
    destroy_framebuffer(card, t.fb);
    drop(t.mapping);
    if let Err(e) = card.close_buffer(t.gem) {
        log::error!("KMS writeback: GEM_CLOSE failed: {e}");
    }
}
