//! Waiting on many fds at once with a deadline: an epoll set whose entries carry a token, and a
//! [`Waker`] (a pipe) that ends a wait from another thread or from a signal handler. The wait
//! keeps its deadline across `EINTR` (it recomputes what is left), so a signal never restarts
//! the clock.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::io::Errno;

/// What became ready.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready {
    pub(crate) token: u64,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The peer hung up or the fd is in error (read what is left, then close).
    pub(crate) hangup: bool,
}

/// Most events one wait reports (the rest are reported by the next).
const MAX_EVENTS: usize = 64;

/// An epoll set. It keeps no event buffer (events hold raw pointers, which would make the
/// publisher and the subscriber that own a poller neither `Send` nor `Sync`).
pub(crate) struct Poller {
    epoll: OwnedFd,
}

impl Poller {
    pub(crate) fn new() -> Result<Poller, Errno> {
        Ok(Poller {
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
        })
    }

    fn flags(writable: bool) -> EventFlags {
        let mut f = EventFlags::IN | EventFlags::RDHUP;
        if writable {
            f |= EventFlags::OUT;
        }
        f
    }

    /// Watches `fd` for input (and output if `writable`), reporting `token`.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, token: u64, writable: bool) -> Result<(), Errno> {
        epoll::add(
            &self.epoll,
            fd,
            EventData::new_u64(token),
            Self::flags(writable),
        )
    }

    /// Changes whether output is watched.
    pub(crate) fn modify(
        &self,
        fd: BorrowedFd<'_>,
        token: u64,
        writable: bool,
    ) -> Result<(), Errno> {
        epoll::modify(
            &self.epoll,
            fd,
            EventData::new_u64(token),
            Self::flags(writable),
        )
    }

    /// Stops watching `fd` (closing it does too).
    pub(crate) fn remove(&self, fd: BorrowedFd<'_>) {
        let _ = epoll::delete(&self.epoll, fd);
    }

    /// Waits until something is ready or `deadline` passes (`None`: no deadline), and puts
    /// what is ready in `ready` (cleared first; the caller keeps it, so a wait allocates
    /// nothing); empty means the deadline passed. The time left is recomputed after `EINTR`.
    pub(crate) fn wait(
        &mut self,
        deadline: Option<Instant>,
        ready: &mut Vec<Ready>,
    ) -> Result<(), Errno> {
        self.wait_with(ready, || {
            deadline.map(|d| {
                let left = d.saturating_duration_since(Instant::now());
                rustix::time::Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: left.subsec_nanos() as i64,
                }
            })
        })
    }

    /// What is ready now, without blocking (and without reading a clock).
    pub(crate) fn poll_now(&mut self, ready: &mut Vec<Ready>) -> Result<(), Errno> {
        self.wait_with(ready, || {
            Some(rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            })
        })
    }

    fn wait_with(
        &mut self,
        ready: &mut Vec<Ready>,
        timeout: impl Fn() -> Option<rustix::time::Timespec>,
    ) -> Result<(), Errno> {
        let mut events = [MaybeUninit::<epoll::Event>::uninit(); MAX_EVENTS];
        ready.clear();
        loop {
            match epoll::wait(&self.epoll, &mut events, timeout().as_ref()) {
                Ok((got, _)) => {
                    ready.extend(got.iter().map(|e| {
                        let f = e.flags;
                        Ready {
                            token: e.data.u64(),
                            readable: f.intersects(EventFlags::IN | EventFlags::PRI),
                            writable: f.contains(EventFlags::OUT),
                            hangup: f
                                .intersects(EventFlags::HUP | EventFlags::RDHUP | EventFlags::ERR),
                        }
                    }));
                    return Ok(());
                }
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("epoll", &self.epoll)
            .finish()
    }
}

impl AsFd for Poller {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

/// Ends a wait of the object that made it, from any thread, or from a signal handler (give
/// [`Waker::as_fd`]'s fd to one that writes a byte, such as signal-hook's pipe).
#[derive(Debug, Clone)]
pub struct Waker {
    write: Arc<OwnedFd>,
}

impl Waker {
    /// Wakes the waiting side (a no-op if a wake is already pending).
    pub fn wake(&self) {
        // A full pipe already holds a wake: EAGAIN is fine.
        let _ = rustix::io::write(&*self.write, &[1]);
    }
}

impl AsFd for Waker {
    /// The pipe's write end: writing any byte to it wakes the waiting side.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }
}

/// The read end of a wake pipe, watched by a [`Poller`].
#[derive(Debug)]
pub(crate) struct WakePipe {
    read: OwnedFd,
    waker: Waker,
}

impl WakePipe {
    pub(crate) fn new() -> Result<WakePipe, Errno> {
        let (read, write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        Ok(WakePipe {
            read,
            waker: Waker {
                write: Arc::new(write),
            },
        })
    }

    pub(crate) fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Empties the pipe; true if a wake was pending.
    pub(crate) fn drain(&self) -> bool {
        let mut buf = [0u8; 64];
        let mut woken = false;
        while let Ok(n) = rustix::io::read(&self.read, &mut buf) {
            if n == 0 {
                break;
            }
            woken = true;
        }
        woken
    }
}

impl AsFd for WakePipe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn publisher_and_subscriber_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Poller>();
        send_sync::<crate::bus::Publisher>();
        send_sync::<crate::bus::Subscriber>();
    }

    #[test]
    fn deadline_and_wake() {
        let mut p = Poller::new().unwrap();
        let pipe = WakePipe::new().unwrap();
        p.add(pipe.as_fd(), 7, false).unwrap();
        let t = Instant::now();
        let mut r = Vec::new();
        p.wait(Some(t + Duration::from_millis(30)), &mut r).unwrap();
        assert!(r.is_empty());
        assert!(t.elapsed() >= Duration::from_millis(30));
        p.poll_now(&mut r).unwrap();
        assert!(r.is_empty());
        let w = pipe.waker();
        std::thread::spawn(move || w.wake());
        p.wait(Some(Instant::now() + Duration::from_secs(10)), &mut r)
            .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].token, 7);
        p.poll_now(&mut r).unwrap();
        assert_eq!(r.len(), 1, "level-triggered: still readable");
        assert!(pipe.drain());
        assert!(!pipe.drain());
    }
}
