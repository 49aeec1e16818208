//! The crate's error types.
//!
//! [`Error`] is what every fallible public function of the session returns.
//! The wire format has its own errors in [`crate::pdu`] ([`ProtocolError`],
//! re-exported here, names exactly which rule a byte sequence or a value
//! handed to an encoder breaks; [`FrameError`] is what framing reports), so
//! the codec depends on nothing of the session; they convert into [`Error`].

use std::time::Duration;

pub use crate::pdu::ProtocolError;
use crate::pdu::{BindMode, CommandStatus, FrameError, Header};

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
        mode: BindMode,
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

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Protocol(p) => Error::Protocol(p),
            FrameError::InvalidPdu { header, source } => Error::InvalidPdu { header, source },
        }
    }
}
