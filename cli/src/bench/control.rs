//! The benchmark's own control protocol between the driver and its peer: JSON datagrams on a
//! `SOCK_SEQPACKET` socket, with the sockets, pipes and memfds of each cell attached as
//! `SCM_RIGHTS`. The datagrams go through the library's `bus::socket` helpers (one `sendmsg`,
//! one `recvmsg`, truncation checked); only the encoding is the bench's own. Also the raw I/O
//! both sides share: bare datagrams for the floor and the baselines, pipe reads and writes, the
//! thread CPU clock.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use frameshare::bus::socket::{recv_datagram, send_datagram, ChannelError};
use frameshare::counters::Counters;

use super::{sys, BenchError};

/// What the peer is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum ToPeer {
    /// Take the attached socket as the floor ping-pong.
    Floor { cell: usize },
    /// Allocate a pool and be the producer on the attached socket.
    ZeroCopy {
        cell: usize,
        alloc: String,
        width: u32,
        height: u32,
        buffers: usize,
        pattern: String,
    },
    /// Write frames into the attached pipe; wait for acks on the attached socket.
    Pipe {
        cell: usize,
        width: u32,
        height: u32,
        pattern: String,
    },
    /// Allocate a pool and publish it at `path` to `consumers` subscribers, which connect one
    /// after the other (the fan-out section); ready once all of them joined.
    FanOut {
        cell: usize,
        path: std::path::PathBuf,
        consumers: usize,
        alloc: String,
        width: u32,
        height: u32,
        buffers: usize,
    },
    /// Copy frames into the attached ring memfd; notify on the attached socket.
    Ring {
        cell: usize,
        width: u32,
        height: u32,
        slots: usize,
        pattern: String,
    },
    /// Run a batch; in ping-pong modes each frame is handed over `pace_ns` after the previous
    /// release (or as soon as it is ready, if later).
    Run {
        cell: usize,
        mode: Mode,
        draw: Draw,
        frames: u64,
        pace_ns: u64,
    },
    /// Exit.
    Quit,
}

/// How the peer runs a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Mode {
    /// One frame in flight: wait for every release before the next frame.
    PingPong,
    /// The producer runs ahead through its pool.
    Pipelined,
    /// The generator fills the pool's buffers; nothing is sent.
    InProcess,
}

/// What the producer writes into each frame before it hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Draw {
    /// The run's generator pattern, stamped with the frame's sequence number.
    Pattern,
    /// Nothing: the buffer goes out as it is (a static source; what a handoff costs alone).
    Nothing,
    /// Every byte of the frame cleared to black, as GStreamer's `videotestsrc pattern=black`
    /// does (the same work per frame as the GStreamer producer it is compared with).
    Clear,
}

/// What the peer answers.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum FromPeer {
    Ready {
        cell: usize,
    },
    Done {
        cell: usize,
        elapsed_ns: u64,
        /// The peer thread's CPU time over the batch.
        cpu_ns: u64,
        counters: Counters,
        bytes_copied: u64,
        late: u64,
    },
    Failed {
        error: String,
    },
}

/// Largest control message (a JSON object of a few fields).
const CONTROL_MESSAGE_MAX: usize = 1 << 16;

/// A SEQPACKET control socket carrying JSON datagrams and fds.
pub(super) struct Ctl {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Ctl {
    pub(super) fn new(fd: OwnedFd) -> Ctl {
        Ctl {
            fd,
            buf: vec![0; CONTROL_MESSAGE_MAX],
        }
    }

    pub(super) fn send<T: Serialize>(
        &mut self,
        msg: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), BenchError> {
        let bytes = serde_json::to_vec(msg).map_err(|e| BenchError::Peer(e.to_string()))?;
        match send_datagram(self.fd.as_fd(), &bytes, fds, SendFlags::empty()) {
            Ok(_) => Ok(()),
            Err(ChannelError::PeerClosed) => Err(BenchError::Peer(
                "the other side closed the control socket".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Receives one message; `Ok(None)` when the other side closed the socket.
    pub(super) fn recv<T: DeserializeOwned>(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(T, Vec<OwnedFd>)>, BenchError> {
        if !wait_readable(self.fd.as_fd(), timeout)? {
            return Err(BenchError::Peer(format!(
                "no answer within {:?}",
                timeout.unwrap_or_default()
            )));
        }
        let (len, fds) = match recv_datagram(self.fd.as_fd(), &mut self.buf, RecvFlags::empty()) {
            Ok(Some(got)) => got,
            Ok(None) | Err(ChannelError::PeerClosed) => return Ok(None),
            Err(e @ (ChannelError::Truncated | ChannelError::ControlTruncated)) => {
                return Err(BenchError::Peer(format!("control message: {e}")))
            }
            Err(e) => return Err(e.into()),
        };
        let msg = serde_json::from_slice(&self.buf[..len])
            .map_err(|e| BenchError::Peer(format!("bad control message: {e}")))?;
        Ok(Some((msg, fds)))
    }
}

fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool, BenchError> {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let n = frameshare::sync::poll_until(&mut fds, frameshare::sync::deadline_after(timeout))
        .map_err(sys("poll"))?;
    Ok(n > 0)
}

/// A connected pair of bare SEQPACKET sockets (close-on-exec).
pub(super) fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), BenchError> {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(sys("socketpair"))
}

/// Sends one datagram of `bytes` (one `sendmsg`, as a frameshare message goes), blocking.
pub(super) fn send_dgram(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<(), BenchError> {
    match send_datagram(fd, bytes, &[], SendFlags::empty()) {
        Ok(_) => Ok(()),
        Err(ChannelError::PeerClosed) => Err(closed()),
        Err(e) => Err(e.into()),
    }
}

/// Receives one datagram of exactly `buf.len()` bytes (one `recvmsg`, as a frameshare message
/// comes), blocking.
pub(super) fn recv_dgram(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(), BenchError> {
    match recv_datagram(fd, buf, RecvFlags::empty()) {
        Ok(Some((n, fds))) if n == buf.len() && fds.is_empty() => Ok(()),
        Ok(Some((n, fds))) => Err(BenchError::Peer(format!(
            "datagram of {n} bytes and {} fds, expected {} bytes",
            fds.len(),
            buf.len()
        ))),
        Ok(None) | Err(ChannelError::PeerClosed) => Err(closed()),
        Err(e) => Err(e.into()),
    }
}

fn closed() -> BenchError {
    BenchError::Peer("the other side closed its socket".into())
}

/// Writes all of `bytes` into a pipe.
pub(super) fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> Result<(), BenchError> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(sys("write (pipe)")(e)),
        }
    }
    Ok(())
}

/// Fills `buf` from a pipe.
pub(super) fn read_all(fd: BorrowedFd<'_>, mut buf: &mut [u8]) -> Result<(), BenchError> {
    while !buf.is_empty() {
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) => return Err(BenchError::Peer("the pipe closed mid-frame".into())),
            Ok(n) => buf = &mut buf[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(sys("read (pipe)")(e)),
        }
    }
    Ok(())
}

/// CPU time this thread has used, ns.
pub(super) fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The `N` fds a setup message must carry.
pub(super) fn take_fds<const N: usize>(
    fds: Vec<OwnedFd>,
    what: &str,
) -> Result<[OwnedFd; N], BenchError> {
    let n = fds.len();
    fds.try_into()
        .map_err(|_| BenchError::Peer(format!("{what}: {n} fds attached, expected {N}")))
}
