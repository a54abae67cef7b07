//! [`KmsDisplay`]: one display output driven with atomic commits — the presenter the `kms` sink
//! puts frames on. It owns the card (and DRM master), the output path, the framebuffer cache,
//! the CRTC state and, when verifying, the writeback connector; [`KmsDisplay::present`] shows a
//! frame and hands back the one it replaced, [`KmsDisplay::capture`] returns what writeback
//! captured of the screen.

use std::time::Duration;

use drm::Device as _;

use super::commit::{Crtc, InFence, FLIP_TIMEOUT};
use super::framebuffer::Framebuffers;
use super::options::KmsOptions;
use super::output::{open_card, Card};
use super::writeback::{Captured, Writeback};
use super::KmsError;
use crate::buffer::Buffer;
use crate::format::{FormatModifier, Fourcc, Modifier};
use crate::latency::{Latency, LatencySamples};
use crate::sink::HeldRelease;
use crate::source::Pattern;
use crate::sync::SyncFile;

/// What presenting one frame did.
#[derive(Debug, Default)]
pub struct Presented {
    /// The frame this one replaced on screen, free to reuse once its release fence signals
    /// (the out-fence of this frame's commit).
    pub released: Option<HeldRelease>,
    /// With writeback verification: whether the captured screen matched the frame.
    pub verified: Option<bool>,
}

/// Counters and timings.
#[derive(Debug, Clone, Default)]
pub struct KmsStats {
    /// Atomic commits that succeeded.
    pub commits: u64,
    /// Page-flip events received.
    pub flips: u64,
    /// Frames whose writeback matched.
    pub verified: u64,
    /// Frames whose writeback differed.
    pub mismatches: u64,
    /// Frames committed with an `IN_FENCE_FD`: an unsignalled acquire fence, or the
    /// completion of the frame's conversion.
    pub in_fences: u64,
    /// Buffers imported (PRIME + AddFB2).
    pub imports: u64,
    /// Intervals between consecutive flips, µs (for pacing reports).
    pub flip_intervals_us: Vec<u64>,
    /// Capture time → page-flip event, for the frames presented with their capture time.
    pub(crate) capture_to_flip: LatencySamples,
}

impl KmsStats {
    /// The capture → page flip distribution, µs: from each frame's capture time (given to
    /// [`KmsDisplay::present_captured`]) to the timestamp of the page-flip event that put it
    /// on screen (both CLOCK_MONOTONIC).
    pub fn capture_to_flip_us(&self) -> Latency {
        self.capture_to_flip.clone().latency()
    }
}

/// A display output: device, connector, CRTC and primary plane, showing frames.
pub struct KmsDisplay {
    dev: Card,
    framebuffers: Framebuffers,
    crtc: Crtc,
    /// Present when verifying through writeback.
    writeback: Option<Writeback>,
    stats: KmsStats,
}

impl std::fmt::Debug for KmsDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsDisplay")
            .field("device", &self.dev.drm.path())
            .field("driver", &self.dev.drm.driver())
            .field("connector", &self.dev.output.connector_name)
            .field("crtc", &self.dev.output.crtc)
            .field("plane", &self.dev.output.plane)
            .finish_non_exhaustive()
    }
}

impl KmsDisplay {
    /// Opens the display: device, connector, CRTC and primary plane, and the writeback
    /// connector when `opts` verifies (no modeset yet: the mode is chosen from the first
    /// frame's size). `opts.convert` is the sink's business, not the display's.
    pub fn open(opts: &KmsOptions) -> Result<KmsDisplay, KmsError> {
        let dev = open_card(&opts.device, opts.connector.as_deref())?;
        let Card { drm: card, output } = &dev;
        // Master comes with the first open of the node; where an allocator opened it first
        // and gave master up since, take it (root or a former master may).
        if let Err(e) = card.acquire_master_lock() {
            log::debug!("KMS: SET_MASTER: {e} (commits will tell if another process drives it)");
        }
        log::info!(
            "KMS: {} ({}), connector {}, CRTC {:?}, plane {:?}, {} format/modifier pairs",
            card.path().display(),
            card.driver(),
            output.connector_name,
            output.crtc,
            output.plane,
            output.formats.len()
        );
        let writeback = if opts.verify_writeback {
            Some(Writeback::find(card)?)
        } else {
            None
        };
        Ok(KmsDisplay {
            framebuffers: Framebuffers::new(card),
            dev,
            crtc: Crtc::new(),
            writeback,
            stats: KmsStats::default(),
        })
    }

    /// The device node.
    pub fn device(&self) -> &std::path::Path {
        self.dev.drm.path()
    }

    /// The driver name.
    pub fn driver(&self) -> &str {
        self.dev.drm.driver()
    }

    /// The connector's name (`Virtual-1`).
    pub fn connector_name(&self) -> &str {
        &self.dev.output.connector_name
    }

    /// The (fourcc, modifier) pairs the primary plane scans out (`IN_FORMATS`).
    pub fn formats(&self) -> &[FormatModifier] {
        &self.dev.output.formats
    }

    /// Whether the primary plane scans `fourcc` with `modifier` out (the check
    /// [`KmsDisplay::import`] makes).
    pub fn scans_out(&self, fourcc: Fourcc, modifier: Modifier) -> bool {
        self.dev.output.scans_out(fourcc, modifier)
    }

    /// Whether every frame is captured through writeback and compared.
    pub fn verifies(&self) -> bool {
        self.writeback.is_some()
    }

    /// The current mode's size, once a frame has been shown.
    pub fn mode_size(&self) -> Option<(u32, u32)> {
        self.crtc.mode_size()
    }

    /// Whether a frame is on screen (held: see [`KmsDisplay::turn_off`]).
    pub fn is_showing(&self) -> bool {
        self.crtc.shown_id().is_some()
    }

    /// Counters.
    pub fn stats(&self) -> &KmsStats {
        &self.stats
    }

    /// Compare writeback captures with this generator pattern's frames (`None`: with the
    /// buffers' own pixels, which buffers imported from now on are mapped for). No effect
    /// without writeback.
    pub fn set_pattern(&mut self, pattern: Option<Pattern>) {
        if let Some(wb) = &mut self.writeback {
            wb.set_pattern(pattern);
        }
    }

    /// Imports buffer `id` (PRIME + AddFB2), once; later calls with the same id are free.
    pub fn import(&mut self, id: u32, buffer: &Buffer) -> Result<(), KmsError> {
        let map = self
            .writeback
            .as_ref()
            .is_some_and(Writeback::compares_buffers);
        if self.framebuffers.import(&self.dev, id, buffer, map)? {
            // Device imports count with the GPU imports: setup work the steady state must not do.
            crate::counters::bump(&crate::counters::GPU_IMPORTS);
            self.stats.imports += 1;
        }
        Ok(())
    }

    /// Forgets buffer `id`: removes its framebuffer and GEM handles. A buffer still on screen is
    /// taken off first (the plane is turned off).
    pub fn remove(&mut self, id: u32) {
        if self.crtc.shown_id() == Some(id) {
            if let Err(e) = self.turn_off() {
                log::error!("KMS: taking buffer {id} off the screen: {e}");
            }
        }
        self.framebuffers.remove(&self.dev.drm, id);
    }

    /// Waits for the pending page flip, if any (pacing: one commit in flight at a time).
    pub fn wait_flip(&mut self, timeout: Duration) -> Result<(), KmsError> {
        self.crtc.wait_flip(&self.dev, timeout, &mut self.stats)
    }

    /// Shows frame `seq` of buffer `id` (imported with [`KmsDisplay::import`]): waits for the
    /// previous flip, commits (with a modeset first, for the first frame of a size), and returns
    /// the frame this one replaced with its release fence. With writeback verification on,
    /// also captures the screen and compares it with the frame ([`KmsDisplay::capture`] returns
    /// the capture).
    pub fn present(
        &mut self,
        id: u32,
        seq: u64,
        acquire: Option<SyncFile>,
    ) -> Result<Presented, KmsError> {
        self.present_captured(id, seq, acquire, None)
    }

    /// [`KmsDisplay::present`] for a frame captured at `captured_ns` (CLOCK_MONOTONIC, e.g. a
    /// camera's buffer timestamp): the time from then to the page-flip event that shows it goes
    /// into [`KmsStats::capture_to_flip_us`].
    pub fn present_captured(
        &mut self,
        id: u32,
        seq: u64,
        acquire: Option<SyncFile>,
        captured_ns: Option<u64>,
    ) -> Result<Presented, KmsError> {
        // The acquire fence goes to the display as IN_FENCE_FD unless it already signalled.
        let in_fence = match acquire.filter(|f| !f.is_signalled()) {
            Some(f) => InFence::Acquire(f),
            None => InFence::None,
        };
        self.present_with(id, seq, in_fence, captured_ns)
    }

    /// [`KmsDisplay::present_captured`] with `in_fence` as the plane's `IN_FENCE_FD`.
    fn present_with(
        &mut self,
        id: u32,
        seq: u64,
        in_fence: InFence,
        captured_ns: Option<u64>,
    ) -> Result<Presented, KmsError> {
        let KmsDisplay {
            dev,
            framebuffers,
            crtc,
            writeback,
            stats,
        } = self;
        let frame = framebuffers
            .get_mut(id)
            .ok_or(KmsError::UnknownBuffer(id))?;
        let flipped = crtc.show(
            dev,
            writeback.as_mut(),
            frame,
            (id, seq, captured_ns),
            in_fence,
            stats,
        )?;
        let verified = match writeback {
            None => None,
            Some(wb) => {
                let ok = wb.verify(frame, flipped.placement, (id, seq), stats)?;
                if ok {
                    stats.verified += 1;
                } else {
                    stats.mismatches += 1;
                }
                Some(ok)
            }
        };
        Ok(Presented {
            released: flipped.replaced,
            verified,
        })
    }

    /// [`KmsDisplay::present`] with `done` as the plane's `IN_FENCE_FD` even if it has already
    /// signalled: the completion of the GPU's conversion into the frame, which the display
    /// waits for instead of the CPU (a count of such commits is then exact).
    #[cfg(feature = "vulkan")]
    pub(super) fn present_after(
        &mut self,
        id: u32,
        seq: u64,
        done: Option<SyncFile>,
        captured_ns: Option<u64>,
    ) -> Result<Presented, KmsError> {
        let in_fence = match done {
            Some(f) => InFence::Gpu(f),
            None => InFence::None,
        };
        self.present_with(id, seq, in_fence, captured_ns)
    }

    /// The last writeback capture of the screen (a display opened with `verify_writeback`,
    /// after [`KmsDisplay::present`]).
    pub fn capture(&mut self) -> Result<Captured, KmsError> {
        match &mut self.writeback {
            Some(wb) => wb.captured(),
            None => Err(KmsError::Writeback {
                path: self.dev.drm.path().to_owned(),
                why: "the display was opened without verify_writeback".into(),
            }),
        }
    }

    /// Takes the frame on screen down and hands it back: turns the plane off (or, where the
    /// driver insists on an enabled primary plane, the whole CRTC) and waits until that is done.
    /// `None` if nothing was on screen.
    pub fn turn_off(&mut self) -> Result<Option<HeldRelease>, KmsError> {
        self.crtc
            .turn_off(&self.dev, self.writeback.as_ref(), &mut self.stats)
    }
}

impl Drop for KmsDisplay {
    fn drop(&mut self) {
        if let Err(e) = self.wait_flip(FLIP_TIMEOUT) {
            log::error!("KMS: {e}");
        }
        if let Err(e) = self.turn_off() {
            log::error!("KMS: turning the plane off: {e}");
        }
        self.framebuffers.clear(&self.dev.drm);
        if let Some(wb) = &mut self.writeback {
            wb.destroy(&self.dev.drm);
        }
        self.crtc.destroy(&self.dev.drm);
    }
}
