//! The PDU trace ([`smpp::pdu::Redacted`], `BindConfig::pdu_trace`) and SMPP
//! relative times: what an operator sees, and what never shows.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use smpp::pdu::{
    Bind, BindResp, Body, CommandStatus, DeliverSm, MAX_RELATIVE, Pdu, Redacted, SubmitSm,
    SubmitSmResp, Tlv, data_coding, decode_frame, esm_class, relative_time,
};
use smpp::{BindConfig, Client, Inbound};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;

const CODE: &str = "482193";
const PASSWORD: &str = "pw7Xq2z";

#[test]
fn relative_times_are_written_in_days_hours_minutes_and_seconds() {
    assert_eq!(relative_time(Duration::ZERO), "000000000000000R");
    assert_eq!(relative_time(Duration::from_secs(59)), "000000000059000R");
    assert_eq!(relative_time(Duration::from_secs(600)), "000000001000000R");
    assert_eq!(
        relative_time(Duration::from_secs(3_600)),
        "000000010000000R"
    );
    assert_eq!(
        relative_time(Duration::from_secs(90_061)),
        "000001010101000R"
    );
    assert_eq!(relative_time(MAX_RELATIVE), "000099235959000R");
}

#[test]
fn part_of_a_second_counts_whole_and_spans_past_the_maximum_are_capped() {
    assert_eq!(
        relative_time(Duration::from_millis(599_001)),
        "000000001000000R"
    );
    assert_eq!(relative_time(Duration::from_nanos(1)), "000000000001000R");
    assert_eq!(
        relative_time(MAX_RELATIVE + Duration::from_secs(1)),
        relative_time(MAX_RELATIVE)
    );
    assert_eq!(
        relative_time(Duration::from_secs(u64::MAX)),
        "000099235959000R"
    );
    // Every relative time is 16 characters, as the C-octet string of 17 needs.
    assert_eq!(relative_time(Duration::from_secs(12_345)).len(), 16);
}

fn submit() -> SubmitSm {
    let mut sm = SubmitSm::new(
        "ACME",
        "9779851023212",
        data_coding::SMSC_DEFAULT,
        Bytes::from(format!("Your code is {CODE}")),
    );
    sm.service_type = "OTP".into();
    sm.priority_flag = 2;
    sm.validity_period = relative_time(Duration::from_secs(600));
    sm
}

#[test]
fn a_traced_submit_sm_shows_every_field_but_the_message_text() {
    let line = Redacted::submit_sm(&submit()).to_string();
    assert_eq!(
        line,
        "submit_sm service_type=\"OTP\" source=5/0:\"ACME\" destination=1/1:\"9779851023212\" \
         esm_class=0x00 protocol_id=0 priority_flag=2 schedule_delivery_time=\"\" \
         validity_period=\"000000001000000R\" registered_delivery=1 data_coding=0 sm_length=19"
    );
}

#[test]
fn a_traced_message_payload_shows_its_length_and_sar_values_show_in_hex() {
    let mut sm = submit();
    sm.short_message = Bytes::new();
    sm.tlvs = vec![
        Tlv::sar_msg_ref_num(0x1234),
        Tlv::message_payload(Bytes::from(format!("Your code is {CODE}"))),
    ];
    let line = Redacted::body(&Body::SubmitSm(Box::new(sm))).to_string();
    assert!(
        line.ends_with("sm_length=0 tlv_0x020c=1234 tlv_0x0424(length 19)"),
        "{line}"
    );
    assert!(!line.contains(CODE), "{line}");
}

#[test]
fn a_traced_bind_never_shows_the_password() {
    let bind = Bind {
        system_id: "acme".into(),
        password: PASSWORD.into(),
        system_type: "OTP".into(),
        interface_version: 0x34,
        ..Bind::default()
    };
    let line = Redacted::body(&Body::BindTransmitter(bind)).to_string();
    assert_eq!(
        line,
        "bind_transmitter system_id=\"acme\" system_type=\"OTP\" interface_version=0x34 addr=0/0:\"\""
    );
}

fn receipt() -> DeliverSm {
    DeliverSm {
        esm_class: esm_class::SMSC_DELIVERY_RECEIPT,
        destination_addr: "ACME".into(),
        source_addr: "9779851023212".into(),
        short_message: Bytes::from(format!(
            "id:77 sub:001 dlvrd:001 submit date:2501011200 done date:2501011201 \
             stat:DELIVRD err:000 text:Your code is {CODE}"
        )),
        tlvs: vec![Tlv::new(0x001E, &b"77\0"[..]), Tlv::new(0x0427, vec![2])],
        ..DeliverSm::default()
    }
}

#[test]
fn a_traced_receipt_shows_its_id_and_state_but_not_its_text() {
    let line = Redacted::body(&Body::DeliverSm(Box::new(receipt()))).to_string();
    assert!(line.starts_with("deliver_sm "), "{line}");
    assert!(line.contains("esm_class=0x04"), "{line}");
    assert!(line.ends_with("tlv_0x001e=\"77\" tlv_0x0427=02"), "{line}");
    assert!(!line.contains(CODE) && !line.contains("DELIVRD"), "{line}");
}

#[test]
fn traced_strings_are_escaped_so_an_smsc_cannot_forge_a_log_line() {
    let resp = Body::SubmitSmResp(SubmitSmResp {
        message_id: "1\nERROR forged".into(),
    });
    assert_eq!(
        Redacted::body(&resp).to_string(),
        "submit_sm_resp message_id=\"1\\nERROR forged\""
    );
}

/// Log output gathered in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn recv(stream: &mut DuplexStream, buf: &mut BytesMut) -> Pdu {
    loop {
        if let Some(pdu) = decode_frame(buf).unwrap() {
            return pdu;
        }
        assert_ne!(stream.read_buf(buf).await.unwrap(), 0, "client hung up");
    }
}

async fn send(stream: &mut DuplexStream, pdu: Pdu) {
    stream.write_all(&pdu.to_bytes().unwrap()).await.unwrap();
}

/// Binds, submits one message, takes one receipt and unbinds, with debug
/// logging on; returns what was logged.
async fn session_logged(pdu_trace: Option<String>) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime has one thread, so every session task logs here too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (ours, mut smsc) = tokio::io::duplex(64 * 1024);
    let mut config = BindConfig::new("acme", PASSWORD);
    config.pdu_trace = pdu_trace;
    let peer = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        let bind = recv(&mut smsc, &mut buf).await;
        let ok = CommandStatus::EsmeRok;
        let resp = Body::BindTransceiverResp(BindResp {
            system_id: "SCRIPT".into(),
            tlvs: vec![],
        });
        send(&mut smsc, Pdu::response(bind.sequence_number, ok, resp)).await;
        let sm = recv(&mut smsc, &mut buf).await;
        let resp = Body::SubmitSmResp(SubmitSmResp {
            message_id: "77".into(),
        });
        send(&mut smsc, Pdu::response(sm.sequence_number, ok, resp)).await;
        send(
            &mut smsc,
            Pdu::request(9, Body::DeliverSm(Box::new(receipt()))),
        )
        .await;
        loop {
            let pdu = recv(&mut smsc, &mut buf).await;
            if let Body::Unbind = pdu.body {
                send(
                    &mut smsc,
                    Pdu::response(pdu.sequence_number, ok, Body::UnbindResp),
                )
                .await;
                return;
            }
        }
    });
    let (client, mut inbound) = Client::bind(ours, config).await.unwrap();
    let resp = client.submit(&submit()).await.unwrap();
    assert_eq!(resp.message_id, "77");
    let got = timeout(Duration::from_secs(5), inbound.recv())
        .await
        .unwrap();
    assert!(matches!(got, Some(Inbound::Receipt { .. })), "{got:?}");
    client.unbind().await.unwrap();
    peer.await.unwrap();
    captured.text()
}

#[tokio::test]
async fn the_pdu_trace_logs_every_pdu_both_ways_without_the_password_or_the_text() {
    let log = session_logged(Some("ntc#0".into())).await;
    let traced: Vec<&str> = log.lines().filter(|l| l.contains("smpp::pdu")).collect();
    let has = |dir: &str, what: &str| {
        traced
            .iter()
            .any(|l| l.contains(&format!("dir=\"{dir}\"")) && l.contains(what))
    };
    assert!(has("out", "bind_transceiver system_id=\"acme\""), "{log}");
    assert!(
        has("in", "bind_transceiver_resp system_id=\"SCRIPT\""),
        "{log}"
    );
    assert!(
        has("out", "validity_period=\"000000001000000R\"") && has("out", "sm_length=19"),
        "{log}"
    );
    assert!(has("in", "submit_sm_resp message_id=\"77\""), "{log}");
    assert!(has("in", "deliver_sm service_type"), "{log}");
    assert!(has("out", "deliver_sm_resp"), "{log}");
    assert!(has("out", "unbind") && has("in", "unbind_resp"), "{log}");
    assert!(traced.iter().all(|l| l.contains("bind=\"ntc#0\"")), "{log}");
    assert!(traced.iter().all(|l| l.contains("DEBUG")), "{log}");
    assert!(!log.contains(PASSWORD), "the password was logged: {log}");
    assert!(!log.contains(CODE), "the message text was logged: {log}");
}

#[tokio::test]
async fn without_pdu_trace_no_pdu_is_logged_even_at_debug_level() {
    let log = session_logged(None).await;
    assert!(!log.contains("smpp::pdu"), "{log}");
    assert!(!log.contains("submit_sm"), "{log}");
}
