//! Serving consumers: accepting connections, each session's Hello, joins and refusals, buffer
//! announcements, releases, retiring buffers after a format change, and ending a session.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use super::pool::SlotState;
use super::session::{End, Held, Phase, Session};
use super::*;
use crate::bus::poller::Ready;
use crate::bus::socket::{Channel, ChannelError};
use crate::bus::wire::{self, ByeCode, FrameMsg, Hello, Message, Role};
use crate::sync::SyncFile;

impl Publisher {
    pub(super) fn accept_all(&mut self) -> Result<(), PublishError> {
        loop {
            let Some(endpoint) = &self.endpoint else {
                return Ok(());
            };
            let Some(chan) = endpoint.listener.try_accept()? else {
                return Ok(());
            };
            let deadline = Instant::now() + self.opts.handshake_timeout;
            self.open_session(chan, Some(deadline));
        }
    }

    pub(super) fn open_session(&mut self, mut chan: Channel, deadline: Option<Instant>) {
        let creds = match chan.peer_credentials() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("a new connection: {e}; closed");
                return;
            }
        };
        if let Err(why) = self.opts.access.check(&creds) {
            log::warn!("refused: {why}");
            self.stats.refused += 1;
            let _ = chan.try_send(
                &Message::Bye {
                    code: ByeCode::Refused,
                    reason: why,
                },
                &[],
            );
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        if let Err(e) = self.poller.add(chan.as_fd(), token, false) {
            log::warn!("pid {}: watching its socket failed: {e}; closed", creds.pid);
            return;
        }
        let hello = Message::Hello(Hello {
            role: Role::Producer,
            features: wire::FEATURE_FENCES,
            kinds: self
                .kind
                .map(|k| [k].into_iter().collect())
                .unwrap_or_default(),
            formats: Vec::new(),
            name: self.opts.name.clone(),
            stream: self.stream.as_ref().map(|s| s.to_string()),
            pattern: self.opts.pattern.clone(),
            policy: None,
        });
        let mut s = Session::new(token, chan, creds, Phase::AwaitHello { deadline });
        let sent = s.send(&hello, &[]);
        self.sessions.insert(token, s);
        if let Err(e) = sent {
            self.end_session(token, e);
        }
    }

    /// Handles what session `token`'s socket has for us.
    pub(super) fn service(&mut self, token: u64, ready: Ready) {
        if ready.writable {
            let Some(s) = self.sessions.get_mut(&token) else {
                return;
            };
            if let Err(e) = s.flush() {
                return self.end_session(token, e);
            }
        }
        if ready.readable || ready.hangup {
            loop {
                let Some(s) = self.sessions.get_mut(&token) else {
                    return;
                };
                let got = s.chan.try_recv();
                match got {
                    Ok(Some((msg, fds))) => {
                        let release = matches!(msg, Message::Release { .. });
                        if let Err(e) = self.handle(token, msg, fds) {
                            return self.end_session(token, e);
                        }
                        // A consumer that gave back all it held has nothing more to say
                        // soon: no second read just to learn that (the poller is
                        // level-triggered, so anything it did send is seen at the next wait).
                        if release
                            && self
                                .sessions
                                .get(&token)
                                .is_some_and(|s| s.held_count() == 0 && s.mailbox.is_none())
                        {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(ChannelError::Wire(wire::WireError::Version(v))) => {
                        // Answer in the peer's own encoding, so it can read why.
                        let mut b = Vec::new();
                        let why = format!(
                            "this producer speaks frameshare protocol version {}, the consumer {v}",
                            wire::VERSION
                        );
                        Message::encode_bye_for_version(v, ByeCode::Version, &why, &mut b);
                        let _ = s.chan.send_raw(&b, &[]);
                        self.stats.refused += 1;
                        // Answered: a second Bye in our encoding would be unreadable to it.
                        let end = End::new(ByeCode::Version, why).silent().without_bye();
                        return self.end_session(token, end);
                    }
                    Err(e) => return self.end_session(token, e.into()),
                }
            }
        }
    }

    pub(super) fn handle(
        &mut self,
        token: u64,
        msg: Message,
        mut fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<(), End> {
        let s = self
            .sessions
            .get_mut(&token)
            .ok_or_else(|| End::new(ByeCode::Internal, "no such session"))?;
        match (&s.phase, msg) {
            (Phase::AwaitHello { .. }, Message::Hello(h)) => match h.role {
                Role::Monitor => {
                    let status = self.status();
                    let s = self.sessions.get_mut(&token).expect("looked up above");
                    s.send(&Message::Status(status), &[])?;
                    Err(End::new(ByeCode::Done, "status sent").silent())
                }
                Role::Consumer => self.join(token, h),
                Role::Producer => Err(End::new(
                    ByeCode::Protocol,
                    "a producer connected to a producer",
                )),
            },
            (Phase::AwaitHello { .. }, m) => Err(End::new(
                ByeCode::Protocol,
                format!("expected Hello, got {}", m.name()),
            )),
            (Phase::Live, Message::Release { id, seq, flags }) => {
                let fence = if flags & wire::FLAG_FENCE != 0 {
                    Some(SyncFile::try_from_fd(fds.remove(0)).map_err(|e| {
                        End::new(
                            ByeCode::Protocol,
                            format!("Release of buffer {id} (frame {seq}): release fence: {e}"),
                        )
                    })?)
                } else {
                    None
                };
                self.release(token, id, seq, fence)
            }
            (Phase::Live, Message::Bye { code, reason }) => {
                Err(End::new(ByeCode::Done, format!("it left: {reason} ({code})")).without_bye())
            }
            (_, m) => Err(End::new(
                ByeCode::Protocol,
                format!("unexpected {} from a consumer", m.name()),
            )),
        }
    }

    /// A consumer said Hello: check it can take our buffers, tell it about them.
    pub(super) fn join(&mut self, token: u64, hello: Hello) -> Result<(), End> {
        if let Some(kind) = self.kind {
            if !hello.kinds.contains(kind) {
                self.stats.refused += 1;
                return Err(End::new(
                    ByeCode::Refused,
                    format!("the stream's buffers are {kind}, which the consumer cannot import"),
                ));
            }
        }
        if let Some(why) = self.format_refusal(&hello) {
            self.stats.refused += 1;
            return Err(End::new(ByeCode::Refused, why));
        }
        let s = self.sessions.get_mut(&token).expect("caller looked it up");
        s.hello = hello;
        s.phase = Phase::Live;
        log::info!(
            "{} joined{} ({} policy)",
            s.label(),
            self.stream
                .as_ref()
                .map(|n| format!(" stream {n}"))
                .unwrap_or_default(),
            s.policy()
        );
        self.stats.joined += 1;
        let ids = self.pool.current_ids();
        self.announce(token, &ids);
        Ok(())
    }

    /// Why a consumer with this Hello cannot take the current buffers' format, if it cannot.
    pub(super) fn format_refusal(&self, hello: &Hello) -> Option<String> {
        if hello.formats.is_empty() {
            return None;
        }
        let id = *self.pool.current_ids().first()?;
        let l = self.pool.get(id)?.buffer.layout();
        let ok = hello
            .formats
            .iter()
            .any(|f| f.fourcc == l.fourcc() && f.modifier == l.modifier());
        (!ok).then(|| {
            format!(
                "the stream is {} (modifier {}), which the consumer does not list (it takes {})",
                l.fourcc(),
                l.modifier(),
                crate::format::fourcc_names(hello.formats.iter().map(|f| f.fourcc))
            )
        })
    }

    /// Sends `AddBuffer` for `ids` to session `token` (ending it if that fails).
    pub(super) fn announce(&mut self, token: u64, ids: &[u32]) {
        if let Some(s) = self.sessions.get(&token) {
            let refusal = self.kind.filter(|k| !s.hello.kinds.contains(*k)).map(|k| {
                format!("the stream's buffers are now {k}, which the consumer cannot import")
            });
            if let Some(why) = refusal.or_else(|| self.format_refusal(&s.hello)) {
                self.stats.refused += 1;
                return self.end_session(token, End::new(ByeCode::Refused, why));
            }
        }
        for &id in ids {
            let Some(slot) = self.pool.get(id) else {
                continue;
            };
            let msg = Message::AddBuffer {
                id,
                kind: slot.buffer.kind(),
                layout: slot.buffer.layout().clone(),
                sysv_id: slot.buffer.sysv_id(),
            };
            let fds = slot.buffer.fds();
            let Some(s) = self.sessions.get_mut(&token) else {
                return;
            };
            if let Err(e) = s.send(&msg, &fds) {
                return self.end_session(token, e);
            }
            s.announced |= 1 << id;
            s.setting_up = true;
        }
    }

    pub(super) fn release(
        &mut self,
        token: u64,
        id: u32,
        seq: u64,
        fence: Option<SyncFile>,
    ) -> Result<(), End> {
        let s = self.sessions.get_mut(&token).expect("caller looked it up");
        match s.held.get(id as usize).copied().flatten() {
            Some(h) if h.seq == seq => {}
            Some(h) => {
                return Err(End::new(
                    ByeCode::Protocol,
                    format!(
                        "Release of buffer {id} for frame {seq}, but it holds frame {}",
                        h.seq
                    ),
                ))
            }
            None => {
                return Err(End::new(
                    ByeCode::Protocol,
                    format!(
                    "Release of buffer {id} (frame {seq}), which it does not hold: double release"
                ),
                ))
            }
        }
        s.held[id as usize] = None;
        s.last_release = Some(Instant::now());
        // A frame of the current buffers came back: it is set up (old ones, given back after a
        // format change, say nothing of the new).
        if self.pool.get(id).is_some_and(|slot| !slot.retiring) {
            s.setting_up = false;
        }
        if let Some(f) = fence {
            if let Some(slot) = self.pool.get_mut(id) {
                slot.fences.push(f);
            }
        }
        // A `latest` consumer that gave its frame back gets the one waiting in its mailbox.
        let s = self.sessions.get_mut(&token).expect("still there");
        if let Some(p) = s.mailbox.take() {
            deliver_frame(s, &p.frame, p.acquire.as_deref(), Instant::now())?;
        }
        // A retiring buffer goes (or is removed from this consumer) now that it is back.
        self.pool.unhold(id);
        self.settle_retiring(id);
        Ok(())
    }

    /// For a retiring buffer: tells each consumer that no longer holds it `RemoveBuffer`, and
    /// drops it from the pool once no one holds it.
    pub(super) fn settle_retiring(&mut self, id: u32) {
        let Some(slot) = self.pool.get(id) else {
            return;
        };
        if !slot.retiring {
            return;
        }
        let mut ends = Vec::new();
        for s in self.sessions.values_mut() {
            let holds = s.held[id as usize].is_some()
                || s.mailbox.as_ref().is_some_and(|m| m.frame.id == id);
            if s.announced & (1 << id) != 0 && !holds {
                s.announced &= !(1 << id);
                if let Err(e) = s.send(&Message::RemoveBuffer { id }, &[]) {
                    ends.push((s.token, e));
                }
            }
        }
        if self
            .pool
            .get(id)
            .is_some_and(|s| s.state == SlotState::Free)
        {
            self.pool.remove(id);
        }
        for (t, e) in ends {
            self.end_session(t, e);
        }
    }

    /// Ends session `token`: tells it why (best effort), forgets it, and gives back what it
    /// held, so the other consumers and the pool go on.
    pub(super) fn end_session(&mut self, token: u64, end: End) {
        let Some(mut s) = self.sessions.remove(&token) else {
            return;
        };
        self.poller.remove(s.chan.as_fd());
        let peer_gone = matches!(end.error, Some(ChannelError::PeerClosed));
        if !peer_gone && !end.no_bye {
            let _ = s.chan.try_send(
                &Message::Bye {
                    code: end.code,
                    reason: end.reason.clone(),
                },
                &[],
            );
        }
        let was_live = s.is_live();
        if was_live {
            match end.code {
                ByeCode::Evicted => {
                    self.stats.evicted += 1;
                    log::warn!("{} evicted: {}", s.label(), end.reason);
                }
                ByeCode::Done => {
                    self.stats.left += 1;
                    log::info!("{} left: {}", s.label(), end.reason);
                }
                _ if end.silent => {}
                _ => {
                    self.stats.left += 1;
                    log::warn!("{}: session ended: {}", s.label(), end.reason);
                }
            }
        } else if !end.silent && !peer_gone {
            log::warn!("{}: {}", s.label(), end.reason);
        }
        let mut freed: Vec<u32> = s
            .held
            .iter()
            .enumerate()
            .filter(|(_, h)| h.is_some())
            .map(|(i, _)| i as u32)
            .collect();
        if let Some(m) = s.mailbox.take() {
            freed.push(m.frame.id);
        }
        for id in freed {
            self.pool.unhold(id);
            self.settle_retiring(id);
        }
    }
}

/// Sends `frame` to session `s` (a mailbox frame, given when the consumer released the one it
/// had) and records the hold.
pub(super) fn deliver_frame(
    s: &mut Session,
    frame: &FrameMsg,
    acquire: Option<&SyncFile>,
    now: Instant,
) -> Result<(), End> {
    let fence = acquire.filter(|_| s.takes_fences());
    let flags = if fence.is_some() { wire::FLAG_FENCE } else { 0 };
    let mut bytes = Vec::new();
    frame.encode_with_flags(flags, &mut bytes);
    deliver_encoded(s, &bytes, fence, frame.id, frame.seq, now)
}

/// Sends an encoded `Frame` (buffer `id`, frame `seq`) with its fence, if any, to session `s`
/// and records the hold.
pub(super) fn deliver_encoded(
    s: &mut Session,
    bytes: &[u8],
    fence: Option<&SyncFile>,
    id: u32,
    seq: u64,
    now: Instant,
) -> Result<(), End> {
    let fd;
    let fds: &[BorrowedFd<'_>] = match fence {
        Some(f) => {
            fd = [f.as_fd()];
            &fd
        }
        None => &[],
    };
    s.send_encoded(bytes, fds, "Frame")?;
    s.held[id as usize] = Some(Held { seq, since: now });
    s.stats.delivered += 1;
    Ok(())
}
