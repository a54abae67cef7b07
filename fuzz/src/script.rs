//! Reading and writing the byte scripts session targets run (see the crate docs for the
//! format). The reader never fails: past the end of the input every read is `None`, which ends
//! the script; the writer is what the seed generator uses to write inputs from real messages.

use crate::fds::{FdKind, FdSpec};

/// Most fds a datagram operand attaches (one message carries at most 4: the rest exercises
/// `MSG_CTRUNC`).
pub const MAX_SCRIPT_FDS: usize = 6;

/// A cursor over a fuzz input.
#[derive(Debug)]
pub struct Script<'a> {
    data: &'a [u8],
    pos: usize,
}

/// One datagram a script sends: its bytes and the fds that go with them.
#[derive(Debug)]
pub struct Datagram<'a> {
    /// The bytes (a frameshare message, or not).
    pub bytes: &'a [u8],
    /// The fds attached.
    pub fds: Vec<FdSpec>,
}

impl<'a> Script<'a> {
    /// A script over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Script { data, pos: 0 }
    }

    /// The next byte.
    pub fn u8(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let end = self.pos.saturating_add(n).min(self.data.len());
        let s = &self.data[self.pos..end];
        self.pos = end;
        s
    }

    /// A datagram operand.
    pub fn datagram(&mut self) -> Option<Datagram<'a>> {
        let len = self.u16()? as usize;
        let bytes = self.bytes(len);
        let nfds = self.u8().map_or(0, |n| n as usize % (MAX_SCRIPT_FDS + 1));
        let mut fds = Vec::with_capacity(nfds);
        for _ in 0..nfds {
            let (Some(kind), Some(size)) = (self.u8(), self.u32()) else {
                break;
            };
            fds.push(FdSpec {
                kind: FdKind::from_byte(kind),
                size,
            });
        }
        Some(Datagram { bytes, fds })
    }
}

/// Writes scripts (the seed corpus).
#[derive(Debug, Default)]
pub struct ScriptWriter {
    /// The input so far.
    pub out: Vec<u8>,
}

impl ScriptWriter {
    /// A script that starts with `flags`.
    pub fn new(flags: u8) -> Self {
        ScriptWriter { out: vec![flags] }
    }

    /// Appends one byte (an opcode or an operand).
    pub fn u8(&mut self, b: u8) -> &mut Self {
        self.out.push(b);
        self
    }

    /// Appends a datagram operand.
    pub fn datagram(&mut self, bytes: &[u8], fds: &[FdSpec]) -> &mut Self {
        self.out
            .extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        self.out.extend_from_slice(bytes);
        self.out.push(fds.len() as u8);
        for f in fds {
            self.out.push(f.kind as u8);
            self.out.extend_from_slice(&f.size.to_le_bytes());
        }
        self
    }
}
