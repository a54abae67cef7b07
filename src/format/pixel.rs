//! Pixel and colour math on the CPU: the one place that knows how each format's bytes become
//! RGB (integer BT.601 limited range for YUV, the same arithmetic as `shaders/common.glsl`), so
//! that the PNG writer, the display's conversion check and the writeback verification agree.

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
        let uv = (layout.fourcc == Fourcc::NV12).then(|| row(1, (y / 2) as u32));
        for x in 0..w {
            let px: [u8; 3] = match layout.fourcc {
                Fourcc::XR24 | Fourcc::AR24 => [r[x * 4 + 2], r[x * 4 + 1], r[x * 4]],
                Fourcc::XB24 | Fourcc::AB24 => [r[x * 4], r[x * 4 + 1], r[x * 4 + 2]],
                Fourcc::RG24 => [r[x * 3 + 2], r[x * 3 + 1], r[x * 3]],
                Fourcc::YUYV => yuv_to_rgb(r[x * 2], r[(x & !1) * 2 + 1], r[(x & !1) * 2 + 3]),
                Fourcc::UYVY => yuv_to_rgb(r[x * 2 + 1], r[(x & !1) * 2], r[(x & !1) * 2 + 2]),
                Fourcc::NV12 => {
                    let uv = uv.unwrap_or_default();
                    yuv_to_rgb(r[x], uv[x & !1], uv[(x & !1) + 1])
                }
                _ => [0, 0, 0],
            };
            out.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
    }
    out
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
}
