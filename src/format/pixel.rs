//! Pixel and colour math on the CPU: the one place that knows how each format's bytes become
//! RGB (integer BT.601 limited range for YUV, the same arithmetic as `shaders/common.glsl`), so
//! that the PNG writer, the display's conversion check and the writeback verification agree;
//! and the pixel-exact comparison of a picture with an XR24 capture of it.

use super::{Fourcc, FrameLayout};

/// One YUV sample to RGB, integer BT.601 limited range (as the compute shaders do it).
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (y as i32 - 16) * 298;
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [
        clamp(c + 409 * e),
        clamp(c - 100 * d - 208 * e),
        clamp(c + 516 * d),
    ]
}

/// Converts a frame to tightly packed RGBA8, reading its rows through `row(plane, y)` (which
/// returns that row's pixel bytes, padding excluded). Formats it does not know come out black.
pub fn to_rgba<'a>(layout: &FrameLayout, row: impl Fn(usize, u32) -> &'a [u8]) -> Vec<u8> {
    let (w, h) = (layout.width as usize, layout.height as usize);
    let mut out = Vec::with_capacity(w * h * 4);
    for y in 0..h {
        let r = row(0, y as u32);
        let info = layout.info();
        // The chroma rows of image row y (semi-planar: one, planar: two).
        let chroma = |p: usize| {
            info.planes
                .get(p)
                .map(|pi| row(p, y as u32 / pi.vsub))
                .unwrap_or_default()
        };
        let (c1, c2) = (chroma(1), chroma(2));
        for x in 0..w {
            let xe = x & !1;
            let px: [u8; 3] = match layout.fourcc {
                Fourcc::XR24 | Fourcc::AR24 => [r[x * 4 + 2], r[x * 4 + 1], r[x * 4]],
                Fourcc::XB24 | Fourcc::AB24 => [r[x * 4], r[x * 4 + 1], r[x * 4 + 2]],
                Fourcc::RG24 => [r[x * 3 + 2], r[x * 3 + 1], r[x * 3]],
                Fourcc::YUYV => yuv_to_rgb(r[x * 2], r[(x & !1) * 2 + 1], r[(x & !1) * 2 + 3]),
                Fourcc::UYVY => yuv_to_rgb(r[x * 2 + 1], r[(x & !1) * 2], r[(x & !1) * 2 + 2]),
                Fourcc::NV12 | Fourcc::NV16 => yuv_to_rgb(r[x], c1[xe], c1[xe + 1]),
                Fourcc::NV21 => yuv_to_rgb(r[x], c1[xe + 1], c1[xe]),
                Fourcc::YU12 => yuv_to_rgb(r[x], c1[x / 2], c2[x / 2]),
                // The high byte of each 16-bit sample is its top 8 bits.
                Fourcc::P010 => yuv_to_rgb(r[x * 2 + 1], c1[xe * 2 + 1], c1[xe * 2 + 3]),
                _ => [0, 0, 0],
            };
            out.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
    }
    out
}

/// Blue, green and red of pixel `x` in a row of a packed RGB format; `None` for other formats
/// (YUV, which a display may convert its own way) or past the end of the row.
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

/// How a picture differs from an XR24 capture of it ([`compare_bgr`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BgrMismatch {
    /// The picture's format is not packed RGB: it cannot be compared pixel-exact.
    #[error("{0} pictures cannot be compared pixel-exact (a display converts YUV its own way)")]
    NotPackedRgb(Fourcc),
    /// A row is shorter than the picture is wide.
    #[error("row {y} of the {which} is too short")]
    ShortRow {
        /// The row, in the picture.
        y: u32,
        /// `picture` or `capture`.
        which: &'static str,
    },
    /// A pixel differs.
    #[error("pixel ({x}, {y}) is B,G,R {got:?} in the capture, {want:?} in the picture")]
    Pixel {
        /// Column, in the picture.
        x: u32,
        /// Row, in the picture.
        y: u32,
        /// Blue, green, red in the capture.
        got: [u8; 3],
        /// Blue, green, red in the picture.
        want: [u8; 3],
    },
}

/// Compares a `size` picture in packed RGB format `fourcc` (row `y` from `picture(y)`) with an
/// XR24 capture that shows it with its top-left corner at `at` (row `y` from `capture(y)`):
/// blue, green and red of every pixel; X and alpha bytes are not compared.
pub fn compare_bgr<'p, 'c>(
    fourcc: Fourcc,
    size: (u32, u32),
    at: (u32, u32),
    picture: impl Fn(u32) -> &'p [u8],
    capture: impl Fn(u32) -> &'c [u8],
) -> Result<(), BgrMismatch> {
    if bgr_at(fourcc, &[0; 4], 0).is_none() {
        return Err(BgrMismatch::NotPackedRgb(fourcc));
    }
    let ((w, h), (x0, y0)) = (size, at);
    for y in 0..h {
        let (p, c) = (picture(y), capture(y0 + y));
        for x in 0..w {
            let short = |which| BgrMismatch::ShortRow { y, which };
            let want = bgr_at(fourcc, p, x as usize).ok_or(short("picture"))?;
            let got = bgr_at(Fourcc::XR24, c, (x0 + x) as usize).ok_or(short("capture"))?;
            if want != got {
                return Err(BgrMismatch::Pixel { x, y, got, want });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bt601_limited_range_extremes() {
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        // Pure red in BT.601 limited range is (81, 90, 240).
        let [r, g, b] = yuv_to_rgb(81, 90, 240);
        assert!(r >= 254 && g <= 1 && b <= 1, "{r} {g} {b}");
    }

    #[test]
    fn rows_compare_on_colour_channels_only() {
        // A 2x1 picture at (1, 0) of a 3x1 capture.
        let src = [1u8, 2, 3, 0xff, 4, 5, 6, 0xff];
        let cap = [0u8, 0, 0, 0, 1, 2, 3, 0, 4, 5, 6, 0x00];
        let cmp = |f, p: &[u8]| compare_bgr(f, (2, 1), (1, 0), |_| p, |_| &cap[..]);
        cmp(Fourcc::XR24, &src).unwrap();
        cmp(Fourcc::XB24, &[3u8, 2, 1, 0, 6, 5, 4, 0]).unwrap();
        let e = cmp(Fourcc::XR24, &[1u8, 2, 3, 0, 4, 5, 7, 0]).unwrap_err();
        assert_eq!(
            e,
            BgrMismatch::Pixel {
                x: 1,
                y: 0,
                got: [4, 5, 6],
                want: [4, 5, 7]
            }
        );
        assert!(e.to_string().contains("(1, 0)"), "{e}");
        assert_eq!(
            cmp(Fourcc::NV12, &src).unwrap_err(),
            BgrMismatch::NotPackedRgb(Fourcc::NV12)
        );
        assert!(matches!(
            cmp(Fourcc::XR24, &src[..4]).unwrap_err(),
            BgrMismatch::ShortRow {
                y: 0,
                which: "picture"
            }
        ));
    }
}
