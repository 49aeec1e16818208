//! Text OTPs through SMSC implementations that nobody here wrote, besides the
//! node-smpp peer of `smsc.rs`:
//!
//! - Perl `Net::SMPP` in listening mode (`peers/netsmpp/smsc.pl`, Debian
//!   `libnet-smpp-perl`);
//! - Jasmin's SMPP server (`peers/jasmin/`, PyPI `jasmin` 0.11.1 with the
//!   RabbitMQ and Redis of the machine), routing every message to a node-smpp
//!   connector, so what reached the far end is read from node-smpp's events.
//!
//! `scripts/install-test-deps.sh` installs both. Without them these tests fail,
//! they never skip. Each test runs once per peer and store; volumes stay small
//! (Jasmin passes ~40 messages/s end to end).

use std::io::{BufRead, BufReader};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, text_send};
use crate::smsc::{Smsc as NodeSmsc, app_with_smsc, id_of};

/// Where `scripts/install-test-deps.sh` puts Jasmin's virtualenv.
const JASMIN_VENV: &str = "/opt/otpgate-jasmin-0.11.1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository")
}

/// A peer process printing one JSON event per stdout line, the first useful
/// one `{"event":"listening","port":N}`.
pub struct Peer {
    child: Child,
    pub port: u16,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Peer {
    fn spawn(mut command: Command, what: &str) -> Peer {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{what} could not start ({e}): run scripts/install-test-deps.sh")
            });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => panic!(
                    "{what} exited before listening: is it installed? (scripts/install-test-deps.sh)"
                ),
            };
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["event"] == "listening"
            {
                break v["port"].as_u64().unwrap() as u16;
            }
        };
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Peer {
            child,
            port,
            events,
        }
    }

    /// `peers/netsmpp/smsc.pl` on `port` (0: a free one).
    pub fn netsmpp(port: u16, args: &[&str]) -> Peer {
        let script = repo().join("peers/netsmpp/smsc.pl");
        let mut command = Command::new("perl");
        command
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(["--system-id", "otpgate", "--password", "secret"])
            .args(args);
        Peer::spawn(command, "the Net::SMPP SMSC (Debian libnet-smpp-perl)")
    }

    /// Jasmin's SMPP server (`peers/jasmin/start.py`) routing to `connector_port`.
    pub fn jasmin(port: u16, connector_port: u16, smpps_throughput: u32) -> Peer {
        let python = PathBuf::from(JASMIN_VENV).join("bin/python");
        assert!(
            python.exists(),
            "Jasmin is not installed in {JASMIN_VENV}: run scripts/install-test-deps.sh"
        );
        let mut command = Command::new(python);
        command
            .arg(repo().join("peers/jasmin/start.py"))
            .args(["--connector-port", &connector_port.to_string()])
            .args(["--smpps-throughput", &smpps_throughput.to_string()]);
        if port != 0 {
            command.args(["--port", &port.to_string(), "--keep-state"]);
        }
        Peer::spawn(command, "Jasmin (peers/jasmin/start.py)")
    }

    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == kind)
            .cloned()
            .collect()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Which SMSC the gateway binds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NetSmpp,
    /// Jasmin in front of a node-smpp SMSC.
    Jasmin,
}

/// The SMSC under test: where the gateway binds, and the events of what
/// reached the far end.
pub struct Smsc {
    kind: Kind,
    args: Vec<String>,
    peer: Peer,
    /// Events of earlier runs of a restarted SMSC.
    earlier: Vec<Value>,
    /// Jasmin's connector: the SMSC messages end at.
    far_end: Option<NodeSmsc>,
    /// Held while a Jasmin runs: one jasmind per machine.
    _lock: Option<UnixListener>,
}

impl Smsc {
    /// `receipts`: none, delivered, undeliverable or mixed (odd last digit
    /// undeliverable); `throttle_every`: every Nth submit_sm is answered
    /// ESME_RTHROTTLED (0: never).
    pub fn start(kind: Kind, receipts: &str, throttle: bool) -> Smsc {
        let (lock, far_end) = match kind {
            Kind::NetSmpp => (None, None),
            Kind::Jasmin => {
                // jasmind refuses to run twice on a machine, and all share its
                // RabbitMQ virtual host: Jasmin tests take turns.
                let lock = jasmin_turn();
                // Receipts a moment after the submit_sm_resp, as from a
                // handset: Jasmin maps ids once it relayed the response, and
                // retries an earlier receipt only 10 s later.
                let far_end =
                    NodeSmsc::start(&["--receipts", receipts, "--receipt-delay-ms", "300"]);
                (Some(lock), Some(far_end))
            }
        };
        let args = match kind {
            // Every third submit_sm is refused by the SMSC itself.
            Kind::NetSmpp => vec![
                "--receipts".to_owned(),
                receipts.to_owned(),
                "--throttle-every".to_owned(),
                if throttle { "3" } else { "0" }.to_owned(),
            ],
            // Jasmin refuses what passes its user's quota of 5 submit_sm a second.
            Kind::Jasmin => vec![
                far_end.as_ref().unwrap().port.to_string(),
                if throttle { "5" } else { "0" }.to_owned(),
            ],
        };
        let peer = Self::run(kind, 0, &args);
        Smsc {
            kind,
            args,
            peer,
            earlier: Vec::new(),
            far_end,
            _lock: lock,
        }
    }

    fn run(kind: Kind, port: u16, args: &[String]) -> Peer {
        match kind {
            Kind::NetSmpp => {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Peer::netsmpp(port, &args)
            }
            Kind::Jasmin => Peer::jasmin(port, args[0].parse().unwrap(), args[1].parse().unwrap()),
        }
    }

    /// The port the gateway binds to.
    pub fn port(&self) -> u16 {
        self.peer.port
    }

    /// Every event of `kind` from every run, oldest first.
    pub fn events(&self, kind: &str) -> Vec<Value> {
        if let Some(node) = &self.far_end {
            return node.events(kind);
        }
        self.earlier
            .iter()
            .filter(|e| e["event"] == kind)
            .cloned()
            .chain(self.peer.events(kind))
            .collect()
    }

    /// Accepted submit_sm events at the far end.
    pub fn accepted(&self) -> Vec<Value> {
        self.events("submit_sm")
            .into_iter()
            .filter(|e| e["status"] == 0)
            .collect()
    }

    pub async fn accepted_at_least(&self, n: usize) -> Vec<Value> {
        wait_until(&format!("{n} accepted submit_sm at the SMSC"), || {
            self.accepted().len() >= n
        })
        .await;
        self.accepted()
    }

    /// Kills the SMSC (SIGKILL: no unbind, connections drop).
    pub fn kill(&mut self) {
        self.peer.kill();
    }

    /// Starts it again where the gateway expects it.
    pub fn restart(&mut self) {
        let port = self.peer.port;
        self.earlier
            .extend(self.peer.events.lock().unwrap().drain(..));
        self.peer = Self::run(self.kind, port, &self.args);
    }
}

/// Waits for this process's turn to run a Jasmin: a listening socket in the
/// abstract namespace, which the kernel frees when its process dies however.
fn jasmin_turn() -> UnixListener {
    let name = SocketAddr::from_abstract_name(b"otpgate-jasmin-tests").unwrap();
    // Each Jasmin test takes well under a minute; ten can be ahead of us.
    for _ in 0..6000 {
        match UnixListener::bind_addr(&name) {
            Ok(turn) => return turn,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => panic!("taking the Jasmin lock: {e}"),
        }
    }
    panic!("no turn to run Jasmin within 20 minutes")
}

async fn wait_until<F: FnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..800 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn provider_ids(app: &TestApp, id: i64) -> Vec<String> {
    let d: Value = app
        .client
        .get(app.url(&format!("/api/v1/auths/otps/{id}/")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    d["data"]["provider_message_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("{d}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

async fn gsm_and_ucs2_texts_arrive_intact_and_are_delivered(kind: Kind, backend: Backend) {
    let smsc = Smsc::start(kind, "delivered", false);
    let app = app_with_smsc(backend, smsc.port(), "secret").await;
    let gsm = app
        .send_ok(&json!({"number": "9851023212", "message": "Code {otp} [ok] €5 ^{}", "sms_send_options": "text"}))
        .await;
    let ucs2 = app
        .send_ok(&json!({"number": "9801234567", "message": "हेल्लो नमस्ते {otp}", "sms_send_options": "text"}))
        .await;
    for (reply, coding, destination) in [(&gsm, 0, "9779851023212"), (&ucs2, 8, "9779801234567")] {
        let otp = app.wait_for_status(id_of(reply), "delivered").await;
        let submits = smsc.accepted_at_least(2).await;
        let s = submits
            .iter()
            .find(|s| s["destination"] == destination)
            .unwrap_or_else(|| panic!("nothing reached {destination}: {submits:?}"));
        assert_eq!(s["text"], reply["data"]["details"]["message"], "{s}");
        assert_eq!(s["data_coding"], coding, "{s}");
        assert!(otp.delivered_at.is_some());
        assert!(!otp.refunded);
        assert_eq!(otp.route.as_deref(), Some("smsc"));
        if kind == Kind::NetSmpp {
            // Jasmin answers with ids of its own, not the connector's.
            assert_eq!(otp.provider_message_id.as_deref(), s["message_id"].as_str());
        }
    }
    assert_eq!(smsc.accepted().len(), 2);
    assert_eq!(app.balance().await, (98, 10));
}

async fn a_long_message_goes_in_as_many_parts_as_were_charged(kind: Kind, backend: Backend) {
    let smsc = Smsc::start(kind, "delivered", false);
    let app = app_with_smsc(backend, smsc.port(), "secret").await;
    let template = format!("{} {{otp}}", "कृपया यो कोड प्रयोग गर्नुहोस्".repeat(5));
    let reply = app
        .send_ok(&json!({"number": "9801234567", "message": template, "sms_send_options": "text"}))
        .await;
    let charged = reply["data"]["details"]["credits_used"].as_i64().unwrap();
    assert!(charged >= 3, "{charged}");
    let id = id_of(&reply);
    let otp = app.wait_for_status(id, "delivered").await;
    let parts = smsc.accepted_at_least(charged as usize).await;
    assert_eq!(parts.len() as i64, charged, "parts sent = segments charged");
    wait_until("the SMSC to put the parts together", || {
        !smsc.events("concatenated").is_empty()
    })
    .await;
    let whole = smsc.events("concatenated");
    assert_eq!(whole.len(), 1, "{whole:?}");
    assert_eq!(whole[0]["total"], charged);
    assert_eq!(whole[0]["text"], reply["data"]["details"]["message"]);
    assert_eq!(provider_ids(&app, id).await.len() as i64, charged);
    assert!(!otp.refunded);
    assert_eq!(app.balance().await, (100 - charged, 10));
}

async fn undeliverable_receipts_fail_and_refund_while_delivered_ones_are_paid(
    kind: Kind,
    backend: Backend,
) {
    // `mixed`: destinations ending in an odd digit come back UNDELIV.
    let smsc = Smsc::start(kind, "mixed", false);
    let app = app_with_smsc(backend, smsc.port(), "secret").await;
    let mut bad = Vec::new();
    let mut good = Vec::new();
    for i in 0..6 {
        let number = format!("98510232{i:02}");
        let id = id_of(&app.send_ok(&text_send(&number)).await);
        if i % 2 == 1 { &mut bad } else { &mut good }.push(id);
    }
    for id in &bad {
        let otp = app.wait_for_status(*id, "undeliverable").await;
        assert!(otp.refunded, "{otp:?}");
        assert!(otp.error_code.is_some(), "{otp:?}");
        assert!(otp.delivered_at.is_none());
    }
    for id in &good {
        let otp = app.wait_for_status(*id, "delivered").await;
        assert!(!otp.refunded);
    }
    assert_eq!(smsc.accepted_at_least(6).await.len(), 6);
    assert_eq!(app.balance().await, (97, 10), "only the delivered are paid");
    let ledger = app.store.ledger(app.account_id).await.unwrap();
    let mut refunded: Vec<i64> = ledger
        .iter()
        .filter(|e| e.kind == "refund")
        .map(|e| {
            assert_eq!(e.sms_delta, 1);
            e.otp_id.unwrap()
        })
        .collect();
    refunded.sort();
    assert_eq!(refunded, bad, "one refund per undeliverable OTP");
}

async fn throttling_slows_the_gateway_down_and_everything_is_still_delivered(
    kind: Kind,
    backend: Backend,
) {
    let smsc = Smsc::start(kind, "delivered", true);
    let app = app_with_smsc(backend, smsc.port(), "secret").await;
    let ids = futures_util::future::join_all((0..24).map(|i| {
        let app = &app;
        async move { id_of(&app.send_ok(&text_send(&format!("98010001{i:02}"))).await) }
    }))
    .await;
    for id in &ids {
        let otp = app.wait_for_status(*id, "delivered").await;
        assert!(!otp.refunded);
    }
    if kind == Kind::NetSmpp {
        // Jasmin throttles in front of node-smpp, whose events are what we see.
        let throttled = smsc
            .events("submit_sm")
            .iter()
            .filter(|s| s["status"] == 0x58)
            .count();
        assert!(throttled >= 1, "the SMSC throttled");
    }
    let mut arrived: Vec<String> = smsc
        .accepted()
        .iter()
        .map(|s| s["destination"].as_str().unwrap().to_owned())
        .collect();
    arrived.sort();
    arrived.dedup();
    assert_eq!(arrived.len(), 24, "every OTP reached the SMSC");
    assert_eq!(app.balance().await, (76, 10));
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("otpgate_smpp_total{route=\"smsc\",event=\"throttled\"}"),
        "{metrics}"
    );
}

async fn an_smsc_restart_mid_stream_loses_nothing(kind: Kind, backend: Backend) {
    let mut smsc = Smsc::start(kind, "delivered", false);
    let app = app_with_smsc(backend, smsc.port(), "secret").await;
    let mut ids = Vec::new();
    for i in 0..15 {
        ids.push(id_of(
            &app.send_ok(&text_send(&format!("98010000{i:02}"))).await,
        ));
    }
    wait_until("some messages to arrive", || !smsc.accepted().is_empty()).await;
    smsc.kill();
    for i in 15..30 {
        ids.push(id_of(
            &app.send_ok(&text_send(&format!("98010000{i:02}"))).await,
        ));
    }
    smsc.restart();
    for id in &ids[..15] {
        // An SMSC killed between its submit_sm_resp and its receipt never sends
        // that receipt: such an OTP stays `sent`, which is what the gateway knows.
        let otp = app.wait_for_any_status(*id, &["sent", "delivered"]).await;
        assert!(otp.provider_message_id.is_some());
        assert!(!otp.refunded);
    }
    for id in &ids[15..] {
        // Sent while the SMSC was down: submitted to the restarted one, whose
        // receipts (Jasmin: relayed from the far end) reach the gateway.
        let otp = app.wait_for_status(*id, "delivered").await;
        assert!(otp.provider_message_id.is_some());
        assert!(otp.delivered_at.is_some());
        assert!(!otp.refunded);
    }
    // Jasmin queues what it accepted: wait for the far end to have it all.
    let arrived = || -> std::collections::BTreeSet<String> {
        smsc.accepted()
            .iter()
            .map(|s| s["destination"].as_str().unwrap().to_owned())
            .collect()
    };
    for _ in 0..800 {
        if arrived().len() >= 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let arrived = arrived();
    let mut missing = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if !arrived.contains(&format!("97798010000{i:02}")) {
            missing.push((i, *id));
        }
    }
    if kind == Kind::Jasmin {
        // Jasmin answers submit_sm once its publish to RabbitMQ is handed to
        // Twisted, unconfirmed: killed in that instant, it loses a message it
        // answered (README, "Jasmin's SMPP server"). Only a message of the
        // killed run may be missing, and the gateway still has it as `sent`.
        if !missing.is_empty() {
            eprintln!("Jasmin lost what it answered as it was killed: {missing:?}");
        }
        for (i, id) in &missing {
            assert!(*i < 15, "OTP {id}, sent after the restart, is lost");
            let otp = app.store.otp(app.account_id, *id).await.unwrap().unwrap();
            assert_eq!(otp.status.as_str(), "sent", "{otp:?}");
        }
    } else {
        assert_eq!(missing, [], "every accepted OTP reached the SMSC");
    }
    assert_eq!(app.balance().await, (70, 10), "nothing refunded");
}

for_each_backend! {
    peers: [
        Kind::NetSmpp => (netsmpp_sqlite, netsmpp_postgres),
        Kind::Jasmin => (jasmin_sqlite, jasmin_postgres),
    ];
    gsm_and_ucs2_texts_arrive_intact_and_are_delivered,
    a_long_message_goes_in_as_many_parts_as_were_charged,
    undeliverable_receipts_fail_and_refund_while_delivered_ones_are_paid,
    throttling_slows_the_gateway_down_and_everything_is_still_delivered,
    an_smsc_restart_mid_stream_loses_nothing
}
