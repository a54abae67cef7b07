//! The `framesharesrc` element. Each announced buffer's fds are wrapped once as `GstMemory`
//! (dma-bufs through the dma-buf allocator, memfd and POSIX shm through the fd allocator) and
//! kept; every frame becomes a new `GstBuffer` holding those memories (so a memory is never
//! writable downstream: it is shared), a `GstVideoMeta`, and the frame itself, given back to
//! the producer when the `GstBuffer` is freed. SysV segments have no fd: their frames are
//! wrapped memory over the segment's mapping. Nothing is copied.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use frameshare::buffer::SharedRead;
use frameshare::bus::subscriber::Target;
use frameshare::bus::{
    Frame, Policy, SubscribeError, Subscriber, SubscriberEvent, SubscriberOptions, Waker,
};
use frameshare::{Buffer, BufferKind, FrameLayout};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;

use super::SrcPolicy;
use crate::{fdmem, format};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "framesharesrc",
        gst::DebugColorFlags::empty(),
        Some("frameshare stream consumer"),
    )
});

const DEFAULT_CONNECT_TIMEOUT: u32 = 10;

#[derive(Debug, Clone)]
struct Settings {
    stream: Option<String>,
    socket: Option<PathBuf>,
    policy: SrcPolicy,
    reconnect: bool,
    connect_timeout: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream: None,
            socket: None,
            policy: SrcPolicy::Wait,
            reconnect: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// A buffer of the stream, as GStreamer memory.
struct Wrapped {
    /// One memory per fd (empty for SysV: wrapped per frame).
    memories: Vec<gst::Memory>,
    /// Where each memory starts in a `GstBuffer` made of them all.
    starts: Vec<u64>,
}

#[derive(Default)]
struct State {
    subscriber: Option<Subscriber>,
    buffers: HashMap<u32, Wrapped>,
    layout: Option<FrameLayout>,
}

/// A frame's pixels on a SysV segment, as wrapped memory (it keeps the frame too).
struct SysvFrame {
    read: SharedRead,
    _frame: Frame,
}

impl AsRef<[u8]> for SysvFrame {
    fn as_ref(&self) -> &[u8] {
        self.read.bytes(0)
    }
}

#[derive(Default)]
pub struct FrameshareSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    caps: Mutex<Option<gst::Caps>>,
    waker: Mutex<Option<Waker>>,
    flushing: AtomicBool,
    frames: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[glib::object_subclass]
impl ObjectSubclass for FrameshareSrc {
    const NAME: &'static str = "GstFrameshareSrc";
    type Type = super::FrameshareSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for FrameshareSrc {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(true);
        obj.set_format(gst::Format::Time);
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("stream")
                    .nick("Stream name")
                    .blurb("Subscribe to this stream name (as `frameshare consume --stream`)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("socket")
                    .nick("Socket path")
                    .blurb("Connect to this socket path instead of a stream name")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("policy", SrcPolicy::Wait)
                    .nick("Policy")
                    .blurb(
                        "When frames come faster than downstream gives them back: wait (every \
                         frame), drop (skip while busy), latest (always the newest)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("reconnect")
                    .nick("Reconnect")
                    .blurb(
                        "When the producer goes away (not a clean end), wait for it to come \
                         back and go on; otherwise that is the end of the stream (EOS)",
                    )
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("connect-timeout")
                    .nick("Connect timeout")
                    .blurb("Seconds to wait for the stream to appear (0: as long as it takes)")
                    .default_value(DEFAULT_CONNECT_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("frames")
                    .nick("Frames")
                    .blurb("Frames pushed so far (each wraps the shared memory: no copies)")
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
            "policy" => s.policy = value.get().expect("type checked upstream"),
            "reconnect" => s.reconnect = value.get().expect("type checked upstream"),
            "connect-timeout" => s.connect_timeout = value.get().expect("type checked upstream"),
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
            "policy" => s.policy.to_value(),
            "reconnect" => s.reconnect.to_value(),
            "connect-timeout" => s.connect_timeout.to_value(),
            "frames" => self.frames.load(Ordering::Relaxed).to_value(),
            other => unreachable!("no property {other}"),
        }
    }
}

impl GstObjectImpl for FrameshareSrc {}

impl ElementImpl for FrameshareSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "frameshare source",
                "Source/Video",
                "Reads a frameshare stream: each buffer wraps the producer's shared memory \
                 (dma-buf, memfd, POSIX or SysV shm) without a copy, and the frame goes back \
                 to the producer when the buffer is freed",
                "frameshare developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &format::template_caps(),
            )
            .expect("a valid template")]
        });
        TEMPLATES.as_ref()
    }
}

impl FrameshareSrc {
    /// Wraps buffer `buffer`'s fds as memory (once per buffer).
    fn wrap(&self, buffer: &Buffer) -> Result<Wrapped, gst::FlowError> {
        let mut w = Wrapped {
            memories: Vec::new(),
            starts: Vec::new(),
        };
        if buffer.kind() == BufferKind::SysvShm {
            return Ok(w);
        }
        let mut start = 0u64;
        for (i, fd) in buffer.fds().into_iter().enumerate() {
            let info = frameshare::buffer::inspect_fd(buffer.kind(), i, fd).map_err(|e| {
                gst::element_imp_error!(self, gst::ResourceError::Read, ["buffer fd {i}: {e}"]);
                gst::FlowError::Error
            })?;
            let owned = fd.try_clone_to_owned().map_err(|e| {
                gst::element_imp_error!(self, gst::ResourceError::Read, ["dup: {e}"]);
                gst::FlowError::Error
            })?;
            let mem = fdmem::wrap_fd(owned, info.size as usize, buffer.kind().is_dma_buf())
                .map_err(|e| {
                    gst::element_imp_error!(self, gst::ResourceError::Read, ["{e}"]);
                    gst::FlowError::Error
                })?;
            w.starts.push(start);
            start += info.size;
            w.memories.push(mem);
        }
        Ok(w)
    }

    /// The `GstBuffer` for `frame`: the memories of its buffer, its video meta, its timestamp.
    fn buffer_for(&self, state: &State, mut frame: Frame) -> Result<gst::Buffer, gst::FlowError> {
        let layout = frame.buffer().layout().clone();
        let format = format::video_format_of(layout.fourcc()).ok_or_else(|| {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                [
                    "the stream's format {} has no GStreamer name here",
                    layout.fourcc()
                ]
            );
            gst::FlowError::NotNegotiated
        })?;
        // Frames come only once their acquire fence signalled (we asked for no fences).
        drop(frame.take_acquire_fence());
        let pts = self.pts_of(&frame);
        let seq = frame.seq;
        let (mut buffer, starts) = if frame.buffer().kind() == BufferKind::SysvShm {
            let read = frame.read().map_err(|e| {
                gst::element_imp_error!(self, gst::ResourceError::Read, ["{e}"]);
                gst::FlowError::Error
            })?;
            let mem = gst::Memory::from_slice(SysvFrame {
                read,
                _frame: frame,
            });
            let mut b = gst::Buffer::new();
            b.get_mut().expect("new").append_memory(mem);
            (b, vec![0])
        } else {
            let w = state.buffers.get(&frame.id).ok_or_else(|| {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    [
                        "frame {} in buffer {}, which was not announced",
                        frame.seq,
                        frame.id
                    ]
                );
                gst::FlowError::Error
            })?;
            let mut b = gst::Buffer::new();
            {
                let bm = b.get_mut().expect("new");
                for m in &w.memories {
                    bm.append_memory(m.clone());
                }
                fdmem::tie_to_buffer(bm, frame);
            }
            (b, w.starts.clone())
        };
        let bm = buffer.get_mut().expect("ours alone");
        bm.set_pts(pts);
        // The stream's frame number, as video sources number their buffers.
        bm.set_offset(seq);
        bm.set_offset_end(seq + 1);
        let offsets: Vec<usize> = layout
            .planes()
            .iter()
            .map(|p| (starts[p.fd_index as usize] + p.offset) as usize)
            .collect();
        let strides: Vec<i32> = layout.planes().iter().map(|p| p.stride as i32).collect();
        gst_video::VideoMeta::add_full(
            bm,
            gst_video::VideoFrameFlags::empty(),
            format,
            layout.width(),
            layout.height(),
            &offsets,
            &strides,
        )
        .map_err(|e| {
            gst::element_imp_error!(self, gst::StreamError::Format, ["video meta: {e}"]);
            gst::FlowError::Error
        })?;
        Ok(buffer)
    }

    /// The frame's running time: its age on its own clock, taken from the pipeline clock's now.
    fn pts_of(&self, frame: &Frame) -> Option<gst::ClockTime> {
        let obj = self.obj();
        let clock = obj.clock()?;
        let base = obj.base_time()?;
        let age = frame.meta.clock.now_ns().saturating_sub(frame.timestamp_ns);
        clock
            .time()?
            .checked_sub(base)?
            .checked_sub(gst::ClockTime::from_nseconds(age))
            .or(Some(gst::ClockTime::ZERO))
    }

    /// Sets caps for `layout` if they changed: plain `video/x-raw` (dma-buf memory is mappable),
    /// or with the `memory:DMABuf` feature when downstream takes only that.
    fn follow_format(&self, layout: &FrameLayout, dma_buf: bool) -> Result<(), gst::FlowError> {
        let mut caps = format::caps_of(layout, false).ok_or(gst::FlowError::NotNegotiated)?;
        let pad = self.obj().static_pad("src").expect("always there");
        if dma_buf && !pad.peer_query_accept_caps(&caps) {
            let dmabuf = format::caps_of(layout, true).ok_or(gst::FlowError::NotNegotiated)?;
            if pad.peer_query_accept_caps(&dmabuf) {
                caps = dmabuf;
            }
        }
        if lock(&self.caps).as_ref() == Some(&caps) {
            return Ok(());
        }
        gst::info!(CAT, imp = self, "stream format: {caps}");
        *lock(&self.caps) = Some(caps.clone());
        self.obj().set_caps(&caps).map_err(|_| {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ["downstream does not take {caps}"]
            );
            gst::FlowError::NotNegotiated
        })
    }
}

impl BaseSrcImpl for FrameshareSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = lock(&self.settings).clone();
        let target = match (&s.stream, &s.socket) {
            (Some(name), None) => {
                Target::Stream(frameshare::bus::StreamName::new(name).map_err(|e| {
                    gst::error_msg!(gst::LibraryError::Settings, ["stream={name}: {e}"])
                })?)
            }
            (None, Some(path)) => Target::Path(path.clone()),
            _ => {
                return Err(gst::error_msg!(
                    gst::LibraryError::Settings,
                    ["set one of stream=NAME or socket=PATH"]
                ))
            }
        };
        let opts = SubscriberOptions {
            name: format!("gstreamer:{}", self.obj().name()),
            // The producer waits on acquire fences for us: GStreamer 1.22 buffers carry none.
            fences: false,
            policy: match s.policy {
                SrcPolicy::Wait => Policy::Wait,
                SrcPolicy::Drop => Policy::Drop,
                SrcPolicy::Latest => Policy::Latest,
            },
            reconnect: s.reconnect,
            connect_timeout: (s.connect_timeout > 0)
                .then(|| Duration::from_secs(s.connect_timeout.into())),
            formats: format::FORMATS
                .iter()
                .map(|(f, _)| frameshare::format::FormatModifier::linear(*f))
                .collect(),
            ..SubscriberOptions::default()
        };
        let sub = Subscriber::to(target, opts)
            .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ["{e}"]))?;
        *lock(&self.waker) = Some(sub.waker());
        *lock(&self.state) = State {
            subscriber: Some(sub),
            ..State::default()
        };
        *lock(&self.caps) = None;
        self.frames.store(0, Ordering::Relaxed);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // Frames still downstream give themselves back through their own socket handle.
        *lock(&self.state) = State::default();
        *lock(&self.waker) = None;
        Ok(())
    }

    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        let caps = lock(&self.caps)
            .clone()
            .unwrap_or_else(format::template_caps);
        Some(match filter {
            Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
            None => caps,
        })
    }

    fn negotiate(&self) -> Result<(), gst::LoggableError> {
        // Caps come with the first frame (and follow the stream's format changes).
        match lock(&self.caps).clone() {
            Some(caps) => self
                .obj()
                .set_caps(&caps)
                .map_err(|_| gst::loggable_error!(CAT, "downstream does not take {caps}")),
            None => Ok(()),
        }
    }

    fn is_seekable(&self) -> bool {
        false
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

impl PushSrcImpl for FrameshareSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let mut state = lock(&self.state);
        loop {
            if self.flushing.load(Ordering::Acquire) {
                return Err(gst::FlowError::Flushing);
            }
            let sub = state.subscriber.as_mut().ok_or(gst::FlowError::Flushing)?;
            let event = match sub.next(None) {
                Ok(e) => e,
                Err(SubscribeError::Interrupted) => continue,
                Err(SubscribeError::Ended) => return Err(gst::FlowError::Eos),
                Err(e) => {
                    gst::element_imp_error!(self, gst::ResourceError::Read, ["{e}"]);
                    return Err(gst::FlowError::Error);
                }
            };
            match event {
                SubscriberEvent::Connected {
                    producer,
                    credentials,
                } => {
                    gst::info!(
                        CAT,
                        imp = self,
                        "connected to {} (pid {})",
                        producer.name,
                        credentials.pid
                    );
                }
                SubscriberEvent::BufferAdded { id, buffer } => {
                    let w = self.wrap(&buffer)?;
                    state.buffers.insert(id, w);
                }
                SubscriberEvent::BufferRemoved { id } => {
                    state.buffers.remove(&id);
                }
                SubscriberEvent::Frame(frame) => {
                    let layout = frame.buffer().layout().clone();
                    if state.layout.as_ref() != Some(&layout) {
                        self.follow_format(&layout, frame.buffer().kind().is_dma_buf())?;
                        state.layout = Some(layout);
                    }
                    let buffer = self.buffer_for(&state, frame)?;
                    self.frames.fetch_add(1, Ordering::Relaxed);
                    return Ok(CreateSuccess::NewBuffer(buffer));
                }
                SubscriberEvent::EndOfStream { last_seq } => {
                    gst::info!(CAT, imp = self, "end of stream after frame {last_seq}");
                    return Err(gst::FlowError::Eos);
                }
                SubscriberEvent::Restarting { reason } => {
                    gst::warning!(CAT, imp = self, "producer gone ({reason}); waiting for it");
                }
                SubscriberEvent::Ended { code, reason } => {
                    gst::info!(CAT, imp = self, "stream ended ({code}): {reason}");
                    return Err(gst::FlowError::Eos);
                }
            }
        }
    }
}
