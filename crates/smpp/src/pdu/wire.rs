//! Primitive field codecs: integers, C-octet strings, sm_length-prefixed octets.
//!
//! C-octet strings are carried as Rust `String`s mapped octet-for-character
//! through Latin-1, so any octet sequence decodes and re-encodes unchanged.

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;

/// A cursor over one PDU body.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        let (&first, rest) = self
            .bytes
            .split_first()
            .ok_or(ProtocolError::UnexpectedEnd { field })?;
        self.bytes = rest;
        Ok(first)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, ProtocolError> {
        let raw = self.take(2, field)?;
        Ok(u16::from_be_bytes([raw[0], raw[1]]))
    }

    pub(crate) fn take(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<&'a [u8], ProtocolError> {
        if self.bytes.len() < len {
            return Err(ProtocolError::UnexpectedEnd { field });
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    /// Reads a C-octet string of at most `max` octets, the NUL included.
    pub(crate) fn cstring(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<String, ProtocolError> {
        let window = &self.bytes[..self.bytes.len().min(max)];
        match window.iter().position(|&b| b == 0) {
            Some(nul) => {
                let text = latin1(&self.bytes[..nul]);
                self.bytes = &self.bytes[nul + 1..];
                Ok(text)
            }
            None if self.bytes.len() < max => Err(ProtocolError::CStringUnterminated { field }),
            None => Err(ProtocolError::CStringTooLong { field, max }),
        }
    }

    /// A C-octet string that the peer may leave out entirely when the body
    /// ends early (response bodies with an error status, for instance).
    pub(crate) fn cstring_or_empty(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<String, ProtocolError> {
        if self.is_empty() {
            Ok(String::new())
        } else {
            self.cstring(field, max)
        }
    }
}

pub(crate) fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Writes a C-octet string, checking its length (NUL included) against `max`.
pub(crate) fn put_cstring(
    buf: &mut BytesMut,
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<(), ProtocolError> {
    let start = buf.len();
    for c in value.chars() {
        let code = u32::from(c);
        if code == 0 || code > 0xFF {
            buf.truncate(start);
            return Err(ProtocolError::CStringInvalidChar { field });
        }
        buf.put_u8(code as u8);
    }
    if buf.len() - start + 1 > max {
        buf.truncate(start);
        return Err(ProtocolError::CStringTooLong { field, max });
    }
    buf.put_u8(0);
    Ok(())
}

/// Writes sm_length followed by short_message.
pub(crate) fn put_short_message(buf: &mut BytesMut, value: &Bytes) -> Result<(), ProtocolError> {
    if value.len() > super::MAX_SHORT_MESSAGE_LEN {
        return Err(ProtocolError::ShortMessageTooLong { len: value.len() });
    }
    buf.put_u8(value.len() as u8);
    buf.put_slice(value);
    Ok(())
}
