//! The `framesharesink` element: properties, caps, the pool it proposes upstream, and a
//! service thread that answers consumers (joins, releases) while upstream is blocked waiting
//! for a buffer — upstream's buffers come back to it only through that thread.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use frameshare::alloc::AllocatorSpec;
use frameshare::bus::{PublishError, Publisher, PublisherOptions, StreamName, Waker};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use super::publish::{Outcome, Outlet, OutletError, OutletStats};
use crate::format;
use crate::pool::{FramesharePool, Registry};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "framesharesink",
        gst::DebugColorFlags::empty(),
        Some("frameshare stream publisher"),
    )
});

const DEFAULT_ALLOC: &str = "memfd";
const DEFAULT_POOL_BUFFERS: u32 = 4;
/// Most buffers upstream may take from the proposed pool (the protocol has 64 ids).
const MAX_POOL_BUFFERS: u32 = 16;

#[derive(Debug, Clone)]
struct Settings {
    stream: Option<String>,
    socket: Option<PathBuf>,
    alloc: String,
    wait_for_consumers: u32,
    pool_buffers: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream: None,
            socket: None,
            alloc: DEFAULT_ALLOC.into(),
            wait_for_consumers: 0,
            pool_buffers: DEFAULT_POOL_BUFFERS,
        }
    }
}

/// The thread that serves consumers between frames.
struct Service {
    stop: Arc<AtomicBool>,
    wake: OwnedFd,
    thread: JoinHandle<()>,
}

#[derive(Default)]
pub struct FrameshareSink {
    settings: Mutex<Settings>,
    outlet: Arc<Mutex<Option<Outlet>>>,
    info: Mutex<Option<gst_video::VideoInfo>>,
    registry: Registry,
    waker: Mutex<Option<Waker>>,
    service: Mutex<Option<Service>>,
    flushing: Arc<AtomicBool>,
    consumers_met: AtomicBool,
    published: AtomicU64,
    copies: AtomicU64,
    bytes_copied: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[glib::object_subclass]
impl ObjectSubclass for FrameshareSink {
    const NAME: &'static str = "GstFrameshareSink";
    type Type = super::FrameshareSink;
    type ParentType = gst_base::BaseSink;
}

impl ObjectImpl for FrameshareSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("stream")
                    .nick("Stream name")
                    .blurb(
                        "Publish under this stream name (its socket in $XDG_RUNTIME_DIR/frameshare/, \
                         /run/frameshare/ for root, or $FRAMESHARE_RUNTIME_DIR); consumers \
                         connect with `frameshare consume --stream NAME` or framesharesrc",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("socket")
                    .nick("Socket path")
                    .blurb("Listen at this socket path instead of a stream name")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("alloc")
                    .nick("Allocator")
                    .blurb(
                        "Memory of the buffer pool offered to upstream (and of copies): memfd, \
                         posix-shm, dma-heap[:NAME], udmabuf, auto",
                    )
                    .default_value(Some(DEFAULT_ALLOC))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("wait-for-consumers")
                    .nick("Wait for consumers")
                    .blurb(
                        "Hold the first frame until this many consumers joined (0: publish at \
                         once; frames nobody takes go straight back upstream)",
                    )
                    .maximum(64)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("pool-buffers")
                    .nick("Pool buffers")
                    .blurb("Buffers the pool proposed to upstream starts with")
                    .minimum(2)
                    .maximum(MAX_POOL_BUFFERS)
                    .default_value(DEFAULT_POOL_BUFFERS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("published")
                    .nick("Frames published")
                    .blurb("Frames published so far")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("copies")
                    .nick("Frames copied")
                    .blurb(
                        "Frames that had to be copied (upstream memory that was neither fd \
                         memory nor from the proposed pool); 0 on the zero-copy paths",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("bytes-copied")
                    .nick("Bytes copied")
                    .blurb("Pixel bytes copied so far; 0 on the zero-copy paths")
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        match pspec.name() {
            "stream" => s.stream = value.get().expect("type checked upstream"),
            "socket" => {
                s.socket = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .map(PathBuf::from)
            }
            "alloc" => {
                s.alloc = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_else(|| DEFAULT_ALLOC.into())
            }
            "wait-for-consumers" => s.wait_for_consumers = value.get().expect("type checked"),
            "pool-buffers" => s.pool_buffers = value.get().expect("type checked"),
            other => unreachable!("no property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "stream" => s.stream.to_value(),
            "socket" => s
                .socket
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            "alloc" => s.alloc.to_value(),
            "wait-for-consumers" => s.wait_for_consumers.to_value(),
            "pool-buffers" => s.pool_buffers.to_value(),
            "published" => self.published.load(Ordering::Relaxed).to_value(),
            "copies" => self.copies.load(Ordering::Relaxed).to_value(),
            "bytes-copied" => self.bytes_copied.load(Ordering::Relaxed).to_value(),
            other => unreachable!("no property {other}"),
        }
    }
}

impl GstObjectImpl for FrameshareSink {}

impl ElementImpl for FrameshareSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "frameshare sink",
                "Sink/Video",
                "Publishes video frames as a frameshare stream, without copying: dma-bufs are \
                 shared as they are, system memory is written by upstream into the shared \
                 buffers of the pool this element proposes",
                "frameshare developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &format::template_caps(),
            )
            .expect("a valid template")]
        });
        TEMPLATES.as_ref()
    }
}

impl FrameshareSink {
    fn alloc_spec(&self) -> Result<AllocatorSpec, gst::ErrorMessage> {
        let name = lock(&self.settings).alloc.clone();
        name.parse::<AllocatorSpec>()
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ["alloc={name}: {e}"]))
    }

    /// Posts the counters as an element message `frameshare-sink-stats` (what `gst-launch-1.0
    /// -m` prints): at EOS and when stopping.
    fn post_stats(&self, stats: OutletStats) {
        let _ = self.obj().post_message(
            gst::message::Element::builder(
                gst::Structure::builder("frameshare-sink-stats")
                    .field("published", stats.published)
                    .field("shared", stats.shared)
                    .field("copies", stats.copies)
                    .field("bytes-copied", stats.bytes_copied)
                    .build(),
            )
            .src(&*self.obj())
            .build(),
        );
    }

    fn update_stats(&self, s: OutletStats) {
        self.published.store(s.published, Ordering::Relaxed);
        self.copies.store(s.copies, Ordering::Relaxed);
        self.bytes_copied.store(s.bytes_copied, Ordering::Relaxed);
    }

    fn flow_error(&self, e: OutletError) -> gst::FlowError {
        match e {
            OutletError::Flushing | OutletError::Publish(PublishError::Interrupted) => {
                gst::FlowError::Flushing
            }
            e => {
                gst::element_imp_error!(self, gst::ResourceError::Write, ["{e}"]);
                gst::FlowError::Error
            }
        }
    }

    /// Waits (interruptibly) until `n` consumers joined.
    fn wait_for_consumers(&self, outlet: &mut Outlet, n: usize) -> Result<(), gst::FlowError> {
        gst::info!(CAT, imp = self, "waiting for {n} consumer(s)");
        loop {
            if self.flushing.load(Ordering::Acquire) {
                return Err(gst::FlowError::Flushing);
            }
            match outlet
                .publisher_mut()
                .wait_for_consumers(n, Some(Duration::from_millis(100)))
            {
                Ok(true) => return Ok(()),
                Ok(false) | Err(PublishError::Interrupted) => {}
                Err(e) => return Err(self.flow_error(e.into())),
            }
        }
    }

    /// Starts the thread serving the outlet's consumers; `epoll` is a duplicate of its
    /// publisher's fd (readable when there is work).
    fn start_service(&self, epoll: OwnedFd) -> Result<(), gst::ErrorMessage> {
        let (stop_r, stop_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| gst::error_msg!(gst::ResourceError::Failed, ["pipe: {e}"]))?;
        let stop = Arc::new(AtomicBool::new(false));
        let outlet = self.outlet.clone();
        let flushing = self.flushing.clone();
        let waker = lock(&self.waker).clone();
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("framesharesink".into())
            .spawn(move || {
                use rustix::event::{poll, PollFd, PollFlags, Timespec};
                let tick = Timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                };
                while !stopping.load(Ordering::Acquire) {
                    let mut fds = [
                        PollFd::new(&epoll, PollFlags::IN),
                        PollFd::new(&stop_r, PollFlags::IN),
                    ];
                    let _ = poll(&mut fds, Some(&tick));
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    let mut g = lock(&outlet);
                    let Some(o) = g.as_mut() else { continue };
                    match o.service() {
                        Ok(()) => {}
                        // The wake was meant for a wait in `render`: pass it on.
                        Err(PublishError::Interrupted) => {
                            if flushing.load(Ordering::Acquire) {
                                if let Some(w) = &waker {
                                    w.wake();
                                }
                            }
                        }
                        Err(e) => log::warn!("framesharesink: serving consumers: {e}"),
                    }
                }
            })
            .map_err(|e| gst::error_msg!(gst::ResourceError::Failed, ["thread: {e}"]))?;
        *lock(&self.service) = Some(Service {
            stop,
            wake: stop_w,
            thread,
        });
        Ok(())
    }

    fn stop_service(&self) {
        if let Some(s) = lock(&self.service).take() {
            s.stop.store(true, Ordering::Release);
            let _ = rustix::io::write(&s.wake, &[1]);
            let _ = s.thread.join();
        }
    }
}

impl BaseSinkImpl for FrameshareSink {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let spec = self.alloc_spec()?;
        let opts = PublisherOptions {
            name: format!("gstreamer:{}", self.obj().name()),
            ..PublisherOptions::default()
        };
        let publisher = match (&settings.stream, &settings.socket) {
            (Some(name), None) => {
                let name = StreamName::new(name).map_err(|e| {
                    gst::error_msg!(gst::LibraryError::Settings, ["stream={name}: {e}"])
                })?;
                Publisher::bind(&name, opts)
            }
            (None, Some(path)) => Publisher::listen(path, opts),
            _ => {
                return Err(gst::error_msg!(
                    gst::LibraryError::Settings,
                    ["set one of stream=NAME or socket=PATH"]
                ))
            }
        }
        .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ["{e}"]))?;
        if let Some(p) = publisher.socket_path() {
            gst::info!(CAT, imp = self, "publishing at {}", p.display());
        }
        *lock(&self.waker) = Some(publisher.waker());
        let epoll = rustix::io::fcntl_dupfd_cloexec(publisher.as_fd(), 0).map_err(|e| {
            gst::error_msg!(
                gst::ResourceError::Failed,
                ["dup of the publisher's fd: {e}"]
            )
        })?;
        // The outlet first: the service thread serves whatever is there.
        *lock(&self.outlet) = Some(Outlet::new(publisher, self.registry.clone(), spec));
        self.start_service(epoll)?;
        self.consumers_met.store(false, Ordering::Release);
        self.flushing.store(false, Ordering::Release);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.stop_service();
        let outlet = lock(&self.outlet).take();
        if let Some(o) = outlet {
            let stats = o.stats();
            self.update_stats(stats);
            self.post_stats(stats);
            if let Err(e) = o.finish() {
                gst::warning!(CAT, imp = self, "ending the stream: {e}");
            }
        }
        *lock(&self.waker) = None;
        Ok(())
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(caps)
            .map_err(|_| gst::loggable_error!(CAT, "caps {caps} are not raw video"))?;
        if format::fourcc_of(info.format()).is_none() {
            return Err(gst::loggable_error!(CAT, "format {:?}", info.format()));
        }
        let old = lock(&self.info).replace(info.clone());
        if old.is_some_and(|o| o != info) {
            if let Some(o) = lock(&self.outlet).as_mut() {
                o.reset()
                    .map_err(|e| gst::loggable_error!(CAT, "format change: {e}"))?;
            }
        }
        Ok(())
    }

    fn propose_allocation(
        &self,
        query: &mut gst::query::Allocation,
    ) -> Result<(), gst::LoggableError> {
        let (Some(caps), need_pool) = query.get() else {
            return Err(gst::loggable_error!(CAT, "allocation query without caps"));
        };
        let caps = caps.to_owned();
        let info = gst_video::VideoInfo::from_caps(&caps)
            .map_err(|_| gst::loggable_error!(CAT, "caps {caps} are not raw video"))?;
        let dmabuf_caps = caps
            .features(0)
            .is_some_and(|f| f.contains(gst_allocators::CAPS_FEATURE_MEMORY_DMABUF));
        query.add_allocation_meta::<gst_video::VideoMeta>(None);
        if need_pool && !dmabuf_caps {
            let spec = self
                .alloc_spec()
                .map_err(|e| gst::loggable_error!(CAT, "{e}"))?;
            let min = lock(&self.settings).pool_buffers;
            let size = info.size() as u32;
            let pool = FramesharePool::new(spec, self.registry.clone());
            let mut config = pool.config();
            config.set_params(Some(&caps), size, min, MAX_POOL_BUFFERS);
            config.add_option(gst_video::BUFFER_POOL_OPTION_VIDEO_META.as_ref());
            pool.set_config(config)
                .map_err(|_| gst::loggable_error!(CAT, "the pool refused caps {caps}"))?;
            query.add_allocation_pool(Some(&pool), size, min, MAX_POOL_BUFFERS);
            gst::debug!(
                CAT,
                imp = self,
                "proposed a pool of frameshare buffers for {caps}"
            );
        }
        Ok(())
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let info = lock(&self.info)
            .clone()
            .ok_or(gst::FlowError::NotNegotiated)?;
        let want = lock(&self.settings).wait_for_consumers as usize;
        let mut g = lock(&self.outlet);
        let outlet = g.as_mut().ok_or(gst::FlowError::Flushing)?;
        if want > 0 && !self.consumers_met.load(Ordering::Acquire) {
            self.wait_for_consumers(outlet, want)?;
            self.consumers_met.store(true, Ordering::Release);
        }
        let flushing = || self.flushing.load(Ordering::Acquire);
        let outcome = outlet
            .publish(buffer, &info, &flushing)
            .map_err(|e| self.flow_error(e))?;
        let stats = outlet.stats();
        let why = outlet.why_copied().map(str::to_owned);
        drop(g);
        self.update_stats(stats);
        if let Outcome::Shared { id, new: true, key } = &outcome {
            gst::debug!(
                CAT,
                imp = self,
                "new buffer {id}: (dev, inode, offset) {key:?}"
            );
        }
        if let Outcome::Copied { first: true } = outcome {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Format,
                [
                    "copying frames: {} (upstream did not take the proposed pool); the \
                     `copies` and `bytes-copied` properties count them",
                    why.unwrap_or_default()
                ]
            );
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view() {
            let stats = lock(&self.outlet).as_ref().map(|o| o.stats());
            if let Some(stats) = stats {
                self.update_stats(stats);
                self.post_stats(stats);
            }
        }
        self.parent_event(event)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(true, Ordering::Release);
        if let Some(w) = lock(&self.waker).as_ref() {
            w.wake();
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(false, Ordering::Release);
        Ok(())
    }
}
