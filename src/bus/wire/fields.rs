//! The extensible parts of `Hello` and `Frame`: their tagged fields (see [`super::codec`]).
//! Hello: stream name, generator pattern, consumer policy. Frame: the metadata of
//! [`FrameMeta`]; a frame with default metadata carries no field at all.

use super::codec::{Reader, Writer};
use super::{Hello, Policy, Role, WireError, MAX_FORMATS};
use crate::buffer::KindSet;
use crate::format::{FormatModifier, Fourcc, Modifier};
use crate::meta::{
    self, Clock, Colorimetry, Crop, FrameMeta, Matrix, Primaries, Range, Timestamp, Transfer,
};

const HELLO_STREAM: u16 = 1;
const HELLO_PATTERN: u16 = 2;
const HELLO_POLICY: u16 = 3;

const META_CLOCK: u16 = 1;
const META_SOURCE_SEQ: u16 = 2;
const META_SOURCE_TIME: u16 = 3;
const META_CROP: u16 = 4;
const META_COLORIMETRY: u16 = 5;
const META_CORRUPT: u16 = 6;
const META_BYTES_USED: u16 = 7;
const META_KEY_VALUE: u16 = 8;

pub(super) fn write_hello(w: &mut Writer<'_>, h: &Hello) {
    w.u8(match h.role {
        Role::Producer => 1,
        Role::Consumer => 2,
        Role::Monitor => 3,
    });
    w.u8(0);
    w.u16(h.formats.len().min(MAX_FORMATS) as u16);
    w.u32(h.features);
    w.u32(h.kinds.bits());
    for f in h.formats.iter().take(MAX_FORMATS) {
        w.u32(f.fourcc.0);
        w.u64(f.modifier.0);
    }
    w.text(&h.name);
    if let Some(s) = &h.stream {
        w.field(HELLO_STREAM, |w| w.text(s));
    }
    if let Some(p) = &h.pattern {
        w.field(HELLO_PATTERN, |w| w.text(p));
    }
    if let Some(p) = h.policy {
        w.field(HELLO_POLICY, |w| w.u8(p.to_wire()));
    }
}

pub(super) fn read_hello(r: &mut Reader<'_>) -> Result<Hello, WireError> {
    let role = match r.u8()? {
        1 => Role::Producer,
        2 => Role::Consumer,
        3 => Role::Monitor,
        v => return Err(r.field_err("role", v as u64)),
    };
    r.u8()?;
    let n = r.u16()? as usize;
    if n > MAX_FORMATS {
        return Err(r.field_err("formats", n as u64));
    }
    let features = r.u32()?;
    let kinds = KindSet::from_bits(r.u32()?);
    let mut formats = Vec::with_capacity(n);
    for _ in 0..n {
        formats.push(FormatModifier {
            fourcc: Fourcc(r.u32()?),
            modifier: Modifier(r.u64()?),
        });
    }
    let name = r.text()?;
    let mut h = Hello {
        role,
        features,
        kinds,
        formats,
        name,
        ..Hello::default()
    };
    r.fields(|tag, v| {
        match tag {
            HELLO_STREAM => h.stream = Some(v.text()?),
            HELLO_PATTERN => h.pattern = Some(v.text()?),
            HELLO_POLICY => {
                let p = v.u8()?;
                h.policy =
                    Some(Policy::from_wire(p).ok_or_else(|| v.field_err("policy", p as u64))?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(h)
}

pub(super) fn write_meta(w: &mut Writer<'_>, m: &FrameMeta) {
    if m.clock != Clock::Monotonic {
        w.field(META_CLOCK, |w| w.u8(m.clock.to_wire()));
    }
    if let Some(s) = m.source_seq {
        w.field(META_SOURCE_SEQ, |w| w.u64(s));
    }
    if let Some(t) = m.source_time {
        w.field(META_SOURCE_TIME, |w| {
            w.u64(t.ns);
            w.u8(t.clock.to_wire());
        });
    }
    if let Some(c) = m.crop {
        w.field(META_CROP, |w| {
            for v in [c.x, c.y, c.width, c.height] {
                w.u32(v);
            }
        });
    }
    if let Some(c) = m.colorimetry {
        w.field(META_COLORIMETRY, |w| {
            for v in [
                c.matrix.to_wire(),
                c.range.to_wire(),
                c.primaries.to_wire(),
                c.transfer.to_wire(),
            ] {
                w.u8(v);
            }
        });
    }
    if m.corrupt {
        w.field(META_CORRUPT, |_| {});
    }
    if let Some(b) = m.bytes_used {
        w.field(META_BYTES_USED, |w| w.u64(b));
    }
    for (k, v) in m.key_values() {
        w.field(META_KEY_VALUE, |w| {
            w.u8(k.len() as u8);
            w.bytes(k.as_bytes());
            w.bytes(v);
        });
    }
}

pub(super) fn read_meta(r: &mut Reader<'_>) -> Result<FrameMeta, WireError> {
    let mut m = FrameMeta::default();
    r.fields(|tag, v| {
        match tag {
            META_CLOCK => m.clock = read_clock(v)?,
            META_SOURCE_SEQ => m.source_seq = Some(v.u64()?),
            META_SOURCE_TIME => {
                let ns = v.u64()?;
                m.source_time = Some(Timestamp {
                    ns,
                    clock: read_clock(v)?,
                });
            }
            META_CROP => {
                let c = Crop {
                    x: v.u32()?,
                    y: v.u32()?,
                    width: v.u32()?,
                    height: v.u32()?,
                };
                if c.width == 0 || c.height == 0 {
                    return Err(v.field_err("crop", 0));
                }
                m.crop = Some(c);
            }
            META_COLORIMETRY => {
                let [a, b, c, d] = [v.u8()?, v.u8()?, v.u8()?, v.u8()?];
                let bad = |field, x: u8| v.field_err(field, x as u64);
                m.colorimetry = Some(Colorimetry {
                    matrix: Matrix::from_wire(a).ok_or_else(|| bad("matrix", a))?,
                    range: Range::from_wire(b).ok_or_else(|| bad("range", b))?,
                    primaries: Primaries::from_wire(c).ok_or_else(|| bad("primaries", c))?,
                    transfer: Transfer::from_wire(d).ok_or_else(|| bad("transfer", d))?,
                });
            }
            META_CORRUPT => m.corrupt = true,
            META_BYTES_USED => m.bytes_used = Some(v.u64()?),
            META_KEY_VALUE => {
                let n = v.u8()? as usize;
                let key = String::from_utf8(v.bytes(n)?.to_vec())
                    .map_err(|_| WireError::Text("Frame metadata key"))?;
                let value = v.bytes(v.remaining())?.to_vec();
                meta::push_key_value(&mut m, key, value).map_err(WireError::Meta)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(m)
}

fn read_clock(v: &mut Reader<'_>) -> Result<Clock, WireError> {
    let c = v.u8()?;
    Clock::from_wire(c).ok_or_else(|| v.field_err("clock", c as u64))
}
