//! Waiting on fds with a deadline: one `poll` loop for the whole crate. A signal (`EINTR`)
//! restarts the wait with the time that is *left*, never the whole timeout again, so a process
//! that keeps receiving signals still times out when it should.

use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd};
use rustix::io::Errno;

/// The instant `timeout` from now; `None` (wait forever) for no timeout or one too far ahead to
/// represent.
pub fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Polls `fds` until at least one has an event or `deadline` passes (`None`: no deadline).
/// Returns the number of fds with events (their `revents` are set), 0 once the deadline has
/// passed. A deadline already past still checks once without blocking.
pub fn poll_until(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> Result<usize, Errno> {
    loop {
        let ts = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            rustix::time::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: left.subsec_nanos() as i64,
            }
        });
        match poll(fds, ts.as_ref()) {
            Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::PollFlags;

    #[test]
    fn times_out_at_the_deadline_and_sees_readable_fds() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let start = Instant::now();
        let mut fds = [PollFd::new(&r, PollFlags::IN)];
        let n = poll_until(&mut fds, deadline_after(Some(Duration::from_millis(30)))).unwrap();
        assert_eq!(n, 0);
        assert!(start.elapsed() >= Duration::from_millis(30));
        rustix::io::write(&w, b"x").unwrap();
        let n = poll_until(&mut fds, deadline_after(Some(Duration::ZERO))).unwrap();
        assert_eq!(n, 1);
        assert!(fds[0].revents().contains(PollFlags::IN));
        assert_eq!(deadline_after(Some(Duration::MAX)), None);
    }

    /// Runs `f` while another thread interrupts this one with SIGUSR2 (whose handler does
    /// nothing) every 10 ms, for at most 3 s.
    pub(crate) fn under_signals<R>(f: impl FnOnce() -> R) -> R {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        extern "C" fn nothing(_: libc::c_int) {}
        // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe (it does
        // nothing); SIGUSR2 is used by no other code in this crate's tests.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
        }
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let stop = Arc::new(AtomicBool::new(false));
        let pinger = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(3) {
                    std::thread::sleep(Duration::from_millis(10));
                    // SAFETY: `me` is alive until `stop` is set: the caller joins us first.
                    unsafe { libc::pthread_kill(me, libc::SIGUSR2) };
                }
            })
        };
        let r = f();
        stop.store(true, Ordering::Relaxed);
        pinger.join().unwrap();
        r
    }

    #[test]
    fn signals_do_not_restart_the_whole_timeout() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let (took, n) = under_signals(|| {
            let start = Instant::now();
            let mut fds = [PollFd::new(&r, PollFlags::IN)];
            let n = poll_until(&mut fds, deadline_after(Some(Duration::from_millis(150))));
            (start.elapsed(), n.unwrap())
        });
        assert_eq!(n, 0);
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_millis(1500),
            "{took:?}"
        );
    }

    #[test]
    fn channel_and_listener_waits_end_on_time_under_signals() {
        // Before the one helper, these loops restarted their whole timeout after each EINTR
        // and ran until the signals stopped (3 s).
        use crate::bus::socket::{Channel, Listener};
        let (a, _b) = Channel::pair().unwrap();
        let (took, readable) = under_signals(|| {
            let start = Instant::now();
            let r = a.wait_readable(Some(Duration::from_millis(150))).unwrap();
            (start.elapsed(), r)
        });
        assert!(!readable);
        assert!(took < Duration::from_millis(1500), "channel: {took:?}");
        let path = std::env::temp_dir().join(format!("frameshare-eintr-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = Listener::bind(&path).unwrap();
        let (took, accepted) = under_signals(|| {
            let start = Instant::now();
            let r = listener.accept(Some(Duration::from_millis(150)));
            (start.elapsed(), r.is_ok())
        });
        assert!(!accepted);
        assert!(took < Duration::from_millis(1500), "listener: {took:?}");
    }
}
