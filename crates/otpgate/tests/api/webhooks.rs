//! Webhooks against a real receiver on 127.0.0.1: signatures, retries with
//! backoff, every event type once and without the code, the attempts as the
//! API shows them, tenant isolation, giving up, two nodes on one PostgreSQL,
//! and the command line; special-purpose addresses refused (tested with
//! loopback receivers only: no test ever aims a webhook elsewhere), one
//! account's hanging receiver holding only its own slots.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use otp_store::webhooks::{DeliveryQuery, DeliveryState, ExpirySweep, SetWebhook};
use otp_store::{OtpStatus, Receipt, SharedStore, now_micros};
use otpgate::auth::issue_key_with_scopes;
use otpgate::config::{Config, WebhooksConfig};
use otpgate::metrics::Metrics;
use otpgate::outbox::{Step, Worker};
use otpgate::startup::Application;
use otpgate::webhooks::{WebhookDeliveries, WebhookPolicy, WebhookSender};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::durability::otpgate;
use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, database_url, spawn_app_with, sql, test_config, text_send};

const WEBHOOK: &str = "/api/v1/auths/webhook/";
const DELIVERIES: &str = "/api/v1/auths/webhook/deliveries/";
const VERIFY: &str = "/api/v1/auths/verify/otp/";

/// One request the receiver got, and what it answered.
#[derive(Clone)]
struct Hit {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    answered: u16,
}

impl std::fmt::Debug for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} #{} {}",
            self.answered,
            self.header("x-otpgate-event-id"),
            self.header("x-otpgate-attempt"),
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn ok(&self) -> bool {
        self.answered == 200
    }
}

#[derive(Clone, Default)]
struct Inbox {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Requests still to answer 500 before answering 200.
    failures_left: Arc<AtomicUsize>,
    /// Wait this long before answering (to keep requests in flight).
    delay: Duration,
}

async fn receive(State(inbox): State<Inbox>, headers: HeaderMap, body: bytes::Bytes) -> StatusCode {
    tokio::time::sleep(inbox.delay).await;
    let fail = inbox
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let answered = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    inbox.hits.lock().unwrap().push(Hit {
        headers,
        body: body.to_vec(),
        answered: answered.as_u16(),
    });
    answered
}

/// A webhook receiver (an axum server) that answers 500 to its first
/// `failures` requests and 200 afterwards. Stopped when dropped.
struct Receiver {
    url: String,
    inbox: Inbox,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(failures: usize) -> Receiver {
        Receiver::on(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            failures,
            Duration::ZERO,
        )
    }

    fn on(listener: TcpListener, failures: usize, delay: Duration) -> Receiver {
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let inbox = Inbox {
            failures_left: Arc::new(AtomicUsize::new(failures)),
            delay,
            ..Inbox::default()
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inbox.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { url, inbox, task }
    }

    fn hits(&self) -> Vec<Hit> {
        self.inbox.hits.lock().unwrap().clone()
    }

    /// Answered 200.
    fn received(&self) -> Vec<Hit> {
        self.hits().into_iter().filter(Hit::ok).collect()
    }

    /// Polls until the successful requests satisfy `done`.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        for _ in 0..800 {
            let got = self.received();
            if done(&got) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the receiver never got {what}: {:?}", self.hits());
    }

    /// Polls until an event `event` of `otp_id` was taken.
    async fn wait_event(&self, otp_id: i64, event: &str) -> Hit {
        let got = self
            .wait_for(&format!("{event} of OTP {otp_id}"), |hits| {
                hits.iter()
                    .any(|h| h.json()["otp_id"] == otp_id && h.json()["event"] == event)
            })
            .await;
        got.into_iter()
            .find(|h| h.json()["otp_id"] == otp_id && h.json()["event"] == event)
            .unwrap()
    }
}

/// HMAC-SHA256 built from SHA-256 by hand (RFC 2104), so the test checks the
/// server's signatures with code that is not the server's.
fn hmac_sha256(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a receiver does: recompute `v1=HMAC(secret, timestamp + "." + body)`.
fn signature_of(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("v1={}", hmac_sha256(secret.as_bytes(), &message))
}

fn assert_signed(hit: &Hit, secret: &str) {
    let timestamp = hit.header("x-otpgate-timestamp");
    let signature = hit.header("x-otpgate-signature");
    assert_eq!(
        signature,
        signature_of(secret, timestamp, &hit.body),
        "{hit:?}"
    );
    // The replay window a receiver would apply.
    let age = now_micros() / 1_000_000 - timestamp.parse::<i64>().unwrap();
    assert!((-300..=300).contains(&age), "{hit:?}");
    // The check can fail: another body or secret does not match.
    let mut altered = hit.body.clone();
    altered.push(b' ');
    assert_ne!(signature, signature_of(secret, timestamp, &altered));
    assert_ne!(signature, signature_of("whsec_other", timestamp, &hit.body));
}

async fn set_webhook_as(app: &TestApp, key: &str, url: &str) -> String {
    let r = app
        .client
        .put(app.url(WEBHOOK))
        .bearer_auth(key)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["url"], url);
    body["data"]["secret"].as_str().unwrap().to_owned()
}

async fn set_webhook(app: &TestApp, url: &str) -> String {
    set_webhook_as(app, &app.key, url).await
}

async fn call(app: &TestApp, method: reqwest::Method, path: &str, key: &str) -> (u16, Value) {
    let r = app
        .client
        .request(method, app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn deliveries_as(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = call(
        app,
        reqwest::Method::GET,
        &format!("{DELIVERIES}?limit=100"),
        key,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// Polls the deliveries endpoint until `done` holds for the list.
async fn wait_deliveries(app: &TestApp, key: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..800 {
        let list = deliveries_as(app, key).await;
        if done(&list) {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the deliveries never got there: {:?}",
        deliveries_as(app, key).await
    );
}

fn personnel(number: &str, code: &str) -> Value {
    json!({
        "number": number,
        "message": "Your code is {otp}",
        "sms_send_options": "text",
        "otp_options": "personnel",
        "otp": code,
    })
}

async fn send_code(app: &TestApp, number: &str, code: &str) -> i64 {
    let reply = app.send_ok(&personnel(number, code)).await;
    reply["data"]["details"]["id"].as_i64().unwrap()
}

async fn verify(app: &TestApp, number: &str, code: &str) -> u16 {
    app.client
        .post(app.url(VERIFY))
        .bearer_auth(&app.key)
        .json(&json!({ "number": number, "otp": code }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A receipt for every part of a sent OTP, as a carrier would report it.
async fn receipt(app: &TestApp, id: i64, status: OtpStatus, state: &str) {
    let (_, ids) = app.store.otp_history(id).await.unwrap();
    assert!(!ids.is_empty(), "OTP {id} has no carrier message id yet");
    let matched = app
        .store
        .record_receipts(vec![Receipt {
            route: String::new(),
            message_ids: ids,
            status: Some(status),
            state: state.into(),
            error_code: Some("011".into()),
            at: now_micros(),
        }])
        .await
        .unwrap();
    assert_eq!(matched, vec![Some(id)]);
}

/// A port with nothing listening on it (until the test binds it again).
async fn closed_port() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// The receivers of these tests listen on 127.0.0.1, which webhooks may reach
/// only when the deployment allows it; and no `low_balance` event mixes in.
fn local(c: &mut Config) {
    c.webhooks.allow_private_addresses = true;
    c.webhooks.low_balance_sms_credits = 0;
    c.webhooks.low_balance_phone_credits = 0;
}

for_each_backend! {
    config: local;
    async fn an_event_is_signed_and_retried_until_the_receiver_takes_it(app) {
        let receiver = Receiver::start(2).await;
        let secret = set_webhook(&app, &receiver.url).await;
        assert!(secret.starts_with("whsec_"), "{secret}");
        let id = send_code(&app, "9851023212", "QzXkVw").await;

        let hit = receiver.wait_event(id, "sent").await;
        assert_signed(&hit, &secret);
        let all = receiver.hits();
        assert_eq!(all.iter().map(|h| h.answered).collect::<Vec<_>>(), vec![500, 500, 200]);
        // Every attempt carries the same event: same id, same bytes; its number counts up.
        let event_id = hit.header("x-otpgate-event-id").to_owned();
        assert!(event_id.starts_with("evt_"), "{event_id}");
        for (i, h) in all.iter().enumerate() {
            assert_eq!(h.header("x-otpgate-event-id"), event_id);
            assert_eq!(h.header("x-otpgate-event"), "sent");
            assert_eq!(h.header("x-otpgate-attempt"), (i + 1).to_string());
            assert_eq!(h.header("content-type"), "application/json");
            assert_eq!(h.body, hit.body);
            assert_signed(h, &secret);
        }
        let body = hit.json();
        assert_eq!(body["event_id"], event_id.as_str());
        assert_eq!(body["event"], "sent");
        assert_eq!(body["otp_id"], id);
        assert_eq!(body["account_seq"], 1);
        assert_eq!(body["number"], "9851023212");
        assert_eq!(body["channel"], "text");
        assert_eq!(body["status"], "sent");
        assert!(body["occurred_at"].as_str().unwrap().ends_with("+05:45"));
        assert!(body["expires_at"].as_str().unwrap().ends_with("+05:45"));
        assert!(!String::from_utf8_lossy(&hit.body).contains("QzXkVw"));

        // The attempts as the account sees them (recorded after the answer).
        let list = wait_deliveries(&app, &app.key, |l| {
            l.len() == 1 && l[0]["state"] == "delivered"
        }).await;
        let d = &list[0];
        assert_eq!(d["event_id"], event_id.as_str());
        assert_eq!((d["event"].as_str(), d["otp_id"].as_i64()), (Some("sent"), Some(id)));
        assert!(d["next_attempt_at"].is_null() && d["finished_at"].is_string(), "{d}");
        let attempts = d["attempts"].as_array().unwrap();
        let codes: Vec<_> = attempts.iter().map(|a| a["status_code"].as_i64()).collect();
        assert_eq!(codes, vec![Some(500), Some(500), Some(200)], "{d}");
        assert_eq!(attempts[0]["attempt"], 1);
        assert_eq!(attempts[0]["error"], "the receiver answered 500");
        assert!(attempts[2]["error"].is_null());
        assert!(attempts.iter().all(|a| a["duration_ms"].as_f64().unwrap() >= 0.0
            && a["at"].as_str().unwrap().ends_with("+05:45")));

        let text = app.metrics_text().await;
        assert!(text.contains("otpgate_webhook_attempts_total{outcome=\"retry\"} 2"), "{text}");
        assert!(text.contains("otpgate_webhook_attempts_total{outcome=\"delivered\"} 1"), "{text}");
        assert!(text.contains("otpgate_webhook_attempt_duration_seconds_count 3"), "{text}");
    }

    async fn every_event_type_arrives_once_and_none_carries_the_code(app) {
        let receiver = Receiver::start(0).await;
        let secret = set_webhook(&app, &receiver.url).await;
        let codes = ["QzXkVw", "PbRtLm", "HnJsWd", "GfKyTe"];
        // A: sent, delivered, verified.
        let a = send_code(&app, "9851023212", codes[0]).await;
        receiver.wait_event(a, "sent").await;
        receipt(&app, a, OtpStatus::Delivered, "DELIVRD").await;
        receiver.wait_event(a, "delivered").await;
        assert_eq!(verify(&app, "9851023212", codes[0]).await, 200);
        receiver.wait_event(a, "verified").await;
        // B: sent, then undeliverable: failed.
        let b = send_code(&app, "9851023213", codes[1]).await;
        receiver.wait_event(b, "sent").await;
        receipt(&app, b, OtpStatus::Undeliverable, "UNDELIV").await;
        let failed = receiver.wait_event(b, "failed").await.json();
        assert_eq!((failed["status"].as_str(), failed["error_code"].as_str()), (Some("undeliverable"), Some("011")));
        // C: five wrong codes kill it (one max_attempts); a sixth changes nothing.
        let c = send_code(&app, "9851023214", codes[2]).await;
        for _ in 0..6 {
            assert_eq!(verify(&app, "9851023214", "WRONGX").await, 400);
        }
        receiver.wait_event(c, "max_attempts").await;
        // D: nobody verifies it.
        let d = send_code(&app, "9851023215", codes[3]).await;
        receiver.wait_event(d, "sent").await;

        // Expiry, without waiting ten minutes: the sweep step with a clock
        // moved past every code's expiry. A was verified; the others expired.
        let now = now_micros();
        let sweep = ExpirySweep {
            now,
            expired_until: now + 700_000_000,
            longest_expiry: 3_600_000_000,
            not_before: now - 86_400_000_000,
        };
        // The background sweep may hold the webhook's row at this instant
        // (PostgreSQL then skips it): sweep until the three are recorded.
        let mut recorded = 0;
        for _ in 0..200 {
            recorded += app.store.sweep_expired(sweep).await.unwrap();
            if recorded >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(recorded, 3);
        assert_eq!(app.store.sweep_expired(sweep).await.unwrap(), 0, "a second sweep records nothing new");
        for otp in [b, c, d] {
            receiver.wait_event(otp, "expired").await;
        }

        let expected: HashSet<(i64, &str)> = [
            (a, "sent"), (a, "delivered"), (a, "verified"),
            (b, "sent"), (b, "failed"), (b, "expired"),
            (c, "sent"), (c, "max_attempts"), (c, "expired"),
            (d, "sent"), (d, "expired"),
        ].into_iter().collect();
        // Every delivery is done after exactly one attempt, and the receiver
        // got exactly one request per delivery.
        let list = wait_deliveries(&app, &app.key, |l| {
            l.len() == expected.len() && l.iter().all(|d| d["state"] == "delivered")
        }).await;
        assert!(list.iter().all(|d| d["attempts"].as_array().unwrap().len() == 1), "{list:?}");
        let hits = receiver.hits();
        assert_eq!(hits.len(), expected.len(), "{hits:?}");
        let got: HashSet<(i64, String)> = hits.iter()
            .map(|h| (h.json()["otp_id"].as_i64().unwrap(), h.json()["event"].as_str().unwrap().to_owned()))
            .collect();
        let expected: HashSet<(i64, String)> = expected.into_iter().map(|(o, e)| (o, e.to_owned())).collect();
        assert_eq!(got, expected);
        for h in &hits {
            assert_signed(h, &secret);
            assert_eq!(h.header("x-otpgate-event"), h.json()["event"].as_str().unwrap());
            let text = String::from_utf8_lossy(&h.body);
            assert!(codes.iter().all(|code| !text.contains(code)), "{text}");
        }
        let status_of = |otp: i64, event: &str| hits.iter().map(Hit::json)
            .find(|j| j["otp_id"] == otp && j["event"] == event).unwrap()["status"].clone();
        assert_eq!(status_of(a, "verified"), "verified");
        assert_eq!(status_of(a, "delivered"), "delivered");
        assert_eq!(status_of(b, "expired"), "undeliverable");
        assert_eq!(status_of(c, "expired"), "expired");
        assert_eq!(status_of(d, "expired"), "expired");
    }

    async fn deliveries_are_visible_to_their_own_account_only(app) {
        let mine = Receiver::start(0).await;
        let theirs = Receiver::start(0).await;
        set_webhook(&app, &mine.url).await;
        let (_, other_key) = app.new_account("other", 100, 0).await;
        set_webhook_as(&app, &other_key, &theirs.url).await;
        let (_, silent_key) = app.new_account("silent", 100, 0).await;

        let my_otp = send_code(&app, "9851023212", "QzXkVw").await;
        let their_otp = app.send_as(&other_key, &text_send("9851023213")).await;
        let their_otp = their_otp.json::<Value>().await.unwrap()["data"]["details"]["id"].as_i64().unwrap();
        let silent_otp = app.send_as(&silent_key, &text_send("9851023214")).await;
        assert_eq!(silent_otp.status(), 200);
        app.wait_for_status(my_otp, "sent").await;

        mine.wait_event(my_otp, "sent").await;
        theirs.wait_event(their_otp, "sent").await;
        let my_list = wait_deliveries(&app, &app.key, |l| l.iter().any(|d| d["state"] == "delivered")).await;
        let their_list = wait_deliveries(&app, &other_key, |l| l.iter().any(|d| d["state"] == "delivered")).await;
        assert!(my_list.iter().all(|d| d["otp_id"] == my_otp), "{my_list:?}");
        assert!(their_list.iter().all(|d| d["otp_id"] == their_otp), "{their_list:?}");
        assert!(mine.hits().iter().all(|h| h.json()["otp_id"] == my_otp));
        assert!(theirs.hits().iter().all(|h| h.json()["otp_id"] == their_otp));
        // Neither page reaches into the other account's events.
        let their_event = their_list[0]["event_id"].as_str().unwrap();
        let next = their_event.trim_start_matches("evt_").parse::<i64>().unwrap() + 1;
        let (_, page) = call(&app, reqwest::Method::GET, &format!("{DELIVERIES}?before=evt_{next}"), &app.key).await;
        assert!(page["data"].as_array().unwrap().iter().all(|d| d["otp_id"] == my_otp), "{page}");
        // An account without a webhook records nothing and sees nothing.
        assert!(deliveries_as(&app, &silent_key).await.is_empty());
        let (status, body) = call(&app, reqwest::Method::GET, WEBHOOK, &silent_key).await;
        assert_eq!((status, body["errors"][0]["code"].as_str()), (404, Some("not_set")), "{body}");
        let (_, theirs_seen) = call(&app, reqwest::Method::GET, WEBHOOK, &other_key).await;
        assert_eq!(theirs_seen["data"]["url"], theirs.url.as_str());
    }

    async fn a_receiver_that_was_down_gets_the_event_when_it_comes_back(app) {
        let address = closed_port().await;
        let secret = set_webhook(&app, &format!("http://{address}/hook")).await;
        let id = send_code(&app, "9851023212", "QzXkVw").await;
        // Refused connections, each recorded, each followed by a later attempt.
        let list = wait_deliveries(&app, &app.key, |l| {
            l.len() == 1 && l[0]["attempts"].as_array().unwrap().len() >= 2
        }).await;
        let d = &list[0];
        assert_eq!(d["state"], "pending", "{d}");
        assert!(d["next_attempt_at"].is_string(), "{d}");
        for a in d["attempts"].as_array().unwrap() {
            assert!(a["status_code"].is_null(), "{a}");
            assert!(a["error"].as_str().unwrap().starts_with("could not connect"), "{a}");
        }
        let receiver = Receiver::on(TcpListener::bind(address).await.unwrap(), 0, Duration::ZERO);
        let hit = receiver.wait_event(id, "sent").await;
        assert_signed(&hit, &secret);
        let attempt: usize = hit.header("x-otpgate-attempt").parse().unwrap();
        assert!(attempt >= 3, "{hit:?}");
        let list = wait_deliveries(&app, &app.key, |l| l[0]["state"] == "delivered").await;
        let attempts = list[0]["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), attempt);
        assert_eq!(attempts.last().unwrap()["status_code"], 200);
        assert_eq!(receiver.hits().len(), 1);
    }

    async fn a_webhook_is_checked_and_bad_input_changes_nothing(app) {
        let put = |body: Value| {
            let app = &app;
            async move {
                let r = app.client.put(app.url(WEBHOOK)).bearer_auth(&app.key).json(&body).send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        for (body, field, code) in [
            (json!({}), "url", "required"),
            (json!({"url": "  "}), "url", "blank"),
            (json!({"url": 42.5}), "url", "invalid_type"),
            (json!({"url": "ftp://example.com/"}), "url", "invalid"),
            (json!({"url": "example.com/hook"}), "url", "invalid"),
            (json!({"url": "https://user:pw@example.com/"}), "url", "invalid"),
            (json!({"url": "https://example.com/#frag"}), "url", "invalid"),
            (json!({"url": "https://example.com/", "rotate_secret": "yes"}), "rotate_secret", "invalid_type"),
        ] {
            let (status, reply) = put(body.clone()).await;
            assert_eq!(status, 400, "{body} -> {reply}");
            assert_eq!(reply["success"], false);
            assert_eq!((reply["errors"][0]["field"].as_str(), reply["errors"][0]["code"].as_str()), (Some(field), Some(code)), "{body} -> {reply}");
            assert!(!reply.to_string().contains("pw@"), "{reply}");
        }
        let (status, reply) = call(&app, reqwest::Method::GET, WEBHOOK, &app.key).await;
        assert_eq!((status, reply["errors"][0]["code"].as_str()), (404, Some("not_set")), "nothing was written: {reply}");
        let (status, _) = call(&app, reqwest::Method::GET, WEBHOOK, "otpg_nope").await;
        assert_eq!(status, 401);
        let r = app.client.get(app.url(DELIVERIES)).send().await.unwrap();
        assert_eq!(r.status(), 401);
        for query in ["?limit=0", "?limit=abc", "?before=evt_x"] {
            let (status, reply) = call(&app, reqwest::Method::GET, &format!("{DELIVERIES}{query}"), &app.key).await;
            assert_eq!(status, 400, "{query}: {reply}");
        }

        // A form body works too; the secret stays unless rotated; removal ends it.
        let r = app.client.put(app.url(WEBHOOK)).bearer_auth(&app.key)
            .form(&[("url", "https://app.example.com/a")]).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let first: Value = r.json().await.unwrap();
        let secret = first["data"]["secret"].as_str().unwrap().to_owned();
        let kept = set_webhook(&app, "https://app.example.com/b").await;
        assert_eq!(kept, secret);
        let (_, shown) = call(&app, reqwest::Method::GET, WEBHOOK, &app.key).await;
        assert_eq!((shown["data"]["url"].as_str(), shown["data"]["secret"].as_str()), (Some("https://app.example.com/b"), Some(secret.as_str())));
        let (status, rotated) = put(json!({"url": "https://app.example.com/b", "rotate_secret": true})).await;
        assert_eq!(status, 200);
        let rotated = rotated["data"]["secret"].as_str().unwrap().to_owned();
        assert!(rotated != secret && rotated.starts_with("whsec_"));
        let (status, _) = call(&app, reqwest::Method::DELETE, WEBHOOK, &app.key).await;
        assert_eq!(status, 200);
        let (status, _) = call(&app, reqwest::Method::DELETE, WEBHOOK, &app.key).await;
        assert_eq!(status, 404);
        // A secret set after removal is a new one.
        assert_ne!(set_webhook(&app, "https://app.example.com/c").await, rotated);
    }

    async fn removing_the_webhook_cancels_what_is_pending(app) {
        let address = closed_port().await;
        set_webhook(&app, &format!("http://{address}/hook")).await;
        send_code(&app, "9851023212", "QzXkVw").await;
        wait_deliveries(&app, &app.key, |l| {
            l.len() == 1 && !l[0]["attempts"].as_array().unwrap().is_empty()
        }).await;
        let (status, _) = call(&app, reqwest::Method::DELETE, WEBHOOK, &app.key).await;
        assert_eq!(status, 200);
        let list = deliveries_as(&app, &app.key).await;
        assert_eq!(list[0]["state"], "cancelled", "{list:?}");
        assert!(list[0]["next_attempt_at"].is_null());
        // Without a webhook, a change records no event (it would be written
        // in the transaction that made the OTP sent).
        let id = send_code(&app, "9851023213", "PbRtLm").await;
        app.wait_for_status(id, "sent").await;
        assert_eq!(deliveries_as(&app, &app.key).await.len(), 1);
    }
}

for_each_backend!(a_worker_step_sends_a_due_event_signed_and_records_each_attempt => one_step);

/// One worker step on the webhook outbox of `store`, then a drain so its
/// attempts are recorded.
async fn send_due(store: &SharedStore, policy: &WebhookPolicy) -> Step {
    let mut worker = Worker::new(WebhookDeliveries {
        store: store.clone(),
        sender: WebhookSender::new(policy.clone(), chrono_tz::UTC).unwrap(),
        node: "node-a".into(),
        metrics: Arc::new(Metrics::default()),
    });
    let step = worker.step().await.unwrap();
    worker.drain().await;
    step
}

async fn one_step(backend: Backend) {
    let (store, _dir, account) = crate::delivery::bare_store(backend).await;
    let receiver = Receiver::start(1).await;
    let secret = "whsec_one_step";
    store
        .set_webhook(SetWebhook {
            account_id: account,
            url: receiver.url.clone(),
            new_secret: secret.into(),
            rotate: false,
            low_balance_sms_credits: None,
            low_balance_phone_credits: None,
            now: now_micros(),
        })
        .await
        .unwrap();
    let mut policy = WebhookPolicy::from_config(&WebhooksConfig::default());
    policy.allow_private_addresses = true;
    policy.backoff_base = Duration::from_millis(20);
    policy.backoff_cap = Duration::from_millis(20);
    let id = crate::delivery::sent_in_parts(&store, account, 1, "r").await;
    let deliveries = || async {
        store
            .webhook_deliveries(DeliveryQuery {
                account_id: account,
                limit: 10,
                before_id: None,
            })
            .await
            .unwrap()
    };

    // The receiver answers 500 first: the attempt is recorded, a retry set.
    let once = Step {
        started: 1,
        more_due: false,
    };
    assert_eq!(send_due(&store, &policy).await, once);
    let list = deliveries().await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (list[0].otp_id, list[0].state),
        (id, DeliveryState::Pending)
    );
    assert_eq!(list[0].attempts.len(), 1);
    assert_eq!(list[0].attempts[0].status_code, Some(500));
    assert!(list[0].next_attempt_at.is_some());

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(send_due(&store, &policy).await, once);
    let list = deliveries().await;
    assert_eq!(list[0].state, DeliveryState::Delivered, "{list:?}");
    assert_eq!(list[0].attempts.len(), 2);
    assert_eq!(list[0].attempts[1].status_code, Some(200));
    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].header("x-otpgate-event"), "sent");
    assert_eq!(received[0].header("x-otpgate-attempt"), "2");
    assert_eq!(received[0].json()["otp_id"], id);
    assert_signed(&received[0], secret);

    assert_eq!(send_due(&store, &policy).await.started, 0);
    assert_eq!(receiver.hits().len(), 2);
}

for_each_backend!(an_event_is_given_up_after_its_max_age => gives_up);
for_each_backend!(the_expiry_sweep_reports_a_code_that_expired_unverified => expires);

async fn gives_up(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        local(c);
        c.webhooks.max_age_seconds = 1;
    })
    .await;
    let receiver = Receiver::start(usize::MAX).await;
    set_webhook(&app, &receiver.url).await;
    send_code(&app, "9851023212", "QzXkVw").await;
    let list = wait_deliveries(&app, &app.key, |l| {
        l.len() == 1 && l[0]["state"] == "failed"
    })
    .await;
    let attempts = list[0]["attempts"].as_array().unwrap();
    assert!(!attempts.is_empty());
    assert!(
        attempts.iter().all(|a| a["status_code"] == 500),
        "{attempts:?}"
    );
    assert_eq!(receiver.hits().len(), attempts.len());
    assert!(list[0]["next_attempt_at"].is_null() && list[0]["finished_at"].is_string());
    let text = app.metrics_text().await;
    assert!(
        text.contains("otpgate_webhook_attempts_total{outcome=\"gave_up\"} 1"),
        "{text}"
    );
}

async fn expires(backend: Backend) {
    // No delay after expiry: the test moves an expiry close instead of waiting.
    let app = spawn_app_with(backend, |c| {
        local(c);
        c.webhooks.expired_delay_ms = 0;
    })
    .await;
    let receiver = Receiver::start(0).await;
    set_webhook(&app, &receiver.url).await;
    let id = send_code(&app, "9851023212", "QzXkVw").await;
    let verified = send_code(&app, "9851023213", "PbRtLm").await;
    receiver.wait_event(id, "sent").await;
    assert_eq!(verify(&app, "9851023213", "PbRtLm").await, 200);
    let soon = now_micros() + 300_000;
    sql(
        &app,
        &format!("UPDATE otps SET expires_at = {soon} WHERE id IN ({id}, {verified})"),
    )
    .await;
    let hit = receiver.wait_event(id, "expired").await.json();
    assert_eq!(hit["status"], "expired");
    let occurred =
        chrono::DateTime::parse_from_rfc3339(hit["occurred_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        occurred.timestamp_micros(),
        soon,
        "the event is dated at the expiry"
    );
    // One sweep saw both codes: the verified one did not expire.
    let list = deliveries_as(&app, &app.key).await;
    assert!(
        !list
            .iter()
            .any(|d| d["otp_id"] == verified && d["event"] == "expired"),
        "{list:?}"
    );
    assert!(
        list.iter()
            .any(|d| d["otp_id"] == verified && d["event"] == "verified"),
        "{list:?}"
    );
}

/// Two nodes on one PostgreSQL database, one receiver that answers slowly so
/// both nodes have requests in flight: every event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_send_one_event_twice() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(Backend::Postgres, &dir).await;
    let mut config: Config = test_config(&url, &dir);
    local(&mut config);
    let receiver = Receiver::on(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        0,
        Duration::from_millis(30),
    );
    let mut nodes = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..2 {
        let app = Application::build(config.clone()).await.unwrap();
        addresses.push(format!("http://{}", app.local_addr()));
        let store = app.state().store.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        nodes.push((store, stop, running));
    }
    let store = nodes[0].0.clone();
    let account = store.create_account("acme", 100, 0).await.unwrap();
    let key = issue_key_with_scopes(account.id, None, otp_store::Scopes::ALL);
    store.create_key(key.record).await.unwrap();
    let client = reqwest::Client::new();
    let r = client
        .put(format!("{}{WEBHOOK}", addresses[0]))
        .bearer_auth(&key.plaintext)
        .json(&json!({ "url": receiver.url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sends = (0..20).map(|i| {
        let client = &client;
        let url = format!("{}/api/v1/auths/send/otp/", addresses[i % 2]);
        let key = &key.plaintext;
        async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .json(&text_send(&format!("98510232{i:02}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    });
    futures_util::future::join_all(sends).await;
    let hits = receiver.wait_for("20 events", |h| h.len() >= 20).await;
    let ids: Vec<String> = hits
        .iter()
        .map(|h| h.header("x-otpgate-event-id").to_owned())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 20, "{ids:?}");
    for (_, stop, running) in nodes {
        let _ = stop.send(());
        running.await.unwrap().unwrap();
    }
    // Both nodes stopped, every attempt recorded: one request per event.
    assert_eq!(receiver.hits().len(), 20, "{:?}", receiver.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_sets_shows_rotates_and_removes_a_webhook() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let dir = tempfile::tempdir().unwrap();
        let db = database_url(backend, &dir).await;
        let secrets = dir.path().join("secrets.toml");
        let run = |args: &[&str]| {
            let out = otpgate()
                .args(args)
                .args(["--database-url", &db])
                .env("OTPGATE_SECRETS__FILE", &secrets)
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8(out.stdout).unwrap(),
                String::from_utf8(out.stderr).unwrap(),
            )
        };
        let (ok, out, err) = run(&["accounts", "create", "shop", "--json"]);
        assert!(ok, "{err}");
        let id = serde_json::from_str::<Value>(&out).unwrap()["account_id"]
            .as_i64()
            .unwrap();
        let (ok, _, err) = run(&["webhooks", "set", "shop", "ftp://example.com/"]);
        assert!(!ok && err.contains("http or https"), "{err}");
        let (ok, _, err) = run(&["webhooks", "show", "shop"]);
        assert!(!ok && err.contains("no webhook"), "{err}");

        let (ok, out, err) = run(&[
            "webhooks",
            "set",
            "shop",
            "https://app.example.com/hook",
            "--json",
        ]);
        assert!(ok, "{err}");
        let set: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(set["account_id"], id);
        let secret = set["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("whsec_"));
        let (ok, out, _) = run(&["webhooks", "show", &id.to_string(), "--json"]);
        assert!(ok);
        let shown: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (shown["url"].as_str(), shown["secret"].as_str()),
            (Some("https://app.example.com/hook"), Some(secret.as_str()))
        );
        let (ok, out, _) = run(&["webhooks", "show", "shop"]);
        assert!(ok && out.contains(&format!("secret: {secret}")), "{out}");
        let (ok, out, _) = run(&[
            "webhooks",
            "set",
            "shop",
            "https://app.example.com/v2",
            "--rotate-secret",
            "--json",
        ]);
        assert!(ok);
        let rotated: Value = serde_json::from_str(&out).unwrap();
        assert_ne!(rotated["secret"].as_str(), Some(secret.as_str()));
        assert_eq!(rotated["url"], "https://app.example.com/v2");
        assert_secret_not_stored(backend, &db, rotated["secret"].as_str().unwrap()).await;
        let (ok, out, _) = run(&["webhooks", "remove", "shop"]);
        assert!(ok && out.contains("removed"), "{out}");
        let (ok, _, _) = run(&["webhooks", "remove", "shop"]);
        assert!(!ok);
    }
}

/// Searches the whole database for the secret: the SQLite files byte by byte,
/// or every PostgreSQL table as text.
async fn assert_secret_not_stored(backend: Backend, db: &str, secret: &str) {
    let dump = match backend {
        Backend::Sqlite => {
            let path = db.trim_start_matches("sqlite://");
            let mut bytes = std::fs::read(path).unwrap();
            if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
                bytes.extend(wal);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Backend::Postgres => {
            let (c, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let tables: Vec<String> = c
                .query(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut dump = String::new();
            for t in tables {
                for row in c
                    .query(&format!("SELECT t::text FROM {t} t"), &[])
                    .await
                    .unwrap()
                {
                    dump.push_str(row.get::<_, &str>(0));
                }
            }
            dump
        }
    };
    assert!(
        dump.contains("app.example.com"),
        "the search must see the webhook row"
    );
    assert!(
        !dump.contains(secret.trim_start_matches("whsec_")),
        "the secret is stored in plain"
    );
}

/// A listener that accepts connections, counts them and never answers: a
/// receiver that hangs. Stopped (its connections closed) when dropped.
struct Tarpit {
    url: String,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tarpit {
    async fn start(address: &str) -> Tarpit {
        let listener = TcpListener::bind(address).await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        Tarpit {
            url,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn wait_accepted(&self, n: usize) {
        for _ in 0..800 {
            if self.accepted() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the tarpit got {} connections, not {n}", self.accepted());
    }
}

/// The gateway's defaults: webhooks reach public addresses only (and no
/// `low_balance` event mixes in).
fn public_only(c: &mut Config) {
    c.webhooks.low_balance_sms_credits = 0;
    c.webhooks.low_balance_phone_credits = 0;
}

/// The deliveries of `event` for OTP `otp_id` once one has `attempts` attempts.
async fn attempted(app: &TestApp, otp_id: i64, event: &str, attempts: usize) -> Value {
    let list = wait_deliveries(app, &app.key, |l| {
        l.iter().any(|d| {
            d["otp_id"] == otp_id
                && d["event"] == event
                && d["attempts"].as_array().unwrap().len() >= attempts
        })
    })
    .await;
    list.into_iter()
        .find(|d| d["otp_id"] == otp_id && d["event"] == event)
        .unwrap()
}

for_each_backend! {
    config: public_only;
    async fn a_url_naming_a_special_purpose_address_is_refused_when_set_and_nothing_is_written(app) {
        // Never connected to: each is refused before anything is stored.
        for url in [
            "http://10.0.0.1/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/hook",
            "http://100.64.0.1/hook",
            "http://127.0.0.1:5432/",
            "http://127.0.0.2/hook",
            "http://[::1]:8080/hook",
            "http://[::ffff:10.0.0.1]/hook",
            "http://[64:ff9b::a9fe:a9fe]/hook",
            "https://[fd00::1]/hook",
            "http://198.18.0.1/hook",
            "http://192.168.1.1/hook",
            "http://172.16.0.1/hook",
            "http://0.0.0.0/",
            "http://224.0.0.1/",
            "http://2130706433/hook",
            "http://0x7f.1/hook",
        ] {
            let r = app.client.put(app.url(WEBHOOK)).bearer_auth(&app.key)
                .json(&json!({ "url": url })).send().await.unwrap();
            let status = r.status().as_u16();
            let reply: Value = r.json().await.unwrap();
            assert_eq!(status, 400, "{url}: {reply}");
            assert_eq!(reply["success"], false);
            let error = &reply["errors"][0];
            assert_eq!((error["field"].as_str(), error["code"].as_str()), (Some("url"), Some("address_not_allowed")), "{url}: {reply}");
            assert!(error["message"].as_str().unwrap().contains("special-purpose address"), "{reply}");
        }
        let (status, reply) = call(&app, reqwest::Method::GET, WEBHOOK, &app.key).await;
        assert_eq!((status, reply["errors"][0]["code"].as_str()), (404, Some("not_set")), "nothing was written: {reply}");
        // A host name is taken (never sent to here: no OTP follows); whether
        // it resolves inward is checked at each attempt.
        set_webhook(&app, "https://app.example.com/hook").await;
        assert!(deliveries_as(&app, &app.key).await.is_empty());
    }

    async fn the_openapi_document_names_the_address_refusal_and_the_low_balance_settings(app) {
        let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
        let put = &doc["paths"][WEBHOOK]["put"];
        let refusal = put["responses"]["400"]["description"].as_str().unwrap();
        assert!(refusal.contains("address_not_allowed"), "{refusal}");
        let request = &doc["components"]["schemas"]["SetWebhookRequest"]["properties"];
        let data = &doc["components"]["schemas"]["WebhookData"]["properties"];
        for field in ["low_balance_sms_credits", "low_balance_phone_credits"] {
            assert!(request.get(field).is_some() && data.get(field).is_some(), "{field}: {request} {data}");
        }
        let event = doc["components"]["schemas"]["DeliveryItem"]["properties"]["event"]["description"].as_str().unwrap();
        assert!(event.contains("low_balance"), "{event}");
    }

    async fn a_name_or_stored_address_that_is_loopback_is_refused_at_connection_and_no_request_arrives(app) {
        // A name that resolves to loopback passes when set, and is refused
        // after resolution, at the attempt.
        let local = Tarpit::start("127.0.0.1:0").await;
        let port = local.url.rsplit_once(':').unwrap().1.trim_end_matches("/hook").to_owned();
        set_webhook(&app, &format!("http://localhost:{port}/hook")).await;
        let first = send_code(&app, "9851023212", "QzXkVw").await;
        let d = attempted(&app, first, "sent", 2).await;
        for a in d["attempts"].as_array().unwrap() {
            assert_eq!(a["error"], "not sent: localhost resolves to a special-purpose address, which webhooks may not reach", "{d}");
            assert!(a["status_code"].is_null(), "{d}");
        }
        assert_eq!(d["state"], "pending", "a refusal is retried like any failed attempt: {d}");

        // Addresses stored before the check existed (the API refuses them
        // now): checked before every attempt.
        for (bind, ip, number) in [("127.0.0.2:0", "127.0.0.2", "9851023213"), ("[::1]:0", "::1", "9851023214")] {
            let tarpit = Tarpit::start(bind).await;
            app.store.set_webhook(SetWebhook {
                account_id: app.account_id,
                url: tarpit.url.clone(),
                new_secret: "whsec_unused".into(),
                rotate: false,
                low_balance_sms_credits: None,
                low_balance_phone_credits: None,
                now: now_micros(),
            }).await.unwrap();
            let id = send_code(&app, number, "PbRtLm").await;
            let d = attempted(&app, id, "sent", 1).await;
            let attempt = &d["attempts"][0];
            assert_eq!(attempt["error"].as_str(), Some(format!("not sent: {ip} is a special-purpose address (loopback), which webhooks may not reach").as_str()), "{d}");
            assert_eq!(tarpit.accepted(), 0, "{ip} got a connection");
        }
        assert_eq!(local.accepted(), 0, "localhost got a connection");
    }
}

for_each_backend!(one_account_whose_receiver_hangs_holds_only_its_own_slots => noisy_neighbour);

async fn noisy_neighbour(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        local(c);
        c.webhooks.concurrency = 3;
        c.webhooks.per_account_concurrency = 2;
        // Longer than the test: A's attempts hang until it ends.
        c.webhooks.timeout_ms = 600_000;
    })
    .await;
    let hanging = Tarpit::start("127.0.0.1:0").await;
    set_webhook(&app, &hanging.url).await;
    let codes = ["QzXkVw", "PbRtLm", "HnJsWd", "GfKyTe", "WxCvBn"];
    for (i, code) in codes.iter().enumerate() {
        send_code(&app, &format!("98510232{i:02}"), code).await;
    }
    wait_deliveries(&app, &app.key, |l| l.len() == codes.len()).await;
    hanging.wait_accepted(2).await;

    // Account B's event goes out through the slot A may not take.
    let receiver = Receiver::start(0).await;
    let (_, b_key) = app.new_account("b", 100, 0).await;
    set_webhook_as(&app, &b_key, &receiver.url).await;
    let r = app.send_as(&b_key, &text_send("9851023299")).await;
    assert_eq!(r.status(), 200);
    let b = wait_deliveries(&app, &b_key, |l| {
        l.len() == 1 && l[0]["state"] == "delivered"
    })
    .await;
    assert_eq!(b[0]["attempts"].as_array().unwrap().len(), 1, "{b:?}");
    assert_eq!(receiver.received().len(), 1);

    // A held its two slots all along, and none of its other events was tried.
    assert_eq!(hanging.accepted(), 2);
    let a = deliveries_as(&app, &app.key).await;
    assert_eq!(a.len(), codes.len());
    assert!(
        a.iter()
            .all(|d| d["state"] == "pending" && d["attempts"].as_array().unwrap().is_empty()),
        "{a:?}"
    );
}

/// Local receivers, and `low_balance` when a send takes the SMS credits (100
/// at the start) below 98.
fn low_at_98(c: &mut Config) {
    local(c);
    c.webhooks.low_balance_sms_credits = 98;
}

async fn put_webhook(app: &TestApp, body: Value) -> (u16, Value) {
    let r = app
        .client
        .put(app.url(WEBHOOK))
        .bearer_auth(&app.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

for_each_backend! {
    config: low_at_98;
    async fn low_balance_is_sent_once_per_fall_below_the_threshold_and_again_after_a_top_up(app) {
        let receiver = Receiver::start(0).await;
        let secret = set_webhook(&app, &receiver.url).await;
        let mut ids = Vec::new();
        // 100 -> 99 -> 98 stay at or above 98; 98 -> 97 falls below; 97 -> 96 is still below.
        for (i, code) in ["QzXkVw", "PbRtLm", "HnJsWd", "GfKyTe"].iter().enumerate() {
            ids.push(send_code(&app, &format!("98510232{i:02}"), code).await);
        }
        let hit = receiver.wait_event(ids[2], "low_balance").await;
        assert_signed(&hit, &secret);
        assert_eq!(hit.header("x-otpgate-event"), "low_balance");
        let body = hit.json();
        assert_eq!((body["credits"].as_str(), body["threshold"].as_i64()), (Some("sms"), Some(98)), "{body}");
        assert_eq!((body["sms_credits"].as_i64(), body["phone_credits"].as_i64()), (Some(97), Some(10)), "{body}");
        assert_eq!(body["number"], "9851023202");
        assert!(!String::from_utf8_lossy(&hit.body).contains("HnJsWd"));

        // A top-up back to the threshold, then a send below it: once more.
        app.store.add_credits(app.account_id, 2, 0, "top-up").await.unwrap();
        assert_eq!(app.balance().await, (98, 10));
        ids.push(send_code(&app, "9851023204", "WxCvBn").await);
        let again = receiver.wait_event(ids[4], "low_balance").await.json();
        assert_eq!(again["sms_credits"], 97);

        // Every event delivered: exactly two low_balance among them, each once.
        let list = wait_deliveries(&app, &app.key, |l| {
            l.len() == ids.len() + 2 && l.iter().all(|d| d["state"] == "delivered")
        }).await;
        let low: Vec<i64> = list.iter().filter(|d| d["event"] == "low_balance")
            .map(|d| d["otp_id"].as_i64().unwrap()).collect();
        assert_eq!(low, vec![ids[4], ids[2]], "{list:?}");
        let hits: Vec<i64> = receiver.hits().iter().filter(|h| h.json()["event"] == "low_balance")
            .map(|h| h.json()["otp_id"].as_i64().unwrap()).collect();
        assert_eq!(hits.len(), 2, "{hits:?}");
    }

    async fn an_account_sets_its_own_low_balance_threshold_and_bad_ones_change_nothing(app) {
        let receiver = Receiver::start(0).await;
        set_webhook(&app, &receiver.url).await;
        let (_, shown) = call(&app, reqwest::Method::GET, WEBHOOK, &app.key).await;
        assert_eq!((shown["data"]["low_balance_sms_credits"].as_i64(), shown["data"]["low_balance_phone_credits"].as_i64()), (Some(98), Some(0)), "{shown}");
        for (field, bad) in [
            ("low_balance_sms_credits", json!(-1)),
            ("low_balance_sms_credits", json!(1.5)),
            ("low_balance_sms_credits", json!("many")),
            ("low_balance_phone_credits", json!(2_000_000_000)),
            ("low_balance_phone_credits", json!([5])),
        ] {
            let (status, reply) = put_webhook(&app, json!({ "url": receiver.url, field: bad })).await;
            assert_eq!(status, 400, "{bad} -> {reply}");
            assert_eq!((reply["errors"][0]["field"].as_str(), reply["errors"][0]["code"].as_str()), (Some(field), Some("invalid")), "{reply}");
        }
        let (_, unchanged) = call(&app, reqwest::Method::GET, WEBHOOK, &app.key).await;
        assert_eq!(unchanged["data"]["low_balance_sms_credits"], 98, "{unchanged}");

        // Its own threshold: 100 -> 99 crosses 100, not 98.
        let (status, reply) = put_webhook(&app, json!({ "url": receiver.url, "low_balance_sms_credits": 100, "low_balance_phone_credits": "10" })).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!((reply["data"]["low_balance_sms_credits"].as_i64(), reply["data"]["low_balance_phone_credits"].as_i64()), (Some(100), Some(10)));
        // A later PUT without the fields keeps them.
        let (_, kept) = put_webhook(&app, json!({ "url": receiver.url })).await;
        assert_eq!(kept["data"]["low_balance_sms_credits"], 100, "{kept}");
        let first = send_code(&app, "9851023212", "QzXkVw").await;
        let hit = receiver.wait_event(first, "low_balance").await.json();
        assert_eq!((hit["threshold"].as_i64(), hit["sms_credits"].as_i64()), (Some(100), Some(99)), "{hit}");

        // 0: never; null: back to the configured 98.
        let (_, off) = put_webhook(&app, json!({ "url": receiver.url, "low_balance_sms_credits": 0 })).await;
        assert_eq!(off["data"]["low_balance_sms_credits"], 0, "{off}");
        let second = send_code(&app, "9851023213", "PbRtLm").await; // 99 -> 98
        let (_, back) = put_webhook(&app, json!({ "url": receiver.url, "low_balance_sms_credits": null })).await;
        assert_eq!(back["data"]["low_balance_sms_credits"], 98, "{back}");
        let third = send_code(&app, "9851023214", "HnJsWd").await; // 98 -> 97
        receiver.wait_event(third, "low_balance").await;
        let list = wait_deliveries(&app, &app.key, |l| {
            l.iter().filter(|d| d["event"] == "sent").count() == 3 && l.iter().all(|d| d["state"] == "delivered")
        }).await;
        let low: Vec<i64> = list.iter().filter(|d| d["event"] == "low_balance")
            .map(|d| d["otp_id"].as_i64().unwrap()).collect();
        assert_eq!(low, vec![third, first], "{list:?}");
        assert!(!low.contains(&second), "threshold 0 sent nothing");
    }
}

/// Two nodes on one PostgreSQL database: an account's bound on deliveries in
/// flight holds for both together, while another account's events go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_account_bound_holds_across_two_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(Backend::Postgres, &dir).await;
    let mut config: Config = test_config(&url, &dir);
    local(&mut config);
    config.webhooks.per_account_concurrency = 2;
    config.webhooks.timeout_ms = 600_000;
    let hanging = Tarpit::start("127.0.0.1:0").await;
    let receiver = Receiver::start(0).await;
    let mut addresses = Vec::new();
    let mut store = None;
    // Not stopped at the end: their attempts to the tarpit hang until then.
    let mut _nodes = Vec::new();
    for _ in 0..2 {
        let app = Application::build(config.clone()).await.unwrap();
        addresses.push(format!("http://{}", app.local_addr()));
        store.get_or_insert_with(|| app.state().store.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        _nodes.push((
            stop,
            tokio::spawn(app.run_until_stopped(async move {
                let _ = stopped.await;
            })),
        ));
    }
    let store = store.unwrap();
    let client = reqwest::Client::new();
    let mut keys = Vec::new();
    for (name, hook) in [("a", &hanging.url), ("b", &receiver.url)] {
        let account = store.create_account(name, 100, 0).await.unwrap();
        let key = issue_key_with_scopes(account.id, None, otp_store::Scopes::ALL);
        store.create_key(key.record).await.unwrap();
        let r = client
            .put(format!("{}{WEBHOOK}", addresses[0]))
            .bearer_auth(&key.plaintext)
            .json(&json!({ "url": hook }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        keys.push(key.plaintext);
    }
    let send = |i: usize, key: &str| {
        let request = client
            .post(format!("{}/api/v1/auths/send/otp/", addresses[i % 2]))
            .bearer_auth(key)
            .json(&text_send(&format!("98510232{i:02}")));
        async move { assert_eq!(request.send().await.unwrap().status(), 200) }
    };
    for i in 0..6 {
        send(i, &keys[0]).await;
    }
    hanging.wait_accepted(2).await;
    for i in 10..16 {
        send(i, &keys[1]).await;
    }
    receiver.wait_for("6 events of B", |h| h.len() >= 6).await;
    assert_eq!(
        hanging.accepted(),
        2,
        "A holds two slots on both nodes together"
    );
}

for_each_backend! {
    config: local;
    async fn a_started_fallback_call_is_posted_as_fallback_started(app) {
        let receiver = Receiver::start(0).await;
        set_webhook(&app, &receiver.url).await;
        let mut body = text_send("9851023212");
        body["expiry_seconds"] = json!(3600);
        body["fallback_channel"] = json!("voice");
        body["fallback_after_seconds"] = json!(600);
        body["fallback_voice_input"] = json!("np_rija");
        let id = app.send_ok(&body).await["data"]["details"]["id"]
            .as_i64()
            .unwrap();
        app.wait_for_status(id, "sent").await;
        // The node's scan, its clock moved past the due time.
        let scan = ::otpgate::delivery::fallback::scan_once(
            &app.store,
            &tokio::sync::Notify::new(),
            &app.state.metrics,
            now_micros() + 601 * 1_000_000,
        )
        .await
        .unwrap();
        assert_eq!(scan.started, 1);
        // The event is due at the scan's clock; bring it back to now.
        sql(
            &app,
            "UPDATE webhook_deliveries SET next_attempt_at = 0 WHERE event = 'fallback_started'",
        )
        .await;
        let hit = receiver.wait_event(id, "fallback_started").await;
        assert_eq!(hit.json()["channel"], "text", "the OTP as sent: {:?}", hit.json());
        assert_eq!(hit.json()["status"], "sent");
    }
}
