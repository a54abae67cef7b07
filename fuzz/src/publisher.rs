//! `publisher_session`: the input plays a consumer against a [`Publisher`] that owns a few
//! memfd (or POSIX shm) buffers and got the consumer's socket with `add_connection`. Input:
//! `flags` (bit 0: the connection is trusted, no Hello deadline; bit 1: frames are written
//! before they are published; bit 2: the publisher ends with `abort` rather than being
//! dropped; bit 3: the buffers are POSIX shm, which cannot be sealed), then up to [`MAX_OPS`]
//! operations:
//!
//! | opcode `% 8` | operands | what |
//! |---|---|---|
//! | 0 | datagram | send it (with its fds) |
//! | 1 | | the publisher publishes a frame (`loan` + `publish`) |
//! | 2 | | the publisher dispatches (zero timeout) |
//! | 3 | `index`, `fence` | release a frame we received (`index` into those, repeats allowed: double releases), or, with none received, buffer `index % 64` frame `index`; `fence` bit 7 attaches an fd of kind `fence & 7` with `FLAG_FENCE` |
//! | 4 | `count`, `size` | the publisher replaces its buffers (`count % 3 + 1` new ones; a format change) |
//! | 5 | | stop (or resume) reading our socket: the publisher's sends back up |
//! | 6 | | read our socket now |
//! | 7 | | shut our socket down for writing (the publisher sees the consumer leave) |
//! | 8 | `index` | try to shrink (`ftruncate` to 0) a buffer fd we received: it must fail (sealed memfd, read-only POSIX shm) |
//!
//! After each operation the publisher dispatches and, unless stopped, our socket is read (frames
//! remembered for operation 3). Properties: no panic, no hang, every publisher call succeeds
//! (nothing one consumer sends may fail the publisher — only end that session), and after the
//! input the same fds and shared-memory mappings as before it.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use frameshare::alloc::memfd::MemfdAllocator;
use frameshare::alloc::posix_shm::PosixShmAllocator;
use frameshare::alloc::Allocator;
use frameshare::bus::wire::{self, Message, WireError, MAX_BUFFERS};
use frameshare::bus::{Channel, ChannelError, Publisher, PublisherOptions, WhenFull};
use frameshare::format::{Fourcc, FrameLayout};

use crate::fds::{make, make_all, FdKind};
use crate::script::Script;

/// Most operations one input runs.
pub const MAX_OPS: usize = 64;
/// Frames remembered for releases.
const MAX_RECEIVED: usize = 64;
/// Buffer fds kept to try shrinking.
const MAX_BUFFER_FDS: usize = 8;

/// What one input got to (for the tests that check the seeds reach what they are for).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Frames the consumer received.
    pub frames: usize,
    /// Releases it sent for frames it received.
    pub releases: usize,
    /// Whether the publisher ended the session (a Bye came).
    pub bye: bool,
    /// Attempts to shrink a received buffer, each refused by the kernel.
    pub shrink_refused: usize,
}

/// Runs one input, checking for leaks.
pub fn run(data: &[u8]) -> Outcome {
    crate::leaks::check("publisher session", || session(data))
}

/// A layout for the pool; `size` picks one of a few small ones (one and two planes).
fn layout(size: u8) -> FrameLayout {
    let (fourcc, w, h) = match size % 3 {
        0 => (Fourcc::XR24, 16, 8),
        1 => (Fourcc::NV12, 32, 16),
        _ => (Fourcc::YUYV, 8, 4),
    };
    FrameLayout::linear(fourcc, w, h, 64).expect("a valid layout")
}

fn buffers(count: usize, size: u8, posix_shm: bool) -> Vec<frameshare::Buffer> {
    let mut alloc: Box<dyn Allocator> = if posix_shm {
        Box::new(PosixShmAllocator::new())
    } else {
        Box::new(MemfdAllocator::new())
    };
    let l = layout(size);
    (0..count)
        .map(|_| alloc.allocate(&l).expect("allocation"))
        .collect()
}

struct Consumer {
    chan: Channel,
    reading: bool,
    /// (buffer id, frame) of the frames received, newest last.
    received: Vec<(u32, u64)>,
    /// Fds of buffers announced to us.
    buffer_fds: Vec<OwnedFd>,
    outcome: Outcome,
}

impl Consumer {
    fn drain(&mut self) {
        for _ in 0..4 * MAX_RECEIVED {
            match self.chan.try_recv() {
                Ok(Some((Message::Frame(f), _))) => {
                    self.outcome.frames += 1;
                    if self.received.len() >= MAX_RECEIVED {
                        self.received.remove(0);
                    }
                    self.received.push((f.id, f.seq));
                }
                Ok(Some((Message::AddBuffer { .. }, fds))) => {
                    for fd in fds {
                        if self.buffer_fds.len() < MAX_BUFFER_FDS {
                            self.buffer_fds.push(fd);
                        }
                    }
                }
                Ok(Some((Message::Bye { .. }, _))) => self.outcome.bye = true,
                // The one message the publisher sends in another version: the Bye that answers
                // a Hello of that version, in its encoding.
                Err(ChannelError::Wire(WireError::Version(_))) => {
                    self.outcome.bye = true;
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

fn session(data: &[u8]) -> Outcome {
    let mut script = Script::new(data);
    let Some(flags) = script.u8() else {
        return Outcome::default();
    };
    let opts = PublisherOptions {
        name: "fuzz".into(),
        pattern: Some("box".into()),
        access: Default::default(),
        stall_timeout: Duration::from_millis(200),
        setup_timeout: Duration::from_millis(200),
        handshake_timeout: Duration::from_millis(200),
        fence_timeout: Duration::from_millis(1),
        when_full: WhenFull::Drop,
    };
    let mut publisher = Publisher::new(opts).expect("publisher");
    let posix_shm = flags & 8 != 0;
    publisher
        .set_buffers(buffers(2, 0, posix_shm))
        .expect("set_buffers before any consumer");
    let (ours, theirs) = Channel::pair().expect("socketpair");
    publisher
        .add_connection(theirs, flags & 1 != 0)
        .expect("add_connection");
    let mut consumer = Consumer {
        chan: ours,
        reading: true,
        received: Vec::new(),
        buffer_fds: Vec::new(),
        outcome: Outcome::default(),
    };
    let mut seq = 0u64;
    for _ in 0..MAX_OPS {
        let Some(op) = script.u8() else {
            break;
        };
        match op % 9 {
            0 => {
                let Some(d) = script.datagram() else {
                    break;
                };
                let fds = make_all(&d.fds, d.bytes);
                let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
                let _ = consumer.chan.send_raw(d.bytes, &borrowed);
            }
            1 => {
                let loan = publisher.loan().expect("loan failed because of a consumer");
                if let Some(mut loan) = loan {
                    if flags & 2 != 0 {
                        let mut w = loan.write().expect("writing our own buffer");
                        w.bytes_mut(0)[0] = seq as u8;
                    }
                    loan.publish(seq)
                        .expect("publish failed because of a consumer");
                    seq += 1;
                }
            }
            2 => {}
            3 => {
                let (Some(index), Some(fence)) = (script.u8(), script.u8()) else {
                    break;
                };
                let (id, frame) = match consumer.received.len() {
                    0 => (index as u32 % MAX_BUFFERS, index as u64),
                    n => {
                        consumer.outcome.releases += 1;
                        consumer.received[index as usize % n]
                    }
                };
                let fence_fd = (fence & 0x80 != 0)
                    .then(|| make(FdKind::from_byte(fence & 7), 4096))
                    .flatten();
                let msg = Message::Release {
                    id,
                    seq: frame,
                    flags: if fence_fd.is_some() {
                        wire::FLAG_FENCE
                    } else {
                        0
                    },
                };
                let mut bytes = Vec::new();
                msg.encode(&mut bytes);
                let fds: Vec<_> = fence_fd.iter().map(|f| f.as_fd()).collect();
                let _ = consumer.chan.send_raw(&bytes, &fds);
            }
            4 => {
                let (Some(count), Some(size)) = (script.u8(), script.u8()) else {
                    break;
                };
                publisher
                    .set_buffers(buffers(count as usize % 3 + 1, size, posix_shm))
                    .expect("set_buffers failed because of a consumer");
            }
            5 => consumer.reading = !consumer.reading,
            6 => consumer.drain(),
            7 => {
                let _ = rustix::net::shutdown(&consumer.chan, rustix::net::Shutdown::Write);
            }
            _ => {
                let Some(i) = script.u8() else {
                    break;
                };
                if !consumer.buffer_fds.is_empty() {
                    let fd = &consumer.buffer_fds[i as usize % consumer.buffer_fds.len()];
                    assert!(
                        rustix::fs::ftruncate(fd, 0).is_err(),
                        "a consumer shrank the publisher's buffer"
                    );
                    consumer.outcome.shrink_refused += 1;
                }
            }
        }
        publisher
            .dispatch(Some(Duration::ZERO))
            .expect("dispatch failed because of a consumer");
        if consumer.reading {
            consumer.drain();
        }
    }
    if flags & 4 != 0 {
        publisher.abort("fuzz input ended");
    } else {
        drop(publisher);
    }
    consumer.drain();
    consumer.outcome
}
