//! PDUs as log text that keeps the secrets out.
//!
//! [`Redacted`] writes a PDU's fields as `name=value` pairs for a debug
//! trace. It never writes a bind or outbind password, and never the octets
//! of short_message or message_payload (the message text, often with a
//! one-time code in it, and a delivery receipt's excerpt of that text): only
//! their length. Of the optional parameters only those that carry ids,
//! states and segment numbers show their value; any other shows its tag and
//! length. Strings are written escaped (`{:?}`), so an SMSC's bytes cannot
//! forge a log line.

use std::fmt;

use super::body::{Bind, DeliverSm, SubmitSm};
use super::tlv::{Tlv, tag};
use super::{Body, CommandId};

/// A PDU body in a form fit for a log line; see the module docs.
///
/// ```
/// use smpp::pdu::{Redacted, SubmitSm, data_coding};
///
/// let sm = SubmitSm::new("ACME", "9779851023212", data_coding::SMSC_DEFAULT, &b"Your code is 482193"[..]);
/// let line = Redacted::submit_sm(&sm).to_string();
/// assert!(line.contains("destination=1/1:\"9779851023212\""));
/// assert!(line.contains("sm_length=19"));
/// assert!(!line.contains("482193"));
/// ```
#[derive(Clone, Copy)]
pub struct Redacted<'a>(Kind<'a>);

#[derive(Clone, Copy)]
enum Kind<'a> {
    Body(&'a Body),
    SubmitSm(&'a SubmitSm),
}

impl<'a> Redacted<'a> {
    /// Any body.
    pub fn body(body: &'a Body) -> Self {
        Redacted(Kind::Body(body))
    }

    /// A submit_sm that is not (yet) wrapped in a [`Body`].
    pub fn submit_sm(sm: &'a SubmitSm) -> Self {
        Redacted(Kind::SubmitSm(sm))
    }
}

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = match self.0 {
            Kind::SubmitSm(sm) => return message(f, "submit_sm", Fields::from(sm)),
            Kind::Body(body) => body,
        };
        match body {
            Body::BindTransmitter(b) => bind(f, "bind_transmitter", b),
            Body::BindReceiver(b) => bind(f, "bind_receiver", b),
            Body::BindTransceiver(b) => bind(f, "bind_transceiver", b),
            Body::BindTransmitterResp(r)
            | Body::BindReceiverResp(r)
            | Body::BindTransceiverResp(r) => {
                write!(f, "{} system_id={:?}", name(body), r.system_id)?;
                tlvs(f, &r.tlvs)
            }
            Body::Outbind(o) => write!(f, "outbind system_id={:?}", o.system_id),
            Body::SubmitSm(sm) => message(f, "submit_sm", Fields::from(&**sm)),
            Body::DeliverSm(dm) => message(f, "deliver_sm", Fields::from(&**dm)),
            Body::SubmitSmResp(r) => write!(f, "submit_sm_resp message_id={:?}", r.message_id),
            Body::DeliverSmResp(r) => write!(f, "deliver_sm_resp message_id={:?}", r.message_id),
            Body::Unknown { command_id, body } => {
                write!(f, "command 0x{command_id:08x} body_length={}", body.len())
            }
            _ => f.write_str(name(body)),
        }
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn name(body: &Body) -> &'static str {
    let id: CommandId = body.command_id();
    id.spec_name().unwrap_or("unknown")
}

fn bind(f: &mut fmt::Formatter<'_>, name: &str, b: &Bind) -> fmt::Result {
    // The password is left out, not masked: even its length says something.
    write!(
        f,
        "{name} system_id={:?} system_type={:?} interface_version=0x{:02x} addr={}/{}:{:?}",
        b.system_id, b.system_type, b.interface_version, b.addr_ton, b.addr_npi, b.address_range
    )
}

/// The fields submit_sm and deliver_sm share, borrowed.
struct Fields<'a> {
    service_type: &'a str,
    source: (u8, u8, &'a str),
    destination: (u8, u8, &'a str),
    esm_class: u8,
    protocol_id: u8,
    priority_flag: u8,
    schedule_delivery_time: &'a str,
    validity_period: &'a str,
    registered_delivery: u8,
    data_coding: u8,
    sm_length: usize,
    tlvs: &'a [Tlv],
}

macro_rules! fields_from {
    ($ty:ty) => {
        impl<'a> From<&'a $ty> for Fields<'a> {
            fn from(m: &'a $ty) -> Self {
                Fields {
                    service_type: &m.service_type,
                    source: (m.source_addr_ton, m.source_addr_npi, &m.source_addr),
                    destination: (m.dest_addr_ton, m.dest_addr_npi, &m.destination_addr),
                    esm_class: m.esm_class,
                    protocol_id: m.protocol_id,
                    priority_flag: m.priority_flag,
                    schedule_delivery_time: &m.schedule_delivery_time,
                    validity_period: &m.validity_period,
                    registered_delivery: m.registered_delivery,
                    data_coding: m.data_coding,
                    sm_length: m.short_message.len(),
                    tlvs: &m.tlvs,
                }
            }
        }
    };
}

fields_from!(SubmitSm);
fields_from!(DeliverSm);

fn message(f: &mut fmt::Formatter<'_>, name: &str, m: Fields<'_>) -> fmt::Result {
    write!(
        f,
        "{name} service_type={:?} source={}/{}:{:?} destination={}/{}:{:?} esm_class=0x{:02x} \
         protocol_id={} priority_flag={} schedule_delivery_time={:?} validity_period={:?} \
         registered_delivery={} data_coding={} sm_length={}",
        m.service_type,
        m.source.0,
        m.source.1,
        m.source.2,
        m.destination.0,
        m.destination.1,
        m.destination.2,
        m.esm_class,
        m.protocol_id,
        m.priority_flag,
        m.schedule_delivery_time,
        m.validity_period,
        m.registered_delivery,
        m.data_coding,
        m.sm_length,
    )?;
    tlvs(f, m.tlvs)
}

fn tlvs(f: &mut fmt::Formatter<'_>, tlvs: &[Tlv]) -> fmt::Result {
    for tlv in tlvs {
        write!(f, " tlv_0x{:04x}", tlv.tag)?;
        match tlv.tag {
            tag::SAR_MSG_REF_NUM
            | tag::SAR_TOTAL_SEGMENTS
            | tag::SAR_SEGMENT_SEQNUM
            | tag::MESSAGE_STATE
            | tag::NETWORK_ERROR_CODE
            | tag::SC_INTERFACE_VERSION => {
                f.write_str("=")?;
                for b in tlv.value.iter() {
                    write!(f, "{b:02x}")?;
                }
            }
            tag::RECEIPTED_MESSAGE_ID => {
                let id = tlv.value.strip_suffix(&[0]).unwrap_or(&tlv.value);
                write!(f, "={:?}", String::from_utf8_lossy(id))?;
            }
            _ => write!(f, "(length {})", tlv.value.len())?,
        }
    }
    Ok(())
}
