//! The SMPP 3.4 wire format: header, PDUs, TLVs, and framing.
//!
//! Every PDU is a 16-octet header (command_length, command_id,
//! command_status, sequence_number) followed by a body. [`Pdu::encode`]
//! writes one; [`decode_frame`] takes one off the front of a receive buffer,
//! answering `Ok(None)` while the buffer holds only part of it.
//!
//! ```
//! use bytes::BytesMut;
//! use smpp::pdu::{Body, Pdu, decode_frame};
//!
//! let mut buf = BytesMut::new();
//! Pdu::request(7, Body::EnquireLink).encode(&mut buf).unwrap();
//! assert_eq!(buf.as_ref(), &[0, 0, 0, 16, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 7]);
//! let pdu = decode_frame(&mut buf).unwrap().unwrap();
//! assert_eq!(pdu.sequence_number, 7);
//! assert!(buf.is_empty());
//! ```

mod body;
mod command;
mod error;
mod time;
pub mod tlv;
mod trace;
mod wire;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use body::{
    Bind, BindMode, BindResp, DeliverSm, DeliverSmResp, Outbind, SubmitSm, SubmitSmResp,
    data_coding, esm_class, npi, registered_delivery, ton,
};
pub use command::{CommandId, CommandStatus};
pub use error::{FrameError, ProtocolError};
pub use time::{MAX_RELATIVE, relative_time};
pub use tlv::{NetworkErrorCode, Tlv};
pub use trace::Redacted;

use wire::Reader;

/// Length of the PDU header.
pub const HEADER_LEN: usize = 16;

/// The largest command_length accepted or produced (64 KiB). SMPP 3.4 sets
/// no limit; this one bounds the memory a peer can make us buffer.
pub const MAX_PDU_LEN: u32 = 64 * 1024;

/// The longest short_message sm_length can announce in SMPP 3.4.
pub const MAX_SHORT_MESSAGE_LEN: usize = 254;

/// The four header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the whole PDU, header included.
    pub command_length: u32,
    /// Which PDU this is.
    pub command_id: CommandId,
    /// Zero in requests; the outcome in responses.
    pub command_status: CommandStatus,
    /// Pairs a response with its request.
    pub sequence_number: u32,
}

impl Header {
    /// Reads a header from the first 16 octets of `bytes` (no length checks).
    fn parse(bytes: &[u8]) -> Header {
        let word =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Header {
            command_length: word(0),
            command_id: CommandId::from(word(4)),
            command_status: CommandStatus::from(word(8)),
            sequence_number: word(12),
        }
    }
}

/// The body of a PDU, one variant per command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// bind_transmitter
    BindTransmitter(Bind),
    /// bind_transmitter_resp
    BindTransmitterResp(BindResp),
    /// bind_receiver
    BindReceiver(Bind),
    /// bind_receiver_resp
    BindReceiverResp(BindResp),
    /// bind_transceiver
    BindTransceiver(Bind),
    /// bind_transceiver_resp
    BindTransceiverResp(BindResp),
    /// outbind
    Outbind(Outbind),
    /// unbind
    Unbind,
    /// unbind_resp
    UnbindResp,
    /// enquire_link
    EnquireLink,
    /// enquire_link_resp
    EnquireLinkResp,
    /// submit_sm
    SubmitSm(Box<SubmitSm>),
    /// submit_sm_resp
    SubmitSmResp(SubmitSmResp),
    /// deliver_sm
    DeliverSm(Box<DeliverSm>),
    /// deliver_sm_resp
    DeliverSmResp(DeliverSmResp),
    /// generic_nack
    GenericNack,
    /// A command this crate does not model, kept as raw octets.
    Unknown {
        /// Its command_id.
        command_id: u32,
        /// Its body octets.
        body: Bytes,
    },
}

impl Body {
    /// The command_id this body is sent with.
    pub fn command_id(&self) -> CommandId {
        match self {
            Body::BindTransmitter(_) => CommandId::BindTransmitter,
            Body::BindTransmitterResp(_) => CommandId::BindTransmitterResp,
            Body::BindReceiver(_) => CommandId::BindReceiver,
            Body::BindReceiverResp(_) => CommandId::BindReceiverResp,
            Body::BindTransceiver(_) => CommandId::BindTransceiver,
            Body::BindTransceiverResp(_) => CommandId::BindTransceiverResp,
            Body::Outbind(_) => CommandId::Outbind,
            Body::Unbind => CommandId::Unbind,
            Body::UnbindResp => CommandId::UnbindResp,
            Body::EnquireLink => CommandId::EnquireLink,
            Body::EnquireLinkResp => CommandId::EnquireLinkResp,
            Body::SubmitSm(_) => CommandId::SubmitSm,
            Body::SubmitSmResp(_) => CommandId::SubmitSmResp,
            Body::DeliverSm(_) => CommandId::DeliverSm,
            Body::DeliverSmResp(_) => CommandId::DeliverSmResp,
            Body::GenericNack => CommandId::GenericNack,
            Body::Unknown { command_id, .. } => CommandId::from(*command_id),
        }
    }

    fn encode(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        match self {
            Body::BindTransmitter(b) | Body::BindReceiver(b) | Body::BindTransceiver(b) => {
                b.encode(buf)
            }
            Body::BindTransmitterResp(b)
            | Body::BindReceiverResp(b)
            | Body::BindTransceiverResp(b) => b.encode(buf),
            Body::Outbind(b) => b.encode(buf),
            Body::Unbind
            | Body::UnbindResp
            | Body::EnquireLink
            | Body::EnquireLinkResp
            | Body::GenericNack => Ok(()),
            Body::SubmitSm(b) => b.encode(buf),
            Body::SubmitSmResp(b) => b.encode(buf),
            Body::DeliverSm(b) => b.encode(buf),
            Body::DeliverSmResp(b) => b.encode(buf),
            Body::Unknown { body, .. } => {
                buf.put_slice(body);
                Ok(())
            }
        }
    }

    /// Decodes the body of a command. Octets after the last field of a body
    /// without optional parameters are ignored, as SMPP 3.4 asks of receivers.
    fn decode(command_id: CommandId, bytes: &[u8]) -> Result<Body, ProtocolError> {
        let mut r = Reader::new(bytes);
        let body = match command_id {
            CommandId::BindTransmitter => Body::BindTransmitter(Bind::decode(&mut r)?),
            CommandId::BindReceiver => Body::BindReceiver(Bind::decode(&mut r)?),
            CommandId::BindTransceiver => Body::BindTransceiver(Bind::decode(&mut r)?),
            CommandId::BindTransmitterResp => Body::BindTransmitterResp(BindResp::decode(&mut r)?),
            CommandId::BindReceiverResp => Body::BindReceiverResp(BindResp::decode(&mut r)?),
            CommandId::BindTransceiverResp => Body::BindTransceiverResp(BindResp::decode(&mut r)?),
            CommandId::Outbind => Body::Outbind(Outbind::decode(&mut r)?),
            CommandId::Unbind => Body::Unbind,
            CommandId::UnbindResp => Body::UnbindResp,
            CommandId::EnquireLink => Body::EnquireLink,
            CommandId::EnquireLinkResp => Body::EnquireLinkResp,
            CommandId::GenericNack => Body::GenericNack,
            CommandId::SubmitSm => Body::SubmitSm(Box::new(SubmitSm::decode(&mut r)?)),
            CommandId::SubmitSmResp => Body::SubmitSmResp(SubmitSmResp::decode(&mut r)?),
            CommandId::DeliverSm => Body::DeliverSm(Box::new(DeliverSm::decode(&mut r)?)),
            CommandId::DeliverSmResp => Body::DeliverSmResp(DeliverSmResp::decode(&mut r)?),
            CommandId::Other(command_id) => Body::Unknown {
                command_id,
                body: Bytes::copy_from_slice(r.remaining()),
            },
        };
        Ok(body)
    }
}

/// One PDU: the header fields that are not derived, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    /// Zero in requests; the outcome in responses.
    pub command_status: CommandStatus,
    /// Pairs a response with its request.
    pub sequence_number: u32,
    /// The command and its fields.
    pub body: Body,
}

impl Pdu {
    /// A request (command_status zero).
    pub fn request(sequence_number: u32, body: Body) -> Pdu {
        Pdu {
            command_status: CommandStatus::EsmeRok,
            sequence_number,
            body,
        }
    }

    /// A response with `status` to the request numbered `sequence_number`.
    pub fn response(sequence_number: u32, status: CommandStatus, body: Body) -> Pdu {
        Pdu {
            command_status: status,
            sequence_number,
            body,
        }
    }

    /// The command_id of this PDU.
    pub fn command_id(&self) -> CommandId {
        self.body.command_id()
    }

    /// Appends the encoded PDU to `buf`. On error `buf` is left as it was.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        encode_with(
            buf,
            self.command_id(),
            self.command_status,
            self.sequence_number,
            |b| self.body.encode(b),
        )
    }

    /// The encoded PDU as one buffer.
    pub fn to_bytes(&self) -> Result<Bytes, ProtocolError> {
        let mut buf = BytesMut::new();
        self.encode(&mut buf)?;
        Ok(buf.freeze())
    }
}

/// Encodes a submit_sm without moving it into a [`Body`].
pub(crate) fn encode_submit_sm(
    sequence_number: u32,
    sm: &SubmitSm,
    buf: &mut BytesMut,
) -> Result<(), ProtocolError> {
    encode_with(
        buf,
        CommandId::SubmitSm,
        CommandStatus::EsmeRok,
        sequence_number,
        |b| sm.encode(b),
    )
}

/// Writes a header, the body `encode_body` writes, then patches command_length.
fn encode_with(
    buf: &mut BytesMut,
    command_id: CommandId,
    command_status: CommandStatus,
    sequence_number: u32,
    encode_body: impl FnOnce(&mut BytesMut) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    let start = buf.len();
    buf.put_u32(0); // command_length, patched below
    buf.put_u32(u32::from(command_id));
    buf.put_u32(u32::from(command_status));
    buf.put_u32(sequence_number);
    if let Err(e) = encode_body(buf) {
        buf.truncate(start);
        return Err(e);
    }
    let length = buf.len() - start;
    match u32::try_from(length) {
        Ok(length) if length <= MAX_PDU_LEN => {
            buf[start..start + 4].copy_from_slice(&length.to_be_bytes());
            Ok(())
        }
        _ => {
            buf.truncate(start);
            Err(ProtocolError::CommandLengthTooLarge {
                length: u32::try_from(length).unwrap_or(u32::MAX),
                max: MAX_PDU_LEN,
            })
        }
    }
}

/// Takes one PDU off the front of `buf`.
///
/// - `Ok(None)`: `buf` holds less than one whole PDU; nothing was consumed.
/// - `Err(FrameError::Protocol(..))`: command_length is below 16 or above
///   [`MAX_PDU_LEN`]; nothing was consumed and the stream cannot be trusted
///   any more.
/// - `Err(FrameError::InvalidPdu { header, .. })`: the frame was well delimited
///   but its body does not decode; the frame was consumed, so the caller can
///   answer `header.sequence_number` with generic_nack and carry on.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Pdu>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if length < HEADER_LEN as u32 {
        return Err(ProtocolError::CommandLengthTooSmall { length }.into());
    }
    if length > MAX_PDU_LEN {
        return Err(ProtocolError::CommandLengthTooLarge {
            length,
            max: MAX_PDU_LEN,
        }
        .into());
    }
    let length = length as usize;
    if buf.len() < length {
        buf.reserve(length - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(length);
    let header = Header::parse(&frame);
    let mut body_bytes = frame;
    body_bytes.advance(HEADER_LEN);
    match Body::decode(header.command_id, &body_bytes) {
        Ok(body) => Ok(Some(Pdu {
            command_status: header.command_status,
            sequence_number: header.sequence_number,
            body,
        })),
        Err(source) => Err(FrameError::InvalidPdu { header, source }),
    }
}
