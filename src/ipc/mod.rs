//! Inter-process transport: the wire format ([`wire`]), the SEQPACKET + SCM_RIGHTS channel
//! ([`socket`]), and the two session ends ([`producer`], [`consumer`]) with the buffer pool,
//! releases and back-pressure.

pub mod consumer;
pub mod producer;
pub mod socket;
pub mod wire;

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC), the clock of every timestamp on the wire.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

use crate::buffer::{BufferError, BufferKind};
use crate::format::FormatModifier;

/// What a peer said of itself in its Hello.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// `FEATURE_*` bits.
    pub features: u32,
    /// Bit `1 << kind.to_wire()` per buffer kind.
    pub kinds: u32,
    /// Formats.
    pub formats: Vec<FormatModifier>,
    /// What the peer is (`generator:bars`, `verify`, `vulkan`, …).
    pub name: String,
}

impl PeerInfo {
    /// Whether the peer listed this buffer kind.
    pub fn accepts_kind(&self, kind: BufferKind) -> bool {
        self.kinds & (1 << kind.to_wire()) != 0
    }

    /// Whether the peer takes fences.
    pub fn fences(&self) -> bool {
        self.features & wire::FEATURE_FENCES != 0
    }
}

/// A kinds bitmask listing every kind.
pub fn all_kinds() -> u32 {
    BufferKind::ALL.iter().fold(0, |m, k| m | 1 << k.to_wire())
}

/// Errors that end a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The channel failed (peer death included).
    #[error(transparent)]
    Channel(#[from] socket::ChannelError),
    /// The peer broke the protocol; the session was closed with a Bye saying so.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer said goodbye with an error.
    #[error("peer ended the session: {reason} (code {code})")]
    PeerBye {
        /// Bye code.
        code: u32,
        /// Reason.
        reason: String,
    },
    /// A buffer could not be made, checked or mapped.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// Waited too long for the peer to give a buffer back.
    #[error("no buffer released within {0:?}: the consumer is stalled")]
    Stalled(std::time::Duration),
    /// The peers cannot work together.
    #[error("incompatible peer: {0}")]
    Incompatible(String),
    /// Local misuse (releasing a buffer not held, …).
    #[error("{0}")]
    Usage(String),
}
