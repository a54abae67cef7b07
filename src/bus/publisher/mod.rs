//! The producer end of a stream: a [`Publisher`] owns the buffer pool and serves any number of
//! consumers that join and leave at any time, each with its own [`Policy`]. Buffers cross once
//! per consumer (`AddBuffer`); frames are ids. A buffer returns to the pool when every consumer
//! that got it released it (or was dropped). A consumer that dies is forgotten at once; one
//! that holds a frame or leaves its socket unread past the stall timeout is evicted with a
//! `Bye`; the others never lose a frame for it. Nothing here blocks on one consumer: every send
//! is non-blocking and one epoll set watches them all (the publisher's fd, for an
//! application's own event loop).
//!
//! ```no_run
//! use frameshare::alloc::{self, AllocatorSpec};
//! use frameshare::bus::{Publisher, PublisherOptions, StreamName};
//! use frameshare::format::{Fourcc, FrameLayout};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layout = FrameLayout::linear(Fourcc::XR24, 640, 480, 256)?;
//! let mut alloc = "memfd".parse::<AllocatorSpec>()?.open()?;
//! let mut publisher = Publisher::bind(&StreamName::new("cam0")?, PublisherOptions::default())?;
//! publisher.set_buffers((0..4).map(|_| alloc.allocate(&layout)).collect::<Result<_, _>>()?)?;
//! for seq in 0..100 {
//!     let Some(mut frame) = publisher.loan()? else { continue };
//!     frame.write()?.row_mut(0, 0).fill(seq as u8);
//!     frame.publish(seq)?;
//! }
//! publisher.finish()?;
//! # Ok(())
//! # }
//! ```

mod loan;
mod pool;
mod serve;
mod session;

pub use loan::Loan;
use serve::deliver_encoded;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::io::Errno;

use super::access::AccessPolicy;
use super::name::{self, Endpoint, NameError, StreamName};
use super::poller::{Poller, Ready, WakePipe, Waker};
use super::socket::{Channel, ChannelError, Credentials};
use super::wire::{self, ByeCode, ConsumerStatus, FrameMsg, Hello, Message, Policy, StreamStatus};
use crate::buffer::{Buffer, BufferError};
use crate::meta::FrameMeta;
use crate::sync::{FenceError, SyncFile};
use pool::{Pool, SlotState};
use session::{End, Pending, Session};

const TOKEN_LISTENER: u64 = 0;
const TOKEN_WAKE: u64 = 1;

/// How often [`Publisher::loan`] serves consumers (new connections, Hellos, releases, stall
/// checks) when it has a free buffer anyway: not every frame (an `epoll_wait` per frame is a
/// good part of a frame's cost), but often enough that joins and releases are never late by
/// more than this. A loan that finds no free buffer serves them at once.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(1);

/// What to do when a frame is due and every buffer is still out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait for a release (the producer is paced by its slowest `wait` consumer).
    #[default]
    Wait,
    /// Skip the frame and count it as dropped (a live source that cannot wait).
    Drop,
}

/// Publisher settings.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// What the producer is (`generator`, `v4l2:/dev/video1`, …), told to consumers.
    pub name: String,
    /// The generator pattern, when frames are generated: verifying consumers recompute each
    /// frame from it.
    pub pattern: Option<String>,
    /// Who may connect besides this user.
    pub access: AccessPolicy,
    /// A consumer that holds frames and gives none back, or leaves its socket unread, this long
    /// is evicted (a slow consumer that keeps giving frames back is not: under `wait` it paces
    /// the stream).
    pub stall_timeout: Duration,
    /// The same for a consumer's frames until it gives one back after it joined or the
    /// format changed: it may be setting itself up for the new buffers (GPU imports and
    /// pipelines, a display mode), slow on a first run. Never shorter than `stall_timeout`.
    pub setup_timeout: Duration,
    /// A peer must say Hello this soon after connecting (consumers set up before they
    /// connect, so this bounds only hostile or broken peers).
    pub handshake_timeout: Duration,
    /// Longest wait for a buffer's release fences before the frame is dropped.
    pub fence_timeout: Duration,
    /// What [`Publisher::loan`] does when every buffer is out.
    pub when_full: WhenFull,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        PublisherOptions {
            name: "frameshare".into(),
            pattern: None,
            access: AccessPolicy::default(),
            stall_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            fence_timeout: Duration::from_secs(2),
            when_full: WhenFull::Wait,
        }
    }
}

/// Counters of a publisher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Frames published.
    pub published: u64,
    /// Frames skipped at the source: no free buffer under [`WhenFull::Drop`], or a release
    /// fence that did not signal in time.
    pub dropped: u64,
    /// Release fences that did not signal in time.
    pub fence_timeouts: u64,
    /// Consumers that joined.
    pub joined: u64,
    /// Consumers that left or died.
    pub left: u64,
    /// Consumers evicted for stalling.
    pub evicted: u64,
    /// Peers refused (credentials, a protocol version or buffers they cannot take).
    pub refused: u64,
}

/// A consumer, as its Hello and its socket's credentials describe it.
#[derive(Debug, Clone)]
pub struct ConsumerInfo {
    /// The peer's process (kernel-recorded credentials).
    pub credentials: Credentials,
    /// What it said of itself.
    pub hello: Hello,
}

/// Errors of the publisher.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The stream name or its socket.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A channel failed outside any one consumer's session.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// A buffer could not be mapped or accessed.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// Waiting for events failed.
    #[error("epoll failed")]
    Poll(#[source] Errno),
    /// The [`Waker`] was used: the caller asked to stop waiting.
    #[error("interrupted")]
    Interrupted,
    /// No such buffer in the pool.
    #[error("buffer {0} is not in the pool")]
    UnknownBuffer(u32),
    /// The buffer is still out.
    #[error("buffer {0} is still held by a consumer")]
    Busy(u32),
    /// [`Publisher::resume_loan`] of a buffer that is not on loan.
    #[error("buffer {0} is not on loan")]
    NotLoaned(u32),
    /// More buffers than the protocol's ids.
    #[error("at most {} buffers", wire::MAX_BUFFERS)]
    TooManyBuffers,
    /// An acquire fence failed.
    #[error("acquire fence")]
    Fence(#[source] FenceError),
    /// No consumer can come any more (no listening socket, and the one connection died).
    #[error("no consumer: {0}")]
    NoConsumer(String),
}

/// The producer end of a stream. See the [module docs](self).
pub struct Publisher {
    endpoint: Option<Endpoint>,
    stream: Option<StreamName>,
    opts: PublisherOptions,
    poller: Poller,
    wake: WakePipe,
    sessions: BTreeMap<u64, Session>,
    next_token: u64,
    pool: Pool,
    stats: PublisherStats,
    last_seq: Option<u64>,
    rate: RateMeter,
    /// When consumers were last served.
    last_dispatch: Instant,
    /// What the last wait found ready (kept: a wait allocates nothing).
    ready: Vec<Ready>,
    /// The frame being published, encoded once for every consumer (and once more, with the
    /// fence flag, for those that take fences).
    frame_bytes: Vec<u8>,
    fenced_frame_bytes: Vec<u8>,
    /// The memory kind of the current buffers (consumers must take it).
    kind: Option<crate::buffer::BufferKind>,
}

impl Publisher {
    /// A publisher with no socket: consumers come through [`Publisher::add_connection`].
    pub fn new(opts: PublisherOptions) -> Result<Publisher, PublishError> {
        let poller = Poller::new().map_err(PublishError::Poll)?;
        let wake = WakePipe::new().map_err(PublishError::Poll)?;
        poller
            .add(wake.as_fd(), TOKEN_WAKE, false)
            .map_err(PublishError::Poll)?;
        Ok(Publisher {
            endpoint: None,
            stream: None,
            opts,
            poller,
            wake,
            sessions: BTreeMap::new(),
            next_token: 2,
            pool: Pool::default(),
            stats: PublisherStats::default(),
            last_seq: None,
            rate: RateMeter::default(),
            last_dispatch: Instant::now(),
            ready: Vec::new(),
            frame_bytes: Vec::new(),
            fenced_frame_bytes: Vec::new(),
            kind: None,
        })
    }

    /// Publishes the stream `name` (its socket in [`name::runtime_dir`]).
    pub fn bind(name: &StreamName, opts: PublisherOptions) -> Result<Publisher, PublishError> {
        let endpoint = name::bind_name(name, &opts.access)?;
        let mut p = Publisher::new(opts)?;
        p.listen_on(endpoint)?;
        p.stream = Some(name.clone());
        Ok(p)
    }

    /// Listens at a bare socket path (a stale socket there is replaced).
    pub fn listen(path: &Path, opts: PublisherOptions) -> Result<Publisher, PublishError> {
        let endpoint = name::bind_path(path, &opts.access)?;
        let mut p = Publisher::new(opts)?;
        p.listen_on(endpoint)?;
        Ok(p)
    }

    fn listen_on(&mut self, endpoint: Endpoint) -> Result<(), PublishError> {
        self.poller
            .add(endpoint.listener.as_fd(), TOKEN_LISTENER, false)
            .map_err(PublishError::Poll)?;
        self.endpoint = Some(endpoint);
        Ok(())
    }

    /// The socket path consumers connect to, if listening.
    pub fn socket_path(&self) -> Option<&Path> {
        self.endpoint.as_ref().map(|e| e.listener.path())
    }

    /// Serves a connection made elsewhere (the consumer end of a socketpair given to a child
    /// process). A `trusted` peer (our own child) has no deadline for its Hello: it sets its
    /// sink up first, however long that takes; its death still ends the wait at once.
    pub fn add_connection(&mut self, chan: Channel, trusted: bool) -> Result<(), PublishError> {
        let deadline = (!trusted).then(|| Instant::now() + self.opts.handshake_timeout);
        self.open_session(chan, deadline);
        Ok(())
    }

    /// A handle that ends any wait of this publisher from another thread or a signal handler
    /// ([`PublishError::Interrupted`]).
    pub fn waker(&self) -> Waker {
        self.wake.waker()
    }

    /// Counters so far.
    pub fn stats(&self) -> &PublisherStats {
        &self.stats
    }

    /// The consumers taking frames now.
    pub fn consumers(&self) -> Vec<ConsumerInfo> {
        self.live()
            .map(|s| ConsumerInfo {
                credentials: s.peer,
                hello: s.hello.clone(),
            })
            .collect()
    }

    fn live(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values().filter(|s| s.is_live())
    }

    /// Buffers in the pool.
    pub fn buffer_count(&self) -> usize {
        self.pool.len()
    }

    /// Buffer `id` of the pool.
    pub fn buffer(&self, id: u32) -> Option<&Buffer> {
        self.pool.get(id).map(|s| &s.buffer)
    }

    /// Sets the pool: the buffers there were retire (each consumer is told `RemoveBuffer` once
    /// it gave its frames back; a format or size change) and these join, announced to every
    /// consumer; consumers that cannot take them are ended with a `Bye` saying why. Returns
    /// the new buffers' ids.
    pub fn set_buffers(&mut self, buffers: Vec<Buffer>) -> Result<Vec<u32>, PublishError> {
        let old = self.pool.current_ids();
        for &id in &old {
            if let Some(s) = self.pool.get_mut(id) {
                s.retiring = true;
            }
        }
        // Mailbox frames of retiring buffers will never be shown: drop them now.
        let mut unheld = Vec::new();
        for s in self.sessions.values_mut() {
            if s.mailbox
                .as_ref()
                .is_some_and(|m| old.contains(&m.frame.id))
            {
                let m = s.mailbox.take().expect("checked");
                s.stats.dropped += 1;
                unheld.push(m.frame.id);
            }
        }
        for id in unheld {
            self.pool.unhold(id);
        }
        for id in old {
            self.settle_retiring(id);
        }
        self.kind = buffers.first().map(|b| b.kind());
        self.insert_and_announce(buffers)
    }

    /// Adds buffers to the pool beside the ones there (nothing retires), announced to every
    /// consumer: for a source whose buffers show up one at a time (a GStreamer upstream's pool,
    /// recognised as each of its buffers first arrives). They must be of the pool's memory kind
    /// and layout; a change of either goes through [`Publisher::set_buffers`]. Returns their ids.
    pub fn add_buffers(&mut self, buffers: Vec<Buffer>) -> Result<Vec<u32>, PublishError> {
        if self.pool.current_ids().is_empty() {
            self.kind = buffers.first().map(|b| b.kind());
        }
        self.insert_and_announce(buffers)
    }

    /// Puts `buffers` in the pool and tells every consumer there of them; returns their ids.
    fn insert_and_announce(&mut self, buffers: Vec<Buffer>) -> Result<Vec<u32>, PublishError> {
        let mut ids = Vec::with_capacity(buffers.len());
        for b in buffers {
            ids.push(self.pool.insert(b).ok_or(PublishError::TooManyBuffers)?);
        }
        let tokens: Vec<u64> = self.live().map(|s| s.token).collect();
        for t in tokens {
            self.announce(t, &ids);
        }
        Ok(ids)
    }

    /// Takes a free buffer for the next frame. `Ok(None)`: the frame is dropped (counted) —
    /// no buffer came free under [`WhenFull::Drop`], or release fences did not signal. Under
    /// [`WhenFull::Wait`] this serves consumers until one gives a buffer back.
    pub fn loan(&mut self) -> Result<Option<Loan<'_>>, PublishError> {
        if self.last_dispatch.elapsed() >= HOUSEKEEPING_INTERVAL {
            self.dispatch(Some(Duration::ZERO))?;
        }
        let mut served = false;
        loop {
            match self.pool.next_free() {
                Some(id) => match self.wait_release_fences(id) {
                    Ok(()) => {
                        let slot = self
                            .pool
                            .get_mut(id)
                            .ok_or(PublishError::UnknownBuffer(id))?;
                        slot.state = SlotState::Loaned;
                        slot.returned = false;
                        return Ok(Some(Loan {
                            publisher: self,
                            id,
                            meta: FrameMeta::default(),
                            acquire: None,
                            sent: false,
                        }));
                    }
                    Err(()) => {
                        // Its readers may still be reading: never written now. The frame is
                        // late by the fence timeout already: it is dropped, and the next loan
                        // tries the other buffers first.
                        self.stats.dropped += 1;
                        return Ok(None);
                    }
                },
                None if self.pool.len() == 0 => {
                    self.stats.dropped += 1;
                    return Ok(None);
                }
                // Releases may be waiting unread: take them before deciding.
                None if !served => {
                    self.dispatch(Some(Duration::ZERO))?;
                    served = true;
                }
                None if self.opts.when_full == WhenFull::Drop => {
                    self.stats.dropped += 1;
                    return Ok(None);
                }
                None => {
                    self.dispatch(None)?;
                }
            }
        }
    }

    /// A loan put aside with [`Loan::suspend`], taken up again: fill it, publish it, or drop it
    /// to give the buffer back unsent.
    pub fn resume_loan(&mut self, id: u32) -> Result<Loan<'_>, PublishError> {
        match self.pool.get(id) {
            Some(slot) if slot.state == SlotState::Loaned => Ok(Loan {
                publisher: self,
                id,
                meta: FrameMeta::default(),
                acquire: None,
                sent: false,
            }),
            Some(_) => Err(PublishError::NotLoaned(id)),
            None => Err(PublishError::UnknownBuffer(id)),
        }
    }

    /// Waits for the release fences of slot `id`; `Err` if one did not signal in time (the
    /// fences stay, the slot is tried again later).
    fn wait_release_fences(&mut self, id: u32) -> Result<(), ()> {
        let timeout = self.opts.fence_timeout;
        let Some(slot) = self.pool.get_mut(id) else {
            return Err(());
        };
        while let Some(f) = slot.fences.last() {
            match f.wait(timeout) {
                Ok(()) => {}
                Err(e @ FenceError::Timeout(_)) => {
                    log::warn!("buffer {id}: release fence: {e}; frame dropped, buffer kept back");
                    self.stats.fence_timeouts += 1;
                    return Err(());
                }
                // Signalled with an error, or unreadable: the reader is done either way.
                Err(e) => log::warn!("buffer {id}: release fence: {e}; reusing the buffer"),
            }
            slot.fences.pop();
        }
        Ok(())
    }

    /// Sends buffer `id`, filled by the caller's source (a camera's own buffer), as frame
    /// `seq`. The buffer must not be out. For buffers filled on the CPU use [`Publisher::loan`].
    pub fn publish(
        &mut self,
        id: u32,
        seq: u64,
        meta: FrameMeta,
        acquire: Option<SyncFile>,
    ) -> Result<(), PublishError> {
        let slot = self.pool.get(id).ok_or(PublishError::UnknownBuffer(id))?;
        if !matches!(slot.state, SlotState::Free | SlotState::Loaned) || slot.retiring {
            return Err(PublishError::Busy(id));
        }
        self.send_frame(id, seq, meta, acquire)
    }

    /// Buffers that came back from every consumer since the last call, for a source that
    /// returns them to a device (a camera requeues them). Their release fences were waited for.
    pub fn take_released(&mut self) -> Vec<u32> {
        let ids = self.pool.take_returned();
        ids.into_iter()
            .filter(|&id| self.wait_release_fences(id).is_ok())
            .collect()
    }

    fn send_frame(
        &mut self,
        id: u32,
        seq: u64,
        meta: FrameMeta,
        acquire: Option<SyncFile>,
    ) -> Result<(), PublishError> {
        // A buffer a consumer truncated under our writes (the SIGBUS guard kept us alive) holds
        // zeros now: say so rather than send it.
        self.pool.check_intact(id)?;
        let frame = FrameMsg {
            id,
            seq,
            timestamp_ns: meta.clock.now_ns(),
            flags: 0,
            meta,
        };
        let frame = &frame;
        let acquire = acquire.map(Arc::new);
        if let Some(s) = self.pool.get_mut(id) {
            s.state = SlotState::Out { holders: 0 };
        }
        // Encoded once for every consumer; with the fence flag once more, if anyone takes it.
        frame.encode_with_flags(0, &mut self.frame_bytes);
        let mut fenced_encoded = false;
        // Consumers that take no fences get the frame once its fence signalled.
        let mut cpu_waited = None;
        let quota = (self.pool.len() as u32 / 2).max(1);
        let now = Instant::now();
        let mut ends = Vec::new();
        let mut holds = 0u32;
        for s in self.sessions.values_mut().filter(|s| s.is_live()) {
            if s.announced & (1 << id) == 0 {
                continue;
            }
            let busy = s.has_queue();
            match s.policy() {
                Policy::Wait => {}
                Policy::Drop if !busy && s.held_count() < quota => {}
                Policy::Drop => {
                    s.stats.dropped += 1;
                    continue;
                }
                Policy::Latest if !busy && s.held_count() == 0 && s.mailbox.is_none() => {}
                Policy::Latest => {
                    // Mailbox: this frame waits for the consumer's release, replacing (and
                    // dropping) the one that waited.
                    let pending = Pending {
                        frame: frame.clone(),
                        acquire: acquire.clone(),
                    };
                    if let Some(old) = s.mailbox.replace(pending) {
                        s.stats.dropped += 1;
                        ends.push((s.token, None, Some(old.frame.id)));
                    }
                    holds += 1;
                    continue;
                }
            }
            let fence = acquire.as_deref().filter(|_| s.takes_fences());
            if !s.takes_fences() {
                if let Some(f) = &acquire {
                    let ok =
                        *cpu_waited.get_or_insert_with(|| f.wait(self.opts.fence_timeout).is_ok());
                    if !ok {
                        s.stats.dropped += 1;
                        continue;
                    }
                }
            }
            let bytes = match fence {
                Some(_) => {
                    if !fenced_encoded {
                        frame.encode_with_flags(wire::FLAG_FENCE, &mut self.fenced_frame_bytes);
                        fenced_encoded = true;
                    }
                    &self.fenced_frame_bytes
                }
                None => &self.frame_bytes,
            };
            match deliver_encoded(s, bytes, fence, id, seq, now) {
                Ok(()) => holds += 1,
                Err(e) => ends.push((s.token, Some(e), None)),
            }
        }
        for _ in 0..holds {
            self.pool.hold(id);
        }
        if holds == 0 {
            if let Some(s) = self.pool.get_mut(id) {
                s.state = SlotState::Free;
                s.returned = true;
            }
        }
        for (token, end, unhold) in ends {
            if let Some(old) = unhold {
                if self.pool.unhold(old) {
                    self.settle_retiring(old);
                }
            }
            if let Some(end) = end {
                self.end_session(token, end);
            }
        }
        self.stats.published += 1;
        self.last_seq = Some(seq);
        self.rate.count(now);
        Ok(())
    }

    /// Serves consumers: new connections, Hellos, releases, evictions, until something
    /// happened or `timeout` passed (`None`: until something happened). True if something did.
    pub fn dispatch(&mut self, timeout: Option<Duration>) -> Result<bool, PublishError> {
        let now = Instant::now();
        let deadline = timeout.map(|t| now + t);
        let (stall, setup) = (self.opts.stall_timeout, self.opts.setup_timeout);
        let housekeeping = self
            .sessions
            .values()
            .filter_map(|s| s.deadline(stall, setup))
            .min();
        let wait_until = match (deadline, housekeeping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Sessions whose socket was full get woken when it has room again.
        for s in self.sessions.values_mut() {
            if s.has_queue() != s.watching_output
                && self
                    .poller
                    .modify(s.chan.as_fd(), s.token, s.has_queue())
                    .is_ok()
            {
                s.watching_output = s.has_queue();
            }
        }
        let mut ready = std::mem::take(&mut self.ready);
        let waited = match wait_until {
            Some(d) if d <= now => self.poller.poll_now(&mut ready),
            d => self.poller.wait(d, &mut ready),
        };
        let result = waited
            .map_err(PublishError::Poll)
            .and_then(|()| self.serve(&ready));
        let mut progress = !ready.is_empty();
        self.ready = ready;
        result?;
        let now = Instant::now();
        self.last_dispatch = now;
        let overdue: Vec<(u64, End)> = self
            .sessions
            .values()
            .filter_map(|s| Some((s.token, s.overdue(now, stall, setup)?)))
            .collect();
        for (token, end) in overdue {
            progress = true;
            self.end_session(token, end);
        }
        Ok(progress)
    }

    /// Handles what a wait found ready.
    fn serve(&mut self, ready: &[Ready]) -> Result<(), PublishError> {
        for r in ready {
            match r.token {
                TOKEN_LISTENER => self.accept_all()?,
                TOKEN_WAKE => {
                    if self.wake.drain() {
                        return Err(PublishError::Interrupted);
                    }
                }
                token => self.service(token, *r),
            }
        }
        Ok(())
    }

    /// Serves consumers until at least `n` take frames; `false` if `timeout` passed first.
    pub fn wait_for_consumers(
        &mut self,
        n: usize,
        timeout: Option<Duration>,
    ) -> Result<bool, PublishError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        while self.live().count() < n {
            if self.endpoint.is_none() && self.sessions.is_empty() {
                return Err(PublishError::NoConsumer(
                    "the consumer's connection closed before it said Hello".into(),
                ));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(false);
            }
            self.dispatch(left)?;
        }
        Ok(true)
    }

    /// Serves consumers until none holds a frame; `false` if `timeout` passed first.
    pub fn drain(&mut self, timeout: Duration) -> Result<bool, PublishError> {
        let deadline = Instant::now() + timeout;
        while self
            .sessions
            .values()
            .any(|s| s.held_count() > 0 || s.mailbox.is_some())
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.dispatch(Some(left))?;
        }
        Ok(true)
    }

    /// The stream as a monitor sees it.
    pub fn status(&self) -> StreamStatus {
        let layout = self
            .pool
            .current_ids()
            .first()
            .and_then(|&id| self.pool.get(id))
            .map(|s| s.buffer.layout().clone());
        let fps_milli = self.rate.fps_milli();
        StreamStatus {
            stream: self
                .stream
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            pid: std::process::id(),
            source: self.source_label(),
            format: layout
                .as_ref()
                .map(|l| l.fourcc().to_string())
                .unwrap_or_default(),
            width: layout.as_ref().map_or(0, |l| l.width()),
            height: layout.as_ref().map_or(0, |l| l.height()),
            memory: self.kind.map(|k| k.name().to_owned()).unwrap_or_default(),
            buffers: self.pool.len() as u32,
            frames: self.stats.published,
            fps_milli,
            consumer_count: self.live().count() as u32,
            consumers: self
                .live()
                .map(|s| ConsumerStatus {
                    pid: s.peer.pid,
                    uid: s.peer.uid,
                    name: s.hello.name.clone(),
                    policy: s.policy(),
                    delivered: s.stats.delivered,
                    dropped: s.stats.dropped,
                    held: s.held_count(),
                })
                .collect(),
        }
    }

    fn source_label(&self) -> String {
        match &self.opts.pattern {
            Some(p) => format!("{}:{p}", self.opts.name),
            None => self.opts.name.clone(),
        }
    }

    /// Ends the stream: tells consumers no frame follows (`EndOfStream`, so a display gives
    /// back the frame it shows), waits until every consumer gave its frames back (a stalled
    /// one is evicted after the stall timeout), says `Bye` ("stream ended") and removes the
    /// socket.
    pub fn finish(mut self) -> Result<PublisherStats, PublishError> {
        if let Some(last_seq) = self.last_seq {
            let tokens: Vec<u64> = self.live().map(|s| s.token).collect();
            for t in tokens {
                let Some(s) = self.sessions.get_mut(&t) else {
                    continue;
                };
                if s.hello.features & wire::FEATURE_END_OF_STREAM == 0 {
                    continue;
                }
                if let Err(e) = s.send(&Message::EndOfStream { last_seq }, &[]) {
                    self.end_session(t, e);
                }
            }
        }
        while self
            .sessions
            .values()
            .any(|s| s.held_count() > 0 || s.has_queue())
        {
            match self.dispatch(None) {
                Ok(_) => {}
                Err(PublishError::Interrupted) => break,
                Err(e) => return Err(e),
            }
        }
        let tokens: Vec<u64> = self.sessions.keys().copied().collect();
        for t in tokens {
            self.end_session(t, End::new(ByeCode::Done, "stream ended"));
        }
        Ok(self.stats.clone())
    }

    /// Ends the stream because the producer failed: every consumer is told why (a `Bye`).
    pub fn abort(mut self, reason: &str) {
        let tokens: Vec<u64> = self.sessions.keys().copied().collect();
        for t in tokens {
            self.end_session(t, End::new(ByeCode::Internal, reason).silent());
        }
    }
}

impl AsFd for Publisher {
    /// Readable when [`Publisher::dispatch`] has work (an epoll fd: for GLib, tokio, calloop).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("stream", &self.stream)
            .field("consumers", &self.sessions.len())
            .field("buffers", &self.pool.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Frames per second over the last full second (what a monitor is told).
#[derive(Debug, Default)]
struct RateMeter {
    window_start: Option<Instant>,
    frames: u64,
    last_fps_milli: u64,
}

impl RateMeter {
    fn count(&mut self, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        self.frames += 1;
        let span = now.duration_since(start);
        if span >= Duration::from_secs(1) {
            self.last_fps_milli = (self.frames as f64 * 1000.0 / span.as_secs_f64()) as u64;
            self.window_start = Some(now);
            self.frames = 0;
        }
    }

    fn fps_milli(&self) -> u64 {
        if self.last_fps_milli > 0 {
            return self.last_fps_milli;
        }
        // Less than a second so far: the rate since the first frame.
        match self.window_start {
            Some(start) if self.frames > 1 => {
                let span = start.elapsed().as_secs_f64();
                if span > 0.0 {
                    (self.frames as f64 * 1000.0 / span) as u64
                } else {
                    0
                }
            }
            _ => 0,
        }
    }
}
