//! Leak checks around one input: the process's open fds (`/proc/self/fd`) and its mappings of
//! shared memory (`/proc/self/maps` lines naming a memfd, a POSIX or SysV shm object or one of
//! the harness's files) must be the same after the input as before. Only shared-memory
//! mappings are counted: the sanitizer's allocator maps and unmaps anonymous memory on its
//! own schedule, so the total line count moves without any leak of ours. Refused files on a
//! real filesystem are closed by frameshare on a thread of its own: the check waits for that
//! thread to have closed them (`frameshare::buffer::wait_for_refused_closes`) before it counts.

use std::io::Read;
use std::sync::Mutex;

/// What is open and mapped at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Entries of `/proc/self/fd`.
    pub fds: usize,
    /// Lines of `/proc/self/maps` that map shared memory.
    pub shared_mappings: usize,
    /// The open fd numbers (to name what leaked).
    open: Vec<i32>,
}

impl Snapshot {
    fn same_counts(&self, other: &Snapshot) -> bool {
        (self.fds, self.shared_mappings) == (other.fds, other.shared_mappings)
    }

    /// What the fds open now but not in `before` are (`/proc/self/fd` links).
    fn new_since(&self, before: &Snapshot) -> Vec<String> {
        self.open
            .iter()
            .filter(|fd| !before.open.contains(fd))
            .map(|fd| {
                let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .map(|l| l.display().to_string())
                    .unwrap_or_else(|e| format!("? ({e})"));
                format!("{fd} → {link}")
            })
            .collect()
    }
}

/// Whether a `/proc/self/maps` line maps shared memory a session could have left behind.
fn is_shared_memory(line: &str) -> bool {
    [
        "memfd:",
        "/dev/shm/",
        "SYSV",
        "frameshare-fuzz-",
        "/dmabuf:",
    ]
    .iter()
    .any(|p| line.contains(p))
}

/// Counts what is open and mapped now.
pub fn snapshot() -> Snapshot {
    let mut open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    open.sort_unstable();
    let mut maps = String::new();
    std::fs::File::open("/proc/self/maps")
        .and_then(|mut f| f.read_to_string(&mut maps))
        .expect("/proc/self/maps");
    let shared_mappings = maps.lines().filter(|l| is_shared_memory(l)).count();
    Snapshot {
        fds: open.len(),
        shared_mappings,
        open,
    }
}

/// Taken by every test that opens fds or runs a session: the leak check counts the whole
/// process's fds, so a file another test thread has open would read as a leak.
#[cfg(test)]
pub(crate) static TEST_SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f` and panics if it left an fd open or a shared mapping in place. One check at a time
/// (the counts are the whole process's: tests run on several threads).
pub fn check<R>(what: &str, f: impl FnOnce() -> R) -> R {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = snapshot();
    let r = f();
    // A refused file on a filesystem a daemon could serve is closed on frameshare's closing
    // thread (FUSE flushes on close, and a hostile daemon could hold the session there): wait
    // until that thread has closed everything queued so far, then count. No time allowance: an
    // fd still open after that is a leak, however loaded the machine.
    frameshare::buffer::wait_for_refused_closes();
    let after = snapshot();
    assert!(
        before.same_counts(&after),
        "{what}: leaked (before → after: fds {} → {}, shared mappings {} → {}); new fds: {:?}",
        before.fds,
        after.fds,
        before.shared_mappings,
        after.shared_mappings,
        after.new_since(&before)
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "leaked")]
    fn an_fd_left_open_is_found() {
        let _serial = TEST_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        check("test", || {
            std::mem::forget(std::fs::File::open("/dev/null").unwrap());
        });
    }

    #[test]
    #[should_panic(expected = "leaked")]
    fn a_shared_mapping_left_in_place_is_found() {
        let _serial = TEST_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        check("test", || {
            let fd = crate::fds::make(crate::fds::FdKind::MemfdSealed, 4096).unwrap();
            let map = frameshare::buffer::Buffer::from_fds(
                frameshare::BufferKind::Memfd,
                frameshare::FrameLayout::linear(frameshare::Fourcc::XR24, 16, 16, 64).unwrap(),
                vec![fd],
            )
            .unwrap()
            .map(false)
            .unwrap();
            std::mem::forget(map);
        });
    }

    /// A refused file on disk is closed on frameshare's closing thread, not by the session: the
    /// check waits for that thread rather than reporting the file as leaked.
    #[test]
    fn refused_files_closed_on_the_closing_thread_are_no_leak() {
        let _serial = TEST_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        check("test", || {
            let fds = (0..2)
                .map(|_| crate::fds::make(crate::fds::FdKind::RegularFile, 4096).unwrap())
                .collect();
            frameshare::buffer::Buffer::from_fds(
                frameshare::BufferKind::PosixShm,
                frameshare::FrameLayout::linear(frameshare::Fourcc::XR24, 16, 16, 64).unwrap(),
                fds,
            )
            .unwrap_err();
        });
    }

    #[test]
    fn a_mapping_is_counted_and_what_is_closed_and_unmapped_again_is_no_leak() {
        let _serial = TEST_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        check("test", || {
            let start = snapshot();
            let fd = crate::fds::make(crate::fds::FdKind::PosixShm, 4096).unwrap();
            let buffer = frameshare::buffer::Buffer::from_fds(
                frameshare::BufferKind::PosixShm,
                frameshare::FrameLayout::linear(frameshare::Fourcc::XR24, 16, 16, 64).unwrap(),
                vec![fd],
            )
            .unwrap();
            let map = buffer.map(false).unwrap();
            let mapped = snapshot();
            assert_eq!(mapped.fds, start.fds + 1);
            assert_eq!(mapped.shared_mappings, start.shared_mappings + 1);
            drop(map);
        });
    }
}
