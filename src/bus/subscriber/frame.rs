//! A frame on loan from the producer ([`Frame`]) and what it shares with its subscriber to give
//! itself back from any thread ([`Shared`]: the socket's second handle, which frames are held,
//! the CPU mappings, whether the session broke).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::SubscribeError;
use crate::buffer::{Buffer, BufferMapping, SharedRead};
use crate::bus::socket::{send_datagram, ChannelError};
use crate::bus::wire::{self, MAX_BUFFERS};
use crate::meta::FrameMeta;
use crate::sync::SyncFile;

/// What a [`Frame`] needs to give itself back, shared with the subscriber.
#[derive(Debug)]
pub(super) struct Shared {
    /// A second handle on the session's socket: releases go out from wherever frames are.
    pub(super) socket: OwnedFd,
    pub(super) held: Mutex<[Option<u64>; MAX_BUFFERS as usize]>,
    /// CPU mappings, made on a frame's first [`Frame::read`] and kept for the buffer's life.
    pub(super) mappings: Mutex<Vec<Option<Arc<BufferMapping>>>>,
    /// Set when a release could not be sent: the session is over.
    pub(super) broken: Mutex<Option<String>>,
    /// Whether `broken` is set (read per frame without taking the lock).
    pub(super) broken_flag: AtomicBool,
    pub(super) closed: AtomicBool,
    pub(super) stall: Duration,
}

impl Shared {
    pub(super) fn release(
        &self,
        id: u32,
        seq: u64,
        fence: Option<SyncFile>,
    ) -> Result<(), SubscribeError> {
        {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            match held.get(id as usize).copied().flatten() {
                Some(h) if h == seq => held[id as usize] = None,
                _ => return Err(SubscribeError::NotHeld { id, seq }),
            }
        }
        if self.closed.load(Ordering::Acquire) {
            return Ok(()); // that session is over: nothing to give back to
        }
        let flags = if fence.is_some() { wire::FLAG_FENCE } else { 0 };
        let bytes = wire::encode_release(id, seq, flags);
        let fd;
        let fds: &[BorrowedFd<'_>] = match &fence {
            Some(f) => {
                fd = [f.as_fd()];
                &fd
            }
            None => &[],
        };
        // Read only if the socket is full (the clock is not needed on the way that works).
        let mut deadline = None;
        loop {
            match send_datagram(
                self.socket.as_fd(),
                &bytes,
                fds,
                rustix::net::SendFlags::DONTWAIT,
            ) {
                Ok(true) => return Ok(()),
                Ok(false)
                    if Instant::now()
                        < *deadline.get_or_insert_with(|| Instant::now() + self.stall) =>
                {
                    // The producer is not reading: give it until the stall timeout.
                    let mut p = [rustix::event::PollFd::new(
                        &self.socket,
                        rustix::event::PollFlags::OUT,
                    )];
                    let _ = rustix::event::poll(
                        &mut p,
                        Some(&rustix::time::Timespec {
                            tv_sec: 0,
                            tv_nsec: 50_000_000,
                        }),
                    );
                }
                Ok(false) => {
                    let why = format!("the producer read nothing for {:?}", self.stall);
                    self.break_session(&why);
                    return Err(SubscribeError::Protocol(why));
                }
                Err(ChannelError::PeerClosed) => return Ok(()), // noticed by the subscriber
                Err(e) => {
                    self.break_session(&e.to_string());
                    return Err(e.into());
                }
            }
        }
    }

    pub(super) fn break_session(&self, why: &str) {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| why.to_owned());
        self.broken_flag.store(true, Ordering::Release);
    }
}

/// A frame on loan from the producer: given back when dropped (or with [`Frame::release`]).
#[derive(Debug)]
pub struct Frame {
    /// Buffer id.
    pub id: u32,
    /// Sequence number.
    pub seq: u64,
    /// When the producer had it ready, on `meta.clock`.
    pub timestamp_ns: u64,
    /// When it arrived here (CLOCK_MONOTONIC ns).
    pub received_ns: u64,
    /// Its metadata.
    pub meta: FrameMeta,
    /// Signals when the pixels may be read (take it with [`Frame::take_acquire_fence`]).
    pub(super) acquire: Option<SyncFile>,
    /// Shared with the subscriber's table: a frame costs a reference count, not a copy of the
    /// buffer's layout and fds.
    pub(super) buffer: Arc<Buffer>,
    pub(super) shared: Option<Arc<Shared>>,
}

impl Frame {
    /// The buffer holding the frame.
    pub fn buffer(&self) -> &Buffer {
        &self.buffer
    }

    /// The acquire fence, if the producer sent one (wait on it before reading the pixels).
    pub fn acquire_fence(&self) -> Option<&SyncFile> {
        self.acquire.as_ref()
    }

    /// Takes the acquire fence (to hand it to a GPU or a display).
    pub fn take_acquire_fence(&mut self) -> Option<SyncFile> {
        self.acquire.take()
    }

    /// Read access to the frame's pixels on the CPU, without a copy: the buffer is mapped on
    /// its first frame and the mapping kept for the next ones. Wait on the acquire fence first,
    /// if there is one. The guard may outlive the frame (it keeps the mapping alive), but the
    /// producer may write the buffer again once the frame is given back.
    pub fn read(&self) -> Result<SharedRead, SubscribeError> {
        let buffer_err = |source| SubscribeError::Buffer {
            id: self.id,
            kind: self.buffer.kind(),
            source,
        };
        let mapping = match &self.shared {
            Some(shared) => {
                let mut maps = shared.mappings.lock().unwrap_or_else(|e| e.into_inner());
                match &maps[self.id as usize] {
                    Some(m) => m.clone(),
                    None => {
                        let m = Arc::new(self.buffer.map(false).map_err(buffer_err)?);
                        maps[self.id as usize] = Some(m.clone());
                        m
                    }
                }
            }
            None => Arc::new(self.buffer.map(false).map_err(buffer_err)?),
        };
        mapping.read_shared().map_err(buffer_err)
    }

    /// Gives the frame back now, with a fence that signals when this consumer's last access
    /// (a GPU job, a scanout) ends.
    pub fn release(mut self, fence: Option<SyncFile>) -> Result<(), SubscribeError> {
        match self.shared.take() {
            Some(s) => s.release(self.id, self.seq, fence),
            None => Ok(()),
        }
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        if let Some(s) = self.shared.take() {
            if let Err(e) = s.release(self.id, self.seq, None) {
                log::warn!("giving back frame {} (buffer {}): {e}", self.seq, self.id);
            }
        }
    }
}
