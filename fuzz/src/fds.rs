//! The kinds of fds a hostile peer can attach to a datagram, made fresh for each send: memory
//! that passes the checks (a sealed memfd of the right size) and everything that must not (an
//! unsealed or truncated memfd, a pipe, a socket, `/dev/null`, a regular file, a POSIX shm
//! object that could be shrunk).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use frameshare::bus::wire::Message;
use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};

/// A size operand meaning "as big as the announced layout needs" (else 4 KiB).
pub const FIT: u32 = u32::MAX;

/// Largest fd a script makes (memfds and shm are sparse: only touched pages cost memory).
const MAX_SIZE: u64 = 1 << 30;

/// A kind of fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FdKind {
    /// A memfd sealed against shrinking and growing: what a producer sends.
    MemfdSealed = 0,
    /// A memfd without seals (the peer could shrink it under a mapping).
    MemfdUnsealed = 1,
    /// The read end of a pipe.
    Pipe = 2,
    /// One end of a unix stream socketpair.
    Socket = 3,
    /// `/dev/null` (a character device).
    DevNull = 4,
    /// An unlinked regular file in the temporary directory.
    RegularFile = 5,
    /// An unlinked POSIX shm object (unsealable).
    PosixShm = 6,
    /// A memfd sealed at half its size: smaller than the layout it comes with.
    TruncatedMemfd = 7,
}

impl FdKind {
    /// Every kind, in byte order.
    pub const ALL: [FdKind; 8] = [
        FdKind::MemfdSealed,
        FdKind::MemfdUnsealed,
        FdKind::Pipe,
        FdKind::Socket,
        FdKind::DevNull,
        FdKind::RegularFile,
        FdKind::PosixShm,
        FdKind::TruncatedMemfd,
    ];

    /// The kind a script byte names.
    pub fn from_byte(b: u8) -> FdKind {
        FdKind::ALL[b as usize % FdKind::ALL.len()]
    }
}

/// An fd to make: its kind and size (a [`FIT`] size is resolved against the datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdSpec {
    /// The kind.
    pub kind: FdKind,
    /// Bytes, for the kinds that have a size.
    pub size: u32,
}

/// The sizes the `fds.len()` fds of `bytes` need if it is an `AddBuffer` (fd 0 holds the
/// whole buffer size): what [`FIT`] stands for.
pub fn fit_sizes(bytes: &[u8], fds: usize) -> Vec<u64> {
    match Message::decode(bytes, fds) {
        Ok(Message::AddBuffer { layout, .. }) => (0..fds as u32)
            .map(|i| {
                let need = layout.required_size(i);
                if i == 0 {
                    need.max(layout.size())
                } else {
                    need
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Makes the fds `specs` describe for the datagram `bytes` (an fd that cannot be made — the
/// process is out of fds, say — is left out).
pub fn make_all(specs: &[FdSpec], bytes: &[u8]) -> Vec<OwnedFd> {
    let fit = fit_sizes(bytes, specs.len());
    specs
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let size = match s.size {
                FIT => fit.get(i).copied().unwrap_or(4096),
                n => n as u64,
            };
            make(s.kind, size.min(MAX_SIZE))
        })
        .collect()
}

fn memfd(size: u64, seals: SealFlags) -> Option<OwnedFd> {
    let fd =
        rustix::fs::memfd_create("fuzz", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).ok()?;
    rustix::fs::ftruncate(&fd, size).ok()?;
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).ok()?;
    }
    Some(fd)
}

fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}frameshare-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes one fd of `kind` and `size` bytes.
pub fn make(kind: FdKind, size: u64) -> Option<OwnedFd> {
    let sealed = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
    match kind {
        FdKind::MemfdSealed => memfd(size, sealed),
        FdKind::MemfdUnsealed => memfd(size, SealFlags::empty()),
        FdKind::TruncatedMemfd => memfd(size / 2, sealed),
        FdKind::Pipe => rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .ok()
            .map(|(read, _write)| read),
        FdKind::Socket => rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .ok()
        .map(|(a, _b)| a),
        FdKind::DevNull => {
            rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).ok()
        }
        FdKind::RegularFile => {
            let dir = std::env::temp_dir();
            let path = dir.join(unique_name(""));
            let fd = rustix::fs::open(
                &path,
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .ok()?;
            let _ = rustix::fs::unlink(&path);
            rustix::fs::ftruncate(&fd, size).ok()?;
            Some(fd)
        }
        FdKind::PosixShm => {
            let name = unique_name("/");
            let fd = rustix::shm::open(
                &name,
                rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
                Mode::from_raw_mode(0o600),
            )
            .ok()?;
            let _ = rustix::shm::unlink(&name);
            rustix::fs::ftruncate(&fd, size).ok()?;
            Some(fd)
        }
    }
}
