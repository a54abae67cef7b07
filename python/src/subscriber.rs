//! `frameshare.Subscriber` and `frameshare.Frame`: the consumer end of a stream, frames handed
//! out one at a time with their planes as read-only NumPy arrays over the mapped buffer.
//!
//! Each buffer is mapped once, read-only, on its first frame (and again only after a mapping
//! was detached, see [`crate::planes`]); a frame takes a read guard on it (the dma-buf CPU
//! access bracket) and gives it back with the frame. Taking the next frame ends the one
//! before; so do the end of a `with` block, `frame.release()` and the frame being garbage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use frameshare::buffer::KindSet;
use frameshare::buffer::{BufferMapping, SharedRead};
use frameshare::bus::subscriber::Target;
use frameshare::bus::{
    Frame, Policy, StreamName, SubscribeError, Subscriber, SubscriberEvent, SubscriberOptions,
};
use frameshare::meta::FrameMeta;
use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::planes::Views;
use crate::{error, warn_detached, FrameReleasedError};

/// How long one wait lasts before Python gets to run its signal handlers (Ctrl-C).
const SLICE: Duration = Duration::from_millis(100);

/// Counters shared by a subscriber and its frames.
#[derive(Debug, Default)]
struct SubStats {
    frames: AtomicU64,
    detached: AtomicU64,
    bytes_copied: AtomicU64,
}

/// What the producer said of itself.
#[derive(Debug, Clone, Default)]
struct Producer {
    name: String,
    stream: Option<String>,
    pattern: Option<String>,
    pid: u32,
    uid: u32,
}

/// A subscription to a named stream. Iterate it for frames (`for frame in sub:`); iteration
/// ends when the stream does. Taking the next frame ends the one before it, so at most one
/// frame is out at a time.
///
/// `name`: a stream name (or a socket path, with a `/`). `policy`: `"wait"` (the producer
/// waits for us), `"drop"` (frames are skipped while we are busy) or `"latest"` (always the
/// newest frame). `reconnect`: wait for a producer that went away and resume. `timeout`:
/// seconds to wait for the stream to appear (`None`: as long as it takes).
///
/// Frames stay zero-copy as long as no array outlives its frame. An array still alive when its
/// frame ends is *detached*: its memory is replaced by a private copy of that frame (counted
/// in `stats["bytes_copied"]`, with a `DetachedArrayWarning`), so it never shows a later frame.
/// Hold a frame no longer than the producer's stall timeout (10 s unless it says otherwise): a
/// consumer that does is evicted, and the producer reuses its buffers.
#[pyclass(module = "frameshare", name = "Subscriber")]
pub struct PySubscriber {
    sub: Option<Subscriber>,
    /// Read-only mappings by buffer id, made on a buffer's first frame.
    mappings: Vec<Option<Arc<BufferMapping>>>,
    current: Option<Py<PyFrame>>,
    producer: Option<Producer>,
    ended: Option<String>,
    stats: Arc<SubStats>,
}

impl PySubscriber {
    /// Waits (GIL released, in slices so Ctrl-C works) for the next event.
    fn next_event(
        &mut self,
        py: Python<'_>,
        deadline: Option<Instant>,
    ) -> PyResult<Option<SubscriberEvent>> {
        loop {
            let Some(sub) = self.sub.as_mut() else {
                return Ok(None);
            };
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
                None => SLICE,
            };
            match py.detach(|| sub.next(Some(slice))) {
                Ok(ev) => return Ok(Some(ev)),
                Err(SubscribeError::Timeout(_)) => {
                    py.check_signals()?;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(PyTimeoutError::new_err("no frame within the timeout"));
                    }
                }
                Err(SubscribeError::Ended) => {
                    self.sub = None;
                    return Ok(None);
                }
                Err(e) => {
                    self.sub = None;
                    return Err(error(&e));
                }
            }
        }
    }

    /// Handles events until a frame or the end of the stream (`None`).
    fn next_frame_inner(
        &mut self,
        py: Python<'_>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Py<PyFrame>>> {
        self.end_current(py)?;
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        while let Some(ev) = self.next_event(py, deadline)? {
            match ev {
                SubscriberEvent::Connected {
                    producer,
                    credentials,
                } => {
                    self.producer = Some(Producer {
                        name: producer.name,
                        stream: producer.stream,
                        pattern: producer.pattern,
                        pid: credentials.pid,
                        uid: credentials.uid,
                    })
                }
                SubscriberEvent::BufferAdded { id, .. } | SubscriberEvent::BufferRemoved { id } => {
                    if let Some(m) = self.mappings.get_mut(id as usize) {
                        *m = None;
                    }
                }
                SubscriberEvent::Restarting { .. } => {
                    self.mappings.iter_mut().for_each(|m| *m = None);
                }
                SubscriberEvent::EndOfStream { .. } => {}
                SubscriberEvent::Ended { reason, .. } => {
                    self.ended = Some(reason);
                    self.sub = None;
                    return Ok(None);
                }
                SubscriberEvent::Frame(frame) => {
                    let f = Py::new(py, self.wrap(frame)?)?;
                    self.current = Some(f.clone_ref(py));
                    self.stats.frames.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(f));
                }
            }
        }
        Ok(None)
    }

    /// The read-only mapping of buffer `id` (made on its first frame, or anew after a detach).
    fn mapping(&mut self, frame: &Frame) -> PyResult<Arc<BufferMapping>> {
        let i = frame.id as usize;
        if self.mappings.len() <= i {
            self.mappings.resize_with(i + 1, || None);
        }
        match &self.mappings[i] {
            Some(m) if !m.is_detached() => Ok(m.clone()),
            _ => {
                let m = Arc::new(frame.buffer().map(false).map_err(|e| error(&e))?);
                self.mappings[i] = Some(m.clone());
                Ok(m)
            }
        }
    }

    fn wrap(&mut self, frame: Frame) -> PyResult<PyFrame> {
        let mapping = self.mapping(&frame)?;
        let read = mapping.read_shared().map_err(|e| error(&e))?;
        let layout = frame.buffer().layout().clone();
        let regions: Vec<(*const u8, usize)> =
            (0..layout.fd_count()).map(|i| read.region_ptr(i)).collect();
        let what = format!("frame {} (buffer {})", frame.seq, frame.id);
        let views =
            Views::new(mapping, &regions, &layout, false, what).map_err(crate::Error::new_err)?;
        Ok(PyFrame {
            seq: frame.seq,
            buffer_id: frame.id,
            timestamp_ns: frame.timestamp_ns,
            received_ns: frame.received_ns,
            format: layout.fourcc().to_string(),
            width: layout.width(),
            height: layout.height(),
            meta: frame.meta.clone(),
            state: Mutex::new(FrameState {
                held: Some((frame, read)),
                views,
                planes: None,
            }),
            stats: self.stats.clone(),
        })
    }

    fn end_current(&mut self, py: Python<'_>) -> PyResult<()> {
        match self.current.take() {
            Some(f) => f.get().end(py),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl PySubscriber {
    #[new]
    #[pyo3(signature = (name, policy = "wait", reconnect = false, timeout = Some(10.0)))]
    fn new(
        py: Python<'_>,
        name: &str,
        policy: &str,
        reconnect: bool,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let policy: Policy = policy.parse().map_err(PyValueError::new_err)?;
        let target = if name.contains('/') {
            Target::Path(name.into())
        } else {
            Target::Stream(StreamName::new(name).map_err(|e| error(&e))?)
        };
        let opts = SubscriberOptions {
            name: "python".into(),
            // Acquire fences are waited for by the producer before the frame is sent to us:
            // the pixels are ready when the arrays are made.
            fences: false,
            kinds: KindSet::all(),
            policy,
            reconnect,
            connect_timeout: timeout.map(|t| Duration::from_secs_f64(t.max(0.0))),
            ..SubscriberOptions::default()
        };
        let sub = Subscriber::to(target, opts).map_err(|e| error(&e))?;
        let mut me = PySubscriber {
            sub: Some(sub),
            mappings: Vec::new(),
            current: None,
            producer: None,
            ended: None,
            stats: Arc::default(),
        };
        // Connect now, so that a missing stream fails here and `producer` is known at once.
        while me.producer.is_none() {
            match me.next_event(py, None)? {
                Some(SubscriberEvent::Connected {
                    producer,
                    credentials,
                }) => {
                    me.producer = Some(Producer {
                        name: producer.name,
                        stream: producer.stream,
                        pattern: producer.pattern,
                        pid: credentials.pid,
                        uid: credentials.uid,
                    })
                }
                Some(SubscriberEvent::Ended { reason, .. }) => {
                    return Err(crate::Error::new_err(format!(
                        "the stream ended at once: {reason}"
                    )))
                }
                Some(_) => {}
                None => return Err(crate::Error::new_err("the stream ended before it began")),
            }
        }
        Ok(me)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyFrame>>> {
        self.next_frame_inner(py, None)
    }

    /// The next frame, ending the one before; `None` when the stream has ended. Raises
    /// `TimeoutError` if none came within `timeout` seconds (`None`: wait as long as it takes).
    #[pyo3(signature = (timeout = None))]
    fn next_frame(
        &mut self,
        py: Python<'_>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Py<PyFrame>>> {
        self.next_frame_inner(py, timeout)
    }

    /// What the producer said of itself: `name`, `stream`, `pattern` (the generator pattern,
    /// when its frames are generated), `pid` and `uid` (kernel-recorded).
    #[getter]
    fn producer<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(p) = &self.producer else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("name", &p.name)?;
        d.set_item("stream", &p.stream)?;
        d.set_item("pattern", &p.pattern)?;
        d.set_item("pid", p.pid)?;
        d.set_item("uid", p.uid)?;
        Ok(Some(d))
    }

    /// Why the stream ended (the producer's words), once it has.
    #[getter]
    fn ended(&self) -> Option<String> {
        self.ended.clone()
    }

    /// Counters: `frames` received, `frames_detached` (frames whose arrays outlived them),
    /// `bytes_copied` (what detaching them copied: 0 when every array died with its frame).
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("frames", self.stats.frames.load(Ordering::Relaxed))?;
        d.set_item(
            "frames_detached",
            self.stats.detached.load(Ordering::Relaxed),
        )?;
        d.set_item(
            "bytes_copied",
            self.stats.bytes_copied.load(Ordering::Relaxed),
        )?;
        Ok(d)
    }

    /// A file descriptor that becomes readable when the subscriber has something (for
    /// `selectors`, asyncio's `add_reader`); valid until `close()`.
    fn fileno(&self) -> PyResult<i32> {
        use std::os::fd::{AsFd, AsRawFd};
        match &self.sub {
            Some(s) => Ok(s.as_fd().as_raw_fd()),
            None => Err(crate::Error::new_err("the subscriber is closed")),
        }
    }

    /// Ends the current frame and leaves the stream (the producer is told).
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        let ended = self.end_current(py);
        self.sub = None;
        self.mappings.clear();
        ended
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&mut self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

impl Drop for PySubscriber {
    fn drop(&mut self) {
        // The frame out ends (its live arrays detached) while the session can still give it
        // back: a subscriber that goes away frees its buffers for the producer to reuse.
        if let Some(f) = self.current.take() {
            Python::attach(|py| {
                if let Err(e) = f.get().end(py) {
                    e.write_unraisable(py, None);
                }
            });
        }
    }
}

/// The frame held, and its planes.
struct FrameState {
    /// The frame and its read guard, until it ends.
    held: Option<(Frame, SharedRead)>,
    views: Arc<Views>,
    /// The planes' arrays, made on first use.
    planes: Option<Py<PyTuple>>,
}

/// A frame on loan from the producer. `planes`: each plane as a read-only NumPy array over
/// the mapped buffer (no copy) — packed RGB formats as (height, width, bytes per pixel), the
/// others (NV12's Y and UV planes, YUYV, UYVY) as (rows, bytes per row); rows keep the
/// buffer's stride. `meta`: the frame's metadata as a dict. The frame goes back to the
/// producer when it ends: at the end of a `with` block, on `release()`, when the next frame is
/// taken, or when it is garbage.
#[pyclass(frozen, module = "frameshare", name = "Frame")]
pub struct PyFrame {
    /// Sequence number.
    #[pyo3(get)]
    seq: u64,
    /// The buffer holding it (frames cycle through the producer's buffers).
    #[pyo3(get)]
    buffer_id: u32,
    /// When the producer had it ready, in ns on `meta["clock"]`.
    #[pyo3(get)]
    timestamp_ns: u64,
    /// When it arrived here (CLOCK_MONOTONIC ns).
    #[pyo3(get)]
    received_ns: u64,
    /// Pixel format (a DRM fourcc: `XR24`, `NV12`, `YUYV`, …).
    #[pyo3(get)]
    format: String,
    /// Width in pixels.
    #[pyo3(get)]
    width: u32,
    /// Height in pixels.
    #[pyo3(get)]
    height: u32,
    meta: FrameMeta,
    state: Mutex<FrameState>,
    stats: Arc<SubStats>,
}

impl PyFrame {
    fn lock(&self) -> MutexGuard<'_, FrameState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the frame: its arrays are dropped from the cache, any still alive detached, and
    /// the frame goes back to the producer.
    fn end(&self, py: Python<'_>) -> PyResult<()> {
        // Dropped outside the lock: the arrays' deaths call back into the views.
        let planes = self.lock().planes.take();
        drop(planes);
        let mut st = self.lock();
        let Some((frame, read)) = st.held.take() else {
            return Ok(());
        };
        match st.views.close() {
            Ok(copied) => {
                drop(st);
                drop(read); // the CPU access bracket ends before the frame goes back
                let released = frame.release(None);
                if copied > 0 {
                    self.stats.detached.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes_copied.fetch_add(copied, Ordering::Relaxed);
                    warn_detached(py, &format!("frame {}", self.seq), copied)?;
                }
                released.map_err(|e| error(&e))
            }
            Err(e) => {
                // Never recycle the buffer under a live array: keep the frame until the
                // arrays are gone.
                let views = st.views.clone();
                drop(st);
                views.keep_until_unexported(Box::new((frame, read)));
                Err(error(&e))
            }
        }
    }
}

#[pymethods]
impl PyFrame {
    /// The planes as read-only NumPy arrays over the buffer (a tuple; made once per frame).
    /// Raises `FrameReleasedError` once the frame has ended.
    #[getter]
    fn planes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let views = {
            let st = self.lock();
            if st.held.is_none() {
                return Err(FrameReleasedError::new_err(format!(
                    "frame {} was released: its planes are gone",
                    self.seq
                )));
            }
            if let Some(p) = &st.planes {
                return Ok(p.bind(py).clone());
            }
            st.views.clone()
        };
        let arrays = views.arrays(py)?;
        self.lock().planes = Some(arrays.clone().unbind());
        Ok(arrays)
    }

    /// The frame's metadata (see the module docs for the keys).
    #[getter]
    fn meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        crate::meta::to_dict(py, &self.meta)
    }

    /// Whether the frame has ended (gone back to the producer).
    #[getter]
    fn released(&self) -> bool {
        self.lock().held.is_none()
    }

    /// Live exports of this frame's planes (arrays and memoryviews made from them, counted
    /// once per family): what would be detached if the frame ended now.
    #[getter]
    fn exports(&self) -> usize {
        self.lock().views.exports()
    }

    /// Gives the frame back to the producer now (arrays still alive are detached first).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.end(py)
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.end(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<frameshare.Frame {} {} {}x{} buffer {}{}>",
            self.seq,
            self.format,
            self.width,
            self.height,
            self.buffer_id,
            if self.released() { " released" } else { "" }
        )
    }
}

impl Drop for PyFrame {
    fn drop(&mut self) {
        // Garbage: the frame ends like any other (arrays that outlive it are detached).
        if self.lock().held.is_some() {
            Python::attach(|py| {
                if let Err(e) = self.end(py) {
                    e.write_unraisable(py, None);
                }
            });
        }
    }
}
