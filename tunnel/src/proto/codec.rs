//! Primitive field encodings shared by control messages and the stream header: big-endian
//! integers, canonical booleans and option tags, length-prefixed strings with their rules, and
//! counted lists.
//!
//! Kept in one place so that the encoder refuses exactly what the decoder rejects: a value that
//! encodes always decodes back to itself, and every decodable payload has one encoding.

use bytes::{Buf, BufMut, BytesMut};

use super::ProtoError;

/// Longest name-like string (ids, service names, SNI, addresses, OS, ...), in bytes.
pub(crate) const MAX_NAME: usize = 255;
/// Longest free-text string (reasons, reply messages), in bytes: what a `u16` length can say.
pub(crate) const MAX_TEXT: usize = u16::MAX as usize;

/// What a string field may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Str {
    /// 1..=255 bytes, no control characters: ids and names.
    Name,
    /// 0..=255 bytes, no control characters: short descriptive values that may be unknown.
    Short,
    /// 0..=65535 bytes of any UTF-8: human-readable reasons and messages.
    Text,
}

impl Str {
    /// Why `s` breaks this rule, if it does.
    pub(crate) fn problem(self, s: &str) -> Option<String> {
        let max = match self {
            Str::Name | Str::Short => MAX_NAME,
            Str::Text => MAX_TEXT,
        };
        if self == Str::Name && s.is_empty() {
            return Some("is empty".into());
        }
        if s.len() > max {
            return Some(format!("is {} bytes long, the limit is {max}", s.len()));
        }
        if self != Str::Text {
            if let Some((at, c)) = s.char_indices().find(|(_, c)| c.is_control()) {
                return Some(format!(
                    "contains control character U+{:04X} at byte {at}",
                    c as u32
                ));
            }
        }
        None
    }
}

/// A checked cursor over one complete payload. Every read names its field, so a truncated or
/// invalid payload is reported as "field `x`: ...".
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    pub(crate) fn malformed(&self, problem: String) -> ProtoError {
        ProtoError::Malformed {
            what: self.what,
            problem,
        }
    }

    fn need(&self, n: usize, field: &str) -> Result<(), ProtoError> {
        if self.buf.remaining() < n {
            return Err(self.malformed(format!(
                "truncated in field `{field}`: {n} more bytes needed, {} left",
                self.buf.remaining()
            )));
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8, ProtoError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &str) -> Result<u16, ProtoError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32, ProtoError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64, ProtoError> {
        self.need(8, field)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &str) -> Result<&'a [u8], ProtoError> {
        self.need(n, field)?;
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A one-byte `00`/`01`; anything else is an error (keeps the encoding canonical).
    pub(crate) fn bool(&mut self, field: &str) -> Result<bool, ProtoError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.malformed(format!(
                "field `{field}`: 0x{b:02x} is not a boolean (00 or 01)"
            ))),
        }
    }

    /// A `u16`-length string obeying `rule`.
    pub(crate) fn str(&mut self, rule: Str, field: &str) -> Result<String, ProtoError> {
        let len = self.u16(field)? as usize;
        self.str_body(len, rule, field)
    }

    /// A `u32`-length string of any UTF-8 (bounded by the frame cap, which the caller enforced).
    pub(crate) fn long_text(&mut self, field: &str) -> Result<String, ProtoError> {
        let len = self.u32(field)? as usize;
        let raw = self.bytes(len, field)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|e| self.malformed(format!("field `{field}`: invalid UTF-8 ({e})")))
    }

    fn str_body(&mut self, len: usize, rule: Str, field: &str) -> Result<String, ProtoError> {
        let raw = self.bytes(len, field)?;
        let s = std::str::from_utf8(raw)
            .map_err(|e| self.malformed(format!("field `{field}`: invalid UTF-8 ({e})")))?;
        if let Some(problem) = rule.problem(s) {
            return Err(self.malformed(format!("field `{field}` {problem}")));
        }
        Ok(s.to_owned())
    }

    /// A `u16` count then that many items. Never preallocates from the untrusted count beyond
    /// what the remaining bytes could hold (each item takes at least `min_item` bytes).
    pub(crate) fn list<T>(
        &mut self,
        field: &str,
        min_item: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, ProtoError>,
    ) -> Result<Vec<T>, ProtoError> {
        let count = self.u16(field)? as usize;
        if count.saturating_mul(min_item) > self.buf.remaining() {
            return Err(self.malformed(format!(
                "field `{field}` announces {count} items but only {} bytes are left",
                self.buf.remaining()
            )));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(item(self)?);
        }
        Ok(out)
    }

    /// All bytes must have been consumed.
    pub(crate) fn finish(self) -> Result<(), ProtoError> {
        if self.buf.has_remaining() {
            return Err(self.malformed(format!(
                "{} unexpected trailing bytes",
                self.buf.remaining()
            )));
        }
        Ok(())
    }
}

/// Encoding side: writes into a `BytesMut`, validating with the same rules the [`Reader`]
/// applies. On error the caller truncates what was partly written.
pub(crate) struct Writer<'a> {
    pub(crate) dst: &'a mut BytesMut,
    what: &'static str,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(dst: &'a mut BytesMut, what: &'static str) -> Self {
        Writer { dst, what }
    }

    pub(crate) fn unencodable(&self, problem: String) -> ProtoError {
        ProtoError::Unencodable {
            what: self.what,
            problem,
        }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.dst.put_u8(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.dst.put_u16(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.dst.put_u32(v);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.dst.put_u64(v);
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.dst.put_u8(v as u8);
    }

    pub(crate) fn str(&mut self, rule: Str, field: &str, s: &str) -> Result<(), ProtoError> {
        if let Some(problem) = rule.problem(s) {
            return Err(self.unencodable(format!("field `{field}` {problem}")));
        }
        // `problem` guarantees len <= MAX_TEXT == u16::MAX.
        self.dst.put_u16(s.len() as u16);
        self.dst.put_slice(s.as_bytes());
        Ok(())
    }

    pub(crate) fn long_text(&mut self, field: &str, s: &str) -> Result<(), ProtoError> {
        let len = u32::try_from(s.len())
            .map_err(|_| self.unencodable(format!("field `{field}` is longer than 4 GiB")))?;
        self.dst.put_u32(len);
        self.dst.put_slice(s.as_bytes());
        Ok(())
    }

    pub(crate) fn list<T>(
        &mut self,
        field: &str,
        items: &[T],
        mut item: impl FnMut(&mut Self, &T) -> Result<(), ProtoError>,
    ) -> Result<(), ProtoError> {
        let count = u16::try_from(items.len()).map_err(|_| {
            self.unencodable(format!(
                "field `{field}` has {} items, the limit is {}",
                items.len(),
                u16::MAX
            ))
        })?;
        self.dst.put_u16(count);
        for it in items {
            item(self, it)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_rules() {
        assert_eq!(Str::Name.problem("edge-1"), None);
        assert_eq!(Str::Name.problem("").as_deref(), Some("is empty"));
        assert_eq!(Str::Short.problem(""), None);
        assert!(Str::Name
            .problem("a\u{7}b")
            .unwrap()
            .contains("U+0007 at byte 1"));
        assert!(Str::Name
            .problem(&"x".repeat(256))
            .unwrap()
            .contains("256 bytes"));
        assert_eq!(Str::Text.problem("line\nbreak"), None);
    }

    #[test]
    fn reader_names_the_truncated_field() {
        let mut r = Reader::new(&[0, 5, b'a'], "test frame");
        let err = r.str(Str::Name, "node_id").unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed test frame: truncated in field `node_id`: 5 more bytes needed, 1 left"
        );
    }

    #[test]
    fn list_count_cannot_force_a_large_allocation() {
        let mut r = Reader::new(&[0xff, 0xff, 0, 0], "test frame");
        let err = r.list("pods", 2, |r| r.str(Str::Name, "pod")).unwrap_err();
        assert!(err.to_string().contains("announces 65535 items"), "{err}");
    }
}
