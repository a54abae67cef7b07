//! Where frames go: opening a card node as an atomic KMS client, finding the connector → CRTC →
//! primary plane path ([`OutputPath`]) with the properties commits need, the plane's
//! `IN_FORMATS`, the mode for a frame size; and the read-only listing `frameshare probe` shows
//! ([`outputs`]).

use std::collections::HashMap;
use std::path::Path;

use drm::control::{
    connector, crtc, plane, property, Device as _, Mode, ModeTypeFlags, ResourceHandle,
};
use drm::{ClientCapability, Device as _};

use super::options::DeviceSpec;
use super::{errno, KmsError};
use crate::format::{FormatModifier, Fourcc, Modifier};
use crate::sys::kms::{self as sys, DrmFile, NodeKind};

/// The `type` property's value of a primary plane.
const PLANE_TYPE_PRIMARY: u64 = 1;

/// The properties of one KMS object, by name: their ids (to set them in a commit) and the
/// values they had when loaded.
#[derive(Debug)]
pub(super) struct Props {
    /// What the object is, for messages (`plane`, `CRTC`, `connector`, `writeback connector`).
    object: &'static str,
    path: std::path::PathBuf,
    ids: HashMap<String, property::Handle>,
    values: HashMap<String, u64>,
}

impl Props {
    /// Loads the properties of `handle`, a `object` (for messages).
    pub(super) fn load<H: ResourceHandle>(
        card: &DrmFile,
        handle: H,
        object: &'static str,
    ) -> Result<Props, KmsError> {
        let sys = |e| KmsError::sys(card.path(), "DRM_IOCTL_MODE_OBJ_GETPROPERTIES", e);
        let set = card.get_properties(handle).map_err(sys)?;
        let mut p = Props {
            object,
            path: card.path().to_owned(),
            ids: HashMap::new(),
            values: HashMap::new(),
        };
        for (id, value) in set.iter() {
            let info = card.get_property(*id).map_err(sys)?;
            let name = info.name().to_string_lossy().into_owned();
            p.values.insert(name.clone(), *value);
            p.ids.insert(name, *id);
        }
        Ok(p)
    }

    /// The property's id, if the object has it.
    pub(super) fn id(&self, name: &str) -> Option<property::Handle> {
        self.ids.get(name).copied()
    }

    /// The property's id, or the error that the object lacks it.
    pub(super) fn need(&self, name: &'static str) -> Result<property::Handle, KmsError> {
        self.id(name).ok_or_else(|| KmsError::MissingProperty {
            path: self.path.clone(),
            object: self.object,
            name,
        })
    }

    /// The property's value when loaded.
    pub(super) fn value(&self, name: &str) -> Option<u64> {
        self.values.get(name).copied()
    }
}

/// A connector → CRTC → primary plane path, with the properties commits need.
#[derive(Debug)]
pub(super) struct OutputPath {
    pub(super) connector: connector::Handle,
    pub(super) connector_name: String,
    pub(super) crtc: crtc::Handle,
    pub(super) plane: plane::Handle,
    modes: Vec<Mode>,
    pub(super) connector_props: Props,
    pub(super) crtc_props: Props,
    pub(super) plane_props: Props,
    /// (fourcc, modifier) pairs the plane scans out.
    pub(super) formats: Vec<FormatModifier>,
    /// Every other connector with its `CRTC_ID` property: a modeset detaches those still on
    /// our CRTC (a writeback connector a verifying run left there, a clone).
    pub(super) others: Vec<(connector::Handle, property::Handle)>,
}

/// An open card node and the output path on it: what every commit addresses.
#[derive(Debug)]
pub(super) struct Card {
    pub(super) drm: DrmFile,
    pub(super) output: OutputPath,
}

/// A connector's name as the kernel logs it (`Virtual-1`, `HDMI-A-1`, `Writeback-1`).
pub(super) fn connector_name(info: &connector::Info) -> String {
    format!("{}-{}", info.interface().as_str(), info.interface_id())
}

/// Parses an `IN_FORMATS` blob (`struct drm_format_modifier_blob`) into (fourcc, modifier) pairs.
fn parse_in_formats(blob: &[u8]) -> Option<Vec<FormatModifier>> {
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

/// What a plane scans out: its `IN_FORMATS` pairs, or, without that property, its format list,
/// implicitly LINEAR.
fn plane_formats(card: &DrmFile, info: &plane::Info, props: &Props) -> Vec<FormatModifier> {
    props
        .value("IN_FORMATS")
        .filter(|&blob| blob != 0)
        .and_then(|blob| card.get_property_blob(blob).ok())
        .and_then(|b| parse_in_formats(&b))
        .unwrap_or_else(|| {
            info.formats()
                .iter()
                .map(|&f| FormatModifier::linear(Fourcc(f)))
                .collect()
        })
}

/// Opens the device `spec` names as an atomic KMS client and finds its output (the connector
/// named `connector`, else the first connected one).
pub(super) fn open_card(spec: &DeviceSpec, connector: Option<&str>) -> Result<Card, KmsError> {
    let prepare = |card: DrmFile| -> Result<Card, KmsError> {
        let cap = |cap, capability| {
            card.set_client_capability(cap, true)
                .map_err(|e| KmsError::NotAtomic {
                    path: card.path().to_owned(),
                    driver: card.driver().to_owned(),
                    capability,
                    errno: errno(&e),
                })
        };
        cap(ClientCapability::UniversalPlanes, "UNIVERSAL_PLANES")?;
        cap(ClientCapability::Atomic, "ATOMIC")?;
        // Writeback connectors are listed only to clients that ask; harmless elsewhere.
        let _ = card.set_client_capability(ClientCapability::WritebackConnectors, true);
        let output = OutputPath::find(&card, connector)?;
        Ok(Card { drm: card, output })
    };
    let open = |p: &Path| DrmFile::open(p).map_err(|e| KmsError::sys(p, "open", e));
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
                    Err(e) => seen.push(e.with_sources()),
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

impl OutputPath {
    /// The connector named `want` (else the first connected one that is not writeback), a
    /// CRTC its encoders can drive (the one it is on first) and that CRTC's primary plane.
    fn find(card: &DrmFile, want: Option<&str>) -> Result<OutputPath, KmsError> {
        let path = card.path();
        let sys = |op: &'static str| move |e| KmsError::sys(path, op, e);
        let no = |why: String| KmsError::NoOutput {
            path: path.to_owned(),
            why,
        };
        let res = card
            .resource_handles()
            .map_err(sys("DRM_IOCTL_MODE_GETRESOURCES"))?;
        let mut seen = Vec::new();
        let mut pick = None;
        for &h in res.connectors() {
            let info = card
                .get_connector(h, true)
                .map_err(sys("DRM_IOCTL_MODE_GETCONNECTOR"))?;
            let name = connector_name(&info);
            let writeback = info.interface() == connector::Interface::Writeback;
            let usable = !writeback
                && info.state() == connector::State::Connected
                && !info.modes().is_empty();
            seen.push(format!(
                "{name} ({:?}{})",
                info.state(),
                if writeback { ", writeback" } else { "" }
            ));
            if usable && want.is_none_or(|w| w == name) {
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
                .map_err(sys("DRM_IOCTL_MODE_GETENCODER"))?;
            if let Some(c) = enc.crtc() {
                crtcs.insert(0, c);
            }
            crtcs.extend(res.filter_crtcs(enc.possible_crtcs()));
        }
        let planes = card
            .plane_handles()
            .map_err(sys("DRM_IOCTL_MODE_GETPLANERESOURCES"))?;
        for &crtc in &crtcs {
            for &p in &planes {
                let pinfo = card.get_plane(p).map_err(sys("DRM_IOCTL_MODE_GETPLANE"))?;
                if !res.filter_crtcs(pinfo.possible_crtcs()).contains(&crtc) {
                    continue;
                }
                let plane_props = Props::load(card, p, "plane")?;
                if plane_props.value("type") != Some(PLANE_TYPE_PRIMARY) {
                    continue;
                }
                let formats = plane_formats(card, &pinfo, &plane_props);
                let mut others = Vec::new();
                for &c in res.connectors() {
                    if c != info.handle() {
                        if let Some(id) = Props::load(card, c, "connector")?.id("CRTC_ID") {
                            others.push((c, id));
                        }
                    }
                }
                return Ok(OutputPath {
                    others,
                    connector: info.handle(),
                    connector_name,
                    crtc,
                    plane: p,
                    modes: info.modes().to_vec(),
                    connector_props: Props::load(card, info.handle(), "connector")?,
                    crtc_props: Props::load(card, crtc, "CRTC")?,
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
    /// preferred refresh first), else the preferred mode (else the first; `find` only takes
    /// connectors with modes).
    pub(super) fn pick_mode(&self, w: u32, h: u32) -> Option<Mode> {
        let preferred = |m: &Mode| m.mode_type().contains(ModeTypeFlags::PREFERRED);
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
            .or_else(|| self.modes.first())
            .copied()
    }

    /// Whether the primary plane scans `fourcc` with `modifier` out (`INVALID`: any modifier).
    pub(super) fn scans_out(&self, fourcc: Fourcc, modifier: Modifier) -> bool {
        self.formats.iter().any(|f| {
            f.fourcc == fourcc && (f.modifier == modifier || modifier == Modifier::INVALID)
        })
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
                    .find(|m| m.mode_type().contains(ModeTypeFlags::PREFERRED))
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
                let props = Props::load(&card, p, "plane").ok()?;
                let kind = match props.value("type") {
                    Some(0) => "overlay",
                    Some(PLANE_TYPE_PRIMARY) => "primary",
                    Some(2) => "cursor",
                    _ => "?",
                };
                let formats = plane_formats(&card, &info, &props)
                    .iter()
                    .map(|f| format!("{}/{}", f.fourcc, f.modifier))
                    .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
