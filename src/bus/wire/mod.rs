//! The wire format: versioned, little-endian, length-checked messages, one per SEQPACKET
//! datagram. Per-buffer data (`AddBuffer`, `RemoveBuffer`) crosses once; per-frame data
//! (`Frame`, `Release`) is 24 bytes plus optional metadata fields and an optional fence fd.
//! Everything decoded here comes from an untrusted peer: every length, count, id and enum is
//! checked, and the number of fds that arrived must be exactly the number the message implies.
//!
//! Header (12 bytes): magic `FSHR`, version u16, type u16, payload length u32.
//!
//! # Compatibility rule
//! The header's version is the protocol's major version; peers speak only their own. A peer
//! that says Hello in another version is answered with a `Bye` in *its* version's encoding
//! (`Bye` has not changed since version 1) naming both versions, and the session ends.
//! Within a version, messages grow only by optional tagged fields (`tag u16, length u16,
//! value`): a field whose tag has [`CRITICAL`] set must be understood, any other unknown
//! field is skipped; new message types are sent only to peers that announced the matching
//! `FEATURE_*` bit in their Hello. Version 2 added stream names, consumer policies, monitors
//! and `Status`, and per-frame metadata ([`crate::meta::FrameMeta`]).

pub(crate) mod codec;
mod fields;
mod status;

pub use codec::CRITICAL;
pub use status::{ConsumerStatus, StreamStatus, MAX_LISTED_CONSUMERS};

use crate::buffer::{BufferKind, KindSet};
use crate::format::{FormatModifier, Fourcc, FrameLayout, Modifier, PlaneLayout, MAX_PLANES};
use crate::meta::FrameMeta;
use codec::{Reader, Writer};

/// `FSHR` little-endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"FSHR");
/// The protocol version this build speaks.
pub const VERSION: u16 = 2;
/// Header bytes.
pub const HEADER_LEN: usize = 12;
/// Largest datagram either side sends or accepts (a `Status` with many consumers is the
/// largest message; per-frame messages are tens of bytes).
pub const MAX_MESSAGE: usize = 32 * 1024;
/// Buffer ids are `0..MAX_BUFFERS`.
pub const MAX_BUFFERS: u32 = 64;
/// Most formats a Hello lists.
pub const MAX_FORMATS: usize = 128;
/// Longest string field (names, reasons), in bytes.
pub const MAX_TEXT: usize = 256;
/// Most fds one message carries.
pub const MAX_FDS: usize = MAX_PLANES;

/// Which end a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Owns the buffers, sends frames.
    Producer,
    /// Borrows buffers, returns them.
    #[default]
    Consumer,
    /// Asks a producer for its [`StreamStatus`] (`frameshare ls`/`top`), takes no frames.
    Monitor,
}

/// What a consumer does when frames come faster than it gives them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Policy {
    /// Every frame: the producer waits for this consumer (paced by the slowest `wait` one).
    #[default]
    Wait,
    /// Skip frames while this consumer holds its quota of buffers (counted as dropped).
    Drop,
    /// Mailbox: one frame at a time, always the newest (older pending ones are dropped).
    Latest,
}

impl Policy {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Wait => "wait",
            Policy::Drop => "drop",
            Policy::Latest => "latest",
        }
    }
    pub(crate) fn to_wire(self) -> u8 {
        match self {
            Policy::Wait => 1,
            Policy::Drop => 2,
            Policy::Latest => 3,
        }
    }
    pub(crate) fn from_wire(v: u8) -> Option<Policy> {
        match v {
            1 => Some(Policy::Wait),
            2 => Some(Policy::Drop),
            3 => Some(Policy::Latest),
            _ => None,
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wait" => Ok(Policy::Wait),
            "drop" => Ok(Policy::Drop),
            "latest" => Ok(Policy::Latest),
            _ => Err(format!("unknown policy {s:?} (wait, drop, latest)")),
        }
    }
}

/// `Hello.features` bit: this peer sends and accepts fences.
pub const FEATURE_FENCES: u32 = 1;
/// `Hello.features` bit (consumer): it understands `EndOfStream` and gives back every frame it
/// holds when one arrives. A producer sends `EndOfStream` only to a consumer that set it.
pub const FEATURE_END_OF_STREAM: u32 = 2;
/// `Frame.flags`/`Release.flags` bit: a sync_file fd follows.
pub const FLAG_FENCE: u32 = 1;

/// A peer's Hello: who it is and what it takes or makes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    /// Sender's role.
    pub role: Role,
    /// `FEATURE_*` bits.
    pub features: u32,
    /// Buffer kinds the sender can import (consumer) or makes (producer).
    pub kinds: KindSet,
    /// Formats the sender can import (consumer), best first.
    pub formats: Vec<FormatModifier>,
    /// What the sender is (`verify`, `vulkan`, `generator`, `v4l2:/dev/video1`, …).
    pub name: String,
    /// The stream's name (producer), or the one asked for (consumer).
    pub stream: Option<String>,
    /// The generator pattern, when the producer's frames are generated (`bars`, `box`, …): the
    /// verifying sinks recompute each frame from it.
    pub pattern: Option<String>,
    /// The consumer's policy.
    pub policy: Option<Policy>,
}

/// A frame: buffer `id` holds frame `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameMsg {
    /// Buffer id.
    pub id: u32,
    /// Frame sequence number.
    pub seq: u64,
    /// When the frame was ready, on `meta.clock` (CLOCK_MONOTONIC unless said).
    pub timestamp_ns: u64,
    /// `FLAG_*`.
    pub flags: u32,
    /// Metadata.
    pub meta: FrameMeta,
}

/// Why a session ended (`Bye.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByeCode {
    /// A normal end: the stream ended, or the consumer left.
    Done,
    /// The sender found a protocol error.
    Protocol,
    /// The sender failed on its own.
    Internal,
    /// The peers speak different protocol versions.
    Version,
    /// The peer may not connect (credentials) or asked for something refused.
    Refused,
    /// The consumer stalled (held frames or stopped reading past the stall timeout).
    Evicted,
    /// A code this build does not know.
    Other(u32),
}

impl ByeCode {
    /// The wire value.
    pub fn to_wire(self) -> u32 {
        match self {
            ByeCode::Done => 0,
            ByeCode::Protocol => 1,
            ByeCode::Internal => 2,
            ByeCode::Version => 3,
            ByeCode::Refused => 4,
            ByeCode::Evicted => 5,
            ByeCode::Other(c) => c,
        }
    }
    /// From the wire value.
    pub fn from_wire(c: u32) -> ByeCode {
        match c {
            0 => ByeCode::Done,
            1 => ByeCode::Protocol,
            2 => ByeCode::Internal,
            3 => ByeCode::Version,
            4 => ByeCode::Refused,
            5 => ByeCode::Evicted,
            c => ByeCode::Other(c),
        }
    }
}

impl std::fmt::Display for ByeCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ByeCode::Done => f.write_str("done"),
            ByeCode::Protocol => f.write_str("protocol error"),
            ByeCode::Internal => f.write_str("internal error"),
            ByeCode::Version => f.write_str("version mismatch"),
            ByeCode::Refused => f.write_str("refused"),
            ByeCode::Evicted => f.write_str("evicted"),
            ByeCode::Other(c) => write!(f, "code {c}"),
        }
    }
}

/// A protocol message (the fds that travel with it are handled by the socket layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First message each way.
    Hello(Hello),
    /// A buffer joins the pool; its fds follow (none for SysV, whose id is in `sysv_id`).
    AddBuffer {
        /// Buffer id, `< MAX_BUFFERS`.
        id: u32,
        /// Memory kind.
        kind: BufferKind,
        /// Pixel layout.
        layout: FrameLayout,
        /// SysV segment id (SysV only).
        sysv_id: Option<i32>,
    },
    /// A buffer leaves the pool (sent only once the consumer gave it back).
    RemoveBuffer {
        /// Buffer id.
        id: u32,
    },
    /// A filled buffer; an acquire fence fd follows if `flags & FLAG_FENCE`.
    Frame(FrameMsg),
    /// The consumer is done with a buffer; a release fence fd follows if `flags & FLAG_FENCE`.
    Release {
        /// Buffer id.
        id: u32,
        /// The frame's sequence number.
        seq: u64,
        /// `FLAG_*`.
        flags: u32,
    },
    /// No frame follows `last_seq`: a consumer that holds frames (a display keeps the one on
    /// screen) gives them all back now, so the producer can drain and say Bye.
    EndOfStream {
        /// Sequence number of the last frame sent.
        last_seq: u64,
    },
    /// Goodbye, with why.
    Bye {
        /// Why.
        code: ByeCode,
        /// Human-readable reason.
        reason: String,
    },
    /// The producer's answer to a monitor's Hello.
    Status(StreamStatus),
}

const T_HELLO: u16 = 1;
const T_ADD_BUFFER: u16 = 2;
const T_REMOVE_BUFFER: u16 = 3;
const T_FRAME: u16 = 4;
const T_RELEASE: u16 = 5;
const T_BYE: u16 = 6;
const T_END_OF_STREAM: u16 = 7;
const T_STATUS: u16 = 8;

/// Why a message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header, or than the type's fixed part.
    #[error("truncated {what}: {got} bytes, need {need}")]
    Truncated {
        /// Which part.
        what: &'static str,
        /// Bytes present.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Wrong magic.
    #[error("bad magic 0x{0:08x} ({text}: not a frameshare peer)", text = crate::format::Fourcc(*.0).name())]
    BadMagic(u32),
    /// Version we do not speak.
    #[error("protocol version {0}, but this side speaks version {VERSION}")]
    Version(u16),
    /// Type we do not know.
    #[error("unknown message type {0}")]
    UnknownType(u16),
    /// Header length field disagrees with the datagram.
    #[error("length field says {declared} payload bytes, datagram carries {actual}")]
    Length {
        /// Declared.
        declared: usize,
        /// Received.
        actual: usize,
    },
    /// Trailing bytes after a fixed-size message or field.
    #[error("{what}: {extra} unexpected trailing bytes")]
    Trailing {
        /// Which message.
        what: &'static str,
        /// How many.
        extra: usize,
    },
    /// A field out of its range.
    #[error("{what}: {field} = {value} is out of range")]
    Field {
        /// Which message.
        what: &'static str,
        /// Which field.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// Layout rejected.
    #[error("AddBuffer {id}: bad layout")]
    Layout {
        /// Buffer id.
        id: u32,
        /// The layout error.
        #[source]
        source: crate::format::FormatError,
    },
    /// Metadata rejected.
    #[error("Frame metadata")]
    Meta(#[source] crate::meta::MetaError),
    /// A string field that is not UTF-8.
    #[error("{0}: text is not UTF-8")]
    Text(&'static str),
    /// Fds that came do not match what the message needs.
    #[error("{what} needs {want} fd(s), {got} arrived")]
    FdCount {
        /// Which message.
        what: &'static str,
        /// Expected.
        want: usize,
        /// Received.
        got: usize,
    },
}

impl Message {
    /// The message's name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::AddBuffer { .. } => "AddBuffer",
            Message::RemoveBuffer { .. } => "RemoveBuffer",
            Message::Frame(_) => "Frame",
            Message::Release { .. } => "Release",
            Message::EndOfStream { .. } => "EndOfStream",
            Message::Bye { .. } => "Bye",
            Message::Status(_) => "Status",
        }
    }

    /// How many fds must travel with this message.
    pub fn fd_count(&self) -> usize {
        match self {
            Message::AddBuffer {
                kind: BufferKind::SysvShm,
                ..
            } => 0,
            Message::AddBuffer { layout, .. } => layout.fd_count(),
            Message::Frame(FrameMsg { flags, .. }) | Message::Release { flags, .. } => {
                (flags & FLAG_FENCE != 0) as usize
            }
            _ => 0,
        }
    }

    /// Encodes into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let ty = match self {
            Message::Hello(_) => T_HELLO,
            Message::AddBuffer { .. } => T_ADD_BUFFER,
            Message::RemoveBuffer { .. } => T_REMOVE_BUFFER,
            Message::Frame(_) => T_FRAME,
            Message::Release { .. } => T_RELEASE,
            Message::EndOfStream { .. } => T_END_OF_STREAM,
            Message::Bye { .. } => T_BYE,
            Message::Status(_) => T_STATUS,
        };
        encode_with(out, VERSION, ty, |w| match self {
            Message::Hello(h) => fields::write_hello(w, h),
            Message::AddBuffer {
                id,
                kind,
                layout,
                sysv_id,
            } => {
                w.u32(*id);
                w.u8(kind.to_wire());
                w.u8(layout.planes().len() as u8);
                w.u16(0);
                w.u32(layout.fourcc().0);
                w.u64(layout.modifier().0);
                w.u32(layout.width());
                w.u32(layout.height());
                w.u64(layout.size());
                w.u32(sysv_id.unwrap_or(-1) as u32);
                for p in layout.planes() {
                    w.u32(p.fd_index);
                    w.u32(p.stride);
                    w.u64(p.offset);
                }
            }
            Message::RemoveBuffer { id } => w.u32(*id),
            Message::Frame(f) => write_frame(w, f, f.flags),
            Message::Release { id, seq, flags } => {
                w.u32(*id);
                w.u32(*flags);
                w.u64(*seq);
            }
            Message::EndOfStream { last_seq } => w.u64(*last_seq),
            Message::Bye { code, reason } => {
                w.u32(code.to_wire());
                w.text(reason);
            }
            Message::Status(s) => s.write(w),
        });
    }

    /// A `Bye` encoded in protocol version `version`'s header: the answer to a peer that speaks
    /// another version (the `Bye` layout is the same in every version).
    pub fn encode_bye_for_version(version: u16, code: ByeCode, reason: &str, out: &mut Vec<u8>) {
        encode_with(out, version, T_BYE, |w| {
            w.u32(code.to_wire());
            w.text(reason);
        });
    }

    /// Decodes one datagram that arrived with `fds` file descriptors, checking everything.
    pub fn decode(bytes: &[u8], fds: usize) -> Result<Message, WireError> {
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                what: "header",
                got: bytes.len(),
                need: HEADER_LEN,
            });
        }
        let mut r = Reader::new(bytes, "header");
        let magic = r.u32()?;
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let ty = r.u16()?;
        let declared = r.u32()? as usize;
        let actual = bytes.len() - HEADER_LEN;
        if declared != actual {
            return Err(WireError::Length { declared, actual });
        }
        let mut r = Reader::new(&bytes[HEADER_LEN..], "?");
        let msg = match ty {
            T_HELLO => {
                r.what = "Hello";
                Message::Hello(fields::read_hello(&mut r)?)
            }
            T_ADD_BUFFER => {
                r.what = "AddBuffer";
                read_add_buffer(&mut r)?
            }
            T_REMOVE_BUFFER => {
                r.what = "RemoveBuffer";
                Message::RemoveBuffer {
                    id: read_id(&mut r)?,
                }
            }
            T_FRAME => {
                r.what = "Frame";
                let id = read_id(&mut r)?;
                let flags = read_flags(&mut r)?;
                let seq = r.u64()?;
                let timestamp_ns = r.u64()?;
                let meta = fields::read_meta(&mut r)?;
                Message::Frame(FrameMsg {
                    id,
                    seq,
                    timestamp_ns,
                    flags,
                    meta,
                })
            }
            T_RELEASE => {
                r.what = "Release";
                let id = read_id(&mut r)?;
                let flags = read_flags(&mut r)?;
                Message::Release {
                    id,
                    flags,
                    seq: r.u64()?,
                }
            }
            T_END_OF_STREAM => {
                r.what = "EndOfStream";
                Message::EndOfStream { last_seq: r.u64()? }
            }
            T_BYE => {
                r.what = "Bye";
                Message::Bye {
                    code: ByeCode::from_wire(r.u32()?),
                    reason: r.text()?,
                }
            }
            T_STATUS => {
                r.what = "Status";
                Message::Status(StreamStatus::read(&mut r)?)
            }
            t => return Err(WireError::UnknownType(t)),
        };
        if r.remaining() != 0 {
            return Err(WireError::Trailing {
                what: msg.name(),
                extra: r.remaining(),
            });
        }
        if msg.fd_count() != fds {
            return Err(WireError::FdCount {
                what: msg.name(),
                want: msg.fd_count(),
                got: fds,
            });
        }
        Ok(msg)
    }

    /// The protocol version a datagram's header names, if it has a frameshare header at all
    /// (to answer a peer of another version in its own encoding).
    pub fn peek_version(bytes: &[u8]) -> Option<u16> {
        if bytes.len() < HEADER_LEN || bytes[..4] != MAGIC.to_le_bytes() {
            return None;
        }
        Some(u16::from_le_bytes([bytes[4], bytes[5]]))
    }
}

/// Writes a header of `version`/`ty`, the body, and patches the length.
fn encode_with(out: &mut Vec<u8>, version: u16, ty: u16, body: impl FnOnce(&mut Writer<'_>)) {
    out.clear();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // length, patched below
    body(&mut Writer(out));
    let len = (out.len() - HEADER_LEN) as u32;
    out[8..12].copy_from_slice(&len.to_le_bytes());
}

fn write_frame(w: &mut Writer<'_>, f: &FrameMsg, flags: u32) {
    w.u32(f.id);
    w.u32(flags);
    w.u64(f.seq);
    w.u64(f.timestamp_ns);
    fields::write_meta(w, &f.meta);
}

impl FrameMsg {
    /// Encodes this frame as a `Frame` message whose flags are `flags` (the same bytes as
    /// `Message::Frame` with those flags), without moving it into a [`Message`]: a producer
    /// encodes a frame once for all its consumers (once more for those that get its fence).
    pub fn encode_with_flags(&self, flags: u32, out: &mut Vec<u8>) {
        encode_with(out, VERSION, T_FRAME, |w| write_frame(w, self, flags));
    }
}

/// Bytes of an encoded `Release`.
pub const RELEASE_LEN: usize = HEADER_LEN + 16;

/// A `Release` message, encoded without allocating (a consumer gives every frame back with
/// one; the same bytes as `Message::Release`).
pub fn encode_release(id: u32, seq: u64, flags: u32) -> [u8; RELEASE_LEN] {
    let mut b = [0u8; RELEASE_LEN];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..6].copy_from_slice(&VERSION.to_le_bytes());
    b[6..8].copy_from_slice(&T_RELEASE.to_le_bytes());
    b[8..12].copy_from_slice(&((RELEASE_LEN - HEADER_LEN) as u32).to_le_bytes());
    b[12..16].copy_from_slice(&id.to_le_bytes());
    b[16..20].copy_from_slice(&flags.to_le_bytes());
    b[20..28].copy_from_slice(&seq.to_le_bytes());
    b
}

fn read_id(r: &mut Reader<'_>) -> Result<u32, WireError> {
    let id = r.u32()?;
    if id >= MAX_BUFFERS {
        return Err(r.field_err("id", id as u64));
    }
    Ok(id)
}

fn read_flags(r: &mut Reader<'_>) -> Result<u32, WireError> {
    let f = r.u32()?;
    if f & !FLAG_FENCE != 0 {
        return Err(r.field_err("flags", f as u64));
    }
    Ok(f)
}

fn read_add_buffer(r: &mut Reader<'_>) -> Result<Message, WireError> {
    let id = read_id(r)?;
    let kind_code = r.u8()?;
    let kind =
        BufferKind::from_wire(kind_code).ok_or_else(|| r.field_err("kind", kind_code as u64))?;
    let n_planes = r.u8()? as usize;
    if n_planes == 0 || n_planes > MAX_PLANES {
        return Err(r.field_err("planes", n_planes as u64));
    }
    r.u16()?;
    let fourcc = Fourcc(r.u32()?);
    let modifier = Modifier(r.u64()?);
    let width = r.u32()?;
    let height = r.u32()?;
    let size = r.u64()?;
    let sysv_raw = r.u32()? as i32;
    let mut planes = Vec::with_capacity(n_planes);
    for _ in 0..n_planes {
        let fd_index = r.u32()?;
        let stride = r.u32()?;
        let offset = r.u64()?;
        planes.push(PlaneLayout {
            fd_index,
            offset,
            stride,
        });
    }
    let layout = FrameLayout::new(fourcc, modifier, width, height, planes, size)
        .map_err(|source| WireError::Layout { id, source })?;
    let sysv_id = (sysv_raw >= 0).then_some(sysv_raw);
    if (kind == BufferKind::SysvShm) != sysv_id.is_some() {
        return Err(r.field_err("sysv_id", sysv_raw as i64 as u64));
    }
    Ok(Message::AddBuffer {
        id,
        kind,
        layout,
        sysv_id,
    })
}

#[cfg(test)]
mod tests;
