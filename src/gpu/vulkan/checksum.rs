//! The frame checksum the compute shaders compute, defined once here for the CPU side (the GPU
//! side is `shaders/common.glsl`; the two must agree):
//!
//! - `word(p, r, i)`: the little-endian u32 of bytes `[4i, 4i+4)` of the visible bytes of row `r`
//!   of plane `p` (width × bytes per pixel; stride padding excluded), zero-padded past the end
//!   (RG24 rows are not a whole number of words);
//! - `row_sum(p, r) = Σ_i (2i + 1) · word(p, r, i)` (wrapping u32);
//! - `g(p, r)`: the global row index, `r` for plane 0, `rows(plane 0) + r` for plane 1 and
//!   `rows(plane 0) + rows(plane 1) + r` for plane 2;
//! - `checksum = Σ_(p, r) (2·g(p, r) + 1) · row_sum(p, r)` (wrapping u32).
//!
//! Odd weights make every single-byte change visible (an odd number is invertible mod 2³²), and
//! position weights catch words or rows in the wrong place. Frames made from a few shared row
//! templates (the generator's) cost one pass per distinct row plus a multiply-add per row
//! ([`row_sums`] sums each distinct slice once).

use crate::format::FrameLayout;

/// `row_sum` of one row's visible bytes.
pub fn row_sum(bytes: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = bytes.chunks_exact(4);
    let mut i = 0u32;
    for c in &mut chunks {
        let w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        sum = sum.wrapping_add((2 * i + 1).wrapping_mul(w));
        i += 1;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 4];
        b[..rest.len()].copy_from_slice(rest);
        sum = sum.wrapping_add((2 * i + 1).wrapping_mul(u32::from_le_bytes(b)));
    }
    sum
}

/// Folds per-row sums (indexed by global row) into the frame checksum.
pub fn fold(row_sums: &[u32]) -> u32 {
    row_sums.iter().enumerate().fold(0u32, |acc, (g, s)| {
        acc.wrapping_add((2 * g as u32 + 1).wrapping_mul(*s))
    })
}

/// Rows of each plane, in global-row order (the shaders handle up to three planes).
pub fn plane_rows(layout: &FrameLayout) -> Vec<u32> {
    (0..layout.planes().len())
        .map(|p| layout.plane_rows(p))
        .collect()
}

/// The per-row sums of a frame of `layout` whose rows `row(plane, row)` returns (visible bytes
/// only), indexed by global row. Rows that are the same slice (same address and length) are
/// summed once.
pub fn row_sums<'a>(layout: &FrameLayout, row: impl Fn(usize, u32) -> &'a [u8]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cache: Vec<(*const u8, usize, u32)> = Vec::new();
    for (p, rows) in plane_rows(layout).into_iter().enumerate() {
        for r in 0..rows {
            let bytes = row(p, r);
            let key = (bytes.as_ptr(), bytes.len());
            let s = match cache.iter().find(|c| (c.0, c.1) == key) {
                Some(c) => c.2,
                None => {
                    let s = row_sum(bytes);
                    cache.push((key.0, key.1, s));
                    s
                }
            };
            out.push(s);
        }
    }
    out
}

/// The checksum of a frame of `layout` whose rows `row(plane, row)` returns.
pub fn checksum<'a>(layout: &FrameLayout, row: impl Fn(usize, u32) -> &'a [u8]) -> u32 {
    fold(&row_sums(layout, row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Fourcc;

    #[test]
    fn row_sum_weights_words_and_pads() {
        assert_eq!(row_sum(&[]), 0);
        assert_eq!(row_sum(&[1, 0, 0, 0]), 1);
        assert_eq!(row_sum(&[1, 0, 0, 0, 1, 0, 0, 0]), 1 + 3);
        // Three bytes: one zero-padded word.
        assert_eq!(row_sum(&[1, 2, 3]), 0x0003_0201);
        // Five bytes: the second word is 0x000000ff with weight 3.
        assert_eq!(row_sum(&[0, 0, 0, 0, 0xff]), 3 * 0xff);
    }

    #[test]
    fn every_single_byte_change_is_seen() {
        let row: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let base = row_sum(&row);
        for pos in (0..row.len()).step_by(97).chain([1023, 2047, 2999]) {
            for delta in [1u8, 0x80, 0xff] {
                let mut r = row.clone();
                r[pos] = r[pos].wrapping_add(delta);
                assert_ne!(row_sum(&r), base, "byte {pos} +{delta}");
            }
        }
        // Swapped rows change the fold.
        assert_ne!(fold(&[1, 2, 3]), fold(&[2, 1, 3]));
    }

    #[test]
    fn shared_rows_sum_like_distinct_ones() {
        let layout = FrameLayout::linear(Fourcc::NV12, 66, 20, 64).unwrap();
        let a: Vec<u8> = (0..66u32).map(|i| (i * 3) as u8).collect();
        let b: Vec<u8> = (0..66u32).map(|i| (i * 5 + 1) as u8).collect();
        // Row r of plane p: a shared slice for even rows, a distinct copy for odd ones.
        let odd: Vec<Vec<u8>> = (0..30).map(|_| b.clone()).collect();
        let row = |p: usize, r: u32| -> &[u8] {
            if r % 2 == 0 {
                &a
            } else {
                &odd[(p * 20 + r as usize) % odd.len()]
            }
        };
        let direct: Vec<u32> = plane_rows(&layout)
            .into_iter()
            .enumerate()
            .flat_map(|(p, rows)| (0..rows).map(move |r| (p, r)))
            .map(|(p, r)| row_sum(row(p, r)))
            .collect();
        assert_eq!(row_sums(&layout, row), direct);
        assert_eq!(checksum(&layout, row), fold(&direct));
    }
}
