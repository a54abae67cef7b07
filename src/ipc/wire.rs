//! The wire format: versioned, little-endian, length-checked messages, one per SEQPACKET
//! datagram. Per-buffer data (`AddBuffer`, `RemoveBuffer`) crosses once; per-frame data
//! (`Frame`, `Release`) is 24 bytes plus an optional fence fd. Everything decoded here comes
//! from an untrusted peer: every length, count, id and enum is checked, and the number of fds
//! that arrived must be exactly the number the message implies.
//!
//! Header (12 bytes): magic `FSHR`, version u16, type u16, payload length u32.

use crate::buffer::BufferKind;
use crate::format::{FormatModifier, Fourcc, FrameLayout, Modifier, PlaneLayout, MAX_PLANES};

/// `FSHR` little-endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"FSHR");
/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// Header bytes.
pub const HEADER_LEN: usize = 12;
/// Largest datagram either side sends or accepts.
pub const MAX_MESSAGE: usize = 4096;
/// Buffer ids are `0..MAX_BUFFERS`.
pub const MAX_BUFFERS: u32 = 64;
/// Most formats a Hello lists.
pub const MAX_FORMATS: usize = 128;
/// Longest string field (names, reasons), in bytes.
pub const MAX_TEXT: usize = 256;
/// Most fds one message carries.
pub const MAX_FDS: usize = MAX_PLANES;

/// Which end a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Owns the buffers, sends frames.
    Producer,
    /// Borrows buffers, returns them.
    Consumer,
}

/// `Hello.features` bit: this peer sends and accepts fences.
pub const FEATURE_FENCES: u32 = 1;
/// `Hello.features` bit (consumer): it understands `EndOfStream` and gives back every frame it
/// holds when one arrives. A producer sends `EndOfStream` only to a consumer that set it.
pub const FEATURE_END_OF_STREAM: u32 = 2;
/// `Frame.flags`/`Release.flags` bit: a sync_file fd follows.
pub const FLAG_FENCE: u32 = 1;

/// A protocol message (the fds that travel with it are handled by the socket layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First message each way.
    Hello {
        /// Sender's role.
        role: Role,
        /// `FEATURE_*` bits.
        features: u32,
        /// Bit `1 << kind.to_wire()` per buffer kind the sender can import (consumer) or makes.
        kinds: u32,
        /// Formats the sender can import (consumer) or will send (producer).
        formats: Vec<FormatModifier>,
        /// What the sender is: `generator:bars`, `vulkan`, … (the verify sink needs the pattern).
        name: String,
    },
    /// A buffer joins the pool; its fds follow (none for SysV, whose id is in `sysv_id`).
    AddBuffer {
        /// Buffer id, `< MAX_BUFFERS`.
        id: u32,
        /// Memory kind.
        kind: BufferKind,
        /// Pixel layout.
        layout: FrameLayout,
        /// SysV segment id (SysV only; -1 otherwise).
        sysv_id: i32,
    },
    /// A buffer leaves the pool.
    RemoveBuffer {
        /// Buffer id.
        id: u32,
    },
    /// A filled buffer; an acquire fence fd follows if `flags & FLAG_FENCE`.
    Frame {
        /// Buffer id.
        id: u32,
        /// Frame sequence number.
        seq: u64,
        /// CLOCK_MONOTONIC ns when the frame was ready.
        timestamp_ns: u64,
        /// `FLAG_*`.
        flags: u32,
    },
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
    /// Orderly goodbye.
    Bye {
        /// `BYE_*` code.
        code: u32,
        /// Human-readable reason.
        reason: String,
    },
}

/// `Bye` codes.
pub const BYE_DONE: u32 = 0;
/// The sender found a protocol error.
pub const BYE_PROTOCOL_ERROR: u32 = 1;
/// The sender failed on its own.
pub const BYE_INTERNAL_ERROR: u32 = 2;

const T_HELLO: u16 = 1;
const T_ADD_BUFFER: u16 = 2;
const T_REMOVE_BUFFER: u16 = 3;
const T_FRAME: u16 = 4;
const T_RELEASE: u16 = 5;
const T_BYE: u16 = 6;
const T_END_OF_STREAM: u16 = 7;

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
    #[error("bad magic 0x{0:08x} (not a frameshare peer)")]
    BadMagic(u32),
    /// Version we do not speak.
    #[error("unsupported protocol version {0} (this side speaks {VERSION})")]
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
    /// Trailing bytes after a fixed-size message.
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
    #[error("AddBuffer {id}: {source}")]
    Layout {
        /// Buffer id.
        id: u32,
        /// The layout error.
        source: crate::format::FormatError,
    },
    /// A string field that is not UTF-8.
    #[error("{0}: text is not UTF-8")]
    Text(&'static str),
    /// Fds that came do not match what the message needs.
    #[error("{what} needs {want} fd(s), {got} arrived")]
    FdCount {
        /// Which message.
        what: &'static str,
        /// Needed.
        want: usize,
        /// Arrived.
        got: usize,
    },
}

impl Message {
    /// The message's name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::AddBuffer { .. } => "AddBuffer",
            Message::RemoveBuffer { .. } => "RemoveBuffer",
            Message::Frame { .. } => "Frame",
            Message::Release { .. } => "Release",
            Message::EndOfStream { .. } => "EndOfStream",
            Message::Bye { .. } => "Bye",
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
            Message::Frame { flags, .. } | Message::Release { flags, .. } => {
                (flags & FLAG_FENCE != 0) as usize
            }
            _ => 0,
        }
    }

    /// Encodes into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&VERSION.to_le_bytes());
        let ty = match self {
            Message::Hello { .. } => T_HELLO,
            Message::AddBuffer { .. } => T_ADD_BUFFER,
            Message::RemoveBuffer { .. } => T_REMOVE_BUFFER,
            Message::Frame { .. } => T_FRAME,
            Message::Release { .. } => T_RELEASE,
            Message::EndOfStream { .. } => T_END_OF_STREAM,
            Message::Bye { .. } => T_BYE,
        };
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // length, patched below
        let mut w = Writer(out);
        match self {
            Message::Hello {
                role,
                features,
                kinds,
                formats,
                name,
            } => {
                w.u8(match role {
                    Role::Producer => 1,
                    Role::Consumer => 2,
                });
                w.u8(0);
                w.u16(formats.len().min(MAX_FORMATS) as u16);
                w.u32(*features);
                w.u32(*kinds);
                for f in formats.iter().take(MAX_FORMATS) {
                    w.u32(f.fourcc.0);
                    w.u64(f.modifier.0);
                }
                w.text(name);
            }
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
                w.u32(*sysv_id as u32);
                for p in layout.planes() {
                    w.u32(p.fd_index);
                    w.u32(p.stride);
                    w.u64(p.offset);
                }
            }
            Message::RemoveBuffer { id } => w.u32(*id),
            Message::Frame {
                id,
                seq,
                timestamp_ns,
                flags,
            } => {
                w.u32(*id);
                w.u32(*flags);
                w.u64(*seq);
                w.u64(*timestamp_ns);
            }
            Message::Release { id, seq, flags } => {
                w.u32(*id);
                w.u32(*flags);
                w.u64(*seq);
            }
            Message::EndOfStream { last_seq } => w.u64(*last_seq),
            Message::Bye { code, reason } => {
                w.u32(*code);
                w.text(reason);
            }
        }
        let len = (out.len() - HEADER_LEN) as u32;
        out[8..12].copy_from_slice(&len.to_le_bytes());
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
        let mut r = Reader {
            b: bytes,
            pos: 0,
            what: "header",
        };
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
        let msg = match ty {
            T_HELLO => {
                r.what = "Hello";
                let role = match r.u8()? {
                    1 => Role::Producer,
                    2 => Role::Consumer,
                    v => {
                        return Err(WireError::Field {
                            what: "Hello",
                            field: "role",
                            value: v as u64,
                        })
                    }
                };
                r.u8()?;
                let n = r.u16()? as usize;
                if n > MAX_FORMATS {
                    return Err(WireError::Field {
                        what: "Hello",
                        field: "formats",
                        value: n as u64,
                    });
                }
                let features = r.u32()?;
                let kinds = r.u32()?;
                let mut formats = Vec::with_capacity(n);
                for _ in 0..n {
                    formats.push(FormatModifier {
                        fourcc: Fourcc(r.u32()?),
                        modifier: Modifier(r.u64()?),
                    });
                }
                let name = r.text()?;
                Message::Hello {
                    role,
                    features,
                    kinds,
                    formats,
                    name,
                }
            }
            T_ADD_BUFFER => {
                r.what = "AddBuffer";
                let id = r.id()?;
                let kind_code = r.u8()?;
                let kind = BufferKind::from_wire(kind_code).ok_or(WireError::Field {
                    what: "AddBuffer",
                    field: "kind",
                    value: kind_code as u64,
                })?;
                let n_planes = r.u8()? as usize;
                if n_planes == 0 || n_planes > MAX_PLANES {
                    return Err(WireError::Field {
                        what: "AddBuffer",
                        field: "planes",
                        value: n_planes as u64,
                    });
                }
                r.u16()?;
                let fourcc = Fourcc(r.u32()?);
                let modifier = Modifier(r.u64()?);
                let width = r.u32()?;
                let height = r.u32()?;
                let size = r.u64()?;
                let sysv_id = r.u32()? as i32;
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
                if (kind == BufferKind::SysvShm) != (sysv_id >= 0) {
                    return Err(WireError::Field {
                        what: "AddBuffer",
                        field: "sysv_id",
                        value: sysv_id as i64 as u64,
                    });
                }
                Message::AddBuffer {
                    id,
                    kind,
                    layout,
                    sysv_id,
                }
            }
            T_REMOVE_BUFFER => {
                r.what = "RemoveBuffer";
                Message::RemoveBuffer { id: r.id()? }
            }
            T_FRAME => {
                r.what = "Frame";
                let id = r.id()?;
                let flags = r.flags()?;
                Message::Frame {
                    id,
                    flags,
                    seq: r.u64()?,
                    timestamp_ns: r.u64()?,
                }
            }
            T_RELEASE => {
                r.what = "Release";
                let id = r.id()?;
                let flags = r.flags()?;
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
                    code: r.u32()?,
                    reason: r.text()?,
                }
            }
            t => return Err(WireError::UnknownType(t)),
        };
        if r.pos != bytes.len() {
            return Err(WireError::Trailing {
                what: msg.name(),
                extra: bytes.len() - r.pos,
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
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn text(&mut self, s: &str) {
        let mut end = s.len().min(MAX_TEXT);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let end = self.pos + N;
        let s = self.b.get(self.pos..end).ok_or(WireError::Truncated {
            what: self.what,
            got: self.b.len(),
            need: end,
        })?;
        self.pos = end;
        Ok(s.try_into().unwrap())
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn id(&mut self) -> Result<u32, WireError> {
        let id = self.u32()?;
        if id >= MAX_BUFFERS {
            return Err(WireError::Field {
                what: self.what,
                field: "id",
                value: id as u64,
            });
        }
        Ok(id)
    }
    fn flags(&mut self) -> Result<u32, WireError> {
        let f = self.u32()?;
        if f & !FLAG_FENCE != 0 {
            return Err(WireError::Field {
                what: self.what,
                field: "flags",
                value: f as u64,
            });
        }
        Ok(f)
    }
    fn text(&mut self) -> Result<String, WireError> {
        let n = self.u16()? as usize;
        if n > MAX_TEXT {
            return Err(WireError::Field {
                what: self.what,
                field: "text length",
                value: n as u64,
            });
        }
        let end = self.pos + n;
        let s = self.b.get(self.pos..end).ok_or(WireError::Truncated {
            what: self.what,
            got: self.b.len(),
            need: end,
        })?;
        self.pos = end;
        String::from_utf8(s.to_vec()).map_err(|_| WireError::Text(self.what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Message, fds: usize) {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        assert!(buf.len() <= MAX_MESSAGE);
        assert_eq!(Message::decode(&buf, fds).unwrap(), m);
    }

    fn add_buffer() -> Message {
        Message::AddBuffer {
            id: 3,
            kind: BufferKind::Memfd,
            layout: FrameLayout::linear(Fourcc::NV12, 640, 480, 64).unwrap(),
            sysv_id: -1,
        }
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(
            Message::Hello {
                role: Role::Consumer,
                features: FEATURE_FENCES,
                kinds: 0b1010,
                formats: vec![FormatModifier {
                    fourcc: Fourcc::XR24,
                    modifier: Modifier::LINEAR,
                }],
                name: "verify".into(),
            },
            0,
        );
        round_trip(add_buffer(), 1);
        round_trip(
            Message::AddBuffer {
                id: 0,
                kind: BufferKind::SysvShm,
                layout: FrameLayout::linear(Fourcc::XR24, 64, 64, 1).unwrap(),
                sysv_id: 1234,
            },
            0,
        );
        round_trip(Message::RemoveBuffer { id: 63 }, 0);
        round_trip(
            Message::Frame {
                id: 1,
                seq: u64::MAX,
                timestamp_ns: 42,
                flags: 0,
            },
            0,
        );
        round_trip(
            Message::Frame {
                id: 1,
                seq: 7,
                timestamp_ns: 42,
                flags: FLAG_FENCE,
            },
            1,
        );
        round_trip(
            Message::Release {
                id: 2,
                seq: 9,
                flags: FLAG_FENCE,
            },
            1,
        );
        round_trip(Message::EndOfStream { last_seq: 299 }, 0);
        round_trip(
            Message::Bye {
                code: BYE_DONE,
                reason: "done ✓".into(),
            },
            0,
        );
    }

    #[test]
    fn frame_messages_are_small() {
        let mut buf = Vec::new();
        Message::Frame {
            id: 1,
            seq: 1,
            timestamp_ns: 1,
            flags: 0,
        }
        .encode(&mut buf);
        assert_eq!(buf.len(), HEADER_LEN + 24);
    }

    fn encoded(m: &Message) -> Vec<u8> {
        let mut b = Vec::new();
        m.encode(&mut b);
        b
    }

    #[test]
    fn truncated_is_rejected() {
        let b = encoded(&add_buffer());
        assert!(matches!(
            Message::decode(&b[..5], 1),
            Err(WireError::Truncated { what: "header", .. })
        ));
        // Cut the payload but fix up the length so only the content check can catch it.
        let mut cut = b[..b.len() - 4].to_vec();
        let len = (cut.len() - HEADER_LEN) as u32;
        cut[8..12].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            Message::decode(&cut, 1),
            Err(WireError::Truncated {
                what: "AddBuffer",
                ..
            })
        ));
    }

    #[test]
    fn bad_header_fields_are_rejected() {
        let good = encoded(&Message::RemoveBuffer { id: 1 });
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(
            Message::decode(&b, 0),
            Err(WireError::BadMagic(_))
        ));
        let mut b = good.clone();
        b[4..6].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(Message::decode(&b, 0), Err(WireError::Version(2)));
        let mut b = good.clone();
        b[6..8].copy_from_slice(&99u16.to_le_bytes());
        assert_eq!(Message::decode(&b, 0), Err(WireError::UnknownType(99)));
        let mut b = good.clone();
        b[8..12].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(
            Message::decode(&b, 0),
            Err(WireError::Length {
                declared: 100,
                actual: 4
            })
        );
        let mut b = good.clone();
        b.extend_from_slice(&[0, 0]);
        b[8..12].copy_from_slice(&6u32.to_le_bytes());
        assert!(matches!(
            Message::decode(&b, 0),
            Err(WireError::Trailing { extra: 2, .. })
        ));
    }

    #[test]
    fn out_of_range_ids_and_flags_are_rejected() {
        let b = encoded(&Message::Frame {
            id: MAX_BUFFERS,
            seq: 1,
            timestamp_ns: 1,
            flags: 0,
        });
        assert!(matches!(
            Message::decode(&b, 0),
            Err(WireError::Field { field: "id", .. })
        ));
        let b = encoded(&Message::Release {
            id: 1,
            seq: 1,
            flags: 0x80,
        });
        assert!(matches!(
            Message::decode(&b, 0),
            Err(WireError::Field { field: "flags", .. })
        ));
    }

    #[test]
    fn plane_outside_buffer_is_rejected() {
        let mut m = add_buffer();
        if let Message::AddBuffer { layout, .. } = &mut m {
            let size = layout.size();
            layout.planes_mut_unchecked()[1].offset = size - 10;
        }
        let b = encoded(&m);
        assert!(matches!(
            Message::decode(&b, 1),
            Err(WireError::Layout { id: 3, .. })
        ));
    }

    #[test]
    fn unknown_kind_and_bad_plane_count_are_rejected() {
        let mut b = encoded(&add_buffer());
        b[HEADER_LEN + 4] = 200;
        assert!(matches!(
            Message::decode(&b, 1),
            Err(WireError::Field { field: "kind", .. })
        ));
        let mut b = encoded(&add_buffer());
        b[HEADER_LEN + 5] = 9;
        assert!(matches!(
            Message::decode(&b, 1),
            Err(WireError::Field {
                field: "planes",
                ..
            })
        ));
    }

    #[test]
    fn fd_count_mismatch_is_rejected() {
        let b = encoded(&add_buffer());
        assert_eq!(
            Message::decode(&b, 0),
            Err(WireError::FdCount {
                what: "AddBuffer",
                want: 1,
                got: 0
            })
        );
        assert_eq!(
            Message::decode(&b, 2),
            Err(WireError::FdCount {
                what: "AddBuffer",
                want: 1,
                got: 2
            })
        );
        let b = encoded(&Message::Frame {
            id: 1,
            seq: 1,
            timestamp_ns: 1,
            flags: FLAG_FENCE,
        });
        assert!(matches!(
            Message::decode(&b, 0),
            Err(WireError::FdCount { .. })
        ));
        let b = encoded(&Message::Frame {
            id: 1,
            seq: 1,
            timestamp_ns: 1,
            flags: 0,
        });
        assert!(matches!(
            Message::decode(&b, 1),
            Err(WireError::FdCount { .. })
        ));
    }

    #[test]
    fn sysv_id_must_match_kind() {
        let mut m = add_buffer();
        if let Message::AddBuffer { sysv_id, .. } = &mut m {
            *sysv_id = 5;
        }
        assert!(matches!(
            Message::decode(&encoded(&m), 1),
            Err(WireError::Field {
                field: "sysv_id",
                ..
            })
        ));
    }

    #[test]
    fn text_is_bounded_and_checked() {
        let long = "x".repeat(1000);
        let b = encoded(&Message::Bye {
            code: 0,
            reason: long,
        });
        match Message::decode(&b, 0).unwrap() {
            Message::Bye { reason, .. } => assert_eq!(reason.len(), MAX_TEXT),
            m => panic!("{m:?}"),
        }
        let mut b = encoded(&Message::Bye {
            code: 0,
            reason: "ab".into(),
        });
        let n = b.len();
        b[n - 1] = 0xff;
        assert_eq!(Message::decode(&b, 0), Err(WireError::Text("Bye")));
    }
}
