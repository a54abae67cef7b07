//! The consumer end of a stream: a [`Subscriber`] connects by name (or socket path), checks
//! the producer's credentials, says what it takes, checks and imports each announced buffer
//! (fd type, size, layout — a bad one ends the session with a `Bye` naming the problem), and
//! hands frames out as [`Frame`]s, each given back (`Release`) when dropped or explicitly with a
//! release fence. With `reconnect`, a producer that dies is waited for and the stream resumes
//! ([`SubscriberEvent::Restarting`], then [`SubscriberEvent::Connected`] again).
//!
//! ```no_run
//! use frameshare::bus::{StreamName, Subscriber, SubscriberEvent, SubscriberOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut sub = Subscriber::connect(StreamName::new("cam0")?, SubscriberOptions::default())?;
//! loop {
//!     match sub.next(None)? {
//!         SubscriberEvent::Frame(frame) => println!("frame {} in buffer {}", frame.seq, frame.id),
//!         SubscriberEvent::Ended { reason, .. } => break println!("{reason}"),
//!         _ => {}
//!     }
//! } // each frame went back to the producer when it was dropped
//! # Ok(())
//! # }
//! ```

mod frame;

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::io::Errno;

use super::access::AccessPolicy;
use super::name::{NameError, StreamName};
use super::poller::{Poller, Ready, WakePipe, Waker};
use super::socket::{Channel, ChannelError, Credentials};
use super::wire::{self, ByeCode, FrameMsg, Hello, Message, Policy, Role, MAX_BUFFERS};
use crate::buffer::{Buffer, BufferError, BufferKind, KindSet};
use crate::format::FormatModifier;
use crate::sync::SyncFile;

pub use frame::Frame;
use frame::Shared;

const TOKEN_WAKE: u64 = 0;
const TOKEN_SOCKET: u64 = 1;

/// Where the stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A named stream (its socket in the runtime directory).
    Stream(StreamName),
    /// A bare socket path.
    Path(PathBuf),
}

/// Subscriber settings: what this consumer is and takes, and how it behaves.
#[derive(Debug, Clone)]
pub struct SubscriberOptions {
    /// What this consumer is (its sink: `verify`, `vulkan`, …), told to the producer.
    pub name: String,
    /// Whether it waits on acquire fences and may send release fences.
    pub fences: bool,
    /// The buffer kinds it can import.
    pub kinds: KindSet,
    /// The formats it can import, best first (empty: any).
    pub formats: Vec<FormatModifier>,
    /// Its policy when frames come faster than it gives them back.
    pub policy: Policy,
    /// Wait for a producer that went away and resume when it is back.
    pub reconnect: bool,
    /// How long to wait for the stream to appear when connecting (`None`: as long as it
    /// takes). Only "not there yet" is waited out; any other failure ends at once.
    pub connect_timeout: Option<Duration>,
    /// Which producers are trusted (by their socket's credentials): this user and root unless
    /// more are named.
    pub access: AccessPolicy,
    /// A producer that leaves our releases unread this long ends the session.
    pub stall_timeout: Duration,
}

impl Default for SubscriberOptions {
    fn default() -> Self {
        SubscriberOptions {
            name: "subscriber".into(),
            fences: true,
            kinds: KindSet::all(),
            formats: Vec::new(),
            policy: Policy::Wait,
            reconnect: false,
            connect_timeout: Some(Duration::from_secs(10)),
            access: AccessPolicy::default(),
            stall_timeout: Duration::from_secs(10),
        }
    }
}

/// Errors of the subscriber.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The stream name or its directory.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The channel failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The stream did not appear in time.
    #[error("no producer at {where_} after {waited:?}")]
    NotThere {
        /// The socket.
        where_: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The producer broke the protocol; it was told why (Bye).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A buffer the producer announced failed its checks.
    #[error("AddBuffer {id} ({kind})")]
    Buffer {
        /// Buffer id.
        id: u32,
        /// Its kind.
        kind: BufferKind,
        /// What was wrong.
        #[source]
        source: BufferError,
    },
    /// The producer ended the session with an error, or refused us.
    #[error("the producer ended the session ({code}): {reason}")]
    Bye {
        /// Why.
        code: ByeCode,
        /// Its words.
        reason: String,
    },
    /// The producer's credentials are not trusted.
    #[error("untrusted producer: {0}")]
    Untrusted(String),
    /// The stream has ended (after [`SubscriberEvent::Ended`]).
    #[error("the stream has ended")]
    Ended,
    /// The [`Waker`] was used.
    #[error("interrupted")]
    Interrupted,
    /// Waiting failed.
    #[error("epoll failed")]
    Poll(#[source] Errno),
    /// Nothing happened within the timeout given to [`Subscriber::next`].
    #[error("nothing from the producer within {0:?}")]
    Timeout(Duration),
    /// A frame was released twice or for the wrong sequence number (a local bug).
    #[error("release of buffer {id} frame {seq}: that frame is not held")]
    NotHeld {
        /// Buffer id.
        id: u32,
        /// The frame.
        seq: u64,
    },
}

/// What happened on the stream.
#[derive(Debug)]
pub enum SubscriberEvent {
    /// Connected to the producer (again, after [`SubscriberEvent::Restarting`]).
    Connected {
        /// What the producer said of itself.
        producer: Hello,
        /// Its process (kernel-recorded).
        credentials: Credentials,
    },
    /// A buffer joined the pool (checked).
    BufferAdded {
        /// Its id.
        id: u32,
        /// The buffer.
        buffer: Buffer,
    },
    /// A buffer left the pool (it was not held).
    BufferRemoved {
        /// Its id.
        id: u32,
    },
    /// A frame.
    Frame(Frame),
    /// The producer sends no more frames: give back whatever is held.
    EndOfStream {
        /// The last frame's sequence number.
        last_seq: u64,
    },
    /// The producer went away; with `reconnect` we wait for it. A
    /// [`SubscriberEvent::BufferRemoved`] for every buffer follows (give held frames back
    /// first: they can no longer be returned to anyone).
    Restarting {
        /// What happened.
        reason: String,
    },
    /// The stream ended (the producer said so). Nothing follows.
    Ended {
        /// Why.
        code: ByeCode,
        /// Its words.
        reason: String,
    },
}

/// A live session with the producer.
struct Session {
    chan: Channel,
    shared: Arc<Shared>,
    buffers: Vec<Option<Arc<Buffer>>>,
}

enum State {
    /// Not connected; try (again) at `retry_at`, giving up at `give_up`.
    Connecting {
        retry_at: Instant,
        give_up: Option<Instant>,
        waited_since: Instant,
        said_waiting: bool,
    },
    Connected(Box<Session>),
    Ended,
}

/// The consumer end of a stream. See the [module docs](self).
pub struct Subscriber {
    target: Option<Target>,
    opts: SubscriberOptions,
    state: State,
    events: VecDeque<SubscriberEvent>,
    poller: Poller,
    wake: WakePipe,
    restarts: u32,
    /// What the last wait found ready (kept: a wait allocates nothing).
    ready: Vec<Ready>,
    /// How the next frame is expected: see [`Subscriber::next`].
    arrival: Arrival,
    /// Whether [`Subscriber::waker`] was called (a wait must then watch the waker too).
    waker_given: AtomicBool,
    /// Set from a signal handler: `next` ends with `Interrupted` (see [`Subscriber::stop_on`]).
    stop: Option<Arc<AtomicBool>>,
}

/// With a stop flag, the longest a wait goes without looking at it.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// Whether frames are found waiting (the consumer is behind: read at once) or come while it
/// waits (the consumer is ahead: wait first, then read). Reading first when nothing is there
/// costs a `recvmsg` that fails; waiting first when something is there costs an `epoll_wait`
/// that returns at once. Each way, one `recvmsg` per frame is the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Read first.
    Queued,
    /// Wait first; `streak` frames so far, every [`PROBE_EVERY`]th is read first (to notice
    /// frames queueing up again).
    WhileWaiting { streak: u32 },
}

/// In [`Arrival::WhileWaiting`], how often a frame is read first anyway.
const PROBE_EVERY: u32 = 8;

impl Subscriber {
    /// Subscribes to the stream `name` (connecting happens in the first [`Subscriber::next`]).
    pub fn connect(
        name: StreamName,
        opts: SubscriberOptions,
    ) -> Result<Subscriber, SubscribeError> {
        Subscriber::to(Target::Stream(name), opts)
    }

    /// Subscribes to `target`.
    pub fn to(target: Target, opts: SubscriberOptions) -> Result<Subscriber, SubscribeError> {
        let mut s = Subscriber::base(opts)?;
        s.target = Some(target);
        Ok(s)
    }

    /// Takes a connection made elsewhere (a socketpair from a parent process). It cannot be
    /// re-made, so `reconnect` does not apply.
    pub fn from_channel(
        chan: Channel,
        opts: SubscriberOptions,
    ) -> Result<Subscriber, SubscribeError> {
        let mut s = Subscriber::base(opts)?;
        s.start_session(chan)?;
        Ok(s)
    }

    fn base(opts: SubscriberOptions) -> Result<Subscriber, SubscribeError> {
        let poller = Poller::new().map_err(SubscribeError::Poll)?;
        let wake = WakePipe::new().map_err(SubscribeError::Poll)?;
        poller
            .add(wake.as_fd(), TOKEN_WAKE, false)
            .map_err(SubscribeError::Poll)?;
        let now = Instant::now();
        Ok(Subscriber {
            target: None,
            state: State::Connecting {
                retry_at: now,
                give_up: opts.connect_timeout.map(|t| now + t),
                waited_since: now,
                said_waiting: false,
            },
            opts,
            events: VecDeque::new(),
            poller,
            wake,
            restarts: 0,
            ready: Vec::new(),
            arrival: Arrival::Queued,
            waker_given: AtomicBool::new(false),
            stop: None,
        })
    }

    /// A handle that ends a wait of [`Subscriber::next`] ([`SubscribeError::Interrupted`]).
    /// Without one, `next` waits in the socket's own `recvmsg` (one system call per frame,
    /// the least a handoff costs); once one was handed out, it waits in `epoll_wait` on the
    /// socket and the waker together (see [`Subscriber::next`]).
    pub fn waker(&self) -> Waker {
        self.waker_given.store(true, Ordering::Relaxed);
        self.wake.waker()
    }

    /// Ends [`Subscriber::next`] with [`SubscribeError::Interrupted`] once `flag` is set: for a
    /// signal handler that sets a flag (signal-hook's `flag::register`) instead of using a
    /// [`Waker`], so that waits stay in the socket's own `recvmsg`. The receive timeout the
    /// wait then always has makes the kernel end it with `EINTR` when the signal comes to this
    /// thread (even for a handler installed with `SA_RESTART`); a signal that another thread
    /// takes is seen within 200 ms.
    pub fn stop_on(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    /// How many times the producer came back.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Buffer `id`, if announced.
    pub fn buffer(&self, id: u32) -> Option<&Buffer> {
        match &self.state {
            State::Connected(s) => s.buffers.get(id as usize)?.as_deref(),
            _ => None,
        }
    }

    /// The next event, waiting up to `timeout` (`None`: as long as it takes).
    ///
    /// Per frame this costs one `recvmsg` while no [`Waker`] was handed out (the wait is the
    /// read itself). With a waker, one `recvmsg` when the frame is already waiting, and one
    /// `epoll_wait` and one `recvmsg` when it comes while this waits: which of the two is
    /// expected is learnt from the last frames, so neither way pays for a read that finds
    /// nothing or a wait that returns at once.
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<SubscriberEvent, SubscribeError> {
        // Read only if we wait (a frame already there needs no clock).
        let mut deadline: Option<Option<Instant>> = None;
        let mut woken = false;
        let mut blocked_once = false;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            enum Step {
                Connect,
                Wait(Option<Instant>),
                Broken(String),
                Got(Message, Vec<OwnedFd>),
                Failed(ChannelError),
            }
            let read_first = match &mut self.arrival {
                Arrival::Queued => true,
                Arrival::WhileWaiting { .. } if woken => false,
                Arrival::WhileWaiting { streak } => {
                    *streak = streak.wrapping_add(1);
                    *streak % PROBE_EVERY == 0
                }
            };
            let step = match &mut self.state {
                State::Ended => return Err(SubscribeError::Ended),
                State::Connecting { retry_at, .. } if Instant::now() >= *retry_at => Step::Connect,
                State::Connecting { retry_at, .. } => Step::Wait(Some(*retry_at)),
                State::Connected(s) => {
                    let broken = if s.shared.broken_flag.load(Ordering::Acquire) {
                        s.shared
                            .broken
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .take()
                    } else {
                        None
                    };
                    match broken {
                        Some(why) => Step::Broken(why),
                        // No one can wake us but the producer: wait in the read itself.
                        None if !self.waker_given.load(Ordering::Relaxed)
                            && timeout != Some(Duration::ZERO) =>
                        {
                            let left = match timeout {
                                None => None,
                                Some(t) => {
                                    let d =
                                        *deadline.get_or_insert_with(|| Some(Instant::now() + t));
                                    let left =
                                        d.map(|d| d.saturating_duration_since(Instant::now()));
                                    match left {
                                        // The first wait of this call: the timeout as given
                                        // (the socket keeps it: no setsockopt per frame).
                                        _ if !blocked_once => Some(t),
                                        Some(l) if l.is_zero() => {
                                            return Err(SubscribeError::Timeout(t))
                                        }
                                        l => l,
                                    }
                                }
                            };
                            blocked_once = true;
                            // With a stop flag, look at it at least this often (a signal
                            // delivered to another thread interrupts no read of ours).
                            let left = match (&self.stop, left) {
                                (None, l) => l,
                                (Some(_), None) => Some(STOP_CHECK),
                                (Some(_), Some(l)) => Some(l.min(STOP_CHECK)),
                            };
                            match s.chan.recv_until(left) {
                                Ok(Some((msg, fds))) => Step::Got(msg, fds),
                                // Timed out or interrupted: the stop flag and the deadline
                                // decide.
                                Ok(None) => {
                                    if self
                                        .stop
                                        .as_ref()
                                        .is_some_and(|f| f.load(Ordering::Relaxed))
                                    {
                                        return Err(SubscribeError::Interrupted);
                                    }
                                    if timeout.is_none() {
                                        continue;
                                    }
                                    let d = deadline.flatten().expect("set for a timeout");
                                    if Instant::now() >= d {
                                        return Err(SubscribeError::Timeout(
                                            timeout.unwrap_or_default(),
                                        ));
                                    }
                                    continue;
                                }
                                Err(e) => Step::Failed(e),
                            }
                        }
                        None if !(woken || read_first) => Step::Wait(None),
                        None => match s.chan.try_recv() {
                            Ok(Some((msg, fds))) => {
                                if read_first && !woken {
                                    // It was there before we waited: the consumer is behind.
                                    self.arrival = Arrival::Queued;
                                }
                                Step::Got(msg, fds)
                            }
                            Ok(None) => {
                                if self.arrival == Arrival::Queued {
                                    self.arrival = Arrival::WhileWaiting { streak: 0 };
                                }
                                Step::Wait(None)
                            }
                            Err(e) => Step::Failed(e),
                        },
                    }
                }
            };
            woken = false;
            let wait_until = match step {
                Step::Connect => {
                    self.try_connect()?;
                    continue;
                }
                Step::Broken(why) => {
                    self.lose_session(format!("giving back a frame failed: {why}"), false)?;
                    continue;
                }
                Step::Got(msg, fds) => {
                    if let Some(e) = self.handle(msg, fds)? {
                        if self.events.is_empty() {
                            return Ok(e);
                        }
                        self.events.push_back(e);
                    }
                    continue;
                }
                Step::Failed(e) => {
                    self.channel_failed(e)?;
                    continue;
                }
                Step::Wait(until) => until,
            };
            if self
                .stop
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
            {
                return Err(SubscribeError::Interrupted);
            }
            let deadline = *deadline.get_or_insert_with(|| timeout.map(|t| Instant::now() + t));
            let mut until = match (deadline, wait_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if self.stop.is_some() {
                let check = Instant::now() + STOP_CHECK;
                until = Some(until.map_or(check, |u| u.min(check)));
            }
            let mut ready = std::mem::take(&mut self.ready);
            let waited = self.poller.wait(until, &mut ready);
            let wake = ready.iter().any(|r| r.token == TOKEN_WAKE);
            woken = ready.iter().any(|r| r.token == TOKEN_SOCKET);
            let nothing = ready.is_empty();
            self.ready = ready;
            waited.map_err(SubscribeError::Poll)?;
            if wake && self.wake.drain() {
                return Err(SubscribeError::Interrupted);
            }
            if nothing && deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(SubscribeError::Timeout(timeout.unwrap_or_default()));
            }
        }
    }

    fn socket_path(&self) -> Result<PathBuf, SubscribeError> {
        Ok(match &self.target {
            Some(Target::Stream(n)) => n.socket_path()?,
            Some(Target::Path(p)) => p.clone(),
            None => return Err(SubscribeError::Ended),
        })
    }

    /// One connection attempt: "not there yet" waits (saying so once), anything else fails.
    fn try_connect(&mut self) -> Result<(), SubscribeError> {
        let path = self.socket_path()?;
        match Channel::connect(&path) {
            Ok(chan) => match self.start_session(chan) {
                // Closed before its Hello: a producer that died as we connected (a listener
                // still open while its process exits takes the connection). Not there yet.
                Err(SubscribeError::Channel(ChannelError::PeerClosed)) => {}
                r => return r,
            },
            // connect(2) on a file that is not a socket also says ECONNREFUSED: no producer
            // will ever listen there, so waiting cannot help.
            Err(ChannelError::Sys {
                errno: Errno::CONNREFUSED,
                ..
            }) if std::fs::metadata(&path)
                .is_ok_and(|m| !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())) =>
            {
                return Err(ChannelError::Sys {
                    op: "connect",
                    path: Some(path),
                    errno: Errno::NOTSOCK,
                }
                .into());
            }
            Err(ChannelError::Sys {
                errno: Errno::NOENT | Errno::CONNREFUSED,
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        let State::Connecting {
            retry_at,
            give_up,
            waited_since,
            said_waiting,
        } = &mut self.state
        else {
            return Ok(());
        };
        let now = Instant::now();
        if give_up.is_some_and(|g| now >= g) {
            return Err(SubscribeError::NotThere {
                where_: path.display().to_string(),
                waited: now.duration_since(*waited_since),
            });
        }
        if !*said_waiting {
            log::info!("waiting for a producer at {}", path.display());
            *said_waiting = true;
        }
        *retry_at = now + Duration::from_millis(50);
        Ok(())
    }

    /// Checks the producer, exchanges Hellos.
    fn start_session(&mut self, mut chan: Channel) -> Result<(), SubscribeError> {
        let producer = chan.peer_credentials()?;
        if let Err(why) = self.opts.access.check(&producer) {
            return Err(SubscribeError::Untrusted(why));
        }
        let hello = match chan.recv_timeout(Some(self.opts.stall_timeout)) {
            Ok((Message::Hello(h), _)) if h.role == Role::Producer => h,
            Ok((Message::Bye { code, reason }, _)) => {
                return Err(SubscribeError::Bye { code, reason })
            }
            Ok((m, _)) => {
                return Err(protocol(
                    &mut chan,
                    format!("expected the producer's Hello, got {}", m.name()),
                ))
            }
            Err(ChannelError::Wire(wire::WireError::Version(v))) => {
                let why = format!(
                    "this consumer speaks frameshare protocol version {}, the producer {v}",
                    wire::VERSION
                );
                let mut b = Vec::new();
                Message::encode_bye_for_version(v, ByeCode::Version, &why, &mut b);
                let _ = chan.send_raw(&b, &[]);
                return Err(SubscribeError::Bye {
                    code: ByeCode::Version,
                    reason: why,
                });
            }
            Err(e) => return Err(e.into()),
        };
        chan.send(
            &Message::Hello(Hello {
                role: Role::Consumer,
                // Every subscriber handles EndOfStream (it becomes an event).
                features: wire::FEATURE_END_OF_STREAM
                    | if self.opts.fences {
                        wire::FEATURE_FENCES
                    } else {
                        0
                    },
                kinds: self.opts.kinds,
                formats: self.opts.formats.clone(),
                name: self.opts.name.clone(),
                stream: match &self.target {
                    Some(Target::Stream(n)) => Some(n.to_string()),
                    _ => None,
                },
                pattern: None,
                policy: Some(self.opts.policy),
            }),
            &[],
        )?;
        let socket = chan
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| ChannelError::Sys {
                op: "dup",
                path: None,
                errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
            })?;
        self.poller
            .add(chan.as_fd(), TOKEN_SOCKET, false)
            .map_err(SubscribeError::Poll)?;
        self.state = State::Connected(Box::new(Session {
            chan,
            shared: Arc::new(Shared {
                socket,
                held: Mutex::new([None; MAX_BUFFERS as usize]),
                mappings: Mutex::new((0..MAX_BUFFERS).map(|_| None).collect()),
                broken: Mutex::new(None),
                broken_flag: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                stall: self.opts.stall_timeout,
            }),
            buffers: (0..MAX_BUFFERS).map(|_| None).collect(),
        }));
        self.events.push_back(SubscriberEvent::Connected {
            producer: hello,
            credentials: producer,
        });
        Ok(())
    }

    fn session(&mut self) -> Result<&mut Session, SubscribeError> {
        match &mut self.state {
            State::Connected(s) => Ok(s),
            _ => Err(SubscribeError::Ended),
        }
    }

    /// Handles one message from the producer. A frame is returned (the hot path: no queue);
    /// anything else becomes queued events.
    fn handle(
        &mut self,
        msg: Message,
        mut fds: Vec<OwnedFd>,
    ) -> Result<Option<SubscriberEvent>, SubscribeError> {
        let s = self.session()?;
        match msg {
            Message::AddBuffer {
                id,
                kind,
                layout,
                sysv_id,
            } => {
                if s.buffers[id as usize].is_some() {
                    return self
                        .fail(format!("AddBuffer {id}: id already in use"))
                        .map(|()| None);
                }
                let made = match sysv_id {
                    // Attached only if the producer itself could attach it (SO_PEERCRED).
                    Some(sysv) => match s.chan.peer_credentials() {
                        Ok(producer) => Buffer::from_sysv(layout, sysv, &producer),
                        Err(e) => return self.fail(format!("AddBuffer {id}: {e}")).map(|()| None),
                    },
                    None => Buffer::from_fds(kind, layout, fds),
                };
                match made {
                    Ok(b) => {
                        s.buffers[id as usize] = Some(Arc::new(b.clone()));
                        self.events
                            .push_back(SubscriberEvent::BufferAdded { id, buffer: b });
                        Ok(None)
                    }
                    Err(source) => {
                        let e = SubscribeError::Buffer { id, kind, source };
                        let why = format!("{e}: {}", error_chain(&e));
                        bye(&mut self.session()?.chan, ByeCode::Protocol, &why);
                        self.lose_session(why, true)?;
                        Err(e)
                    }
                }
            }
            Message::RemoveBuffer { id } => {
                if s.buffers[id as usize].is_none() {
                    return self
                        .fail(format!("RemoveBuffer {id}: unknown buffer"))
                        .map(|()| None);
                }
                if s.shared.held.lock().unwrap_or_else(|e| e.into_inner())[id as usize].is_some() {
                    return self
                        .fail(format!("RemoveBuffer {id}: the consumer still holds it"))
                        .map(|()| None);
                }
                s.buffers[id as usize] = None;
                s.shared.mappings.lock().unwrap_or_else(|e| e.into_inner())[id as usize] = None;
                self.events.push_back(SubscriberEvent::BufferRemoved { id });
                Ok(None)
            }
            Message::Frame(FrameMsg {
                id,
                seq,
                timestamp_ns,
                flags,
                meta,
            }) => {
                let received_ns = super::monotonic_ns();
                let Some(buffer) = s.buffers[id as usize].clone() else {
                    return self
                        .fail(format!("Frame {seq} names unknown buffer {id}"))
                        .map(|()| None);
                };
                {
                    let mut held = s.shared.held.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(h) = held[id as usize] {
                        drop(held);
                        return self
                            .fail(format!(
                                "Frame {seq} reuses buffer {id}, still held for frame {h}"
                            ))
                            .map(|()| None);
                    }
                    held[id as usize] = Some(seq);
                }
                let acquire = if flags & wire::FLAG_FENCE != 0 {
                    match SyncFile::try_from_fd(fds.remove(0)) {
                        Ok(f) => Some(f),
                        Err(e) => {
                            return self
                                .fail(format!("Frame {seq}: acquire fence: {e}"))
                                .map(|()| None)
                        }
                    }
                } else {
                    None
                };
                let shared = s.shared.clone();
                Ok(Some(SubscriberEvent::Frame(Frame {
                    id,
                    seq,
                    timestamp_ns,
                    received_ns,
                    meta,
                    acquire,
                    buffer,
                    shared: Some(shared),
                })))
            }
            Message::EndOfStream { last_seq } => {
                self.events
                    .push_back(SubscriberEvent::EndOfStream { last_seq });
                Ok(None)
            }
            Message::Bye {
                code: ByeCode::Done,
                reason,
            } => {
                self.close_session();
                self.state = State::Ended;
                self.events.push_back(SubscriberEvent::Ended {
                    code: ByeCode::Done,
                    reason,
                });
                Ok(None)
            }
            Message::Bye { code, reason } => {
                let retry = !matches!(code, ByeCode::Refused | ByeCode::Version);
                if self.opts.reconnect && retry && self.target.is_some() {
                    return self
                        .lose_session(format!("the producer said: {reason} ({code})"), false)
                        .map(|()| None);
                }
                self.close_session();
                self.state = State::Ended;
                Err(SubscribeError::Bye { code, reason })
            }
            other => self
                .fail(format!("unexpected {} from the producer", other.name()))
                .map(|()| None),
        }
    }

    /// The producer broke the protocol: tell it why, end the session.
    fn fail(&mut self, what: String) -> Result<(), SubscribeError> {
        log::error!("protocol error: {what}");
        if let Ok(s) = self.session() {
            bye(&mut s.chan, ByeCode::Protocol, &what);
        }
        self.lose_session(format!("protocol error: {what}"), true)?;
        Err(SubscribeError::Protocol(what))
    }

    fn channel_failed(&mut self, e: ChannelError) -> Result<(), SubscribeError> {
        match e {
            ChannelError::Wire(_) | ChannelError::Truncated | ChannelError::ControlTruncated => {
                self.fail(e.to_string())
            }
            ChannelError::PeerClosed => self.lose_session("the producer went away".into(), false),
            e => {
                self.close_session();
                self.state = State::Ended;
                Err(e.into())
            }
        }
    }

    fn close_session(&mut self) {
        if let State::Connected(s) = &self.state {
            s.shared.closed.store(true, Ordering::Release);
            self.poller.remove(s.chan.as_fd());
        }
    }

    /// The session is over. With `reconnect` (and not `fatal`), every buffer is removed and
    /// we wait for the producer to come back; else the stream has ended for us.
    fn lose_session(&mut self, reason: String, fatal: bool) -> Result<(), SubscribeError> {
        let ids: Vec<u32> = match &self.state {
            State::Connected(s) => (0..MAX_BUFFERS)
                .filter(|&i| s.buffers[i as usize].is_some())
                .collect(),
            _ => Vec::new(),
        };
        self.close_session();
        if fatal || !self.opts.reconnect || self.target.is_none() {
            self.state = State::Ended;
            if !fatal {
                self.events.push_back(SubscriberEvent::Ended {
                    code: ByeCode::Internal,
                    reason,
                });
            }
            return Ok(());
        }
        log::warn!("{reason}; waiting for it to come back");
        // First the news (a display gives back what it shows), then the buffers go.
        self.events
            .push_back(SubscriberEvent::Restarting { reason });
        for id in ids {
            self.events.push_back(SubscriberEvent::BufferRemoved { id });
        }
        self.restarts += 1;
        let now = Instant::now();
        self.state = State::Connecting {
            retry_at: now,
            give_up: None,
            waited_since: now,
            said_waiting: true,
        };
        Ok(())
    }
}

impl AsFd for Subscriber {
    /// Readable when [`Subscriber::next`] has something (an epoll fd, stable across
    /// reconnects: for GLib, tokio, calloop). While waiting for a producer, poll with a
    /// timeout (retries are timed, not fd-driven).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }
}

impl Subscriber {
    /// Leaves the stream because of a failure on this side (a sink that could not take a
    /// frame: a buffer the producer truncated, a file that could not be written): the producer
    /// is told why in a `Bye`, not just that the consumer left.
    pub fn abort(&mut self, reason: &str) {
        if let State::Connected(s) = &mut self.state {
            bye(&mut s.chan, ByeCode::Internal, reason);
        }
        self.close_session();
        self.state = State::Ended;
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let State::Connected(s) = &mut self.state {
            bye(&mut s.chan, ByeCode::Done, "consumer left");
            s.shared.closed.store(true, Ordering::Release);
        }
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("target", &self.target)
            .field("policy", &self.opts.policy)
            .field("restarts", &self.restarts)
            .finish()
    }
}

fn bye(chan: &mut Channel, code: ByeCode, reason: &str) {
    let _ = chan.try_send(
        &Message::Bye {
            code,
            reason: reason.to_owned(),
        },
        &[],
    );
}

fn protocol(chan: &mut Channel, what: String) -> SubscribeError {
    bye(chan, ByeCode::Protocol, &what);
    SubscribeError::Protocol(what)
}

/// The sources of an error, joined (for a Bye reason that says everything in one line).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}
