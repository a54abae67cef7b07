//! The peer: the producer side of every cell, a second process driven over the control socket.
//! Each cell keeps its state for the whole run (a publisher with its pool, a pipe, a ring), so
//! batches of different cells interleave.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use frameshare::alloc;
use frameshare::buffer::{Access, Buffer, BufferKind, BufferMapping};
use frameshare::bus::socket::Channel;
use frameshare::bus::{monotonic_ns, Publisher, PublisherOptions};
use frameshare::counters::Counters;
use frameshare::format::FrameLayout;
use frameshare::pipeline::pattern_name;
use frameshare::source::{Generator, Pattern};

use super::control::{
    recv_dgram, send_dgram, take_fds, thread_cpu_ns, write_all, Ctl, Draw, FromPeer, Mode, ToPeer,
};
use super::{
    layout_of, parse_pattern, ring_layout, BenchError, FLOOR_PING_BYTES, FLOOR_PONG_BYTES,
    FRAME_PATIENCE, PIPE_HEADER_BYTES,
};

/// A frame the peer generates in its own memory, for the copying baselines.
struct LocalFrame {
    mapping: BufferMapping,
    generator: Generator,
    bytes: usize,
}

impl LocalFrame {
    fn new(layout: &FrameLayout, pattern: Pattern) -> Result<LocalFrame, BenchError> {
        let (mut allocator, _) = alloc::open("memfd")?;
        let buffer = allocator.allocate(layout)?;
        Ok(LocalFrame {
            mapping: buffer.map(true)?,
            generator: Generator::new(pattern, layout),
            bytes: layout.size() as usize,
        })
    }

    fn fill(&mut self, seq: u64) -> Result<(), BenchError> {
        let mut access = self.mapping.access(Access::Write)?;
        self.generator.fill(0, &mut access, seq);
        Ok(())
    }

    /// Calls `f` with the frame's bytes.
    fn with_bytes<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, BenchError> {
        let access = self.mapping.access(Access::Read)?;
        Ok(f(&access.bytes(0)[..self.bytes]))
    }
}

enum PeerCell {
    Floor(OwnedFd),
    ZeroCopy {
        producer: Box<Publisher>,
        generator: Generator,
        seq: u64,
    },
    Pipe {
        pipe: OwnedFd,
        ack: OwnedFd,
        frame: LocalFrame,
        seq: u64,
    },
    Ring {
        notify: OwnedFd,
        ring: BufferMapping,
        slots: usize,
        frame: LocalFrame,
        seq: u64,
    },
}

/// Takes a buffer and draws frame `seq` into it (or not, as `draw` says).
fn zero_copy_fill<'p>(
    producer: &'p mut Publisher,
    generator: &mut Generator,
    draw: Draw,
    seq: u64,
) -> Result<frameshare::bus::Loan<'p>, BenchError> {
    let mut loan = producer
        .loan()?
        .ok_or_else(|| BenchError::Peer("the producer dropped a frame".into()))?;
    let id = loan.id();
    match draw {
        Draw::Pattern => generator.fill(id, &mut loan.write()?, seq),
        Draw::Nothing => {}
        Draw::Clear => {
            loan.write()?.bytes_mut(0).fill(0);
            // Its next pattern frame is drawn whole, not just the rows that changed.
            generator.forget(id);
        }
    }
    Ok(loan)
}

/// Waits until the consumer gave every frame back.
fn drain(producer: &mut Publisher) -> Result<(), BenchError> {
    if producer.drain(FRAME_PATIENCE)? {
        Ok(())
    } else {
        Err(BenchError::Peer(format!(
            "the consumer held frames for more than {FRAME_PATIENCE:?}"
        )))
    }
}

/// Sleeps until `deadline`; false if it had already passed.
fn sleep_until(deadline: Instant) -> bool {
    match deadline.checked_duration_since(Instant::now()) {
        Some(wait) => {
            std::thread::sleep(wait);
            true
        }
        None => false,
    }
}

impl PeerCell {
    /// Runs one batch; says how many pixel bytes it copied, how many frames were handed over
    /// late, and the CPU time its pacing took. In ping-pong batches each frame is handed over `pace` after the previous one came
    /// back, or when it is ready if that is later (a late frame: drawing it took longer).
    fn run(
        &mut self,
        mode: Mode,
        draw: Draw,
        frames: u64,
        pace: Duration,
    ) -> Result<Ran, BenchError> {
        let mut copied = 0u64;
        let mut late = 0u64;
        // The pacing sleep is the source's, not the handoff's: its CPU (the nanosleep, the
        // timer's wake-up) is measured and left out of the batch's CPU time.
        let mut pacing_cpu_ns = 0u64;
        let mut pace_until = |deadline: Instant| {
            if pace.is_zero() {
                return;
            }
            let cpu0 = thread_cpu_ns();
            if !sleep_until(deadline) {
                late += 1;
            }
            pacing_cpu_ns += thread_cpu_ns() - cpu0;
        };
        let mut released = Instant::now();
        match self {
            PeerCell::Floor(fd) => {
                let mut ping = [0u8; FLOOR_PING_BYTES];
                let mut pong = [0u8; FLOOR_PONG_BYTES];
                for seq in 0..frames {
                    pace_until(released + pace);
                    ping[8..16].copy_from_slice(&seq.to_le_bytes());
                    ping[..8].copy_from_slice(&monotonic_ns().to_le_bytes());
                    send_dgram(fd.as_fd(), &ping)?;
                    recv_dgram(fd.as_fd(), &mut pong)?;
                    released = Instant::now();
                }
            }
            PeerCell::ZeroCopy {
                producer,
                generator,
                seq,
            } => match mode {
                Mode::PingPong => {
                    for _ in 0..frames {
                        drain(producer)?;
                        released = Instant::now();
                        let loan = zero_copy_fill(producer, generator, draw, *seq)?;
                        pace_until(released + pace);
                        loan.publish(*seq)?;
                        *seq += 1;
                    }
                    drain(producer)?;
                }
                Mode::Pipelined => {
                    for _ in 0..frames {
                        zero_copy_fill(producer, generator, draw, *seq)?.publish(*seq)?;
                        *seq += 1;
                    }
                    drain(producer)?;
                }
                Mode::InProcess => {
                    for _ in 0..frames {
                        // Drawn and not sent: the loan goes back unpublished.
                        drop(zero_copy_fill(producer, generator, draw, *seq)?);
                        *seq += 1;
                    }
                }
            },
            PeerCell::Pipe {
                pipe,
                ack,
                frame,
                seq,
            } => {
                let mut header = [0u8; PIPE_HEADER_BYTES];
                let mut ack_buf = [0u8; 8];
                for _ in 0..frames {
                    frame.fill(*seq)?;
                    pace_until(released + pace);
                    header[8..].copy_from_slice(&seq.to_le_bytes());
                    header[..8].copy_from_slice(&monotonic_ns().to_le_bytes());
                    write_all(pipe.as_fd(), &header)?;
                    frame.with_bytes(|b| write_all(pipe.as_fd(), b))??;
                    copied += frame.bytes as u64;
                    recv_dgram(ack.as_fd(), &mut ack_buf)?;
                    released = Instant::now();
                    *seq += 1;
                }
            }
            PeerCell::Ring {
                notify,
                ring,
                slots,
                frame,
                seq,
            } => {
                let mut msg = [0u8; FLOOR_PING_BYTES];
                let mut release = [0u8; FLOOR_PONG_BYTES];
                let n = frame.bytes;
                for _ in 0..frames {
                    frame.fill(*seq)?;
                    let slot = (*seq % *slots as u64) as usize;
                    pace_until(released + pace);
                    let ts = monotonic_ns();
                    let mut ring = ring.access(Access::Write)?;
                    frame.with_bytes(|b| {
                        ring.bytes_mut(0)[slot * n..(slot + 1) * n].copy_from_slice(b)
                    })?;
                    copied += n as u64;
                    msg[..8].copy_from_slice(&ts.to_le_bytes());
                    msg[8..16].copy_from_slice(&seq.to_le_bytes());
                    msg[16..24].copy_from_slice(&(slot as u64).to_le_bytes());
                    send_dgram(notify.as_fd(), &msg)?;
                    recv_dgram(notify.as_fd(), &mut release)?;
                    released = Instant::now();
                    *seq += 1;
                }
            }
        }
        Ok(Ran {
            copied,
            late,
            pacing_cpu_ns,
        })
    }
}

/// What a batch did besides its frames.
struct Ran {
    /// Pixel bytes copied.
    copied: u64,
    /// Frames handed over later than the pace.
    late: u64,
    /// CPU time spent pacing (left out of the batch's CPU time).
    pacing_cpu_ns: u64,
}

fn publisher_options(pattern: Pattern) -> PublisherOptions {
    PublisherOptions {
        name: "generator".into(),
        pattern: Some(pattern_name(pattern)),
        stall_timeout: FRAME_PATIENCE,
        ..Default::default()
    }
}

/// Waits for `consumers` to join `producer`, then gives it a pool of `buffers`.
fn zero_copy_cell(
    mut producer: Publisher,
    consumers: usize,
    mut allocator: Box<dyn alloc::Allocator>,
    size: (u32, u32),
    buffers: usize,
    pattern: Pattern,
) -> Result<PeerCell, BenchError> {
    let layout = layout_of(size)?;
    if !producer.wait_for_consumers(consumers, Some(FRAME_PATIENCE))? {
        return Err(BenchError::Peer(format!(
            "{consumers} consumers did not all say Hello"
        )));
    }
    producer.set_buffers(
        (0..buffers)
            .map(|_| allocator.allocate(&layout))
            .collect::<Result<_, _>>()?,
    )?;
    Ok(PeerCell::ZeroCopy {
        producer: Box::new(producer),
        generator: Generator::new(pattern, &layout),
        seq: 0,
    })
}

fn peer_setup(msg: ToPeer, fds: Vec<OwnedFd>) -> Result<(usize, PeerCell), BenchError> {
    match msg {
        ToPeer::Floor { cell } => {
            let [fd] = take_fds(fds, "Floor")?;
            Ok((cell, PeerCell::Floor(fd)))
        }
        ToPeer::ZeroCopy {
            cell,
            alloc,
            width,
            height,
            buffers,
            pattern,
        } => {
            let pattern = parse_pattern(&pattern)?;
            let [fd] = take_fds(fds, "ZeroCopy")?;
            // Open the allocator before saying Hello: an unavailable kind closes the socket
            // at once, and the Failed message says why.
            let (allocator, _) = alloc::open(&alloc)?;
            let mut producer = Publisher::new(publisher_options(pattern))?;
            producer.add_connection(Channel::from_fd(fd), false)?;
            let cell_state =
                zero_copy_cell(producer, 1, allocator, (width, height), buffers, pattern)?;
            Ok((cell, cell_state))
        }
        ToPeer::FanOut {
            cell,
            path,
            consumers,
            alloc,
            width,
            height,
            buffers,
        } => {
            let (allocator, _) = alloc::open(&alloc)?;
            let pattern = super::DEFAULT_PATTERN;
            let producer = Publisher::listen(&path, publisher_options(pattern))?;
            let cell_state = zero_copy_cell(
                producer,
                consumers,
                allocator,
                (width, height),
                buffers,
                pattern,
            )?;
            Ok((cell, cell_state))
        }
        ToPeer::Pipe {
            cell,
            width,
            height,
            pattern,
        } => {
            let [pipe, ack] = take_fds(fds, "Pipe")?;
            let frame = LocalFrame::new(&layout_of((width, height))?, parse_pattern(&pattern)?)?;
            Ok((
                cell,
                PeerCell::Pipe {
                    pipe,
                    ack,
                    frame,
                    seq: 0,
                },
            ))
        }
        ToPeer::Ring {
            cell,
            width,
            height,
            slots,
            pattern,
        } => {
            let [ring_fd, notify] = take_fds(fds, "Ring")?;
            let frame = LocalFrame::new(&layout_of((width, height))?, parse_pattern(&pattern)?)?;
            let ring = Buffer::from_fds(
                BufferKind::Memfd,
                ring_layout((width, height), slots)?,
                vec![ring_fd],
            )?
            .map(true)?;
            Ok((
                cell,
                PeerCell::Ring {
                    notify,
                    ring,
                    slots,
                    frame,
                    seq: 0,
                },
            ))
        }
        ToPeer::Run { .. } | ToPeer::Quit => unreachable!("not a setup message"),
    }
}

/// The peer's main loop: the producer side of every cell, driven over the control socket
/// `fd` by [`run`](super::run). Returns when told to quit or when the driver goes away. A failed batch is
/// reported to the driver and then ends the peer, which closes every cell's socket, so the driver
/// never waits on a frame that will not come.
pub fn peer(fd: OwnedFd) -> Result<(), BenchError> {
    let mut ctl = Ctl::new(fd);
    let mut cells: Vec<Option<PeerCell>> = Vec::new();
    loop {
        let Some((msg, fds)) = ctl.recv::<ToPeer>(None)? else {
            return Ok(());
        };
        let reply = match msg {
            ToPeer::Quit => return Ok(()),
            ToPeer::Run {
                cell,
                mode,
                draw,
                frames,
                pace_ns,
            } => match cells.get_mut(cell).and_then(Option::as_mut) {
                None => FromPeer::Failed {
                    error: format!("no cell {cell}"),
                },
                Some(c) => {
                    let c0 = Counters::now();
                    let t0 = Instant::now();
                    let cpu0 = thread_cpu_ns();
                    match c.run(mode, draw, frames, Duration::from_nanos(pace_ns)) {
                        Ok(ran) => FromPeer::Done {
                            cell,
                            elapsed_ns: t0.elapsed().as_nanos() as u64,
                            cpu_ns: (thread_cpu_ns() - cpu0).saturating_sub(ran.pacing_cpu_ns),
                            counters: Counters::now().since(c0),
                            bytes_copied: ran.copied,
                            late: ran.late,
                        },
                        Err(e) => {
                            let _ = ctl.send(
                                &FromPeer::Failed {
                                    error: format!("cell {cell}: {e}"),
                                },
                                &[],
                            );
                            return Err(e);
                        }
                    }
                }
            },
            setup => match peer_setup(setup, fds) {
                Ok((cell, c)) => {
                    if cells.len() <= cell {
                        cells.resize_with(cell + 1, || None);
                    }
                    cells[cell] = Some(c);
                    FromPeer::Ready { cell }
                }
                Err(e) => FromPeer::Failed {
                    error: e.to_string(),
                },
            },
        };
        ctl.send(&reply, &[])?;
    }
}
