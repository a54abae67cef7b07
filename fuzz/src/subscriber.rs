//! `subscriber_session`: the input plays a producer against a [`Subscriber`] over a
//! socketpair. Input: `flags` (bit 0: the subscriber takes fences; bits 1–2: its policy),
//! then a datagram (meant to be the producer's Hello: it is queued before the subscriber
//! starts, which waits for it), then up to [`MAX_OPS`] operations:
//!
//! | opcode `% 6` | operands | what |
//! |---|---|---|
//! | 0 | datagram | send it (with its fds) |
//! | 1 | `index` | drop a held frame (gives it back) |
//! | 2 | `index` | read a held frame's pixels (maps the buffer; first and last byte of each fd) |
//! | 3 | `index` | take a held frame's acquire fence and drop it |
//! | 4 | `index` | give a held frame back with `Frame::release` |
//! | 5 | | wait 1 ms for the next event (a real wait, not a poll) |
//! | 6 | `index` | shrink (`ftruncate` to 0) one of the unsealable fds sent so far — a POSIX shm object or an unsealed memfd — under the subscriber's mappings |
//!
//! A read ends its access with `SharedRead::end`; memory that shrank under it (read as zeros,
//! not a SIGBUS) makes the harness leave the stream with `Subscriber::abort`, as a sink does.
//! After each operation the subscriber is driven (`next` with a zero timeout, at most
//! [`MAX_EVENTS`] events) and whatever it sent back is read and dropped. Properties: no panic,
//! no crash (a SIGBUS would be one), no hang (everything is bounded), and after the input —
//! subscriber, frames and buffers dropped — the same fds and shared-memory mappings as before.

use std::hint::black_box;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use frameshare::buffer::KindSet;
use frameshare::bus::{
    Channel, Frame, Policy, SubscribeError, Subscriber, SubscriberEvent, SubscriberOptions,
};

use crate::fds::{make_all, FdKind, FdSpec};
use crate::script::{Datagram, Script};

/// Most operations one input runs.
pub const MAX_OPS: usize = 64;
/// Most events one drive takes from the subscriber.
pub const MAX_EVENTS: usize = 64;
/// Most frames the harness holds (older ones are dropped, given back).
const MAX_HELD: usize = 16;
/// Most sent fds kept to shrink later.
const MAX_SHRINKABLE: usize = 8;

/// What one input got to (for the tests that check the seeds reach what they are for).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Buffers the subscriber accepted.
    pub buffers: usize,
    /// Frames it handed out.
    pub frames: usize,
    /// Frames whose pixels were read.
    pub reads: usize,
    /// Reads whose memory shrank under them (reported by `SharedRead::end`).
    pub truncated: usize,
    /// Whether the session ended before the input did (a Bye, a protocol error).
    pub ended: bool,
}

/// Runs one input, checking for leaks.
pub fn run(data: &[u8]) -> Outcome {
    crate::leaks::check("subscriber session", || session(data))
}

fn policy(flags: u8) -> Policy {
    match (flags >> 1) & 3 {
        1 => Policy::Drop,
        2 => Policy::Latest,
        _ => Policy::Wait,
    }
}

/// Sends one datagram from the producer's end (fds made for it, closed on our side after,
/// except the unsealable ones, kept in `shrinkable` to be truncated later).
fn send(producer: &Channel, d: &Datagram<'_>, shrinkable: &mut Vec<OwnedFd>) -> bool {
    let fds = make_all(&d.fds, d.bytes);
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let sent = producer.send_raw(d.bytes, &borrowed).is_ok();
    let unsealable = |s: &FdSpec| matches!(s.kind, FdKind::PosixShm | FdKind::MemfdUnsealed);
    // `make_all` leaves out an fd it could not make: pair specs and fds only when all were made.
    if fds.len() == d.fds.len() {
        for (spec, fd) in d.fds.iter().zip(fds) {
            if unsealable(spec) && shrinkable.len() < MAX_SHRINKABLE {
                shrinkable.push(fd);
            }
        }
    }
    sent
}

/// Reads (and drops) everything the subscriber sent: releases, its Hello, a Bye.
fn drain(producer: &mut Channel) {
    for _ in 0..4 * MAX_EVENTS {
        match producer.try_recv() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}

struct Harness {
    sub: Option<Subscriber>,
    held: Vec<Frame>,
    /// Buffers handed out with `BufferAdded`, kept (a sink keeps them) until the input ends.
    buffers: Vec<frameshare::Buffer>,
    outcome: Outcome,
}

impl Harness {
    /// Takes events until none is waiting (or the session ended, or the bound).
    fn drive(&mut self, timeout: Duration) {
        for _ in 0..MAX_EVENTS {
            let Some(sub) = &mut self.sub else {
                return;
            };
            match sub.next(Some(timeout)) {
                Ok(SubscriberEvent::Frame(f)) => {
                    self.outcome.frames += 1;
                    if self.held.len() >= MAX_HELD {
                        self.held.remove(0);
                    }
                    self.held.push(f);
                }
                Ok(SubscriberEvent::BufferAdded { buffer, .. }) => {
                    self.outcome.buffers += 1;
                    if self.buffers.len() < 2 * frameshare::bus::wire::MAX_BUFFERS as usize {
                        self.buffers.push(buffer);
                    }
                }
                Ok(SubscriberEvent::Ended { .. }) => {
                    self.outcome.ended = true;
                    self.sub = None;
                    return;
                }
                Ok(_) => {}
                Err(SubscribeError::Timeout(_)) => return,
                // Any other error ends the session (a protocol error told the producer why).
                Err(_) => {
                    self.outcome.ended = true;
                    self.sub = None;
                    return;
                }
            }
        }
    }

    fn frame(&mut self, index: u8) -> Option<usize> {
        (!self.held.is_empty()).then(|| index as usize % self.held.len())
    }
}

fn session(data: &[u8]) -> Outcome {
    let mut script = Script::new(data);
    let ended = Outcome {
        ended: true,
        ..Outcome::default()
    };
    let Some(flags) = script.u8() else {
        return ended;
    };
    let Some(hello) = script.datagram() else {
        return ended;
    };
    let (mut producer, consumer) = Channel::pair().expect("socketpair");
    let mut shrinkable = Vec::new();
    // Queued before the subscriber starts: it waits for the producer's Hello first.
    if !send(&producer, &hello, &mut shrinkable) {
        return ended;
    }
    let opts = SubscriberOptions {
        name: "fuzz".into(),
        fences: flags & 1 != 0,
        kinds: KindSet::all(),
        formats: Vec::new(),
        policy: policy(flags),
        reconnect: false,
        connect_timeout: None,
        access: Default::default(),
        stall_timeout: Duration::from_millis(50),
    };
    let sub = match Subscriber::from_channel(consumer, opts) {
        Ok(s) => s,
        Err(_) => return ended,
    };
    let mut h = Harness {
        sub: Some(sub),
        held: Vec::new(),
        buffers: Vec::new(),
        outcome: Outcome::default(),
    };
    h.drive(Duration::ZERO);
    drain(&mut producer);
    for _ in 0..MAX_OPS {
        let Some(op) = script.u8() else {
            break;
        };
        let mut timeout = Duration::ZERO;
        match op % 7 {
            0 => {
                let Some(d) = script.datagram() else {
                    break;
                };
                if !send(&producer, &d, &mut shrinkable) {
                    break;
                }
            }
            1 => {
                let Some(i) = script.u8().and_then(|i| h.frame(i)) else {
                    continue;
                };
                drop(h.held.remove(i));
            }
            2 => {
                let Some(i) = script.u8().and_then(|i| h.frame(i)) else {
                    continue;
                };
                if let Ok(read) = h.held[i].read() {
                    h.outcome.reads += 1;
                    for fd in 0..read.layout().fd_count() {
                        let b = read.bytes(fd);
                        black_box((b.first().copied(), b.last().copied()));
                    }
                    if let Err(e) = read.end() {
                        h.outcome.truncated += 1;
                        if let Some(sub) = &mut h.sub {
                            sub.abort(&e.to_string());
                        }
                    }
                }
            }
            3 => {
                let Some(i) = script.u8().and_then(|i| h.frame(i)) else {
                    continue;
                };
                drop(h.held[i].take_acquire_fence());
            }
            4 => {
                let Some(i) = script.u8().and_then(|i| h.frame(i)) else {
                    continue;
                };
                let _ = h.held.remove(i).release(None);
            }
            5 => timeout = Duration::from_millis(1),
            _ => {
                let Some(i) = script.u8() else {
                    continue;
                };
                if !shrinkable.is_empty() {
                    let fd = &shrinkable[i as usize % shrinkable.len()];
                    let _ = rustix::fs::ftruncate(fd, 0);
                }
            }
        }
        h.drive(timeout);
        drain(&mut producer);
    }
    // Frames go back while the producer still reads, then the subscriber says Bye.
    h.held.clear();
    drain(&mut producer);
    h.sub = None;
    h.buffers.clear();
    drain(&mut producer);
    h.outcome
}
