//! The consumer end of a session: checks and imports each announced buffer (fd type, size,
//! layout — a bad one closes the session with a Bye naming the problem), hands frames out as
//! events, and sends each buffer back with `Release` exactly once.

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::producer::{protocol_error, recv_checked};
use super::socket::Channel;
use super::wire::{self, Message, Role, MAX_BUFFERS};
use super::{monotonic_ns, PeerInfo, SessionError};
use crate::buffer::{Buffer, BufferKind};
use crate::format::FormatModifier;
use crate::sync::SyncFile;

/// A frame that arrived.
#[derive(Debug)]
pub struct IncomingFrame {
    /// Buffer id.
    pub id: u32,
    /// Sequence number.
    pub seq: u64,
    /// When the producer had it ready (CLOCK_MONOTONIC ns).
    pub timestamp_ns: u64,
    /// When it was received here (CLOCK_MONOTONIC ns).
    pub received_ns: u64,
    /// Signals when the pixels are ready to read.
    pub acquire: Option<SyncFile>,
}

/// What happened on the session.
#[derive(Debug)]
pub enum Event {
    /// A buffer joined the pool (checked; get it with [`Consumer::buffer`]).
    BufferAdded(u32),
    /// A buffer left the pool.
    BufferRemoved(u32),
    /// A frame arrived; release it with [`Consumer::release`].
    Frame(IncomingFrame),
    /// The producer sends no more frames: give back whatever is held.
    EndOfStream {
        /// The last frame's sequence number.
        last_seq: u64,
    },
    /// The producer said goodbye.
    Bye {
        /// Bye code (`wire::BYE_DONE` for a normal end).
        code: u32,
        /// Reason.
        reason: String,
    },
}

/// What this consumer can take, for its Hello.
#[derive(Debug, Clone)]
pub struct ConsumerCaps {
    /// `FEATURE_*` bits.
    pub features: u32,
    /// Kinds bitmask.
    pub kinds: u32,
    /// Formats it can import (empty: any the crate knows).
    pub formats: Vec<FormatModifier>,
    /// What it is (`verify`, `vulkan`, …).
    pub name: String,
}

/// The consumer end.
pub struct Consumer {
    chan: Channel,
    peer: PeerInfo,
    buffers: Vec<Option<Buffer>>,
    held: Vec<Option<u64>>,
}

impl Consumer {
    /// Waits (10 s) for the producer's Hello and answers with ours.
    pub fn accept(mut chan: Channel, caps: &ConsumerCaps) -> Result<Consumer, SessionError> {
        let (msg, _fds) = chan.recv_timeout(Some(Duration::from_secs(10)))?;
        let peer = match msg {
            Message::Hello {
                role: Role::Producer,
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
            other => {
                return Err(protocol_error(
                    &mut chan,
                    format!("expected the producer's Hello, got {}", other.name()),
                ))
            }
        };
        chan.send(
            &Message::Hello {
                role: Role::Consumer,
                // Every consumer session handles EndOfStream (it becomes an event).
                features: caps.features | wire::FEATURE_END_OF_STREAM,
                kinds: caps.kinds,
                formats: caps.formats.clone(),
                name: caps.name.clone(),
            },
            &[],
        )?;
        Ok(Consumer {
            chan,
            peer,
            buffers: (0..MAX_BUFFERS).map(|_| None).collect(),
            held: vec![None; MAX_BUFFERS as usize],
        })
    }

    /// What the producer said of itself.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Buffer `id`, if announced.
    pub fn buffer(&self, id: u32) -> Option<&Buffer> {
        self.buffers.get(id as usize)?.as_ref()
    }

    /// Waits for the next event (forever if `timeout` is `None`).
    pub fn next_event(&mut self, timeout: Option<Duration>) -> Result<Event, SessionError> {
        let (msg, fds) = recv_checked(&mut self.chan, timeout)?;
        self.handle(msg, fds)
    }

    fn handle(&mut self, msg: Message, mut fds: Vec<OwnedFd>) -> Result<Event, SessionError> {
        match msg {
            Message::AddBuffer {
                id,
                kind,
                layout,
                sysv_id,
            } => {
                if self.buffers[id as usize].is_some() {
                    return Err(self.fail(format!("AddBuffer {id}: id already in use")));
                }
                let made = if kind == BufferKind::SysvShm {
                    Buffer::from_sysv(layout, sysv_id)
                } else {
                    Buffer::from_fds(kind, layout, fds)
                };
                match made {
                    Ok(b) => {
                        self.buffers[id as usize] = Some(b);
                        Ok(Event::BufferAdded(id))
                    }
                    Err(e) => Err(self.fail(format!("AddBuffer {id} ({kind}): {e}"))),
                }
            }
            Message::RemoveBuffer { id } => {
                if self.buffers[id as usize].is_none() {
                    return Err(self.fail(format!("RemoveBuffer {id}: unknown buffer")));
                }
                if self.held[id as usize].is_some() {
                    return Err(
                        self.fail(format!("RemoveBuffer {id}: the consumer still holds it"))
                    );
                }
                self.buffers[id as usize] = None;
                Ok(Event::BufferRemoved(id))
            }
            Message::Frame {
                id,
                seq,
                timestamp_ns,
                flags,
            } => {
                let received_ns = monotonic_ns();
                if self.buffers[id as usize].is_none() {
                    return Err(self.fail(format!("Frame {seq} names unknown buffer {id}")));
                }
                if let Some(h) = self.held[id as usize] {
                    return Err(self.fail(format!(
                        "Frame {seq} reuses buffer {id}, still held for frame {h}"
                    )));
                }
                let acquire = if flags & wire::FLAG_FENCE != 0 {
                    match SyncFile::try_from_fd(fds.remove(0)) {
                        Ok(f) => Some(f),
                        Err(e) => return Err(self.fail(format!("Frame {seq}: acquire fence: {e}"))),
                    }
                } else {
                    None
                };
                self.held[id as usize] = Some(seq);
                Ok(Event::Frame(IncomingFrame {
                    id,
                    seq,
                    timestamp_ns,
                    received_ns,
                    acquire,
                }))
            }
            Message::EndOfStream { last_seq } => Ok(Event::EndOfStream { last_seq }),
            Message::Bye { code, reason } => Ok(Event::Bye { code, reason }),
            other => Err(self.fail(format!("unexpected {} from the producer", other.name()))),
        }
    }

    fn fail(&mut self, what: String) -> SessionError {
        protocol_error(&mut self.chan, what)
    }

    /// Gives buffer `id` (holding frame `seq`) back, with an optional release fence.
    pub fn release(
        &mut self,
        id: u32,
        seq: u64,
        fence: Option<SyncFile>,
    ) -> Result<(), SessionError> {
        match self.held.get(id as usize).copied().flatten() {
            Some(h) if h == seq => {}
            other => {
                return Err(SessionError::Usage(format!(
                    "release of buffer {id} frame {seq}: held frame is {other:?}"
                )))
            }
        }
        let flags = if fence.is_some() { wire::FLAG_FENCE } else { 0 };
        let fd = fence.map(SyncFile::into_fd);
        let fds: Vec<_> = fd.iter().map(std::os::fd::AsFd::as_fd).collect();
        self.chan.send(&Message::Release { id, seq, flags }, &fds)?;
        self.held[id as usize] = None;
        Ok(())
    }

    /// Says goodbye (best effort).
    pub fn bye(&mut self, code: u32, reason: &str) {
        let _ = self.chan.send(
            &Message::Bye {
                code,
                reason: reason.into(),
            },
            &[],
        );
    }
}
