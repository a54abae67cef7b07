//! One consumer's session, as the publisher keeps it: the handshake state, what it said of
//! itself, the buffers it has been told about and the frames it holds (with since when), its
//! policy's mailbox, a queue of messages its socket could not take yet, and its counters. The
//! session never blocks the publisher: every send is non-blocking, and what does not fit waits
//! in the queue (a consumer whose queue does not drain is evicted like one that holds frames
//! too long).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::socket::{Channel, ChannelError, Credentials};
use crate::bus::wire::{self, ByeCode, FrameMsg, Hello, Message, Policy, MAX_BUFFERS};
use crate::sync::SyncFile;

/// Most messages a session queues before it counts as not reading.
const MAX_QUEUED: usize = 256;

/// Where the handshake is.
#[derive(Debug)]
pub(super) enum Phase {
    /// Connected; our Hello sent; waiting for theirs until `deadline` (`None`: a trusted peer,
    /// our own child, which sets its sink up before it answers).
    AwaitHello { deadline: Option<Instant> },
    /// A consumer taking frames.
    Live,
}

/// A frame the consumer holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub(super) seq: u64,
    pub(super) since: Instant,
}

/// A frame waiting in a `latest` consumer's mailbox (its slot is reserved for it).
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) frame: FrameMsg,
    pub(super) acquire: Option<Arc<SyncFile>>,
}

/// A message the socket could not take yet, with its own copies of the fds.
#[derive(Debug)]
struct Queued {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Counters of one consumer.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SessionStats {
    pub(super) delivered: u64,
    pub(super) dropped: u64,
}

/// One consumer (or a monitor, or a peer still saying Hello).
#[derive(Debug)]
pub(super) struct Session {
    pub(super) token: u64,
    pub(super) chan: Channel,
    pub(super) peer: Credentials,
    pub(super) phase: Phase,
    pub(super) hello: Hello,
    /// Bit per buffer id the consumer was told about (AddBuffer sent, RemoveBuffer not yet).
    pub(super) announced: u64,
    pub(super) held: [Option<Held>; MAX_BUFFERS as usize],
    pub(super) mailbox: Option<Pending>,
    /// Nothing given back since it was last told of new buffers (it joined, or the format
    /// changed): it may be setting itself up for them (GPU imports and pipelines, a display
    /// mode), so its frames get the setup timeout before it counts as stalled.
    pub(super) setting_up: bool,
    /// When it last gave a frame back. A consumer that keeps giving frames back is slow, not
    /// stalled: under `wait` it paces the stream, and frames queued behind its slow ones were
    /// sent long before it could read them. So a hold counts from the later of the frame's
    /// delivery and the last give-back.
    pub(super) last_release: Option<Instant>,
    queue: VecDeque<Queued>,
    /// When the queue last went from empty to non-empty.
    queued_since: Option<Instant>,
    /// Whether the poller watches the socket for room to write (while the queue is not empty).
    pub(super) watching_output: bool,
    pub(super) stats: SessionStats,
    scratch: Vec<u8>,
}

/// Why a session must end now.
#[derive(Debug)]
pub(super) struct End {
    /// Told to the peer in a Bye (if it still listens).
    pub(super) code: ByeCode,
    pub(super) reason: String,
    /// For the log: what went wrong on the channel, if that was it.
    pub(super) error: Option<ChannelError>,
    /// No Bye back: the peer ended it with its own Bye, or was already answered (a peer of
    /// another protocol version, in its own encoding).
    pub(super) no_bye: bool,
    /// Nothing worth a log line (a monitor served, a peer of another version answered).
    pub(super) silent: bool,
}

impl End {
    pub(super) fn new(code: ByeCode, reason: impl Into<String>) -> End {
        End {
            code,
            reason: reason.into(),
            error: None,
            no_bye: false,
            silent: false,
        }
    }

    pub(super) fn silent(mut self) -> End {
        self.silent = true;
        self
    }

    /// The peer needs no Bye (it said its own, or was already answered).
    pub(super) fn without_bye(mut self) -> End {
        self.no_bye = true;
        self
    }
}

impl From<ChannelError> for End {
    fn from(e: ChannelError) -> End {
        let code = match e {
            ChannelError::PeerClosed => ByeCode::Done,
            ChannelError::Wire(_) | ChannelError::Truncated => ByeCode::Protocol,
            _ => ByeCode::Internal,
        };
        End {
            code,
            reason: e.to_string(),
            error: Some(e),
            no_bye: false,
            silent: false,
        }
    }
}

impl Session {
    pub(super) fn new(token: u64, chan: Channel, peer: Credentials, phase: Phase) -> Session {
        Session {
            token,
            chan,
            peer,
            phase,
            hello: Hello::default(),
            announced: 0,
            held: [None; MAX_BUFFERS as usize],
            mailbox: None,
            setting_up: true,
            last_release: None,
            queue: VecDeque::new(),
            queued_since: None,
            watching_output: false,
            stats: SessionStats::default(),
            scratch: Vec::new(),
        }
    }

    pub(super) fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live)
    }

    pub(super) fn policy(&self) -> Policy {
        self.hello.policy.unwrap_or_default()
    }

    pub(super) fn takes_fences(&self) -> bool {
        self.hello.features & wire::FEATURE_FENCES != 0
    }

    pub(super) fn held_count(&self) -> u32 {
        self.held.iter().filter(|h| h.is_some()).count() as u32
    }

    pub(super) fn has_queue(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Sends `msg`, or queues it (with its own copies of the fds) if the socket is full.
    pub(super) fn send(&mut self, msg: &Message, fds: &[BorrowedFd<'_>]) -> Result<(), End> {
        let mut bytes = std::mem::take(&mut self.scratch);
        msg.encode(&mut bytes);
        let sent = self.send_encoded(&bytes, fds, msg.name());
        self.scratch = bytes;
        sent
    }

    /// Sends an encoded message (`what` names it), or queues a copy of it (with its own copies
    /// of the fds) if the socket is full.
    pub(super) fn send_encoded(
        &mut self,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
        what: &str,
    ) -> Result<(), End> {
        if self.queue.is_empty()
            && crate::bus::socket::send_datagram(
                self.chan.as_fd(),
                bytes,
                fds,
                rustix::net::SendFlags::DONTWAIT,
            )?
        {
            return Ok(());
        }
        if self.queue.len() >= MAX_QUEUED {
            return Err(End::new(
                ByeCode::Evicted,
                format!("stopped reading: {MAX_QUEUED} messages queued"),
            ));
        }
        let fds = fds
            .iter()
            .map(|f| f.try_clone_to_owned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                End::new(
                    ByeCode::Internal,
                    format!("duplicating an fd to queue {what}: {e}"),
                )
            })?;
        self.queue.push_back(Queued {
            bytes: bytes.to_vec(),
            fds,
        });
        self.queued_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Sends what is queued, as far as the socket takes it. True if the queue is now empty.
    pub(super) fn flush(&mut self) -> Result<bool, End> {
        while let Some(q) = self.queue.front() {
            let fds: Vec<BorrowedFd<'_>> = q.fds.iter().map(|f| f.as_fd()).collect();
            let sent = crate::bus::socket::send_datagram(
                self.chan.as_fd(),
                &q.bytes,
                &fds,
                rustix::net::SendFlags::DONTWAIT,
            )?;
            if !sent {
                return Ok(false);
            }
            self.queue.pop_front();
            // Progress: the stall clock restarts from the next full queue.
            self.queued_since = if self.queue.is_empty() {
                None
            } else {
                Some(Instant::now())
            };
        }
        Ok(true)
    }

    /// How long it may hold a frame: `stall`, or `setup` while it sets itself up.
    fn hold_limit(&self, stall: Duration, setup: Duration) -> Duration {
        if self.setting_up {
            stall.max(setup)
        } else {
            stall
        }
    }

    /// Where the stall clock of hold `h` starts: its delivery, or the last give-back if later.
    fn hold_start(&self, h: &Held) -> Instant {
        self.last_release.map_or(h.since, |r| r.max(h.since))
    }

    /// The time by which this session must have made progress, if anything is pending.
    pub(super) fn deadline(&self, stall: Duration, setup: Duration) -> Option<Instant> {
        let limit = self.hold_limit(stall, setup);
        let oldest_hold = self.held.iter().flatten().map(|h| self.hold_start(h)).min();
        let handshake = match self.phase {
            Phase::AwaitHello { deadline } => deadline,
            Phase::Live => None,
        };
        [
            oldest_hold.map(|t| t + limit),
            self.queued_since.map(|t| t + stall),
            handshake,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Why this session must be evicted at `now`, if it must.
    pub(super) fn overdue(&self, now: Instant, stall: Duration, setup: Duration) -> Option<End> {
        if let Phase::AwaitHello {
            deadline: Some(d), ..
        } = self.phase
        {
            if now >= d {
                return Some(End::new(ByeCode::Protocol, "no Hello in time"));
            }
        }
        if let Some((id, h)) = self
            .held
            .iter()
            .enumerate()
            .filter_map(|(i, h)| Some((i, (*h)?)))
            .find(|(_, h)| now.duration_since(self.hold_start(h)) >= self.hold_limit(stall, setup))
        {
            let limit = self.hold_limit(stall, setup);
            let setting_up = if self.setting_up {
                ", giving nothing back since it was told of the buffers"
            } else {
                ""
            };
            return Some(End::new(
                ByeCode::Evicted,
                format!(
                    "stalled: held frame {} (buffer {id}) for more than {limit:?}{setting_up}",
                    h.seq
                ),
            ));
        }
        if self
            .queued_since
            .is_some_and(|t| now.duration_since(t) >= stall)
        {
            return Some(End::new(
                ByeCode::Evicted,
                format!("stalled: read nothing for more than {stall:?}"),
            ));
        }
        None
    }

    /// A name for logs: what it is and its pid.
    pub(super) fn label(&self) -> String {
        if self.hello.name.is_empty() {
            format!("pid {}", self.peer.pid)
        } else {
            format!("{} (pid {})", self.hello.name, self.peer.pid)
        }
    }
}
