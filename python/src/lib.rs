//! `frameshare` for Python: subscribe to a stream and get each frame's planes as NumPy arrays
//! over the shared memory, without a copy; publish frames written through NumPy arrays.
//!
//! - [`subscriber`]: `Subscriber` (iterate it for frames) and `Frame` (planes, meta);
//! - [`publisher`]: `Publisher` (a named stream with a buffer pool) and `Loan` (a buffer to
//!   fill, then publish);
//! - [`planes`]: the buffer-protocol export of a plane and what happens to an array that
//!   outlives its frame (detached: a private copy, never a view of a recycled buffer);
//! - [`meta`]: frame metadata as a dict;
//! - here: the module, its exceptions, `generated_planes` (what the generator draws, for
//!   checks and generated streams) and `counters`.
//!
//! # Unsafe code
//! The crate denies `unsafe_code` except in one declared island, [`planes`], whose
//! `__getbuffer__`/`__releasebuffer__` fill and release C `Py_buffer`s; its module docs say
//! what makes the exported views sound, and every block there has a `// SAFETY:` line.

mod meta;
mod planes;
mod publisher;
mod subscriber;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use frameshare::format::{Fourcc, FrameLayout};
use frameshare::source::{Pattern, Scene};

pyo3::create_exception!(
    frameshare,
    Error,
    pyo3::exceptions::PyException,
    "A frameshare operation failed (the message names the cause and its sources)."
);
pyo3::create_exception!(
    frameshare,
    FrameReleasedError,
    Error,
    "The frame (or loan) has ended: its planes are no longer available."
);
pyo3::create_exception!(
    frameshare,
    DetachedArrayWarning,
    pyo3::exceptions::PyRuntimeWarning,
    "An array outlived its frame and was detached: its memory became a private copy of the \
     frame (a copy the zero-copy path does not make). Let arrays die with their frame (do not \
     keep them past the `with` block, or `del` them) to stay zero-copy."
);

/// A Rust error as `frameshare.Error`, its sources joined (each said once).
pub(crate) fn error(e: &dyn std::error::Error) -> PyErr {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        cur = s.source();
    }
    Error::new_err(msg)
}

/// Warns that arrays of `what` outlived it and were detached (`copied` bytes).
pub(crate) fn warn_detached(py: Python<'_>, what: &str, copied: u64) -> PyResult<()> {
    let category = py.get_type::<DetachedArrayWarning>();
    PyErr::warn(
        py,
        &category,
        &std::ffi::CString::new(format!(
            "an array of {what} outlived it: detached (its memory is now a private copy, \
             {copied} bytes). Let arrays die with their frame to stay zero-copy."
        ))
        .unwrap_or_default(),
        1,
    )
}

/// What the generator draws for frame `seq` of `pattern` (`box`, `bars`, `solid:RRGGBB`) in
/// `format` at `size`: one NumPy array per plane, shaped like `Frame.planes` (tightly packed:
/// a reference, not a view). Compare a received frame with it, or write it into a loan to
/// publish a generated stream that `frameshare consume --sink verify` checks.
#[pyfunction]
#[pyo3(signature = (pattern, seq, format = "XR24", size = (1920, 1080)))]
fn generated_planes<'py>(
    py: Python<'py>,
    pattern: &str,
    seq: u64,
    format: &str,
    size: (u32, u32),
) -> PyResult<Bound<'py, PyTuple>> {
    let pattern: Pattern = pattern
        .parse()
        .map_err(pyo3::exceptions::PyValueError::new_err)?;
    let fourcc: Fourcc = format.parse().map_err(|e| error(&e))?;
    let layout = FrameLayout::linear(fourcc, size.0, size.1, 1).map_err(|e| error(&e))?;
    let scene = Scene::new(pattern, &layout);
    let frame = scene.frame(seq);
    let np = py.import("numpy")?;
    let mut arrays = Vec::new();
    for (p, g) in planes::plane_geometry(&layout).iter().enumerate() {
        let rows = layout.plane_rows(p);
        let mut bytes = Vec::with_capacity(rows as usize * layout.plane_row_bytes(p));
        for r in 0..rows {
            bytes.extend_from_slice(frame.row(p, r));
        }
        let shape = PyTuple::new(py, &g.shape[..g.ndim])?;
        let array = np
            .call_method1("frombuffer", (PyBytes::new(py, &bytes), "u1"))?
            .call_method1("reshape", (shape,))?;
        arrays.push(array);
    }
    PyTuple::new(py, arrays)
}

/// Process-wide counts of expensive set-up work so far: `buffers` (buffer handles made:
/// allocations and imports), `mappings` (CPU mappings made), `gpu_imports`. In a steady
/// stream they stop growing: no per-frame mapping, no per-frame allocation.
#[pyfunction]
fn counters(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let c = frameshare::counters::Counters::now();
    let d = PyDict::new(py);
    d.set_item("buffers", c.buffers)?;
    d.set_item("mappings", c.mappings)?;
    d.set_item("gpu_imports", c.gpu_imports)?;
    Ok(d)
}

/// frameshare: video frames shared between processes without a copy. `Subscriber` hands out
/// frames whose planes are read-only NumPy arrays over the producer's buffers; `Publisher`
/// lends buffers as writable arrays and sends them.
#[pymodule]
#[pyo3(name = "frameshare")]
fn frameshare_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<subscriber::PySubscriber>()?;
    m.add_class::<subscriber::PyFrame>()?;
    m.add_class::<publisher::PyPublisher>()?;
    m.add_class::<publisher::PyLoan>()?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("FrameReleasedError", py.get_type::<FrameReleasedError>())?;
    m.add(
        "DetachedArrayWarning",
        py.get_type::<DetachedArrayWarning>(),
    )?;
    m.add_function(wrap_pyfunction!(generated_planes, m)?)?;
    m.add_function(wrap_pyfunction!(counters, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
