//! What a received fd is, read from the kernel's own records before anything can reach a
//! filesystem daemon. A peer may send an fd of a file on a filesystem it serves (FUSE, 9p, …):
//! `fstat`, `fstatfs`, `lseek` or an ioctl on it can then wait on that peer's daemon forever, in
//! uninterruptible sleep. So an fd is first classified with calls the kernel answers from its
//! own state — `fcntl(F_GET_SEALS)` (answered only for shmem, tmpfs and hugetlbfs files),
//! `/proc/self/fdinfo/N` (a dma-buf lists its exporter there), `readlink /proc/self/fd/N` and
//! `/proc/self/mountinfo` (to name what it is) — and only memory is measured or touched further.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

use rustix::fs::SealFlags;

use super::{BufferError, BufferKind};

/// What kind of object an fd refers to, as the kernel records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdClass {
    /// A dma-buf (its fdinfo names an exporter).
    DmaBuf {
        /// The exporter (`system`, `udmabuf`, `vgem`, …).
        exporter: String,
    },
    /// A shmem, tmpfs or hugetlbfs file: a memfd, a POSIX shm object, a file in a tmpfs.
    SharedMemory {
        /// Its seals (`F_SEAL_SEAL` alone for files that cannot be sealed).
        seals: SealFlags,
    },
    /// Anything else, described (`a pipe`, `a socket`, `a file on fuse.sshfs (/mnt/x)`, …).
    Other(String),
}

impl FdClass {
    /// A short description for messages (`a dma-buf (exporter system)`, `a pipe`, …).
    pub fn describe(&self) -> String {
        match self {
            FdClass::DmaBuf { exporter } => format!("a dma-buf (exporter {exporter})"),
            FdClass::SharedMemory { .. } => "a shared-memory file".into(),
            FdClass::Other(what) => what.clone(),
        }
    }
}

fn proc_fd(dir: &str, fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/{dir}/{}", fd.as_raw_fd())
}

/// Classifies `fd` without any call that can reach a filesystem daemon.
pub fn classify_fd(fd: BorrowedFd<'_>) -> FdClass {
    // Only shmem/hugetlbfs files answer F_GET_SEALS; for everything else the kernel says EINVAL
    // without asking the file's filesystem.
    if let Ok(seals) = rustix::fs::fcntl_get_seals(fd) {
        return FdClass::SharedMemory { seals };
    }
    let link = std::fs::read_link(proc_fd("fd", fd))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let info = match std::fs::read_to_string(proc_fd("fdinfo", fd)) {
        Ok(info) => info,
        Err(e) => {
            return FdClass::Other(format!(
                "an fd that cannot be classified (/proc/self/fdinfo: {e})"
            ))
        }
    };
    // Only dma-buf's show_fdinfo prints `exp_name:`; its link is `/dmabuf:NAME` (or, on old
    // kernels, `anon_inode:dmabuf`).
    if link.starts_with("/dmabuf:") || link == "anon_inode:dmabuf" {
        if let Some(exporter) = fdinfo_field(&info, "exp_name:") {
            return FdClass::DmaBuf { exporter };
        }
    }
    FdClass::Other(describe_other(&link, &info))
}

fn fdinfo_field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
}

/// Names a non-memory fd from its link and, for files, its mount's filesystem type.
fn describe_other(link: &str, info: &str) -> String {
    if link.starts_with("pipe:") {
        return "a pipe".into();
    }
    if link.starts_with("socket:") {
        return "a socket".into();
    }
    if let Some(what) = link.strip_prefix("anon_inode:") {
        return format!("an anonymous inode ({})", what.trim_matches(['[', ']']));
    }
    if link.starts_with('/') {
        let fs = fdinfo_field(info, "mnt_id:")
            .and_then(|m| mount_fs_type(&m))
            .unwrap_or_else(|| "a filesystem outside this mount namespace".into());
        return format!("a file on {fs} ({link})");
    }
    if link.is_empty() {
        "an unnamed fd".into()
    } else {
        format!("an fd ({link})")
    }
}

/// The filesystem type of mount `mnt_id` (`/proc/self/mountinfo`: fields after ` - `).
fn mount_fs_type(mnt_id: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let mut cols = l.split(' ');
        if cols.next()? != mnt_id {
            return None;
        }
        let (_, tail) = l.split_once(" - ")?;
        tail.split(' ').next().map(str::to_owned)
    })
}

/// Whether an fd of this class may lie on a filesystem some process serves (closing it can
/// wait on that process: FUSE flushes on every close).
fn served_by_a_filesystem(class: &FdClass) -> bool {
    matches!(class, FdClass::Other(what) if what.starts_with("a file on"))
}

/// What the closing thread is asked to do, in order.
enum ToCloser {
    /// Close this refused fd.
    Close(OwnedFd),
    /// Answer once everything sent before has been closed.
    Flush(Sender<()>),
}

/// The closing thread's queue, started with the first refused file.
static CLOSER: OnceLock<Mutex<Sender<ToCloser>>> = OnceLock::new();

/// Closes fds a peer sent that were refused. Files on filesystems that a daemon serves are
/// closed on a background thread: FUSE asks its daemon to flush on every close and waits for
/// the answer without a timeout, so a hostile daemon could otherwise hold the session here.
pub(crate) fn release_refused(fds: Vec<OwnedFd>) {
    for fd in fds {
        if !served_by_a_filesystem(&classify_fd(fd.as_fd())) {
            continue; // dropped here: memory, pipes, sockets close without asking anyone
        }
        let closer = CLOSER.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<ToCloser>();
            let spawned = std::thread::Builder::new()
                .name("frameshare-close".into())
                .spawn(move || {
                    for job in rx {
                        match job {
                            ToCloser::Close(fd) => drop(fd),
                            ToCloser::Flush(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                });
            if let Err(e) = spawned {
                log::warn!("no thread to close refused fds on ({e}); closing them inline");
            }
            Mutex::new(tx)
        });
        let tx = closer.lock().unwrap_or_else(|e| e.into_inner());
        // If the thread could not start, the send fails and the fd is closed right here.
        let _ = tx.send(ToCloser::Close(fd));
    }
}

/// Waits until every refused file handed to frameshare's closing thread so far is closed, so a
/// leak check (open fds before and after) can count without guessing how long that thread
/// takes. Returns at once if no file was ever refused. It waits as long as those closes do: a
/// filesystem daemon that never answers a flush holds it for good — call it in tests, not on a
/// path a peer can reach.
pub fn wait_for_refused_closes() {
    let Some(closer) = CLOSER.get() else {
        return;
    };
    let (done, closed) = mpsc::channel();
    let queued = closer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(ToCloser::Flush(done))
        .is_ok();
    // The queue is in order: the answer comes after every earlier fd was dropped. A send
    // fails only when the thread never started, and then every fd was closed inline.
    if queued {
        let _ = closed.recv();
    }
}

/// Size and type of a memory fd, as the kernel reports it.
#[derive(Debug, Clone, Copy)]
pub struct FdInfo {
    /// Bytes (`lseek(SEEK_END)`, which dma-bufs, memfds and shm objects all answer).
    pub size: u64,
    /// Whether the fd is a dma-buf.
    pub is_dma_buf: bool,
    /// Seals of a shared-memory file (`None` for dma-bufs).
    pub seals: Option<SealFlags>,
}

/// Classifies an fd (see [`classify_fd`]) and, if it is the memory `kind` promises — a dma-buf
/// for dma-buf kinds, a shared-memory file for the others — measures it. Fails, naming what the
/// fd is, for everything else (pipes, sockets, files on disk, FUSE, 9p, …), before any call
/// that could reach a filesystem daemon.
pub fn inspect_fd(
    kind: BufferKind,
    fd_index: usize,
    fd: BorrowedFd<'_>,
) -> Result<FdInfo, BufferError> {
    let class = classify_fd(fd);
    let (is_dma_buf, seals) = match &class {
        FdClass::DmaBuf { .. } => (true, None),
        FdClass::SharedMemory { seals } => (false, Some(*seals)),
        FdClass::Other(_) => (false, None),
    };
    let right = match class {
        FdClass::DmaBuf { .. } => kind.is_dma_buf(),
        FdClass::SharedMemory { .. } => !kind.is_dma_buf(),
        FdClass::Other(_) => false,
    };
    let wrong = |what: String| BufferError::WrongFdType {
        kind,
        fd_index,
        what,
        expected: if kind.is_dma_buf() {
            "a dma-buf"
        } else {
            "a shared-memory file"
        },
    };
    if !right {
        return Err(wrong(class.describe()));
    }
    // Memory from here on: its size comes from the kernel, not from a daemon.
    let size = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
        .map_err(|errno| wrong(format!("not seekable ({errno})")))?;
    // Put the offset back: fds are shared with the peer and offsets with them.
    let _ = rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(0));
    Ok(FdInfo {
        size,
        is_dma_buf,
        seals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn other(fd: BorrowedFd<'_>) -> String {
        match classify_fd(fd) {
            FdClass::Other(what) => what,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn memory_is_shared_memory_and_the_rest_is_named() {
        let memfd = rustix::fs::memfd_create("c", rustix::fs::MemfdFlags::ALLOW_SEALING).unwrap();
        assert!(matches!(
            classify_fd(memfd.as_fd()),
            FdClass::SharedMemory { .. }
        ));
        let (r, _w) = rustix::pipe::pipe().unwrap();
        assert_eq!(other(r.as_fd()), "a pipe");
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(other(a.as_fd()), "a socket");
        // A regular file on whatever holds the build directory (not tmpfs on CI hosts; if it
        // is, the file is shared memory and must say so).
        let path = std::env::current_exe().unwrap();
        let f = std::fs::File::open(&path).unwrap();
        match classify_fd(f.as_fd()) {
            FdClass::Other(what) => {
                assert!(what.starts_with("a file on "), "{what}");
                assert!(what.contains(&*path.to_string_lossy()), "{what}");
            }
            FdClass::SharedMemory { .. } => {}
            c => panic!("{c:?}"),
        }
        let dir = std::fs::File::open("/proc/self").unwrap();
        assert!(other(dir.as_fd()).contains("a file on proc"));
        let _ = std::io::stderr().flush();
    }

    /// Whether any fd of this process is open on `path`.
    fn open_on(path: &std::path::Path) -> bool {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|link| link == path)
    }

    #[test]
    fn refused_files_are_closed_once_the_closing_thread_is_waited_for() {
        // Next to the test binary: a disk, not tmpfs, so the files go to the closing thread.
        let dir = std::env::current_exe().unwrap();
        let path = dir.with_file_name(format!("refused-{}", std::process::id()));
        let fds: Vec<OwnedFd> = (0..3)
            .map(|_| {
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .unwrap()
                    .into()
            })
            .collect();
        std::fs::remove_file(&path).unwrap();
        let path = dir.with_file_name(format!("refused-{} (deleted)", std::process::id()));
        assert!(open_on(&path));
        release_refused(fds);
        wait_for_refused_closes();
        assert!(!open_on(&path), "a refused file is still open");
        wait_for_refused_closes(); // with nothing queued
    }

    #[test]
    fn a_pipe_is_refused_before_it_is_measured() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let e = inspect_fd(BufferKind::PosixShm, 0, r.as_fd()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "posix-shm buffer: fd 0 is a pipe, not a shared-memory file"
        );
    }
}
