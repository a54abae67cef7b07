//! The channel: a `SOCK_SEQPACKET` unix socket (message boundaries for free) carrying one
//! [`Message`] per datagram and its fds as `SCM_RIGHTS`. Received fds become `OwnedFd` at once,
//! so every error path closes them; truncated data or control (`MSG_TRUNC`, `MSG_CTRUNC`) is an
//! error, never a silently shortened message.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use super::wire::{Message, WireError, MAX_FDS, MAX_MESSAGE};
use crate::sync::{deadline_after, poll_until};

/// Errors on the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The peer closed its end (exited, crashed, or was killed).
    #[error("peer closed the connection")]
    PeerClosed,
    /// Nothing arrived in time.
    #[error("no message from the peer within {0:?}")]
    Timeout(Duration),
    /// The datagram did not fit the receive buffer.
    #[error("message larger than {MAX_MESSAGE} bytes (MSG_TRUNC)")]
    Truncated,
    /// Fds were dropped by the kernel because the control buffer was too small.
    #[error("more than {MAX_FDS} fds in one message (MSG_CTRUNC); the extra fds were lost")]
    ControlTruncated,
    /// Fds the peer sent were dropped because *this* process could not take them (its
    /// `RLIMIT_NOFILE` is reached): our limit, not the peer's fault.
    #[error("this process's fd limit (RLIMIT_NOFILE {limit}) is reached with {open} fds open: the kernel dropped fds the peer sent (MSG_CTRUNC)")]
    FdLimit {
        /// The soft limit.
        limit: u64,
        /// Fds open in this process when it happened.
        open: usize,
    },
    /// The message itself was malformed (the wire error is said in the message, so it is not
    /// a `source`: said once, also by chain printers).
    #[error("malformed message: {0}")]
    Wire(WireError),
    /// A socket call failed.
    #[error("{op}{} failed: {errno}", path.as_ref().map(|p| format!(" on {}", p.display())).unwrap_or_default())]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// The socket path, if any.
        path: Option<PathBuf>,
        /// The error.
        errno: Errno,
    },
}

impl From<WireError> for ChannelError {
    fn from(e: WireError) -> Self {
        ChannelError::Wire(e)
    }
}

/// Maps an errno to a `Sys` error naming `op` and the socket path.
fn path_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(Errno) -> ChannelError + 'a {
    move |errno| ChannelError::Sys {
        op,
        path: Some(path.to_owned()),
        errno,
    }
}

/// A new unbound, unconnected SEQPACKET unix socket.
fn seqpacket_socket() -> Result<OwnedFd, Errno> {
    rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
}

fn sys(op: &'static str) -> impl FnOnce(Errno) -> ChannelError {
    move |errno| ChannelError::Sys {
        op,
        path: None,
        errno,
    }
}

/// One end of a frameshare connection.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
    /// Where messages are received (`MAX_MESSAGE` bytes once used).
    buf: Vec<u8>,
    /// Where messages are encoded to be sent (kept apart, so a send never shrinks `buf`).
    out: Vec<u8>,
    /// The receive timeout last set on the socket (`SO_RCVTIMEO`; `None`: never set).
    recv_timeout: Option<Option<Duration>>,
}

impl Channel {
    /// A connected pair (for two processes from one `fork`/`spawn`, or two threads).
    pub fn pair() -> Result<(Channel, Channel), ChannelError> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(sys("socketpair"))?;
        Ok((Channel::from_fd(a), Channel::from_fd(b)))
    }

    /// Wraps a connected SEQPACKET socket (e.g. one inherited from a parent).
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel {
            fd,
            buf: Vec::new(),
            out: Vec::with_capacity(64),
            recv_timeout: None,
        }
    }

    /// Adopts a connected SEQPACKET socket inherited by number from the parent process (as
    /// `frameshare run` starts its consumer). Nothing else in this process may own `raw`. The
    /// number is checked to be open and to be a SEQPACKET socket before it is used.
    pub fn from_inherited_fd(raw: std::os::fd::RawFd) -> Result<Channel, ChannelError> {
        let fd = crate::sys::fd::adopt_inherited(raw).map_err(sys("adopting the inherited fd"))?;
        let ty =
            rustix::net::sockopt::socket_type(&fd).map_err(sys("SO_TYPE of the inherited fd"))?;
        if ty != SocketType::SEQPACKET {
            return Err(ChannelError::Sys {
                op: "adopting the inherited fd (not a SEQPACKET socket)",
                path: None,
                errno: Errno::NOTSOCK,
            });
        }
        Ok(Channel::from_fd(fd))
    }

    /// Connects to a listening socket at `path`.
    pub fn connect(path: &Path) -> Result<Channel, ChannelError> {
        let err = |op| path_err(path, op);
        let fd = seqpacket_socket().map_err(err("socket"))?;
        let addr = SocketAddrUnix::new(path).map_err(err("socket address"))?;
        rustix::net::connect(&fd, &addr).map_err(err("connect"))?;
        Ok(Channel::from_fd(fd))
    }

    /// Sends one message with its fds (`msg.fd_count()` of them), blocking while the peer's
    /// receive queue is full.
    pub fn send(&mut self, msg: &Message, fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        debug_assert_eq!(
            msg.fd_count(),
            fds.len(),
            "{} sent with wrong fd count",
            msg.name()
        );
        msg.encode(&mut self.out);
        send_datagram(self.fd.as_fd(), &self.out, fds, SendFlags::empty())
            .map(|sent| debug_assert!(sent))
    }

    /// Sends one message unless the peer's receive queue is full: `Ok(false)` then, and nothing
    /// was sent (a peer that stopped reading; the caller queues or drops the message).
    pub fn try_send(
        &mut self,
        msg: &Message,
        fds: &[BorrowedFd<'_>],
    ) -> Result<bool, ChannelError> {
        debug_assert_eq!(
            msg.fd_count(),
            fds.len(),
            "{} sent with wrong fd count",
            msg.name()
        );
        msg.encode(&mut self.out);
        send_datagram(self.fd.as_fd(), &self.out, fds, SendFlags::DONTWAIT)
    }

    /// The credentials of the process at the other end, as the kernel recorded them when the
    /// connection was made (`SO_PEERCRED`): nothing the peer says, so they can be trusted.
    pub fn peer_credentials(&self) -> Result<Credentials, ChannelError> {
        let c = rustix::net::sockopt::socket_peercred(&self.fd).map_err(sys("SO_PEERCRED"))?;
        Ok(Credentials {
            pid: c.pid.as_raw_nonzero().get() as u32,
            uid: c.uid.as_raw(),
            gid: c.gid.as_raw(),
        })
    }

    /// Waits up to `timeout` (forever if `None`) for a message to be readable.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool, ChannelError> {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        Ok(poll_until(&mut fds, deadline_after(timeout)).map_err(sys("poll"))? > 0)
    }

    /// Receives one message and its fds, blocking up to `timeout` (forever if `None`).
    pub fn recv_timeout(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<(Message, Vec<OwnedFd>), ChannelError> {
        if !self.wait_readable(timeout)? {
            return Err(ChannelError::Timeout(timeout.unwrap_or_default()));
        }
        self.recv()
    }

    /// Receives one message if one is waiting, without blocking (one `recvmsg`, no `poll`).
    pub fn try_recv(&mut self) -> Result<Option<(Message, Vec<OwnedFd>)>, ChannelError> {
        self.recv_with(RecvFlags::DONTWAIT)
    }

    /// Receives one message and its fds, blocking.
    pub fn recv(&mut self) -> Result<(Message, Vec<OwnedFd>), ChannelError> {
        // A blocking socket answers with a message or an error, never "nothing yet".
        self.recv_with(RecvFlags::empty())?
            .ok_or_else(|| sys("recvmsg")(Errno::AGAIN))
    }

    /// Receives one message with one blocking `recvmsg`, waiting at most `timeout` (`None`:
    /// no limit; it is set as the socket's `SO_RCVTIMEO` when it changes, so a caller that
    /// passes the same timeout each time pays no extra call). `Ok(None)` when the time ran
    /// out or a signal interrupted the wait (`SO_RCVTIMEO` makes the kernel return `EINTR`
    /// even for handlers installed with `SA_RESTART`): the caller decides whether to wait
    /// again. `timeout` must not be zero (use [`Channel::try_recv`]).
    pub fn recv_until(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(Message, Vec<OwnedFd>)>, ChannelError> {
        debug_assert!(timeout != Some(Duration::ZERO));
        if self.recv_timeout != Some(timeout) {
            rustix::net::sockopt::set_socket_timeout(
                &self.fd,
                rustix::net::sockopt::Timeout::Recv,
                timeout,
            )
            .map_err(sys("SO_RCVTIMEO"))?;
            self.recv_timeout = Some(timeout);
        }
        self.recv_inner(RecvFlags::empty(), false)
    }

    fn recv_with(
        &mut self,
        flags: RecvFlags,
    ) -> Result<Option<(Message, Vec<OwnedFd>)>, ChannelError> {
        self.recv_inner(flags, true)
    }

    fn recv_inner(
        &mut self,
        flags: RecvFlags,
        retry_interrupted: bool,
    ) -> Result<Option<(Message, Vec<OwnedFd>)>, ChannelError> {
        // Sized once: the send path encodes into its own buffer, so this is never shrunk and
        // re-zeroed between frames.
        if self.buf.len() != MAX_MESSAGE {
            self.buf.resize(MAX_MESSAGE, 0);
        }
        let got = recv_message(self.fd.as_fd(), &mut self.buf, flags, retry_interrupted)?;
        let Some((len, fds)) = got else {
            return Ok(None);
        };
        let msg = Message::decode(&self.buf[..len], fds.len())?;
        Ok(Some((msg, fds)))
    }

    /// Sends already encoded bytes as one datagram, blocking (a peer answered in another
    /// protocol version's encoding; tests playing a malicious peer).
    #[doc(hidden)]
    pub fn send_raw(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        send_datagram(self.fd.as_fd(), bytes, fds, SendFlags::empty()).map(|_| ())
    }
}

/// Who is at the other end of a connection (`SO_PEERCRED`). Defined with the buffers, whose
/// checks (may the peer attach this SysV segment?) take it.
pub use crate::buffer::Credentials;

/// Sends one datagram (one `sendmsg`) with its fds as `SCM_RIGHTS` (at most [`MAX_FDS`]).
/// `Ok(false)` only with `DONTWAIT`, when the peer's queue is full (nothing sent). `EINTR` is
/// retried; a closed peer is [`ChannelError::PeerClosed`]. For raw datagrams outside the frame
/// protocol (a benchmark's own ping, a control socket); frameshare messages go through a
/// [`Channel`].
pub fn send_datagram(
    fd: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    flags: SendFlags,
) -> Result<bool, ChannelError> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(ChannelError::ControlTruncated);
    }
    loop {
        match rustix::net::sendmsg(
            fd,
            &[IoSlice::new(bytes)],
            &mut control,
            flags | SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if flags.contains(SendFlags::DONTWAIT) => return Ok(false),
            Err(Errno::PIPE) | Err(Errno::CONNRESET) => return Err(ChannelError::PeerClosed),
            Err(errno) => {
                return Err(ChannelError::Sys {
                    op: "sendmsg",
                    path: None,
                    errno,
                })
            }
        }
    }
}

/// Receives one datagram (one `recvmsg`) into `buf`, with up to [`MAX_FDS`] fds, which become
/// `OwnedFd`s at once (close-on-exec). Returns its length and the fds; `Ok(None)` only with
/// `DONTWAIT` when nothing is waiting. Truncated data or control (`MSG_TRUNC`, `MSG_CTRUNC`) is
/// an error; so is an empty datagram without fds, which is how a closed peer reads
/// ([`ChannelError::PeerClosed`]). A reset connection is reported once, after what the peer
/// sent before it went.
pub fn recv_datagram(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
) -> Result<Option<(usize, Vec<OwnedFd>)>, ChannelError> {
    recv_message(fd, buf, flags, true)
}

/// [`recv_datagram`]; without `retry_interrupted`, `EINTR` and `EAGAIN` (a receive timeout
/// ran out) are `Ok(None)` too.
fn recv_message(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
    retry_interrupted: bool,
) -> Result<Option<(usize, Vec<OwnedFd>)>, ChannelError> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut reset = false;
    let got = loop {
        match rustix::net::recvmsg(
            fd,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            flags | RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(r) => break r,
            Err(Errno::INTR) if retry_interrupted => continue,
            Err(Errno::INTR) => return Ok(None),
            Err(Errno::AGAIN) if flags.contains(RecvFlags::DONTWAIT) || !retry_interrupted => {
                return Ok(None)
            }
            // A peer that closes with our messages unread resets the connection, but what
            // it sent before (a Bye with its reason, say) is still queued: the error is
            // reported once, so read on.
            Err(Errno::CONNRESET) if !reset => reset = true,
            Err(Errno::CONNRESET) => return Err(ChannelError::PeerClosed),
            Err(errno) => {
                return Err(ChannelError::Sys {
                    op: "recvmsg",
                    path: None,
                    errno,
                })
            }
        }
    };
    // Take ownership of every fd first, so each return below closes them.
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if got.flags.contains(ReturnFlags::CTRUNC) {
        return Err(ctrunc_cause(fds.len()));
    }
    if got.flags.contains(ReturnFlags::TRUNC) {
        return Err(ChannelError::Truncated);
    }
    if got.bytes == 0 && fds.is_empty() {
        return Err(ChannelError::PeerClosed);
    }
    Ok(Some((got.bytes, fds)))
}

/// Whose fault a `MSG_CTRUNC` is. The kernel sets it when the peer sent more fds than our
/// control buffer holds (`MAX_FDS`: the peer broke the protocol), and also when it could not
/// install a received fd here — our `RLIMIT_NOFILE` reached (`EMFILE`) — having installed
/// fewer than the buffer holds. The second is our limit, to be reported as ours.
fn ctrunc_cause(received: usize) -> ChannelError {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let open = match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => d.count().saturating_sub(1), // the directory's own fd
        // No fd left even to list them: that is the limit.
        Err(e) if e.raw_os_error() == Some(libc::EMFILE) => limit as usize,
        Err(_) => 0,
    };
    if received < MAX_FDS || open as u64 >= limit {
        ChannelError::FdLimit { limit, open }
    } else {
        ChannelError::ControlTruncated
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Channel> for OwnedFd {
    fn from(c: Channel) -> OwnedFd {
        c.fd
    }
}

/// A listening socket at a path, created mode 0600 and removed on drop.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    path: PathBuf,
}

impl Listener {
    /// Binds and listens at `path` (which must not exist), readable and writable by this user only.
    pub fn bind(path: &Path) -> Result<Listener, ChannelError> {
        Listener::bind_mode(path, 0o600)
    }

    /// The same with another mode for the socket file (0o666 lets other users connect, and
    /// their credentials are then checked per connection).
    pub fn bind_mode(path: &Path, mode: u32) -> Result<Listener, ChannelError> {
        let err = |op| path_err(path, op);
        let fd = seqpacket_socket().map_err(err("socket"))?;
        // The socket inode's mode becomes the path's mode at bind: no window with looser bits.
        rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(mode)).map_err(err("fchmod"))?;
        let addr = SocketAddrUnix::new(path).map_err(err("socket address"))?;
        rustix::net::bind(&fd, &addr).map_err(err("bind"))?;
        // From here on an error drops the listener, which removes the path.
        let listener = Listener {
            fd,
            path: path.to_owned(),
        };
        // The umask applies at bind (0666 became 0644, shutting out the users let in): set
        // the mode again on the path. Until then it is only stricter than asked.
        rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode)).map_err(err("chmod"))?;
        // Consumers of a stream may arrive together (a pipeline starting): a full backlog.
        rustix::net::listen(&listener.fd, 64).map_err(err("listen"))?;
        // Accepting never blocks: `accept` polls first, `try_accept` takes what is waiting.
        rustix::io::ioctl_fionbio(&listener.fd, true).map_err(err("FIONBIO"))?;
        Ok(listener)
    }

    /// Accepts one connection, waiting at most `timeout` (forever if `None`).
    pub fn accept(&self, timeout: Option<Duration>) -> Result<Channel, ChannelError> {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        if poll_until(&mut fds, deadline_after(timeout)).map_err(path_err(&self.path, "poll"))? == 0
        {
            return Err(ChannelError::Timeout(timeout.unwrap_or_default()));
        }
        // The accepted socket does not inherit O_NONBLOCK (accept4 without SOCK_NONBLOCK).
        let fd = rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC).map_err(|errno| {
            ChannelError::Sys {
                op: "accept",
                path: Some(self.path.clone()),
                errno,
            }
        })?;
        Ok(Channel::from_fd(fd))
    }

    /// Accepts one connection if one is waiting, without blocking.
    pub fn try_accept(&self) -> Result<Option<Channel>, ChannelError> {
        match rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC) {
            Ok(fd) => Ok(Some(Channel::from_fd(fd))),
            // The peer gave up between its connect and our accept: nothing to do.
            Err(Errno::AGAIN) | Err(Errno::INTR) | Err(Errno::CONNABORTED) => Ok(None),
            Err(errno) => Err(ChannelError::Sys {
                op: "accept",
                path: Some(self.path.clone()),
                errno,
            }),
        }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!("removing socket {}: {e}", self.path.display());
        }
    }
}
