//! The client against a real third-party SMSC: node-smpp driven by
//! `peers/smsc/smsc.js`. Needs Node.js and `peers/smsc/install.sh`; without
//! them these tests fail (they never skip).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use smpp::concat::{Concatenation, build_submits};
use smpp::pdu::{CommandStatus, SubmitSm, data_coding};
use smpp::receipt::{MessageIdIndex, MessageState};
use smpp::{BindConfig, Client, Error, Inbound};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../peers/smsc")
}

/// A running `smsc.js`, its port, and its stdout as parsed JSON events.
struct Smsc {
    child: Child,
    port: u16,
    events: mpsc::UnboundedReceiver<Value>,
}

impl Smsc {
    async fn start(args: &[&str]) -> Smsc {
        let dir = peer_dir();
        let install = "run peers/smsc/install.sh (needs node 20+ and npm) before these tests";
        match std::process::Command::new("node").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            _ => panic!("`node` is not available: {install}"),
        }
        assert!(
            dir.join("node_modules/smpp/package.json").exists(),
            "node-smpp is not installed in {}: {install}",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("smsc.js")
            .args(["--port", "0"])
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starts node smsc.js");
        let stdout = child.stdout.take().unwrap();
        let (tx, mut events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("smsc.js printed non-JSON {line:?}: {e}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let listening = timeout(WAIT, events.recv())
            .await
            .expect("smsc.js says it is listening")
            .expect("smsc.js exited before listening");
        assert_eq!(listening["event"], "listening", "{listening}");
        let port = listening["port"].as_u64().unwrap() as u16;
        Smsc {
            child,
            port,
            events,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The next event named `name`, skipping others.
    async fn next(&mut self, name: &str) -> Value {
        timeout(WAIT, async {
            loop {
                let event = self.events.recv().await.expect("smsc.js exited");
                if event["event"] == name {
                    return event;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {name} event from smsc.js"))
    }

    /// Asks the peer to stop (SIGTERM) and returns its summary.
    async fn stop(&mut self) -> Value {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let summary = self.next("summary").await;
        let exit = timeout(WAIT, self.child.wait()).await.unwrap().unwrap();
        assert!(exit.success(), "smsc.js exited with {exit}");
        summary
    }
}

fn bind_config() -> BindConfig {
    let mut config = BindConfig::new("otpgate", "secret");
    config.response_timeout = Duration::from_secs(5);
    config
}

async fn connect(smsc: &Smsc) -> (Client, mpsc::Receiver<Inbound>) {
    Client::connect(smsc.addr(), bind_config())
        .await
        .expect("binds to smsc.js")
}

fn ucs2(text: &str) -> Bytes {
    text.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
}

/// GSM 03.38 default alphabet, unpacked, for the characters these tests use.
fn gsm7(text: &str) -> Bytes {
    let mut out = Vec::new();
    for c in text.chars() {
        match c {
            '@' => out.push(0x00),
            '£' => out.push(0x01),
            '$' => out.push(0x02),
            '_' => out.push(0x11),
            '€' => out.extend_from_slice(&[0x1B, 0x65]),
            '{' => out.extend_from_slice(&[0x1B, 0x28]),
            '}' => out.extend_from_slice(&[0x1B, 0x29]),
            '[' => out.extend_from_slice(&[0x1B, 0x3C]),
            ']' => out.extend_from_slice(&[0x1B, 0x3E]),
            'A'..='Z' | 'a'..='z' | '0'..='9' | ' ' | '.' | ',' | ':' | '!' | '?' | '-' => {
                out.push(c as u8)
            }
            other => panic!("test encoder lacks {other:?}"),
        }
    }
    out.into()
}

#[tokio::test]
async fn binds_with_the_right_credentials_and_unbinds_cleanly() {
    let mut smsc = Smsc::start(&[]).await;
    let (client, _inbound) = connect(&smsc).await;
    let bind = smsc.next("bind").await;
    assert_eq!(bind["ok"], true);
    assert_eq!(bind["mode"], "transceiver");
    assert_eq!(bind["interface_version"], 0x34);
    assert_eq!(client.smsc_system_id(), "otpgate-smsc");
    client.enquire_link().await.unwrap();
    client.unbind().await.unwrap();
    smsc.next("unbind").await;
    assert!(client.is_closed());
}

#[tokio::test]
async fn a_wrong_password_is_bind_failed_with_the_smsc_status() {
    let smsc = Smsc::start(&[]).await;
    let mut config = bind_config();
    config.password = "wrong".into();
    let err = Client::connect(smsc.addr(), config).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::BindFailed {
                status: CommandStatus::EsmeRinvpaswd
            }
        ),
        "{err:?}"
    );

    let mut config = bind_config();
    config.system_id = "stranger".into();
    let err = Client::connect(smsc.addr(), config).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::BindFailed {
                status: CommandStatus::EsmeRinvsysid
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn gsm_text_arrives_intact() {
    let mut smsc = Smsc::start(&[]).await;
    let (client, _inbound) = connect(&smsc).await;
    let text = "Your code is 123456. @ £5 $ _ {x} [y] costs €1!";
    let sm = SubmitSm::new(
        "OTPGATE",
        "9779841234567",
        data_coding::SMSC_DEFAULT,
        gsm7(text),
    );
    let resp = client.submit(&sm).await.unwrap();
    assert!(resp.is_ok());
    let event = smsc.next("submit_sm").await;
    assert_eq!(event["text"], text);
    assert_eq!(event["data_coding"], 0);
    assert_eq!(event["source"], "OTPGATE");
    assert_eq!(event["source_ton"], 5);
    assert_eq!(event["destination"], "9779841234567");
    assert_eq!(event["message_id"], resp.message_id.as_str());
}

#[tokio::test]
async fn devanagari_arrives_intact_as_ucs2() {
    let mut smsc = Smsc::start(&[]).await;
    let (client, _inbound) = connect(&smsc).await;
    let text = "हेल्लो नमस्ते";
    let sm = SubmitSm::new("OTPGATE", "9779841234567", data_coding::UCS2, ucs2(text));
    assert!(client.submit(&sm).await.unwrap().is_ok());
    let event = smsc.next("submit_sm").await;
    assert_eq!(event["data_coding"], 8);
    assert_eq!(event["text"], text);
}

/// A Devanagari text needing three UCS-2 parts of at most 67 units.
fn long_devanagari() -> (String, Vec<Bytes>) {
    let text = "नमस्ते, तपाईंको कोड १२३४५६ हो। ".repeat(6);
    let units: Vec<u16> = text.encode_utf16().collect();
    let parts: Vec<Bytes> = units
        .chunks(67)
        .map(|chunk| chunk.iter().flat_map(|u| u.to_be_bytes()).collect())
        .collect();
    (text, parts)
}

#[tokio::test]
async fn a_long_message_in_udh_parts_arrives_as_those_parts() {
    let mut smsc = Smsc::start(&[]).await;
    let (client, _inbound) = connect(&smsc).await;
    let (text, parts) = long_devanagari();
    assert!(parts.len() >= 3);
    let template = SubmitSm::new("OTPGATE", "9779841234567", data_coding::UCS2, Bytes::new());
    let pdus = build_submits(&template, &parts, Concatenation::Udh8 { reference: 0x5A }).unwrap();
    for pdu in &pdus {
        assert!(client.submit(pdu).await.unwrap().is_ok());
    }
    for seq in 1..=parts.len() {
        let event = smsc.next("submit_sm").await;
        assert_eq!(event["udh"]["iei"], 0);
        assert_eq!(event["udh"]["ref"], 0x5A);
        assert_eq!(event["udh"]["total"], parts.len());
        assert_eq!(event["udh"]["seq"], seq);
        let expected: Vec<u16> = parts[seq - 1]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(event["text"], String::from_utf16(&expected).unwrap());
    }
    let whole = smsc.next("concatenated").await;
    assert_eq!(whole["kind"], "udh");
    assert_eq!(whole["text"], text.as_str());
}

#[tokio::test]
async fn sar_and_message_payload_long_messages_arrive_whole() {
    let mut smsc = Smsc::start(&[]).await;
    let (client, _inbound) = connect(&smsc).await;
    let (text, parts) = long_devanagari();
    let template = SubmitSm::new("OTPGATE", "9779841234567", data_coding::UCS2, Bytes::new());

    for pdu in build_submits(&template, &parts, Concatenation::Sar { reference: 700 }).unwrap() {
        assert!(client.submit(&pdu).await.unwrap().is_ok());
    }
    let first = smsc.next("submit_sm").await;
    assert_eq!(first["sar"]["ref"], 700);
    assert_eq!(first["sar"]["seq"], 1);
    let whole = smsc.next("concatenated").await;
    assert_eq!(whole["kind"], "sar");
    assert_eq!(whole["text"], text.as_str());

    let payload = build_submits(&template, &parts, Concatenation::MessagePayload).unwrap();
    assert_eq!(payload.len(), 1);
    assert!(client.submit(&payload[0]).await.unwrap().is_ok());
    let event = smsc.next("submit_sm").await;
    assert_eq!(event["message_payload"], true);
    assert_eq!(event["text"], text.as_str());
}

/// Submits to destinations ending in even (delivered) and odd (undeliverable)
/// digits and matches the receipts back through a [`MessageIdIndex`].
async fn receipts_round_trip(args: &[&str]) {
    let mut smsc = Smsc::start(args).await;
    let (client, mut inbound) = connect(&smsc).await;
    let mut index = MessageIdIndex::new();
    let destinations = [
        "9779841000002",
        "9779841000003",
        "9779841000004",
        "9779841000005",
    ];
    for destination in destinations {
        let sm = SubmitSm::new("OTPGATE", destination, 0, gsm7("Your code is 4321"));
        let resp = client.submit(&sm).await.unwrap();
        assert!(resp.is_ok());
        index.insert(&resp.message_id, destination);
    }
    for _ in destinations {
        let item = timeout(WAIT, inbound.recv()).await.unwrap().unwrap();
        let Inbound::Receipt { receipt, pdu } = item else {
            panic!("expected a receipt, got {item:?}")
        };
        let id = receipt.message_id.as_deref().unwrap();
        let destination = index
            .remove(id)
            .unwrap_or_else(|| panic!("receipt id {id} matches no submission"));
        assert_eq!(pdu.source_addr, destination);
        let odd = destination.ends_with(['1', '3', '5', '7', '9']);
        let expected = if odd {
            MessageState::Undeliverable
        } else {
            MessageState::Delivered
        };
        assert_eq!(receipt.state, Some(expected), "{receipt:?}");
    }
    assert!(index.is_empty());
    for _ in destinations {
        let ack = smsc.next("deliver_sm_resp").await;
        assert_eq!(ack["status"], 0);
    }
}

#[tokio::test]
async fn receipts_come_back_when_the_receipt_spells_the_id_in_decimal() {
    receipts_round_trip(&["--receipts", "mixed", "--receipt-id-format", "decimal"]).await;
}

#[tokio::test]
async fn receipts_in_text_form_only_match_when_the_receipt_spells_the_id_in_hex() {
    receipts_round_trip(&[
        "--receipts",
        "mixed",
        "--receipt-id-format",
        "hex",
        "--receipt-form",
        "text",
    ])
    .await;
}

#[tokio::test]
async fn tlv_only_receipts_come_back() {
    receipts_round_trip(&["--receipts", "mixed", "--receipt-form", "tlv"]).await;
}

#[tokio::test]
async fn throttling_answers_surface() {
    let smsc = Smsc::start(&["--throttle-every", "3"]).await;
    let (client, _inbound) = connect(&smsc).await;
    let mut statuses = Vec::new();
    for n in 0..6 {
        let sm = SubmitSm::new("OTPGATE", "9779841234567", 0, gsm7(&format!("code {n}")));
        statuses.push(client.submit(&sm).await.unwrap().is_throttled());
    }
    assert_eq!(statuses, [false, false, true, false, false, true]);
}

#[tokio::test]
async fn the_window_is_never_exceeded_under_a_thousand_rapid_submits() {
    let mut smsc = Smsc::start(&["--window-check", "10", "--resp-delay-ms", "1", "--quiet"]).await;
    let (client, _inbound) = connect(&smsc).await;
    let submits: Vec<_> = (0..1000)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let sm = SubmitSm::new("OTPGATE", "9779841234567", 0, gsm7(&format!("code {n}")));
                client.submit(&sm).await
            })
        })
        .collect();
    for submit in submits {
        assert!(submit.await.unwrap().unwrap().is_ok());
    }
    client.unbind().await.unwrap();
    let summary = smsc.stop().await;
    assert_eq!(summary["accepted"], 1000, "{summary}");
    assert_eq!(summary["window_exceeded"], 0, "{summary}");
    let max = summary["max_outstanding"].as_u64().unwrap();
    assert!((2..=10).contains(&max), "max outstanding {max}: {summary}");
}

#[tokio::test]
async fn a_killed_smsc_fails_pending_submits_and_closes_the_client() {
    let mut smsc = Smsc::start(&["--no-resp"]).await;
    let (client, _inbound) = connect(&smsc).await;
    let pending: Vec<_> = (0..5)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let sm = SubmitSm::new("OTPGATE", "9779841234567", 0, gsm7(&format!("code {n}")));
                client.submit(&sm).await
            })
        })
        .collect();
    for _ in 0..5 {
        smsc.next("submit_sm").await;
    }
    smsc.child.start_kill().unwrap();
    for submit in pending {
        let result = timeout(Duration::from_secs(3), submit)
            .await
            .expect("a pending submit fails fast instead of hanging")
            .unwrap();
        assert!(matches!(result, Err(Error::ConnectionClosed)), "{result:?}");
    }
    timeout(Duration::from_secs(3), client.closed())
        .await
        .unwrap();
    assert!(client.is_closed());
}

#[tokio::test]
async fn mobile_originated_messages_and_smsc_enquire_links_are_answered() {
    let mut smsc = Smsc::start(&["--mo-text", "नमस्ते STOP", "--enquire-link-ms", "100"]).await;
    let (_client, mut inbound) = connect(&smsc).await;
    let item = timeout(WAIT, inbound.recv()).await.unwrap().unwrap();
    let Inbound::Message(pdu) = item else {
        panic!("expected an MO message, got {item:?}")
    };
    assert_eq!(pdu.data_coding, data_coding::UCS2);
    let units: Vec<u16> = pdu
        .short_message
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(String::from_utf16(&units).unwrap(), "नमस्ते STOP");
    assert_eq!(smsc.next("deliver_sm_resp").await["status"], 0);
    assert_eq!(smsc.next("enquire_link_resp").await["status"], 0);
}
