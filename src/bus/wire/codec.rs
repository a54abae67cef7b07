//! Little-endian field readers and writers for the wire format, and the tagged-field (TLV)
//! lists that make messages extensible: each field is `tag u16, length u16, value`. A tag with
//! [`CRITICAL`] set must be understood; any other unknown tag is skipped.

use super::{WireError, MAX_TEXT};

/// Tag bit: a receiver that does not know this tag must refuse the message.
pub const CRITICAL: u16 = 0x8000;

/// Appends fields to a message being encoded.
pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    /// A length-prefixed (u16) UTF-8 string, cut at [`MAX_TEXT`] bytes on a char boundary.
    pub(crate) fn text(&mut self, s: &str) {
        let mut end = s.len().min(MAX_TEXT);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
    /// A tagged field whose value `body` writes.
    pub(crate) fn field(&mut self, tag: u16, body: impl FnOnce(&mut Writer<'_>)) {
        self.u16(tag);
        let at = self.0.len();
        self.u16(0);
        body(self);
        let len = (self.0.len() - at - 2) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_le_bytes());
    }
}

/// Reads fields of a received message, every read bounds-checked.
pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) pos: usize,
    pub(crate) what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8], what: &'static str) -> Self {
        Reader { b, pos: 0, what }
    }

    fn slice(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated {
            what: self.what,
            got: self.b.len(),
            need: usize::MAX,
        })?;
        let s = self.b.get(self.pos..end).ok_or(WireError::Truncated {
            what: self.what,
            got: self.b.len(),
            need: end,
        })?;
        self.pos = end;
        Ok(s)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let s = self.slice(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        self.slice(n)
    }
    pub(crate) fn text(&mut self) -> Result<String, WireError> {
        let n = self.u16()? as usize;
        if n > MAX_TEXT {
            return Err(self.field_err("text length", n as u64));
        }
        let s = self.slice(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| WireError::Text(self.what))
    }
    pub(crate) fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    pub(crate) fn field_err(&self, field: &'static str, value: u64) -> WireError {
        WireError::Field {
            what: self.what,
            field,
            value,
        }
    }

    /// Reads the tagged fields up to the end of the message, calling `known(tag, value)` for
    /// each; `known` returns `Ok(false)` for a tag it does not know. Unknown critical tags are
    /// an error, other unknown tags are skipped; a value must be read whole.
    pub(crate) fn fields(
        &mut self,
        mut known: impl FnMut(u16, &mut Reader<'a>) -> Result<bool, WireError>,
    ) -> Result<(), WireError> {
        while self.remaining() > 0 {
            let tag = self.u16()?;
            let len = self.u16()? as usize;
            let value = self.slice(len)?;
            let mut r = Reader::new(value, self.what);
            if known(tag, &mut r)? {
                if r.remaining() != 0 {
                    return Err(WireError::Trailing {
                        what: self.what,
                        extra: r.remaining(),
                    });
                }
            } else if tag & CRITICAL != 0 {
                return Err(self.field_err("unknown critical field", tag as u64));
            }
        }
        Ok(())
    }
}
