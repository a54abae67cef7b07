//! `frameshare.Publisher` and `frameshare.Loan`: the producer end of a stream. A loan is a free
//! buffer lent to Python as writable NumPy arrays over its mapping (no copy); publishing it
//! sends it to every consumer. The Rust loan is put aside between calls
//! (`Loan::suspend` / `Publisher::resume_loan`), the buffer staying on loan meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use frameshare::alloc::AllocatorSpec;
use frameshare::buffer::{BufferMapping, SharedWrite};
use frameshare::bus::{Publisher, PublisherOptions, StreamName, WhenFull};
use frameshare::format::{Fourcc, FrameLayout};
use frameshare::source::Pattern;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::planes::Views;
use crate::{error, warn_detached, FrameReleasedError};

/// How long one wait lasts before Python gets to run its signal handlers (Ctrl-C).
const SLICE: Duration = Duration::from_millis(100);

/// Counters of the bindings' own (the publisher counts the rest).
#[derive(Debug, Default)]
struct LoanStats {
    detached: AtomicU64,
    bytes_copied: AtomicU64,
}

/// The producer end of a named stream, with a pool of `buffers` frame buffers of `format` and
/// `size` made by the allocator `alloc` (`auto`, `memfd`, `dma-heap`, `posix-shm`, …).
/// `pattern`: the generator pattern the frames follow, if they do (`box`, `bars`,
/// `solid:RRGGBB`): announced to consumers, so that `frameshare consume --sink verify`
/// recomputes and checks every frame (see `frameshare.generated_planes`). `when_full`: what
/// `loan()` does when every buffer is out — `"wait"` for one, or `"drop"` the frame.
///
/// `with pub.loan() as frame: frame.planes[0][:] = pixels; frame.publish(seq)`. Use it in a
/// `with` block (or call `finish()`) to end the stream cleanly.
#[pyclass(module = "frameshare", name = "Publisher")]
pub struct PyPublisher {
    publisher: Option<Publisher>,
    layout: FrameLayout,
    allocator: String,
    /// Writable mappings by buffer id, made on a buffer's first loan.
    mappings: Vec<Option<Arc<BufferMapping>>>,
    /// The loan out, if any (one at a time): finishing ends it.
    loaned: Option<Arc<LoanShared>>,
    stats: Arc<LoanStats>,
}

impl PyPublisher {
    fn publisher(&mut self) -> PyResult<&mut Publisher> {
        self.publisher
            .as_mut()
            .ok_or_else(|| crate::Error::new_err("the publisher has finished"))
    }

    fn mapping(&mut self, id: u32) -> PyResult<Arc<BufferMapping>> {
        let i = id as usize;
        if self.mappings.len() <= i {
            self.mappings.resize_with(i + 1, || None);
        }
        match &self.mappings[i] {
            Some(m) if !m.is_detached() => Ok(m.clone()),
            _ => {
                let buffer = self
                    .publisher()?
                    .buffer(id)
                    .ok_or_else(|| crate::Error::new_err(format!("buffer {id} left the pool")))?
                    .clone();
                let m = Arc::new(buffer.map(true).map_err(|e| error(&e))?);
                self.mappings[i] = Some(m.clone());
                Ok(m)
            }
        }
    }

    /// Takes loan `id` up again and publishes it as `seq`, or gives it back (`seq` `None`);
    /// its arrays were closed first ([`LoanShared::close`]).
    fn settle(
        &mut self,
        id: u32,
        seq: Option<u64>,
        meta: frameshare::meta::FrameMeta,
    ) -> PyResult<()> {
        self.loaned = None;
        let publisher = self.publisher()?;
        let mut loan = publisher.resume_loan(id).map_err(|e| error(&e))?;
        match seq {
            Some(seq) => {
                *loan.meta_mut() = meta;
                loan.publish(seq).map_err(|e| error(&e))
            }
            None => Ok(()), // dropped: back in the pool, unsent
        }
    }
}

#[pymethods]
impl PyPublisher {
    #[new]
    #[pyo3(signature = (name, format = "XR24", size = (1920, 1080), buffers = 4, alloc = "auto",
                        pattern = None, when_full = "wait", stride_align = 256))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        format: &str,
        size: (u32, u32),
        buffers: usize,
        alloc: &str,
        pattern: Option<&str>,
        when_full: &str,
        stride_align: u32,
    ) -> PyResult<Self> {
        let fourcc: Fourcc = format.parse().map_err(|e| error(&e))?;
        let layout =
            FrameLayout::linear(fourcc, size.0, size.1, stride_align).map_err(|e| error(&e))?;
        let pattern = match pattern {
            Some(p) => Some(frameshare::pipeline::pattern_name(
                p.parse::<Pattern>().map_err(PyValueError::new_err)?,
            )),
            None => None,
        };
        let when_full = match when_full {
            "wait" => WhenFull::Wait,
            "drop" => WhenFull::Drop,
            w => {
                return Err(PyValueError::new_err(format!(
                    "when_full {w:?}: want \"wait\" or \"drop\""
                )))
            }
        };
        if buffers == 0 {
            return Err(PyValueError::new_err("buffers must be at least 1"));
        }
        let spec: AllocatorSpec = alloc.parse().map_err(|e| error(&e))?;
        let (mut allocator, note) = spec.open_noted().map_err(|e| error(&e))?;
        let pool = (0..buffers)
            .map(|_| allocator.allocate(&layout))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(&e))?;
        let opts = PublisherOptions {
            name: "python".into(),
            pattern,
            when_full,
            ..PublisherOptions::default()
        };
        let stream = StreamName::new(name).map_err(|e| error(&e))?;
        let mut publisher = Publisher::bind(&stream, opts).map_err(|e| error(&e))?;
        publisher.set_buffers(pool).map_err(|e| error(&e))?;
        Ok(PyPublisher {
            publisher: Some(publisher),
            layout,
            allocator: note,
            mappings: Vec::new(),
            loaned: None,
            stats: Arc::default(),
        })
    }

    /// Lends a free buffer for the next frame, as a `Loan` whose `planes` are writable NumPy
    /// arrays over it. Serves consumers meanwhile; with `when_full="wait"` it waits until a
    /// buffer comes back. `None`: the frame is dropped (no free buffer under `"drop"`, or a
    /// consumer's release fence did not signal). One loan at a time.
    fn loan(slf: Bound<'_, Self>) -> PyResult<Option<Py<PyLoan>>> {
        let py = slf.py();
        let mut me = slf.borrow_mut();
        if let Some(l) = &me.loaned {
            return Err(crate::Error::new_err(format!(
                "buffer {} is still on loan: publish or cancel it first",
                l.id
            )));
        }
        let publisher = me.publisher()?;
        let id = py
            .detach(|| publisher.loan().map(|l| l.map(|l| l.suspend())))
            .map_err(|e| error(&e))?;
        let Some(id) = id else {
            return Ok(None);
        };
        let made = (|| {
            let mapping = me.mapping(id)?;
            let write = mapping.write_shared().map_err(|e| error(&e))?;
            let regions: Vec<(*const u8, usize)> = (0..me.layout.fd_count())
                .map(|i| {
                    let (p, len) = write.region_ptr(i);
                    (p.cast_const(), len)
                })
                .collect();
            let views = Views::new(
                mapping,
                &regions,
                &me.layout,
                true,
                format!("the loan of buffer {id}"),
            )
            .map_err(crate::Error::new_err)?;
            Ok::<_, PyErr>((views, write))
        })();
        let (views, write) = match made {
            Ok(v) => v,
            Err(e) => {
                let _ = me.settle(id, None, Default::default());
                return Err(e);
            }
        };
        let shared = Arc::new(LoanShared {
            id,
            state: Mutex::new(LoanState {
                write: Some(write),
                views,
                planes: None,
            }),
        });
        me.loaned = Some(shared.clone());
        let stats = me.stats.clone();
        drop(me);
        Py::new(
            py,
            PyLoan {
                id,
                shared,
                publisher: slf.unbind(),
                stats,
            },
        )
        .map(Some)
    }

    /// Serves consumers until at least `n` take frames; `False` if `timeout` seconds passed
    /// first (`None`: wait as long as it takes).
    #[pyo3(signature = (n = 1, timeout = None))]
    fn wait_for_consumers(
        &mut self,
        py: Python<'_>,
        n: usize,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        loop {
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
                None => SLICE,
            };
            let publisher = self.publisher()?;
            if py
                .detach(|| publisher.wait_for_consumers(n, Some(slice)))
                .map_err(|e| error(&e))?
            {
                return Ok(true);
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Serves consumers (joins, releases, evictions) for up to `timeout` seconds; `True` if
    /// something happened. For an application's own event loop, with `fileno()`.
    #[pyo3(signature = (timeout = 0.0))]
    fn dispatch(&mut self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let publisher = self.publisher()?;
        let t = Duration::from_secs_f64(timeout.max(0.0));
        py.detach(|| publisher.dispatch(Some(t)))
            .map_err(|e| error(&e))
    }

    /// A file descriptor that becomes readable when `dispatch()` has work.
    fn fileno(&mut self) -> PyResult<i32> {
        use std::os::fd::{AsFd, AsRawFd};
        Ok(self.publisher()?.as_fd().as_raw_fd())
    }

    /// Consumers taking frames now.
    #[getter]
    fn consumers(&self) -> usize {
        self.publisher.as_ref().map_or(0, |p| p.consumers().len())
    }

    /// The socket consumers connect to.
    #[getter]
    fn socket_path(&self) -> Option<String> {
        self.publisher
            .as_ref()
            .and_then(|p| p.socket_path())
            .map(|p| p.display().to_string())
    }

    /// What the allocator is (and, for `auto`, what it chose and why).
    #[getter]
    fn allocator(&self) -> String {
        self.allocator.clone()
    }

    /// Counters: `published`, `dropped`, `joined`, `left`, `evicted`, `refused` (consumers),
    /// and `loans_detached` / `bytes_copied` (loans whose arrays outlived them, and what
    /// detaching them copied: 0 when every array died with its loan).
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if let Some(p) = &self.publisher {
            let s = p.stats();
            d.set_item("published", s.published)?;
            d.set_item("dropped", s.dropped)?;
            d.set_item("joined", s.joined)?;
            d.set_item("left", s.left)?;
            d.set_item("evicted", s.evicted)?;
            d.set_item("refused", s.refused)?;
        }
        d.set_item(
            "loans_detached",
            self.stats.detached.load(Ordering::Relaxed),
        )?;
        d.set_item(
            "bytes_copied",
            self.stats.bytes_copied.load(Ordering::Relaxed),
        )?;
        Ok(d)
    }

    /// Ends the stream: consumers are told no frame follows, give back what they hold, and are
    /// told goodbye; the socket is removed. Returns the final counters. A loan still open is
    /// given back unsent.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if let Some(loan) = self.loaned.clone() {
            let copied = loan.close()?;
            self.settle(loan.id, None, Default::default())?;
            if copied > 0 {
                self.stats.detached.fetch_add(1, Ordering::Relaxed);
                self.stats.bytes_copied.fetch_add(copied, Ordering::Relaxed);
                warn_detached(py, &format!("the loan of buffer {}", loan.id), copied)?;
            }
        }
        let stats = self.stats(py)?;
        let Some(publisher) = self.publisher.take() else {
            return Ok(stats);
        };
        self.mappings.clear();
        let s = py.detach(|| publisher.finish()).map_err(|e| error(&e))?;
        stats.set_item("published", s.published)?;
        stats.set_item("dropped", s.dropped)?;
        stats.set_item("joined", s.joined)?;
        stats.set_item("left", s.left)?;
        stats.set_item("evicted", s.evicted)?;
        stats.set_item("refused", s.refused)?;
        Ok(stats)
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Finishes the stream; after an exception, consumers are told the producer failed.
    #[pyo3(signature = (exc_type, exc, _tb))]
    fn __exit__(
        &mut self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if exc_type.is_some() {
            if let Some(p) = self.publisher.take() {
                let why = exc.map_or_else(|| "error".to_owned(), |e| e.to_string());
                p.abort(&format!("the Python producer failed: {why}"));
            }
            return Ok(false);
        }
        self.finish(py)?;
        Ok(false)
    }
}

/// The loan's arrays and write bracket.
struct LoanState {
    /// The CPU write bracket, until the loan is published or given back.
    write: Option<SharedWrite>,
    views: Arc<Views>,
    /// The planes' arrays, made on first use.
    planes: Option<Py<PyTuple>>,
}

/// A loan as both its `Loan` object and the publisher see it.
struct LoanShared {
    id: u32,
    state: Mutex<LoanState>,
}

impl LoanShared {
    fn lock(&self) -> MutexGuard<'_, LoanState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ended(&self) -> bool {
        self.lock().write.is_none()
    }

    /// Ends the loan's arrays before the buffer is sent or given back: the cached arrays are
    /// dropped, any still alive detached (what they write from now on stays in a private copy
    /// and never reaches a frame the consumers read), the write bracket ended. Returns the
    /// bytes copied. If detaching fails the loan stays open (nothing may be sent).
    fn close(&self) -> PyResult<u64> {
        let planes = self.lock().planes.take();
        drop(planes); // outside the lock: the arrays' deaths call back into the views
        let mut st = self.lock();
        if st.write.is_none() {
            return Err(FrameReleasedError::new_err(format!(
                "the loan of buffer {} has ended",
                self.id
            )));
        }
        let copied = st.views.close().map_err(|e| error(&e))?;
        drop(st.write.take()); // the CPU write bracket ends before the frame is sent
        Ok(copied)
    }
}

/// A buffer lent to fill a frame. `planes`: each plane as a writable NumPy array over the
/// buffer (shapes as for `Frame.planes`; write into them, e.g. `frame.planes[0][:] = image`).
/// `publish(seq)` sends it; leaving the `with` block without publishing gives it back unsent.
/// Arrays still alive when the loan ends are detached (a private copy), so nothing written
/// through them later reaches a published frame.
#[pyclass(frozen, module = "frameshare", name = "Loan")]
pub struct PyLoan {
    /// The buffer's id.
    #[pyo3(get)]
    id: u32,
    shared: Arc<LoanShared>,
    publisher: Py<PyPublisher>,
    stats: Arc<LoanStats>,
}

impl PyLoan {
    /// Ends the loan: publishes it as `seq`, or gives it back (`None`).
    fn end(
        &self,
        py: Python<'_>,
        seq: Option<u64>,
        meta: frameshare::meta::FrameMeta,
    ) -> PyResult<()> {
        let copied = self.shared.close()?;
        let settled = self
            .publisher
            .bind(py)
            .borrow_mut()
            .settle(self.id, seq, meta);
        if copied > 0 {
            self.stats.detached.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_copied.fetch_add(copied, Ordering::Relaxed);
            warn_detached(py, &format!("the loan of buffer {}", self.id), copied)?;
        }
        settled
    }
}

#[pymethods]
impl PyLoan {
    /// The planes as writable NumPy arrays over the buffer (a tuple; made once per loan).
    /// Raises `FrameReleasedError` once the loan has ended.
    #[getter]
    fn planes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let views = {
            let st = self.shared.lock();
            if st.write.is_none() {
                return Err(FrameReleasedError::new_err(format!(
                    "the loan of buffer {} has ended: its planes are gone",
                    self.id
                )));
            }
            if let Some(p) = &st.planes {
                return Ok(p.bind(py).clone());
            }
            st.views.clone()
        };
        let arrays = views.arrays(py)?;
        self.shared.lock().planes = Some(arrays.clone().unbind());
        Ok(arrays)
    }

    /// Sends the buffer as frame `seq` to every consumer (as their policies say), with
    /// metadata `meta` (a dict with the keys `Frame.meta` has; any may be left out).
    #[pyo3(signature = (seq, meta = None))]
    fn publish(&self, py: Python<'_>, seq: u64, meta: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let meta = match meta {
            Some(d) => crate::meta::from_dict(d)?,
            None => Default::default(),
        };
        self.end(py, Some(seq), meta)
    }

    /// Gives the buffer back unsent.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        self.end(py, None, Default::default())
    }

    /// Whether the loan has ended (published or given back).
    #[getter]
    fn ended(&self) -> bool {
        self.shared.ended()
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Gives the buffer back unsent if it was not published.
    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        if !self.ended() {
            self.end(py, None, Default::default())?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<frameshare.Loan of buffer {}{}>",
            self.id,
            if self.ended() { " (ended)" } else { "" }
        )
    }
}

impl Drop for PyLoan {
    fn drop(&mut self) {
        if !self.ended() {
            Python::attach(|py| {
                if let Err(e) = self.end(py, None, Default::default()) {
                    e.write_unraisable(py, None);
                }
            });
        }
    }
}
