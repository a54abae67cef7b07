//! Stream names and where their sockets live: `$XDG_RUNTIME_DIR/frameshare/NAME` for a user's
//! streams, `/run/frameshare/NAME` for root without a runtime directory (system services),
//! `$FRAMESHARE_RUNTIME_DIR/NAME` when that is set (tests, sandboxes). The directory is made
//! mode 0700. A publisher holds `NAME.lock` (`flock`) for as long as it lives, so a socket left
//! by a dead publisher is known stale and replaced, and a second live publisher of the same
//! name is refused with the first one's pid.

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::access::AccessPolicy;
use super::socket::{ChannelError, Listener};

/// Longest stream name, bytes.
pub const MAX_NAME: usize = 64;

/// A stream's name: 1–64 of `A–Z a–z 0–9 . _ -`, not starting with `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(String);

/// Errors with stream names and their sockets.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// Not a valid name.
    #[error(
        "bad stream name {0:?} (want 1-{MAX_NAME} of A-Z a-z 0-9 . _ -, not starting with '.')"
    )]
    Invalid(String),
    /// No place for the sockets.
    #[error(
        "no runtime directory for stream sockets: set XDG_RUNTIME_DIR (or FRAMESHARE_RUNTIME_DIR)"
    )]
    NoRuntimeDir,
    /// The runtime directory is not ours, or open to others.
    #[error("{path}: {why}")]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Another live publisher has the name.
    #[error("stream {name} is already published{}", pid.map(|p| format!(" by pid {p}")).unwrap_or_default())]
    Taken {
        /// The name.
        name: StreamName,
        /// The publisher's pid, if it could be read.
        pid: Option<u32>,
    },
    /// A file system call failed.
    #[error("{op} {path} failed")]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        errno: Errno,
    },
    /// Binding the socket failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

impl StreamName {
    /// Checks and wraps a name.
    pub fn new(name: &str) -> Result<StreamName, NameError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(StreamName(name.to_owned()))
        } else {
            Err(NameError::Invalid(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where its socket is (in [`runtime_dir`]).
    pub fn socket_path(&self) -> Result<PathBuf, NameError> {
        Ok(runtime_dir()?.join(&self.0))
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StreamName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        StreamName::new(s)
    }
}

/// The directory that holds stream sockets (not created; see the module docs for the order).
pub fn runtime_dir() -> Result<PathBuf, NameError> {
    if let Some(d) = std::env::var_os("FRAMESHARE_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("frameshare"));
    }
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/run/frameshare"));
    }
    Err(NameError::NoRuntimeDir)
}

fn sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> NameError + 'a {
    move |errno| NameError::Sys {
        op,
        path: path.to_owned(),
        errno,
    }
}

/// Makes the runtime directory (0700) if missing, and checks that it is ours and not writable
/// by others. With `others` it is made searchable (0711) so that allowed users reach sockets.
fn ensure_dir(dir: &Path, others: bool) -> Result<(), NameError> {
    match rustix::fs::mkdir(dir, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(Errno::NOENT) => {
            std::fs::create_dir_all(dir).map_err(|e| NameError::Sys {
                op: "mkdir -p",
                path: dir.to_owned(),
                errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
            })?;
            rustix::fs::chmod(dir, Mode::from_raw_mode(0o700)).map_err(sys("chmod", dir))?;
        }
        Err(e) => return Err(sys("mkdir", dir)(e)),
    }
    let st = rustix::fs::stat(dir).map_err(sys("stat", dir))?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me {
        return Err(NameError::UnsafeDir {
            path: dir.to_owned(),
            why: format!("owned by uid {}, not {me}", st.st_uid),
        });
    }
    if st.st_mode & 0o022 != 0 {
        return Err(NameError::UnsafeDir {
            path: dir.to_owned(),
            why: format!("mode {:o} lets others write", st.st_mode & 0o7777),
        });
    }
    if others && st.st_mode & 0o011 != 0o011 {
        let mode = (st.st_mode & 0o700) | 0o011;
        rustix::fs::chmod(dir, Mode::from_raw_mode(mode)).map_err(sys("chmod", dir))?;
    }
    Ok(())
}

/// A published name: the listening socket and the lock that says it is live.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) listener: Listener,
    /// The held lock (for a named stream), unlinked on drop.
    lock: Option<(OwnedFd, PathBuf)>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some((_, path)) = &self.lock {
            // The listener (dropped after us) removes the socket; the lock goes first, while
            // still held, so no one can take it and then lose it.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Publishes `name`: takes its lock, replaces a stale socket, binds a fresh one.
pub(crate) fn bind_name(name: &StreamName, access: &AccessPolicy) -> Result<Endpoint, NameError> {
    let dir = runtime_dir()?;
    ensure_dir(&dir, access.admits_others())?;
    let lock_path = dir.join(format!("{}.lock", name.0));
    let lock = rustix::fs::open(
        &lock_path,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map_err(sys("open", &lock_path))?;
    match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => {
            let pid = std::fs::read_to_string(&lock_path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(NameError::Taken {
                name: name.clone(),
                pid,
            });
        }
        Err(e) => return Err(sys("flock", &lock_path)(e)),
    }
    rustix::fs::ftruncate(&lock, 0).map_err(sys("ftruncate", &lock_path))?;
    let pid = format!("{}\n", std::process::id());
    rustix::io::write(&lock, pid.as_bytes()).map_err(sys("write", &lock_path))?;
    let path = dir.join(&name.0);
    // We hold the lock: whatever socket is there was left by a publisher that died.
    match std::fs::remove_file(&path) {
        Ok(()) => log::info!("stream {name}: replaced the stale socket of a dead publisher"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(NameError::Sys {
                op: "unlink",
                path,
                errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
            })
        }
    }
    let listener = Listener::bind_mode(&path, if access.admits_others() { 0o666 } else { 0o600 })?;
    Ok(Endpoint {
        listener,
        lock: Some((lock, lock_path)),
    })
}

/// Listens at a bare socket path (`--socket PATH`): a socket there that no one answers is stale
/// and replaced; one that answers is another live producer.
pub(crate) fn bind_path(path: &Path, access: &AccessPolicy) -> Result<Endpoint, NameError> {
    if path.exists() {
        match super::socket::Channel::connect(path) {
            Ok(c) => {
                let pid = c.peer_credentials().ok().map(|c| c.pid);
                return Err(NameError::Taken {
                    name: StreamName(path.display().to_string()),
                    pid,
                });
            }
            Err(ChannelError::Sys {
                errno: Errno::CONNREFUSED,
                ..
            }) => {
                log::info!("{}: replacing a stale socket", path.display());
                std::fs::remove_file(path).map_err(|e| NameError::Sys {
                    op: "unlink",
                    path: path.to_owned(),
                    errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
                })?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let listener = Listener::bind_mode(path, if access.admits_others() { 0o666 } else { 0o600 })?;
    Ok(Endpoint {
        listener,
        lock: None,
    })
}

/// The names of the streams whose sockets are in [`runtime_dir`] (live or stale), sorted.
pub fn list() -> Result<Vec<StreamName>, NameError> {
    let dir = runtime_dir()?;
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(NameError::Sys {
                op: "read_dir",
                path: dir,
                errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
            })
        }
    };
    let mut names: Vec<StreamName> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            use std::os::unix::fs::FileTypeExt;
            e.file_type().is_ok_and(|t| t.is_socket())
        })
        .filter_map(|e| StreamName::new(e.file_name().to_str()?).ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Whether `fd` is still the lock of a live publisher (tests).
#[cfg(test)]
fn is_locked(path: &Path) -> bool {
    let Ok(fd) = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) else {
        return false;
    };
    rustix::fs::flock(&fd, FlockOperation::NonBlockingLockShared).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["cam0", "a", "front-camera_1.raw", &"x".repeat(MAX_NAME)] {
            assert_eq!(StreamName::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a b",
            "..",
            &"x".repeat(MAX_NAME + 1),
            "é",
        ] {
            assert!(
                matches!(StreamName::new(bad), Err(NameError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_second_publisher_is_refused_and_a_stale_socket_replaced() {
        let dir = std::env::temp_dir().join(format!("fs-name-{}", std::process::id()));
        std::env::set_var("FRAMESHARE_RUNTIME_DIR", &dir);
        let name = StreamName::new("unit").unwrap();
        let first = bind_name(&name, &AccessPolicy::default()).unwrap();
        assert!(is_locked(&dir.join("unit.lock")));
        match bind_name(&name, &AccessPolicy::default()) {
            Err(NameError::Taken { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        assert_eq!(list().unwrap(), vec![name.clone()]);
        // A publisher that died leaves its socket but not its lock: the next one takes over.
        let stale = first.listener.path().to_owned();
        drop(first);
        assert!(!stale.exists());
        std::mem::forget(Listener::bind_mode(&stale, 0o600).unwrap());
        assert!(stale.exists());
        let second = bind_name(&name, &AccessPolicy::default()).unwrap();
        drop(second);
        assert!(!stale.exists(), "the socket goes with its publisher");
        assert!(!dir.join("unit.lock").exists());
        let st = rustix::fs::stat(&dir).unwrap();
        assert_eq!(st.st_mode & 0o777, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
