//! The atomic commits that put frames on the screen, and the state they leave on the CRTC as one
//! type: [`Crtc`] holds either nothing this display set, or a [`ModeSet`] — the mode and its
//! blob, where the plane puts frames, whether the CRTC drives only the writeback connector, the
//! frame on screen and the page flip still to come.
//!
//! Each frame is one nonblocking commit that points the primary plane at the frame's
//! framebuffer, with the frame's acquire fence as the plane's `IN_FENCE_FD` (the display waits
//! for it, not the CPU) and `OUT_FENCE_PTR` asking for a fence that signals when the commit
//! reaches the screen. Commits are paced by page flips: the next one goes out once the previous
//! flip event arrived. The frame a commit replaces goes back with that out-fence: it signals
//! exactly when the old frame stops being scanned out.

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use drm::control::{atomic::AtomicModeReq, framebuffer, AtomicCommitFlags, Device as _, Mode};

use super::framebuffer::Framebuffer;
use super::output::{Card, OutputPath};
use super::writeback::Writeback;
use super::{KmsError, KmsStats};
use crate::sink::HeldRelease;
use crate::sync::SyncFile;
use crate::sys::kms::{self as sys, DrmFile, FenceSlot};

/// How long a page flip may take before the display counts as stuck (a frame period is ~17 ms;
/// emulated machines are slow, and a flip also waits for the frame's acquire fence).
pub(super) const FLIP_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a frame's GPU conversion may take before its flip's wait begins (the display waits
/// for it as IN_FENCE_FD; lavapipe under emulation converts 1080p in seconds).
const GPU_FENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// The fence a commit hands the plane as `IN_FENCE_FD`.
#[derive(Debug)]
pub(super) enum InFence {
    /// None.
    None,
    /// The frame's acquire fence, from its producer.
    Acquire(SyncFile),
    /// The completion of the GPU's conversion into the frame: a flip waiting on it is waiting
    /// for the GPU, which gets [`GPU_FENCE_TIMEOUT`] before the flip's own timeout runs.
    /// (Only the conversion makes one: a build without `vulkan` has none.)
    #[cfg_attr(not(feature = "vulkan"), allow(dead_code))]
    Gpu(SyncFile),
}

/// Where the frame goes on the CRTC: source and destination rectangles, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placement {
    pub(super) src_w: u32,
    pub(super) src_h: u32,
    pub(super) crtc_x: u32,
    pub(super) crtc_y: u32,
    pub(super) crtc_w: u32,
    pub(super) crtc_h: u32,
}

impl Placement {
    /// A frame of `frame` size on a mode of `mode` size: centred and cropped to the mode, or
    /// `scaled` to fill it.
    fn for_frame(frame: (u32, u32), mode: (u32, u32), scaled: bool) -> Placement {
        let ((w, h), (mw, mh)) = (frame, mode);
        if scaled {
            return Placement {
                src_w: w,
                src_h: h,
                crtc_x: 0,
                crtc_y: 0,
                crtc_w: mw,
                crtc_h: mh,
            };
        }
        let (w, h) = (w.min(mw), h.min(mh));
        Placement {
            src_w: w,
            src_h: h,
            crtc_x: (mw - w) / 2,
            crtc_y: (mh - h) / 2,
            crtc_w: w,
            crtc_h: h,
        }
    }
}

/// A frame on screen.
#[derive(Debug, Clone, Copy)]
struct Shown {
    id: u32,
    seq: u64,
}

/// A commit whose page flip has not arrived yet.
#[derive(Debug)]
struct PendingFlip {
    /// The frame it shows (for messages).
    seq: u64,
    /// Its acquire fence, passed as `IN_FENCE_FD` (a flip that waits on it is not stuck).
    acquire: Option<SyncFile>,
    /// `acquire` is the completion of the frame's GPU conversion.
    gpu: bool,
    /// When the frame was captured (CLOCK_MONOTONIC ns), if its source said.
    captured_ns: Option<u64>,
}

/// What a modeset by this display left on the CRTC.
#[derive(Debug)]
struct ModeSet {
    mode: Mode,
    /// The property blob holding `mode` (the CRTC's `MODE_ID`).
    blob: u64,
    /// The frame size the mode and placement were chosen for.
    frame_size: (u32, u32),
    placement: Placement,
    /// The CRTC drives only the writeback connector (drivers whose encoders cannot be clones).
    writeback_only: bool,
    /// The frame on screen (`None`: the plane is off).
    shown: Option<Shown>,
    /// The last commit, until its page flip arrives.
    flip: Option<PendingFlip>,
}

impl ModeSet {
    fn mode_size(&self) -> (u32, u32) {
        let (w, h) = self.mode.size();
        (w as u32, h as u32)
    }
}

/// The CRTC as this display drives it.
#[derive(Debug)]
pub(super) struct Crtc {
    /// `None`: no mode set by this display (before the first frame, or after it turned the
    /// CRTC off).
    scanout: Option<ModeSet>,
    /// Where the kernel writes each commit's out-fence.
    out_fence: FenceSlot,
    last_flip: Option<Instant>,
}

/// What [`Crtc::show`] did.
#[derive(Debug)]
pub(super) struct Flipped {
    /// Where the frame is on the CRTC.
    pub(super) placement: Placement,
    /// The frame it replaced, with the fence that signals when that one has left the screen.
    pub(super) replaced: Option<HeldRelease>,
}

impl Crtc {
    pub(super) fn new() -> Crtc {
        Crtc {
            scanout: None,
            out_fence: FenceSlot::new(),
            last_flip: None,
        }
    }

    /// The mode's size, once a frame has been shown.
    pub(super) fn mode_size(&self) -> Option<(u32, u32)> {
        self.scanout.as_ref().map(ModeSet::mode_size)
    }

    /// The buffer on screen.
    pub(super) fn shown_id(&self) -> Option<u32> {
        self.scanout.as_ref()?.shown.map(|s| s.id)
    }

    /// Waits for the pending page flip, if any (pacing: one commit in flight at a time).
    pub(super) fn wait_flip(
        &mut self,
        dev: &Card,
        timeout: Duration,
        stats: &mut KmsStats,
    ) -> Result<(), KmsError> {
        let Card { drm: card, output } = dev;
        let Crtc {
            scanout, last_flip, ..
        } = self;
        let Some(set) = scanout else {
            return Ok(());
        };
        let Some(seq) = set.flip.as_ref().map(|f| f.seq) else {
            return Ok(());
        };
        if let Some(PendingFlip {
            acquire: Some(f),
            gpu: true,
            ..
        }) = &set.flip
        {
            // The flip cannot come before the conversion it waits for, so waiting for that
            // first delays nothing; it keeps the GPU's time out of the flip's timeout (a
            // conversion that never completes fails here, after GPU_FENCE_TIMEOUT).
            f.wait(GPU_FENCE_TIMEOUT).map_err(|e| KmsError::Timeout {
                path: card.path().to_owned(),
                what: format!("the GPU conversion of frame {seq}"),
                timeout: GPU_FENCE_TIMEOUT,
                note: Some(e.to_string()),
            })?;
        }
        let deadline = Instant::now() + timeout;
        while set.flip.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            let ready = sys::wait_readable(card.as_fd(), left).map_err(|errno| KmsError::Sys {
                path: card.path().to_owned(),
                op: "poll".into(),
                errno,
            })?;
            if !ready {
                let note = match &set.flip {
                    Some(PendingFlip {
                        acquire: Some(f), ..
                    }) if !f.is_signalled() => Some(format!(
                        "frame {seq}'s acquire fence has not signalled: the display is waiting for it"
                    )),
                    _ => None,
                };
                return Err(KmsError::Timeout {
                    path: card.path().to_owned(),
                    what: format!("page flip to frame {seq}"),
                    timeout,
                    note,
                });
            }
            let events = card
                .receive_events()
                .map_err(|e| KmsError::sys(card.path(), "read(DRM events)", e))?;
            for ev in events {
                if let drm::control::Event::PageFlip(pf) = ev {
                    if pf.crtc == output.crtc {
                        // The event's time is CLOCK_MONOTONIC (DRM's default), like the
                        // capture time. A flip stamped before its capture (another clock, or a
                        // source that stamps ahead, as vivid's end-of-frame stamps are) is left
                        // out rather than counted as zero: the samples then count fewer frames.
                        let flipped_ns = pf.duration.as_nanos() as u64;
                        if let Some(c) = set.flip.as_ref().and_then(|f| f.captured_ns) {
                            if let Some(latency) = flipped_ns.checked_sub(c) {
                                stats.capture_to_flip.push(latency);
                            }
                        }
                        set.flip = None;
                        stats.flips += 1;
                        let now = Instant::now();
                        if let Some(last) = last_flip.replace(now) {
                            stats
                                .flip_intervals_us
                                .push((now - last).as_micros() as u64);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Shows frame `seq` of buffer `id` (`frame`): waits for the previous flip, sets a mode for
    /// the frame's size if none is set for it yet, and commits the frame (with a writeback job
    /// in the same commit when `writeback` is given).
    pub(super) fn show(
        &mut self,
        dev: &Card,
        writeback: Option<&mut Writeback>,
        frame: &Framebuffer,
        (id, seq, captured_ns): (u32, u64, Option<u64>),
        in_fence: InFence,
        stats: &mut KmsStats,
    ) -> Result<Flipped, KmsError> {
        let (acquire, gpu) = match in_fence {
            InFence::None => (None, false),
            InFence::Acquire(f) => (Some(f), false),
            InFence::Gpu(f) => (Some(f), true),
        };
        let Card { drm: card, output } = dev;
        self.wait_flip(dev, FLIP_TIMEOUT, stats)?;
        let size = (frame.layout.width(), frame.layout.height());
        let (set, modeset) =
            ensure_mode(&mut self.scanout, dev, writeback.as_deref(), frame.fb, size)?;
        let sys = |op: String| move |e| KmsError::sys(card.path(), op, e);
        if modeset {
            // The modeset is its own blocking commit, then the frame flips in as usual: a
            // writeback job in the commit that re-routes an active CRTC never completes on vkms.
            let mut req = modeset_req(dev, writeback.as_deref(), set.blob, set.writeback_only)?;
            add_plane_props(&mut req, output, Some(frame.fb), set.placement)?;
            card.atomic_commit(AtomicCommitFlags::ALLOW_MODESET, req)
                .map_err(sys(format!(
                    "DRM_IOCTL_MODE_ATOMIC (modeset for frame {seq}, buffer {id})"
                )))?;
        }
        let mut req = AtomicModeReq::new();
        add_plane_props(&mut req, output, Some(frame.fb), set.placement)?;
        // The fence the plane waits for (the caller left out an acquire fence that signalled).
        if let Some(f) = &acquire {
            req.add_raw_property(
                output.plane.into(),
                output.plane_props.need("IN_FENCE_FD")?,
                f.as_fd().as_raw_fd() as i64 as u64,
            );
            stats.in_fences += 1;
        }
        req.add_raw_property(
            output.crtc.into(),
            output.crtc_props.need("OUT_FENCE_PTR")?,
            self.out_fence.prop_value(),
        );
        if let Some(wb) = writeback {
            wb.queue_job(card, set.mode_size(), &mut req)?;
        }
        let flags = AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT;
        card.atomic_commit(flags, req).map_err(sys(format!(
            "DRM_IOCTL_MODE_ATOMIC (frame {seq}, buffer {id})"
        )))?;
        stats.commits += 1;
        let out_fence = self.out_fence.take().map(SyncFile::from_fd);
        set.flip = Some(PendingFlip {
            seq,
            acquire,
            gpu,
            captured_ns,
        });
        let placement = set.placement;
        let replaced = set.shown.replace(Shown { id, seq });
        let replaced = match replaced {
            None => None,
            Some(prev) => {
                if out_fence.is_none() {
                    // No out-fence: the previous frame has left once this flip completes.
                    self.wait_flip(dev, FLIP_TIMEOUT, stats)?;
                }
                Some(HeldRelease {
                    id: prev.id,
                    seq: prev.seq,
                    release: out_fence,
                })
            }
        };
        Ok(Flipped {
            placement,
            replaced,
        })
    }

    /// Takes the frame on screen down and hands it back: turns the plane off (or, where the
    /// driver insists on an enabled primary plane, the whole CRTC) and waits until that is done.
    pub(super) fn turn_off(
        &mut self,
        dev: &Card,
        writeback: Option<&Writeback>,
        stats: &mut KmsStats,
    ) -> Result<Option<HeldRelease>, KmsError> {
        let Card { drm: card, output } = dev;
        self.wait_flip(dev, FLIP_TIMEOUT, stats)?;
        let Some(set) = &mut self.scanout else {
            return Ok(None);
        };
        let Some(shown) = set.shown else {
            return Ok(None);
        };
        let off = Placement::for_frame((0, 0), (0, 0), false);
        let mut req = AtomicModeReq::new();
        add_plane_props(&mut req, output, None, off)?;
        let plane_off = card.atomic_commit(
            AtomicCommitFlags::PAGE_FLIP_EVENT | AtomicCommitFlags::NONBLOCK,
            req,
        );
        match plane_off {
            Ok(()) => {
                set.shown = None;
                set.flip = Some(PendingFlip {
                    seq: shown.seq,
                    acquire: None,
                    gpu: false,
                    captured_ns: None,
                });
                self.wait_flip(dev, FLIP_TIMEOUT, stats)?;
            }
            Err(e) => {
                log::debug!("KMS: plane off refused ({e}); turning the CRTC off");
                let mut req = AtomicModeReq::new();
                add_plane_props(&mut req, output, None, off)?;
                req.add_raw_property(
                    output.connector.into(),
                    output.connector_props.need("CRTC_ID")?,
                    0,
                );
                if let Some(wb) = writeback {
                    wb.attach(&mut req, None)?;
                }
                let crtc = output.crtc.into();
                req.add_raw_property(crtc, output.crtc_props.need("ACTIVE")?, 0);
                req.add_raw_property(crtc, output.crtc_props.need("MODE_ID")?, 0);
                // Blocking: no flip event comes from a CRTC that goes dark.
                card.atomic_commit(AtomicCommitFlags::ALLOW_MODESET, req)
                    .map_err(|e| {
                        KmsError::sys(card.path(), "DRM_IOCTL_MODE_ATOMIC (CRTC off)", e)
                    })?;
                self.destroy(card);
            }
        }
        Ok(Some(HeldRelease {
            id: shown.id,
            seq: shown.seq,
            release: None,
        }))
    }

    /// Forgets the mode set (the display closes; the kernel keeps what is on the CRTC).
    pub(super) fn destroy(&mut self, card: &DrmFile) {
        if let Some(set) = self.scanout.take() {
            destroy_blob(card, set.blob);
        }
    }
}

fn destroy_blob(card: &DrmFile, blob: u64) {
    if let Err(e) = card.destroy_property_blob(blob) {
        log::warn!("KMS: destroying mode blob {blob}: {e}");
    }
}

/// The mode set for frames of `size`: the one in `scanout` if it was chosen for that size, else
/// a new one (see [`choose_mode`]), which replaces it. Returns it, and whether it is new (to
/// be committed).
fn ensure_mode<'s>(
    scanout: &'s mut Option<ModeSet>,
    dev: &Card,
    writeback: Option<&Writeback>,
    fb: framebuffer::Handle,
    size: (u32, u32),
) -> Result<(&'s mut ModeSet, bool), KmsError> {
    let card = &dev.drm;
    let (set, modeset) = match scanout.take() {
        Some(set) if set.frame_size == size => (set, false),
        old => match choose_mode(dev, writeback, fb, size) {
            Ok(mut new) => {
                if let Some(old) = old {
                    // Still on screen until the new mode's first frame replaces it.
                    new.shown = old.shown;
                    new.flip = old.flip;
                    destroy_blob(card, old.blob);
                }
                (new, true)
            }
            Err(e) => {
                *scanout = old;
                return Err(e);
            }
        },
    };
    Ok((scanout.insert(set), modeset))
}

/// Chooses the mode for frames of `size` and the placement the plane accepts, asking the
/// driver with TEST_ONLY commits: unscaled first, then scaled; with writeback, beside the
/// display first, then as the CRTC's only output.
fn choose_mode(
    dev: &Card,
    writeback: Option<&Writeback>,
    fb: framebuffer::Handle,
    size: (u32, u32),
) -> Result<ModeSet, KmsError> {
    let Card { drm: card, output } = dev;
    let mode = output
        .pick_mode(size.0, size.1)
        .ok_or_else(|| KmsError::NoOutput {
            path: card.path().to_owned(),
            why: format!("connector {} lists no modes", output.connector_name),
        })?;
    let blob: u64 = card
        .create_property_blob(&mode)
        .map_err(|e| KmsError::sys(card.path(), "DRM_IOCTL_MODE_CREATEPROPBLOB", e))?
        .into();
    let chosen = test_placements(dev, writeback, fb, size, mode, blob);
    if chosen.is_err() {
        destroy_blob(card, blob);
    }
    chosen
}

fn test_placements(
    dev: &Card,
    writeback: Option<&Writeback>,
    fb: framebuffer::Handle,
    size: (u32, u32),
    mode: Mode,
    blob: u64,
) -> Result<ModeSet, KmsError> {
    let Card { drm: card, output } = dev;
    let mode_size = (mode.size().0 as u32, mode.size().1 as u32);
    // Writeback alongside the display first; drivers whose encoders cannot be clones (vkms up
    // to at least 6.12: "failed valid clone check") take the writeback connector only as the
    // CRTC's sole output.
    let writeback_only: &[bool] = if writeback.is_some() {
        &[false, true]
    } else {
        &[false]
    };
    let mut refused = std::io::Error::other("no placement tried");
    for scaled in [false, true] {
        for &writeback_only in writeback_only {
            let placement = Placement::for_frame(size, mode_size, scaled);
            let mut req = modeset_req(dev, writeback, blob, writeback_only)?;
            add_plane_props(&mut req, output, Some(fb), placement)?;
            let flags = AtomicCommitFlags::TEST_ONLY | AtomicCommitFlags::ALLOW_MODESET;
            if let Err(e) = card.atomic_commit(flags, req) {
                refused = e;
                continue;
            }
            if scaled && writeback.is_some() {
                return Err(KmsError::Writeback {
                    path: card.path().to_owned(),
                    why: format!(
                        "the plane only takes {}x{} frames scaled to the mode; writeback \
                         verification compares unscaled frames",
                        size.0, size.1
                    ),
                });
            }
            log::info!(
                "KMS: mode {:?} {}x{}@{} for {}x{} frames, plane at {placement:?}{}",
                mode.name(),
                mode_size.0,
                mode_size.1,
                mode.vrefresh(),
                size.0,
                size.1,
                if writeback_only {
                    "; writeback connector as the CRTC's only output"
                } else {
                    ""
                }
            );
            return Ok(ModeSet {
                mode,
                blob,
                frame_size: size,
                placement,
                writeback_only,
                shown: None,
                flip: None,
            });
        }
    }
    let op = format!(
        "atomic TEST_ONLY of {}x{} frames on mode {}x{} (unscaled and scaled{})",
        size.0,
        size.1,
        mode_size.0,
        mode_size.1,
        if writeback.is_some() {
            ", with and without the display connector beside writeback"
        } else {
            ""
        }
    );
    Err(KmsError::sys(card.path(), op, refused))
}

/// The modeset part of a commit: the connector (or, `writeback_only`, the writeback connector
/// alone) on our CRTC, other connectors still on it detached, the mode blob, the CRTC active.
fn modeset_req(
    dev: &Card,
    writeback: Option<&Writeback>,
    blob: u64,
    writeback_only: bool,
) -> Result<AtomicModeReq, KmsError> {
    let Card { drm: card, output } = dev;
    let mut req = AtomicModeReq::new();
    let crtc_raw = u32::from(output.crtc) as u64;
    req.add_raw_property(
        output.connector.into(),
        output.connector_props.need("CRTC_ID")?,
        if writeback_only { 0 } else { crtc_raw },
    );
    let wb_connector = writeback.map(Writeback::connector);
    for &(c, prop) in &output.others {
        if Some(c) == wb_connector {
            continue;
        }
        let on_ours = card
            .get_properties(c)
            .map(|set| set.iter().any(|(p, v)| *p == prop && *v == crtc_raw))
            .unwrap_or(false);
        if on_ours {
            req.add_raw_property(c.into(), prop, 0);
        }
    }
    let crtc = output.crtc.into();
    req.add_raw_property(crtc, output.crtc_props.need("MODE_ID")?, blob);
    req.add_raw_property(crtc, output.crtc_props.need("ACTIVE")?, 1);
    if let Some(wb) = writeback {
        wb.attach(&mut req, Some(output.crtc))?;
    }
    Ok(req)
}

/// The plane part of a commit: `fb` at `pl`, or (`None`) the plane off.
fn add_plane_props(
    req: &mut AtomicModeReq,
    output: &OutputPath,
    fb: Option<framebuffer::Handle>,
    pl: Placement,
) -> Result<(), KmsError> {
    let p = output.plane.into();
    let props = &output.plane_props;
    let fb_raw = fb.map_or(0u64, |f| u32::from(f) as u64);
    req.add_raw_property(p, props.need("FB_ID")?, fb_raw);
    let crtc_raw = if fb.is_some() {
        u32::from(output.crtc) as u64
    } else {
        0
    };
    req.add_raw_property(p, props.need("CRTC_ID")?, crtc_raw);
    for (name, v) in [
        ("SRC_X", 0u64),
        ("SRC_Y", 0),
        ("SRC_W", (pl.src_w as u64) << 16),
        ("SRC_H", (pl.src_h as u64) << 16),
        ("CRTC_X", pl.crtc_x as u64),
        ("CRTC_Y", pl.crtc_y as u64),
        ("CRTC_W", pl.crtc_w as u64),
        ("CRTC_H", pl.crtc_h as u64),
    ] {
        req.add_raw_property(p, props.need(name)?, if fb.is_some() { v } else { 0 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_centred_and_cropped_or_scaled() {
        let p = Placement::for_frame((640, 480), (1024, 768), false);
        assert_eq!(
            (p.crtc_x, p.crtc_y, p.crtc_w, p.crtc_h),
            (192, 144, 640, 480)
        );
        assert_eq!((p.src_w, p.src_h), (640, 480));
        let p = Placement::for_frame((2000, 480), (1024, 768), false);
        assert_eq!((p.crtc_x, p.src_w, p.crtc_w), (0, 1024, 1024));
        let p = Placement::for_frame((640, 480), (1024, 768), true);
        assert_eq!((p.src_w, p.crtc_w, p.crtc_h), (640, 1024, 768));
    }
}
