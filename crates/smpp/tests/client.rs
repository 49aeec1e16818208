//! The session client against a scripted SMSC over `tokio::io::duplex`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use smpp::pdu::{
    BindResp, Body, CommandStatus, DeliverSm, Pdu, SubmitSm, SubmitSmResp, Tlv, decode_frame,
    esm_class,
};
use smpp::{BindConfig, BindMode, Client, Error, Inbound};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// The SMSC side of the conversation, driven step by step by a test.
struct Smsc {
    stream: DuplexStream,
    buf: BytesMut,
}

impl Smsc {
    async fn recv(&mut self) -> Option<Pdu> {
        loop {
            if let Some(pdu) = decode_frame(&mut self.buf).expect("client sends valid PDUs") {
                return Some(pdu);
            }
            if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    /// The next PDU, or None when nothing arrives within `wait`.
    async fn recv_within(&mut self, wait: Duration) -> Option<Pdu> {
        timeout(wait, self.recv()).await.ok().flatten()
    }

    async fn send(&mut self, pdu: Pdu) {
        self.stream
            .write_all(&pdu.to_bytes().unwrap())
            .await
            .unwrap();
    }

    async fn accept_bind(&mut self) {
        let bind = self.recv().await.expect("a bind");
        let body = match bind.body {
            Body::BindTransceiver(_) => Body::BindTransceiverResp(BindResp {
                system_id: "SCRIPT".into(),
                tlvs: vec![],
            }),
            Body::BindTransmitter(_) => Body::BindTransmitterResp(BindResp::default()),
            Body::BindReceiver(_) => Body::BindReceiverResp(BindResp::default()),
            other => panic!("expected a bind, got {other:?}"),
        };
        self.send(Pdu::response(
            bind.sequence_number,
            CommandStatus::EsmeRok,
            body,
        ))
        .await;
    }

    async fn answer_submit(&mut self, submit: &Pdu, message_id: &str) {
        self.send(Pdu::response(
            submit.sequence_number,
            CommandStatus::EsmeRok,
            Body::SubmitSmResp(SubmitSmResp {
                message_id: message_id.into(),
            }),
        ))
        .await;
    }
}

fn config() -> BindConfig {
    let mut config = BindConfig::new("esme", "secret");
    config.response_timeout = Duration::from_secs(2);
    config
}

async fn bound(config: BindConfig) -> (Client, mpsc::Receiver<Inbound>, Smsc) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let mut smsc = Smsc {
        stream: theirs,
        buf: BytesMut::new(),
    };
    let (client, ()) = tokio::join!(Client::bind(ours, config), smsc.accept_bind());
    let (client, inbound_rx) = client.expect("binds");
    (client, inbound_rx, smsc)
}

fn message(n: usize) -> SubmitSm {
    SubmitSm::new(
        "Brand",
        "9779841234567",
        0,
        Bytes::from(format!("message {n}")),
    )
}

#[tokio::test]
async fn bind_sends_the_configured_credentials_and_reports_the_smsc_id() {
    let (ours, theirs) = tokio::io::duplex(4096);
    let mut smsc = Smsc {
        stream: theirs,
        buf: BytesMut::new(),
    };
    let peer = tokio::spawn(async move {
        let bind = smsc.recv().await.unwrap();
        let Body::BindTransceiver(b) = &bind.body else {
            panic!("{bind:?}")
        };
        assert_eq!(
            (
                b.system_id.as_str(),
                b.password.as_str(),
                b.interface_version
            ),
            ("esme", "secret", 0x34)
        );
        smsc.send(Pdu::response(
            bind.sequence_number,
            CommandStatus::EsmeRok,
            Body::BindTransceiverResp(BindResp {
                system_id: "SCRIPT".into(),
                tlvs: vec![],
            }),
        ))
        .await;
        smsc
    });
    let (client, _inbound) = Client::bind(ours, config()).await.unwrap();
    assert_eq!(client.smsc_system_id(), "SCRIPT");
    assert_eq!(client.mode(), BindMode::Transceiver);
    assert!(!client.is_closed());
    peer.await.unwrap();
}

#[tokio::test]
async fn a_refused_bind_is_bind_failed_with_the_status() {
    let (ours, theirs) = tokio::io::duplex(4096);
    let mut smsc = Smsc {
        stream: theirs,
        buf: BytesMut::new(),
    };
    tokio::spawn(async move {
        let bind = smsc.recv().await.unwrap();
        smsc.send(Pdu::response(
            bind.sequence_number,
            CommandStatus::EsmeRinvpaswd,
            Body::BindTransceiverResp(BindResp::default()),
        ))
        .await;
        smsc
    });
    let err = Client::bind(ours, config()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::BindFailed {
                status: CommandStatus::EsmeRinvpaswd
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_smsc_times_the_bind_out() {
    let (ours, _theirs) = tokio::io::duplex(4096);
    let err = Client::bind(ours, config()).await.unwrap_err();
    assert!(
        matches!(err, Error::ResponseTimeout { sequence: 1, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn submit_returns_the_smsc_message_id() {
    let (client, _inbound, mut smsc) = bound(config()).await;
    let submit = tokio::spawn({
        let client = client.clone();
        async move { client.submit(&message(1)).await }
    });
    let pdu = smsc.recv().await.unwrap();
    let Body::SubmitSm(sm) = &pdu.body else {
        panic!("{pdu:?}")
    };
    assert_eq!(&sm.short_message[..], b"message 1");
    smsc.answer_submit(&pdu, "1a2b").await;
    let resp = submit.await.unwrap().unwrap();
    assert!(resp.is_ok());
    assert_eq!(resp.message_id, "1a2b");
    assert_eq!(resp.sequence_number, pdu.sequence_number);
}

#[tokio::test]
async fn the_window_is_never_exceeded() {
    let mut cfg = config();
    cfg.window = 3;
    let (client, _inbound, mut smsc) = bound(cfg).await;
    let submits: Vec<_> = (0..10)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.submit(&message(n)).await })
        })
        .collect();

    let mut outstanding = Vec::new();
    let mut answered = 0;
    while answered < 10 {
        // Take everything the client is willing to send right now.
        while let Some(pdu) = smsc.recv_within(Duration::from_millis(50)).await {
            assert!(matches!(pdu.body, Body::SubmitSm(_)));
            outstanding.push(pdu);
            assert!(outstanding.len() <= 3, "window of 3 exceeded");
        }
        assert!(!outstanding.is_empty(), "the client stalled");
        assert!(client.window_in_use() <= 3);
        let pdu = outstanding.remove(0);
        smsc.answer_submit(&pdu, &format!("id{answered}")).await;
        answered += 1;
    }
    for submit in submits {
        assert!(submit.await.unwrap().unwrap().is_ok());
    }
    assert_eq!(client.window_in_use(), 0);
}

#[tokio::test]
async fn a_timed_out_submit_frees_its_slot_and_ignores_the_late_answer() {
    let mut cfg = config();
    cfg.window = 1;
    cfg.response_timeout = Duration::from_millis(200);
    let (client, _inbound, mut smsc) = bound(cfg).await;

    let first = tokio::spawn({
        let client = client.clone();
        async move { client.submit(&message(1)).await }
    });
    let unanswered = smsc.recv().await.unwrap();
    let err = first.await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::ResponseTimeout { sequence, after } if sequence == unanswered.sequence_number && after == Duration::from_millis(200)),
        "{err:?}"
    );
    assert_eq!(client.window_in_use(), 0);

    let second = tokio::spawn({
        let client = client.clone();
        async move { client.submit(&message(2)).await }
    });
    let pdu = smsc.recv().await.unwrap();
    // The late answer to the first is dropped; the second gets its own.
    smsc.answer_submit(&unanswered, "late").await;
    smsc.answer_submit(&pdu, "on-time").await;
    assert_eq!(second.await.unwrap().unwrap().message_id, "on-time");
    assert!(!client.is_closed());
}

#[tokio::test]
async fn throttling_answers_surface_as_statuses() {
    let (client, _inbound, mut smsc) = bound(config()).await;
    let submit = tokio::spawn({
        let client = client.clone();
        async move { client.submit(&message(1)).await }
    });
    let pdu = smsc.recv().await.unwrap();
    smsc.send(Pdu::response(
        pdu.sequence_number,
        CommandStatus::EsmeRthrottled,
        Body::SubmitSmResp(SubmitSmResp::default()),
    ))
    .await;
    let resp = submit.await.unwrap().unwrap();
    assert!(resp.is_throttled());
    assert!(!resp.is_ok());

    let submit = tokio::spawn({
        let client = client.clone();
        async move { client.submit(&message(2)).await }
    });
    let pdu = smsc.recv().await.unwrap();
    smsc.send(Pdu::response(
        pdu.sequence_number,
        CommandStatus::EsmeRmsgqful,
        Body::GenericNack,
    ))
    .await;
    let err = submit.await.unwrap().unwrap_err();
    assert!(err.is_throttling(), "{err:?}");
}

#[tokio::test]
async fn deliver_sm_is_acknowledged_then_handed_over() {
    let (_client, mut inbound, mut smsc) = bound(config()).await;
    let receipt = DeliverSm {
        esm_class: esm_class::SMSC_DELIVERY_RECEIPT,
        short_message: Bytes::from_static(b"id:6699 sub:001 dlvrd:001 submit date:2511261200 done date:2511261201 stat:DELIVRD err:000 text:"),
        ..DeliverSm::default()
    };
    smsc.send(Pdu::request(500, Body::DeliverSm(Box::new(receipt))))
        .await;
    let ack = smsc.recv().await.unwrap();
    assert_eq!(ack.sequence_number, 500);
    assert_eq!(ack.command_status, CommandStatus::EsmeRok);
    assert!(matches!(ack.body, Body::DeliverSmResp(_)));
    match inbound.recv().await.unwrap() {
        Inbound::Receipt { receipt, .. } => {
            assert!(smpp::receipt::ids_match(
                receipt.message_id.as_deref().unwrap(),
                "1a2b"
            ));
            assert_eq!(receipt.state, Some(smpp::receipt::MessageState::Delivered));
        }
        other => panic!("{other:?}"),
    }

    let mo = DeliverSm {
        source_addr: "9779841234567".into(),
        short_message: Bytes::from_static(b"STOP"),
        ..DeliverSm::default()
    };
    smsc.send(Pdu::request(501, Body::DeliverSm(Box::new(mo))))
        .await;
    assert_eq!(smsc.recv().await.unwrap().sequence_number, 501);
    match inbound.recv().await.unwrap() {
        Inbound::Message(pdu) => assert_eq!(&pdu.short_message[..], b"STOP"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn receipts_are_acknowledged_even_when_nobody_listens() {
    let (_client, inbound, mut smsc) = bound(config()).await;
    drop(inbound);
    let receipt = DeliverSm {
        esm_class: esm_class::SMSC_DELIVERY_RECEIPT,
        tlvs: vec![
            Tlv::receipted_message_id("1").unwrap(),
            Tlv::message_state(2),
        ],
        ..DeliverSm::default()
    };
    for seq in 1..=3 {
        smsc.send(Pdu::request(
            seq,
            Body::DeliverSm(Box::new(receipt.clone())),
        ))
        .await;
        let ack = smsc.recv().await.unwrap();
        assert_eq!(
            (ack.sequence_number, ack.command_id()),
            (seq, smpp::pdu::CommandId::DeliverSmResp)
        );
    }
}

#[tokio::test]
async fn enquire_link_and_unknown_requests_from_the_smsc_are_answered() {
    let (_client, _inbound, mut smsc) = bound(config()).await;
    smsc.send(Pdu::request(42, Body::EnquireLink)).await;
    let resp = smsc.recv().await.unwrap();
    assert_eq!(
        (resp.sequence_number, resp.body),
        (42, Body::EnquireLinkResp)
    );

    smsc.send(Pdu::request(
        43,
        Body::Unknown {
            command_id: 0x0000_0103,
            body: Bytes::new(),
        },
    ))
    .await;
    let nack = smsc.recv().await.unwrap();
    assert_eq!(nack.sequence_number, 43);
    assert_eq!(nack.body, Body::GenericNack);
    assert_eq!(nack.command_status, CommandStatus::EsmeRinvcmdid);
}

#[tokio::test(start_paused = true)]
async fn an_idle_link_is_probed_and_an_unanswered_probe_closes_it() {
    let mut cfg = config();
    cfg.enquire_link_interval = Duration::from_secs(30);
    cfg.response_timeout = Duration::from_secs(5);
    let (client, _inbound, mut smsc) = bound(cfg).await;
    let started = Instant::now();
    let probe = smsc.recv().await.unwrap();
    assert_eq!(probe.body, Body::EnquireLink);
    assert!(started.elapsed() >= Duration::from_secs(30));
    smsc.send(Pdu::response(
        probe.sequence_number,
        CommandStatus::EsmeRok,
        Body::EnquireLinkResp,
    ))
    .await;

    // Second probe, this time unanswered.
    let probe = smsc.recv().await.unwrap();
    assert_eq!(probe.body, Body::EnquireLink);
    let waiting = Instant::now();
    timeout(Duration::from_secs(60), client.closed())
        .await
        .expect("closes");
    assert!(waiting.elapsed() >= Duration::from_secs(5));
    assert!(client.is_closed());
}

#[tokio::test]
async fn losing_the_connection_fails_pending_submits_and_closes_the_handle() {
    let (client, _inbound, mut smsc) = bound(config()).await;
    let pending: Vec<_> = (0..3)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.submit(&message(n)).await })
        })
        .collect();
    for _ in 0..3 {
        smsc.recv().await.unwrap();
    }
    drop(smsc);
    for submit in pending {
        let err = timeout(Duration::from_secs(1), submit)
            .await
            .expect("fails fast, does not hang")
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, Error::ConnectionClosed), "{err:?}");
    }
    timeout(Duration::from_secs(1), client.closed())
        .await
        .unwrap();
    assert!(client.is_closed());
    assert!(matches!(
        client.submit(&message(9)).await,
        Err(Error::ConnectionClosed)
    ));
}

#[tokio::test]
async fn unbind_waits_for_the_answer_and_closes() {
    let (client, _inbound, mut smsc) = bound(config()).await;
    let unbinding = tokio::spawn({
        let client = client.clone();
        async move { client.unbind().await }
    });
    let unbind = smsc.recv().await.unwrap();
    assert_eq!(unbind.body, Body::Unbind);
    smsc.send(Pdu::response(
        unbind.sequence_number,
        CommandStatus::EsmeRok,
        Body::UnbindResp,
    ))
    .await;
    unbinding.await.unwrap().unwrap();
    assert!(client.is_closed());
    assert_eq!(smsc.recv().await, None, "the connection is shut down");
    client.unbind().await.unwrap();
}

#[tokio::test]
async fn an_unbind_from_the_smsc_is_answered_and_closes() {
    let (client, _inbound, mut smsc) = bound(config()).await;
    smsc.send(Pdu::request(9, Body::Unbind)).await;
    let resp = smsc.recv().await.unwrap();
    assert_eq!((resp.sequence_number, resp.body), (9, Body::UnbindResp));
    timeout(Duration::from_secs(1), client.closed())
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn tps_spaces_the_submits() {
    let mut cfg = config();
    cfg.tps = Some(10);
    cfg.window = 100;
    let (client, _inbound, mut smsc) = bound(cfg).await;
    let started = Instant::now();
    let submits: Vec<_> = (0..5)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.submit(&message(n)).await })
        })
        .collect();
    let mut arrivals = Vec::new();
    for _ in 0..5 {
        let pdu = smsc.recv().await.unwrap();
        arrivals.push(started.elapsed());
        smsc.answer_submit(&pdu, "x").await;
    }
    for submit in submits {
        submit.await.unwrap().unwrap();
    }
    assert!(
        arrivals[4] >= Duration::from_millis(400),
        "5 submits at 10/s took {arrivals:?}"
    );
    for pair in arrivals.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(99),
            "{arrivals:?}"
        );
    }
}

#[tokio::test]
async fn a_receiver_bind_refuses_to_submit() {
    let mut cfg = config();
    cfg.mode = BindMode::Receiver;
    let (client, _inbound, _smsc) = bound(cfg).await;
    assert!(matches!(
        client.submit(&message(1)).await,
        Err(Error::WrongBindMode {
            mode: BindMode::Receiver,
            ..
        })
    ));
}

#[tokio::test]
async fn a_client_probe_gets_its_answer() {
    let (client, _inbound, mut smsc) = bound(config()).await;
    let probing = tokio::spawn({
        let client = client.clone();
        async move { client.enquire_link().await }
    });
    let probe = smsc.recv().await.unwrap();
    smsc.send(Pdu::response(
        probe.sequence_number,
        CommandStatus::EsmeRok,
        Body::EnquireLinkResp,
    ))
    .await;
    probing.await.unwrap().unwrap();
}

#[test]
fn the_password_never_shows_in_debug_output() {
    let shown = format!("{:?}", BindConfig::new("esme", "hunter2"));
    assert!(shown.contains("[redacted]"));
    assert!(!shown.contains("hunter2"));
}
