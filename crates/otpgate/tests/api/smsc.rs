//! Text OTPs through a real SMSC: node-smpp driven by `peers/smsc/smsc.js`.
//! Needs Node.js and `peers/smsc/install.sh` (scripts/test.sh runs it); without
//! them these tests fail, they never skip.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otp_domain::channel::Channel;
use otpgate::config::{DriverConfig, RouteConfig, Secret};
use otpgate::delivery::smpp::SmppConfig;
use serde_json::{Value, json};

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with, text_send};

/// A running SMSC peer and the JSON events it printed.
pub struct Smsc {
    child: Child,
    /// Where `--commands` lines go.
    stdin: ChildStdin,
    pub port: u16,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Smsc {
    pub fn start(args: &[&str]) -> Smsc {
        Self::start_on(0, args)
    }

    pub fn start_on(port: u16, args: &[&str]) -> Smsc {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../peers/smsc")
            .canonicalize()
            .expect("peers/smsc is part of the repository");
        assert!(
            dir.join("node_modules/smpp").exists(),
            "the SMSC peer is not installed: run peers/smsc/install.sh (or scripts/test.sh)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("smsc.js"))
            .args([
                "--port",
                &port.to_string(),
                "--system-id",
                "otpgate",
                "--password",
                "secret",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node is not installed: run scripts/install-test-deps.sh");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("the SMSC exited before listening")
                .unwrap();
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["event"] == "listening"
            {
                break v["port"].as_u64().unwrap() as u16;
            }
        };
        let stdin = child.stdin.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Smsc {
            child,
            stdin,
            port,
            events,
        }
    }

    /// Switches the receipts of every submit_sm from now on to `mode`
    /// (`delivered`, `undeliverable`, ...), once the peer said it did; the
    /// peer must run with `--commands`.
    pub async fn set_receipts(&mut self, mode: &str) {
        let before = self.events("receipts").len();
        writeln!(self.stdin, "receipts {mode}").unwrap();
        self.stdin.flush().unwrap();
        wait_until(&format!("the SMSC to send {mode} receipts"), || {
            self.events("receipts")
                .get(before)
                .is_some_and(|e| e["mode"] == mode)
        })
        .await;
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

    /// Accepted submit_sm events.
    pub fn accepted(&self) -> Vec<Value> {
        self.events("submit_sm")
            .into_iter()
            .filter(|e| e["status"] == 0)
            .collect()
    }

    /// Accepted submit_sm events, once at least `n` have been read. The peer's
    /// output is read on another thread, so its event for a submit_sm can
    /// trail the receipt that the submit_sm caused.
    pub async fn accepted_at_least(&self, n: usize) -> Vec<Value> {
        wait_until(&format!("{n} accepted submit_sm at the SMSC"), || {
            self.accepted().len() >= n
        })
        .await;
        self.accepted()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Smsc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn smpp_route(port: u16, password: &str) -> RouteConfig {
    RouteConfig {
        name: "smsc".into(),
        channel: Channel::Text,
        prefixes: Vec::new(),
        weight: None,
        driver: DriverConfig::Smpp(SmppConfig {
            port,
            system_id: "otpgate".into(),
            password: Secret::new(password.into()),
            reconnect_max_seconds: 1,
            ..SmppConfig::default()
        }),
    }
}

pub async fn app_with_smsc(backend: Backend, port: u16, password: &str) -> TestApp {
    let route = smpp_route(port, password);
    spawn_app_with(backend, move |c| c.routes = vec![route]).await
}

pub(crate) async fn wait_until<F: FnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn detail(app: &TestApp, id: i64) -> Value {
    app.client
        .get(app.url(&format!("/api/v1/auths/otps/{id}/")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub(crate) fn id_of(reply: &Value) -> i64 {
    reply["data"]["details"]["id"].as_i64().unwrap()
}

async fn gsm_text_reaches_the_smsc_and_its_receipt_marks_it_delivered(backend: Backend) {
    let smsc = Smsc::start(&["--receipts", "delivered"]);
    let app = app_with_smsc(backend, smsc.port, "secret").await;
    let reply = app.send_ok(&json!({"number": "9851023212", "message": "Code {otp} [ok] €5", "sms_send_options": "text"})).await;
    let id = id_of(&reply);
    let otp = app.wait_for_status(id, "delivered").await;
    let submits = smsc.accepted_at_least(1).await;
    assert_eq!(submits.len(), 1);
    assert_eq!(submits[0]["text"], reply["data"]["details"]["message"]);
    assert_eq!(submits[0]["data_coding"], 0);
    assert_eq!(submits[0]["destination"], "9779851023212");
    assert_eq!(submits[0]["source"], "otpgate");
    assert_eq!(
        otp.provider_message_id.as_deref(),
        submits[0]["message_id"].as_str()
    );
    assert_eq!(otp.route.as_deref(), Some("smsc"));
    assert!(otp.delivered_at.is_some());
    let d = detail(&app, id).await;
    let history: Vec<&str> = d["data"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["sent", "delivered"]);
    assert_eq!(
        d["data"]["provider_message_ids"].as_array().unwrap().len(),
        1
    );
    assert_eq!(app.balance().await, (99, 10));
    app.stop().await;
    // The peer's output is read on another thread: wait for the line to arrive.
    wait_until("the SMSC to log the unbind of a clean shutdown", || {
        !smsc.events("unbind").is_empty()
    })
    .await;
    assert_eq!(smsc.events("unbind").len(), 1);
}

async fn devanagari_arrives_intact_as_ucs2(backend: Backend) {
    let smsc = Smsc::start(&["--receipts", "delivered"]);
    let app = app_with_smsc(backend, smsc.port, "secret").await;
    let reply = app.send_ok(&json!({"number": "9801234567", "message": "हेल्लो नमस्ते {otp}", "sms_send_options": "text"})).await;
    app.wait_for_status(id_of(&reply), "delivered").await;
    let s = &smsc.accepted_at_least(1).await[0];
    assert_eq!(s["data_coding"], 8);
    assert_eq!(s["text"], reply["data"]["details"]["message"]);
}

async fn a_long_message_goes_in_as_many_parts_as_were_charged(backend: Backend) {
    let smsc = Smsc::start(&["--receipts", "delivered"]);
    let app = app_with_smsc(backend, smsc.port, "secret").await;
    let template = format!("{} {{otp}}", "कृपया यो कोड प्रयोग गर्नुहोस्".repeat(5));
    let reply = app
        .send_ok(&json!({"number": "9801234567", "message": template, "sms_send_options": "text"}))
        .await;
    let charged = reply["data"]["details"]["credits_used"].as_i64().unwrap();
    assert!(charged >= 3, "{charged}");
    let id = id_of(&reply);
    app.wait_for_status(id, "delivered").await;
    let parts = smsc.accepted_at_least(charged as usize).await;
    assert_eq!(parts.len() as i64, charged, "parts sent = segments charged");
    assert!(
        parts.iter().all(|p| p["udh"]["total"] == charged),
        "{parts:?}"
    );
    let whole = smsc.events("concatenated");
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0]["text"], reply["data"]["details"]["message"]);
    let d = detail(&app, id).await;
    assert_eq!(
        d["data"]["provider_message_ids"].as_array().unwrap().len() as i64,
        charged
    );
}

async fn an_undeliverable_receipt_refunds_the_credits(backend: Backend) {
    // `mixed`: destinations ending in an odd digit come back UNDELIV.
    let smsc = Smsc::start(&["--receipts", "mixed"]);
    let app = app_with_smsc(backend, smsc.port, "secret").await;
    let bad = app.send_ok(&text_send("9851023213")).await;
    let good = app.send_ok(&text_send("9851023212")).await;
    let failed = app.wait_for_status(id_of(&bad), "undeliverable").await;
    app.wait_for_status(id_of(&good), "delivered").await;
    assert!(failed.refunded);
    assert!(failed.error_code.is_some());
    assert_eq!(
        app.balance().await,
        (99, 10),
        "only the delivered one is paid for"
    );
    let ledger = app.store.ledger(app.account_id).await.unwrap();
    let refund = ledger
        .iter()
        .find(|e| e.kind == "refund")
        .expect("a refund row");
    assert_eq!((refund.sms_delta, refund.otp_id), (1, Some(id_of(&bad))));
    let (_, list) = app.list("").await;
    let statuses: Vec<&str> = list["results"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["delivered", "undeliverable"]);
}

async fn receipts_match_when_the_smsc_spells_ids_differently(backend: Backend) {
    for format in ["hex", "decimal"] {
        let smsc = Smsc::start(&["--receipts", "delivered", "--receipt-id-format", format]);
        let app = app_with_smsc(backend, smsc.port, "secret").await;
        let ids: Vec<i64> = futures_util::future::join_all((0..20).map(|i| {
            let app = &app;
            async move { id_of(&app.send_ok(&text_send(&format!("98510232{i:02}"))).await) }
        }))
        .await;
        for id in ids {
            app.wait_for_status(id, "delivered").await;
        }
        app.stop().await;
    }
}

async fn a_wrong_password_shows_in_readyz_and_metrics_and_nothing_is_lost(backend: Backend) {
    let smsc = Smsc::start(&["--receipts", "delivered"]);
    let app = app_with_smsc(backend, smsc.port, "wrongpw").await;
    let reply = app.send_ok(&text_send("9851023212")).await;
    let id = id_of(&reply);
    let mut ready = Value::Null;
    for _ in 0..200 {
        ready = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["routes"][0]["status"] == "bind_refused" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["routes"][0]["status"], "bind_refused", "{ready}");
    assert!(
        ready["routes"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("Rinvpaswd"),
        "{ready}"
    );
    assert!(!ready.to_string().contains("wrongpw"));
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("otpgate_route_up{route=\"smsc\",connection=\"otpgate#0\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("otpgate_smpp_total{route=\"smsc\",event=\"bind_refused\"}"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let otp = app.store.otp(app.account_id, id).await.unwrap().unwrap();
    assert_eq!(otp.status.as_str(), "queued", "waits in the outbox");
    assert!(smsc.accepted().is_empty());
}

async fn an_smsc_restart_mid_stream_loses_nothing(backend: Backend) {
    // The killed peer's stdout events are flushed a tick after its answers, so
    // SIGKILL can take the event of a submit_sm it already answered: its
    // `--record` file is written before each answer leaves.
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("first.rec");
    let mut smsc = Smsc::start(&[
        "--receipts",
        "delivered",
        "--record",
        record.to_str().unwrap(),
    ]);
    let port = smsc.port;
    let app = app_with_smsc(backend, port, "secret").await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(id_of(
            &app.send_ok(&text_send(&format!("98010000{i:02}"))).await,
        ));
    }
    wait_until("some messages to arrive", || !smsc.accepted().is_empty()).await;
    smsc.kill();
    for i in 30..60 {
        ids.push(id_of(
            &app.send_ok(&text_send(&format!("98010000{i:02}"))).await,
        ));
    }
    let smsc2 = Smsc::start_on(port, &["--receipts", "delivered"]);
    for id in &ids {
        // An SMSC killed between its submit_sm_resp and its receipt never sends
        // that receipt: such an OTP stays `sent`, which is what the gateway knows.
        let otp = app.wait_for_any_status(*id, &["sent", "delivered"]).await;
        assert!(otp.provider_message_id.is_some());
    }
    // Every OTP now has the carrier's id, so an SMSC answered its submit_sm;
    // the running peer's event lines for the last of them may still be on
    // their way to the test; the killed one's are in its record file.
    let recorded: Vec<String> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["destination"].as_str().unwrap().to_owned()
        })
        .collect();
    let arrived = || {
        let mut arrived: Vec<String> = smsc2
            .accepted()
            .iter()
            .map(|s| s["destination"].as_str().unwrap().to_owned())
            .chain(recorded.iter().cloned())
            .collect();
        arrived.sort();
        arrived.dedup();
        arrived.len()
    };
    wait_until("every accepted OTP to have reached an SMSC", || {
        arrived() == 60
    })
    .await;
    assert_eq!(arrived(), 60, "every accepted OTP reached the SMSC");
}

async fn throttling_slows_down_and_still_delivers_everything_within_the_window(backend: Backend) {
    let smsc = Smsc::start(&[
        "--receipts",
        "delivered",
        "--throttle-every",
        "4",
        "--window-check",
        "10",
        "--resp-delay-ms",
        "5",
    ]);
    let app = app_with_smsc(backend, smsc.port, "secret").await;
    let sends = futures_util::future::join_all((0..60).map(|i| {
        let app = &app;
        async move { id_of(&app.send_ok(&text_send(&format!("98010001{i:02}"))).await) }
    }))
    .await;
    for id in sends {
        app.wait_for_status(id, "delivered").await;
    }
    assert!(
        !smsc.events("submit_sm").iter().all(|s| s["status"] == 0),
        "the peer throttled"
    );
    assert!(
        smsc.events("window_exceeded").is_empty(),
        "the window of 10 was exceeded"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("otpgate_smpp_total{route=\"smsc\",event=\"throttled\"}"),
        "{metrics}"
    );
    for series in [
        "otpgate_accept_to_submit_seconds_count{route=\"smsc\"} 60",
        "otpgate_accept_to_receipt_seconds_count{route=\"smsc\"} 60",
        "otpgate_smpp_receipts_total{route=\"smsc\",state=\"DELIVRD\"} 60",
    ] {
        assert!(metrics.contains(series), "{series} missing from {metrics}");
    }
}

for_each_backend!(
    gsm_text_reaches_the_smsc_and_its_receipt_marks_it_delivered,
    devanagari_arrives_intact_as_ucs2,
    a_long_message_goes_in_as_many_parts_as_were_charged,
    an_undeliverable_receipt_refunds_the_credits,
    receipts_match_when_the_smsc_spells_ids_differently,
    a_wrong_password_shows_in_readyz_and_metrics_and_nothing_is_lost,
    an_smsc_restart_mid_stream_loses_nothing,
    throttling_slows_down_and_still_delivers_everything_within_the_window
);

async fn routes_pick_by_prefix_and_fail_over_when_a_route_is_down(backend: Backend) {
    let ntc = Smsc::start(&["--receipts", "delivered"]);
    let ncell = Smsc::start(&["--receipts", "delivered"]);
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let route = |name: &str, port: u16, prefixes: &[&str]| RouteConfig {
        name: name.into(),
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        ..smpp_route(port, "secret")
    };
    let routes = vec![
        route("ntc", ntc.port, &["+977984", "+977985", "+977986"]),
        // Down: every send it would take goes to the next route that serves it.
        route(
            "ncell-primary",
            dead_port,
            &["+977980", "+977981", "+977982"],
        ),
        route(
            "ncell-backup",
            ncell.port,
            &["+977980", "+977981", "+977982"],
        ),
    ];
    let app = spawn_app_with(backend, move |c| c.routes = routes).await;
    let to_ntc = id_of(&app.send_ok(&text_send("9851023212")).await);
    let to_ncell = id_of(&app.send_ok(&text_send("9801234567")).await);
    assert_eq!(
        app.wait_for_status(to_ntc, "delivered")
            .await
            .route
            .as_deref(),
        Some("ntc")
    );
    assert_eq!(
        app.wait_for_status(to_ncell, "delivered")
            .await
            .route
            .as_deref(),
        Some("ncell-backup")
    );
    assert_eq!(ntc.accepted_at_least(1).await.len(), 1);
    assert_eq!(ncell.accepted_at_least(1).await.len(), 1);
    assert_eq!(ntc.accepted()[0]["destination"], "9779851023212");
    // No route serves a Smart number (961): it fails at once and is refunded.
    let nowhere = id_of(&app.send_ok(&text_send("9612345678")).await);
    let failed = app.wait_for_status(nowhere, "failed").await;
    assert!(failed.refunded);
    assert_eq!(
        failed.error.as_deref(),
        Some("no route serves this destination")
    );
}

for_each_backend!(routes_pick_by_prefix_and_fail_over_when_a_route_is_down);

/// A route to `smsc` whose receipts are matched under `receipt_ids`, held
/// `hold` seconds when unmatched, with the admin API on.
async fn app_with_receipt_ids(
    backend: Backend,
    smsc: &Smsc,
    receipt_ids: &str,
    hold: u64,
) -> TestApp {
    let mut route = smpp_route(smsc.port, "secret");
    if let DriverConfig::Smpp(s) = &mut route.driver {
        s.receipt_ids = receipt_ids.into();
        s.receipt_hold_seconds = hold;
    }
    spawn_app_with(backend, move |c| {
        crate::users::configure(c);
        c.routes = vec![route];
    })
    .await
}

async fn unmatched(app: &TestApp, query: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = app
        .client
        .get(app.url(&format!("/admin/v1/receipts/unmatched{query}")));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The issue's SMSC: submit_sm_resp `0000002a`, receipt `id:0000000042`;
/// ids from 42 on, so hex ids without letters (`00000042` is 66) come too.
const PADDED_HEX_THEN_DECIMAL: [&str; 8] = [
    "--receipt-id-format",
    "decimal",
    "--first-id",
    "42",
    "--resp-id-pad",
    "8",
    "--receipt-id-pad",
    "10",
];

/// Sends `n` OTPs one after the other, to numbers alternating even (DELIVRD
/// under `--receipts mixed`) and odd (UNDELIV); their ids, even first.
async fn send_alternating(app: &TestApp, n: usize) -> (Vec<i64>, Vec<i64>) {
    let (mut even, mut odd) = (Vec::new(), Vec::new());
    for i in 0..n {
        let id = id_of(&app.send_ok(&text_send(&format!("98510300{i:02}"))).await);
        if i % 2 == 0 {
            even.push(id)
        } else {
            odd.push(id)
        }
    }
    (even, odd)
}

async fn an_undeliverable_receipt_in_the_other_spelling_is_applied_and_refunded(backend: Backend) {
    // As text and as TLVs (receipted_message_id, message_state), under the
    // default `auto` (which learns the habit) and under `decimal`.
    for (form, receipt_ids) in [("text", "auto"), ("tlv", "auto"), ("both", "decimal")] {
        let mut args = vec!["--receipts", "mixed", "--receipt-form", form];
        args.extend(PADDED_HEX_THEN_DECIMAL);
        let smsc = Smsc::start(&args);
        let app = app_with_receipt_ids(backend, &smsc, receipt_ids, 120).await;
        let (delivered, undeliverable) = send_alternating(&app, 30).await;
        for id in &undeliverable {
            let otp = app.wait_for_status(*id, "undeliverable").await;
            assert!(otp.refunded, "{form}/{receipt_ids}: OTP {id} not refunded");
            if form != "tlv" {
                // `err:001` of the text; a TLV-only receipt has no `err:`.
                assert_eq!(otp.error_code.as_deref(), Some("1"), "{form}");
            }
        }
        for id in &delivered {
            app.wait_for_status(*id, "delivered").await;
        }
        assert_eq!(app.balance().await, (100 - 15, 10), "{form}/{receipt_ids}");
        let ledger = app.store.ledger(app.account_id).await.unwrap();
        let mut refunded: Vec<i64> = ledger
            .iter()
            .filter(|e| e.kind == "refund")
            .map(|e| e.otp_id.unwrap())
            .collect();
        refunded.sort();
        assert_eq!(refunded, undeliverable, "one refund per undeliverable OTP");
        // The SMSC really spelled the ids both ways, letters or not.
        let sent = smsc.events("receipt_sent");
        assert!(
            sent.iter()
                .any(|e| e["submit_message_id"] == "0000002a" && e["message_id"] == "0000000042")
        );
        assert!(
            sent.iter()
                .any(|e| e["submit_message_id"] == "00000042" && e["message_id"] == "0000000066")
        );
        let (status, body) = unmatched(&app, "", Some(crate::users::ADMIN_TOKEN)).await;
        assert_eq!(status, 200);
        assert_eq!(body["data"], json!([]), "{form}/{receipt_ids}: {body}");
        app.stop().await;
    }
}

async fn receipts_in_a_spelling_the_route_excludes_are_listed_as_unmatched(backend: Backend) {
    let mut args = vec!["--receipts", "mixed", "--receipt-form", "text"];
    args.extend(PADDED_HEX_THEN_DECIMAL);
    let smsc = Smsc::start(&args);
    // `text`: the receipt must repeat the id, so `0000000042` never matches
    // `0000002a`; held 1 s, then kept as unmatched.
    let app = app_with_receipt_ids(backend, &smsc, "text", 1).await;
    let (delivered, undeliverable) = send_alternating(&app, 2).await;
    let token = Some(crate::users::ADMIN_TOKEN);
    let mut body = Value::Null;
    for _ in 0..400 {
        let (status, b) = unmatched(&app, "", token).await;
        assert_eq!(status, 200, "{b}");
        body = b;
        if body["data"].as_array().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let rows = body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{body}");
    // Newest first; the SMSC's ids and text exactly as it sent them.
    let mut ids: Vec<&str> = rows
        .iter()
        .map(|r| r["message_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["0000000042", "0000000043"]);
    for r in rows {
        assert_eq!(r["route"], "smsc");
        assert_eq!(r["reason"], "no_match");
        let text = r["text"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("id:{} sub:001", r["message_id"].as_str().unwrap())),
            "{text}"
        );
        // The receipt's excerpt of the message (it may hold the code) is not kept.
        assert!(text.ends_with("text:[removed]"), "{text}");
        assert!(["DELIVRD", "UNDELIV"].contains(&r["state"].as_str().unwrap()));
        assert!(r["received_at"].as_str().unwrap().contains('T'));
    }
    // Nothing was applied: both stay `sent`, nothing refunded.
    for id in delivered.iter().chain(&undeliverable) {
        let otp = app.store.otp(app.account_id, *id).await.unwrap().unwrap();
        assert_eq!(otp.status.as_str(), "sent");
        assert!(!otp.refunded);
    }
    assert_eq!(app.balance().await, (98, 10));
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("otpgate_smpp_receipts_total{route=\"smsc\",state=\"unmatched\"} 2"),
        "{metrics}"
    );
    // Filters and refusals.
    let (status, b) = unmatched(&app, "?route=smsc&limit=1", token).await;
    assert_eq!((status, b["data"].as_array().unwrap().len()), (200, 1));
    let (status, b) = unmatched(&app, "?route=elsewhere", token).await;
    assert_eq!((status, &b["data"]), (200, &json!([])));
    for bad in ["?limit=0", "?limit=501", "?limit=ten"] {
        let (status, b) = unmatched(&app, bad, token).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(b["errors"][0]["field"], "limit", "{bad}: {b}");
        assert_eq!(b["errors"][0]["code"], "invalid", "{bad}");
    }
    let long_route = format!("?route={}", "r".repeat(101));
    let (status, b) = unmatched(&app, &long_route, token).await;
    assert_eq!((status, &b["errors"][0]["code"]), (400, &json!("too_long")));
    let (status, b) = unmatched(&app, "", None).await;
    assert_eq!(status, 401, "{b}");
    let (status, _) = unmatched(&app, "", Some("not-the-admin-token")).await;
    assert_eq!(status, 401);
    let (status, _) = unmatched(&app, "", Some(&app.key)).await;
    assert_eq!(status, 401, "an API key does not open the admin API");
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let op = &doc["paths"]["/admin/v1/receipts/unmatched"]["get"];
    assert_eq!(op["tags"], json!(["admin"]), "{op}");
    for status in ["200", "400", "401", "404"] {
        assert!(op["responses"][status].is_object(), "{status}: {op}");
    }
}

async fn unmatched_receipts_are_kept_for_a_day_and_a_few_hundred_per_route(backend: Backend) {
    use otp_store::receipts::{UNMATCHED_KEEP_MICROS, UNMATCHED_KEEP_PER_ROUTE};
    let app = spawn_app(backend).await;
    let now = otp_store::now_micros();
    let row = |route: &str, n: i64, at: i64| otp_store::UnmatchedReceipt {
        route: route.into(),
        message_id: format!("{n:010}"),
        state: "DELIVRD".into(),
        reason: "no_match".into(),
        text: format!("id:{n:010} stat:DELIVRD {}", "x".repeat(400)),
        received_at: at,
    };
    // A day and a second old: listed no more, and pruned with the next write.
    app.store
        .record_unmatched_receipts(
            vec![row("a", 0, now - UNMATCHED_KEEP_MICROS - 1_000_000)],
            now - UNMATCHED_KEEP_MICROS,
        )
        .await
        .unwrap();
    let total = UNMATCHED_KEEP_PER_ROUTE + 10;
    for chunk in (1..=total).collect::<Vec<_>>().chunks(50) {
        let rows = chunk.iter().map(|&n| row("a", n, now)).collect();
        app.store
            .record_unmatched_receipts(rows, now)
            .await
            .unwrap();
    }
    app.store
        .record_unmatched_receipts(vec![row("b", 1, now)], now)
        .await
        .unwrap();
    let a = app
        .store
        .unmatched_receipts(Some("a".into()), 1000, now)
        .await
        .unwrap();
    assert_eq!(a.len() as i64, UNMATCHED_KEEP_PER_ROUTE);
    assert_eq!(a[0].message_id, format!("{total:010}"), "newest first");
    assert_eq!(
        a.last().unwrap().message_id,
        format!("{:010}", total - UNMATCHED_KEEP_PER_ROUTE + 1)
    );
    assert_eq!(a[0].text.chars().count(), 300, "text is cut");
    let b = app
        .store
        .unmatched_receipts(Some("b".into()), 1000, now)
        .await
        .unwrap();
    assert_eq!(b.len(), 1, "another route keeps its own");
    assert_eq!(
        app.store
            .unmatched_receipts(None, 1000, now)
            .await
            .unwrap()
            .len() as i64,
        UNMATCHED_KEEP_PER_ROUTE + 1
    );
    // Seen from a day later, nothing is listed.
    let later = now + UNMATCHED_KEEP_MICROS + 1;
    assert!(
        app.store
            .unmatched_receipts(None, 1000, later)
            .await
            .unwrap()
            .is_empty()
    );
    let rows = crate::helpers::sql_i64s(&app, "SELECT COUNT(*) FROM unmatched_receipts").await;
    assert_eq!(
        rows,
        [UNMATCHED_KEEP_PER_ROUTE + 1],
        "the old row was pruned"
    );
}

async fn a_receipt_finds_its_part_through_the_stored_id_forms(backend: Backend) {
    use smpp::receipt::ids::IdLookup;
    let smsc = Smsc::start(&PADDED_HEX_THEN_DECIMAL);
    let app = app_with_receipt_ids(backend, &smsc, "auto", 120).await;
    let id = id_of(&app.send_ok(&text_send("9851023212")).await);
    let otp = app.wait_for_status(id, "sent").await;
    assert_eq!(otp.provider_message_id.as_deref(), Some("0000002a"));
    let lookups = ["0000000042", "42", "0x2A", "2a", "0000000043", "0000000066"]
        .iter()
        .map(|r| IdLookup::of(r).unwrap())
        .collect();
    let found = app.store.receipt_candidates("smsc", lookups).await.unwrap();
    let one = vec!["0000002a".to_owned()];
    assert_eq!(
        found,
        [one.clone(), one.clone(), one.clone(), one, vec![], vec![]]
    );
    assert!(
        app.store
            .receipt_candidates("other", vec![IdLookup::of("42").unwrap()])
            .await
            .unwrap()[0]
            .is_empty()
    );
}

for_each_backend!(
    an_undeliverable_receipt_in_the_other_spelling_is_applied_and_refunded,
    receipts_in_a_spelling_the_route_excludes_are_listed_as_unmatched,
    unmatched_receipts_are_kept_for_a_day_and_a_few_hundred_per_route,
    a_receipt_finds_its_part_through_the_stored_id_forms
);

/// The store's lookup and the one rule together, on each backend: ids of
/// many sizes (past 128 bits too), every habit, spellings varied on both
/// sides (padding, case, `0x`); each receipt finds its own part and no other.
async fn every_spelling_finds_its_own_part_in_the_store_under_the_routes_habit(backend: Backend) {
    use smpp::receipt::ids::{Decision, Habit, IdForms, IdLookup, decide};
    let app = spawn_app(backend).await;
    // Hex digits of the numbers: small ones, where spellings collide most,
    // and long ones.
    let mut numbers: Vec<String> = (0u32..90).map(|n| format!("{n:x}")).collect();
    numbers.push("1".repeat(34));
    numbers.push("fedcba9876543210fedcba9876543210ab".into());
    let mut seed = 0x2545_f491_u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let mut spell_hex = |hex: &str| {
        let mut s = format!("{}{hex}", "0".repeat(next() % 4));
        if next() % 2 == 0 {
            s = s.to_uppercase();
        }
        if next() % 3 == 0 {
            s = format!("0x{s}");
        }
        s
    };
    let decimal_of = |hex: &str| IdForms::of(hex).hex_as_decimal.unwrap();
    let mut otp = 1_000_000i64;
    for habit in [Habit::Text, Habit::Hex, Habit::Decimal] {
        let route = format!("route-{habit}");
        let mut pairs = Vec::new();
        for hex in &numbers {
            let pad = "0".repeat(hex.len() % 3);
            let decimal = format!("{pad}{}", decimal_of(hex));
            let (resp, receipt) = match habit {
                Habit::Text => (spell_hex(hex), spell_hex(hex)),
                Habit::Hex => (decimal.clone(), spell_hex(hex)),
                Habit::Decimal => (spell_hex(hex), decimal.clone()),
            };
            otp += 1;
            pairs.push((otp, resp, receipt));
        }
        let results = pairs
            .iter()
            .map(|(otp, resp, _)| otp_store::JobResult {
                job_id: *otp,
                otp_id: *otp,
                outcome: otp_store::JobOutcome::Sent {
                    route: Some(route.clone()),
                    message_ids: vec![resp.clone()],
                },
                at: otp_store::now_micros(),
            })
            .collect();
        app.store.finish_jobs(results).await.unwrap();
        let lookups = pairs
            .iter()
            .map(|(_, _, receipt)| IdLookup::of(receipt).unwrap())
            .collect();
        let found = app.store.receipt_candidates(&route, lookups).await.unwrap();
        for ((_, resp, receipt), candidates) in pairs.iter().zip(&found) {
            match decide(receipt, candidates, Some(habit)) {
                Decision::Matched { index, .. } => assert_eq!(
                    &candidates[index], resp,
                    "{habit}: receipt {receipt} matched {} instead of {resp}",
                    candidates[index]
                ),
                other => {
                    panic!("{habit}: receipt {receipt} ({resp}): {other:?} among {candidates:?}")
                }
            }
        }
    }
}

for_each_backend!(every_spelling_finds_its_own_part_in_the_store_under_the_routes_habit);

/// A part takes one final receipt. A second one (a repeat, or the receipt of a
/// newer submission the SMSC gave the same id before that submission is
/// recorded) is not applied to the older message; once the newer submission is
/// recorded, it takes the id over and its receipt lands on it.
async fn a_receipt_for_a_reused_id_never_lands_on_the_older_message(backend: Backend) {
    let app = spawn_app(backend).await;
    let route = "reuse";
    let sent = |otp: i64| otp_store::JobResult {
        job_id: otp,
        otp_id: otp,
        outcome: otp_store::JobOutcome::Sent {
            route: Some(route.to_owned()),
            message_ids: vec!["1a2b3c00".to_owned()],
        },
        at: otp_store::now_micros(),
    };
    let delivered = || otp_store::Receipt {
        route: route.to_owned(),
        message_ids: vec!["1a2b3c00".to_owned()],
        status: Some(otp_store::OtpStatus::Delivered),
        state: "DELIVRD".into(),
        error_code: None,
        at: otp_store::now_micros(),
    };
    app.store.finish_jobs(vec![sent(7_000_001)]).await.unwrap();
    let first = app.store.record_receipts(vec![delivered()]).await.unwrap();
    assert_eq!(first, [Some(7_000_001)]);
    // The SMSC restarted and gave the id again; its receipt beats the record.
    let early = app.store.record_receipts(vec![delivered()]).await.unwrap();
    assert_eq!(early, [None], "not applied to the older message again");
    app.store.finish_jobs(vec![sent(7_000_002)]).await.unwrap();
    let retried = app.store.record_receipts(vec![delivered()]).await.unwrap();
    assert_eq!(
        retried,
        [Some(7_000_002)],
        "the newer part took the id over"
    );
    let repeat = app.store.record_receipts(vec![delivered()]).await.unwrap();
    assert_eq!(repeat, [None], "a repeated final receipt changes nothing");
}

for_each_backend!(a_receipt_for_a_reused_id_never_lands_on_the_older_message);

/// Counts the connections made to a listener that never answers.
async fn silent_listener() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    (port, accepted)
}

/// One thread: the bind tasks `start` spawns run only once the test yields,
/// so the shutdown below always comes before they start (as when a reload is
/// refused right after building a route). A stop sent before a task waits for
/// it must still stop it.
#[tokio::test]
async fn a_route_shut_down_before_its_binds_start_never_connects() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (store, _dir, _) = crate::delivery::bare_store(backend).await;
        let config = |port| match smpp_route(port, "secret").driver {
            DriverConfig::Smpp(smpp) => smpp,
            other => panic!("an SMPP route has SMPP settings, not {other:?}"),
        };
        let metrics = Arc::new(otpgate::metrics::Metrics::default());
        let start = |port| {
            otpgate::delivery::smpp::SmppDriver::start(
                "smsc",
                config(port),
                store.clone(),
                metrics.clone(),
                otpgate::guard::Guard::off(store.clone(), metrics.clone()),
            )
            .unwrap()
        };
        let (stopped_port, stopped_accepted) = silent_listener().await;
        let stopped = start(stopped_port);
        otpgate::delivery::Driver::shutdown(stopped.as_ref()).await;
        // The same route left running connects: the listener would see it.
        let (running_port, running_accepted) = silent_listener().await;
        let running = start(running_port);
        for _ in 0..200 {
            if running_accepted.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(running_accepted.load(std::sync::atomic::Ordering::SeqCst) > 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            stopped_accepted.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{backend:?}: the stopped route connected"
        );
        otpgate::delivery::Driver::shutdown(running.as_ref()).await;
    }
}
