//! Optional parameters (TLVs, SMPP 3.4 section 5.3).
//!
//! A [`Tlv`] keeps its value as raw octets so unknown tags survive a round
//! trip; constructors and accessors below give the typed view of the tags this
//! crate's users need.

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;
use super::wire::{Reader, latin1};

/// Tags of the optional parameters this crate gives helpers for.
pub mod tag {
    /// Reference number of a concatenated message (16-bit).
    pub const SAR_MSG_REF_NUM: u16 = 0x020C;
    /// Total number of parts of a concatenated message (8-bit).
    pub const SAR_TOTAL_SEGMENTS: u16 = 0x020E;
    /// 1-based number of this part (8-bit).
    pub const SAR_SEGMENT_SEQNUM: u16 = 0x020F;
    /// The whole message text, up to 64K octets, instead of short_message.
    pub const MESSAGE_PAYLOAD: u16 = 0x0424;
    /// The SMSC message id a delivery receipt refers to (C-octet string).
    pub const RECEIPTED_MESSAGE_ID: u16 = 0x001E;
    /// The final state of the message a receipt refers to (8-bit).
    pub const MESSAGE_STATE: u16 = 0x0427;
    /// Network type (8-bit) and network error code (16-bit) of a failure.
    pub const NETWORK_ERROR_CODE: u16 = 0x0423;
    /// The SMSC's interface version, sent in bind responses (8-bit).
    pub const SC_INTERFACE_VERSION: u16 = 0x0210;
}

/// Longest `receipted_message_id` value, NUL included.
const RECEIPTED_MESSAGE_ID_MAX: usize = 65;

/// One optional parameter: a 16-bit tag and its raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    /// The parameter tag.
    pub tag: u16,
    /// The value octets (the length is derived from them).
    pub value: Bytes,
}

/// The decoded `network_error_code` TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkErrorCode {
    /// 1 ANSI-136, 2 IS-95, 3 GSM, 4 reserved.
    pub network_type: u8,
    /// The network-specific error code.
    pub error_code: u16,
}

impl Tlv {
    /// A TLV with any tag and value.
    pub fn new(tag: u16, value: impl Into<Bytes>) -> Self {
        Tlv {
            tag,
            value: value.into(),
        }
    }

    /// `sar_msg_ref_num`: the reference shared by all parts of one message.
    pub fn sar_msg_ref_num(reference: u16) -> Self {
        Tlv::new(tag::SAR_MSG_REF_NUM, reference.to_be_bytes().to_vec())
    }

    /// `sar_total_segments`: how many parts the message has.
    pub fn sar_total_segments(total: u8) -> Self {
        Tlv::new(tag::SAR_TOTAL_SEGMENTS, vec![total])
    }

    /// `sar_segment_seqnum`: this part's 1-based number.
    pub fn sar_segment_seqnum(seqnum: u8) -> Self {
        Tlv::new(tag::SAR_SEGMENT_SEQNUM, vec![seqnum])
    }

    /// `message_payload`: the whole encoded message.
    pub fn message_payload(payload: impl Into<Bytes>) -> Self {
        Tlv::new(tag::MESSAGE_PAYLOAD, payload)
    }

    /// `receipted_message_id`: the SMSC's id of the message a receipt is for.
    pub fn receipted_message_id(id: &str) -> Result<Self, ProtocolError> {
        let mut value = BytesMut::new();
        super::wire::put_cstring(
            &mut value,
            "receipted_message_id",
            id,
            RECEIPTED_MESSAGE_ID_MAX,
        )?;
        Ok(Tlv::new(tag::RECEIPTED_MESSAGE_ID, value.freeze()))
    }

    /// `message_state`: the state a receipt reports (see
    /// [`crate::receipt::MessageState`]).
    pub fn message_state(state: u8) -> Self {
        Tlv::new(tag::MESSAGE_STATE, vec![state])
    }

    /// `network_error_code`: network type and error code.
    pub fn network_error_code(code: NetworkErrorCode) -> Self {
        let [hi, lo] = code.error_code.to_be_bytes();
        Tlv::new(tag::NETWORK_ERROR_CODE, vec![code.network_type, hi, lo])
    }

    /// The value as an 8-bit integer, if it is exactly one octet.
    pub fn as_u8(&self) -> Option<u8> {
        match self.value.as_ref() {
            [b] => Some(*b),
            _ => None,
        }
    }

    /// The value as a 16-bit big-endian integer, if it is exactly two octets.
    pub fn as_u16(&self) -> Option<u16> {
        match self.value.as_ref() {
            [hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }

    /// The value as a C-octet string. Tolerates a missing NUL, which some
    /// SMSCs leave out of `receipted_message_id`.
    pub fn as_cstring(&self) -> String {
        let raw = self.value.as_ref();
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        latin1(&raw[..end])
    }

    /// The value as a `network_error_code`, if it is exactly three octets.
    pub fn as_network_error_code(&self) -> Option<NetworkErrorCode> {
        match self.value.as_ref() {
            [network_type, hi, lo] => Some(NetworkErrorCode {
                network_type: *network_type,
                error_code: u16::from_be_bytes([*hi, *lo]),
            }),
            _ => None,
        }
    }
}

/// The first TLV with `tag`, if any.
pub fn find(tlvs: &[Tlv], tag: u16) -> Option<&Tlv> {
    tlvs.iter().find(|t| t.tag == tag)
}

pub(crate) fn put_tlvs(buf: &mut BytesMut, tlvs: &[Tlv]) -> Result<(), ProtocolError> {
    for tlv in tlvs {
        let len = u16::try_from(tlv.value.len()).map_err(|_| ProtocolError::TlvTooLong {
            tag: tlv.tag,
            len: tlv.value.len(),
        })?;
        buf.put_u16(tlv.tag);
        buf.put_u16(len);
        buf.put_slice(&tlv.value);
    }
    Ok(())
}

/// Reads TLVs until the body ends.
pub(crate) fn read_tlvs(reader: &mut Reader<'_>) -> Result<Vec<Tlv>, ProtocolError> {
    let mut tlvs = Vec::new();
    while !reader.is_empty() {
        let tag = reader
            .u16("tlv tag")
            .map_err(|_| ProtocolError::TlvTruncated { tag: 0 })?;
        let len = reader
            .u16("tlv length")
            .map_err(|_| ProtocolError::TlvTruncated { tag })?;
        let value = reader
            .take(usize::from(len), "tlv value")
            .map_err(|_| ProtocolError::TlvTruncated { tag })?;
        tlvs.push(Tlv {
            tag,
            value: Bytes::copy_from_slice(value),
        });
    }
    Ok(tlvs)
}
