//! The KMS sink: shows frames on a display with atomic modesetting, without copying them.
//!
//! Each buffer's dma-buf is imported once with PRIME (`DRM_IOCTL_PRIME_FD_TO_HANDLE`) and wrapped
//! in a framebuffer with `AddFB2` (modifiers when the driver takes them); the pair is cached by
//! buffer id. Each frame is one nonblocking atomic commit that points the CRTC's primary plane at
//! the frame's framebuffer, with the frame's acquire fence as the plane's `IN_FENCE_FD` (the
//! display waits for it, not the CPU) and `OUT_FENCE_PTR` asking for a fence that signals when the
//! commit reaches the screen. Commits are paced by page flips: the next one goes out once the
//! previous flip event arrived.
//!
//! A buffer is returned to its producer only once it has left the screen: when frame N+1 is
//! committed, frame N comes back ([`Presented::released`]) with the out-fence of N+1's commit as
//! its release fence — it signals exactly when N stops being scanned out. [`KmsSink::release_all`]
//! turns the plane off and hands back whatever is still on screen (end of stream).
//!
//! Writeback verification (`kms:verify-writeback`, vkms in CI): the same commit also attaches a
//! framebuffer this sink allocates (a dumb buffer, exported with PRIME and mapped once) to the
//! driver's writeback connector (`WRITEBACK_FB_ID`, `WRITEBACK_OUT_FENCE_PTR`); once the writeback
//! fence signals, the captured pixels are compared with what the frame must show — the
//! generator's frame for its sequence number when the producer is the generator, else the
//! buffer's own pixels — pixel-exact on the colour channels (X bytes are not compared). Where
//! the driver cannot drive the display and writeback connectors from one CRTC at once (vkms:
//! its encoders are not clones), the writeback connector becomes the CRTC's only output while
//! verifying.
//!
//! Devices are named by path (`kms:/dev/dri/card1`) or by driver (`kms:vkms`); plain `kms` takes
//! the first card node with a connected display.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use drm::buffer::{DrmFourcc, DrmModifier, PlanarBuffer};
use drm::control::{
    atomic::AtomicModeReq, connector, crtc, framebuffer, plane, property, AtomicCommitFlags,
    Device as _, FbCmd2Flags, Mode, ResourceHandle,
};
use drm::{ClientCapability, Device as _, DriverCapability};
use rustix::io::Errno;

use super::{FrameIn, FrameOut, Sink, SinkCaps, SinkError, StreamInfo};
use crate::buffer::{Access, Buffer, BufferError, BufferKind, BufferMapping, KindSet};
use crate::format::FormatModifier;
use crate::format::{Fourcc, FrameLayout, Modifier, PlaneLayout};
use crate::source::{Pattern, Scene};
use crate::sync::{FenceError, SyncFile};
use crate::sys::kms::{self as sys, DrmFile, FenceSlot, NodeKind};

/// How long a page flip may take before the display counts as stuck (a frame period is ~17 ms;
/// emulated machines are slow, and a flip also waits for the frame's acquire fence).
pub const FLIP_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a writeback capture may take, retries included.
pub const WRITEBACK_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one writeback job may take before it counts as dropped and is queued again.
pub const WRITEBACK_STALL: Duration = Duration::from_millis(400);

/// How often a frame whose capture does not match is captured again before it counts as a
/// mismatch (see [`KmsSink::present`]): the screen does not change between captures, so a real
/// mismatch stays one, while vkms's races (a job completed without being composed, or composed
/// from the state before this commit) do not repeat three times in a row.
pub const WRITEBACK_RECAPTURES: u32 = 3;

/// What the writeback target is filled with before each capture: a capture vkms completed
/// without writing shows as this, not as the previous frame.
pub const WRITEBACK_SENTINEL: u8 = 0x5a;

/// Errors from the KMS sink.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// No usable display device.
    #[error("KMS: no display device: {0}")]
    NoDevice(String),
    /// A DRM call failed.
    #[error("KMS {path}: {op} failed: {errno}")]
    Sys {
        /// The device node.
        path: PathBuf,
        /// What was attempted.
        op: String,
        /// The error.
        errno: Errno,
    },
    /// The device has no connected output, or none that fits.
    #[error("KMS {path}: {why}")]
    NoOutput {
        /// The device node.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// The buffer is not a dma-buf.
    #[error("KMS needs dma-buf buffers: buffer {id} is {kind} (use --alloc dma-heap, udmabuf, gbm or drm-dumb)")]
    NotDmaBuf {
        /// Buffer id.
        id: u32,
        /// Its kind.
        kind: BufferKind,
    },
    /// The plane cannot scan this format out.
    #[error("KMS {path}: plane {plane} cannot scan out {fourcc} with modifier {modifier} (it takes: {supported})")]
    Unsupported {
        /// The device node.
        path: PathBuf,
        /// Plane id.
        plane: u32,
        /// Format asked for.
        fourcc: Fourcc,
        /// Modifier asked for.
        modifier: Modifier,
        /// What the plane lists.
        supported: String,
    },
    /// A page flip (or writeback) did not complete in time.
    #[error("KMS {path}: {what} did not complete within {timeout:?}{}", note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default())]
    Timeout {
        /// The device node.
        path: PathBuf,
        /// What was waited for.
        what: String,
        /// How long.
        timeout: Duration,
        /// Why it may be stuck.
        note: Option<String>,
    },
    /// Writeback was asked for but is not possible here.
    #[error("KMS {path}: writeback: {why}")]
    Writeback {
        /// The device node.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// Bad `--sink kms:...` options.
    #[error("bad KMS sink option {0:?} (want kms[:/dev/dri/cardN|:DRIVER][:connector=NAME][:verify-writeback])")]
    BadOption(String),
    /// Unknown buffer id.
    #[error("KMS: buffer {0} was never added")]
    UnknownBuffer(u32),
    /// A buffer could not be mapped or made.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A fence failed.
    #[error(transparent)]
    Fence(#[from] FenceError),
    /// A layout the driver gave back does not hold.
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
}

impl From<KmsError> for SinkError {
    fn from(e: KmsError) -> Self {
        match e {
            KmsError::NotDmaBuf { .. } | KmsError::Unsupported { .. } => {
                SinkError::Unsupported(e.to_string())
            }
            KmsError::Buffer(b) => SinkError::Buffer(b),
            KmsError::Fence(f) => SinkError::Fence(f),
            other => SinkError::Device(other.to_string()),
        }
    }
}

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

/// Which display device to open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The first card node with a connected display.
    #[default]
    Auto,
    /// A node path (`/dev/dri/card1`).
    Path(PathBuf),
    /// A kernel driver name (`vkms`, `i915`, …).
    Driver(String),
}

/// KMS sink settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KmsOptions {
    /// The device.
    pub device: DeviceSpec,
    /// Connector name (`Virtual-1`, `HDMI-A-1`); default: the first connected one.
    pub connector: Option<String>,
    /// Capture every frame through the writeback connector and compare it (vkms CI).
    pub verify_writeback: bool,
    /// When frames go through the Vulkan conversion first (see [`super::display`]).
    pub convert: ConvertPolicy,
}

/// When the `kms` sink puts the Vulkan conversion (any format the shaders read → XR24) in
/// front of the plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConvertPolicy {
    /// Only for buffers the plane cannot scan out (format, modifier or memory kind).
    #[default]
    Auto,
    /// Every buffer (`convert`).
    Always,
    /// Never: such buffers are refused (`direct`).
    Never,
}

impl KmsOptions {
    /// Parses what follows `kms` in a sink spec: `:`- or `,`-separated tokens, each a node path
    /// (`/dev/dri/card1`), `connector=NAME`, `verify-writeback` (or `writeback`), `convert`
    /// (always through Vulkan), `direct` (never), or a driver name.
    pub fn parse(args: &str) -> Result<Self, KmsError> {
        let mut o = KmsOptions::default();
        for tok in args.split([':', ',']).filter(|t| !t.is_empty()) {
            if tok.starts_with('/') {
                o.device = DeviceSpec::Path(tok.into());
            } else if let Some(name) = tok.strip_prefix("connector=") {
                o.connector = Some(name.to_owned());
            } else if matches!(tok, "verify-writeback" | "writeback" | "verify") {
                o.verify_writeback = true;
            } else if tok == "convert" {
                o.convert = ConvertPolicy::Always;
            } else if matches!(tok, "direct" | "no-convert") {
                o.convert = ConvertPolicy::Never;
            } else if tok
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                o.device = DeviceSpec::Driver(tok.to_owned());
            } else {
                return Err(KmsError::BadOption(tok.to_owned()));
            }
        }
        Ok(o)
    }
}

/// Property ids of one KMS object, by name.
#[derive(Debug, Default)]
struct Props {
    ids: HashMap<String, property::Handle>,
    values: HashMap<String, u64>,
}

impl Props {
    fn load<H: ResourceHandle>(card: &DrmFile, handle: H) -> Result<Props, KmsError> {
        let sys = |e: std::io::Error| KmsError::Sys {
            path: card.path().to_owned(),
            op: "DRM_IOCTL_MODE_OBJ_GETPROPERTIES".into(),
            errno: errno(&e),
        };
        let set = card.get_properties(handle).map_err(sys)?;
        let mut p = Props::default();
        for (id, value) in set.iter() {
            let info = card.get_property(*id).map_err(sys)?;
            let name = info.name().to_string_lossy().into_owned();
            p.values.insert(name.clone(), *value);
            p.ids.insert(name, *id);
        }
        Ok(p)
    }

    fn id(&self, name: &str) -> Option<property::Handle> {
        self.ids.get(name).copied()
    }
}

/// A connector → CRTC → primary plane path, with the properties commits need.
#[derive(Debug)]
struct Output {
    connector: connector::Handle,
    connector_name: String,
    crtc: crtc::Handle,
    plane: plane::Handle,
    modes: Vec<Mode>,
    conn_props: Props,
    crtc_props: Props,
    plane_props: Props,
    /// (fourcc, modifier) pairs the plane scans out.
    formats: Vec<FormatModifier>,
    /// Every other connector with its `CRTC_ID` property: a modeset detaches those still on
    /// our CRTC (a writeback connector a verifying run left there, a clone).
    others: Vec<(connector::Handle, property::Handle)>,
}

fn connector_name(info: &connector::Info) -> String {
    format!("{}-{}", info.interface().as_str(), info.interface_id())
}

const PLANE_TYPE_PRIMARY: u64 = 1;

/// Parses an `IN_FORMATS` blob (`struct drm_format_modifier_blob`) into (fourcc, modifier) pairs.
pub fn parse_in_formats(blob: &[u8]) -> Option<Vec<FormatModifier>> {
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(blob.get(o..o + 4)?.try_into().ok()?))
    };
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(blob.get(o..o + 8)?.try_into().ok()?))
    };
    let (count_formats, formats_offset) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let (count_mods, mods_offset) = (u32_at(16)? as usize, u32_at(20)? as usize);
    let formats: Vec<u32> = (0..count_formats)
        .map(|i| u32_at(formats_offset + 4 * i))
        .collect::<Option<_>>()?;
    let mut out = Vec::new();
    for m in 0..count_mods {
        // struct drm_format_modifier { u64 formats; u32 offset; u32 pad; u64 modifier; }
        let base = mods_offset + 24 * m;
        let (mask, offset, modifier) = (
            u64_at(base)?,
            u32_at(base + 8)? as usize,
            u64_at(base + 16)?,
        );
        for bit in 0..64 {
            if mask >> bit & 1 == 1 {
                if let Some(&f) = formats.get(offset + bit) {
                    out.push(FormatModifier {
                        fourcc: Fourcc(f),
                        modifier: Modifier(modifier),
                    });
                }
            }
        }
    }
    Some(out)
}

impl Output {
    fn find(card: &DrmFile, want: Option<&str>) -> Result<Output, KmsError> {
        let path = card.path().to_owned();
        let sys = |op: &str, e: std::io::Error| KmsError::Sys {
            path: path.clone(),
            op: op.into(),
            errno: errno(&e),
        };
        let no = |why: String| KmsError::NoOutput {
            path: path.clone(),
            why,
        };
        let res = card
            .resource_handles()
            .map_err(|e| sys("DRM_IOCTL_MODE_GETRESOURCES", e))?;
        let mut seen = Vec::new();
        let mut pick = None;
        for &h in res.connectors() {
            let info = card
                .get_connector(h, true)
                .map_err(|e| sys("DRM_IOCTL_MODE_GETCONNECTOR", e))?;
            let name = connector_name(&info);
            let usable = info.interface() != connector::Interface::Writeback
                && info.state() == connector::State::Connected
                && !info.modes().is_empty();
            seen.push(format!(
                "{name} ({:?}{})",
                info.state(),
                if info.interface() == connector::Interface::Writeback {
                    ", writeback"
                } else {
                    ""
                }
            ));
            let named = want.is_none_or(|w| w == name);
            if usable && named {
                pick = Some((info, name));
                break;
            }
        }
        let (info, connector_name) = pick.ok_or_else(|| {
            no(match want {
                Some(w) => format!(
                    "no connected connector named {w:?} (have: {})",
                    seen.join(", ")
                ),
                None => format!("no connected display (connectors: {})", seen.join(", ")),
            })
        })?;
        // A CRTC one of the connector's encoders can drive (prefer the one it is on now).
        let mut crtcs = Vec::new();
        for &e in info.encoders() {
            let enc = card
                .get_encoder(e)
                .map_err(|e| sys("DRM_IOCTL_MODE_GETENCODER", e))?;
            if let Some(c) = enc.crtc() {
                crtcs.insert(0, c);
            }
            crtcs.extend(res.filter_crtcs(enc.possible_crtcs()));
        }
        let planes = card
            .plane_handles()
            .map_err(|e| sys("DRM_IOCTL_MODE_GETPLANERESOURCES", e))?;
        for &crtc in &crtcs {
            for &p in &planes {
                let pinfo = card
                    .get_plane(p)
                    .map_err(|e| sys("DRM_IOCTL_MODE_GETPLANE", e))?;
                if !res.filter_crtcs(pinfo.possible_crtcs()).contains(&crtc) {
                    continue;
                }
                let plane_props = Props::load(card, p)?;
                if plane_props.values.get("type") != Some(&PLANE_TYPE_PRIMARY) {
                    continue;
                }
                let formats = match plane_props.values.get("IN_FORMATS") {
                    Some(&blob) if blob != 0 => card
                        .get_property_blob(blob)
                        .ok()
                        .and_then(|b| parse_in_formats(&b)),
                    _ => None,
                }
                .unwrap_or_else(|| {
                    // No IN_FORMATS: the plane's format list, implicitly LINEAR.
                    pinfo
                        .formats()
                        .iter()
                        .map(|&f| FormatModifier {
                            fourcc: Fourcc(f),
                            modifier: Modifier::LINEAR,
                        })
                        .collect()
                });
                let mut others = Vec::new();
                for &c in res.connectors() {
                    if c != info.handle() {
                        if let Some(id) = Props::load(card, c)?.id("CRTC_ID") {
                            others.push((c, id));
                        }
                    }
                }
                return Ok(Output {
                    others,
                    connector: info.handle(),
                    connector_name,
                    crtc,
                    plane: p,
                    modes: info.modes().to_vec(),
                    conn_props: Props::load(card, info.handle())?,
                    crtc_props: Props::load(card, crtc)?,
                    plane_props,
                    formats,
                });
            }
        }
        Err(no(format!(
            "connector {connector_name}: no CRTC with a primary plane"
        )))
    }

    /// The mode for frames of `w`x`h`: one of exactly that size if the connector has it (the
    /// preferred refresh first), else the preferred mode.
    fn pick_mode(&self, w: u32, h: u32) -> Mode {
        let preferred = |m: &Mode| {
            m.mode_type()
                .contains(drm::control::ModeTypeFlags::PREFERRED)
        };
        let mut exact: Vec<&Mode> = self
            .modes
            .iter()
            .filter(|m| m.size() == (w as u16, h as u16))
            .collect();
        exact.sort_by_key(|m| (!preferred(m), (m.vrefresh() as i64 - 60).abs()));
        exact
            .first()
            .copied()
            .or_else(|| self.modes.iter().find(|m| preferred(m)))
            .unwrap_or(&self.modes[0])
            .to_owned()
    }

    fn scans_out(&self, fourcc: Fourcc, modifier: Modifier) -> bool {
        self.formats.iter().any(|f| {
            f.fourcc == fourcc && (f.modifier == modifier || modifier == Modifier::INVALID)
        })
    }
}

/// One imported buffer: its GEM handles (one per distinct dma-buf) and its framebuffer.
#[derive(Debug)]
struct Imported {
    fb: framebuffer::Handle,
    gems: Vec<u32>,
    layout: FrameLayout,
    /// Read mapping, for writeback verification against the buffer's own pixels.
    mapping: Option<BufferMapping>,
}

/// `drm::buffer::PlanarBuffer` over a frameshare layout and imported GEM handles.
struct FbDesc<'a> {
    layout: &'a FrameLayout,
    handles: [Option<drm::buffer::Handle>; 4],
    format: DrmFourcc,
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
    fn handles(&self) -> [Option<drm::buffer::Handle>; 4] {
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

/// A frame given back to the producer, with the fence that signals when the display is done
/// reading it.
#[derive(Debug)]
pub struct Released {
    /// Buffer id.
    pub id: u32,
    /// The frame it held.
    pub seq: u64,
    /// Signals when the buffer has left the screen (`None`: it already has).
    pub fence: Option<SyncFile>,
}

/// What presenting one frame did.
#[derive(Debug, Default)]
pub struct Presented {
    /// The frame this one replaced on screen, now free to reuse once its fence signals.
    pub released: Option<Released>,
    /// With writeback verification: whether the captured screen matched the frame.
    pub verified: Option<bool>,
}

/// Where the frame goes on the CRTC: source and destination rectangles, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    src_w: u32,
    src_h: u32,
    crtc_x: u32,
    crtc_y: u32,
    crtc_w: u32,
    crtc_h: u32,
}

/// What is on screen now.
#[derive(Debug, Clone, Copy)]
struct Shown {
    id: u32,
    seq: u64,
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
    /// Frames passed with an unsignalled acquire fence as `IN_FENCE_FD`.
    pub in_fences: u64,
    /// Writeback jobs queued again because the driver dropped one (vkms race).
    pub writeback_retries: u64,
    /// Buffers imported (PRIME + AddFB2).
    pub imports: u64,
    /// Intervals between consecutive flips, µs (for pacing reports).
    pub flip_intervals_us: Vec<u64>,
}

/// The KMS sink.
pub struct KmsSink {
    card: DrmFile,
    output: Output,
    opts: KmsOptions,
    addfb_modifiers: bool,
    imported: HashMap<u32, Imported>,
    gem_refs: HashMap<u32, usize>,
    mode: Option<(Mode, u64)>,
    placement: Option<Placement>,
    /// The frame size the mode and placement were chosen for.
    mode_for: Option<(u32, u32)>,
    /// The CRTC drives only the writeback connector (see `ensure_mode`).
    wb_only: bool,
    shown: Option<Shown>,
    flip_pending: Option<(u64, Option<SyncFile>)>,
    last_flip: Option<Instant>,
    out_fence: FenceSlot,
    writeback: Option<writeback::Writeback>,
    pattern: Option<Pattern>,
    scene: Option<(FrameLayout, Scene)>,
    stats: KmsStats,
    /// Frames off the screen (or about to be: see their fences), not yet given back through
    /// [`Sink::take_released`].
    to_release: Vec<Released>,
}

impl std::fmt::Debug for KmsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsSink")
            .field("device", &self.card.path())
            .field("driver", &self.card.driver())
            .field("connector", &self.output.connector_name)
            .field("crtc", &self.output.crtc)
            .field("plane", &self.output.plane)
            .finish_non_exhaustive()
    }
}

fn open_card(spec: &DeviceSpec, connector: Option<&str>) -> Result<(DrmFile, Output), KmsError> {
    let prepare = |card: DrmFile| -> Result<(DrmFile, Output), KmsError> {
        let cap = |cap, name: &str| {
            card.set_client_capability(cap, true)
                .map_err(|e| KmsError::NoOutput {
                    path: card.path().to_owned(),
                    why: format!(
                        "driver {} refuses client capability {name}: {e} (not an atomic KMS device)",
                        card.driver()
                    ),
                })
        };
        cap(ClientCapability::UniversalPlanes, "UNIVERSAL_PLANES")?;
        cap(ClientCapability::Atomic, "ATOMIC")?;
        // Writeback connectors are listed only to clients that ask; harmless elsewhere.
        let _ = card.set_client_capability(ClientCapability::WritebackConnectors, true);
        let out = Output::find(&card, connector)?;
        Ok((card, out))
    };
    let open = |p: &std::path::Path| {
        DrmFile::open(p).map_err(|e| KmsError::Sys {
            path: p.to_owned(),
            op: "open".into(),
            errno: errno(&e),
        })
    };
    match spec {
        DeviceSpec::Path(p) => prepare(open(p)?),
        DeviceSpec::Driver(d) => {
            prepare(sys::open_by_driver(NodeKind::Card, d).map_err(KmsError::NoDevice)?)
        }
        DeviceSpec::Auto => {
            let mut seen = Vec::new();
            for p in sys::nodes(NodeKind::Card) {
                match open(&p).and_then(prepare) {
                    Ok(x) => return Ok(x),
                    Err(e) => seen.push(e.to_string()),
                }
            }
            Err(KmsError::NoDevice(if seen.is_empty() {
                format!("no DRM card nodes in {}", sys::DRI_DIR)
            } else {
                seen.join("; ")
            }))
        }
    }
}

impl KmsSink {
    /// Opens the display: device, connector, CRTC and primary plane (no modeset yet: the mode
    /// is chosen from the first frame's size).
    pub fn open(opts: KmsOptions) -> Result<KmsSink, KmsError> {
        let (card, output) = open_card(&opts.device, opts.connector.as_deref())?;
        // Master comes with the first open of the node; where an allocator opened it first
        // and gave master up since, take it (root or a former master may).
        if let Err(e) = card.acquire_master_lock() {
            log::debug!("KMS: SET_MASTER: {e} (commits will tell if another process drives it)");
        }
        let addfb_modifiers = card
            .get_driver_capability(DriverCapability::AddFB2Modifiers)
            .is_ok_and(|v| v != 0);
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
            Some(writeback::Writeback::find(&card)?)
        } else {
            None
        };
        Ok(KmsSink {
            card,
            output,
            opts,
            addfb_modifiers,
            imported: HashMap::new(),
            gem_refs: HashMap::new(),
            mode: None,
            placement: None,
            mode_for: None,
            wb_only: false,
            shown: None,
            flip_pending: None,
            last_flip: None,
            out_fence: FenceSlot::new(),
            writeback,
            pattern: None,
            scene: None,
            stats: KmsStats::default(),
            to_release: Vec::new(),
        })
    }

    /// Opens from the text after `kms` in a sink spec (see [`KmsOptions::parse`]).
    pub fn from_spec(args: &str) -> Result<KmsSink, KmsError> {
        Self::open(KmsOptions::parse(args)?)
    }

    /// The device node.
    pub fn device(&self) -> &std::path::Path {
        self.card.path()
    }

    /// The driver name.
    pub fn driver(&self) -> &str {
        self.card.driver()
    }

    /// The connector's name (`Virtual-1`).
    pub fn connector_name(&self) -> &str {
        &self.output.connector_name
    }

    /// The (fourcc, modifier) pairs the primary plane scans out (`IN_FORMATS`).
    pub fn formats(&self) -> &[FormatModifier] {
        &self.output.formats
    }

    /// Whether the primary plane scans `fourcc` with `modifier` out (the check
    /// [`KmsSink::import`] makes).
    pub fn scans_out(&self, fourcc: Fourcc, modifier: Modifier) -> bool {
        self.output.scans_out(fourcc, modifier)
    }

    /// The current mode's size, once a frame has been shown.
    pub fn mode_size(&self) -> Option<(u32, u32)> {
        self.mode.as_ref().map(|(m, _)| {
            let (w, h) = m.size();
            (w as u32, h as u32)
        })
    }

    /// Counters.
    pub fn stats(&self) -> &KmsStats {
        &self.stats
    }

    /// Compare writeback captures with this generator pattern's frames (instead of the buffers'
    /// own pixels).
    pub fn set_pattern(&mut self, pattern: Option<Pattern>) {
        self.pattern = pattern;
    }

    fn sys_err(&self, op: &str) -> impl Fn(std::io::Error) -> KmsError {
        let path = self.card.path().to_owned();
        let op = op.to_owned();
        move |e| KmsError::Sys {
            path: path.clone(),
            op: op.clone(),
            errno: errno(&e),
        }
    }

    /// Imports buffer `id` (PRIME + AddFB2), once; later calls with the same id are free.
    pub fn import(&mut self, id: u32, buffer: &Buffer) -> Result<(), KmsError> {
        if self.imported.contains_key(&id) {
            return Ok(());
        }
        if !buffer.kind().is_dma_buf() {
            return Err(KmsError::NotDmaBuf {
                id,
                kind: buffer.kind(),
            });
        }
        let layout = buffer.layout().clone();
        if !self.output.scans_out(layout.fourcc(), layout.modifier()) {
            let mut have: Vec<String> = self
                .output
                .formats
                .iter()
                .map(|f| format!("{}/{}", f.fourcc, f.modifier))
                .collect();
            have.dedup();
            return Err(KmsError::Unsupported {
                path: self.card.path().to_owned(),
                plane: self.output.plane.into(),
                fourcc: layout.fourcc(),
                modifier: layout.modifier(),
                supported: have.join(" "),
            });
        }
        let format = DrmFourcc::try_from(layout.fourcc().0).map_err(|_| KmsError::Unsupported {
            path: self.card.path().to_owned(),
            plane: self.output.plane.into(),
            fourcc: layout.fourcc(),
            modifier: layout.modifier(),
            supported: "formats the drm crate names".into(),
        })?;
        // One GEM handle per distinct dma-buf (PRIME gives the same handle for the same dma-buf,
        // so handles are reference-counted across buffers too).
        let mut gems: Vec<u32> = Vec::new();
        let mut plane_handles = [None; 4];
        let undo = |me: &mut Self, gems: &[u32]| {
            for &g in gems {
                me.unref_gem(g);
            }
        };
        for fd in buffer.fds() {
            match self.card.prime_fd_to_buffer(fd) {
                Ok(h) => {
                    let raw: u32 = h.into();
                    *self.gem_refs.entry(raw).or_insert(0) += 1;
                    gems.push(raw);
                }
                Err(e) => {
                    let err = self.sys_err("DRM_IOCTL_PRIME_FD_TO_HANDLE")(e);
                    undo(self, &gems);
                    return Err(err);
                }
            }
        }
        for (i, PlaneLayout { fd_index, .. }) in layout.planes().iter().enumerate() {
            plane_handles[i] = drm::control::from_u32(gems[*fd_index as usize]);
        }
        let desc = FbDesc {
            layout: &layout,
            handles: plane_handles,
            format,
        };
        let with_mods = self.addfb_modifiers && layout.modifier() != Modifier::INVALID;
        let flags = if with_mods {
            FbCmd2Flags::MODIFIERS
        } else {
            FbCmd2Flags::empty()
        };
        let fb = if with_mods {
            self.card.add_planar_framebuffer(&desc, flags)
        } else if layout.modifier() == Modifier::LINEAR || layout.modifier() == Modifier::INVALID {
            // Without the modifiers flag the driver assumes its default layout, which is LINEAR
            // for every driver that lacks ADDFB2_MODIFIERS.
            let desc = FbDescNoMod(&desc);
            self.card.add_planar_framebuffer(&desc, flags)
        } else {
            undo(self, &gems);
            return Err(KmsError::Unsupported {
                path: self.card.path().to_owned(),
                plane: self.output.plane.into(),
                fourcc: layout.fourcc(),
                modifier: layout.modifier(),
                supported: "LINEAR only (driver lacks DRM_CAP_ADDFB2_MODIFIERS)".into(),
            });
        };
        let fb = match fb {
            Ok(fb) => fb,
            Err(e) => {
                let err = self.sys_err(&format!(
                    "DRM_IOCTL_MODE_ADDFB2 ({} {}x{} {}, pitches {:?}, offsets {:?})",
                    layout.fourcc(),
                    layout.width(),
                    layout.height(),
                    layout.modifier(),
                    desc.pitches(),
                    desc.offsets()
                ))(e);
                undo(self, &gems);
                return Err(err);
            }
        };
        let mapping = if self.opts.verify_writeback && self.pattern.is_none() {
            Some(buffer.map(false)?)
        } else {
            None
        };
        // Device imports count with the GPU imports: setup work the steady state must not do.
        crate::counters::bump(&crate::counters::GPU_IMPORTS);
        self.stats.imports += 1;
        self.imported.insert(
            id,
            Imported {
                fb,
                gems,
                layout,
                mapping,
            },
        );
        Ok(())
    }

    fn unref_gem(&mut self, gem: u32) {
        let Some(n) = self.gem_refs.get_mut(&gem) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.gem_refs.remove(&gem);
            if let Some(h) = drm::control::from_u32::<drm::buffer::Handle>(gem) {
                if let Err(e) = self.card.close_buffer(h) {
                    log::error!(
                        "KMS {}: DRM_IOCTL_GEM_CLOSE({gem}) failed: {e}",
                        self.card.path().display()
                    );
                }
            }
        }
    }

    /// Forgets buffer `id`: removes its framebuffer and GEM handles. A buffer still on screen is
    /// taken off first (the plane is turned off).
    pub fn remove(&mut self, id: u32) {
        if self.shown.is_some_and(|s| s.id == id) {
            if let Err(e) = self.release_all() {
                log::error!("KMS: taking buffer {id} off the screen: {e}");
            }
        }
        if let Some(imp) = self.imported.remove(&id) {
            if let Err(e) = self.card.destroy_framebuffer(imp.fb) {
                log::error!(
                    "KMS {}: DRM_IOCTL_MODE_RMFB({:?}) failed: {e}",
                    self.card.path().display(),
                    imp.fb
                );
            }
            for g in imp.gems {
                self.unref_gem(g);
            }
        }
    }

    /// Waits for the pending page flip, if any (pacing: one commit in flight at a time).
    pub fn wait_flip(&mut self, timeout: Duration) -> Result<(), KmsError> {
        let Some((seq, _)) = &self.flip_pending else {
            return Ok(());
        };
        let seq = *seq;
        let deadline = Instant::now() + timeout;
        let crtc = self.output.crtc;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ready =
                sys::wait_readable(self.card.as_fd(), left).map_err(|errno| KmsError::Sys {
                    path: self.card.path().to_owned(),
                    op: "poll".into(),
                    errno,
                })?;
            if !ready {
                let note = match &self.flip_pending {
                    Some((_, Some(f))) if !f.is_signalled() => Some(format!(
                        "frame {seq}'s acquire fence has not signalled: the display is waiting for it"
                    )),
                    _ => None,
                };
                return Err(KmsError::Timeout {
                    path: self.card.path().to_owned(),
                    what: format!("page flip to frame {seq}"),
                    timeout,
                    note,
                });
            }
            let events = self
                .card
                .receive_events()
                .map_err(self.sys_err("read(DRM events)"))?;
            for ev in events {
                if let drm::control::Event::PageFlip(pf) = ev {
                    if pf.crtc == crtc {
                        self.flip_pending = None;
                        self.stats.flips += 1;
                        let now = Instant::now();
                        if let Some(last) = self.last_flip.replace(now) {
                            self.stats
                                .flip_intervals_us
                                .push((now - last).as_micros() as u64);
                        }
                    }
                }
            }
            if self.flip_pending.is_none() {
                return Ok(());
            }
        }
    }

    fn placement_for(&self, layout: &FrameLayout, scaled: bool) -> Placement {
        let (mw, mh) = self.mode_size().expect("mode chosen before placement");
        if scaled {
            return Placement {
                src_w: layout.width(),
                src_h: layout.height(),
                crtc_x: 0,
                crtc_y: 0,
                crtc_w: mw,
                crtc_h: mh,
            };
        }
        let (w, h) = (layout.width().min(mw), layout.height().min(mh));
        Placement {
            src_w: w,
            src_h: h,
            crtc_x: (mw - w) / 2,
            crtc_y: (mh - h) / 2,
            crtc_w: w,
            crtc_h: h,
        }
    }

    fn add_plane_props(
        &self,
        req: &mut AtomicModeReq,
        fb: Option<framebuffer::Handle>,
        pl: Placement,
    ) -> Result<(), KmsError> {
        let p = self.output.plane;
        let need = |name: &str| self.need_prop(&self.output.plane_props, "plane", name);
        let fb_raw = fb.map_or(0u64, |f| u32::from(f) as u64);
        req.add_raw_property(p.into(), need("FB_ID")?, fb_raw);
        let crtc_raw = if fb.is_some() {
            u32::from(self.output.crtc) as u64
        } else {
            0
        };
        req.add_raw_property(p.into(), need("CRTC_ID")?, crtc_raw);
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
            req.add_raw_property(p.into(), need(name)?, if fb.is_some() { v } else { 0 });
        }
        Ok(())
    }

    fn need_prop(
        &self,
        props: &Props,
        what: &str,
        name: &str,
    ) -> Result<property::Handle, KmsError> {
        props.id(name).ok_or_else(|| KmsError::NoOutput {
            path: self.card.path().to_owned(),
            why: format!("{what} has no {name} property"),
        })
    }

    /// Chooses the mode for this frame size and the placement the plane accepts (TEST_ONLY),
    /// if not already done for this size.
    fn ensure_mode(&mut self, id: u32) -> Result<bool, KmsError> {
        let layout = self.imported[&id].layout.clone();
        let size = (layout.width(), layout.height());
        if self.mode.is_some() && self.placement.is_some() && self.mode_for == Some(size) {
            return Ok(false);
        }
        let mode = self.output.pick_mode(layout.width(), layout.height());
        let blob = self
            .card
            .create_property_blob(&mode)
            .map_err(self.sys_err("DRM_IOCTL_MODE_CREATEPROPBLOB"))?;
        let blob: u64 = blob.into();
        let old = self.mode.replace((mode, blob));
        if let Some((_, old_blob)) = old {
            if let Err(e) = self.card.destroy_property_blob(old_blob) {
                log::warn!("KMS: destroying mode blob {old_blob}: {e}");
            }
        }
        let fb = self.imported[&id].fb;
        let mut last_err = None;
        // Writeback alongside the display first; drivers whose encoders cannot be clones
        // (vkms up to at least 6.12: "failed valid clone check") take the writeback connector
        // only as the CRTC's sole output.
        let wb_choices: &[bool] = if self.writeback.is_some() {
            &[false, true]
        } else {
            &[false]
        };
        for scaled in [false, true] {
            for &wb_only in wb_choices {
                let pl = self.placement_for(&layout, scaled);
                let mut req = self.modeset_req(wb_only)?;
                self.add_plane_props(&mut req, Some(fb), pl)?;
                match self.card.atomic_commit(
                    AtomicCommitFlags::TEST_ONLY | AtomicCommitFlags::ALLOW_MODESET,
                    req,
                ) {
                    Ok(()) => {
                        if scaled && self.writeback.is_some() {
                            return Err(KmsError::Writeback {
                                path: self.card.path().to_owned(),
                                why: format!(
                                    "the plane only takes {}x{} frames scaled to the mode; writeback verification compares unscaled frames",
                                    layout.width(), layout.height()
                                ),
                            });
                        }
                        log::info!(
                            "KMS: mode {:?} {}x{}@{} for {}x{} frames, plane at {:?}{}",
                            mode.name(),
                            mode.size().0,
                            mode.size().1,
                            mode.vrefresh(),
                            layout.width(),
                            layout.height(),
                            pl,
                            if wb_only {
                                "; writeback connector as the CRTC's only output"
                            } else {
                                ""
                            }
                        );
                        self.placement = Some(pl);
                        self.mode_for = Some(size);
                        self.wb_only = wb_only;
                        return Ok(true);
                    }
                    Err(e) => last_err = Some(e),
                }
            }
        }
        self.placement = None;
        self.mode_for = None;
        Err(self.sys_err(&format!(
            "atomic TEST_ONLY of {}x{} frames on mode {}x{} (unscaled and scaled{})",
            layout.width(),
            layout.height(),
            mode.size().0,
            mode.size().1,
            if self.writeback.is_some() {
                ", with and without the display connector beside writeback"
            } else {
                ""
            }
        ))(last_err.expect("tried")))
    }

    fn modeset_req(&self, wb_only: bool) -> Result<AtomicModeReq, KmsError> {
        let mut req = AtomicModeReq::new();
        let (_, blob) = self.mode.as_ref().expect("mode chosen");
        let conn = self.output.connector;
        let crtc = self.output.crtc;
        let crtc_raw = u32::from(crtc) as u64;
        req.add_raw_property(
            conn.into(),
            self.need_prop(&self.output.conn_props, "connector", "CRTC_ID")?,
            if wb_only { 0 } else { crtc_raw },
        );
        let wb_conn = self.writeback.as_ref().map(|w| w.connector);
        for &(c, prop) in &self.output.others {
            if Some(c) == wb_conn {
                continue;
            }
            let on_ours = self
                .card
                .get_properties(c)
                .map(|set| set.iter().any(|(p, v)| *p == prop && *v == crtc_raw))
                .unwrap_or(false);
            if on_ours {
                req.add_raw_property(c.into(), prop, 0);
            }
        }
        req.add_raw_property(
            crtc.into(),
            self.need_prop(&self.output.crtc_props, "CRTC", "MODE_ID")?,
            *blob,
        );
        req.add_raw_property(
            crtc.into(),
            self.need_prop(&self.output.crtc_props, "CRTC", "ACTIVE")?,
            1,
        );
        if let Some(wb) = &self.writeback {
            req.add_raw_property(wb.connector.into(), wb.prop("CRTC_ID")?, crtc_raw);
        }
        Ok(req)
    }

    /// Shows frame `seq` of buffer `id` (imported with [`KmsSink::import`]): waits for the
    /// previous flip, commits, and returns the frame this one replaced with its release fence.
    /// With writeback verification on, also captures and compares the screen.
    pub fn present(
        &mut self,
        id: u32,
        seq: u64,
        acquire: Option<SyncFile>,
    ) -> Result<Presented, KmsError> {
        if !self.imported.contains_key(&id) {
            return Err(KmsError::UnknownBuffer(id));
        }
        self.wait_flip(FLIP_TIMEOUT)?;
        let modeset = self.ensure_mode(id)?;
        let fb = self.imported[&id].fb;
        let pl = self.placement.expect("placement chosen");
        if modeset {
            // The modeset is its own blocking commit, then the frame flips in as usual: a
            // writeback job in the commit that re-routes an active CRTC never completes on vkms.
            let mut req = self.modeset_req(self.wb_only)?;
            self.add_plane_props(&mut req, Some(fb), pl)?;
            self.card
                .atomic_commit(AtomicCommitFlags::ALLOW_MODESET, req)
                .map_err(self.sys_err(&format!(
                    "DRM_IOCTL_MODE_ATOMIC (modeset for frame {seq}, buffer {id})"
                )))?;
        }
        let mut req = AtomicModeReq::new();
        self.add_plane_props(&mut req, Some(fb), pl)?;
        // The acquire fence goes to the display as IN_FENCE_FD unless it already signalled.
        let acquire = acquire.filter(|f| !f.is_signalled());
        if let Some(f) = &acquire {
            let prop = self.need_prop(&self.output.plane_props, "plane", "IN_FENCE_FD")?;
            req.add_raw_property(
                self.output.plane.into(),
                prop,
                f.as_fd().as_raw_fd() as i64 as u64,
            );
            self.stats.in_fences += 1;
        }
        let out_prop = self.need_prop(&self.output.crtc_props, "CRTC", "OUT_FENCE_PTR")?;
        req.add_raw_property(
            self.output.crtc.into(),
            out_prop,
            self.out_fence.prop_value(),
        );
        if let Some(wb) = &mut self.writeback {
            let (mw, mh) = self.mode.as_ref().map(|(m, _)| m.size()).expect("mode");
            wb.ensure_target(&self.card, mw as u32, mh as u32)?;
            wb.add_job(&mut req)?;
        }
        let flags = AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT;
        self.card
            .atomic_commit(flags, req)
            .map_err(self.sys_err(&format!("DRM_IOCTL_MODE_ATOMIC (frame {seq}, buffer {id})")))?;
        self.stats.commits += 1;
        let out_fence = self.out_fence.take().map(SyncFile::from_fd);
        self.flip_pending = Some((seq, acquire));
        let released = match self.shown.replace(Shown { id, seq }) {
            Some(prev) => Some(Released {
                id: prev.id,
                seq: prev.seq,
                fence: match &out_fence {
                    Some(f) => Some(f.try_clone()?),
                    // No out-fence: the previous frame has left once this flip completes.
                    None => {
                        self.wait_flip(FLIP_TIMEOUT)?;
                        None
                    }
                },
            }),
            None => None,
        };
        let verified = if self.writeback.is_some() {
            let ok = self.check_writeback(id, seq)?;
            if ok {
                self.stats.verified += 1;
            } else {
                self.stats.mismatches += 1;
            }
            Some(ok)
        } else {
            None
        };
        Ok(Presented { released, verified })
    }

    /// [`KmsSink::present`] for a sink that holds frames: the frame it replaced waits in
    /// [`Sink::take_released`]. Returns the writeback verdict (`None`: not verifying).
    pub fn show(
        &mut self,
        id: u32,
        seq: u64,
        acquire: Option<SyncFile>,
    ) -> Result<Option<bool>, KmsError> {
        let p = self.present(id, seq, acquire)?;
        self.to_release.extend(p.released);
        Ok(p.verified)
    }

    /// Adds another writeback job for the frame on screen (same framebuffer).
    fn requeue_writeback(&mut self, seq: u64) -> Result<(), KmsError> {
        self.wait_flip(FLIP_TIMEOUT)?;
        let mut req = AtomicModeReq::new();
        self.writeback
            .as_mut()
            .expect("writeback on")
            .add_job(&mut req)?;
        self.card
            .atomic_commit(
                AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT,
                req,
            )
            .map_err(self.sys_err("DRM_IOCTL_MODE_ATOMIC (writeback again)"))?;
        self.flip_pending = Some((seq, None));
        Ok(())
    }

    /// Waits for this frame's writeback and compares it with what the frame must show. A
    /// mismatch is captured again, up to [`WRITEBACK_RECAPTURES`] times, before it counts:
    /// vkms (6.12) can complete a writeback job without composing into it (its worker reads
    /// the job pointer before the commit that sets it) or from the CRTC state before this
    /// commit, and the framebuffer on screen does not change between captures, so a capture
    /// that matches proves what the display shows; only repeated mismatches are real ones.
    fn check_writeback(&mut self, id: u32, seq: u64) -> Result<bool, KmsError> {
        let mut why = match self.capture_and_compare(id, seq)? {
            Ok(()) => return Ok(true),
            Err(why) => why,
        };
        for _ in 0..WRITEBACK_RECAPTURES {
            log::debug!(
                "KMS writeback: frame {seq} (buffer {id}) mismatched ({why}); capturing again"
            );
            self.stats.writeback_retries += 1;
            self.requeue_writeback(seq)?;
            why = match self.capture_and_compare(id, seq)? {
                Ok(()) => return Ok(true),
                Err(why) => why,
            };
        }
        if self.stats.mismatches < 5 {
            log::error!(
                "KMS writeback: frame {seq} (buffer {id}), {} captures: {why}",
                WRITEBACK_RECAPTURES + 1
            );
        }
        Ok(false)
    }

    /// One capture of the frame on screen, compared with what it must show.
    fn capture_and_compare(&mut self, id: u32, seq: u64) -> Result<Result<(), String>, KmsError> {
        let path = self.card.path().to_owned();
        let mut waited = Duration::ZERO;
        loop {
            let wb = self.writeback.as_mut().expect("writeback on");
            match wb.wait(&path, WRITEBACK_STALL) {
                Ok(()) => break,
                Err(KmsError::Timeout { .. }) if waited + WRITEBACK_STALL < WRITEBACK_TIMEOUT => {
                    // vkms (6.12) keeps one "composer enabled" flag, which the deferred
                    // cleanup of the previous writeback job can clear after this commit set
                    // it: the job then never runs. A new job sets the flag again; the stuck
                    // one completes first, ours after it.
                    waited += WRITEBACK_STALL;
                    self.stats.writeback_retries += 1;
                    log::debug!("KMS writeback for frame {seq} stalled; queueing it again");
                    self.requeue_writeback(seq)?;
                }
                Err(e) => return Err(e),
            }
        }
        let pl = self.placement.expect("placement chosen");
        let layout = self.imported[&id].layout.clone();
        if let Some(p) = self.pattern {
            let same = matches!(&self.scene, Some((l, _)) if l.fourcc() == layout.fourcc() && l.width() == layout.width() && l.height() == layout.height());
            if !same {
                self.scene = Some((layout.clone(), Scene::new(p, &layout)));
            }
        }
        let spec = match (&self.scene, self.pattern) {
            (Some((_, scene)), Some(_)) => Some(scene.frame(seq)),
            _ => None,
        };
        let imp = self.imported.get_mut(&id).expect("imported");
        let wb = self.writeback.as_mut().expect("writeback on");
        let wb_access = wb.access()?;
        let dst = &wb_access;
        let result = match (&spec, imp.mapping.as_mut()) {
            (Some(f), _) => {
                compare_rows(layout.fourcc(), pl, |y| f.row(0, y), |y| dst.row(0, y)).map_err(
                    |why| {
                        // Name a stale capture: one that shows the frame before.
                        let before = seq
                            .checked_sub(1)
                            .zip(self.scene.as_ref())
                            .map(|(s, (_, scene))| scene.frame(s));
                        match before {
                            Some(b)
                                if compare_rows(
                                    layout.fourcc(),
                                    pl,
                                    |y| b.row(0, y),
                                    |y| dst.row(0, y),
                                )
                                .is_ok() =>
                            {
                                format!("{why}; the capture shows frame {} instead", seq - 1)
                            }
                            _ => why,
                        }
                    },
                )
            }
            (None, Some(m)) => {
                let a = m.access(Access::Read)?;
                let src = &a;
                compare_rows(layout.fourcc(), pl, |y| src.row(0, y), |y| dst.row(0, y))
            }
            (None, None) => {
                return Err(KmsError::Writeback {
                    path,
                    why: "nothing to compare the capture with (no pattern, no mapping)".into(),
                })
            }
        };
        // Tell a job the driver completed without writing from a wrong picture.
        Ok(result.map_err(|why| {
            let untouched = (0..pl.src_h)
                .step_by(pl.src_h.max(8) as usize / 8)
                .all(|y| {
                    dst.row(0, pl.crtc_y + y)
                        .iter()
                        .all(|&b| b == WRITEBACK_SENTINEL)
                });
            if untouched {
                format!("{why} (the capture was never written: the job completed uncomposed)")
            } else {
                why
            }
        }))
    }

    /// Takes the frame on screen down and hands it back: turns the plane off (or, where the
    /// driver insists on an enabled primary plane, the whole CRTC) and waits until that is done.
    pub fn release_all(&mut self) -> Result<Vec<Released>, KmsError> {
        self.wait_flip(FLIP_TIMEOUT)?;
        let Some(shown) = self.shown.take() else {
            return Ok(Vec::new());
        };
        let off = Placement {
            src_w: 0,
            src_h: 0,
            crtc_x: 0,
            crtc_y: 0,
            crtc_w: 0,
            crtc_h: 0,
        };
        let mut req = AtomicModeReq::new();
        self.add_plane_props(&mut req, None, off)?;
        let plane_off = self.card.atomic_commit(
            AtomicCommitFlags::PAGE_FLIP_EVENT | AtomicCommitFlags::NONBLOCK,
            req,
        );
        match plane_off {
            Ok(()) => {
                self.flip_pending = Some((shown.seq, None));
                self.wait_flip(FLIP_TIMEOUT)?;
            }
            Err(e) => {
                log::debug!("KMS: plane off refused ({e}); turning the CRTC off");
                let mut req = AtomicModeReq::new();
                self.add_plane_props(&mut req, None, off)?;
                let crtc = self.output.crtc;
                req.add_raw_property(
                    self.output.connector.into(),
                    self.need_prop(&self.output.conn_props, "connector", "CRTC_ID")?,
                    0,
                );
                if let Some(wb) = &self.writeback {
                    req.add_raw_property(wb.connector.into(), wb.prop("CRTC_ID")?, 0);
                }
                req.add_raw_property(
                    crtc.into(),
                    self.need_prop(&self.output.crtc_props, "CRTC", "ACTIVE")?,
                    0,
                );
                req.add_raw_property(
                    crtc.into(),
                    self.need_prop(&self.output.crtc_props, "CRTC", "MODE_ID")?,
                    0,
                );
                // Blocking: no flip event comes from a CRTC that goes dark.
                self.card
                    .atomic_commit(AtomicCommitFlags::ALLOW_MODESET, req)
                    .map_err(self.sys_err("DRM_IOCTL_MODE_ATOMIC (CRTC off)"))?;
                if let Some((_, blob)) = self.mode.take() {
                    let _ = self.card.destroy_property_blob(blob);
                }
                self.placement = None;
                self.mode_for = None;
            }
        }
        Ok(vec![Released {
            id: shown.id,
            seq: shown.seq,
            fence: None,
        }])
    }

    /// Presents a frame and returns the writeback capture of the screen (needs
    /// `verify_writeback`); see [`writeback::capture`].
    pub fn present_and_capture(
        &mut self,
        id: u32,
        seq: u64,
        acquire: Option<SyncFile>,
    ) -> Result<(Presented, writeback::Captured), KmsError> {
        if self.writeback.is_none() {
            return Err(KmsError::Writeback {
                path: self.card.path().to_owned(),
                why: "the sink was opened without verify_writeback".into(),
            });
        }
        let p = self.present(id, seq, acquire)?;
        let cap = self.writeback.as_mut().expect("checked").captured()?;
        Ok((p, cap))
    }
}

/// A KMS device as `frameshare probe` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KmsDeviceInfo {
    /// Card node.
    pub path: String,
    /// Driver.
    pub driver: String,
    /// Connectors: name, state, writeback, preferred mode.
    pub connectors: Vec<KmsConnectorInfo>,
    /// Planes: id, type, formats (`FOURCC/MODIFIER`).
    pub planes: Vec<KmsPlaneInfo>,
}

/// One connector.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KmsConnectorInfo {
    /// `Virtual-1`, `HDMI-A-1`, `Writeback-1`.
    pub name: String,
    /// Connected.
    pub connected: bool,
    /// A writeback connector.
    pub writeback: bool,
    /// Preferred (or first) mode, `WxH@Hz`.
    pub mode: Option<String>,
}

/// One plane.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KmsPlaneInfo {
    /// Object id.
    pub id: u32,
    /// `primary`, `overlay`, `cursor`.
    pub kind: String,
    /// (fourcc, modifier) pairs from `IN_FORMATS` (or the format list, LINEAR).
    pub formats: Vec<String>,
}

/// Lists every card node with modesetting: connectors, planes and what each plane scans out.
/// Read-only (no master needed).
pub fn outputs() -> Vec<KmsDeviceInfo> {
    let mut out = Vec::new();
    for path in sys::nodes(NodeKind::Card) {
        let Ok(card) = DrmFile::open(&path) else {
            continue;
        };
        if card
            .set_client_capability(ClientCapability::UniversalPlanes, true)
            .is_err()
        {
            continue;
        }
        let _ = card.set_client_capability(ClientCapability::Atomic, true);
        let _ = card.set_client_capability(ClientCapability::WritebackConnectors, true);
        let Ok(res) = card.resource_handles() else {
            continue; // render-only driver (vgem)
        };
        let connectors = res
            .connectors()
            .iter()
            .filter_map(|&h| card.get_connector(h, false).ok())
            .map(|c| {
                let mode = c
                    .modes()
                    .iter()
                    .find(|m| {
                        m.mode_type()
                            .contains(drm::control::ModeTypeFlags::PREFERRED)
                    })
                    .or(c.modes().first())
                    .map(|m| format!("{}x{}@{}", m.size().0, m.size().1, m.vrefresh()));
                KmsConnectorInfo {
                    name: connector_name(&c),
                    connected: c.state() == connector::State::Connected,
                    writeback: c.interface() == connector::Interface::Writeback,
                    mode,
                }
            })
            .collect();
        let planes = card
            .plane_handles()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                let info = card.get_plane(p).ok()?;
                let props = Props::load(&card, p).ok()?;
                let kind = match props.values.get("type") {
                    Some(0) => "overlay",
                    Some(1) => "primary",
                    Some(2) => "cursor",
                    _ => "?",
                };
                let formats = props
                    .values
                    .get("IN_FORMATS")
                    .filter(|&&b| b != 0)
                    .and_then(|&b| card.get_property_blob(b).ok())
                    .and_then(|b| parse_in_formats(&b))
                    .map(|v| {
                        v.iter()
                            .map(|f| format!("{}/{}", f.fourcc, f.modifier))
                            .collect()
                    })
                    .unwrap_or_else(|| {
                        info.formats()
                            .iter()
                            .map(|&f| format!("{}/LINEAR", Fourcc(f)))
                            .collect()
                    });
                Some(KmsPlaneInfo {
                    id: p.into(),
                    kind: kind.into(),
                    formats,
                })
            })
            .collect();
        out.push(KmsDeviceInfo {
            path: path.display().to_string(),
            driver: card.driver().to_owned(),
            connectors,
            planes,
        });
    }
    out
}

/// Blue, green and red of pixel `x` in a row of a packed RGB format, or `None` for formats whose
/// conversion the display may do its own way (YUV).
pub fn bgr_at(fourcc: Fourcc, row: &[u8], x: usize) -> Option<[u8; 3]> {
    match fourcc {
        Fourcc::XR24 | Fourcc::AR24 => {
            let p = row.get(4 * x..4 * x + 3)?;
            Some([p[0], p[1], p[2]])
        }
        Fourcc::XB24 | Fourcc::AB24 => {
            let p = row.get(4 * x..4 * x + 3)?;
            Some([p[2], p[1], p[0]])
        }
        Fourcc::RG24 => {
            let p = row.get(3 * x..3 * x + 3)?;
            Some([p[0], p[1], p[2]])
        }
        _ => None,
    }
}

/// Compares the frame's rows (source format `fourcc`) with an XR24 capture of the screen at
/// placement `pl`: blue, green and red of every pixel the plane covers.
fn compare_rows<'s, 'd>(
    fourcc: Fourcc,
    pl: Placement,
    src: impl Fn(u32) -> &'s [u8],
    dst: impl Fn(u32) -> &'d [u8],
) -> Result<(), String> {
    if bgr_at(fourcc, &[0; 4], 0).is_none() {
        return Err(format!(
            "{fourcc} frames cannot be checked pixel-exact (the display converts YUV its own way)"
        ));
    }
    for y in 0..pl.src_h {
        let s = src(y);
        let d = dst(pl.crtc_y + y);
        for x in 0..pl.src_w as usize {
            let want = bgr_at(fourcc, s, x).ok_or("source row too short")?;
            let got =
                bgr_at(Fourcc::XR24, d, pl.crtc_x as usize + x).ok_or("capture row too short")?;
            if want != got {
                return Err(format!(
                    "pixel ({x}, {y}) is B,G,R {got:?} on screen, {want:?} in the frame"
                ));
            }
        }
    }
    Ok(())
}

/// Capturing what the CRTC scans out through the driver's writeback connector.
pub mod writeback {
    use super::*;

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
        /// Row `y`.
        pub fn row(&self, y: u32) -> &[u8] {
            let w = self.width as usize * 4;
            &self.data[y as usize * w..(y as usize + 1) * w]
        }

        /// Blue, green, red at (x, y).
        pub fn bgr(&self, x: u32, y: u32) -> [u8; 3] {
            bgr_at(Fourcc::XR24, self.row(y), x as usize).expect("in range")
        }
    }

    /// The framebuffer writeback goes into: a dumb buffer on the same card, exported with PRIME
    /// and mapped once.
    pub(super) struct Target {
        gem: drm::buffer::Handle,
        fb: framebuffer::Handle,
        mapping: BufferMapping,
        width: u32,
        height: u32,
    }

    /// The writeback connector and its target.
    pub struct Writeback {
        pub(super) connector: connector::Handle,
        props: Props,
        path: PathBuf,
        target: Option<Target>,
        slot: FenceSlot,
        fences: Vec<SyncFile>,
    }

    impl std::fmt::Debug for Writeback {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Writeback")
                .field("connector", &self.connector)
                .finish_non_exhaustive()
        }
    }

    impl Writeback {
        /// Finds the card's writeback connector (needs `DRM_CLIENT_CAP_WRITEBACK_CONNECTORS`,
        /// which the sink asks for) that takes XR24.
        pub(super) fn find(card: &DrmFile) -> Result<Writeback, KmsError> {
            let path = card.path().to_owned();
            let fail = |why: String| KmsError::Writeback {
                path: path.clone(),
                why,
            };
            let res = card
                .resource_handles()
                .map_err(|e| fail(format!("GETRESOURCES: {e}")))?;
            for &h in res.connectors() {
                let Ok(info) = card.get_connector(h, false) else {
                    continue;
                };
                if info.interface() != connector::Interface::Writeback {
                    continue;
                }
                let props = Props::load(card, h)?;
                let formats = props
                    .values
                    .get("WRITEBACK_PIXEL_FORMATS")
                    .and_then(|&b| card.get_property_blob(b).ok())
                    .map(|b| {
                        b.chunks_exact(4)
                            .map(|c| Fourcc(u32::from_ne_bytes(c.try_into().unwrap())))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                if !formats.contains(&Fourcc::XR24) {
                    return Err(fail(format!(
                        "writeback connector {} does not take XR24 (takes {formats:?})",
                        connector_name(&info)
                    )));
                }
                for p in ["CRTC_ID", "WRITEBACK_FB_ID", "WRITEBACK_OUT_FENCE_PTR"] {
                    if props.id(p).is_none() {
                        return Err(fail(format!("writeback connector has no {p} property")));
                    }
                }
                return Ok(Writeback {
                    connector: h,
                    props,
                    path,
                    target: None,
                    slot: FenceSlot::new(),
                    fences: Vec::new(),
                });
            }
            Err(fail(format!(
                "driver {} has no writeback connector (vkms has one: use kms:vkms)",
                card.driver()
            )))
        }

        pub(super) fn prop(&self, name: &str) -> Result<property::Handle, KmsError> {
            self.props.id(name).ok_or_else(|| KmsError::Writeback {
                path: self.path.clone(),
                why: format!("no {name} property"),
            })
        }

        /// Makes (or remakes, on a mode change) the mode-sized XR24 target.
        pub(super) fn ensure_target(
            &mut self,
            card: &DrmFile,
            width: u32,
            height: u32,
        ) -> Result<(), KmsError> {
            if self
                .target
                .as_ref()
                .is_some_and(|t| (t.width, t.height) == (width, height))
            {
                return Ok(());
            }
            if let Some(old) = self.target.take() {
                drop_target(card, old);
            }
            let sys = |op: &str, e: std::io::Error| KmsError::Sys {
                path: self.path.clone(),
                op: format!("writeback target: {op}"),
                errno: errno(&e),
            };
            let dumb = card
                .create_dumb_buffer((width, height), DrmFourcc::Xrgb8888, 32)
                .map_err(|e| sys("DRM_IOCTL_MODE_CREATE_DUMB", e))?;
            use drm::buffer::Buffer as _;
            let (gem, pitch) = (dumb.handle(), dumb.pitch());
            let cleanup_gem = |card: &DrmFile| {
                let _ = card.close_buffer(gem);
            };
            let fd = match card.buffer_to_prime_fd(gem, drm::CLOEXEC | drm::RDWR) {
                Ok(fd) => fd,
                Err(e) => {
                    cleanup_gem(card);
                    return Err(sys("DRM_IOCTL_PRIME_HANDLE_TO_FD", e));
                }
            };
            let layout = match FrameLayout::new(
                Fourcc::XR24,
                Modifier::LINEAR,
                width,
                height,
                vec![PlaneLayout {
                    fd_index: 0,
                    offset: 0,
                    stride: pitch,
                }],
                pitch as u64 * height as u64,
            ) {
                Ok(l) => l,
                Err(e) => {
                    cleanup_gem(card);
                    return Err(KmsError::Format(e));
                }
            };
            let made = Buffer::from_fds(BufferKind::DrmDumb, layout.clone(), vec![fd])
                .and_then(|b| b.map(true));
            let mapping = match made {
                Ok(m) => m,
                Err(e) => {
                    cleanup_gem(card);
                    return Err(e.into());
                }
            };
            let desc = FbDesc {
                layout: &layout,
                handles: [Some(gem), None, None, None],
                format: DrmFourcc::Xrgb8888,
            };
            let fb = match card.add_planar_framebuffer(&FbDescNoMod(&desc), FbCmd2Flags::empty()) {
                Ok(fb) => fb,
                Err(e) => {
                    cleanup_gem(card);
                    return Err(sys("DRM_IOCTL_MODE_ADDFB2", e));
                }
            };
            self.target = Some(Target {
                gem,
                fb,
                mapping,
                width,
                height,
            });
            Ok(())
        }

        /// Adds this frame's writeback job to a commit, with the target filled with
        /// [`WRITEBACK_SENTINEL`] first (no job is pending on it: each capture waits for its
        /// fence before the next is queued).
        pub(super) fn add_job(&mut self, req: &mut AtomicModeReq) -> Result<(), KmsError> {
            {
                let t = self.target.as_mut().expect("target made");
                let mut a = t.mapping.access(Access::Write)?;
                for y in 0..t.height {
                    a.row_mut(0, y).fill(WRITEBACK_SENTINEL);
                }
            }
            let fb = self.target.as_ref().expect("target made").fb;
            let c = self.connector;
            req.add_raw_property(
                c.into(),
                self.prop("WRITEBACK_FB_ID")?,
                u32::from(fb) as u64,
            );
            req.add_raw_property(
                c.into(),
                self.prop("WRITEBACK_OUT_FENCE_PTR")?,
                self.slot.prop_value(),
            );
            Ok(())
        }

        /// Waits until one of the pending writeback jobs completes (the fence of the last
        /// commit is taken from its slot and joins them). Each commit with a job makes the driver
        /// complete exactly one job — the oldest — at its next composition, which writes the
        /// screen as that commit left it into the target all jobs share; so whichever fence
        /// signals, the target then holds this frame. (vkms 6.12 can leave one job pending:
        /// the deferred cleanup of a job clears the one "composer enabled" flag the next
        /// commit just set.)
        pub(super) fn wait(
            &mut self,
            path: &std::path::Path,
            timeout: Duration,
        ) -> Result<(), KmsError> {
            use rustix::event::{PollFd, PollFlags};
            if let Some(fd) = self.slot.take() {
                self.fences.push(SyncFile::from_fd(fd));
            }
            if self.fences.is_empty() {
                return Err(KmsError::Writeback {
                    path: path.to_owned(),
                    why: "the commit returned no writeback fence".into(),
                });
            }
            let mut fds: Vec<PollFd<'_>> = self
                .fences
                .iter()
                .map(|f| PollFd::new(f, PollFlags::IN))
                .collect();
            match crate::sync::poll_until(&mut fds, crate::sync::deadline_after(Some(timeout))) {
                Ok(0) => {
                    return Err(KmsError::Timeout {
                        path: path.to_owned(),
                        what: "writeback".into(),
                        timeout,
                        note: None,
                    })
                }
                Ok(_) => {}
                Err(errno) => {
                    return Err(KmsError::Sys {
                        path: path.to_owned(),
                        op: "poll(writeback fences)".into(),
                        errno,
                    })
                }
            }
            let mut failed = None;
            self.fences.retain(|f| match f.status() {
                Ok(crate::sync::FenceStatus::Active) => true,
                Ok(crate::sync::FenceStatus::Error(e)) => {
                    failed = Some(e);
                    false
                }
                _ => false,
            });
            match failed {
                Some(errno) => Err(KmsError::Writeback {
                    path: path.to_owned(),
                    why: format!("the writeback fence signalled an error: {errno}"),
                }),
                None => Ok(()),
            }
        }

        pub(super) fn access(&mut self) -> Result<crate::buffer::CpuAccess<'_>, KmsError> {
            let t = self.target.as_mut().expect("target made");
            Ok(t.mapping.access(Access::Read)?)
        }

        /// A copy of the last capture.
        pub(super) fn captured(&mut self) -> Result<Captured, KmsError> {
            let t = self.target.as_mut().expect("target made");
            let (width, height) = (t.width, t.height);
            let a = t.mapping.access(Access::Read)?;
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

        pub(super) fn destroy(&mut self, card: &DrmFile) {
            if let Some(t) = self.target.take() {
                drop_target(card, t);
            }
        }
    }

    fn drop_target(card: &DrmFile, t: Target) {
        if let Err(e) = card.destroy_framebuffer(t.fb) {
            log::error!("KMS writeback: RMFB failed: {e}");
        }
        drop(t.mapping);
        if let Err(e) = card.close_buffer(t.gem) {
            log::error!("KMS writeback: GEM_CLOSE failed: {e}");
        }
    }

    /// Presents frame `seq` of buffer `id` on a sink opened with `verify_writeback`, with the
    /// writeback connector attached in the same commit; waits for the writeback fence and
    /// returns the captured screen.
    pub fn capture(
        sink: &mut KmsSink,
        id: u32,
        seq: u64,
        acquire: Option<SyncFile>,
    ) -> Result<(Presented, Captured), KmsError> {
        sink.present_and_capture(id, seq, acquire)
    }
}

/// The same buffer description, announced without a modifier (drivers without
/// `DRM_CAP_ADDFB2_MODIFIERS`; and dumb buffers).
struct FbDescNoMod<'a>(&'a FbDesc<'a>);

impl PlanarBuffer for FbDescNoMod<'_> {
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
    fn handles(&self) -> [Option<drm::buffer::Handle>; 4] {
        self.0.handles
    }
    fn offsets(&self) -> [u32; 4] {
        self.0.offsets()
    }
}

impl Drop for KmsSink {
    fn drop(&mut self) {
        if let Err(e) = self.wait_flip(FLIP_TIMEOUT) {
            log::error!("KMS: {e}");
        }
        if self.shown.is_some() {
            if let Err(e) = self.release_all() {
                log::error!("KMS: turning the plane off: {e}");
            }
        }
        let ids: Vec<u32> = self.imported.keys().copied().collect();
        for id in ids {
            self.remove(id);
        }
        if let Some(mut wb) = self.writeback.take() {
            wb.destroy(&self.card);
        }
        if let Some((_, blob)) = self.mode.take() {
            if let Err(e) = self.card.destroy_property_blob(blob) {
                log::error!("KMS: destroying mode blob {blob}: {e}");
            }
        }
    }
}

impl Sink for KmsSink {
    fn name(&self) -> String {
        if self.writeback.is_some() {
            "kms:verify-writeback".into()
        } else {
            "kms".into()
        }
    }

    fn caps(&self) -> SinkCaps {
        SinkCaps {
            fences: true,
            kinds: KindSet::dma_bufs(),
            formats: self.output.formats.clone(),
        }
    }

    fn start(&mut self, stream: &StreamInfo) -> Result<(), SinkError> {
        if self.writeback.is_some() {
            self.pattern = stream.pattern;
        }
        Ok(())
    }

    fn add_buffer(&mut self, id: u32, buffer: &Buffer) -> Result<(), SinkError> {
        Ok(self.import(id, buffer)?)
    }

    fn remove_buffer(&mut self, id: u32) {
        self.remove(id);
    }

    /// A frame stays with the sink while it is on screen: it goes back once the next frame
    /// replaced it, with the out-fence of that commit as its release fence (signalled when it
    /// has left the screen), or when the stream goes idle and the plane is turned off.
    fn holds_frames(&self) -> bool {
        true
    }

    fn frame(&mut self, frame: FrameIn<'_>) -> Result<FrameOut, SinkError> {
        self.import(frame.id, frame.buffer)?;
        let verified = self.show(frame.id, frame.seq, frame.acquire)?;
        Ok(FrameOut {
            verified: verified == Some(true),
            dropped: false,
            release: None,
        })
    }

    fn take_released(&mut self) -> Vec<super::HeldRelease> {
        self.to_release
            .drain(..)
            .map(|r| super::HeldRelease {
                id: r.id,
                seq: r.seq,
                release: r.fence,
            })
            .collect()
    }

    fn idle(&mut self) -> Result<(), SinkError> {
        if self.shown.is_some() {
            log::debug!("KMS: stream idle; taking the last frame off the screen");
            let off = self.release_all()?;
            self.to_release.extend(off);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.release_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        assert_eq!(KmsOptions::parse("").unwrap(), KmsOptions::default());
        let o = KmsOptions::parse("/dev/dri/card1:verify-writeback").unwrap();
        assert_eq!(o.device, DeviceSpec::Path("/dev/dri/card1".into()));
        assert!(o.verify_writeback);
        let o = KmsOptions::parse("vkms,connector=Virtual-1").unwrap();
        assert_eq!(o.device, DeviceSpec::Driver("vkms".into()));
        assert_eq!(o.connector.as_deref(), Some("Virtual-1"));
        assert!(KmsOptions::parse("bad token!").is_err());
    }

    #[test]
    fn in_formats_blob_parses() {
        // header (24 bytes), 2 formats, 2 modifiers
        let mut b = Vec::new();
        for v in [1u32, 0, 2, 24, 2, 32] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&Fourcc::XR24.0.to_ne_bytes());
        b.extend_from_slice(&Fourcc::NV12.0.to_ne_bytes());
        // LINEAR for both formats, modifier 7 for NV12 only
        for (mask, m) in [(0b11u64, 0u64), (0b10, 7)] {
            b.extend_from_slice(&mask.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&m.to_ne_bytes());
        }
        let f = parse_in_formats(&b).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].fourcc, Fourcc::XR24);
        assert_eq!(f[2].fourcc, Fourcc::NV12);
        assert_eq!(f[2].modifier, Modifier(7));
        assert!(parse_in_formats(&b[..10]).is_none());
    }

    #[test]
    fn rows_compare_on_colour_channels_only() {
        let pl = Placement {
            src_w: 2,
            src_h: 1,
            crtc_x: 1,
            crtc_y: 0,
            crtc_w: 2,
            crtc_h: 1,
        };
        let src = [1u8, 2, 3, 0xff, 4, 5, 6, 0xff];
        let dst = [0u8, 0, 0, 0, 1, 2, 3, 0, 4, 5, 6, 0x00];
        compare_rows(Fourcc::XR24, pl, |_| &src[..], |_| &dst[..]).unwrap();
        let xb = [3u8, 2, 1, 0, 6, 5, 4, 0];
        compare_rows(Fourcc::XB24, pl, |_| &xb[..], |_| &dst[..]).unwrap();
        let bad = [1u8, 2, 3, 0, 4, 5, 7, 0];
        let e = compare_rows(Fourcc::XR24, pl, |_| &bad[..], |_| &dst[..]).unwrap_err();
        assert!(e.contains("(1, 0)"), "{e}");
        assert!(compare_rows(Fourcc::NV12, pl, |_| &bad[..], |_| &dst[..]).is_err());
    }
}
