//! What a `kms[:…]` sink spec says: which device, which connector, whether to verify through
//! writeback, and when to convert. Parsing is pure ([`KmsOptions`]'s `FromStr`); opening the
//! device is a separate call ([`super::KmsSink::open`], [`super::KmsDisplay::open`]).

use std::path::PathBuf;
use std::str::FromStr;

use super::{ConversionRefusal, KmsError};

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

/// KMS sink settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KmsOptions {
    /// The device.
    pub device: DeviceSpec,
    /// Connector name (`Virtual-1`, `HDMI-A-1`); default: the first connected one.
    pub connector: Option<String>,
    /// Capture every frame through the writeback connector and compare it (vkms CI).
    pub verify_writeback: bool,
    /// When frames go through the Vulkan conversion first (see [`super::KmsSink`]).
    pub convert: ConvertPolicy,
}

impl FromStr for KmsOptions {
    type Err = KmsError;

    /// Parses what follows `kms` in a sink spec: `:`- or `,`-separated tokens, each a node path
    /// (`/dev/dri/card1`), `connector=NAME`, `verify-writeback` (or `writeback`), `convert`
    /// (always through Vulkan; refused by a build without it), `direct` (never), or a driver
    /// name.
    fn from_str(args: &str) -> Result<Self, KmsError> {
        let mut o = KmsOptions::default();
        for tok in args.split([':', ',']).filter(|t| !t.is_empty()) {
            if tok.starts_with('/') {
                o.device = DeviceSpec::Path(tok.into());
            } else if let Some(name) = tok.strip_prefix("connector=") {
                o.connector = Some(name.to_owned());
            } else if matches!(tok, "verify-writeback" | "writeback" | "verify") {
                o.verify_writeback = true;
            } else if tok == "convert" {
                if !cfg!(feature = "vulkan") {
                    return Err(KmsError::ConversionUnavailable(ConversionRefusal::NotBuilt));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        assert_eq!("".parse::<KmsOptions>().unwrap(), KmsOptions::default());
        let o: KmsOptions = "/dev/dri/card1:verify-writeback".parse().unwrap();
        assert_eq!(o.device, DeviceSpec::Path("/dev/dri/card1".into()));
        assert!(o.verify_writeback);
        let o: KmsOptions = "vkms,connector=Virtual-1".parse().unwrap();
        assert_eq!(o.device, DeviceSpec::Driver("vkms".into()));
        assert_eq!(o.connector.as_deref(), Some("Virtual-1"));
        assert_eq!(o.convert, ConvertPolicy::Auto);
        match "vkms:verify-writeback:convert".parse::<KmsOptions>() {
            Ok(o) if cfg!(feature = "vulkan") => assert_eq!(o.convert, ConvertPolicy::Always),
            Err(KmsError::ConversionUnavailable(ConversionRefusal::NotBuilt))
                if !cfg!(feature = "vulkan") => {}
            other => panic!("{other:?}"),
        }
        let o: KmsOptions = "direct".parse().unwrap();
        assert_eq!(o.convert, ConvertPolicy::Never);
        assert_eq!(o.device, DeviceSpec::Auto);
        match "bad token!".parse::<KmsOptions>() {
            Err(KmsError::BadOption(t)) => assert_eq!(t, "bad token!"),
            other => panic!("{other:?}"),
        }
    }
}
