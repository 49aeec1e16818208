//! The wire format's own errors: what a byte sequence or a value handed to an
//! encoder does wrong. The session's [`crate::Error`] wraps them; nothing
//! here depends on the session.

use super::Header;

/// A precise violation of the SMPP 3.4 wire format.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// command_length is smaller than the 16-octet header.
    #[error("command_length {length} is smaller than the 16-octet header")]
    CommandLengthTooSmall {
        /// The announced length.
        length: u32,
    },

    /// command_length exceeds the largest PDU this crate accepts.
    #[error("command_length {length} exceeds the maximum of {max}")]
    CommandLengthTooLarge {
        /// The announced (or encoded) length.
        length: u32,
        /// The limit, [`crate::pdu::MAX_PDU_LEN`].
        max: u32,
    },

    /// The body ended before a fixed-size field could be read.
    #[error("body ends before field {field}")]
    UnexpectedEnd {
        /// The spec name of the field.
        field: &'static str,
    },

    /// A C-octet string runs to the end of the body without its NUL.
    #[error("C-octet string {field} is not NUL-terminated")]
    CStringUnterminated {
        /// The spec name of the field.
        field: &'static str,
    },

    /// A C-octet string is longer than the spec allows (`max` counts the NUL).
    #[error("C-octet string {field} is longer than {max} octets (NUL included)")]
    CStringTooLong {
        /// The spec name of the field.
        field: &'static str,
        /// The spec maximum, NUL included.
        max: usize,
    },

    /// A C-octet string to encode contains NUL or a character outside Latin-1.
    #[error("C-octet string {field} contains a NUL or a non-Latin-1 character")]
    CStringInvalidChar {
        /// The spec name of the field.
        field: &'static str,
    },

    /// short_message is longer than the 254 octets sm_length allows.
    #[error("short_message of {len} octets exceeds 254")]
    ShortMessageTooLong {
        /// The length given.
        len: usize,
    },

    /// A TLV header or value runs past the end of the body.
    #[error("TLV 0x{tag:04x} is truncated")]
    TlvTruncated {
        /// The tag, or 0 when even the tag was cut.
        tag: u16,
    },

    /// A TLV value is longer than its 16-bit length field allows.
    #[error("TLV 0x{tag:04x} value of {len} octets does not fit a 16-bit length")]
    TlvTooLong {
        /// The tag.
        tag: u16,
        /// The value's length.
        len: usize,
    },
}

/// What [`super::decode_frame`] reports.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// command_length is below 16 or above [`super::MAX_PDU_LEN`]: nothing was
    /// consumed and the stream cannot be trusted any more.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The frame was well delimited but its body does not decode; the frame
    /// was consumed, so the caller can answer it with generic_nack.
    #[error("invalid {} body (sequence number {}): {source}", header.command_id, header.sequence_number)]
    InvalidPdu {
        /// The header of the offending frame.
        header: Header,
        /// What is wrong with its body.
        source: ProtocolError,
    },
}
