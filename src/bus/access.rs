//! Who may connect: every connection's peer credentials (`SO_PEERCRED`, recorded by the kernel
//! at connect time) are checked against an [`AccessPolicy`] before a word of the protocol is
//! read. By default only the same user may connect (root may too); the policy can name other
//! uids and gids.

use super::socket::Credentials;

/// Which peers may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Other user ids allowed besides our own (and root).
    pub allow_uids: Vec<u32>,
    /// Group ids whose members (by the peer's effective gid) are allowed.
    pub allow_gids: Vec<u32>,
}

impl AccessPolicy {
    /// Whether others than this user may connect (then the socket must be reachable by them).
    pub fn admits_others(&self) -> bool {
        !self.allow_uids.is_empty() || !self.allow_gids.is_empty()
    }

    /// `Ok` if a peer with credentials `peer` may connect, else why not.
    pub fn check(&self, peer: &Credentials) -> Result<(), String> {
        let me = rustix::process::geteuid().as_raw();
        if peer.uid == me
            || peer.uid == 0
            || self.allow_uids.contains(&peer.uid)
            || self.allow_gids.contains(&peer.gid)
        {
            return Ok(());
        }
        let mut allowed = vec![format!("uid {me}")];
        allowed.extend(self.allow_uids.iter().map(|u| format!("uid {u}")));
        allowed.extend(self.allow_gids.iter().map(|g| format!("gid {g}")));
        Err(format!(
            "pid {} (uid {}, gid {}) may not connect (allowed: {})",
            peer.pid,
            peer.uid,
            peer.gid,
            allowed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_user_and_root_by_default_others_by_name() {
        let me = rustix::process::geteuid().as_raw();
        let peer = |uid, gid| Credentials { pid: 1, uid, gid };
        let p = AccessPolicy::default();
        assert!(p.check(&peer(me, 12345)).is_ok());
        assert!(p.check(&peer(0, 0)).is_ok());
        let stranger = if me == 4242 { 4243 } else { 4242 };
        let e = p.check(&peer(stranger, 777)).unwrap_err();
        assert!(e.contains(&format!("uid {stranger}")), "{e}");
        assert!(!p.admits_others());
        let p = AccessPolicy {
            allow_uids: vec![stranger],
            allow_gids: vec![888],
        };
        assert!(p.admits_others());
        assert!(p.check(&peer(stranger, 1)).is_ok());
        assert!(p.check(&peer(stranger + 1, 888)).is_ok());
        assert!(p.check(&peer(stranger + 1, 889)).is_err());
    }
}
