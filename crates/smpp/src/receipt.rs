//! Delivery receipts: parsing them and matching their ids to submissions.
//!
//! An SMSC reports the fate of a message in a deliver_sm whose esm_class
//! marks it as a receipt. The de facto text form (SMPP 3.4 appendix B) is
//!
//! ```text
//! id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:...
//! ```
//!
//! and many SMSCs add the `receipted_message_id` and `message_state` TLVs.
//! [`parse_text`] reads the text form leniently (any case, missing fields,
//! extra spaces, `submit_date` spellings, seconds in dates); [`from_deliver_sm`]
//! combines the text and the TLVs, TLVs winning where both are present.
//!
//! SMSCs do not agree on how to spell an id: one may answer submit_sm with
//! `0000002a` (hex) and report `0000000042` (the same number in decimal) in
//! the receipt. [`ids`] holds the one rule that ties the two.

pub mod ids;

use std::fmt;

pub use ids::{IdFormat, MessageIdIndex, ids_match};

use crate::pdu::tlv::{self, NetworkErrorCode};
use crate::pdu::{DeliverSm, data_coding};

/// The state of a message as a receipt reports it (SMPP 3.4 section 5.2.28).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// In transit (`ENROUTE`, 1).
    Enroute,
    /// Delivered to the handset (`DELIVRD`, 2).
    Delivered,
    /// Validity period ran out (`EXPIRED`, 3).
    Expired,
    /// Deleted (`DELETED`, 4).
    Deleted,
    /// Cannot be delivered (`UNDELIV`, 5).
    Undeliverable,
    /// Accepted on behalf of the subscriber (`ACCEPTD`, 6).
    Accepted,
    /// The SMSC does not know (`UNKNOWN`, 7).
    Unknown,
    /// Rejected (`REJECTD`, 8).
    Rejected,
}

impl MessageState {
    /// From the `message_state` TLV value.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => MessageState::Enroute,
            2 => MessageState::Delivered,
            3 => MessageState::Expired,
            4 => MessageState::Deleted,
            5 => MessageState::Undeliverable,
            6 => MessageState::Accepted,
            7 => MessageState::Unknown,
            8 => MessageState::Rejected,
            _ => return None,
        })
    }

    /// The `message_state` TLV value.
    pub fn as_u8(self) -> u8 {
        match self {
            MessageState::Enroute => 1,
            MessageState::Delivered => 2,
            MessageState::Expired => 3,
            MessageState::Deleted => 4,
            MessageState::Undeliverable => 5,
            MessageState::Accepted => 6,
            MessageState::Unknown => 7,
            MessageState::Rejected => 8,
        }
    }

    /// From the `stat:` word of a text receipt, any case. Besides the seven
    /// letter spec words, accepts the spelled-out forms some SMSCs use
    /// (`DELIVERED`, `UNDELIVERABLE`, `FAILED`, `REJECTED`...).
    pub fn from_stat(stat: &str) -> Option<Self> {
        let stat = stat.trim().to_ascii_uppercase();
        Some(match stat.as_str() {
            "DELIVRD" | "DELIVERED" | "DELIVER" => MessageState::Delivered,
            "EXPIRED" => MessageState::Expired,
            "DELETED" => MessageState::Deleted,
            "UNDELIV" | "UNDELIVERABLE" | "UNDELIVERED" | "FAILED" | "FAIL" => {
                MessageState::Undeliverable
            }
            "ACCEPTD" | "ACCEPTED" => MessageState::Accepted,
            "UNKNOWN" => MessageState::Unknown,
            "REJECTD" | "REJECTED" => MessageState::Rejected,
            "ENROUTE" => MessageState::Enroute,
            _ => return None,
        })
    }

    /// The seven-letter word of the text form.
    pub fn as_stat(self) -> &'static str {
        match self {
            MessageState::Enroute => "ENROUTE",
            MessageState::Delivered => "DELIVRD",
            MessageState::Expired => "EXPIRED",
            MessageState::Deleted => "DELETED",
            MessageState::Undeliverable => "UNDELIV",
            MessageState::Accepted => "ACCEPTD",
            MessageState::Unknown => "UNKNOWN",
            MessageState::Rejected => "REJECTD",
        }
    }

    /// True for states after which no further receipt is expected.
    pub fn is_final(self) -> bool {
        !matches!(self, MessageState::Enroute)
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_stat())
    }
}

/// A receipt timestamp as the SMSC wrote it (`YYMMDDhhmm[ss]`), in the
/// SMSC's local time: the text form carries no zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReceiptTime {
    /// Four-digit year (two-digit years are taken as 20YY).
    pub year: u16,
    /// 1-12.
    pub month: u8,
    /// 1-31.
    pub day: u8,
    /// 0-23.
    pub hour: u8,
    /// 0-59.
    pub minute: u8,
    /// 0-59, zero when the SMSC leaves seconds out.
    pub second: u8,
}

impl ReceiptTime {
    /// Parses `YYMMDDhhmm` or `YYMMDDhhmmss`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if !(text.len() == 10 || text.len() == 12) || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let two =
            |i: usize| -> u8 { (text.as_bytes()[i] - b'0') * 10 + (text.as_bytes()[i + 1] - b'0') };
        let time = ReceiptTime {
            year: 2000 + u16::from(two(0)),
            month: two(2),
            day: two(4),
            hour: two(6),
            minute: two(8),
            second: if text.len() == 12 { two(10) } else { 0 },
        };
        let valid = (1..=12).contains(&time.month)
            && (1..=31).contains(&time.day)
            && time.hour < 24
            && time.minute < 60
            && time.second < 60;
        valid.then_some(time)
    }
}

/// What a delivery receipt says. Every field is optional because real SMSCs
/// leave any of them out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The SMSC message id the receipt is for.
    pub message_id: Option<String>,
    /// The state, from `message_state` or `stat:`.
    pub state: Option<MessageState>,
    /// The raw `stat:` word, kept for states this crate does not know.
    pub stat: Option<String>,
    /// The raw `err:` value (often three digits, `000` for none).
    pub error: Option<String>,
    /// Number of messages originally submitted (`sub:`).
    pub submitted: Option<u32>,
    /// Number delivered (`dlvrd:`).
    pub delivered: Option<u32>,
    /// When the message was submitted.
    pub submit_date: Option<ReceiptTime>,
    /// When it reached its final state.
    pub done_date: Option<ReceiptTime>,
    /// The first characters of the message (`text:`).
    pub text: Option<String>,
    /// The `network_error_code` TLV.
    pub network_error: Option<NetworkErrorCode>,
}

impl Receipt {
    /// `err:` as a number, when it is one.
    pub fn error_code(&self) -> Option<u32> {
        self.error.as_deref().and_then(|e| e.trim().parse().ok())
    }
}

/// Why a deliver_sm could not be read as a receipt.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Neither the text nor the TLVs carry a message id.
    #[error("the receipt carries no message id")]
    MissingId,
    /// Neither the text nor the TLVs carry a state.
    #[error("the receipt carries no recognisable state")]
    MissingState,
}

/// The fields of the text form, in the order SMSCs write them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Id,
    Sub,
    Dlvrd,
    SubmitDate,
    DoneDate,
    Stat,
    Err,
    Text,
}

/// Key spellings; a space in a pattern matches any run of spaces or `_`.
const KEYS: &[(&str, Key)] = &[
    ("id", Key::Id),
    ("sub", Key::Sub),
    ("dlvrd", Key::Dlvrd),
    ("submit date", Key::SubmitDate),
    ("submitdate", Key::SubmitDate),
    ("done date", Key::DoneDate),
    ("donedate", Key::DoneDate),
    ("stat", Key::Stat),
    ("err", Key::Err),
    ("text", Key::Text),
];

/// If a key followed by `:` starts at `at`, its kind and where its value starts.
fn key_at(text: &[u8], at: usize) -> Option<(Key, usize)> {
    'patterns: for (pattern, key) in KEYS {
        let mut i = at;
        for &p in pattern.as_bytes() {
            if p == b' ' {
                let start = i;
                while i < text.len() && (text[i] == b' ' || text[i] == b'_') {
                    i += 1;
                }
                if i == start {
                    continue 'patterns;
                }
            } else if i < text.len() && text[i].eq_ignore_ascii_case(&p) {
                i += 1;
            } else {
                continue 'patterns;
            }
        }
        while i < text.len() && text[i] == b' ' {
            i += 1;
        }
        if i < text.len() && text[i] == b':' {
            return Some((*key, i + 1));
        }
    }
    None
}

/// Parses the text form of a receipt. Unknown words are skipped, missing
/// fields stay `None`; everything after `text:` is the text.
pub fn parse_text(body: &str) -> Receipt {
    let bytes = body.as_bytes();
    // (key, key start, value start)
    let mut found: Vec<(Key, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_boundary = i == 0 || bytes[i - 1].is_ascii_whitespace();
        if at_boundary && let Some((key, value_start)) = key_at(bytes, i) {
            found.push((key, i, value_start));
            if key == Key::Text {
                break;
            }
            i = value_start;
            continue;
        }
        i += 1;
    }

    let mut receipt = Receipt::default();
    for (n, &(key, _, value_start)) in found.iter().enumerate() {
        let value_end = found.get(n + 1).map_or(bytes.len(), |next| next.1);
        let raw = &body[value_start..value_end];
        // Some SMSCs leave the C-string terminator in the text.
        let value = raw.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        let nonempty = (!value.is_empty()).then(|| value.to_owned());
        match key {
            Key::Id => receipt.message_id = nonempty,
            Key::Sub => receipt.submitted = value.parse().ok(),
            Key::Dlvrd => receipt.delivered = value.parse().ok(),
            Key::SubmitDate => receipt.submit_date = ReceiptTime::parse(value),
            Key::DoneDate => receipt.done_date = ReceiptTime::parse(value),
            Key::Stat => {
                receipt.state = MessageState::from_stat(value);
                receipt.stat = nonempty;
            }
            Key::Err => receipt.error = nonempty,
            Key::Text => receipt.text = Some(raw.strip_prefix(' ').unwrap_or(raw).to_owned()),
        }
    }
    receipt
}

/// Reads the receipt a deliver_sm carries, from its TLVs
/// (`receipted_message_id`, `message_state`, `network_error_code`) and its
/// text (short_message, or `message_payload` when short_message is empty).
/// TLV values win over the text's where both are present.
pub fn from_deliver_sm(pdu: &DeliverSm) -> Result<Receipt, ReceiptError> {
    let mut receipt = parse_text(&receipt_text(pdu));

    if let Some(id) = pdu.tlv(tlv::tag::RECEIPTED_MESSAGE_ID) {
        let id = id.as_cstring();
        if !id.trim().is_empty() {
            receipt.message_id = Some(id.trim().to_owned());
        }
    }
    if let Some(state) = pdu
        .tlv(tlv::tag::MESSAGE_STATE)
        .and_then(|t| t.as_u8())
        .and_then(MessageState::from_u8)
    {
        receipt.state = Some(state);
    }
    receipt.network_error = pdu
        .tlv(tlv::tag::NETWORK_ERROR_CODE)
        .and_then(|t| t.as_network_error_code());

    if receipt.message_id.is_none() {
        return Err(ReceiptError::MissingId);
    }
    if receipt.state.is_none() {
        return Err(ReceiptError::MissingState);
    }
    Ok(receipt)
}

/// The text of a deliver_sm as a receipt reads it: short_message, or
/// `message_payload` when short_message is empty; Latin-1, or UCS-2 when
/// data_coding says so.
pub fn receipt_text(pdu: &DeliverSm) -> String {
    let raw = if pdu.short_message.is_empty() {
        pdu.tlv(tlv::tag::MESSAGE_PAYLOAD)
            .map(|t| t.value.clone())
            .unwrap_or_default()
    } else {
        pdu.short_message.clone()
    };
    decode_receipt_text(pdu.data_coding, &raw)
}

/// A receipt's text without its `text:` field, the first characters of the
/// message it reports on (which may hold a one-time code): what may be kept
/// or shown to an operator. Everything before the field is kept as it came.
pub fn without_message_excerpt(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let start = lower
        .match_indices("text:")
        .map(|(i, _)| i)
        .find(|&i| i == 0 || !lower.as_bytes()[i - 1].is_ascii_alphanumeric());
    match start {
        Some(i) => format!("{}text:[removed]", &text[..i]),
        None => text.to_owned(),
    }
}

/// Receipt text is ASCII in practice; UCS-2 receipts exist, so honour it.
fn decode_receipt_text(coding: u8, raw: &[u8]) -> String {
    if coding == data_coding::UCS2 && raw.len().is_multiple_of(2) {
        let units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        raw.iter().map(|&b| char::from(b)).collect()
    }
}
