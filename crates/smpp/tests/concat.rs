//! Long-message helpers: UDH, SAR and message_payload framing of given parts.

use bytes::Bytes;
use smpp::Error;
use smpp::concat::{Concatenation, build_submits};
use smpp::pdu::{SubmitSm, data_coding, esm_class, tlv};

fn template() -> SubmitSm {
    SubmitSm::new("Brand", "9779841234567", data_coding::UCS2, Bytes::new())
}

fn parts() -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"part one "),
        Bytes::from_static(b"part two "),
        Bytes::from_static(b"end"),
    ]
}

#[test]
fn udh8_prefixes_each_part_and_sets_udhi() {
    let pdus = build_submits(
        &template(),
        &parts(),
        Concatenation::Udh8 { reference: 0xAB },
    )
    .unwrap();
    assert_eq!(pdus.len(), 3);
    for (i, pdu) in pdus.iter().enumerate() {
        assert_eq!(pdu.esm_class & esm_class::UDHI, esm_class::UDHI);
        assert_eq!(pdu.data_coding, data_coding::UCS2);
        assert_eq!(
            &pdu.short_message[..6],
            &[0x05, 0x00, 0x03, 0xAB, 3, i as u8 + 1]
        );
        assert_eq!(&pdu.short_message[6..], &parts()[i][..]);
    }
}

#[test]
fn udh16_uses_iei_8() {
    let pdus = build_submits(
        &template(),
        &parts(),
        Concatenation::Udh16 { reference: 0x1234 },
    )
    .unwrap();
    assert_eq!(
        &pdus[2].short_message[..7],
        &[0x06, 0x08, 0x04, 0x12, 0x34, 3, 3]
    );
}

#[test]
fn sar_adds_the_three_tlvs() {
    let pdus = build_submits(&template(), &parts(), Concatenation::Sar { reference: 513 }).unwrap();
    assert_eq!(pdus.len(), 3);
    for (i, pdu) in pdus.iter().enumerate() {
        assert_eq!(pdu.esm_class & esm_class::UDHI, 0);
        assert_eq!(pdu.short_message, parts()[i]);
        assert_eq!(
            pdu.tlv(tlv::tag::SAR_MSG_REF_NUM).unwrap().as_u16(),
            Some(513)
        );
        assert_eq!(
            pdu.tlv(tlv::tag::SAR_TOTAL_SEGMENTS).unwrap().as_u8(),
            Some(3)
        );
        assert_eq!(
            pdu.tlv(tlv::tag::SAR_SEGMENT_SEQNUM).unwrap().as_u8(),
            Some(i as u8 + 1)
        );
    }
}

#[test]
fn message_payload_joins_the_parts_into_one_pdu() {
    let pdus = build_submits(&template(), &parts(), Concatenation::MessagePayload).unwrap();
    assert_eq!(pdus.len(), 1);
    assert!(pdus[0].short_message.is_empty());
    assert_eq!(
        &pdus[0].tlv(tlv::tag::MESSAGE_PAYLOAD).unwrap().value[..],
        b"part one part two end"
    );
}

#[test]
fn a_single_part_is_a_plain_short_message() {
    for method in [
        Concatenation::Udh8 { reference: 1 },
        Concatenation::Sar { reference: 1 },
        Concatenation::MessagePayload,
    ] {
        let pdus = build_submits(&template(), &parts()[..1], method).unwrap();
        assert_eq!(pdus.len(), 1);
        assert_eq!(pdus[0].short_message, parts()[0]);
        assert_eq!(pdus[0].esm_class, 0);
        assert!(pdus[0].tlvs.is_empty());
    }
}

#[test]
fn impossible_parts_are_refused() {
    let too_long = vec![Bytes::from(vec![0u8; 249]), Bytes::from_static(b"x")];
    assert!(matches!(
        build_submits(&template(), &too_long, Concatenation::Udh8 { reference: 1 }),
        Err(Error::InvalidParts(_))
    ));
    assert!(matches!(
        build_submits(&template(), &[], Concatenation::MessagePayload),
        Err(Error::InvalidParts(_))
    ));
    let many = vec![Bytes::from_static(b"x"); 256];
    assert!(matches!(
        build_submits(&template(), &many, Concatenation::Sar { reference: 1 }),
        Err(Error::InvalidParts(_))
    ));
}
