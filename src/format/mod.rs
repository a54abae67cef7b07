//! Pixel formats and plane layouts: DRM fourcc codes, format modifiers, and the pure arithmetic that
//! turns (fourcc, width, height, stride alignment) into plane offsets, strides and a buffer size —
//! and checks a peer's layout against the size of the memory that backs it.

pub mod pixel;

use std::fmt;
use std::str::FromStr;

/// A DRM fourcc code (`drm_fourcc.h`), e.g. `XR24` for `DRM_FORMAT_XRGB8888`.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Fourcc(pub u32);

const fn code(s: &[u8; 4]) -> u32 {
    (s[0] as u32) | (s[1] as u32) << 8 | (s[2] as u32) << 16 | (s[3] as u32) << 24
}

impl Fourcc {
    /// `DRM_FORMAT_XRGB8888`: 32-bit, bytes in memory B, G, R, X.
    pub const XR24: Fourcc = Fourcc(code(b"XR24"));
    /// `DRM_FORMAT_ARGB8888`: 32-bit, bytes in memory B, G, R, A.
    pub const AR24: Fourcc = Fourcc(code(b"AR24"));
    /// `DRM_FORMAT_XBGR8888`: 32-bit, bytes in memory R, G, B, X.
    pub const XB24: Fourcc = Fourcc(code(b"XB24"));
    /// `DRM_FORMAT_ABGR8888`: 32-bit, bytes in memory R, G, B, A.
    pub const AB24: Fourcc = Fourcc(code(b"AB24"));
    /// `DRM_FORMAT_RGB888`: 24-bit, bytes in memory B, G, R.
    pub const RG24: Fourcc = Fourcc(code(b"RG24"));
    /// `DRM_FORMAT_NV12`: 2 planes, Y then interleaved U/V subsampled 2x2.
    pub const NV12: Fourcc = Fourcc(code(b"NV12"));
    /// `DRM_FORMAT_YUYV`: packed 4:2:2, bytes Y0 U Y1 V.
    pub const YUYV: Fourcc = Fourcc(code(b"YUYV"));
    /// `DRM_FORMAT_UYVY`: packed 4:2:2, bytes U Y0 V Y1.
    pub const UYVY: Fourcc = Fourcc(code(b"UYVY"));
    /// `DRM_FORMAT_NV21`: 2 planes, Y then interleaved V/U subsampled 2x2 (Android cameras).
    pub const NV21: Fourcc = Fourcc(code(b"NV21"));
    /// `DRM_FORMAT_YUV420` (V4L2 `YU12`, I420): 3 planes, Y, U, V, chroma subsampled 2x2.
    pub const YU12: Fourcc = Fourcc(code(b"YU12"));
    /// `DRM_FORMAT_NV16`: 2 planes, Y then interleaved U/V subsampled 2x1 (4:2:2).
    pub const NV16: Fourcc = Fourcc(code(b"NV16"));
    /// `DRM_FORMAT_P010`: NV12 with 16-bit little-endian samples, 10 bits in the high bits.
    pub const P010: Fourcc = Fourcc(code(b"P010"));

    /// Every format this crate can lay out, generate and verify.
    pub const ALL: [Fourcc; 12] = [
        Self::XR24,
        Self::AR24,
        Self::XB24,
        Self::AB24,
        Self::RG24,
        Self::NV12,
        Self::YUYV,
        Self::UYVY,
        Self::NV21,
        Self::YU12,
        Self::NV16,
        Self::P010,
    ];

    /// The four characters, e.g. `"XR24"` (non-printable bytes shown as `?`).
    pub fn name(self) -> String {
        self.0
            .to_le_bytes()
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '?'
                }
            })
            .collect()
    }

    /// Plane geometry, or `None` for a fourcc this crate does not know.
    pub fn info(self) -> Option<&'static FormatInfo> {
        FORMATS.iter().find(|f| f.fourcc == self)
    }

    /// Whether samples are YCbCr (as opposed to RGB).
    pub fn is_yuv(self) -> bool {
        matches!(
            self,
            Self::NV12
                | Self::YUYV
                | Self::UYVY
                | Self::NV21
                | Self::YU12
                | Self::NV16
                | Self::P010
        )
    }
}

/// Fourcc names separated by spaces, a run of the same one named once (a list of
/// (fourcc, modifier) pairs repeats a fourcc per modifier): for error messages.
pub fn fourcc_names(fourccs: impl IntoIterator<Item = Fourcc>) -> String {
    let mut names: Vec<String> = fourccs.into_iter().map(|f| f.to_string()).collect();
    names.dedup();
    names.join(" ")
}

impl fmt::Display for Fourcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Debug for Fourcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fourcc({} 0x{:08x})", self.name(), self.0)
    }
}

impl FromStr for Fourcc {
    type Err = FormatError;

    /// Parses exactly four characters (`XR24`), or a long name (`XRGB8888`, `nv12`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.to_ascii_uppercase();
        let aliases: [(&str, Fourcc); 11] = [
            ("I420", Self::YU12),
            ("YUV420", Self::YU12),
            ("NV12_10LE", Self::P010),
            ("XRGB8888", Self::XR24),
            ("ARGB8888", Self::AR24),
            ("XBGR8888", Self::XB24),
            ("ABGR8888", Self::AB24),
            ("RGB888", Self::RG24),
            ("BGR24", Self::RG24),
            ("BGRX", Self::XR24),
            ("BGRA", Self::AR24),
        ];
        if let Some((_, f)) = aliases.iter().find(|(n, _)| *n == upper) {
            return Ok(*f);
        }
        if let Some(f) = Self::ALL
            .iter()
            .find(|f| f.name() == upper || f.name() == s)
        {
            return Ok(*f);
        }
        let bytes = s.as_bytes();
        if bytes.len() == 4 {
            return Ok(Fourcc(code(&[bytes[0], bytes[1], bytes[2], bytes[3]])));
        }
        Err(FormatError::BadFourcc(s.to_owned()))
    }
}

/// A DRM format modifier (`DRM_FORMAT_MOD_*`): tiling/compression of the planes.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Modifier(pub u64);

impl Modifier {
    /// `DRM_FORMAT_MOD_LINEAR`: rows one after another, `stride` bytes apart.
    pub const LINEAR: Modifier = Modifier(0);
    /// `DRM_FORMAT_MOD_INVALID`: "no explicit modifier" (implicit, driver-chosen layout).
    pub const INVALID: Modifier = Modifier(0x00ff_ffff_ffff_ffff);

    /// The vendor byte (top 8 bits).
    pub fn vendor(self) -> u8 {
        (self.0 >> 56) as u8
    }
}

/// Every modifier `drm-fourcc` names (as drm_info prints them, e.g. `I915_X_TILED`).
const NAMED_MODIFIERS: [drm_fourcc::DrmModifier; 28] = {
    use drm_fourcc::DrmModifier as M;
    [
        M::Linear,
        M::Invalid,
        M::I915_x_tiled,
        M::I915_y_tiled,
        M::I915_y_tiled_ccs,
        M::I915_y_tiled_gen12_rc_ccs,
        M::I915_y_tiled_gen12_mc_ccs,
        M::Samsung_64_32_tile,
        M::Samsung_16_16_tile,
        M::Qcom_compressed,
        M::Vivante_tiled,
        M::Vivante_super_tiled,
        M::Vivante_split_tiled,
        M::Vivante_split_super_tiled,
        M::Nvidia_tegra_tiled,
        M::Nvidia_16bx2_block_one_gob,
        M::Nvidia_16bx2_block_two_gob,
        M::Nvidia_16bx2_block_four_gob,
        M::Nvidia_16bx2_block_eight_gob,
        M::Nvidia_16bx2_block_sixteen_gob,
        M::Nvidia_16bx2_block_thirtytwo_gob,
        M::Broadcom_vc4_t_tiled,
        M::Broadcom_sand32,
        M::Broadcom_sand64,
        M::Broadcom_sand128,
        M::Broadcom_sand256,
        M::Broadcom_uif,
        M::Allwinner_tiled,
    ]
};

impl Modifier {
    /// The `DRM_FORMAT_MOD_` name without its prefix (`LINEAR`, `I915_X_TILED`), if known.
    pub fn known_name(self) -> Option<String> {
        match drm_fourcc::DrmModifier::from(self.0) {
            drm_fourcc::DrmModifier::Unrecognized(_) => None,
            m => Some(format!("{m:?}").to_ascii_uppercase()),
        }
    }
}

impl fmt::Display for Modifier {
    /// The name drm_info prints (`LINEAR`, `I915_X_TILED`), else the number in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known_name() {
            Some(n) => f.write_str(&n),
            None => write!(f, "0x{:016x}", self.0),
        }
    }
}

impl fmt::Debug for Modifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Modifier({self})")
    }
}

impl FromStr for Modifier {
    type Err = FormatError;

    /// A name as drm_info prints it (`LINEAR`, `I915_X_TILED`; any case, with or without
    /// `DRM_FORMAT_MOD_`), a decimal or a `0x` hex number.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FormatError::BadModifier(s.to_owned());
        let upper = s.to_ascii_uppercase();
        let name = upper.strip_prefix("DRM_FORMAT_MOD_").unwrap_or(&upper);
        if let Some(m) = NAMED_MODIFIERS
            .iter()
            .map(|&m| Modifier(m.into()))
            .find(|m| m.known_name().as_deref() == Some(name))
        {
            return Ok(m);
        }
        let v = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            u64::from_str_radix(hex, 16).map_err(|_| bad())?
        } else {
            s.parse().map_err(|_| bad())?
        };
        Ok(Modifier(v))
    }
}

/// Geometry of one plane of a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneInfo {
    /// Bytes per block (a block is `block_width` pixels wide, one row tall).
    pub bytes_per_block: u32,
    /// Pixels per block horizontally (2 for packed 4:2:2 and for NV12's interleaved chroma).
    pub block_width: u32,
    /// Vertical subsampling: one plane row per `vsub` image rows.
    pub vsub: u32,
}

/// Geometry of a whole format.
#[derive(Debug)]
pub struct FormatInfo {
    /// The format.
    pub fourcc: Fourcc,
    /// Its planes, in memory order.
    pub planes: &'static [PlaneInfo],
    /// Width must be a multiple of this (chroma subsampling).
    pub width_align: u32,
    /// Height must be a multiple of this.
    pub height_align: u32,
}

const fn packed(bytes: u32, block: u32) -> PlaneInfo {
    PlaneInfo {
        bytes_per_block: bytes,
        block_width: block,
        vsub: 1,
    }
}

static FORMATS: &[FormatInfo] = &[
    FormatInfo {
        fourcc: Fourcc::XR24,
        planes: &[packed(4, 1)],
        width_align: 1,
        height_align: 1,
    },
    FormatInfo {
        fourcc: Fourcc::AR24,
        planes: &[packed(4, 1)],
        width_align: 1,
        height_align: 1,
    },
    FormatInfo {
        fourcc: Fourcc::XB24,
        planes: &[packed(4, 1)],
        width_align: 1,
        height_align: 1,
    },
    FormatInfo {
        fourcc: Fourcc::AB24,
        planes: &[packed(4, 1)],
        width_align: 1,
        height_align: 1,
    },
    FormatInfo {
        fourcc: Fourcc::RG24,
        planes: &[packed(3, 1)],
        width_align: 1,
        height_align: 1,
    },
    FormatInfo {
        fourcc: Fourcc::YUYV,
        planes: &[packed(4, 2)],
        width_align: 2,
        height_align: 1,
    },
    FormatInfo {
        fourcc: Fourcc::UYVY,
        planes: &[packed(4, 2)],
        width_align: 2,
        height_align: 1,
    },
    FormatInfo {
        fourcc: Fourcc::NV12,
        planes: &[
            PlaneInfo {
                bytes_per_block: 1,
                block_width: 1,
                vsub: 1,
            },
            PlaneInfo {
                bytes_per_block: 2,
                block_width: 2,
                vsub: 2,
            },
        ],
        width_align: 2,
        height_align: 2,
    },
    FormatInfo {
        fourcc: Fourcc::NV21,
        planes: &[packed(1, 1), subsampled(2, 2, 2)],
        width_align: 2,
        height_align: 2,
    },
    FormatInfo {
        fourcc: Fourcc::YU12,
        planes: &[packed(1, 1), subsampled(1, 2, 2), subsampled(1, 2, 2)],
        width_align: 2,
        height_align: 2,
    },
    FormatInfo {
        fourcc: Fourcc::NV16,
        planes: &[packed(1, 1), packed(2, 2)],
        width_align: 2,
        height_align: 1,
    },
    FormatInfo {
        fourcc: Fourcc::P010,
        planes: &[packed(2, 1), subsampled(4, 2, 2)],
        width_align: 2,
        height_align: 2,
    },
];

const fn subsampled(bytes: u32, block: u32, vsub: u32) -> PlaneInfo {
    PlaneInfo {
        bytes_per_block: bytes,
        block_width: block,
        vsub,
    }
}

/// Most planes any supported layout has (DRM allows 4).
pub const MAX_PLANES: usize = 4;

/// Where one plane lives inside the buffer's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneLayout {
    /// Index of the fd (memory object) holding this plane; most buffers have one fd for all planes.
    pub fd_index: u32,
    /// Byte offset of the plane's first row in that memory.
    pub offset: u64,
    /// Bytes from one row to the next.
    pub stride: u32,
}

/// A pixel format with its tiling modifier: what an importer (a GPU, a display plane) lists as
/// one thing it can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FormatModifier {
    /// Fourcc.
    pub fourcc: Fourcc,
    /// Modifier.
    pub modifier: Modifier,
}

impl FormatModifier {
    /// A LINEAR `fourcc`.
    pub fn linear(fourcc: Fourcc) -> Self {
        FormatModifier {
            fourcc,
            modifier: Modifier::LINEAR,
        }
    }
}

/// The complete description of a frame buffer's pixels: what crosses the socket once per buffer.
/// Always valid: made by [`FrameLayout::linear`] or checked by [`FrameLayout::new`], so every
/// accessor can rely on a known format and planes that fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLayout {
    fourcc: Fourcc,
    modifier: Modifier,
    width: u32,
    height: u32,
    planes: Vec<PlaneLayout>,
    size: u64,
}

/// Errors in format names, sizes and layouts.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// Not a known fourcc or 4-character code.
    #[error("unknown pixel format {0:?} (want a fourcc such as XR24, NV12, YUYV)")]
    BadFourcc(String),
    /// Not a modifier.
    #[error("bad modifier {0:?} (want a name such as LINEAR, INVALID, I915_X_TILED, or a number)")]
    BadModifier(String),
    /// A size that does not parse.
    #[error("bad size {0:?} (want WIDTHxHEIGHT, e.g. 1920x1080)")]
    BadSize(String),
    /// A fourcc this crate cannot lay out.
    #[error("pixel format {0} is not supported (supported: {list})", list = fourcc_names(Fourcc::ALL))]
    Unsupported(Fourcc),
    /// Width/height zero, too large, or not a multiple of the subsampling.
    #[error("{fourcc} cannot be {width}x{height}: {why}")]
    BadDimensions {
        /// Format.
        fourcc: Fourcc,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Why.
        why: &'static str,
    },
    /// Stride alignment not a power of two.
    #[error("stride alignment {0} is not a power of two between 1 and 4096")]
    BadAlignment(u32),
    /// A plane layout that does not fit the format or the memory.
    #[error("{fourcc} {width}x{height}, plane {plane}: {why}")]
    BadPlane {
        /// Format.
        fourcc: Fourcc,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Plane index.
        plane: usize,
        /// What is wrong.
        why: String,
    },
    /// Planes count differs from the format's.
    #[error("{fourcc} has {want} plane(s), layout lists {got}")]
    PlaneCount {
        /// Format.
        fourcc: Fourcc,
        /// What the format has.
        want: usize,
        /// What the layout had.
        got: usize,
    },
    /// The memory is smaller than the layout needs.
    #[error(
        "{fourcc} {width}x{height} needs {need} bytes in fd {fd_index}, which holds only {have}"
    )]
    TooSmall {
        /// Format.
        fourcc: Fourcc,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Fd index.
        fd_index: u32,
        /// Bytes needed.
        need: u64,
        /// Bytes the fd holds.
        have: u64,
    },
}

/// Largest width or height accepted (DRM's own limit is 16384 on most hardware).
pub const MAX_DIMENSION: u32 = 16384;

/// Parses `WIDTHxHEIGHT`.
pub fn parse_size(s: &str) -> Result<(u32, u32), FormatError> {
    let bad = || FormatError::BadSize(s.to_owned());
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    ))
}

fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

impl FrameLayout {
    /// A layout from its parts (a peer's AddBuffer, a driver's allocation), checked with the
    /// rules of [`FrameLayout::validate`]: known format, sane dimensions, plane count, strides
    /// wide enough, fd indices dense, no overflow, `size` covering every plane of fd 0.
    pub fn new(
        fourcc: Fourcc,
        modifier: Modifier,
        width: u32,
        height: u32,
        planes: Vec<PlaneLayout>,
        size: u64,
    ) -> Result<Self, FormatError> {
        let l = FrameLayout {
            fourcc,
            modifier,
            width,
            height,
            planes,
            size,
        };
        l.validate()?;
        Ok(l)
    }

    /// Pixel format.
    pub fn fourcc(&self) -> Fourcc {
        self.fourcc
    }

    /// Tiling modifier.
    pub fn modifier(&self) -> Modifier {
        self.modifier
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// (width, height).
    pub fn size_px(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Planes in format order.
    pub fn planes(&self) -> &[PlaneLayout] {
        &self.planes
    }

    /// Bytes of memory needed (per fd: the furthest plane end; for one fd, the whole buffer).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The planes, writable without re-validation: tests build layouts a hostile peer could send.
    #[cfg(test)]
    pub(crate) fn planes_mut_unchecked(&mut self) -> &mut Vec<PlaneLayout> {
        &mut self.planes
    }

    /// The same layout with another modifier (for allocators that learn the modifier from the
    /// driver), checked again.
    pub fn with_modifier(&self, modifier: Modifier) -> Result<Self, FormatError> {
        let mut l = self.clone();
        l.modifier = modifier;
        l.validate()?;
        Ok(l)
    }

    /// A LINEAR layout with all planes in one memory object, each stride rounded up to
    /// `stride_align` bytes (a power of two) and each plane starting on a `stride_align` boundary.
    pub fn linear(
        fourcc: Fourcc,
        width: u32,
        height: u32,
        stride_align: u32,
    ) -> Result<Self, FormatError> {
        let info = fourcc.info().ok_or(FormatError::Unsupported(fourcc))?;
        check_dimensions(info, width, height)?;
        if !stride_align.is_power_of_two() || stride_align > 4096 {
            return Err(FormatError::BadAlignment(stride_align));
        }
        let mut offset = 0u64;
        let mut planes = Vec::with_capacity(info.planes.len());
        for p in info.planes {
            let stride = align_up(min_stride(p, width), stride_align as u64);
            offset = align_up(offset, stride_align as u64);
            planes.push(PlaneLayout {
                fd_index: 0,
                offset,
                stride: stride as u32,
            });
            offset += stride * (height / p.vsub) as u64;
        }
        Ok(FrameLayout {
            fourcc,
            modifier: Modifier::LINEAR,
            width,
            height,
            planes,
            size: offset,
        })
    }

    /// The format's plane geometry (the layout was checked, so the format is known).
    pub fn info(&self) -> &'static FormatInfo {
        self.fourcc
            .info()
            .expect("FrameLayout holds only supported formats")
    }

    /// Rows in plane `plane`.
    pub fn plane_rows(&self, plane: usize) -> u32 {
        self.height / self.info().planes[plane].vsub
    }

    /// Bytes of pixel data in one row of plane `plane` (the stride minus its padding).
    pub fn plane_row_bytes(&self, plane: usize) -> usize {
        min_stride(&self.info().planes[plane], self.width) as usize
    }

    /// Bytes from the start of plane `plane` to the end of its last row's pixels.
    pub fn plane_span(&self, plane: usize) -> u64 {
        let rows = self.plane_rows(plane) as u64;
        (rows - 1) * self.planes[plane].stride as u64 + self.plane_row_bytes(plane) as u64
    }

    /// Number of distinct memory objects (fds) the planes refer to.
    pub fn fd_count(&self) -> usize {
        self.planes
            .iter()
            .map(|p| p.fd_index as usize + 1)
            .max()
            .unwrap_or(0)
    }

    /// Bytes each memory object must hold at least: the furthest end of a plane in it.
    pub fn required_size(&self, fd_index: u32) -> u64 {
        self.planes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.fd_index == fd_index)
            .map(|(i, p)| p.offset + self.plane_span(i))
            .max()
            .unwrap_or(0)
    }

    /// Checks a layout that came from elsewhere (a peer, a driver) for internal consistency:
    /// known format, sane dimensions, plane count, strides wide enough, fd indices dense, no
    /// arithmetic overflow, and `size` covering every plane of fd 0. Modifiers other than LINEAR
    /// describe driver-private tilings whose geometry cannot be checked here; only the
    /// overall size is then checked.
    pub fn validate(&self) -> Result<(), FormatError> {
        let info = self
            .fourcc
            .info()
            .ok_or(FormatError::Unsupported(self.fourcc))?;
        check_dimensions(info, self.width, self.height)?;
        if self.planes.len() != info.planes.len() {
            return Err(FormatError::PlaneCount {
                fourcc: self.fourcc,
                want: info.planes.len(),
                got: self.planes.len(),
            });
        }
        let bad = |plane, why: String| FormatError::BadPlane {
            fourcc: self.fourcc,
            width: self.width,
            height: self.height,
            plane,
            why,
        };
        let fds = self.fd_count();
        for idx in 0..fds as u32 {
            if !self.planes.iter().any(|p| p.fd_index == idx) {
                return Err(bad(0, format!("fd indices skip {idx}")));
            }
        }
        for (i, (p, pi)) in self.planes.iter().zip(info.planes).enumerate() {
            if p.fd_index as usize >= MAX_PLANES {
                return Err(bad(i, format!("fd index {} out of range", p.fd_index)));
            }
            if self.modifier == Modifier::LINEAR {
                let min = min_stride(pi, self.width);
                if (p.stride as u64) < min {
                    return Err(bad(
                        i,
                        format!(
                            "stride {} is less than a row of pixels ({min} bytes)",
                            p.stride
                        ),
                    ));
                }
            }
            let end = p
                .offset
                .checked_add(self.plane_span(i))
                .ok_or_else(|| bad(i, "offset + size overflows".into()))?;
            if p.fd_index == 0 && end > self.size {
                return Err(bad(
                    i,
                    format!(
                        "ends at byte {end} (offset {} + {} bytes), past the buffer size {}",
                        p.offset,
                        end - p.offset,
                        self.size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks that memory object `fd_index`, which holds `have` bytes, covers every plane in it.
    pub fn check_fits(&self, fd_index: u32, have: u64) -> Result<(), FormatError> {
        let need = if fd_index == 0 {
            self.size.max(self.required_size(0))
        } else {
            self.required_size(fd_index)
        };
        if have < need {
            return Err(FormatError::TooSmall {
                fourcc: self.fourcc,
                width: self.width,
                height: self.height,
                fd_index,
                need,
                have,
            });
        }
        Ok(())
    }
}

fn min_stride(p: &PlaneInfo, width: u32) -> u64 {
    (width as u64).div_ceil(p.block_width as u64) * p.bytes_per_block as u64
}

fn check_dimensions(info: &FormatInfo, width: u32, height: u32) -> Result<(), FormatError> {
    let bad = |why| FormatError::BadDimensions {
        fourcc: info.fourcc,
        width,
        height,
        why,
    };
    if width == 0 || height == 0 {
        return Err(bad("width and height must be positive"));
    }
    if width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(bad("larger than 16384 in a dimension"));
    }
    if width % info.width_align != 0 {
        return Err(bad(
            "width must be even for this format's chroma subsampling",
        ));
    }
    if height % info.height_align != 0 {
        return Err(bad(
            "height must be even for this format's chroma subsampling",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_names_round_trip() {
        for f in Fourcc::ALL {
            assert_eq!(f.name().parse::<Fourcc>().unwrap(), f);
            assert!(f.info().is_some(), "{f} has geometry");
        }
        assert_eq!(Fourcc::XR24.0, 0x3432_5258, "matches DRM_FORMAT_XRGB8888");
        assert_eq!(Fourcc::NV12.0, 0x3231_564e, "matches DRM_FORMAT_NV12");
        assert_eq!("xrgb8888".parse::<Fourcc>().unwrap(), Fourcc::XR24);
        assert_eq!("nv12".parse::<Fourcc>().unwrap(), Fourcc::NV12);
        assert!("toolong".parse::<Fourcc>().is_err());
        assert_eq!(Fourcc(code(b"Y\0\x01Z")).name(), "Y??Z");
    }

    #[test]
    fn modifiers_parse() {
        assert_eq!("linear".parse::<Modifier>().unwrap(), Modifier::LINEAR);
        assert_eq!(
            "INVALID".parse::<Modifier>().unwrap().0,
            0x00ff_ffff_ffff_ffff
        );
        assert_eq!(
            "0x0100000000000001".parse::<Modifier>().unwrap().vendor(),
            1
        );
        assert_eq!("42".parse::<Modifier>().unwrap(), Modifier(42));
        assert!("x".parse::<Modifier>().is_err());
        assert_eq!(Modifier(0x123).to_string(), "0x0000000000000123");
        // Named as drm_info names them, both ways.
        assert_eq!(Modifier(0x0100000000000001).to_string(), "I915_X_TILED");
        assert_eq!(
            "I915_X_TILED".parse::<Modifier>().unwrap(),
            Modifier(0x0100000000000001)
        );
        assert_eq!(
            "DRM_FORMAT_MOD_broadcom_sand128"
                .parse::<Modifier>()
                .unwrap(),
            Modifier(0x0700000000000004)
        );
        for m in NAMED_MODIFIERS {
            let m = Modifier(m.into());
            assert_eq!(m.to_string().parse::<Modifier>().unwrap(), m);
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1920x1080").unwrap(), (1920, 1080));
        assert_eq!(parse_size("64X48").unwrap(), (64, 48));
        assert!(parse_size("1920").is_err());
        assert!(parse_size("ax1").is_err());
    }

    #[test]
    fn packed_layouts() {
        let l = FrameLayout::linear(Fourcc::XR24, 640, 480, 1).unwrap();
        assert_eq!(
            l.planes,
            vec![PlaneLayout {
                fd_index: 0,
                offset: 0,
                stride: 2560
            }]
        );
        assert_eq!(l.size, 2560 * 480);
        let l = FrameLayout::linear(Fourcc::RG24, 10, 3, 64).unwrap();
        assert_eq!(l.planes[0].stride, 64);
        assert_eq!(l.plane_row_bytes(0), 30);
        assert_eq!(l.size, 64 * 3);
        assert_eq!(l.plane_span(0), 64 * 2 + 30);
        let l = FrameLayout::linear(Fourcc::YUYV, 6, 2, 1).unwrap();
        assert_eq!(l.planes[0].stride, 12);
        assert_eq!(l.size, 24);
    }

    #[test]
    fn nv12_layout() {
        let l = FrameLayout::linear(Fourcc::NV12, 1920, 1080, 128).unwrap();
        assert_eq!(l.planes.len(), 2);
        assert_eq!(
            l.planes[0],
            PlaneLayout {
                fd_index: 0,
                offset: 0,
                stride: 1920
            }
        );
        assert_eq!(
            l.planes[1],
            PlaneLayout {
                fd_index: 0,
                offset: 1920 * 1080,
                stride: 1920
            }
        );
        assert_eq!(l.plane_rows(1), 540);
        assert_eq!(l.size, 1920 * 1080 * 3 / 2);
        let l = FrameLayout::linear(Fourcc::NV12, 100, 10, 64).unwrap();
        assert_eq!(l.planes[0].stride, 128);
        assert_eq!(l.planes[1].offset, 1280);
        assert_eq!(l.size, 1280 + 128 * 5);
        l.validate().unwrap();
    }

    #[test]
    fn camera_yuv_layouts() {
        let l = FrameLayout::linear(Fourcc::YU12, 64, 48, 1).unwrap();
        assert_eq!(l.planes().len(), 3);
        assert_eq!(l.planes()[1].offset, 64 * 48);
        assert_eq!(l.planes()[1].stride, 32);
        assert_eq!(l.planes()[2].offset, 64 * 48 + 32 * 24);
        assert_eq!(l.size(), 64 * 48 * 3 / 2);
        let l = FrameLayout::linear(Fourcc::NV16, 64, 3, 1).unwrap();
        assert_eq!(l.plane_rows(1), 3, "4:2:2: a chroma row per image row");
        assert_eq!(l.size(), 64 * 3 * 2);
        let l = FrameLayout::linear(Fourcc::P010, 64, 48, 1).unwrap();
        assert_eq!(l.planes()[0].stride, 128);
        assert_eq!(l.planes()[1].stride, 128);
        assert_eq!(l.size(), 128 * 48 + 128 * 24);
        assert_eq!(
            FrameLayout::linear(Fourcc::NV21, 64, 48, 1).unwrap().size(),
            64 * 72
        );
        assert_eq!("I420".parse::<Fourcc>().unwrap(), Fourcc::YU12);
        assert_eq!(Fourcc::YU12.0, 0x3231_5559, "matches DRM_FORMAT_YUV420");
        assert_eq!(Fourcc::P010.0, 0x3031_3050, "matches DRM_FORMAT_P010");
        assert!(FrameLayout::linear(Fourcc::NV16, 63, 2, 1).is_err());
    }

    #[test]
    fn bad_dimensions_rejected() {
        assert!(FrameLayout::linear(Fourcc::NV12, 641, 480, 1).is_err());
        assert!(FrameLayout::linear(Fourcc::NV12, 640, 481, 1).is_err());
        assert!(FrameLayout::linear(Fourcc::YUYV, 3, 2, 1).is_err());
        assert!(FrameLayout::linear(Fourcc::XR24, 0, 2, 1).is_err());
        assert!(FrameLayout::linear(Fourcc::XR24, 20000, 2, 1).is_err());
        assert_eq!(
            FrameLayout::linear(Fourcc::XR24, 2, 2, 3),
            Err(FormatError::BadAlignment(3))
        );
        assert_eq!(
            FrameLayout::linear(Fourcc(code(b"ABCD")), 2, 2, 1),
            Err(FormatError::Unsupported(Fourcc(code(b"ABCD"))))
        );
    }

    #[test]
    fn validate_rejects_bad_planes() {
        let good = FrameLayout::linear(Fourcc::NV12, 64, 32, 64).unwrap();
        good.validate().unwrap();

        let mut l = good.clone();
        l.planes[1].offset = l.size; // chroma past the end
        assert!(matches!(
            l.validate(),
            Err(FormatError::BadPlane { plane: 1, .. })
        ));

        let mut l = good.clone();
        l.planes[0].stride = 10; // narrower than a row
        assert!(matches!(
            l.validate(),
            Err(FormatError::BadPlane { plane: 0, .. })
        ));

        let mut l = good.clone();
        l.planes.pop();
        assert!(matches!(
            l.validate(),
            Err(FormatError::PlaneCount {
                want: 2,
                got: 1,
                ..
            })
        ));

        let mut l = good.clone();
        l.planes[1].fd_index = 2; // skips fd 1
        assert!(l.validate().is_err());

        let mut l = good.clone();
        l.planes[0].offset = u64::MAX - 10;
        assert!(l.validate().is_err());

        let mut l = good.clone();
        l.size -= 1;
        assert!(l.validate().is_err());
    }

    #[test]
    fn fits_checks_memory_size() {
        let l = FrameLayout::linear(Fourcc::XR24, 64, 64, 1).unwrap();
        l.check_fits(0, l.size).unwrap();
        l.check_fits(0, l.size + 4096).unwrap();
        assert!(
            matches!(l.check_fits(0, l.size - 1), Err(FormatError::TooSmall { need, .. }) if need == l.size)
        );
        // Two-fd NV12: chroma in its own memory object at offset 0.
        let mut l = FrameLayout::linear(Fourcc::NV12, 64, 64, 1).unwrap();
        l.planes[1] = PlaneLayout {
            fd_index: 1,
            offset: 0,
            stride: 64,
        };
        l.size = 64 * 64;
        l.validate().unwrap();
        assert_eq!(l.fd_count(), 2);
        assert_eq!(l.required_size(1), 64 * 32);
        assert!(l.check_fits(1, 64 * 32 - 1).is_err());
    }
}
