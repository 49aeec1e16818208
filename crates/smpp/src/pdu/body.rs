//! PDU bodies, field for field in the order of SMPP 3.4 section 4.
//!
//! Each body has an `encode` writing exactly the octets after the header and
//! a `decode` reading them back; C-octet string limits (NUL included) are the
//! spec's and are enforced both ways.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;
use super::tlv::{self, Tlv, put_tlvs, read_tlvs};
use super::wire::{Reader, put_cstring, put_short_message};

/// Type of Number values (SMPP 3.4 section 5.2.5).
pub mod ton {
    /// Unknown.
    pub const UNKNOWN: u8 = 0x00;
    /// International (E.164 without the leading `+`).
    pub const INTERNATIONAL: u8 = 0x01;
    /// National.
    pub const NATIONAL: u8 = 0x02;
    /// Network specific (short codes on many networks).
    pub const NETWORK_SPECIFIC: u8 = 0x03;
    /// Subscriber number.
    pub const SUBSCRIBER: u8 = 0x04;
    /// Alphanumeric sender id.
    pub const ALPHANUMERIC: u8 = 0x05;
    /// Abbreviated.
    pub const ABBREVIATED: u8 = 0x06;
}

/// Numbering Plan Indicator values (SMPP 3.4 section 5.2.6).
pub mod npi {
    /// Unknown.
    pub const UNKNOWN: u8 = 0x00;
    /// ISDN (E.163/E.164).
    pub const ISDN: u8 = 0x01;
    /// National.
    pub const NATIONAL: u8 = 0x08;
}

/// esm_class bits (SMPP 3.4 section 5.2.12).
pub mod esm_class {
    /// The short_message begins with a User Data Header.
    pub const UDHI: u8 = 0x40;
    /// Mask of the message type bits in a deliver_sm.
    pub const MESSAGE_TYPE_MASK: u8 = 0x3C;
    /// deliver_sm message type: SMSC delivery receipt.
    pub const SMSC_DELIVERY_RECEIPT: u8 = 0x04;
    /// deliver_sm message type: SME delivery acknowledgement.
    pub const SME_DELIVERY_ACK: u8 = 0x08;
    /// deliver_sm message type: intermediate delivery notification.
    pub const INTERMEDIATE_NOTIFICATION: u8 = 0x20;
}

/// registered_delivery values (SMPP 3.4 section 5.2.17).
pub mod registered_delivery {
    /// No receipt.
    pub const NONE: u8 = 0x00;
    /// A receipt on final success or failure.
    pub const ALWAYS: u8 = 0x01;
    /// A receipt on failure only.
    pub const ON_FAILURE: u8 = 0x02;
}

/// data_coding values this crate's users pass (SMPP 3.4 section 5.2.19).
pub mod data_coding {
    /// SMSC default alphabet (GSM 03.38, one septet per octet, unpacked).
    pub const SMSC_DEFAULT: u8 = 0x00;
    /// Latin-1.
    pub const LATIN1: u8 = 0x03;
    /// UCS-2, big-endian.
    pub const UCS2: u8 = 0x08;
}

const SYSTEM_ID_MAX: usize = 16;
const PASSWORD_MAX: usize = 9;
const SYSTEM_TYPE_MAX: usize = 13;
const ADDRESS_RANGE_MAX: usize = 41;
const SERVICE_TYPE_MAX: usize = 6;
const ADDR_MAX: usize = 21;
const TIME_MAX: usize = 17;
const MESSAGE_ID_MAX: usize = 65;

/// Which way messages flow on a bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Submit and receive on one connection (bind_transceiver).
    #[default]
    Transceiver,
    /// Submit only (bind_transmitter).
    Transmitter,
    /// Receive only (bind_receiver).
    Receiver,
}

/// bind_transmitter, bind_receiver and bind_transceiver share this body.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bind {
    /// The ESME's identity at the SMSC (max 15 characters).
    pub system_id: String,
    /// The ESME's password (max 8 characters).
    pub password: String,
    /// The type of ESME, often empty (max 12 characters).
    pub system_type: String,
    /// 0x34 for SMPP 3.4.
    pub interface_version: u8,
    /// TON of the addresses this ESME serves (receivers).
    pub addr_ton: u8,
    /// NPI of the addresses this ESME serves.
    pub addr_npi: u8,
    /// Addresses this ESME serves, often empty (max 40 characters).
    pub address_range: String,
}

// The password must never reach a log line.
impl fmt::Debug for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bind")
            .field("system_id", &self.system_id)
            .field("password", &"[redacted]")
            .field("system_type", &self.system_type)
            .field("interface_version", &self.interface_version)
            .field("addr_ton", &self.addr_ton)
            .field("addr_npi", &self.addr_npi)
            .field("address_range", &self.address_range)
            .finish()
    }
}

impl Bind {
    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        put_cstring(buf, "system_id", &self.system_id, SYSTEM_ID_MAX)?;
        put_cstring(buf, "password", &self.password, PASSWORD_MAX)?;
        put_cstring(buf, "system_type", &self.system_type, SYSTEM_TYPE_MAX)?;
        buf.put_u8(self.interface_version);
        buf.put_u8(self.addr_ton);
        buf.put_u8(self.addr_npi);
        put_cstring(buf, "address_range", &self.address_range, ADDRESS_RANGE_MAX)
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Bind {
            system_id: r.cstring("system_id", SYSTEM_ID_MAX)?,
            password: r.cstring("password", PASSWORD_MAX)?,
            system_type: r.cstring("system_type", SYSTEM_TYPE_MAX)?,
            interface_version: r.u8("interface_version")?,
            addr_ton: r.u8("addr_ton")?,
            addr_npi: r.u8("addr_npi")?,
            address_range: r.cstring("address_range", ADDRESS_RANGE_MAX)?,
        })
    }
}

/// The body of the three bind responses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindResp {
    /// The SMSC's identity (may be absent when the bind failed).
    pub system_id: String,
    /// Optional parameters, usually `sc_interface_version`.
    pub tlvs: Vec<Tlv>,
}

impl BindResp {
    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        put_cstring(buf, "system_id", &self.system_id, SYSTEM_ID_MAX)?;
        put_tlvs(buf, &self.tlvs)
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let system_id = r.cstring_or_empty("system_id", SYSTEM_ID_MAX)?;
        let tlvs = read_tlvs(r)?;
        Ok(BindResp { system_id, tlvs })
    }
}

/// outbind: the SMSC asks the ESME to bind as a receiver.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Outbind {
    /// The SMSC's identity.
    pub system_id: String,
    /// The password the SMSC presents.
    pub password: String,
}

impl fmt::Debug for Outbind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbind")
            .field("system_id", &self.system_id)
            .field("password", &"[redacted]")
            .finish()
    }
}

impl Outbind {
    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        put_cstring(buf, "system_id", &self.system_id, SYSTEM_ID_MAX)?;
        put_cstring(buf, "password", &self.password, PASSWORD_MAX)
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Outbind {
            system_id: r.cstring("system_id", SYSTEM_ID_MAX)?,
            password: r.cstring("password", PASSWORD_MAX)?,
        })
    }
}

// submit_sm and deliver_sm have the same body layout (sections 4.4.1, 4.6.1).
macro_rules! short_message_body {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            /// service_type, usually empty (max 5 characters).
            pub service_type: String,
            /// TON of source_addr.
            pub source_addr_ton: u8,
            /// NPI of source_addr.
            pub source_addr_npi: u8,
            /// The sender (max 20 characters).
            pub source_addr: String,
            /// TON of destination_addr.
            pub dest_addr_ton: u8,
            /// NPI of destination_addr.
            pub dest_addr_npi: u8,
            /// The recipient (max 20 characters).
            pub destination_addr: String,
            /// Message mode and type, UDH indicator (see [`esm_class`]).
            pub esm_class: u8,
            /// GSM protocol id.
            pub protocol_id: u8,
            /// Priority level.
            pub priority_flag: u8,
            /// Empty for immediate delivery, else a 16-character SMPP time.
            pub schedule_delivery_time: String,
            /// Empty for the SMSC default, else a 16-character SMPP time.
            pub validity_period: String,
            /// Which receipts to send back (see [`registered_delivery`]).
            pub registered_delivery: u8,
            /// Replace an earlier message from the same source to the same destination.
            pub replace_if_present_flag: u8,
            /// Encoding of short_message (see [`data_coding`]).
            pub data_coding: u8,
            /// Index of a canned message, usually 0.
            pub sm_default_msg_id: u8,
            /// Up to 254 octets of user data (sm_length is derived from it).
            pub short_message: Bytes,
            /// Optional parameters.
            pub tlvs: Vec<Tlv>,
        }

        impl $name {
            pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
                put_cstring(buf, "service_type", &self.service_type, SERVICE_TYPE_MAX)?;
                buf.put_u8(self.source_addr_ton);
                buf.put_u8(self.source_addr_npi);
                put_cstring(buf, "source_addr", &self.source_addr, ADDR_MAX)?;
                buf.put_u8(self.dest_addr_ton);
                buf.put_u8(self.dest_addr_npi);
                put_cstring(buf, "destination_addr", &self.destination_addr, ADDR_MAX)?;
                buf.put_u8(self.esm_class);
                buf.put_u8(self.protocol_id);
                buf.put_u8(self.priority_flag);
                put_cstring(buf, "schedule_delivery_time", &self.schedule_delivery_time, TIME_MAX)?;
                put_cstring(buf, "validity_period", &self.validity_period, TIME_MAX)?;
                buf.put_u8(self.registered_delivery);
                buf.put_u8(self.replace_if_present_flag);
                buf.put_u8(self.data_coding);
                buf.put_u8(self.sm_default_msg_id);
                put_short_message(buf, &self.short_message)?;
                put_tlvs(buf, &self.tlvs)
            }

            pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
                Ok($name {
                    service_type: r.cstring("service_type", SERVICE_TYPE_MAX)?,
                    source_addr_ton: r.u8("source_addr_ton")?,
                    source_addr_npi: r.u8("source_addr_npi")?,
                    source_addr: r.cstring("source_addr", ADDR_MAX)?,
                    dest_addr_ton: r.u8("dest_addr_ton")?,
                    dest_addr_npi: r.u8("dest_addr_npi")?,
                    destination_addr: r.cstring("destination_addr", ADDR_MAX)?,
                    esm_class: r.u8("esm_class")?,
                    protocol_id: r.u8("protocol_id")?,
                    priority_flag: r.u8("priority_flag")?,
                    schedule_delivery_time: r.cstring("schedule_delivery_time", TIME_MAX)?,
                    validity_period: r.cstring("validity_period", TIME_MAX)?,
                    registered_delivery: r.u8("registered_delivery")?,
                    replace_if_present_flag: r.u8("replace_if_present_flag")?,
                    data_coding: r.u8("data_coding")?,
                    sm_default_msg_id: r.u8("sm_default_msg_id")?,
                    short_message: {
                        let len = r.u8("sm_length")?;
                        Bytes::copy_from_slice(r.take(usize::from(len), "short_message")?)
                    },
                    tlvs: read_tlvs(r)?,
                })
            }

            /// The first optional parameter with `tag`, if present.
            pub fn tlv(&self, tag: u16) -> Option<&Tlv> {
                tlv::find(&self.tlvs, tag)
            }
        }
    };
}

short_message_body! {
    /// submit_sm: the ESME hands one short message to the SMSC.
    SubmitSm
}

short_message_body! {
    /// deliver_sm: the SMSC hands the ESME a delivery receipt or a
    /// mobile-originated message.
    DeliverSm
}

impl SubmitSm {
    /// A submit_sm from `source` to `destination` carrying `short_message`
    /// encoded as `data_coding`, asking for a delivery receipt.
    ///
    /// Address TON/NPI default from the text: an all-digit source longer than
    /// 8 digits (optionally with a leading `+`, which is stripped) is
    /// international/ISDN, a shorter all-digit one a network-specific short
    /// code, anything else alphanumeric; the destination is international/ISDN.
    /// Every field stays public for callers who know better.
    pub fn new(
        source: &str,
        destination: &str,
        data_coding: u8,
        short_message: impl Into<Bytes>,
    ) -> Self {
        let (source_addr_ton, source_addr_npi, source_addr) = source_address(source);
        SubmitSm {
            source_addr_ton,
            source_addr_npi,
            source_addr,
            dest_addr_ton: ton::INTERNATIONAL,
            dest_addr_npi: npi::ISDN,
            destination_addr: destination.trim_start_matches('+').to_owned(),
            registered_delivery: registered_delivery::ALWAYS,
            data_coding,
            short_message: short_message.into(),
            ..SubmitSm::default()
        }
    }
}

fn source_address(source: &str) -> (u8, u8, String) {
    let digits = source.strip_prefix('+').unwrap_or(source);
    let numeric = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    match (numeric, digits.len()) {
        (true, len) if len > 8 => (ton::INTERNATIONAL, npi::ISDN, digits.to_owned()),
        (true, _) => (ton::NETWORK_SPECIFIC, npi::UNKNOWN, digits.to_owned()),
        (false, _) => (ton::ALPHANUMERIC, npi::UNKNOWN, source.to_owned()),
    }
}

impl DeliverSm {
    /// True when esm_class marks this deliver_sm as a delivery receipt or
    /// delivery notification rather than a mobile-originated message.
    pub fn is_receipt(&self) -> bool {
        self.esm_class & esm_class::MESSAGE_TYPE_MASK != 0
    }
}

macro_rules! message_id_resp {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            /// The message id (max 64 characters; absent when the status is an error).
            pub message_id: String,
        }

        impl $name {
            pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
                put_cstring(buf, "message_id", &self.message_id, MESSAGE_ID_MAX)
            }

            pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
                Ok($name {
                    message_id: r.cstring_or_empty("message_id", MESSAGE_ID_MAX)?,
                })
            }
        }
    };
}

message_id_resp! {
    /// submit_sm_resp: the SMSC's id for the submitted message.
    SubmitSmResp
}

message_id_resp! {
    /// deliver_sm_resp: message_id is unused and normally empty.
    DeliverSmResp
}
