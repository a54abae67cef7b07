//! Planes as NumPy arrays over the mapped buffer, without a copy, and what happens to them
//! when their frame ends. The crate's one unsafe island: the buffer protocol.
//!
//! Each plane is a [`PlaneBuffer`], a small object that exports the plane's bytes through the
//! buffer protocol (`bf_getbuffer`: address, shape, strides in bytes, read-only or not);
//! `numpy.asarray` turns it into an array whose base is a `memoryview` holding that export. So
//! an array over a plane is a view of the mapping itself, and every export is counted.
//!
//! The arrays of a frame (or a loan) share one [`Views`]: the mapping (kept alive by every
//! export, so no array ever reads unmapped memory), the number of live exports, and whether
//! the frame is still held. When the frame ends ([`Views::close`]): new exports are refused
//! from then on, and if an array is still alive the mapping is *detached* first —
//! [`frameshare::buffer::BufferMapping::detach`] swaps its pages, at the same addresses, for a
//! private copy of the frame — so such an array keeps showing its own frame's bytes, and never
//! the frame the producer writes next into the recycled buffer. That copy is the only one the
//! bindings ever make, and it is counted.
//!
//! # Unsafe code
//! `__getbuffer__` fills a C `Py_buffer` and `__releasebuffer__` is called with one: raw
//! pointers from the interpreter. What makes the exported view sound:
//! - the address range (first byte of the plane to the end of its last row) lies inside a live
//!   mapping, checked against the mapping's length when the plane is made ([`plane_geometry`]);
//! - the mapping lives as long as any export: the [`PlaneBuffer`] owns an `Arc` of it, and the
//!   interpreter keeps the `PlaneBuffer` alive (`view.obj`) until the export is released;
//! - `shape` and `strides` point into the `PlaneBuffer` (a frozen object: never mutated, never
//!   moved while alive), and `format` at a static C string;
//! - a read-only plane is never exported writable.

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void, CStr};
use std::sync::{Arc, Mutex, MutexGuard};

use frameshare::buffer::BufferMapping;
use frameshare::FrameLayout;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

use crate::FrameReleasedError;

/// Where a plane lies in its memory object's mapping and how it is shaped as an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneGeometry {
    /// Which memory object (fd) of the buffer holds the plane.
    pub fd_index: usize,
    /// Byte offset of the plane's first row in that object.
    pub offset: usize,
    /// Dimensions used: 3 for packed RGB (rows, width, bytes per pixel), else 2 (rows, bytes).
    pub ndim: usize,
    /// Shape; only the first `ndim` entries count.
    pub shape: [isize; 3],
    /// Strides in bytes (the row stride first: padding at each row's end is skipped).
    pub strides: [isize; 3],
    /// Bytes from the plane's first byte to the end of its last row's pixels.
    pub span: usize,
}

impl PlaneGeometry {
    /// The number of bytes the array shows (rows × pixel bytes per row).
    fn len(&self) -> isize {
        self.shape[..self.ndim].iter().product()
    }

    /// Whether the bytes follow each other without gaps in C order (rows not padded).
    fn c_contiguous(&self) -> bool {
        let mut want = 1;
        for d in (0..self.ndim).rev() {
            if self.shape[d] > 1 && self.strides[d] != want {
                return false;
            }
            want *= self.shape[d];
        }
        true
    }

    /// Whether they do in Fortran order (only a plane with one row, or one column, can).
    fn f_contiguous(&self) -> bool {
        let mut want = 1;
        for d in 0..self.ndim {
            if self.shape[d] > 1 && self.strides[d] != want {
                return false;
            }
            want *= self.shape[d];
        }
        true
    }
}

/// The array geometry of each plane of `layout`: packed RGB formats as (height, width,
/// bytes per pixel); the others (NV12's planes, YUYV/UYVY) as (rows, bytes per row). The row
/// stride is the buffer's, padding excluded from the shape.
pub fn plane_geometry(layout: &FrameLayout) -> Vec<PlaneGeometry> {
    let info = layout.info();
    layout
        .planes()
        .iter()
        .enumerate()
        .map(|(p, pl)| {
            let rows = layout.plane_rows(p) as isize;
            let stride = pl.stride as isize;
            let pinfo = &info.planes[p];
            let packed_rgb = info.planes.len() == 1 && pinfo.block_width == 1;
            let (ndim, shape, strides) = if packed_rgb {
                let bpp = pinfo.bytes_per_block as isize;
                (3, [rows, layout.width() as isize, bpp], [stride, bpp, 1])
            } else {
                (
                    2,
                    [rows, layout.plane_row_bytes(p) as isize, 0],
                    [stride, 1, 0],
                )
            };
            PlaneGeometry {
                fd_index: pl.fd_index as usize,
                offset: pl.offset as usize,
                ndim,
                shape,
                strides,
                span: layout.plane_span(p) as usize,
            }
        })
        .collect()
}

/// What the views of one frame (or loan) share.
pub struct Views {
    state: Mutex<ViewState>,
}

struct ViewState {
    mapping: Arc<BufferMapping>,
    /// The plane addresses (inside `mapping`) and shapes.
    planes: Vec<(usize, PlaneGeometry)>,
    writable: bool,
    /// Buffer-protocol exports alive (each `memoryview`, hence each array family, holds one).
    exports: usize,
    /// The frame is still held: new exports are allowed.
    open: bool,
    /// The mapping was detached when the frame ended (exports of it stay allowed: they show
    /// the private copy).
    detached: bool,
    /// What to drop once the last export goes: a frame that could not be detached is kept
    /// (never recycled under a live array) until then.
    keep: Option<Box<dyn Send>>,
    /// Which frame, for messages.
    what: String,
}

impl Views {
    /// Views of `mapping`'s planes laid out as `layout` says, for the frame or loan `what`.
    /// Fails if a plane would reach past its mapping (never, for a checked buffer).
    pub fn new(
        mapping: Arc<BufferMapping>,
        regions: &[(*const u8, usize)],
        layout: &FrameLayout,
        writable: bool,
        what: String,
    ) -> Result<Arc<Views>, String> {
        let mut planes = Vec::new();
        for g in plane_geometry(layout) {
            let &(base, len) = regions
                .get(g.fd_index)
                .ok_or_else(|| format!("{what}: plane in memory object {} unmapped", g.fd_index))?;
            if g.offset.checked_add(g.span).is_none_or(|end| end > len) {
                return Err(format!(
                    "{what}: a plane at offset {} spanning {} bytes does not fit the {len}-byte mapping",
                    g.offset, g.span
                ));
            }
            planes.push((base as usize + g.offset, g));
        }
        Ok(Arc::new(Views {
            state: Mutex::new(ViewState {
                mapping,
                planes,
                writable,
                exports: 0,
                open: true,
                detached: false,
                keep: None,
                what,
            }),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, ViewState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The planes as NumPy arrays (a tuple), each a view of the mapping.
    pub fn arrays<'py>(self: &Arc<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        static ASARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let asarray = ASARRAY.import(py, "numpy", "asarray")?;
        let (count, writable) = {
            let s = self.lock();
            if !s.open {
                return Err(FrameReleasedError::new_err(format!("{} has ended", s.what)));
            }
            (s.planes.len(), s.writable)
        };
        let mut arrays = Vec::with_capacity(count);
        for plane in 0..count {
            let buf = Bound::new(
                py,
                PlaneBuffer {
                    views: self.clone(),
                    plane,
                    writable,
                    geometry: self.lock().planes[plane].1,
                },
            )?;
            // Through a memoryview made here, so that a refused export raises (NumPy would
            // turn an object it cannot view into an object array instead).
            let view = pyo3::types::PyMemoryView::from(buf.as_any())?;
            arrays.push(asarray.call1((view,))?);
        }
        PyTuple::new(py, arrays)
    }

    /// Live exports (arrays, memoryviews) of this frame's planes.
    pub fn exports(&self) -> usize {
        self.lock().exports
    }

    /// The frame ends: no new export from now on. Arrays still alive are detached first (their
    /// pages become a private copy, at the same addresses); returns the bytes copied (0 when no
    /// array was alive: the common case, nothing done). On error nothing changed: the frame
    /// must stay held.
    pub fn close(&self) -> Result<u64, frameshare::buffer::BufferError> {
        let mut s = self.lock();
        if !s.open {
            return Ok(0);
        }
        let copied = if s.exports > 0 {
            let copied = s.mapping.detach()?;
            s.detached = true;
            copied
        } else {
            0
        };
        s.open = false;
        Ok(copied)
    }

    /// The frame has ended, but its mapping could not be detached while arrays are alive:
    /// `keep` (the frame itself) is dropped once the last export goes, so the buffer is never
    /// recycled under a live array. New exports are refused meanwhile.
    pub fn keep_until_unexported(&self, keep: Box<dyn Send>) {
        let mut s = self.lock();
        s.open = false;
        if s.exports == 0 {
            drop(s);
            drop(keep);
        } else {
            s.keep = Some(keep);
        }
    }
}

/// One plane of a frame, exported through the buffer protocol (what `frame.planes` arrays
/// are made from: an array's `base` is a `memoryview` of one of these).
#[pyclass(frozen, module = "frameshare", name = "_PlaneBuffer")]
pub struct PlaneBuffer {
    views: Arc<Views>,
    plane: usize,
    writable: bool,
    geometry: PlaneGeometry,
}

/// The format string of every export: unsigned bytes.
const FORMAT_U8: &CStr = c"B";

#[pymethods]
impl PlaneBuffer {
    /// Exports the plane (see the module docs for why this is sound).
    ///
    /// # Safety
    /// `view` is the interpreter's `Py_buffer` to fill (or null, refused).
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("no view to fill"));
        }
        let this = slf.get();
        let g = this.geometry;
        let want = |bit: c_int| flags & bit == bit;
        if want(ffi::PyBUF_WRITABLE) && !this.writable {
            return Err(PyBufferError::new_err(
                "a received frame is read-only (copy it to change it)",
            ));
        }
        if !want(ffi::PyBUF_STRIDES) && !g.c_contiguous() {
            return Err(PyBufferError::new_err(
                "the plane's rows are padded (stride > row bytes): ask for strides (numpy.asarray does)",
            ));
        }
        let refused = if want(ffi::PyBUF_ANY_CONTIGUOUS) {
            !g.c_contiguous() && !g.f_contiguous()
        } else if want(ffi::PyBUF_F_CONTIGUOUS) {
            !g.f_contiguous()
        } else {
            want(ffi::PyBUF_C_CONTIGUOUS) && !g.c_contiguous()
        };
        if refused {
            return Err(PyBufferError::new_err(
                "the plane is not contiguous in the order asked for (its rows keep the stride)",
            ));
        }
        let addr = {
            let mut s = this.views.lock();
            if !s.open && !s.detached {
                return Err(FrameReleasedError::new_err(format!(
                    "{} has ended: its planes are no longer exported",
                    s.what
                )));
            }
            s.exports += 1;
            s.planes[this.plane].0
        };
        let shape = this.geometry.shape.as_ptr().cast_mut();
        let strides = this.geometry.strides.as_ptr().cast_mut();
        // SAFETY: `view` is non-null and the interpreter's to fill. `addr` is the plane's first
        // byte inside the mapping, and `len`, shape and strides stay inside it (checked in
        // `Views::new`); the mapping lives while `obj` (this object, which owns an Arc of it
        // through `views`) does, and the interpreter holds `obj` until `__releasebuffer__`.
        // shape/strides point into this frozen object, and format at a static string.
        unsafe {
            (*view).buf = addr as *mut c_void;
            (*view).len = g.len();
            (*view).readonly = c_int::from(!this.writable);
            (*view).itemsize = 1;
            (*view).format = if want(ffi::PyBUF_FORMAT) {
                FORMAT_U8.as_ptr().cast_mut()
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = g.ndim as c_int;
            (*view).shape = if want(ffi::PyBUF_ND) {
                shape
            } else {
                std::ptr::null_mut()
            };
            (*view).strides = if want(ffi::PyBUF_STRIDES) {
                strides
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
            (*view).obj = slf.into_any().into_ptr();
        }
        Ok(())
    }

    /// Counts the export gone; the last one of a frame kept for it lets the frame go.
    ///
    /// # Safety
    /// Called by the interpreter with a view this object filled.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        let keep = {
            let mut s = self.views.lock();
            s.exports = s.exports.saturating_sub(1);
            if s.exports == 0 {
                s.keep.take()
            } else {
                None
            }
        };
        drop(keep);
    }

    fn __repr__(&self) -> String {
        let s = self.views.lock();
        format!(
            "<frameshare plane {} of {}{}>",
            self.plane,
            s.what,
            if s.detached { " (detached copy)" } else { "" }
        )
    }
}
