//! Subscribers and their frames, for C: `fs_subscriber` connects to a stream and hands out
//! events; `fs_frame` is one frame on loan from the producer: its buffer and planes, a CPU
//! mapping (read-only, ended at release), its fences, a check against the generator, and its
//! release (with an optional release fence). A frame lives on its own: it may be released from
//! any thread, and after its subscriber was freed.

use std::ffi::{c_char, CString};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use frameshare::buffer::SharedRead;
use frameshare::bus::subscriber::Target;
use frameshare::bus::{Frame, Policy, StreamName, Subscriber, SubscriberEvent, SubscriberOptions};
use frameshare::source::{Pattern, Scene};
use frameshare::sync::SyncFile;
use frameshare::FrameLayout;

use crate::handle::{self, call, out_ptr, with_mut, with_ref, Error, Handle, Kind};
use crate::{fs_buffer_info, fs_mapping, fs_status, FS_ACQUIRE_TIMEOUT_MS};

/// A consumer's policy when frames come faster than it gives them back (`FS_POLICY_*`).
pub type fs_policy = u32;
/// Every frame: the producer waits for this consumer.
pub const FS_POLICY_WAIT: fs_policy = 0;
/// Skip frames while this consumer holds its share of the buffers (counted as dropped).
pub const FS_POLICY_DROP: fs_policy = 1;
/// One frame at a time, always the newest (older pending ones are dropped).
pub const FS_POLICY_LATEST: fs_policy = 2;

/// Subscriber flags (`fs_subscriber_options.flags`), or-ed.
pub type fs_subscribe_flags = u32;
/// Take no acquire fences: the producer waits for them before sending a frame to us.
pub const FS_SUBSCRIBE_NO_FENCES: fs_subscribe_flags = 1;
/// When the producer goes away (not a clean end), wait for it to come back and resume
/// (`FS_EVENT_RESTARTING`, then `FS_EVENT_CONNECTED` again).
pub const FS_SUBSCRIBE_RECONNECT: fs_subscribe_flags = 2;

/// How a stream ended (`fs_event.code` of `FS_EVENT_ENDED`; `FS_BYE_*`).
pub type fs_bye_code = u32;
/// A normal end: the stream ended.
pub const FS_BYE_DONE: fs_bye_code = 0;
/// Someone found a protocol error.
pub const FS_BYE_PROTOCOL: fs_bye_code = 1;
/// The producer failed on its own, or went away.
pub const FS_BYE_INTERNAL: fs_bye_code = 2;
/// The peers speak different protocol versions.
pub const FS_BYE_VERSION: fs_bye_code = 3;
/// We may not connect, or asked for something refused.
pub const FS_BYE_REFUSED: fs_bye_code = 4;
/// We stalled (held frames or stopped reading past the producer's stall timeout).
pub const FS_BYE_EVICTED: fs_bye_code = 5;

/// Subscriber settings; `fs_subscriber_options_default()` fills them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fs_subscriber_options {
    /// What this consumer is, told to the producer (NULL: "c-subscriber").
    pub name: *const c_char,
    /// `FS_POLICY_WAIT`, `FS_POLICY_DROP` or `FS_POLICY_LATEST`.
    pub policy: fs_policy,
    /// `FS_SUBSCRIBE_*` flags.
    pub flags: fs_subscribe_flags,
    /// How long to wait for the stream to appear, milliseconds (negative: as long as it
    /// takes). Default 10 000.
    pub connect_timeout_ms: i32,
}

/// What happened on a stream (`fs_event.kind`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fs_event_kind {
    /// Connected to the producer (again, after `FS_EVENT_RESTARTING`); `text`: its name.
    FS_EVENT_CONNECTED = 0,
    /// Buffer `buffer_id` joined the pool (checked and imported).
    FS_EVENT_BUFFER_ADDED = 1,
    /// Buffer `buffer_id` left the pool.
    FS_EVENT_BUFFER_REMOVED = 2,
    /// A frame: `frame` is yours until `fs_frame_release`; `buffer_id` and `seq` say which.
    FS_EVENT_FRAME = 3,
    /// The producer sends no more frames (`seq`: the last one's): release what you hold.
    FS_EVENT_END_OF_STREAM = 4,
    /// The producer went away and we wait for it to come back; `text`: what happened.
    FS_EVENT_RESTARTING = 5,
    /// The stream ended; `code` (`FS_BYE_*`) and `text` say why. Nothing follows.
    FS_EVENT_ENDED = 6,
}

/// An event from `fs_subscriber_next`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fs_event {
    /// What happened.
    pub kind: fs_event_kind,
    /// The buffer (`FS_EVENT_BUFFER_ADDED`, `FS_EVENT_BUFFER_REMOVED`, `FS_EVENT_FRAME`).
    pub buffer_id: u32,
    /// The frame's sequence number (`FS_EVENT_FRAME`), or the last one (`FS_EVENT_END_OF_STREAM`).
    pub seq: u64,
    /// The frame (`FS_EVENT_FRAME`; else NULL): release it with `fs_frame_release`.
    pub frame: *mut fs_frame,
    /// Why the stream ended (`FS_EVENT_ENDED`; `FS_BYE_*`).
    pub code: fs_bye_code,
    /// Words (`FS_EVENT_CONNECTED`, `FS_EVENT_RESTARTING`, `FS_EVENT_ENDED`; else NULL),
    /// valid until the next call on the subscriber.
    pub text: *const c_char,
}

/// A subscriber (opaque).
pub struct fs_subscriber {
    subscriber: Subscriber,
    /// The producer's generator pattern, if it announced one.
    pattern: Option<Pattern>,
    /// The pattern's scene for the last frame's format and size.
    scene: Option<(FrameLayout, Arc<Scene>)>,
    /// The last event's words.
    text: CString,
}

impl Handle for fs_subscriber {
    const KIND: Kind = Kind::Subscriber;
    const NAME: &'static str = "fs_subscriber";
}

/// A frame on loan from the producer (opaque).
pub struct fs_frame {
    pub(crate) frame: Frame,
    /// The CPU mapping (`fs_frame_map`), if open; `fs_frame_release` ends it before giving the
    /// frame back.
    read: Option<SharedRead>,
    /// The generator's scene, if the producer announced a pattern.
    scene: Option<Arc<Scene>>,
    /// The metadata's keys, NUL-terminated for C.
    pub(crate) keys: Vec<CString>,
}

impl Handle for fs_frame {
    const KIND: Kind = Kind::Frame;
    const NAME: &'static str = "fs_frame";
}

impl fs_frame {
    /// Waits up to `timeout` for the acquire fence, if the frame still has it.
    fn wait_acquire(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let Some(fence) = self.frame.acquire_fence() else {
            return Ok(());
        };
        // No limit means a day: a fence that never signals is a bug either way.
        let timeout = timeout.unwrap_or(Duration::from_secs(86_400));
        fence.wait(timeout).map_err(|e| match e.is_timeout() {
            true => Error::Timeout(format!(
                "frame {}: the acquire fence did not signal within {timeout:?}",
                self.frame.seq
            )),
            false => e.into(),
        })
    }

    fn acquire_timeout() -> Option<Duration> {
        handle::timeout_ms(FS_ACQUIRE_TIMEOUT_MS)
    }
}

/// What `fs_subscriber_options_default` returns (a constant: nothing there can panic).
const OPTIONS_DEFAULT: fs_subscriber_options = fs_subscriber_options {
    name: std::ptr::null(),
    policy: FS_POLICY_WAIT,
    flags: 0,
    connect_timeout_ms: 10_000,
};

/// Default subscriber settings: `FS_POLICY_WAIT`, acquire fences taken, no reconnect, a
/// 10 s connect timeout.
#[no_mangle]
pub extern "C" fn fs_subscriber_options_default() -> fs_subscriber_options {
    OPTIONS_DEFAULT
}

/// Subscribes to the stream `stream`, or to the socket path `stream` if it starts with `/`.
/// Connecting happens in `fs_subscriber_next` (waiting up to the connect timeout for the
/// stream to appear). Free it with `fs_subscriber_free`.
///
/// # Safety
/// `stream` is a NUL-terminated string; `options` is NULL (defaults) or points to a
/// `fs_subscriber_options` whose `name` is NULL or NUL-terminated; `out` points to writable
/// storage for the handle.
#[no_mangle]
pub unsafe extern "C" fn fs_subscriber_connect(
    stream: *const c_char,
    options: *const fs_subscriber_options,
    out: *mut *mut fs_subscriber,
) -> fs_status {
    call(|| {
        let out = out_ptr(out, "out")?;
        // SAFETY: a NUL-terminated string (Safety above).
        let stream = unsafe { handle::str_arg(stream, "stream") }?;
        let o = if options.is_null() {
            fs_subscriber_options_default()
        } else {
            // SAFETY: non-NULL and, by the caller's promise, a valid fs_subscriber_options
            // (every field accepts any bit pattern).
            unsafe { options.read() }
        };
        // SAFETY: NULL or NUL-terminated (Safety above).
        let name = unsafe { handle::opt_str_arg(o.name, "options.name") }?;
        let policy = match o.policy {
            FS_POLICY_WAIT => Policy::Wait,
            FS_POLICY_DROP => Policy::Drop,
            FS_POLICY_LATEST => Policy::Latest,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "options.policy {other} is not an FS_POLICY_* value"
                )))
            }
        };
        let known = FS_SUBSCRIBE_NO_FENCES | FS_SUBSCRIBE_RECONNECT;
        if o.flags & !known != 0 {
            return Err(Error::InvalidArgument(format!(
                "options.flags 0x{:x} has bits no FS_SUBSCRIBE_* flag names",
                o.flags
            )));
        }
        let opts = SubscriberOptions {
            name: name.unwrap_or("c-subscriber").to_owned(),
            fences: o.flags & FS_SUBSCRIBE_NO_FENCES == 0,
            policy,
            reconnect: o.flags & FS_SUBSCRIBE_RECONNECT != 0,
            connect_timeout: handle::timeout_ms(o.connect_timeout_ms),
            ..SubscriberOptions::default()
        };
        let target = if stream.starts_with('/') {
            Target::Path(PathBuf::from(stream))
        } else {
            Target::Stream(StreamName::new(stream)?)
        };
        out.write(handle::register(fs_subscriber {
            subscriber: Subscriber::to(target, opts)?,
            pattern: None,
            scene: None,
            text: CString::default(),
        }));
        Ok(())
    })
}

/// The next event, waiting up to `timeout_ms` (negative: as long as it takes; 0: only what is
/// pending). `FS_ERR_TIMEOUT` if nothing happened, `FS_ERR_ENDED` after `FS_EVENT_ENDED`,
/// `FS_ERR_NOT_FOUND` if the stream did not appear within the connect timeout.
///
/// # Safety
/// `subscriber` is a handle from `fs_subscriber_connect` (checked); `event` points to
/// writable storage.
#[no_mangle]
pub unsafe extern "C" fn fs_subscriber_next(
    subscriber: *mut fs_subscriber,
    timeout_ms: i32,
    event: *mut fs_event,
) -> fs_status {
    call(|| {
        let out = out_ptr(event, "event")?;
        with_mut(subscriber, |s| {
            let mut e = fs_event {
                kind: fs_event_kind::FS_EVENT_CONNECTED,
                buffer_id: 0,
                seq: 0,
                frame: std::ptr::null_mut(),
                code: 0,
                text: std::ptr::null(),
            };
            match s.subscriber.next(handle::timeout_ms(timeout_ms))? {
                SubscriberEvent::Connected { producer, .. } => {
                    s.pattern = producer.pattern.as_deref().and_then(|p| p.parse().ok());
                    s.scene = None;
                    e.text = s.set_text(&producer.name);
                }
                SubscriberEvent::BufferAdded { id, .. } => {
                    e.kind = fs_event_kind::FS_EVENT_BUFFER_ADDED;
                    e.buffer_id = id;
                }
                SubscriberEvent::BufferRemoved { id } => {
                    e.kind = fs_event_kind::FS_EVENT_BUFFER_REMOVED;
                    e.buffer_id = id;
                }
                SubscriberEvent::Frame(frame) => {
                    e.kind = fs_event_kind::FS_EVENT_FRAME;
                    e.buffer_id = frame.id;
                    e.seq = frame.seq;
                    let scene = s.scene_for(frame.buffer().layout());
                    let keys = frame
                        .meta
                        .key_values()
                        .map(|(k, _)| CString::new(k).unwrap_or_default())
                        .collect();
                    e.frame = handle::register(fs_frame {
                        frame,
                        read: None,
                        scene,
                        keys,
                    });
                }
                SubscriberEvent::EndOfStream { last_seq } => {
                    e.kind = fs_event_kind::FS_EVENT_END_OF_STREAM;
                    e.seq = last_seq;
                }
                SubscriberEvent::Restarting { reason } => {
                    e.kind = fs_event_kind::FS_EVENT_RESTARTING;
                    e.text = s.set_text(&reason);
                }
                SubscriberEvent::Ended { code, reason } => {
                    e.kind = fs_event_kind::FS_EVENT_ENDED;
                    e.code = code.to_wire();
                    e.text = s.set_text(&reason);
                }
            }
            out.write(e);
            Ok(())
        })
    })
}

impl fs_subscriber {
    fn set_text(&mut self, text: &str) -> *const c_char {
        self.text = CString::new(text.replace('\0', "\u{fffd}")).unwrap_or_default();
        self.text.as_ptr()
    }

    /// The generator's scene for frames of `layout`, if the producer announced a pattern.
    fn scene_for(&mut self, layout: &FrameLayout) -> Option<Arc<Scene>> {
        let pattern = self.pattern?;
        let same = |l: &FrameLayout| {
            (l.fourcc(), l.width(), l.height())
                == (layout.fourcc(), layout.width(), layout.height())
        };
        match &self.scene {
            Some((l, scene)) if same(l) => Some(scene.clone()),
            _ => {
                let scene = Arc::new(Scene::new(pattern, layout));
                self.scene = Some((layout.clone(), scene.clone()));
                Some(scene)
            }
        }
    }
}

/// The subscriber's fd for `poll()`/`epoll` (readable when `fs_subscriber_next` has
/// something; stable across reconnects), borrowed: valid until the subscriber is freed. While
/// waiting for a producer to appear, poll with a timeout (retries are timed).
///
/// # Safety
/// `subscriber` is a handle from `fs_subscriber_connect` (checked); `fd` points to a writable
/// int.
#[no_mangle]
pub unsafe extern "C" fn fs_subscriber_fd(
    subscriber: *const fs_subscriber,
    fd: *mut i32,
) -> fs_status {
    call(|| {
        let out = out_ptr(fd, "fd")?;
        with_ref(subscriber, |s| {
            out.write(s.subscriber.as_fd().as_raw_fd());
            Ok(())
        })
    })
}

/// Leaves the stream (the producer is told) and frees the subscriber. Frames still held stay
/// valid until released. NULL is a no-op.
///
/// # Safety
/// `subscriber` is NULL or a handle from `fs_subscriber_connect` (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_subscriber_free(subscriber: *mut fs_subscriber) -> fs_status {
    call(|| {
        if !subscriber.is_null() {
            drop(handle::take(subscriber)?);
        }
        Ok(())
    })
}

/// The frame's buffer: its id, memory (fds), format and planes (for importing it into a GPU,
/// a display or a codec). The fds are borrowed: valid while the frame is.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `info` points to writable
/// storage.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_buffer(
    frame: *const fs_frame,
    info: *mut fs_buffer_info,
) -> fs_status {
    call(|| {
        let out = out_ptr(info, "info")?;
        with_ref(frame, |f| {
            out.write(crate::buffer_info(f.frame.id, f.frame.buffer()));
            Ok(())
        })
    })
}

/// Waits up to `timeout_ms` (negative: as long as it takes) for the frame's acquire fence:
/// `FS_OK` once the pixels may be read (at once if there is no fence, or it was taken),
/// `FS_ERR_TIMEOUT` if it did not signal in time.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_frame_wait_acquire(
    frame: *const fs_frame,
    timeout_ms: i32,
) -> fs_status {
    call(|| with_ref(frame, |f| f.wait_acquire(handle::timeout_ms(timeout_ms))))
}

/// Maps the frame for reading on the CPU, without a copy: waits for the acquire fence (up to
/// `FS_ACQUIRE_TIMEOUT_MS`), then begins the access (for dma-bufs, `DMA_BUF_IOCTL_SYNC` READ
/// START now and END at `fs_frame_unmap` or release). The buffer's mapping is made once and
/// kept for its next frames. `*mapping` gets each plane's address (read-only memory).
/// Mapping again returns the same mapping.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `mapping` points to writable
/// storage.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_map(frame: *mut fs_frame, mapping: *mut fs_mapping) -> fs_status {
    call(|| {
        let out = out_ptr(mapping, "mapping")?;
        with_mut(frame, |f| {
            if f.read.is_none() {
                f.wait_acquire(fs_frame::acquire_timeout())?;
                f.read = Some(f.frame.read()?);
            }
            let r = f.read.as_ref().expect("set above");
            out.write(crate::mapping_of(r.layout(), |i| {
                let (ptr, len) = r.region_ptr(i);
                (ptr.cast_mut(), len)
            }));
            Ok(())
        })
    })
}

/// Ends the CPU access `fs_frame_map` began (the mapping's addresses are no longer valid).
/// Without a mapping, a no-op.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_frame_unmap(frame: *mut fs_frame) -> fs_status {
    call(|| {
        with_mut(frame, |f| {
            f.read = None;
            Ok(())
        })
    })
}

/// Checks every pixel byte of the frame against what the producer's generator pattern draws
/// for its sequence number: the check `frameshare consume --sink verify` makes, reading the
/// frame in place. `FS_OK` if it matches, `FS_ERR_MISMATCH` (the message names the plane, row
/// and byte, and a stale frame's own sequence number) if not, `FS_ERR_UNSUPPORTED` if the
/// producer announced no pattern. Waits for the acquire fence like `fs_frame_map`.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked).
#[no_mangle]
pub unsafe extern "C" fn fs_frame_verify_generated(frame: *const fs_frame) -> fs_status {
    call(|| {
        with_ref(frame, |f| {
            let scene = f.scene.as_ref().ok_or_else(|| {
                Error::Unsupported(
                    "the producer announced no generator pattern: nothing to verify against".into(),
                )
            })?;
            let temporary;
            let read = match &f.read {
                Some(r) => r,
                None => {
                    f.wait_acquire(fs_frame::acquire_timeout())?;
                    temporary = f.frame.read()?;
                    &temporary
                }
            };
            Ok(scene.frame(f.frame.seq).verify(read)?)
        })
    })
}

/// The frame's acquire fence (a sync_file fd; wait for it before reading the pixels on a
/// device), borrowed: valid while the frame holds it. -1 if there is none, or it was taken.
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `fence_fd` points to a
/// writable int.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_acquire_fence(
    frame: *const fs_frame,
    fence_fd: *mut i32,
) -> fs_status {
    call(|| {
        let out = out_ptr(fence_fd, "fence_fd")?;
        with_ref(frame, |f| {
            out.write(
                f.frame
                    .acquire_fence()
                    .map_or(-1, |s| s.as_fd().as_raw_fd()),
            );
            Ok(())
        })
    })
}

/// Takes the frame's acquire fence: `*fence_fd` is yours to close (or to hand to a GPU or a
/// display), -1 if there is none. The frame no longer waits for it (`fs_frame_map` then reads
/// at once: wait for the fence yourself first).
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `fence_fd` points to a
/// writable int.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_take_acquire_fence(
    frame: *mut fs_frame,
    fence_fd: *mut i32,
) -> fs_status {
    call(|| {
        let out = out_ptr(fence_fd, "fence_fd")?;
        with_mut(frame, |f| {
            out.write(
                f.frame
                    .take_acquire_fence()
                    .map_or(-1, |s| s.into_fd().into_raw_fd()),
            );
            Ok(())
        })
    })
}

/// Gives the frame back to the producer and frees the handle (a mapping still open is ended
/// first), with a release fence (a sync_file fd that signals when this consumer's last access
/// ends, taken over by the library) or -1. The handle is gone whatever this returns; a fence
/// fd that is not a sync_file is closed, and the frame goes back without it
/// (`FS_ERR_FENCE`).
///
/// # Safety
/// `frame` is a handle from an `FS_EVENT_FRAME` event (checked); `release_fence_fd` is -1 or
/// an open fd the caller owns and gives up.
#[no_mangle]
pub unsafe extern "C" fn fs_frame_release(
    frame: *mut fs_frame,
    release_fence_fd: i32,
) -> fs_status {
    call(|| {
        let fence = if release_fence_fd >= 0 {
            // SAFETY: the caller hands over an open fd it owns (Safety above); from here it is
            // owned once, by this OwnedFd.
            let fd = unsafe { OwnedFd::from_raw_fd(release_fence_fd) };
            Some(SyncFile::try_from_fd(fd))
        } else {
            None
        };
        let f = handle::take(frame)?;
        let fs_frame { frame, read, .. } = *f;
        // The CPU access ends before the producer may write the buffer again.
        drop(read);
        match fence {
            Some(Err(e)) => {
                frame.release(None)?;
                Err(e.into())
            }
            Some(Ok(fence)) => Ok(frame.release(Some(fence))?),
            None => Ok(frame.release(None)?),
        }
    })
}
