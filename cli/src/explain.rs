//! `frameshare explain`: would a buffer of this format, size, modifier and kind work here —
//! made by this machine's allocator, imported by its Vulkan device, scanned out by its display
//! — and if not, why. Exit 0 when it would (every part asked about), 1 when not, 2 for input
//! that is not a question (clap refuses it while parsing; a size the format cannot have).

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use frameshare::alloc::AllocatorSpec;
use frameshare::format::{Fourcc, Modifier};

use crate::args::{self, Size};

/// `explain` options.
#[derive(Args)]
pub struct ExplainArgs {
    /// Pixel format (DRM fourcc such as XR24, NV12, YUYV, or a long name such as XRGB8888).
    #[arg(value_parser = args::any_format())]
    fourcc: Fourcc,
    /// Frame size WIDTHxHEIGHT.
    #[arg(value_parser = clap::value_parser!(Size))]
    size: Size,
    /// Format modifier: a name as drm_info prints it (LINEAR, I915_X_TILED, …) or a number
    /// (0x0100000000000001).
    #[arg(long, default_value = "LINEAR", value_parser = args::modifier())]
    modifier: Modifier,
    /// Buffer kind (what `run --alloc` takes).
    #[arg(long, default_value = "auto", value_parser = args::alloc())]
    alloc: AllocatorSpec,
    /// Stride alignment the allocator uses (as `run --stride-align`).
    #[arg(long, default_value_t = 256)]
    stride_align: u32,
    /// What takes the buffer: a Vulkan device (import), the display (KMS scanout: does a plane
    /// list this format and modifier), or both.
    #[arg(long, value_enum, default_value = "vulkan")]
    into: Into,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

/// `--into`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Into {
    /// Imported by a Vulkan device.
    Vulkan,
    /// Scanned out by a display plane.
    Kms,
    /// Both.
    Both,
}

/// Whether this machine's allocator can make the buffer.
#[derive(Debug, Serialize)]
struct AllocAnswer {
    /// The kind asked for (`auto`: what it picks here).
    alloc: String,
    /// Whether it works here.
    available: bool,
    /// Why not, or what auto chose.
    detail: String,
}

/// One display plane that could take the buffer, or why none can.
#[derive(Debug, Serialize)]
struct KmsAnswer {
    /// Whether some plane of some display scans out this (fourcc, modifier).
    works: bool,
    /// `card (driver) plane ID (kind)` for each plane that takes it.
    planes: Vec<String>,
    /// Why not (no display, or what the planes list instead).
    reasons: Vec<String>,
}

/// The whole answer.
#[derive(Debug, Serialize)]
struct Answer {
    fourcc: String,
    width: u32,
    height: u32,
    modifier: String,
    /// Whether every part asked about works.
    works: bool,
    allocator: AllocAnswer,
    /// The Vulkan import verdict (printed at the top level of the JSON).
    #[serde(skip)]
    vulkan: Option<serde_json::Value>,
    /// The display's answer (null when not asked or not built).
    kms: Option<KmsAnswer>,
}

fn allocator(spec: &AllocatorSpec) -> AllocAnswer {
    match spec.open_noted() {
        Ok((a, note)) => AllocAnswer {
            alloc: a.kind().name().into(),
            available: true,
            detail: note,
        },
        Err(e) => AllocAnswer {
            alloc: spec.to_string(),
            available: false,
            detail: frameshare::pipeline::error_chain(&e),
        },
    }
}

#[cfg(feature = "kms")]
fn kms(want: frameshare::format::FormatModifier) -> KmsAnswer {
    let outputs = frameshare::sink::kms::outputs();
    let mut a = KmsAnswer {
        works: false,
        planes: Vec::new(),
        reasons: Vec::new(),
    };
    if outputs.is_empty() {
        a.reasons.push(
            "no display: no DRM card node with modesetting (load vkms for a virtual one)".into(),
        );
        return a;
    }
    for dev in &outputs {
        let mut listed = Vec::new();
        for p in &dev.planes {
            let takes = p.formats.iter().any(|f| {
                f.split_once('/').is_some_and(|(fc, m)| {
                    fc.parse::<Fourcc>().ok() == Some(want.fourcc)
                        && m.parse::<Modifier>().ok() == Some(want.modifier)
                })
            });
            if takes {
                a.planes.push(format!(
                    "{} ({}) plane {} ({})",
                    dev.path, dev.driver, p.id, p.kind
                ));
            } else if p.kind != "cursor" {
                listed.extend(
                    p.formats
                        .iter()
                        .filter(|f| f.starts_with(&want.fourcc.name()))
                        .cloned(),
                );
            }
        }
        if !a.planes.iter().any(|p| p.starts_with(&dev.path)) {
            listed.sort();
            listed.dedup();
            a.reasons.push(format!(
                "{} ({}): no plane scans out {}/{}{}",
                dev.path,
                dev.driver,
                want.fourcc,
                want.modifier,
                if listed.is_empty() {
                    format!(" (no plane lists {} at all)", want.fourcc)
                } else {
                    format!("; the planes take {} as {}", want.fourcc, listed.join(", "))
                }
            ));
        }
    }
    a.works = !a.planes.is_empty();
    a
}

/// Runs `explain`; the exit status is the verdict.
pub fn explain(args: &ExplainArgs) -> Result<i32> {
    let Size(width, height) = args.size;
    // A size the format cannot have (an odd width for a 4:2:0 format) is not a question but a
    // usage error, as `run` says it. A fourcc frameshare does not know stays a "no": it may be a
    // real DRM format, only not one of ours.
    if args.fourcc.info().is_some() {
        frameshare::format::FrameLayout::linear(args.fourcc, width, height, args.stride_align)
            .map_err(crate::usage)?;
    }
    let alloc = allocator(&args.alloc);
    let mut works = alloc.available;
    #[allow(unused_mut)]
    let mut answer = Answer {
        fourcc: args.fourcc.name(),
        width,
        height,
        modifier: args.modifier.to_string(),
        works: false,
        allocator: alloc,
        vulkan: None,
        kms: None,
    };
    let mut text = format!(
        "{} {}x{} modifier {}\nallocator  {} {}: {}\n",
        answer.fourcc,
        width,
        height,
        answer.modifier,
        answer.allocator.alloc,
        if answer.allocator.available {
            "yes"
        } else {
            "no"
        },
        answer.allocator.detail
    );
    if args.into != Into::Kms {
        #[cfg(feature = "vulkan")]
        {
            let verdict = frameshare::explain::explain(&frameshare::explain::Request {
                fourcc: args.fourcc,
                width,
                height,
                modifier: args.modifier,
                alloc: args.alloc.to_string(),
                stride_align: args.stride_align,
            });
            works &= verdict.works;
            text.push_str("vulkan     ");
            text.push_str(&verdict.to_string().replace('\n', "\n           "));
            text = text.trim_end().to_owned() + "\n";
            answer.vulkan = Some(serde_json::to_value(&verdict)?);
        }
        #[cfg(not(feature = "vulkan"))]
        {
            text.push_str(
                "vulkan     not asked: this build has no Vulkan (build with --features vulkan)\n",
            );
            works = false;
        }
    }
    if args.into != Into::Vulkan {
        #[cfg(feature = "kms")]
        {
            let k = kms(frameshare::format::FormatModifier {
                fourcc: args.fourcc,
                modifier: args.modifier,
            });
            works &= k.works;
            if k.works {
                text.push_str(&format!(
                    "kms        scans out on {}\n",
                    k.planes.join(", ")
                ));
            } else {
                text.push_str("kms        cannot scan out:\n");
                for r in &k.reasons {
                    text.push_str(&format!("           - {r}\n"));
                }
            }
            answer.kms = Some(k);
        }
        #[cfg(not(feature = "kms"))]
        {
            text.push_str(
                "kms        not asked: this build has no KMS (build with --features kms)\n",
            );
            works = false;
        }
    }
    answer.works = works;
    if args.json {
        // The Vulkan verdict's keys stay at the top (as before `--into`), its own `works` as
        // `vulkan_works`; `works` is the whole answer's.
        let mut v = answer
            .vulkan
            .take()
            .unwrap_or_else(|| serde_json::json!({}));
        if let Some(w) = v.get("works").cloned() {
            v["vulkan_works"] = w;
        }
        let whole = serde_json::to_value(&answer)?;
        for (k, val) in whole.as_object().into_iter().flatten() {
            if k != "vulkan" {
                v[k] = val.clone();
            }
        }
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        out!("{text}");
        outln!("verdict    {}", if works { "yes" } else { "no" });
    }
    Ok(if works { 0 } else { 1 })
}
