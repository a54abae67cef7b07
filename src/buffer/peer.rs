//! Who a peer is ([`Credentials`], from `SO_PEERCRED`) and what it may make us touch: a
//! SysV segment is named by a bare id that anyone can type, so the consumer attaches one only
//! if the *peer* could attach it read-write itself — the kernel's `ipcperms()` rule applied to
//! the peer's credentials, not ours (the X server's `shm_access` does the same) — and only if
//! the segment is not open to others. Otherwise a peer could have us read a segment it cannot
//! read and hand its bytes back (a confused deputy).

use std::fmt;

use crate::sys::sysv::SegmentInfo;

/// The credentials of the process at the other end of a unix socket, as the kernel recorded
/// them when it connected (or created the socket pair): nothing the peer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// Process id.
    pub pid: u32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

impl Credentials {
    /// This process's own credentials (for memory it made itself).
    pub fn of_this_process() -> Credentials {
        Credentials {
            pid: rustix::process::getpid().as_raw_nonzero().get() as u32,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} uid {} gid {}", self.pid, self.uid, self.gid)
    }
}

/// What `IPC_STAT` says of a segment's ownership, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentOwner {
    /// Owner uid.
    pub uid: u32,
    /// Creator uid.
    pub cuid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Creator gid.
    pub cgid: u32,
    /// Permission bits.
    pub mode: u32,
}

impl From<&SegmentInfo> for SegmentOwner {
    fn from(s: &SegmentInfo) -> Self {
        SegmentOwner {
            uid: s.uid,
            cuid: s.cuid,
            gid: s.gid,
            cgid: s.cgid,
            mode: s.mode,
        }
    }
}

impl fmt::Display for SegmentOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "owner uid {} gid {}, creator uid {} gid {}, mode {:o}",
            self.uid, self.gid, self.cuid, self.cgid, self.mode
        )
    }
}

/// `ipcperms()` (ipc/util.c) for `peer`: whether the permission bits grant it every access in
/// `want` (`0o4` read, `0o2` write). The owner or creator gets the owner bits; a member of the
/// owner's or creator's group (by its effective gid: supplementary groups are not known here,
/// so this may refuse what the kernel would allow, never the reverse) the group bits; anyone
/// else the other bits. `CAP_IPC_OWNER` is not assumed: we cannot see the peer's capabilities.
pub fn peer_may_access(seg: &SegmentOwner, peer: &Credentials, want: u32) -> bool {
    let granted = if peer.uid == seg.cuid || peer.uid == seg.uid {
        seg.mode >> 6
    } else if peer.gid == seg.cgid || peer.gid == seg.gid {
        seg.mode >> 3
    } else {
        seg.mode
    };
    want & !granted & 0o7 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(uid: u32, cuid: u32, gid: u32, mode: u32) -> SegmentOwner {
        SegmentOwner {
            uid,
            cuid,
            gid,
            cgid: gid,
            mode,
        }
    }

    fn peer(uid: u32, gid: u32) -> Credentials {
        Credentials { pid: 1, uid, gid }
    }

    #[test]
    fn the_kernel_rule_for_the_peer() {
        const RW: u32 = 0o6;
        // Owner or creator with rw- owner bits.
        assert!(peer_may_access(
            &seg(1000, 1000, 100, 0o600),
            &peer(1000, 100),
            RW
        ));
        assert!(peer_may_access(
            &seg(0, 1000, 100, 0o600),
            &peer(1000, 5),
            RW
        ));
        assert!(peer_may_access(
            &seg(1000, 0, 100, 0o600),
            &peer(1000, 5),
            RW
        ));
        // Owner with read-only bits: no.
        assert!(!peer_may_access(
            &seg(1000, 1000, 100, 0o400),
            &peer(1000, 100),
            RW
        ));
        // Another user's private segment: no, whoever we are.
        assert!(!peer_may_access(&seg(0, 0, 0, 0o600), &peer(1000, 100), RW));
        assert!(!peer_may_access(
            &seg(65534, 65534, 65534, 0o600),
            &peer(0, 0),
            RW
        ));
        // The owner bits apply to the owner even if the group bits would grant more.
        assert!(!peer_may_access(
            &seg(1000, 1000, 100, 0o460),
            &peer(1000, 100),
            RW
        ));
        // Group and other bits.
        assert!(peer_may_access(
            &seg(0, 0, 100, 0o660),
            &peer(1000, 100),
            RW
        ));
        assert!(!peer_may_access(
            &seg(0, 0, 100, 0o640),
            &peer(1000, 100),
            RW
        ));
        assert!(peer_may_access(&seg(0, 0, 0, 0o606), &peer(1000, 100), RW));
    }
}
