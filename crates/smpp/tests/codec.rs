//! Byte-level tests of the PDU codec: exact vectors, round trips, framing,
//! and malformed input mapped to named errors.

use bytes::{Bytes, BytesMut};
use smpp::ProtocolError;
use smpp::pdu::FrameError;
use smpp::pdu::{
    Bind, BindResp, Body, CommandId, CommandStatus, DeliverSm, DeliverSmResp, Header, Outbind, Pdu,
    SubmitSm, SubmitSmResp, Tlv, decode_frame, tlv,
};

fn header(length: u32, command_id: u32, status: u32, sequence: u32) -> Vec<u8> {
    [length, command_id, status, sequence]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect()
}

fn encode(pdu: &Pdu) -> Vec<u8> {
    pdu.to_bytes().expect("encodes").to_vec()
}

fn decode_one(bytes: &[u8]) -> Result<Option<Pdu>, FrameError> {
    let mut buf = BytesMut::from(bytes);
    let result = decode_frame(&mut buf);
    if let Ok(Some(_)) = result {
        assert!(buf.is_empty(), "the whole frame is consumed");
    }
    result
}

fn bind() -> Bind {
    Bind {
        system_id: "esme".into(),
        password: "pw".into(),
        system_type: String::new(),
        interface_version: 0x34,
        addr_ton: 0,
        addr_npi: 0,
        address_range: String::new(),
    }
}

fn bind_transceiver_bytes() -> Vec<u8> {
    let mut v = header(29, 0x0000_0009, 0, 1);
    v.extend_from_slice(b"esme\0pw\0\0");
    v.extend_from_slice(&[0x34, 0x00, 0x00, 0x00]);
    v
}

#[test]
fn bind_transceiver_encodes_to_the_spec_bytes() {
    let pdu = Pdu::request(1, Body::BindTransceiver(bind()));
    assert_eq!(encode(&pdu), bind_transceiver_bytes());
}

#[test]
fn bind_transceiver_decodes_from_the_spec_bytes() {
    let pdu = decode_one(&bind_transceiver_bytes()).unwrap().unwrap();
    assert_eq!(pdu, Pdu::request(1, Body::BindTransceiver(bind())));
    assert_eq!(pdu.command_id(), CommandId::BindTransceiver);
}

#[test]
fn bind_debug_output_redacts_the_password() {
    let shown = format!("{:?}", bind());
    assert!(shown.contains("[redacted]"));
    assert!(!shown.contains("\"pw\""));
}

fn hello_submit() -> SubmitSm {
    SubmitSm::new(
        "Brand",
        "+9779841234567",
        smpp::pdu::data_coding::SMSC_DEFAULT,
        &b"Hello"[..],
    )
}

fn hello_submit_body() -> Vec<u8> {
    let mut v = Vec::new();
    v.push(0x00); // service_type ""
    v.extend_from_slice(&[0x05, 0x00]); // alphanumeric source
    v.extend_from_slice(b"Brand\0");
    v.extend_from_slice(&[0x01, 0x01]); // international / ISDN
    v.extend_from_slice(b"9779841234567\0");
    v.extend_from_slice(&[0x00, 0x00, 0x00]); // esm_class, protocol_id, priority
    v.extend_from_slice(&[0x00, 0x00]); // schedule, validity: empty
    v.extend_from_slice(&[0x01, 0x00, 0x00, 0x00]); // registered_delivery, replace, data_coding, default id
    v.push(5);
    v.extend_from_slice(b"Hello");
    v
}

#[test]
fn submit_sm_without_tlvs_encodes_to_the_spec_bytes() {
    let mut expected = header(56, 0x0000_0004, 0, 2);
    expected.extend(hello_submit_body());
    let pdu = Pdu::request(2, Body::SubmitSm(Box::new(hello_submit())));
    assert_eq!(encode(&pdu), expected);
    assert_eq!(decode_one(&expected).unwrap().unwrap(), pdu);
}

#[test]
fn submit_sm_with_sar_tlvs_encodes_to_the_spec_bytes() {
    let mut sm = hello_submit();
    sm.tlvs = vec![
        Tlv::sar_msg_ref_num(42),
        Tlv::sar_total_segments(3),
        Tlv::sar_segment_seqnum(1),
    ];
    let mut expected = header(56 + 6 + 5 + 5, 0x0000_0004, 0, 3);
    expected.extend(hello_submit_body());
    expected.extend_from_slice(&[0x02, 0x0C, 0x00, 0x02, 0x00, 0x2A]);
    expected.extend_from_slice(&[0x02, 0x0E, 0x00, 0x01, 0x03]);
    expected.extend_from_slice(&[0x02, 0x0F, 0x00, 0x01, 0x01]);
    let pdu = Pdu::request(3, Body::SubmitSm(Box::new(sm)));
    assert_eq!(encode(&pdu), expected);

    let decoded = decode_one(&expected).unwrap().unwrap();
    let Body::SubmitSm(sm) = &decoded.body else {
        panic!("not a submit_sm: {decoded:?}")
    };
    assert_eq!(
        sm.tlv(tlv::tag::SAR_MSG_REF_NUM).unwrap().as_u16(),
        Some(42)
    );
    assert_eq!(
        sm.tlv(tlv::tag::SAR_TOTAL_SEGMENTS).unwrap().as_u8(),
        Some(3)
    );
    assert_eq!(decoded, pdu);
}

#[test]
fn submit_sm_resp_decodes_with_and_without_a_body() {
    let mut ok = header(16 + 9, 0x8000_0004, 0, 2);
    ok.extend_from_slice(b"1a2b3c4d\0");
    let pdu = decode_one(&ok).unwrap().unwrap();
    assert_eq!(
        pdu,
        Pdu::response(
            2,
            CommandStatus::EsmeRok,
            Body::SubmitSmResp(SubmitSmResp {
                message_id: "1a2b3c4d".into()
            })
        )
    );

    // SMPP 3.4: no body when command_status is an error (node-smpp does this).
    let throttled = header(16, 0x8000_0004, 0x58, 9);
    let pdu = decode_one(&throttled).unwrap().unwrap();
    assert_eq!(pdu.command_status, CommandStatus::EsmeRthrottled);
    assert!(pdu.command_status.is_throttling());
    assert_eq!(pdu.body, Body::SubmitSmResp(SubmitSmResp::default()));
}

fn receipt_deliver_sm_bytes() -> Vec<u8> {
    let text = b"id:0123456789 sub:001 dlvrd:001 submit date:2511261200 done date:2511261201 stat:DELIVRD err:000 text:Your code is 1234";
    let mut body = Vec::new();
    body.push(0x00);
    body.extend_from_slice(&[0x01, 0x01]);
    body.extend_from_slice(b"9779841234567\0");
    body.extend_from_slice(&[0x05, 0x00]);
    body.extend_from_slice(b"Brand\0");
    body.extend_from_slice(&[0x04, 0x00, 0x00]); // esm_class: SMSC delivery receipt
    body.extend_from_slice(&[0x00, 0x00]);
    body.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]);
    body.push(text.len() as u8);
    body.extend_from_slice(text);
    body.extend_from_slice(&[0x00, 0x1E, 0x00, 0x0B]);
    body.extend_from_slice(b"0123456789\0");
    body.extend_from_slice(&[0x04, 0x27, 0x00, 0x01, 0x02]);
    let mut v = header(16 + body.len() as u32, 0x0000_0005, 0, 77);
    v.extend(body);
    v
}

#[test]
fn deliver_sm_receipt_decodes_and_reencodes_to_the_same_bytes() {
    let bytes = receipt_deliver_sm_bytes();
    let pdu = decode_one(&bytes).unwrap().unwrap();
    let Body::DeliverSm(deliver) = &pdu.body else {
        panic!("not a deliver_sm: {pdu:?}")
    };
    assert!(deliver.is_receipt());
    assert_eq!(deliver.source_addr, "9779841234567");
    assert_eq!(
        deliver
            .tlv(tlv::tag::RECEIPTED_MESSAGE_ID)
            .unwrap()
            .as_cstring(),
        "0123456789"
    );
    assert_eq!(
        deliver.tlv(tlv::tag::MESSAGE_STATE).unwrap().as_u8(),
        Some(2)
    );
    assert_eq!(encode(&pdu), bytes);
}

#[test]
fn deliver_sm_resp_encodes_with_an_empty_message_id() {
    let pdu = Pdu::response(
        77,
        CommandStatus::EsmeRok,
        Body::DeliverSmResp(DeliverSmResp::default()),
    );
    let mut expected = header(17, 0x8000_0005, 0, 77);
    expected.push(0);
    assert_eq!(encode(&pdu), expected);
}

#[test]
fn enquire_link_and_its_resp_are_header_only() {
    let pdu = Pdu::request(7, Body::EnquireLink);
    assert_eq!(encode(&pdu), header(16, 0x0000_0015, 0, 7));
    let resp = Pdu::response(7, CommandStatus::EsmeRok, Body::EnquireLinkResp);
    assert_eq!(encode(&resp), header(16, 0x8000_0015, 0, 7));
    assert_eq!(
        decode_one(&header(16, 0x8000_0015, 0, 7)).unwrap().unwrap(),
        resp
    );
}

#[test]
fn generic_nack_carries_status_and_sequence() {
    let bytes = header(16, 0x8000_0000, 0x03, 5);
    let pdu = decode_one(&bytes).unwrap().unwrap();
    assert_eq!(
        pdu,
        Pdu::response(5, CommandStatus::EsmeRinvcmdid, Body::GenericNack)
    );
    assert_eq!(encode(&pdu), bytes);
}

#[test]
fn unbind_and_unbind_resp_round_trip() {
    for pdu in [
        Pdu::request(11, Body::Unbind),
        Pdu::response(11, CommandStatus::EsmeRok, Body::UnbindResp),
    ] {
        assert_eq!(decode_one(&encode(&pdu)).unwrap().unwrap(), pdu);
    }
    assert_eq!(
        encode(&Pdu::request(11, Body::Unbind)),
        header(16, 6, 0, 11)
    );
}

#[test]
fn every_body_round_trips() {
    let bind_resp = BindResp {
        system_id: "SMSC".into(),
        tlvs: vec![Tlv::new(tlv::tag::SC_INTERFACE_VERSION, vec![0x34])],
    };
    let mut deliver = DeliverSm {
        source_addr: "9779800000001".into(),
        destination_addr: "12345".into(),
        data_coding: 8,
        short_message: Bytes::from_static(&[0x09, 0x39, 0x09, 0x47]),
        ..DeliverSm::default()
    };
    deliver
        .tlvs
        .push(Tlv::network_error_code(smpp::pdu::NetworkErrorCode {
            network_type: 3,
            error_code: 0x0101,
        }));
    let mut payload = hello_submit();
    payload.short_message = Bytes::new();
    payload.tlvs.push(Tlv::message_payload(vec![b'x'; 1000]));
    let bodies = vec![
        Body::BindTransmitter(bind()),
        Body::BindReceiver(bind()),
        Body::BindTransceiver(bind()),
        Body::BindTransmitterResp(bind_resp.clone()),
        Body::BindReceiverResp(bind_resp.clone()),
        Body::BindTransceiverResp(bind_resp),
        Body::Outbind(Outbind {
            system_id: "SMSC".into(),
            password: "pw".into(),
        }),
        Body::Unbind,
        Body::UnbindResp,
        Body::EnquireLink,
        Body::EnquireLinkResp,
        Body::SubmitSm(Box::new(hello_submit())),
        Body::SubmitSm(Box::new(payload)),
        Body::SubmitSmResp(SubmitSmResp {
            message_id: "6699".into(),
        }),
        Body::DeliverSm(Box::new(deliver)),
        Body::DeliverSmResp(DeliverSmResp::default()),
        Body::GenericNack,
        Body::Unknown {
            command_id: 0x0000_0103,
            body: Bytes::from_static(b"opaque"),
        },
    ];
    for (sequence, body) in (1..).zip(bodies) {
        let pdu = Pdu::request(sequence, body);
        let bytes = encode(&pdu);
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(decode_one(&bytes).unwrap().unwrap(), pdu);
    }
}

#[test]
fn partial_frames_ask_for_more_bytes_and_consume_nothing() {
    let bytes = bind_transceiver_bytes();
    let mut buf = BytesMut::new();
    for (i, byte) in bytes.iter().enumerate() {
        assert!(
            decode_frame(&mut buf).unwrap().is_none(),
            "complete after {i} bytes?"
        );
        assert_eq!(buf.len(), i);
        buf.extend_from_slice(&[*byte]);
    }
    assert!(decode_frame(&mut buf).unwrap().is_some());
    assert!(buf.is_empty());
}

#[test]
fn back_to_back_frames_decode_one_at_a_time() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&header(16, 0x15, 0, 1));
    buf.extend_from_slice(&bind_transceiver_bytes());
    buf.extend_from_slice(&header(16, 0x15, 0, 3)[..10]);
    assert_eq!(
        decode_frame(&mut buf).unwrap().unwrap().body,
        Body::EnquireLink
    );
    assert!(matches!(
        decode_frame(&mut buf).unwrap().unwrap().body,
        Body::BindTransceiver(_)
    ));
    assert!(decode_frame(&mut buf).unwrap().is_none());
    assert_eq!(buf.len(), 10);
}

#[test]
fn command_length_below_the_header_is_rejected() {
    for length in [0, 1, 15] {
        let err = decode_one(&header(length, 0x15, 0, 1)).unwrap_err();
        assert!(
            matches!(err, FrameError::Protocol(ProtocolError::CommandLengthTooSmall { length: l }) if l == length),
            "{err:?}"
        );
    }
}

#[test]
fn command_length_above_the_maximum_is_rejected_before_buffering_it() {
    // Only the first four octets are needed to refuse.
    let mut buf = BytesMut::from(&0x0001_0001u32.to_be_bytes()[..]);
    let err = decode_frame(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::Protocol(ProtocolError::CommandLengthTooLarge {
                length: 0x0001_0001,
                max: 65536
            })
        ),
        "{err:?}"
    );
}

#[test]
fn a_c_string_cut_by_the_end_of_the_body_is_a_named_error() {
    let mut v = header(16 + 3, 0x09, 0, 4);
    v.extend_from_slice(b"esm");
    let err = decode_one(&v).unwrap_err();
    match err {
        FrameError::InvalidPdu { header, source } => {
            assert_eq!(header.sequence_number, 4);
            assert_eq!(header.command_id, CommandId::BindTransceiver);
            assert_eq!(
                source,
                ProtocolError::CStringUnterminated { field: "system_id" }
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_c_string_longer_than_the_spec_allows_is_a_named_error() {
    let mut v = header(16 + 20, 0x09, 0, 4);
    v.extend_from_slice(b"abcdefghijklmnopqrs\0");
    let err = decode_one(&v).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::InvalidPdu {
                source: ProtocolError::CStringTooLong {
                    field: "system_id",
                    max: 16
                },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_body_ending_before_a_fixed_field_is_a_named_error() {
    let mut v = header(16 + 9, 0x09, 0, 4);
    v.extend_from_slice(b"esme\0pw\0\0");
    let err = decode_one(&v).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::InvalidPdu {
                source: ProtocolError::UnexpectedEnd {
                    field: "interface_version"
                },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_truncated_tlv_is_a_named_error() {
    let mut v = header(56 + 5, 0x04, 0, 2);
    v.extend(hello_submit_body());
    v.extend_from_slice(&[0x02, 0x0C, 0x00, 0x02, 0x00]);
    let err = decode_one(&v).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::InvalidPdu {
                source: ProtocolError::TlvTruncated { tag: 0x020C },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_invalid_body_still_consumes_its_frame() {
    let mut buf = BytesMut::new();
    let mut bad = header(16 + 3, 0x09, 0, 4);
    bad.extend_from_slice(b"esm");
    buf.extend_from_slice(&bad);
    buf.extend_from_slice(&header(16, 0x15, 0, 5));
    assert!(decode_frame(&mut buf).is_err());
    assert_eq!(decode_frame(&mut buf).unwrap().unwrap().sequence_number, 5);
}

#[test]
fn encoding_refuses_values_the_spec_forbids() {
    let mut long_id = bind();
    long_id.system_id = "a-system-id-of-16".into();
    let err = Pdu::request(1, Body::BindTransceiver(long_id))
        .to_bytes()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::CStringTooLong {
                field: "system_id",
                max: 16
            }
        ),
        "{err:?}"
    );

    let mut nul = hello_submit();
    nul.source_addr = "a\0b".into();
    assert!(matches!(
        Pdu::request(1, Body::SubmitSm(Box::new(nul))).to_bytes(),
        Err(ProtocolError::CStringInvalidChar {
            field: "source_addr"
        })
    ));

    let mut long_sm = hello_submit();
    long_sm.short_message = Bytes::from(vec![0u8; 255]);
    assert!(matches!(
        Pdu::request(1, Body::SubmitSm(Box::new(long_sm))).to_bytes(),
        Err(ProtocolError::ShortMessageTooLong { len: 255 })
    ));

    let mut huge = hello_submit();
    huge.tlvs.push(Tlv::message_payload(vec![0u8; 65_536]));
    assert!(matches!(
        Pdu::request(1, Body::SubmitSm(Box::new(huge))).to_bytes(),
        Err(ProtocolError::TlvTooLong { tag: 0x0424, .. })
    ));
}

#[test]
fn encoding_failure_leaves_the_buffer_untouched() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    let mut bad = bind();
    bad.password = "much-too-long".into();
    assert!(
        Pdu::request(1, Body::BindTransmitter(bad))
            .encode(&mut buf)
            .is_err()
    );
    assert_eq!(&buf[..], b"keep");
}

#[test]
fn unknown_commands_and_statuses_are_kept() {
    let mut v = header(18, 0x0000_0103, 0x0000_0400, 9);
    v.extend_from_slice(b"ab");
    let pdu = decode_one(&v).unwrap().unwrap();
    assert_eq!(pdu.command_status, CommandStatus::Other(0x400));
    assert_eq!(pdu.command_id(), CommandId::Other(0x103));
    assert_eq!(encode(&pdu), v);
}

#[test]
fn status_and_command_names_follow_the_spec() {
    assert_eq!(
        CommandStatus::EsmeRthrottled.to_string(),
        "ESME_RTHROTTLED (0x00000058)"
    );
    assert_eq!(CommandStatus::from(0x0E), CommandStatus::EsmeRinvpaswd);
    assert_eq!(u32::from(CommandStatus::EsmeRmsgqful), 0x14);
    assert!(CommandStatus::EsmeRmsgqful.is_throttling());
    assert!(!CommandStatus::EsmeRinvdstadr.is_throttling());
    assert_eq!(CommandId::SubmitSmResp.spec_name(), Some("submit_sm_resp"));
    assert!(CommandId::GenericNack.is_response());
    let header = Header {
        command_length: 16,
        command_id: CommandId::EnquireLink,
        command_status: CommandStatus::EsmeRok,
        sequence_number: 1,
    };
    assert_eq!(header.command_id.to_string(), "enquire_link (0x00000015)");
}

#[test]
fn source_address_defaults_follow_the_address_shape() {
    let alpha = SubmitSm::new("MyBrand", "9779841234567", 0, Bytes::new());
    assert_eq!((alpha.source_addr_ton, alpha.source_addr_npi), (5, 0));
    let long = SubmitSm::new("+9779801234567", "9779841234567", 0, Bytes::new());
    assert_eq!(
        (
            long.source_addr_ton,
            long.source_addr_npi,
            long.source_addr.as_str()
        ),
        (1, 1, "9779801234567")
    );
    let short = SubmitSm::new("31001", "9779841234567", 0, Bytes::new());
    assert_eq!((short.source_addr_ton, short.source_addr_npi), (3, 0));
}
