//! Frame metadata as a Python dict, both ways: what a subscriber's `frame.meta` shows and what
//! a publisher's `loan.publish(seq, meta=…)` takes. Keys: `clock`, `source_seq`,
//! `source_time` (`{"ns", "clock"}`), `crop` (`{"x", "y", "width", "height"}`), `colorimetry`
//! (`{"matrix", "range", "primaries", "transfer"}`, names in lower case), `corrupt`,
//! `bytes_used`, `key_values` (`{str: bytes}`); absent values are `None`.

use frameshare::meta::{
    Clock, Colorimetry, Crop, FrameMeta, Matrix, Primaries, Range, Timestamp, Transfer,
};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

const CLOCKS: [(Clock, &str); 3] = [
    (Clock::Monotonic, "monotonic"),
    (Clock::Boottime, "boottime"),
    (Clock::Realtime, "realtime"),
];
const MATRICES: [(Matrix, &str); 5] = [
    (Matrix::Unknown, "unknown"),
    (Matrix::Bt601, "bt601"),
    (Matrix::Bt709, "bt709"),
    (Matrix::Bt2020, "bt2020"),
    (Matrix::Rgb, "rgb"),
];
const RANGES: [(Range, &str); 3] = [
    (Range::Unknown, "unknown"),
    (Range::Limited, "limited"),
    (Range::Full, "full"),
];
const PRIMARIES: [(Primaries, &str); 4] = [
    (Primaries::Unknown, "unknown"),
    (Primaries::Bt601, "bt601"),
    (Primaries::Bt709, "bt709"),
    (Primaries::Bt2020, "bt2020"),
];
const TRANSFERS: [(Transfer, &str); 6] = [
    (Transfer::Unknown, "unknown"),
    (Transfer::Bt709, "bt709"),
    (Transfer::Srgb, "srgb"),
    (Transfer::Pq, "pq"),
    (Transfer::Hlg, "hlg"),
    (Transfer::Linear, "linear"),
];

fn name_of<T: PartialEq + Copy>(table: &[(T, &'static str)], v: T) -> &'static str {
    table
        .iter()
        .find(|(t, _)| *t == v)
        .map_or("unknown", |(_, n)| n)
}

fn parse<T: Copy>(table: &[(T, &'static str)], what: &str, name: &str) -> PyResult<T> {
    table
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(t, _)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(_, n)| *n).collect();
            PyValueError::new_err(format!(
                "unknown {what} {name:?} (want {})",
                names.join(", ")
            ))
        })
}

/// The dict of a frame's metadata.
pub fn to_dict<'py>(py: Python<'py>, m: &FrameMeta) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("clock", name_of(&CLOCKS, m.clock))?;
    d.set_item("source_seq", m.source_seq)?;
    let source_time = match m.source_time {
        Some(t) => {
            let td = PyDict::new(py);
            td.set_item("ns", t.ns)?;
            td.set_item("clock", name_of(&CLOCKS, t.clock))?;
            Some(td)
        }
        None => None,
    };
    d.set_item("source_time", source_time)?;
    let crop = match m.crop {
        Some(c) => {
            let cd = PyDict::new(py);
            cd.set_item("x", c.x)?;
            cd.set_item("y", c.y)?;
            cd.set_item("width", c.width)?;
            cd.set_item("height", c.height)?;
            Some(cd)
        }
        None => None,
    };
    d.set_item("crop", crop)?;
    let colorimetry = match m.colorimetry {
        Some(c) => {
            let cd = PyDict::new(py);
            cd.set_item("matrix", name_of(&MATRICES, c.matrix))?;
            cd.set_item("range", name_of(&RANGES, c.range))?;
            cd.set_item("primaries", name_of(&PRIMARIES, c.primaries))?;
            cd.set_item("transfer", name_of(&TRANSFERS, c.transfer))?;
            Some(cd)
        }
        None => None,
    };
    d.set_item("colorimetry", colorimetry)?;
    d.set_item("corrupt", m.corrupt)?;
    d.set_item("bytes_used", m.bytes_used)?;
    let kv = PyDict::new(py);
    for (k, v) in m.key_values() {
        kv.set_item(k, PyBytes::new(py, v))?;
    }
    d.set_item("key_values", kv)?;
    Ok(d)
}

fn field<'py, T>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<T>>
where
    T: for<'a> FromPyObject<'a, 'py>,
    for<'a> PyErr: From<<T as FromPyObject<'a, 'py>>::Error>,
{
    match d.get_item(key)? {
        Some(v) if !v.is_none() => Ok(Some(v.extract::<T>().map_err(|e| {
            let e = PyErr::from(e);
            PyValueError::new_err(format!("meta[{key:?}]: {e}"))
        })?)),
        _ => Ok(None),
    }
}

/// Metadata from a dict with the keys [`to_dict`] makes (any may be left out).
pub fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<FrameMeta> {
    const KEYS: [&str; 8] = [
        "clock",
        "source_seq",
        "source_time",
        "crop",
        "colorimetry",
        "corrupt",
        "bytes_used",
        "key_values",
    ];
    for k in d.keys() {
        let k: String = k.extract()?;
        if !KEYS.contains(&k.as_str()) {
            return Err(PyKeyError::new_err(format!(
                "unknown metadata key {k:?} (want {})",
                KEYS.join(", ")
            )));
        }
    }
    let mut m = FrameMeta::default();
    if let Some(c) = field::<String>(d, "clock")? {
        m.clock = parse(&CLOCKS, "clock", &c)?;
    }
    m.source_seq = field::<u64>(d, "source_seq")?;
    if let Some(t) = field::<Bound<'_, PyDict>>(d, "source_time")? {
        m.source_time = Some(Timestamp {
            ns: field::<u64>(&t, "ns")?
                .ok_or_else(|| PyKeyError::new_err("source_time needs ns"))?,
            clock: match field::<String>(&t, "clock")? {
                Some(c) => parse(&CLOCKS, "clock", &c)?,
                None => Clock::Monotonic,
            },
        });
    }
    if let Some(c) = field::<Bound<'_, PyDict>>(d, "crop")? {
        let get = |k: &str| -> PyResult<u32> {
            field::<u32>(&c, k)?.ok_or_else(|| PyKeyError::new_err(format!("crop needs {k}")))
        };
        m.crop = Some(Crop {
            x: get("x")?,
            y: get("y")?,
            width: get("width")?,
            height: get("height")?,
        });
    }
    if let Some(c) = field::<Bound<'_, PyDict>>(d, "colorimetry")? {
        let name = |k: &str| -> PyResult<String> {
            Ok(field::<String>(&c, k)?.unwrap_or_else(|| "unknown".into()))
        };
        m.colorimetry = Some(Colorimetry {
            matrix: parse(&MATRICES, "matrix", &name("matrix")?)?,
            range: parse(&RANGES, "range", &name("range")?)?,
            primaries: parse(&PRIMARIES, "primaries", &name("primaries")?)?,
            transfer: parse(&TRANSFERS, "transfer", &name("transfer")?)?,
        });
    }
    m.corrupt = field::<bool>(d, "corrupt")?.unwrap_or(false);
    m.bytes_used = field::<u64>(d, "bytes_used")?;
    if let Some(kv) = field::<Bound<'_, PyDict>>(d, "key_values")? {
        for (k, v) in kv.iter() {
            let k: String = k.extract()?;
            let v: Vec<u8> = if let Ok(s) = v.extract::<String>() {
                s.into_bytes()
            } else {
                v.extract()?
            };
            m.set(&k, &v)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
        }
    }
    Ok(m)
}
