//! Leak checks around one input: the process's open fds (`/proc/self/fd`) and its mappings of
//! shared memory (`/proc/self/maps` lines naming a memfd, a POSIX or SysV shm object or one of
//! the harness's files) must be the same after the input as before. Only shared-memory
//! mappings are counted: the sanitizer's allocator maps and unmaps anonymous memory on its
//! own schedule, so the total line count moves without any leak of ours.

use std::io::Read;
use std::sync::Mutex;

/// What is open and mapped at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Entries of `/proc/self/fd`.
    pub fds: usize,
    /// Lines of `/proc/self/maps` that map shared memory.
    pub shared_mappings: usize,
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
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count();
    let mut maps = String::new();
    std::fs::File::open("/proc/self/maps")
        .and_then(|mut f| f.read_to_string(&mut maps))
        .expect("/proc/self/maps");
    let shared_mappings = maps.lines().filter(|l| is_shared_memory(l)).count();
    Snapshot {
        fds,
        shared_mappings,
    }
}

/// Runs `f` and panics if it left an fd open or a shared mapping in place. One check at a time
/// (the counts are the whole process's: tests run on several threads).
pub fn check<R>(what: &str, f: impl FnOnce() -> R) -> R {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = snapshot();
    let r = f();
    let after = snapshot();
    assert_eq!(
        before, after,
        "{what}: leaked (before → after: fds {} → {}, shared mappings {} → {})",
        before.fds, after.fds, before.shared_mappings, after.shared_mappings
    );
    r
}
