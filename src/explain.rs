//! `frameshare explain`: would a buffer of this format, size, modifier and kind import into this
//! machine's Vulkan device without a copy — and if not, exactly why (unknown fourcc, a
//! fourcc/modifier pair the driver does not list, plane count, stride or offset alignment, size,
//! a missing extension). [`explain`] returns a typed [`Verdict`]; the CLI prints it.
//!
//! The checks are the sink's own, run on the device the sink would pick for that buffer kind:
//! the driver's modifier lists, `vkGetPhysicalDeviceImageFormatProperties2` limits, and a real
//! `vkCreateImage` with the explicit plane layout (no memory bound) — so a layout the driver
//! rejects is caught, and the alignment it wants found by trying aligned strides and offsets.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::buffer::BufferKind;
use crate::format::{FormatError, Fourcc, FrameLayout, Modifier};
use crate::gpu::vulkan::{chain, image_plan, image_specs, Device, DeviceCaps, ImportPath};

/// What to explain.
#[derive(Debug, Clone)]
pub struct Request {
    /// Pixel format.
    pub fourcc: Fourcc,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Modifier of the buffer.
    pub modifier: Modifier,
    /// Allocator name (`auto`, `dma-heap`, `memfd`, …).
    pub alloc: String,
    /// Stride alignment the allocator uses (as `run --stride-align`).
    pub stride_align: u32,
}

/// Why an import path does not work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// No usable Vulkan (no loader, no ICD).
    NoVulkan {
        /// The loader's error.
        detail: String,
    },
    /// A fourcc frameshare cannot lay out or convert.
    UnsupportedFourcc {
        /// The fourcc.
        fourcc: String,
    },
    /// The size or layout is impossible for the format.
    BadLayout {
        /// What is wrong.
        detail: String,
    },
    /// The allocator exists but cannot make buffers here (device missing, feature not built).
    AllocUnavailable {
        /// The allocator.
        alloc: String,
        /// Why not.
        detail: String,
    },
    /// An allocator name that does not exist.
    UnknownAlloc {
        /// The name.
        alloc: String,
    },
    /// The device lacks extensions the path needs.
    MissingExtension {
        /// The path.
        path: ImportPath,
        /// The extensions missing.
        extensions: Vec<String>,
    },
    /// No storage-image format can hold this fourcc (image path).
    NoImageFormat {
        /// The fourcc.
        fourcc: String,
    },
    /// The driver does not list this (fourcc, modifier) pair for the path.
    UnsupportedModifier {
        /// The path.
        path: ImportPath,
        /// The fourcc.
        fourcc: String,
        /// The modifier asked for.
        modifier: String,
        /// What the driver lists (the buffer and host paths read LINEAR only).
        listed: Vec<String>,
    },
    /// The modifier is listed, but not for storage-image use.
    NoStorageUse {
        /// The fourcc.
        fourcc: String,
        /// The modifier.
        modifier: String,
    },
    /// The modifier's memory-plane count differs from the layout's.
    PlaneCount {
        /// The modifier.
        modifier: String,
        /// Planes the driver says the modifier has.
        modifier_planes: u32,
        /// Planes in the layout.
        layout_planes: usize,
    },
    /// Larger than the device allows.
    TooLarge {
        /// The path.
        path: ImportPath,
        /// What exceeds what.
        detail: String,
    },
    /// The driver rejects a plane's stride; it accepts strides aligned to `accepted`.
    StrideAlignment {
        /// Plane.
        plane: usize,
        /// The stride.
        stride: u32,
        /// The smallest power-of-two alignment the driver accepted, if one was found.
        accepted: Option<u32>,
    },
    /// The driver rejects a plane's offset; it accepts offsets aligned to `accepted`.
    OffsetAlignment {
        /// Plane.
        plane: usize,
        /// The offset.
        offset: u64,
        /// The smallest power-of-two alignment the driver accepted, if one was found.
        accepted: Option<u64>,
    },
    /// The driver rejects the plane layout, and no aligned variant helped.
    PlaneLayoutRejected {
        /// The driver's answer.
        detail: String,
    },
    /// Host-pointer import needs the size rounded to an alignment beyond the pages mapped.
    SizeAlignment {
        /// Bytes the buffer holds (page-rounded).
        size: u64,
        /// `minImportedHostPointerAlignment`.
        alignment: u64,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoVulkan { detail } => write!(f, "no usable Vulkan: {detail}"),
            Reason::UnsupportedFourcc { fourcc } => write!(
                f,
                "unsupported fourcc {fourcc} (frameshare handles {})",
                crate::format::fourcc_names(Fourcc::ALL)
            ),
            Reason::AllocUnavailable { alloc, detail } => {
                write!(f, "{alloc} cannot be made on this machine: {detail}")
            }
            Reason::BadLayout { detail } => write!(f, "bad layout: {detail}"),
            Reason::UnknownAlloc { alloc } => write!(f, "unknown allocator {alloc:?}"),
            Reason::MissingExtension { path, extensions } => {
                write!(f, "{path}: the device lacks {}", extensions.join(", "))
            }
            Reason::NoImageFormat { fourcc } => write!(
                f,
                "dma-buf-image: {fourcc} has no storage-image format (3-byte pixels); it goes in as a buffer"
            ),
            Reason::UnsupportedModifier {
                path,
                fourcc,
                modifier,
                listed,
            } => write!(
                f,
                "{path}: unsupported fourcc/modifier pair {fourcc}/{modifier}; supported: {}",
                if listed.is_empty() {
                    "none".into()
                } else {
                    listed.join(", ")
                }
            ),
            Reason::NoStorageUse { fourcc, modifier } => write!(
                f,
                "dma-buf-image: {fourcc}/{modifier} is listed without storage-image use"
            ),
            Reason::PlaneCount {
                modifier,
                modifier_planes,
                layout_planes,
            } => write!(
                f,
                "plane count: modifier {modifier} has {modifier_planes} memory plane(s), the layout {layout_planes}"
            ),
            Reason::TooLarge { path, detail } => write!(f, "{path}: too large: {detail}"),
            Reason::StrideAlignment {
                plane,
                stride,
                accepted,
            } => match accepted {
                Some(a) => write!(
                    f,
                    "dma-buf-image: stride alignment: plane {plane} stride {stride} is rejected; the driver accepts strides aligned to {a} (e.g. {})",
                    stride.div_ceil(*a) * a
                ),
                None => write!(f, "dma-buf-image: plane {plane} stride {stride} is rejected"),
            },
            Reason::OffsetAlignment {
                plane,
                offset,
                accepted,
            } => match accepted {
                Some(a) => write!(
                    f,
                    "dma-buf-image: offset alignment: plane {plane} offset {offset} is rejected; the driver accepts offsets aligned to {a}"
                ),
                None => write!(f, "dma-buf-image: plane {plane} offset {offset} is rejected"),
            },
            Reason::PlaneLayoutRejected { detail } => write!(f, "dma-buf-image: {detail}"),
            Reason::SizeAlignment { size, alignment } => write!(
                f,
                "host-pointer: size {size} is not a multiple of minImportedHostPointerAlignment ({alignment}) and the pages past it are not the buffer's"
            ),
        }
    }
}

/// One import path's answer.
#[derive(Debug, Clone, Serialize)]
pub struct PathVerdict {
    /// The path.
    pub path: ImportPath,
    /// Whether it works.
    pub works: bool,
    /// Why not.
    pub reasons: Vec<Reason>,
}

/// The answer.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Fourcc asked about.
    pub fourcc: String,
    /// Size asked about.
    pub width: u32,
    /// Size asked about.
    pub height: u32,
    /// Modifier asked about.
    pub modifier: String,
    /// Buffer kind (what `auto` resolves to here, for `auto`).
    pub alloc: String,
    /// Whether that allocator works on this machine (the import question is asked regardless).
    pub alloc_available: bool,
    /// The Vulkan device the sink would use for this kind.
    pub device: Option<String>,
    /// Whether a zero-copy import works.
    pub works: bool,
    /// The path the sink would take (the first that works).
    pub path: Option<ImportPath>,
    /// Why it does not work (all paths' reasons), or why better paths were passed over.
    pub reasons: Vec<Reason>,
    /// Every path tried for this kind, best first.
    pub paths: Vec<PathVerdict>,
    /// What the sink would do instead when no import works.
    pub fallback: Option<String>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}x{} modifier {} from {}{}",
            self.fourcc,
            self.width,
            self.height,
            self.modifier,
            self.alloc,
            if self.alloc_available {
                ""
            } else {
                " (not available on this machine)"
            },
        )?;
        // No device means none was opened: the request failed before Vulkan was asked, or
        // no Vulkan exists (a reason says which).
        match &self.device {
            Some(d) => writeln!(f, " into {d}")?,
            None => writeln!(f)?,
        }
        match (self.path, self.works) {
            (Some(p), true) => writeln!(f, "works: imported as {p}, no copy")?,
            (Some(p), false) => writeln!(
                f,
                "does not work here: the device would import it as {p}, but:"
            )?,
            (None, _) => writeln!(f, "does not work:")?,
        }
        for r in &self.reasons {
            writeln!(
                f,
                "  {} {r}",
                if self.works { "(passed over)" } else { "-" }
            )?;
        }
        for p in &self.paths {
            writeln!(
                f,
                "  path {:<15} {}",
                p.path.name(),
                if p.works { "yes" } else { "no" }
            )?;
        }
        if let Some(fb) = &self.fallback {
            writeln!(f, "fallback: {fb}")?;
        }
        Ok(())
    }
}

fn round_up(v: u64, a: u64) -> u64 {
    if a <= 1 {
        v
    } else {
        v.div_ceil(a) * a
    }
}

/// The buffer kind an allocator name makes (`auto`: what it picks here), whether it works on
/// this machine, and if not why.
fn resolve_alloc(name: &str) -> Option<(BufferKind, bool, Option<String>)> {
    if name == "auto" {
        return crate::alloc::open("auto")
            .ok()
            .map(|(a, _)| (a.kind(), true, None));
    }
    let kind: BufferKind = name.split(':').next()?.parse().ok()?;
    Some(match crate::alloc::open(name) {
        Ok(_) => (kind, true, None),
        Err(e) => (kind, false, Some(e.to_string())),
    })
}

/// Answers a request.
pub fn explain(req: &Request) -> Verdict {
    let mut v = Verdict {
        fourcc: req.fourcc.name(),
        width: req.width,
        height: req.height,
        modifier: req.modifier.to_string(),
        alloc: req.alloc.clone(),
        alloc_available: false,
        device: None,
        works: false,
        path: None,
        reasons: Vec::new(),
        paths: Vec::new(),
        fallback: None,
    };
    let Some((kind, available, why)) = resolve_alloc(&req.alloc) else {
        v.reasons.push(Reason::UnknownAlloc {
            alloc: req.alloc.clone(),
        });
        return v;
    };
    v.alloc = kind.name().into();
    v.alloc_available = available;
    if let Some(detail) = why {
        v.reasons.push(Reason::AllocUnavailable {
            alloc: req.alloc.clone(),
            detail,
        });
    }
    let layout = match FrameLayout::linear(req.fourcc, req.width, req.height, req.stride_align) {
        Ok(l) => l,
        Err(FormatError::Unsupported(f)) => {
            v.reasons
                .push(Reason::UnsupportedFourcc { fourcc: f.name() });
            return v;
        }
        Err(e) => {
            v.reasons.push(Reason::BadLayout {
                detail: e.to_string(),
            });
            return v;
        }
    };
    let layout = match layout.with_modifier(req.modifier) {
        Ok(l) => l,
        Err(e) => {
            v.reasons.push(Reason::BadLayout {
                detail: e.to_string(),
            });
            return v;
        }
    };
    let gpu = match Device::open_for(kind) {
        Ok(g) => g,
        Err(e) => {
            v.reasons.push(Reason::NoVulkan { detail: chain(&e) });
            return v;
        }
    };
    v.device = Some(gpu.caps().name.clone());
    for &path in ImportPath::for_kind(kind) {
        let reasons = check_path(&gpu, path, &layout);
        v.paths.push(PathVerdict {
            path,
            works: reasons.is_empty(),
            reasons,
        });
    }
    let first = v.paths.iter().position(|p| p.works);
    // A buffer this machine cannot make does not "work", whatever the device would do.
    v.works = first.is_some() && v.alloc_available;
    v.path = first.map(|i| v.paths[i].path);
    let upto = first.unwrap_or(v.paths.len());
    v.reasons
        .extend(v.paths[..upto].iter().flat_map(|p| p.reasons.clone()));
    if !v.works {
        let size = crate::alloc::allocation_size(&layout);
        v.fallback = Some(
            if req.modifier == Modifier::LINEAR && size <= gpu.caps().max_storage_buffer_range {
                format!(
                    "the vulkan sink would copy every frame through a staging buffer ({} bytes a frame, counted in bytes_copied)",
                    (0..layout.planes().len())
                        .map(|p| layout.plane_row_bytes(p) as u64 * layout.plane_rows(p) as u64)
                        .sum::<u64>()
                )
            } else {
                "none: the vulkan sink cannot take this buffer".into()
            },
        );
    }
    v
}

fn missing(caps: &DeviceCaps, path: ImportPath) -> Option<Reason> {
    let m = caps.missing(path);
    (!m.is_empty()).then(|| Reason::MissingExtension {
        path,
        extensions: m.iter().map(|s| s.to_string()).collect(),
    })
}

fn check_path(gpu: &Arc<Device>, path: ImportPath, layout: &FrameLayout) -> Vec<Reason> {
    let caps = gpu.caps();
    if let Some(r) = missing(caps, path) {
        return vec![r];
    }
    let fourcc = layout.fourcc().name();
    let size = crate::alloc::allocation_size(layout);
    let linear_only = |path| Reason::UnsupportedModifier {
        path,
        fourcc: fourcc.clone(),
        modifier: layout.modifier().to_string(),
        listed: vec![Modifier::LINEAR.to_string()],
    };
    let mut reasons = Vec::new();
    match path {
        ImportPath::DmaBufImage => return check_image(gpu, layout),
        ImportPath::DmaBufBuffer => {
            if layout.modifier() != Modifier::LINEAR {
                reasons.push(linear_only(path));
            }
        }
        ImportPath::HostPointer => {
            if layout.modifier() != Modifier::LINEAR {
                reasons.push(linear_only(path));
            }
            let align = caps.min_host_pointer_alignment.max(1);
            // The mapping is page-aligned and the allocators round sizes to pages: the import
            // works when rounding to the alignment stays inside those pages.
            if round_up(size, align) > size {
                reasons.push(Reason::SizeAlignment {
                    size,
                    alignment: align,
                });
            }
        }
        ImportPath::Staging => {}
    }
    if size > caps.max_storage_buffer_range {
        reasons.push(Reason::TooLarge {
            path,
            detail: format!(
                "{size} bytes exceed maxStorageBufferRange ({})",
                caps.max_storage_buffer_range
            ),
        });
    }
    reasons
}

fn check_image(gpu: &Arc<Device>, layout: &FrameLayout) -> Vec<Reason> {
    let fourcc = layout.fourcc().name();
    let modifier = layout.modifier();
    let Some(plan) = image_plan(layout.fourcc()) else {
        return vec![Reason::NoImageFormat { fourcc }];
    };
    let Some(support) = gpu.caps().format(layout.fourcc()) else {
        return vec![Reason::UnsupportedModifier {
            path: ImportPath::DmaBufImage,
            fourcc,
            modifier: modifier.to_string(),
            listed: Vec::new(),
        }];
    };
    let Some(m) = support.modifiers.iter().find(|m| m.modifier == modifier) else {
        return vec![Reason::UnsupportedModifier {
            path: ImportPath::DmaBufImage,
            fourcc,
            modifier: modifier.to_string(),
            listed: support
                .modifiers
                .iter()
                .map(|m| m.modifier.to_string())
                .collect(),
        }];
    };
    if !m.storage {
        return vec![Reason::NoStorageUse {
            fourcc,
            modifier: modifier.to_string(),
        }];
    }
    if m.planes as usize != layout.planes().len() {
        return vec![Reason::PlaneCount {
            modifier: modifier.to_string(),
            modifier_planes: m.planes,
            layout_planes: layout.planes().len(),
        }];
    }
    let mut reasons = Vec::new();
    for spec in image_specs(layout, plan, support.multi_planar) {
        match gpu.image_limits(&spec, modifier) {
            Ok((w, h)) if spec.width() > w || spec.height() > h => {
                reasons.push(Reason::TooLarge {
                    path: ImportPath::DmaBufImage,
                    detail: format!(
                        "{} {}x{} exceeds the driver's {w}x{h}",
                        spec.format_name(),
                        spec.width(),
                        spec.height()
                    ),
                });
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                reasons.push(Reason::PlaneLayoutRejected { detail: chain(&e) });
                continue;
            }
        }
        let try_layout = |planes: &[(u64, u32)]| gpu.check_image_layout(&spec, planes, modifier);
        let Err(e) = try_layout(spec.planes()) else {
            continue;
        };
        // Find what the driver wants: align each plane's stride, then its offset.
        let mut found = false;
        for (k, &(offset, stride)) in spec.planes().iter().enumerate() {
            let plane = spec.first_plane() + k;
            for shift in 0..=12u32 {
                let a = 1u32 << shift;
                let s = stride.div_ceil(a) * a;
                if s == stride {
                    continue;
                }
                let mut p = spec.planes().to_vec();
                p[k].1 = s;
                if try_layout(&p).is_ok() {
                    reasons.push(Reason::StrideAlignment {
                        plane,
                        stride,
                        accepted: Some(a),
                    });
                    found = true;
                    break;
                }
            }
            if found {
                break;
            }
            for shift in 0..=16u32 {
                let a = 1u64 << shift;
                let o = round_up(offset, a);
                if o == offset {
                    continue;
                }
                let mut p = spec.planes().to_vec();
                p[k].0 = o;
                if try_layout(&p).is_ok() {
                    reasons.push(Reason::OffsetAlignment {
                        plane,
                        offset,
                        accepted: Some(a),
                    });
                    found = true;
                    break;
                }
            }
            if found {
                break;
            }
        }
        if !found {
            reasons.push(Reason::PlaneLayoutRejected { detail: chain(&e) });
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_well_and_serialise_with_a_kind() {
        let r = Reason::StrideAlignment {
            plane: 0,
            stride: 2600,
            accepted: Some(64),
        };
        assert!(r.to_string().contains("aligned to 64 (e.g. 2624)"), "{r}");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["kind"], "stride-alignment");
        let r = Reason::UnsupportedModifier {
            path: ImportPath::DmaBufImage,
            fourcc: "XR24".into(),
            modifier: "0x0100000000000001".into(),
            listed: vec!["LINEAR".into()],
        };
        assert!(r.to_string().contains("XR24/0x0100000000000001"));
        assert_eq!(
            serde_json::to_value(&r).unwrap()["kind"],
            "unsupported-modifier"
        );
    }

    #[test]
    fn unknown_allocators_and_fourccs_are_named() {
        let req = Request {
            fourcc: Fourcc::XR24,
            width: 64,
            height: 64,
            modifier: Modifier::LINEAR,
            alloc: "nope".into(),
            stride_align: 256,
        };
        let v = explain(&req);
        assert!(!v.works);
        assert_eq!(
            v.reasons,
            vec![Reason::UnknownAlloc {
                alloc: "nope".into()
            }]
        );
        let v = explain(&Request {
            fourcc: "ABCD".parse().unwrap(),
            alloc: "memfd".into(),
            ..req
        });
        assert!(!v.works);
        assert_eq!(
            v.reasons,
            vec![Reason::UnsupportedFourcc {
                fourcc: "ABCD".into()
            }]
        );
    }
}
