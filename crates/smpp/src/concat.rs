//! Long messages: turning already-split, already-encoded parts into the
//! submit_sm PDUs that carry them.
//!
//! Splitting text into parts (153 GSM septets or 67 UCS-2 units each when a
//! UDH is used) is the caller's business, as is choosing data_coding; this
//! module only frames the parts the way the SMSC expects:
//!
//! - [`Concatenation::Udh8`] / [`Concatenation::Udh16`]: each part's
//!   short_message starts with a User Data Header (IEI 0x00 with an 8-bit
//!   reference, or IEI 0x08 with a 16-bit one) and esm_class has UDHI (0x40).
//! - [`Concatenation::Sar`]: each part carries the `sar_msg_ref_num`,
//!   `sar_total_segments` and `sar_segment_seqnum` TLVs.
//! - [`Concatenation::MessagePayload`]: one submit_sm with the joined parts
//!   in a `message_payload` TLV; the SMSC splits.
//!
//! A single part is sent as a plain short_message whatever the method, so
//! the number of PDUs always equals the number of parts charged.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::pdu::{MAX_SHORT_MESSAGE_LEN, SubmitSm, Tlv, esm_class};

/// How the parts of a long message are tied together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concatenation {
    /// UDH with IEI 0x00 (8-bit reference): 6 octets of header per part.
    Udh8 {
        /// The reference shared by all parts; vary it per message.
        reference: u8,
    },
    /// UDH with IEI 0x08 (16-bit reference): 7 octets of header per part.
    Udh16 {
        /// The reference shared by all parts.
        reference: u16,
    },
    /// SAR TLVs with a 16-bit reference.
    Sar {
        /// The reference shared by all parts.
        reference: u16,
    },
    /// One submit_sm with a `message_payload` TLV holding every part.
    MessagePayload,
}

/// The submit_sm PDUs for `parts`, copying every other field from
/// `template` (its short_message and any SAR / message_payload TLVs are
/// replaced).
///
/// Fails with [`Error::InvalidParts`] for no parts, more than 255, or a part
/// that with its header would not fit short_message's 254 octets.
pub fn build_submits(
    template: &SubmitSm,
    parts: &[Bytes],
    method: Concatenation,
) -> Result<Vec<SubmitSm>, Error> {
    if parts.is_empty() {
        return Err(Error::InvalidParts("no parts"));
    }
    let total =
        u8::try_from(parts.len()).map_err(|_| Error::InvalidParts("more than 255 parts"))?;

    let mut base = template.clone();
    base.tlvs.retain(|t| {
        !matches!(
            t.tag,
            crate::pdu::tlv::tag::SAR_MSG_REF_NUM
                | crate::pdu::tlv::tag::SAR_TOTAL_SEGMENTS
                | crate::pdu::tlv::tag::SAR_SEGMENT_SEQNUM
                | crate::pdu::tlv::tag::MESSAGE_PAYLOAD
        )
    });
    base.short_message = Bytes::new();

    if total == 1 {
        let part = parts[0].clone();
        let mut one = base;
        if part.len() <= MAX_SHORT_MESSAGE_LEN {
            one.short_message = part;
        } else if method == Concatenation::MessagePayload {
            one.tlvs.push(Tlv::message_payload(part));
        } else {
            return Err(Error::InvalidParts("a part is longer than 254 octets"));
        }
        return Ok(vec![one]);
    }

    match method {
        Concatenation::MessagePayload => {
            let mut joined = BytesMut::new();
            for part in parts {
                joined.put_slice(part);
            }
            if joined.len() > usize::from(u16::MAX) {
                return Err(Error::InvalidParts(
                    "message_payload longer than 65535 octets",
                ));
            }
            let mut one = base;
            one.tlvs.push(Tlv::message_payload(joined.freeze()));
            Ok(vec![one])
        }
        Concatenation::Sar { reference } => parts
            .iter()
            .zip(1..=total)
            .map(|(part, seqnum)| {
                if part.len() > MAX_SHORT_MESSAGE_LEN {
                    return Err(Error::InvalidParts("a part is longer than 254 octets"));
                }
                let mut pdu = base.clone();
                pdu.short_message = part.clone();
                pdu.tlvs.push(Tlv::sar_msg_ref_num(reference));
                pdu.tlvs.push(Tlv::sar_total_segments(total));
                pdu.tlvs.push(Tlv::sar_segment_seqnum(seqnum));
                Ok(pdu)
            })
            .collect(),
        Concatenation::Udh8 { reference } => with_udh(&base, parts, |seqnum| {
            vec![0x05, 0x00, 0x03, reference, total, seqnum]
        }),
        Concatenation::Udh16 { reference } => with_udh(&base, parts, |seqnum| {
            let [hi, lo] = reference.to_be_bytes();
            vec![0x06, 0x08, 0x04, hi, lo, total, seqnum]
        }),
    }
}

/// One submit_sm per part, each short_message prefixed with `udh(seqnum)`.
fn with_udh(
    base: &SubmitSm,
    parts: &[Bytes],
    udh: impl Fn(u8) -> Vec<u8>,
) -> Result<Vec<SubmitSm>, Error> {
    parts
        .iter()
        .zip(1..=u8::MAX)
        .map(|(part, seqnum)| {
            let header = udh(seqnum);
            if header.len() + part.len() > MAX_SHORT_MESSAGE_LEN {
                return Err(Error::InvalidParts(
                    "a part with its UDH is longer than 254 octets",
                ));
            }
            let mut sm = BytesMut::with_capacity(header.len() + part.len());
            sm.put_slice(&header);
            sm.put_slice(part);
            let mut pdu = base.clone();
            pdu.esm_class |= esm_class::UDHI;
            pdu.short_message = sm.freeze();
            Ok(pdu)
        })
        .collect()
}
