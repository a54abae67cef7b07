//! Per-frame metadata (PipeWire's `spa_meta`, libcamera's per-request controls): which clock a
//! timestamp is on, the source's own sequence and timestamp, the crop rectangle, colorimetry,
//! whether the frame is corrupt or partial, and a bounded set of application key/values. It
//! travels with each `Frame` message as optional tagged fields, so a new kind of metadata does
//! not need a new protocol version (see `bus::wire` for the compatibility rule).

use std::fmt;

/// The clock a timestamp was taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Clock {
    /// `CLOCK_MONOTONIC` (what the producer stamps frames with unless told otherwise).
    #[default]
    Monotonic,
    /// `CLOCK_BOOTTIME` (monotonic, and counts suspend).
    Boottime,
    /// `CLOCK_REALTIME` (wall clock).
    Realtime,
}

impl Clock {
    /// The wire code.
    pub fn to_wire(self) -> u8 {
        match self {
            Clock::Monotonic => 1,
            Clock::Boottime => 2,
            Clock::Realtime => 3,
        }
    }

    /// Decodes a wire code.
    pub fn from_wire(v: u8) -> Option<Clock> {
        match v {
            1 => Some(Clock::Monotonic),
            2 => Some(Clock::Boottime),
            3 => Some(Clock::Realtime),
            _ => None,
        }
    }

    /// Now, on this clock, in nanoseconds.
    pub fn now_ns(self) -> u64 {
        use rustix::time::ClockId;
        let t = rustix::time::clock_gettime(match self {
            Clock::Monotonic => ClockId::Monotonic,
            Clock::Boottime => ClockId::Boottime,
            Clock::Realtime => ClockId::Realtime,
        });
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }

    /// The clock's name (`monotonic`, `boottime`, `realtime`).
    pub fn name(self) -> &'static str {
        match self {
            Clock::Monotonic => "monotonic",
            Clock::Boottime => "boottime",
            Clock::Realtime => "realtime",
        }
    }
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A timestamp and the clock it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// Nanoseconds.
    pub ns: u64,
    /// The clock.
    pub clock: Clock,
}

/// A rectangle of the frame that holds the picture (the rest is padding or letterbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Crop {
    /// Left edge, pixels.
    pub x: u32,
    /// Top edge, pixels.
    pub y: u32,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
}

/// YCbCr matrix coefficients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Matrix {
    /// Not said.
    #[default]
    Unknown,
    /// ITU-R BT.601.
    Bt601,
    /// ITU-R BT.709.
    Bt709,
    /// ITU-R BT.2020 (non-constant luminance).
    Bt2020,
    /// RGB (no matrix).
    Rgb,
}

/// Quantisation range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Range {
    /// Not said.
    #[default]
    Unknown,
    /// Limited (video) range: Y 16–235.
    Limited,
    /// Full range: 0–255.
    Full,
}

/// Colour primaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Primaries {
    /// Not said.
    #[default]
    Unknown,
    /// BT.601 (SMPTE 170M).
    Bt601,
    /// BT.709 / sRGB.
    Bt709,
    /// BT.2020.
    Bt2020,
}

/// Transfer function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transfer {
    /// Not said.
    #[default]
    Unknown,
    /// BT.709 (also BT.601).
    Bt709,
    /// sRGB.
    Srgb,
    /// SMPTE ST 2084 (PQ).
    Pq,
    /// ARIB STD-B67 (HLG).
    Hlg,
    /// Linear light.
    Linear,
}

macro_rules! wire_enum {
    ($t:ty { $($v:ident = $n:expr),* $(,)? }) => {
        impl $t {
            /// The wire code.
            pub fn to_wire(self) -> u8 {
                match self { $(Self::$v => $n),* }
            }
            /// Decodes a wire code.
            pub fn from_wire(v: u8) -> Option<Self> {
                match v { $($n => Some(Self::$v),)* _ => None }
            }
        }
    };
}

wire_enum!(Matrix { Unknown = 0, Bt601 = 1, Bt709 = 2, Bt2020 = 3, Rgb = 4 });
wire_enum!(Range { Unknown = 0, Limited = 1, Full = 2 });
wire_enum!(Primaries { Unknown = 0, Bt601 = 1, Bt709 = 2, Bt2020 = 3 });
wire_enum!(Transfer { Unknown = 0, Bt709 = 1, Srgb = 2, Pq = 3, Hlg = 4, Linear = 5 });

/// How the frame's YUV or RGB values map to colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Colorimetry {
    /// Matrix.
    pub matrix: Matrix,
    /// Range.
    pub range: Range,
    /// Primaries.
    pub primaries: Primaries,
    /// Transfer.
    pub transfer: Transfer,
}

/// Most application key/values one frame carries.
pub const MAX_KEY_VALUES: usize = 16;
/// Longest key, bytes.
pub const MAX_KEY: usize = 64;
/// Longest value, bytes.
pub const MAX_VALUE: usize = 256;

/// Errors building metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// Too many key/values.
    #[error("a frame carries at most {MAX_KEY_VALUES} key/values")]
    TooManyKeys,
    /// A key that is empty, too long or not printable ASCII.
    #[error("metadata key {0:?}: want 1-{MAX_KEY} printable ASCII bytes")]
    BadKey(String),
    /// A value that is too long.
    #[error("metadata value of {key:?}: {len} bytes, at most {MAX_VALUE}")]
    ValueTooLong {
        /// The key.
        key: String,
        /// Its value's length.
        len: usize,
    },
}

/// Everything a frame says of itself beyond its buffer, sequence number and timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FrameMeta {
    /// The clock of the frame's timestamp (monotonic unless said).
    pub clock: Clock,
    /// The source's own sequence number (a camera's `v4l2_buffer.sequence`), if it has one.
    pub source_seq: Option<u64>,
    /// The source's own timestamp (a camera's capture time), if it has one.
    pub source_time: Option<Timestamp>,
    /// The part of the frame that holds the picture.
    pub crop: Option<Crop>,
    /// Colorimetry.
    pub colorimetry: Option<Colorimetry>,
    /// The source flagged the frame as corrupt (V4L2's `V4L2_BUF_FLAG_ERROR`).
    pub corrupt: bool,
    /// Bytes of the buffer the source actually filled, when less than the frame (V4L2's
    /// `bytesused`; a partial frame).
    pub bytes_used: Option<u64>,
    pub(crate) key_values: Vec<(String, Vec<u8>)>,
}

impl FrameMeta {
    /// Adds (or replaces) an application key/value.
    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<(), MetaError> {
        check_key(key)?;
        if value.len() > MAX_VALUE {
            return Err(MetaError::ValueTooLong {
                key: key.to_owned(),
                len: value.len(),
            });
        }
        if let Some(kv) = self.key_values.iter_mut().find(|(k, _)| k == key) {
            kv.1 = value.to_vec();
            return Ok(());
        }
        if self.key_values.len() >= MAX_KEY_VALUES {
            return Err(MetaError::TooManyKeys);
        }
        self.key_values.push((key.to_owned(), value.to_vec()));
        Ok(())
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.key_values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// Every key/value, in the order they were set.
    pub fn key_values(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.key_values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Whether nothing beyond the defaults is set (such a frame's message carries no fields).
    pub fn is_empty(&self) -> bool {
        *self == FrameMeta::default()
    }
}

fn check_key(key: &str) -> Result<(), MetaError> {
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(MetaError::BadKey(key.to_owned()));
    }
    Ok(())
}

/// For the wire decoder: a key/value from a peer, checked like [`FrameMeta::set`].
pub(crate) fn push_key_value(
    meta: &mut FrameMeta,
    key: String,
    value: Vec<u8>,
) -> Result<(), MetaError> {
    check_key(&key)?;
    if value.len() > MAX_VALUE {
        return Err(MetaError::ValueTooLong {
            key,
            len: value.len(),
        });
    }
    if meta.key_values.iter().any(|(k, _)| *k == key) {
        return Err(MetaError::BadKey(format!("{key} (twice)")));
    }
    if meta.key_values.len() >= MAX_KEY_VALUES {
        return Err(MetaError::TooManyKeys);
    }
    meta.key_values.push((key, value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_bounded_and_replaced() {
        let mut m = FrameMeta::default();
        assert!(m.is_empty());
        m.set("exposure_us", b"8000").unwrap();
        m.set("exposure_us", b"9000").unwrap();
        assert_eq!(m.get("exposure_us"), Some(&b"9000"[..]));
        assert_eq!(m.key_values().count(), 1);
        assert!(matches!(m.set("", b""), Err(MetaError::BadKey(_))));
        assert!(matches!(m.set("a b", b""), Err(MetaError::BadKey(_))));
        assert!(matches!(
            m.set("k", &[0; MAX_VALUE + 1]),
            Err(MetaError::ValueTooLong { .. })
        ));
        for i in 1..MAX_KEY_VALUES {
            m.set(&format!("k{i}"), b"v").unwrap();
        }
        assert_eq!(m.set("one-more", b"v"), Err(MetaError::TooManyKeys));
        assert!(!m.is_empty());
    }

    #[test]
    fn clocks_tick() {
        let a = Clock::Monotonic.now_ns();
        let b = Clock::Monotonic.now_ns();
        assert!(b >= a);
        assert!(Clock::Boottime.now_ns() >= a / 2);
        for c in [Clock::Monotonic, Clock::Boottime, Clock::Realtime] {
            assert_eq!(Clock::from_wire(c.to_wire()), Some(c));
        }
        assert_eq!(Clock::from_wire(0), None);
    }
}
