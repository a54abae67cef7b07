//! The software generator: SMPTE-style bars, a moving box, or a solid colour, in every supported
//! format, with the frame's sequence number stamped into its top rows as black/white cells.
//!
//! A frame is a pure function of (pattern, format, size, sequence). [`Scene::frame`] describes it
//! row by row: rows fall into a handful of distinct contents (bands × box × stamp), so the row
//! templates are built once per frame, written with one copy per row, and compared with one
//! `memcmp` per row by the verifier — no per-pixel work on either side. The generator rewrites only
//! the rows that changed since it last filled the same buffer.

use std::cell::OnceCell;
use std::collections::HashMap;

use crate::buffer::{CpuAccess, PixelRows};
use crate::format::{Fourcc, FrameLayout};

/// An 8-bit RGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// BT.601 limited-range Y, Cb, Cr.
    pub fn yuv(self) -> (u8, u8, u8) {
        let (r, g, b) = (self.0 as i32, self.1 as i32, self.2 as i32);
        let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
        let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
        let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
        (
            y.clamp(0, 255) as u8,
            u.clamp(0, 255) as u8,
            v.clamp(0, 255) as u8,
        )
    }
}

/// What the generator draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// SMPTE-style colour bars (75% bars, castellations, bottom strip).
    Bars,
    /// A coloured box bouncing over a dark background.
    MovingBox,
    /// One colour.
    Solid(Rgb),
}

impl std::str::FromStr for Pattern {
    type Err = String;
    /// `bars`, `box`, `solid` (grey) or `solid:RRGGBB`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bars" | "smpte" => Ok(Pattern::Bars),
            "box" | "moving-box" => Ok(Pattern::MovingBox),
            "solid" => Ok(Pattern::Solid(Rgb(128, 128, 128))),
            _ => {
                let hex = s
                    .strip_prefix("solid:")
                    .ok_or_else(|| format!("unknown pattern {s:?} (bars, box, solid[:RRGGBB])"))?;
                let v = u32::from_str_radix(hex.trim_start_matches('#'), 16)
                    .map_err(|_| format!("bad colour {hex:?}"))?;
                Ok(Pattern::Solid(Rgb(
                    (v >> 16) as u8,
                    (v >> 8) as u8,
                    v as u8,
                )))
            }
        }
    }
}

const WHITE: Rgb = Rgb(235, 235, 235);
const BLACK: Rgb = Rgb(16, 16, 16);
const BARS: [Rgb; 7] = [
    Rgb(191, 191, 191),
    Rgb(191, 191, 0),
    Rgb(0, 191, 191),
    Rgb(0, 191, 0),
    Rgb(191, 0, 191),
    Rgb(191, 0, 0),
    Rgb(0, 0, 191),
];
const CASTELLATIONS: [Rgb; 7] = [
    Rgb(0, 0, 191),
    Rgb(19, 19, 19),
    Rgb(191, 0, 191),
    Rgb(19, 19, 19),
    Rgb(0, 191, 191),
    Rgb(19, 19, 19),
    Rgb(191, 191, 191),
];
const BOTTOM: [Rgb; 4] = [
    Rgb(0, 33, 76),
    Rgb(255, 255, 255),
    Rgb(50, 0, 106),
    Rgb(19, 19, 19),
];
const BOX_COLOURS: [Rgb; 6] = [
    Rgb(255, 64, 64),
    Rgb(64, 255, 64),
    Rgb(64, 64, 255),
    Rgb(255, 255, 64),
    Rgb(64, 255, 255),
    Rgb(255, 64, 255),
];
const BOX_BACKGROUND: Rgb = Rgb(32, 40, 48);

/// Rows taken by the sequence stamp at the top of every frame.
pub const STAMP_ROWS: u32 = 8;

/// A horizontal run of one colour, `[x0, x1)`.
type Segment = (u32, u32, Rgb);

/// The fixed geometry of a generated stream: pattern, format and size.
#[derive(Debug, Clone)]
pub struct Scene {
    pattern: Pattern,
    fourcc: Fourcc,
    width: u32,
    height: u32,
    vsubs: Vec<u32>,
    bands: Vec<(u32, Vec<Segment>)>, // (first row, segments), sorted by first row
    box_size: u32,
    stamp_rows: u32,
    cell_width: u32,
    stamp_bits: u32,
}

fn even(v: u32) -> u32 {
    v & !1
}

impl Scene {
    /// The scene for frames of `layout`'s format and size.
    pub fn new(pattern: Pattern, layout: &FrameLayout) -> Scene {
        let (w, h) = (layout.width(), layout.height());
        let split = |n: usize| -> Vec<u32> {
            (0..=n)
                .map(|i| {
                    if i == n {
                        w
                    } else {
                        even(i as u32 * w / n as u32)
                    }
                })
                .collect()
        };
        let segs = |colours: &[Rgb]| -> Vec<Segment> {
            let xs = split(colours.len());
            colours
                .iter()
                .enumerate()
                .map(|(i, c)| (xs[i], xs[i + 1], *c))
                .filter(|s| s.0 < s.1)
                .collect()
        };
        let bands = match pattern {
            Pattern::Bars => vec![
                (0, segs(&BARS)),
                (even(h * 2 / 3), segs(&CASTELLATIONS)),
                (even(h * 3 / 4), segs(&BOTTOM)),
            ],
            Pattern::MovingBox => vec![(0, vec![(0, w, BOX_BACKGROUND)])],
            Pattern::Solid(c) => vec![(0, vec![(0, w, c)])],
        };
        let cell_width = even(w / 64).max(2);
        // The box fits the frame: even (for chroma subsampling) where the frame allows, at
        // most the smaller side (a frame 1 pixel wide has a 1-pixel box).
        let box_size = even(w.min(h) / 6).max(2).min(w.min(h));
        Scene {
            pattern,
            fourcc: layout.fourcc(),
            width: w,
            height: h,
            vsubs: layout.info().planes.iter().map(|p| p.vsub).collect(),
            bands,
            box_size,
            stamp_rows: STAMP_ROWS.min(h),
            cell_width,
            stamp_bits: (w / cell_width).min(64),
        }
    }

    /// The pattern.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// The box `(x, y, size)` of frame `seq`, for patterns that have one.
    pub fn box_at(&self, seq: u64) -> Option<(u32, u32, u32)> {
        if self.pattern != Pattern::MovingBox {
            return None;
        }
        let tri = |step: u64, range: u32| -> u32 {
            if range == 0 {
                return 0;
            }
            let period = 2 * range as u64;
            let p = (seq.wrapping_mul(step)) % period;
            even(if p < range as u64 {
                p as u32
            } else {
                (period - p) as u32
            })
        };
        let s = self.box_size;
        Some((
            tri(even(self.width / 97).max(2) as u64, self.width - s),
            tri(even(self.height / 89).max(2) as u64, self.height - s),
            s,
        ))
    }

    /// The description of frame `seq`.
    pub fn frame(&self, seq: u64) -> FrameSpec<'_> {
        let box_rect = self.box_at(seq);
        FrameSpec {
            scene: self,
            seq,
            box_rect,
            box_colour: BOX_COLOURS[(seq % BOX_COLOURS.len() as u64) as usize],
            templates: (0..self.bands.len() * 4 * self.vsubs.len())
                .map(|_| OnceCell::new())
                .collect(),
        }
    }

    /// Reads the sequence number back from a frame's stamp (the low bits the stamp holds), or
    /// `None` if the stamp rows do not look like a stamp. Used to name a stale frame in errors.
    pub fn decode_stamp(&self, access: &impl PixelRows) -> Option<u64> {
        let mut seq = 0u64;
        // Luma (or RGB) of the middle of each cell on row 0 of plane 0.
        let row = access.row(0, 0);
        let frame = self.frame(0);
        let white = frame.pixel_luma(WHITE);
        let black = frame.pixel_luma(BLACK);
        for bit in 0..self.stamp_bits {
            let x = bit * self.cell_width + self.cell_width / 2;
            let v = frame.luma_at(row, x)?;
            if v.abs_diff(white) <= 8 {
                seq |= 1 << bit;
            } else if v.abs_diff(black) > 8 {
                return None;
            }
        }
        Some(seq)
    }
}

/// One frame's contents, as row templates built on first use.
pub struct FrameSpec<'s> {
    scene: &'s Scene,
    seq: u64,
    box_rect: Option<(u32, u32, u32)>,
    box_colour: Rgb,
    templates: Vec<OnceCell<Vec<u8>>>,
}

/// Where a frame differs from what the generator would have drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame {seq}: plane {plane} row {row} byte {byte} differs (got 0x{got:02x}, want 0x{want:02x}){}", stale_note(.stamp_seq, *.seq))]
pub struct Mismatch {
    /// The frame expected.
    pub seq: u64,
    /// Plane.
    pub plane: usize,
    /// Row within the plane.
    pub row: u32,
    /// Byte within the row.
    pub byte: usize,
    /// What was there.
    pub got: u8,
    /// What should be.
    pub want: u8,
    /// The sequence number the stamp holds, if it decodes.
    pub stamp_seq: Option<u64>,
}

fn stale_note(stamp: &Option<u64>, seq: u64) -> String {
    match stamp {
        Some(s) if *s != seq => format!("; its stamp says frame {s}: stale or misrouted buffer"),
        _ => String::new(),
    }
}

impl FrameSpec<'_> {
    /// The sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Which template image row `y` uses: (band, inside the box, inside the stamp).
    fn key(&self, y: u32) -> (usize, bool, bool) {
        let band = self
            .scene
            .bands
            .iter()
            .rposition(|(first, _)| *first <= y)
            .unwrap_or(0);
        let in_box = self
            .box_rect
            .is_some_and(|(_, by, s)| y >= by && y < by + s);
        (band, in_box, y < self.scene.stamp_rows)
    }

    /// The pixel bytes of row `row` of plane `plane` (no stride padding).
    pub fn row(&self, plane: usize, row: u32) -> &[u8] {
        let y = row * self.scene.vsubs[plane];
        let (band, in_box, in_stamp) = self.key(y);
        let idx =
            ((plane * self.scene.bands.len() + band) * 2 + in_box as usize) * 2 + in_stamp as usize;
        self.templates[idx].get_or_init(|| self.build_row(plane, band, in_box, in_stamp))
    }

    fn segments(&self, band: usize, in_box: bool, in_stamp: bool) -> Vec<Segment> {
        let mut segs = self.scene.bands[band].1.clone();
        let mut overlay = |x0: u32, x1: u32, c: Rgb| {
            let mut out = Vec::with_capacity(segs.len() + 2);
            for &(a, b, col) in &segs {
                if b <= x0 || a >= x1 {
                    out.push((a, b, col));
                } else {
                    if a < x0 {
                        out.push((a, x0, col));
                    }
                    if b > x1 {
                        out.push((x1, b, col));
                    }
                }
            }
            out.push((x0, x1, c));
            out.sort_by_key(|s| s.0);
            segs = out;
        };
        if in_box {
            if let Some((bx, _, s)) = self.box_rect {
                overlay(bx, bx + s, self.box_colour);
            }
        }
        if !in_stamp {
            return segs;
        }
        // The stamp's cells start at x = 0, side by side: one pass puts them in front of what
        // the band has right of them (rebuilt every frame, so no sort or allocation per cell).
        let cw = self.scene.cell_width;
        let end = self.scene.stamp_bits * cw;
        let mut out = Vec::with_capacity(self.scene.stamp_bits as usize + segs.len());
        out.extend((0..self.scene.stamp_bits).map(|bit| {
            let on = self.seq >> bit & 1 == 1;
            (bit * cw, (bit + 1) * cw, if on { WHITE } else { BLACK })
        }));
        out.extend(
            segs.into_iter()
                .filter(|&(_, b, _)| b > end)
                .map(|(a, b, col)| (a.max(end), b, col)),
        );
        out
    }

    fn build_row(&self, plane: usize, band: usize, in_box: bool, in_stamp: bool) -> Vec<u8> {
        let segs = self.segments(band, in_box, in_stamp);
        let w = self.scene.width as usize;
        let f = self.scene.fourcc;
        let mut out = Vec::with_capacity(w * 4);
        for (x0, x1, c) in segs {
            let n = (x1 - x0) as usize;
            let (y, u, v) = c.yuv();
            match (f, plane) {
                (Fourcc::XR24 | Fourcc::AR24, _) => {
                    (0..n).for_each(|_| out.extend_from_slice(&[c.2, c.1, c.0, 0xff]))
                }
                (Fourcc::XB24 | Fourcc::AB24, _) => {
                    (0..n).for_each(|_| out.extend_from_slice(&[c.0, c.1, c.2, 0xff]))
                }
                (Fourcc::RG24, _) => (0..n).for_each(|_| out.extend_from_slice(&[c.2, c.1, c.0])),
                (Fourcc::YUYV, _) => (0..n / 2).for_each(|_| out.extend_from_slice(&[y, u, y, v])),
                (Fourcc::UYVY, _) => (0..n / 2).for_each(|_| out.extend_from_slice(&[u, y, v, y])),
                (Fourcc::NV12 | Fourcc::NV21 | Fourcc::NV16 | Fourcc::YU12, 0) => {
                    out.extend(std::iter::repeat_n(y, n))
                }
                (Fourcc::NV12 | Fourcc::NV16, _) => {
                    (0..n / 2).for_each(|_| out.extend_from_slice(&[u, v]))
                }
                (Fourcc::NV21, _) => (0..n / 2).for_each(|_| out.extend_from_slice(&[v, u])),
                (Fourcc::YU12, 1) => out.extend(std::iter::repeat_n(u, n / 2)),
                (Fourcc::YU12, _) => out.extend(std::iter::repeat_n(v, n / 2)),
                // 10-bit samples (the 8-bit value << 2) in the high bits of little-endian u16s.
                (Fourcc::P010, 0) => (0..n).for_each(|_| out.extend_from_slice(&[0, y])),
                (Fourcc::P010, _) => (0..n / 2).for_each(|_| out.extend_from_slice(&[0, u, 0, v])),
                _ => unreachable!("Scene is only built for supported formats"),
            }
        }
        out
    }

    fn pixel_luma(&self, c: Rgb) -> u8 {
        if self.scene.fourcc.is_yuv() {
            c.yuv().0
        } else {
            c.1
        }
    }

    /// Luma (YUV) or green (RGB) of pixel x in a plane-0 row.
    fn luma_at(&self, row: &[u8], x: u32) -> Option<u8> {
        let x = x as usize;
        match self.scene.fourcc {
            Fourcc::XR24 | Fourcc::AR24 | Fourcc::XB24 | Fourcc::AB24 => {
                row.get(x * 4 + 1).copied()
            }
            Fourcc::RG24 => row.get(x * 3 + 1).copied(),
            Fourcc::YUYV => row.get(x * 2).copied(),
            Fourcc::UYVY => row.get(x * 2 + 1).copied(),
            Fourcc::NV12 | Fourcc::NV21 | Fourcc::NV16 | Fourcc::YU12 => row.get(x).copied(),
            Fourcc::P010 => row.get(x * 2 + 1).copied(),
            _ => None,
        }
    }

    /// Image rows whose contents can differ between this frame and frame `other` (stamp and box
    /// rows of both), as sorted, merged `[first, end)` ranges.
    pub fn rows_differing_from(&self, other: u64) -> Vec<(u32, u32)> {
        let mut ranges = vec![(0, self.scene.stamp_rows)];
        for b in [self.box_rect, self.scene.box_at(other)]
            .into_iter()
            .flatten()
        {
            ranges.push((b.1, b.1 + b.2));
        }
        ranges.sort();
        let mut merged: Vec<(u32, u32)> = Vec::new();
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.0 <= last.1 => last.1 = last.1.max(r.1),
                _ => merged.push(r),
            }
        }
        merged
    }

    /// Writes image rows `[y0, y1)` (all planes) into a buffer.
    pub fn write_rows(&self, access: &mut CpuAccess<'_>, y0: u32, y1: u32) {
        for (plane, &vsub) in self.scene.vsubs.iter().enumerate() {
            for r in y0.div_ceil(vsub)..y1.div_ceil(vsub) {
                access.row_mut(plane, r).copy_from_slice(self.row(plane, r));
            }
        }
    }

    /// Compares every pixel byte of a buffer with this frame.
    pub fn verify(&self, access: &impl PixelRows) -> Result<(), Mismatch> {
        for plane in 0..self.scene.vsubs.len() {
            for r in 0..self.scene.height / self.scene.vsubs[plane] {
                let (got, want) = (access.row(plane, r), self.row(plane, r));
                if got != want {
                    let byte = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                    return Err(Mismatch {
                        seq: self.seq,
                        plane,
                        row: r,
                        byte,
                        got: got[byte],
                        want: want[byte],
                        stamp_seq: self.scene.decode_stamp(access),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Fills buffers with frames of a [`Scene`], rewriting only what changed since the same buffer
/// last held a frame.
#[derive(Debug)]
pub struct Generator {
    scene: Scene,
    last_written: HashMap<u32, u64>,
}

impl Generator {
    /// A generator of `pattern` frames in `layout`'s format and size.
    pub fn new(pattern: Pattern, layout: &FrameLayout) -> Self {
        Generator {
            scene: Scene::new(pattern, layout),
            last_written: HashMap::new(),
        }
    }

    /// The scene.
    pub fn scene(&self) -> &Scene {
        &self.scene
    }

    /// Draws frame `seq` into buffer `buffer_id` (whose mapping `access` is).
    pub fn fill(&mut self, buffer_id: u32, access: &mut CpuAccess<'_>, seq: u64) {
        let frame = self.scene.frame(seq);
        match self.last_written.insert(buffer_id, seq) {
            Some(prev) => {
                for (y0, y1) in frame.rows_differing_from(prev) {
                    frame.write_rows(access, y0, y1);
                }
            }
            None => frame.write_rows(access, 0, self.scene.height),
        }
    }

    /// Forgets what a buffer holds (it was removed, or someone else wrote it).
    pub fn forget(&mut self, buffer_id: u32) {
        self.last_written.remove(&buffer_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::{memfd::MemfdAllocator, Allocator};
    use crate::buffer::Access;

    fn patterns() -> [Pattern; 3] {
        [
            Pattern::Bars,
            Pattern::MovingBox,
            Pattern::Solid(Rgb(10, 200, 30)),
        ]
    }

    #[test]
    fn every_format_and_pattern_verifies_after_incremental_fills() {
        let mut alloc = MemfdAllocator::new();
        for fourcc in Fourcc::ALL {
            for pattern in patterns() {
                let layout = FrameLayout::linear(fourcc, 132, 70, 64).unwrap();
                let buffer = alloc.allocate(&layout).unwrap();
                let mut map = buffer.map(true).unwrap();
                let mut gen = Generator::new(pattern, &layout);
                for seq in [0, 1, 2, 3, 40, 41, 1000, u64::MAX / 3] {
                    let mut a = map.access(Access::ReadWrite).unwrap();
                    gen.fill(7, &mut a, seq);
                    gen.scene()
                        .frame(seq)
                        .verify(&a)
                        .unwrap_or_else(|m| panic!("{fourcc} {pattern:?}: {m}"));
                    let mask = u64::MAX >> (64 - gen.scene().stamp_bits);
                    assert_eq!(gen.scene().decode_stamp(&a), Some(seq & mask));
                }
            }
        }
    }

    #[test]
    fn incremental_fill_equals_fresh_fill() {
        let mut alloc = MemfdAllocator::new();
        let layout = FrameLayout::linear(Fourcc::NV12, 320, 240, 64).unwrap();
        let (a, b) = (
            alloc.allocate(&layout).unwrap(),
            alloc.allocate(&layout).unwrap(),
        );
        let (mut ma, mut mb) = (a.map(true).unwrap(), b.map(true).unwrap());
        let mut gen = Generator::new(Pattern::MovingBox, &layout);
        for seq in 0..30 {
            gen.fill(0, &mut ma.access(Access::Write).unwrap(), seq);
        }
        gen.fill(1, &mut mb.access(Access::Write).unwrap(), 29);
        let (xa, xb) = (
            ma.access(Access::Read).unwrap(),
            mb.access(Access::Read).unwrap(),
        );
        for plane in 0..2 {
            for r in 0..layout.plane_rows(plane) {
                assert_eq!(xa.row(plane, r), xb.row(plane, r), "plane {plane} row {r}");
            }
        }
    }

    #[test]
    fn consecutive_frames_differ_and_stale_frames_are_named() {
        let mut alloc = MemfdAllocator::new();
        let layout = FrameLayout::linear(Fourcc::XR24, 640, 480, 256).unwrap();
        let buffer = alloc.allocate(&layout).unwrap();
        let mut map = buffer.map(true).unwrap();
        let mut gen = Generator::new(Pattern::Bars, &layout);
        gen.fill(0, &mut map.access(Access::Write).unwrap(), 5);
        let a = map.access(Access::Read).unwrap();
        let err = gen.scene().frame(6).verify(&a).unwrap_err();
        assert_eq!(err.stamp_seq, Some(5));
        assert!(err.to_string().contains("stamp says frame 5"), "{err}");
    }

    #[test]
    fn corruption_is_caught_at_the_right_place() {
        let mut alloc = MemfdAllocator::new();
        let layout = FrameLayout::linear(Fourcc::YUYV, 64, 32, 1).unwrap();
        let buffer = alloc.allocate(&layout).unwrap();
        let mut map = buffer.map(true).unwrap();
        let mut gen = Generator::new(Pattern::MovingBox, &layout);
        let mut a = map.access(Access::ReadWrite).unwrap();
        gen.fill(0, &mut a, 9);
        a.row_mut(0, 20)[17] ^= 0x40;
        let m = gen.scene().frame(9).verify(&a).unwrap_err();
        assert_eq!((m.plane, m.row, m.byte), (0, 20, 17));
    }

    #[test]
    fn a_stamp_row_is_the_cells_then_the_band_as_below_the_stamp() {
        // 1000 wide: 64 cells of 14 pixels end at 896, inside a bar that goes on past them.
        let layout = FrameLayout::linear(Fourcc::XR24, 1000, 60, 64).unwrap();
        let scene = Scene::new(Pattern::Bars, &layout);
        let cw = scene.cell_width as usize;
        let end = scene.stamp_bits as usize * cw;
        assert_eq!((cw, end), (14, 896));
        for seq in [0, 1, 0xa5a5_5a5a_0ff0_f00f, u64::MAX] {
            let frame = scene.frame(seq);
            let (stamp, below) = (frame.row(0, 0), frame.row(0, scene.stamp_rows));
            assert_eq!(stamp[end * 4..], below[end * 4..], "frame {seq:#x}");
            for bit in 0..scene.stamp_bits as usize {
                let want = if seq >> bit & 1 == 1 { WHITE } else { BLACK };
                let cell = &stamp[bit * cw * 4..(bit + 1) * cw * 4];
                let px = [want.2, want.1, want.0, 0xff];
                assert!(cell.chunks(4).all(|p| p == px), "frame {seq:#x} bit {bit}");
            }
        }
    }

    #[test]
    fn tiny_frames_generate_and_verify() {
        // A 1-pixel-wide frame once made a 2-pixel box (and a panic in write_rows).
        let mut alloc = MemfdAllocator::new();
        for fourcc in Fourcc::ALL {
            for (w, h) in [(1, 1), (1, 9), (9, 1), (2, 2), (3, 2), (2, 1), (1, 2)] {
                let Ok(layout) = FrameLayout::linear(fourcc, w, h, 1) else {
                    continue; // a size the format cannot have (odd width for YUYV, …)
                };
                let buffer = alloc.allocate(&layout).unwrap();
                let mut map = buffer.map(true).unwrap();
                for pattern in patterns() {
                    let mut gen = Generator::new(pattern, &layout);
                    for seq in [0, 1, 2, 77] {
                        let mut a = map.access(Access::ReadWrite).unwrap();
                        gen.fill(0, &mut a, seq);
                        gen.scene()
                            .frame(seq)
                            .verify(&a)
                            .unwrap_or_else(|m| panic!("{fourcc} {w}x{h} {pattern:?}: {m}"));
                    }
                }
            }
        }
    }

    #[test]
    fn yuv_conversion_matches_bt601_limited_range() {
        assert_eq!(Rgb(0, 0, 0).yuv(), (16, 128, 128));
        assert_eq!(Rgb(255, 255, 255).yuv(), (235, 128, 128));
        let (y, u, v) = Rgb(255, 0, 0).yuv();
        assert_eq!((y, u, v), (82, 90, 240));
    }

    #[test]
    fn patterns_parse() {
        assert_eq!("bars".parse::<Pattern>().unwrap(), Pattern::Bars);
        assert_eq!("box".parse::<Pattern>().unwrap(), Pattern::MovingBox);
        assert_eq!(
            "solid:ff8000".parse::<Pattern>().unwrap(),
            Pattern::Solid(Rgb(255, 128, 0))
        );
        assert!("plaid".parse::<Pattern>().is_err());
    }
}
