//! The producer end of a session: owns the buffer pool, announces each buffer once, sends
//! frames (optionally with an acquire fence), takes buffers back on `Release` (waiting on their
//! release fences before writing again), and applies the pool policy when every buffer is out.

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::socket::{Channel, ChannelError};
use super::wire::{self, Message, Role};
use super::{monotonic_ns, PeerInfo, SessionError};
use crate::buffer::{Access, Buffer, BufferMapping, CpuAccess};
use crate::sync::{FenceError, SwSyncTimeline, SyncFile};

/// What to do when every buffer is still with the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolPolicy {
    /// Block until the consumer releases one (no frame lost).
    Wait,
    /// Skip the frame and count it as dropped (live sources).
    Drop,
}

impl std::str::FromStr for PoolPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wait" => Ok(PoolPolicy::Wait),
            "drop" => Ok(PoolPolicy::Drop),
            _ => Err(format!("unknown pool policy {s:?} (wait, drop)")),
        }
    }
}

/// Whether and how the producer attaches acquire fences to the frames it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcquireFenceMode {
    /// No acquire fence: the pixels are written before the frame is sent.
    #[default]
    None,
    /// Testing aid (`--acquire-fence sw-sync[:DELAY_MS]`): each frame gets a fence from a sw_sync
    /// timeline; the frame is sent *first*, the pixels are written `delay` later, then the
    /// timeline is advanced. A consumer that reads before its acquire fence signals sees stale
    /// pixels. Needs debugfs `sync/sw_sync` (root); `delay` must stay well under the consumer's
    /// acquire timeout (2 s for the CPU sinks).
    SwSyncLate {
        /// How long to hold the fence unsignalled after sending the frame.
        delay: Duration,
    },
}

impl std::str::FromStr for AcquireFenceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':').map_or((s, None), |(a, b)| (a, Some(b))) {
            ("none", None) => Ok(AcquireFenceMode::None),
            ("sw-sync", ms) => {
                let ms: u64 = match ms {
                    None => 0,
                    Some(ms) => ms
                        .parse()
                        .map_err(|_| format!("bad delay {ms:?} in {s:?} (want milliseconds)"))?,
                };
                Ok(AcquireFenceMode::SwSyncLate {
                    delay: Duration::from_millis(ms),
                })
            }
            _ => Err(format!(
                "unknown acquire-fence mode {s:?} (none, sw-sync[:DELAY_MS])"
            )),
        }
    }
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// Pool policy.
    pub policy: PoolPolicy,
    /// Longest wait for a release under `Wait` before the consumer counts as stalled.
    pub release_timeout: Duration,
    /// The same until the consumer's first release: its first frames may wait for one-time
    /// setup (GPU pipelines compiled, a display mode set).
    pub first_release_timeout: Duration,
    /// Longest wait for a release fence before the frame is dropped.
    pub fence_timeout: Duration,
    /// What the producer is (`generator:bars`); the verify sink reads the pattern from it.
    pub name: String,
    /// Acquire fences on frames sent with [`Producer::produce_frame`].
    pub acquire_fence: AcquireFenceMode,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            policy: PoolPolicy::Wait,
            release_timeout: Duration::from_secs(10),
            first_release_timeout: Duration::from_secs(60),
            fence_timeout: Duration::from_secs(2),
            name: "frameshare".into(),
            acquire_fence: AcquireFenceMode::None,
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Default)]
pub struct ProducerStats {
    /// Frames sent.
    pub produced: u64,
    /// Frames skipped: no free buffer under `Drop`, or a release fence that timed out.
    pub dropped: u64,
    /// Release fences that did not signal in time.
    pub fence_timeouts: u64,
    /// Releases received.
    pub released: u64,
}

struct Slot {
    buffer: Buffer,
    mapping: BufferMapping,
    held: Option<u64>,
    release_fence: Option<SyncFile>,
}

/// The producer end.
pub struct Producer {
    chan: Channel,
    opts: ProducerOptions,
    peer: PeerInfo,
    slots: Vec<Slot>,
    stats: ProducerStats,
    last_error: Option<String>,
    cursor: usize,
    timeline: Option<SwSyncTimeline>,
    fence_value: u32,
    /// Ids released since the last [`Producer::take_released`] (cleared by `acquire`).
    released: Vec<u32>,
    /// The last frame sent.
    last_seq: Option<u64>,
}

impl Producer {
    /// Says Hello and waits (10 s) for the consumer's.
    pub fn connect(
        mut chan: Channel,
        opts: ProducerOptions,
        features: u32,
    ) -> Result<Producer, SessionError> {
        let hello = Message::Hello {
            role: Role::Producer,
            features,
            kinds: super::all_kinds(),
            formats: Vec::new(),
            name: opts.name.clone(),
        };
        chan.send(&hello, &[])?;
        let (msg, _fds) = chan.recv_timeout(Some(Duration::from_secs(10)))?;
        let peer = match msg {
            Message::Hello {
                role: Role::Consumer,
                features,
                kinds,
                formats,
                name,
            } => PeerInfo {
                features,
                kinds,
                formats,
                name,
            },
            Message::Bye { code, reason } => return Err(SessionError::PeerBye { code, reason }),
            other => {
                return Err(protocol_error(
                    &mut chan,
                    format!("expected the consumer's Hello, got {}", other.name()),
                ))
            }
        };
        let timeline = match opts.acquire_fence {
            AcquireFenceMode::None => None,
            AcquireFenceMode::SwSyncLate { .. } => {
                if !peer.fences() || features & wire::FEATURE_FENCES == 0 {
                    return Err(SessionError::Incompatible(format!(
                        "acquire fences asked for, but {} fences",
                        if peer.fences() {
                            "this producer did not announce"
                        } else {
                            "the consumer does not take"
                        }
                    )));
                }
                Some(SwSyncTimeline::open().map_err(|e| {
                    SessionError::Incompatible(format!("acquire fences (sw_sync): {e}"))
                })?)
            }
        };
        Ok(Producer {
            chan,
            opts,
            peer,
            slots: Vec::new(),
            stats: ProducerStats::default(),
            last_error: None,
            cursor: 0,
            timeline,
            fence_value: 0,
            released: Vec::new(),
            last_seq: None,
        })
    }

    /// What the consumer said of itself.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Counters so far.
    pub fn stats(&self) -> &ProducerStats {
        &self.stats
    }

    /// The most recent non-fatal error (a fence timeout), for reports.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Adds a buffer to the pool: maps it for writing and announces it. Returns its id.
    pub fn add_buffer(&mut self, buffer: Buffer) -> Result<u32, SessionError> {
        if !self.peer.accepts_kind(buffer.kind()) {
            return Err(SessionError::Incompatible(format!(
                "consumer {:?} cannot import {} buffers",
                self.peer.name,
                buffer.kind()
            )));
        }
        let id = self.slots.len() as u32;
        if id >= wire::MAX_BUFFERS {
            return Err(SessionError::Usage(format!(
                "at most {} buffers",
                wire::MAX_BUFFERS
            )));
        }
        let mapping = buffer.map(true)?;
        let msg = Message::AddBuffer {
            id,
            kind: buffer.kind(),
            layout: buffer.layout().clone(),
            sysv_id: buffer.sysv_id().unwrap_or(-1),
        };
        self.chan.send(&msg, &buffer.fds())?;
        self.slots.push(Slot {
            buffer,
            mapping,
            held: None,
            release_fence: None,
        });
        Ok(id)
    }

    /// The buffer with id `id`.
    pub fn buffer(&self, id: u32) -> &Buffer {
        &self.slots[id as usize].buffer
    }

    /// Buffers in the pool.
    pub fn buffer_count(&self) -> usize {
        self.slots.len()
    }

    /// How many buffers the consumer holds now.
    pub fn held_count(&self) -> usize {
        self.slots.iter().filter(|s| s.held.is_some()).count()
    }

    /// Takes a free buffer for the next frame: handles pending releases, waits for the buffer's
    /// release fence, and applies the pool policy. `Ok(None)` means this frame is dropped
    /// (counted); errors end the session.
    pub fn acquire(&mut self) -> Result<Option<u32>, SessionError> {
        self.pump(Some(Duration::ZERO))?;
        self.released.clear();
        loop {
            // Round-robin from the buffer after the last one used, so a buffer whose release
            // fence timed out is retried last.
            let n = self.slots.len();
            let free = (0..n)
                .map(|k| (self.cursor + k) % n)
                .find(|&i| self.slots[i].held.is_none());
            if let Some(i) = free {
                self.cursor = (i + 1) % n;
                if let Some(fence) = &self.slots[i].release_fence {
                    match fence.wait(self.opts.fence_timeout) {
                        Ok(()) => {}
                        Err(e @ FenceError::Timeout(_)) => {
                            // The consumer may still be reading: never write this buffer now.
                            // Keep the fence; the buffer is tried again after the others.
                            self.stats.dropped += 1;
                            self.stats.fence_timeouts += 1;
                            let msg = format!(
                                "buffer {i}: release fence: {e}; frame dropped, buffer kept back"
                            );
                            log::warn!("{msg}");
                            self.last_error = Some(msg);
                            return Ok(None);
                        }
                        Err(e @ FenceError::Signalled(_)) => {
                            // Signalled, if with an error: the consumer's access has ended.
                            log::warn!("buffer {i}: release fence: {e}; reusing the buffer");
                        }
                        Err(e) => {
                            self.slots[i].release_fence = None;
                            self.stats.dropped += 1;
                            let msg = format!("buffer {i}: release fence: {e}; frame dropped");
                            log::warn!("{msg}");
                            self.last_error = Some(msg);
                            return Ok(None);
                        }
                    }
                    self.slots[i].release_fence = None;
                }
                return Ok(Some(i as u32));
            }
            match self.opts.policy {
                PoolPolicy::Drop => {
                    self.stats.dropped += 1;
                    return Ok(None);
                }
                PoolPolicy::Wait => {
                    let timeout = self.stall_timeout();
                    if !self.pump(Some(timeout))? {
                        return Err(SessionError::Stalled(timeout));
                    }
                }
            }
        }
    }

    /// How long to wait for a release before the consumer counts as stalled: longer before
    /// its first one (see [`ProducerOptions::first_release_timeout`]).
    pub fn stall_timeout(&self) -> Duration {
        if self.stats.released == 0 {
            self.opts
                .first_release_timeout
                .max(self.opts.release_timeout)
        } else {
            self.opts.release_timeout
        }
    }

    /// CPU write access to buffer `id`, for the source to fill it.
    pub fn write_access(&mut self, id: u32) -> Result<CpuAccess<'_>, SessionError> {
        let slot = &mut self.slots[id as usize];
        assert!(
            slot.held.is_none(),
            "writing buffer {id} while the consumer holds it"
        );
        Ok(slot.mapping.access(Access::Write)?)
    }

    /// Sends buffer `id` as frame `seq`, with an optional acquire fence.
    pub fn submit(
        &mut self,
        id: u32,
        seq: u64,
        acquire: Option<SyncFile>,
    ) -> Result<(), SessionError> {
        let slot = &mut self.slots[id as usize];
        let flags = if acquire.is_some() {
            wire::FLAG_FENCE
        } else {
            0
        };
        let msg = Message::Frame {
            id,
            seq,
            timestamp_ns: monotonic_ns(),
            flags,
        };
        let fence_fd: Option<OwnedFd> = acquire.map(SyncFile::into_fd);
        let fds: Vec<_> = fence_fd.iter().map(std::os::fd::AsFd::as_fd).collect();
        slot.held = Some(seq);
        self.chan.send(&msg, &fds)?;
        self.stats.produced += 1;
        self.last_seq = Some(seq);
        Ok(())
    }

    /// Fills buffer `id` with `fill` and sends it as frame `seq`, with an acquire fence as
    /// [`ProducerOptions::acquire_fence`] says: without one the pixels are written first; with
    /// [`AcquireFenceMode::SwSyncLate`] the frame goes out first, the pixels are written after
    /// the delay, and only then does the fence signal.
    pub fn produce_frame(
        &mut self,
        id: u32,
        seq: u64,
        fill: impl FnOnce(&mut CpuAccess<'_>),
    ) -> Result<(), SessionError> {
        let AcquireFenceMode::SwSyncLate { delay } = self.opts.acquire_fence else {
            {
                let mut access = self.write_access(id)?;
                fill(&mut access);
            }
            return self.submit(id, seq, None);
        };
        let timeline = self
            .timeline
            .take()
            .ok_or_else(|| SessionError::Usage("acquire fence: no sw_sync timeline".into()))?;
        let result = self.send_then_fill(&timeline, id, seq, delay, fill);
        self.timeline = Some(timeline);
        result
    }

    /// The [`AcquireFenceMode::SwSyncLate`] order: fence, send, wait, write, signal.
    fn send_then_fill(
        &mut self,
        timeline: &SwSyncTimeline,
        id: u32,
        seq: u64,
        delay: Duration,
        fill: impl FnOnce(&mut CpuAccess<'_>),
    ) -> Result<(), SessionError> {
        let fence_err = |e: FenceError| SessionError::Usage(format!("acquire fence: {e}"));
        self.fence_value = self.fence_value.wrapping_add(1);
        let fence = timeline.create_fence(self.fence_value).map_err(fence_err)?;
        self.submit(id, seq, Some(fence))?;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        // The consumer holds the buffer now and waits on the fence: this write is what the
        // fence guards.
        let written = self.slots[id as usize]
            .mapping
            .access(Access::Write)
            .map(|mut access| fill(&mut access));
        // Signal even if the write failed, so the consumer is not left waiting; it then sees
        // (and reports) the wrong pixels.
        let signalled = timeline.advance(1).map_err(fence_err);
        written?;
        signalled
    }

    /// Handles messages from the consumer for up to `timeout`; true if one was handled.
    fn pump(&mut self, timeout: Option<Duration>) -> Result<bool, SessionError> {
        let mut handled = false;
        let mut wait = timeout;
        while self.chan.wait_readable(wait)? {
            let (msg, mut fds) = recv_checked(&mut self.chan, None)?;
            match msg {
                Message::Release { id, seq, flags } => {
                    let slot = match self.slots.get_mut(id as usize) {
                        Some(s) => s,
                        None => {
                            return Err(protocol_error(
                                &mut self.chan,
                                format!("Release of unknown buffer {id}"),
                            ))
                        }
                    };
                    if slot.held != Some(seq) {
                        let what = match slot.held {
                            None => format!("Release of buffer {id} (frame {seq}), which the consumer does not hold: double release"),
                            Some(h) => format!("Release of buffer {id} for frame {seq}, but it holds frame {h}"),
                        };
                        return Err(protocol_error(&mut self.chan, what));
                    }
                    let fence = match (flags & wire::FLAG_FENCE != 0)
                        .then(|| SyncFile::try_from_fd(fds.remove(0)))
                    {
                        None => None,
                        Some(Ok(f)) => Some(f),
                        Some(Err(e)) => {
                            let what =
                                format!("Release of buffer {id} (frame {seq}): release fence: {e}");
                            return Err(protocol_error(&mut self.chan, what));
                        }
                    };
                    let slot = &mut self.slots[id as usize];
                    slot.held = None;
                    slot.release_fence = fence;
                    self.stats.released += 1;
                    self.released.push(id);
                    handled = true;
                }
                Message::Bye { code, reason } => {
                    return Err(SessionError::PeerBye { code, reason })
                }
                other => {
                    return Err(protocol_error(
                        &mut self.chan,
                        format!("unexpected {} from the consumer", other.name()),
                    ))
                }
            }
            wait = Some(Duration::ZERO);
        }
        Ok(handled)
    }

    /// For sources that own their buffers' lifecycle (a camera in export or import mode):
    /// handles messages for up to `timeout` (`Some(ZERO)`: only what is waiting) and returns the
    /// buffers released since the last call, each with its release fence (taken: the caller
    /// waits on it before writing the buffer again). Do not mix with [`Producer::acquire`].
    pub fn take_released(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Vec<(u32, Option<SyncFile>)>, SessionError> {
        if self.released.is_empty() {
            self.pump(timeout)?;
        } else {
            self.pump(Some(Duration::ZERO))?;
        }
        let ids = std::mem::take(&mut self.released);
        Ok(ids
            .into_iter()
            .map(|id| (id, self.slots[id as usize].release_fence.take()))
            .collect())
    }

    /// Ends the session with an error the consumer is told about (a Bye with `reason`).
    pub fn abort(mut self, reason: &str) {
        let _ = self.chan.send(
            &Message::Bye {
                code: wire::BYE_INTERNAL_ERROR,
                reason: reason.to_owned(),
            },
            &[],
        );
    }

    /// Waits up to `timeout` for the consumer to give back every buffer.
    pub fn drain(&mut self, timeout: Duration) -> Result<(), SessionError> {
        let deadline = std::time::Instant::now() + timeout;
        while self.held_count() > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || !self.pump(Some(left))? {
                return Err(SessionError::Stalled(timeout));
            }
        }
        Ok(())
    }

    /// Ends the session: says no frame follows (`EndOfStream`, to a consumer that takes it, so
    /// that a display gives back the frame it shows at once), waits for outstanding releases
    /// (up to `release_timeout`), says Bye.
    pub fn finish(mut self) -> Result<ProducerStats, SessionError> {
        if let Some(last_seq) = self.last_seq {
            if self.peer.features & wire::FEATURE_END_OF_STREAM != 0 {
                self.chan.send(&Message::EndOfStream { last_seq }, &[])?;
            }
        }
        let drained = self.drain(self.opts.release_timeout);
        let _ = self.chan.send(
            &Message::Bye {
                code: wire::BYE_DONE,
                reason: "done".into(),
            },
            &[],
        );
        drained?;
        Ok(self.stats)
    }
}

/// Receives one message. A datagram that cannot be decoded (malformed, over-long, or with more
/// fds than a message may carry) is a protocol error like any other: the peer is told (Bye).
pub(crate) fn recv_checked(
    chan: &mut Channel,
    timeout: Option<Duration>,
) -> Result<(Message, Vec<OwnedFd>), SessionError> {
    match chan.recv_timeout(timeout) {
        Err(
            e @ (ChannelError::Wire(_) | ChannelError::Truncated | ChannelError::ControlTruncated),
        ) => Err(protocol_error(chan, e.to_string())),
        other => Ok(other?),
    }
}

/// Tells the peer what it did wrong (best effort) and returns the error.
pub(crate) fn protocol_error(chan: &mut Channel, what: String) -> SessionError {
    log::error!("protocol error: {what}");
    let _ = chan.send(
        &Message::Bye {
            code: wire::BYE_PROTOCOL_ERROR,
            reason: what.clone(),
        },
        &[],
    );
    SessionError::Protocol(what)
}
