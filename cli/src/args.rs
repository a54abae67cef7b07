//! Typed command-line values: a clap value parser for each of the library's pure specs
//! (allocators, sinks, sources, fourccs, modifiers, patterns, policies, sizes), so that a bad
//! value is a usage error (exit 2) found while parsing, before anything is forked or connected,
//! and so that help and shell completion list the values.

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::str::FromStr;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;

/// Parses with `T`'s `FromStr` and offers `values` to help and completion. A value need not be
/// one of `values` (`dma-heap:NAME`, `png:DIR`, `solid:RRGGBB`): they are the common forms,
/// and the argument's help names the rest.
#[derive(Clone)]
pub struct SpecParser<T> {
    values: &'static [(&'static str, &'static str)],
    _t: PhantomData<fn() -> T>,
}

impl<T> SpecParser<T> {
    const fn new(values: &'static [(&'static str, &'static str)]) -> Self {
        SpecParser {
            values,
            _t: PhantomData,
        }
    }
}

impl<T> TypedValueParser for SpecParser<T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value
            .to_str()
            .ok_or_else(|| clap::Error::new(ErrorKind::InvalidUtf8).with_cmd(cmd))?;
        text.parse::<T>().map_err(|e| {
            let arg = arg.map_or_else(|| "...".to_owned(), |a| a.to_string());
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid value '{text}' for '{arg}': {e}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            self.values
                .iter()
                .map(|(name, help)| PossibleValue::new(*name).help(*help)),
        ))
    }
}

/// `--alloc`: every buffer kind (and its common arguments).
pub const ALLOCATORS: &[(&str, &str)] = &[
    (
        "auto",
        "the best this machine offers: dma-heap, udmabuf, gbm, then memfd",
    ),
    (
        "dma-heap",
        "a dma-buf from /dev/dma_heap/system (dma-heap:NAME for another heap)",
    ),
    (
        "dma-heap:cma",
        "a dma-buf from the CMA heap (physically contiguous)",
    ),
    (
        "udmabuf",
        "a sealed memfd turned into a dma-buf by /dev/udmabuf",
    ),
    (
        "drm-dumb",
        "a DRM dumb buffer, exported (drm-dumb:DRIVER or drm-dumb:/dev/dri/cardN)",
    ),
    ("drm-dumb:vgem", "a dumb buffer on vgem"),
    ("drm-dumb:vkms", "a dumb buffer on vkms"),
    (
        "gbm",
        "a GBM buffer object (feature gbm; gbm:/dev/dri/renderDN for another node)",
    ),
    ("memfd", "a sealed memfd"),
    ("posix-shm", "shm_open, unlinked at once, shared read-only"),
    ("sysv-shm", "shmget(IPC_PRIVATE), removed once attached"),
];

/// `--sink`: every sink form.
pub const SINKS: &[(&str, &str)] = &[
    (
        "verify",
        "check every pixel of every frame against the generator",
    ),
    ("null", "take each frame and give it back"),
    (
        "png:DIR",
        "write DIR/frame-NNNNNN.png (DIR's parent must exist)",
    ),
    (
        "vulkan",
        "import into a Vulkan device, convert and checksum on the GPU",
    ),
    ("vulkan:image", "force the VkImage import path"),
    ("vulkan:buffer", "force the VkBuffer import path"),
    (
        "vulkan:staging",
        "force a staging copy (counted in bytes copied)",
    ),
    (
        "vulkan:png:DIR",
        "also write the GPU-converted frames as PNG",
    ),
    (
        "kms",
        "scan out on the first display (kms:/dev/dri/cardN for another)",
    ),
    ("kms:vkms", "scan out on vkms"),
    (
        "kms:verify-writeback",
        "also check each scanned-out frame through a writeback connector",
    ),
    ("kms:connector=NAME", "scan out on this connector"),
    (
        "kms:convert",
        "always convert on the GPU first (kms:direct: never)",
    ),
];

/// `--source`: every source form.
pub const SOURCES: &[(&str, &str)] = &[
    ("generator", "test patterns (the pattern from --pattern)"),
    ("generator:bars", "SMPTE-style colour bars"),
    (
        "generator:box",
        "a coloured box moving over a dark background",
    ),
    ("generator:solid", "one colour (generator:solid:RRGGBB)"),
    (
        "v4l2",
        "the first V4L2 capture device (feature v4l2; v4l2:/dev/videoN for another)",
    ),
    (
        "v4l2:export",
        "the camera's own buffers, exported as dma-bufs",
    ),
    ("v4l2:import", "the camera fills our buffers (--alloc)"),
    ("v4l2:copy", "mmap and copy (counted in bytes copied)"),
    (
        "v4l2:separate-planes",
        "ask a multi-planar camera for NV12 as NM12 (one fd per plane)",
    ),
];

/// `--pattern`.
pub const PATTERNS: &[(&str, &str)] = &[
    ("bars", "SMPTE-style colour bars"),
    ("box", "a coloured box moving over a dark background"),
    ("solid", "grey (solid:RRGGBB for another colour)"),
];

/// `--format`: every format the generator, verify and png handle.
pub const FORMATS: &[(&str, &str)] = &[
    ("XR24", "XRGB8888: B G R X bytes"),
    ("AR24", "ARGB8888: B G R A bytes"),
    ("XB24", "XBGR8888: R G B X bytes"),
    ("AB24", "ABGR8888: R G B A bytes"),
    ("RG24", "RGB888: B G R bytes"),
    ("NV12", "Y plane, interleaved UV plane, 4:2:0"),
    ("YUYV", "packed 4:2:2: Y0 U Y1 V"),
    ("UYVY", "packed 4:2:2: U Y0 V Y1"),
    ("NV21", "Y plane, interleaved VU plane, 4:2:0"),
    ("YU12", "I420: Y, U and V planes, 4:2:0"),
    ("NV16", "Y plane, interleaved UV plane, 4:2:2"),
    ("P010", "NV12 with 10-bit samples in 16-bit words"),
];

/// `--policy`.
pub const POLICIES: &[(&str, &str)] = &[
    ("wait", "every frame: the producer waits for this consumer"),
    (
        "drop",
        "skip frames while this consumer holds half the pool",
    ),
    ("latest", "a mailbox: always the newest frame"),
];

/// `explain --modifier`: the common names (any DRM_FORMAT_MOD_* name or a number works).
pub const MODIFIERS: &[(&str, &str)] = &[
    ("LINEAR", "rows one after another"),
    ("INVALID", "implicit, driver-chosen layout"),
    ("I915_X_TILED", "Intel X tiling"),
    ("I915_Y_TILED", "Intel Y tiling"),
    ("BROADCOM_SAND128", "Broadcom SAND128 column layout"),
    ("ALLWINNER_TILED", "Allwinner tiling"),
];

/// A frame size, `WIDTHxHEIGHT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u32, pub u32);

impl FromStr for Size {
    type Err = frameshare::format::FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        frameshare::format::parse_size(s).map(|(w, h)| Size(w, h))
    }
}

/// A comma-separated list of sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes(pub Vec<(u32, u32)>);

impl FromStr for Sizes {
    type Err = frameshare::format::FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(|p| frameshare::format::parse_size(p.trim()))
            .collect::<Result<_, _>>()
            .map(Sizes)
    }
}

/// A frame rate: positive and finite (0, nan and inf are refused, not taken as "unpaced").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fps(pub f64);

impl FromStr for Fps {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Fps(v)),
            _ => Err(format!(
                "{s:?} is not a frame rate (want a positive number; leave --fps out for unpaced)"
            )),
        }
    }
}

/// `--when-full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhenFullArg {
    /// Wait for a buffer to come back.
    Wait,
    /// Skip the frame (counted as dropped).
    Drop,
}

impl From<WhenFullArg> for frameshare::bus::WhenFull {
    fn from(w: WhenFullArg) -> Self {
        match w {
            WhenFullArg::Wait => frameshare::bus::WhenFull::Wait,
            WhenFullArg::Drop => frameshare::bus::WhenFull::Drop,
        }
    }
}

/// `--acquire-fence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireFence {
    /// No fence.
    None,
    /// A sw_sync fence, signalled this long after the frame was sent.
    SwSync(std::time::Duration),
}

impl FromStr for AcquireFence {
    type Err = String;
    fn from_str(mode: &str) -> Result<Self, String> {
        match mode.split_once(':') {
            None if mode == "none" => Ok(AcquireFence::None),
            None if mode == "sw-sync" => Ok(AcquireFence::SwSync(std::time::Duration::ZERO)),
            Some(("sw-sync", ms)) => ms
                .parse()
                .map(|ms| AcquireFence::SwSync(std::time::Duration::from_millis(ms)))
                .map_err(|_| format!("bad delay {ms:?} (want milliseconds)")),
            _ => Err(format!(
                "unknown fence mode {mode:?} (want none, sw-sync[:DELAY_MS])"
            )),
        }
    }
}

/// The source `--source` names: parsed here, built later (a camera is opened only then).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// The generator, with a pattern if given.
    Generator(Option<frameshare::source::Pattern>),
    /// A V4L2 camera and its options (what follows `v4l2`; only with the v4l2 feature).
    #[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
    V4l2(String),
}

impl FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, rest) = s.split_once(':').unwrap_or((s, ""));
        match name {
            "generator" if rest.is_empty() => Ok(SourceSpec::Generator(None)),
            "generator" => rest.parse().map(|p| SourceSpec::Generator(Some(p))),
            "v4l2" => {
                #[cfg(feature = "v4l2")]
                {
                    frameshare::source::v4l2::V4l2Config::parse(rest)?;
                    Ok(SourceSpec::V4l2(rest.to_owned()))
                }
                #[cfg(not(feature = "v4l2"))]
                Err("this build has no V4L2 source (build with --features v4l2)".into())
            }
            _ => Err(format!(
                "unknown source {s:?} (want generator[:bars|box|solid[:RRGGBB]], \
                 v4l2[:/dev/videoN][:export|import|copy][:fps=N][:separate-planes])"
            )),
        }
    }
}

/// Parser for `--alloc`.
pub fn alloc() -> SpecParser<frameshare::alloc::AllocatorSpec> {
    SpecParser::new(ALLOCATORS)
}

/// A sink as given on the command line: parsed, and its text kept (`run` hands it on to its
/// consumer process).
#[derive(Debug, Clone)]
pub struct SinkArg {
    /// The parsed spec.
    pub spec: frameshare::sink::SinkSpec,
    /// What was typed.
    pub text: String,
}

impl FromStr for SinkArg {
    type Err = frameshare::sink::SinkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SinkArg {
            spec: s.parse()?,
            text: s.to_owned(),
        })
    }
}

/// Parser for `--sink`.
pub fn sink() -> SpecParser<SinkArg> {
    SpecParser::new(SINKS)
}

/// Parser for `--source`.
pub fn source() -> SpecParser<SourceSpec> {
    SpecParser::new(SOURCES)
}

/// Parser for `--pattern`.
pub fn pattern() -> SpecParser<frameshare::source::Pattern> {
    SpecParser::new(PATTERNS)
}

/// Parser for `--format`: the supported formats by name (a long name such as XRGB8888 works
/// too; a fourcc the library cannot lay out is refused here).
pub fn format() -> SpecParser<SupportedFourcc> {
    SpecParser::new(FORMATS)
}

/// Parser for `explain FOURCC`: any fourcc (one the library does not know gets a "no").
pub fn any_format() -> SpecParser<frameshare::format::Fourcc> {
    SpecParser::new(FORMATS)
}

/// Parser for `--policy`.
pub fn policy() -> SpecParser<frameshare::bus::Policy> {
    SpecParser::new(POLICIES)
}

/// Parser for `--modifier`.
pub fn modifier() -> SpecParser<frameshare::format::Modifier> {
    SpecParser::new(MODIFIERS)
}

/// A fourcc the library can lay out, generate and verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedFourcc(pub frameshare::format::Fourcc);

impl FromStr for SupportedFourcc {
    type Err = frameshare::format::FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let f: frameshare::format::Fourcc = s.parse()?;
        f.info()
            .map(|_| SupportedFourcc(f))
            .ok_or(frameshare::format::FormatError::Unsupported(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_value_parses() {
        for (v, _) in ALLOCATORS {
            v.parse::<frameshare::alloc::AllocatorSpec>().unwrap();
        }
        let listed: Vec<&str> = FORMATS.iter().map(|(v, _)| *v).collect();
        let known: Vec<String> = frameshare::format::Fourcc::ALL
            .iter()
            .map(|f| f.name())
            .collect();
        assert_eq!(
            listed, known,
            "--format lists exactly the formats the library handles"
        );
        for (v, _) in PATTERNS {
            v.parse::<frameshare::source::Pattern>().unwrap();
        }
        for (v, _) in POLICIES {
            v.parse::<frameshare::bus::Policy>().unwrap();
        }
        for (v, _) in MODIFIERS {
            v.parse::<frameshare::format::Modifier>().unwrap();
        }
        for (v, _) in SOURCES.iter().filter(|(v, _)| v.starts_with("generator")) {
            v.parse::<SourceSpec>().unwrap();
        }
    }

    #[test]
    fn fps_refuses_what_is_not_a_rate() {
        for bad in ["0", "-5", "nan", "inf", "abc"] {
            assert!(bad.parse::<Fps>().is_err(), "{bad}");
        }
        assert_eq!("29.97".parse::<Fps>().unwrap(), Fps(29.97));
    }
}
