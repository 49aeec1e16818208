//! The crate's error types.
//!
//! [`Error`] is what every fallible public function returns. [`ProtocolError`]
//! names exactly which rule of the wire format a byte sequence (or a value
//! handed to an encoder) breaks, so tests and logs can tell them apart.

use std::time::Duration;

use crate::pdu::{CommandStatus, Header};

/// Everything that can go wrong in this crate.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No response to the request with this sequence number arrived within
    /// `after`. The request's window slot has been freed; the SMSC may still
    /// have accepted the message, so the caller decides whether a retry risks
    /// a duplicate.
    #[error("no response to sequence number {sequence} within {after:?}")]
    ResponseTimeout {
        /// The sequence number of the unanswered request.
        sequence: u32,
        /// How long the client waited.
        after: Duration,
    },

    /// The SMSC answered the bind request with a non-zero status (wrong
    /// password, unknown system_id, bind refused...). Retrying with the same
    /// credentials will normally fail the same way.
    #[error("the SMSC refused the bind: {status}")]
    BindFailed {
        /// The command_status of the bind response (or generic_nack).
        status: CommandStatus,
    },

    /// The connection is gone: the peer closed it, it failed, enquire_link went
    /// unanswered, or the session was unbound. Requests still waiting for a
    /// response fail with this error; the handle reports closed from then on.
    #[error("the SMPP connection is closed")]
    ConnectionClosed,

    /// A socket operation failed (connect, read or write).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The TLS handshake failed or timed out (feature `tls`): the SMSC's
    /// certificate was refused (no trusted CA, wrong name, not the pinned
    /// one) or the peer does not speak TLS. The text says which.
    #[error("TLS handshake with the SMSC failed: {0}")]
    Tls(std::io::Error),

    /// The byte stream cannot be framed (bad command_length), or a value given
    /// to an encoder breaks the specification. On a live connection this is
    /// fatal: the stream cannot be resynchronised.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),

    /// A frame with a well-formed header whose body does not decode. The frame
    /// was consumed, so the stream is still in sync and the session answers it
    /// with generic_nack.
    #[error("invalid {} body (sequence number {}): {source}", header.command_id, header.sequence_number)]
    InvalidPdu {
        /// The header of the offending frame.
        header: Header,
        /// What is wrong with its body.
        source: ProtocolError,
    },

    /// The SMSC answered a request with generic_nack (it could not parse or
    /// route the request). Some SMSCs send ESME_RTHROTTLED this way.
    #[error("the SMSC answered sequence number {sequence} with generic_nack: {status}")]
    GenericNack {
        /// The sequence number of the rejected request.
        sequence: u32,
        /// The status carried by the generic_nack.
        status: CommandStatus,
    },

    /// The SMSC answered a request with a response of another kind.
    #[error("unexpected response {got} to sequence number {sequence}")]
    UnexpectedResponse {
        /// The sequence number of the request.
        sequence: u32,
        /// The command_id of what came back.
        got: crate::pdu::CommandId,
    },

    /// The operation is not allowed in this bind mode (for example submit_sm on
    /// a receiver bind).
    #[error("{operation} is not allowed on a {mode:?} bind")]
    WrongBindMode {
        /// What was attempted.
        operation: &'static str,
        /// The session's bind mode.
        mode: crate::client::BindMode,
    },

    /// A long-message helper was given parts it cannot send (none, more than
    /// 255, or a part too long for one short_message).
    #[error("cannot build the message parts: {0}")]
    InvalidParts(&'static str),
}

impl Error {
    /// True when the SMSC asked us to slow down (ESME_RTHROTTLED or
    /// ESME_RMSGQFUL carried by a generic_nack).
    pub fn is_throttling(&self) -> bool {
        matches!(self, Error::GenericNack { status, .. } if status.is_throttling())
    }
}

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
