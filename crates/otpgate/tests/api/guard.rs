//! The SMS-pumping guard against the real server, with windows and volumes
//! shortened by settings: a burst to one number block that is never
//! verified is held (429 `pumping_hold`, `Retry-After`, nothing written or
//! charged) while other numbers and other accounts pass; the hold raises a
//! metric, a signed event to the account's webhook and a POST to the
//! operator's URL; an operator releases it; a retry of a send accepted
//! before the hold gets its first answer; a second node on one PostgreSQL
//! holds the same sends and lifts the hold when it is released; an account
//! that never verifies is judged on the receipts of a real SMSC; the
//! command line lists and releases holds; a number that verified a code
//! for the account before passes a hold that still refuses new numbers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use otpgate::auth::issue_key_with_scopes;
use otpgate::config::Config;
use otpgate::startup::Application;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, database_url, spawn_app_with, test_config, text_send};
use crate::users::{ADMIN_TOKEN, configure};

const VERIFY: &str = "/api/v1/auths/verify/otp/";
const HOLDS: &str = "/admin/v1/guard/holds/";

/// The guard on, judging a burst of ten sends within ten minutes.
fn guarded(c: &mut Config) {
    configure(c);
    c.guard.enabled = true;
    c.guard.bucket_seconds = 10;
    c.guard.window_seconds = 600;
    c.guard.baseline_seconds = 3600;
    c.guard.min_volume = 10;
    c.guard.hold_seconds = 120;
    c.guard.refresh_ms = 100;
    c.webhooks.allow_private_addresses = true;
}

/// What a receiver got: (headers, body) of each request.
type Hits = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

async fn receive(State(hits): State<Hits>, headers: HeaderMap, body: bytes::Bytes) -> StatusCode {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    hits.lock().unwrap().push((headers, body));
    StatusCode::OK
}

/// A receiver on 127.0.0.1: its URL and what it got.
async fn receiver() -> (String, Hits, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hits = Hits::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(hits.clone());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits, task)
}

/// Waits for the first `pumping_hold` event a receiver gets.
async fn first_hit(hits: &Hits) -> (HeaderMap, Value) {
    for _ in 0..400 {
        if let Some(hit) = hits
            .lock()
            .unwrap()
            .iter()
            .find(|(_, body)| body["event"] == "pumping_hold")
        {
            return hit.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the receiver got no pumping_hold event");
}

async fn send_to(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
) -> (u16, Option<u64>, Value) {
    let r = client
        .post(format!("{base}/api/v1/auths/send/otp/"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry_after, r.json().await.unwrap())
}

/// Sends one code to an NTC number and verifies it, so the account is one
/// the guard judges on verifications.
async fn verify_one(client: &reqwest::Client, base: &str, key: &str) {
    send_and_verify(client, base, key, "9851023212").await;
}

/// Sends a code to `number` and verifies it.
async fn send_and_verify(client: &reqwest::Client, base: &str, key: &str, number: &str) {
    let (status, _, body) = send_to(client, base, key, &text_send(number)).await;
    assert_eq!(status, 200, "{body}");
    let code = body["data"]["details"]["otp"].as_str().unwrap().to_owned();
    let r = client
        .post(format!("{base}{VERIFY}"))
        .bearer_auth(key)
        .json(&json!({ "number": number, "otp": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The i-th number of the burst's block (`+9779801000xxx`).
fn burst_number(i: usize) -> String {
    format!("9801000{i:03}")
}

/// Sends to the burst's block until one is held; returns how many passed
/// and the held reply.
async fn burst(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    from: usize,
) -> (usize, u64, Value) {
    for i in from..from + 60 {
        let (status, retry_after, body) =
            send_to(client, base, key, &text_send(&burst_number(i))).await;
        if status == 429 {
            return (i - from, retry_after.expect("a Retry-After header"), body);
        }
        assert_eq!(status, 200, "{body}");
    }
    panic!("60 unverified sends to one block were never held");
}

async fn admin(app: &TestApp, method: reqwest::Method, path: &str) -> (u16, Value) {
    let r = app
        .client
        .request(method, app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn a_burst_that_is_never_verified_is_held_alerted_and_released(backend: Backend) {
    let (operator_url, operator_hits, _operator) = receiver().await;
    let (account_url, account_hits, _account) = receiver().await;
    let app = spawn_app_with(backend, |c| {
        guarded(c);
        c.alerts.webhook_url = operator_url;
    })
    .await;
    let r = app
        .client
        .put(app.url("/api/v1/auths/webhook/"))
        .bearer_auth(&app.key)
        .json(&json!({ "url": account_url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    verify_one(&app.client, &app.address, &app.key).await;

    let (passed, retry_after, body) = burst(&app.client, &app.address, &app.key, 0).await;
    // Not before `min_volume` attempts under the key that tripped: the
    // country's ten include the verified send.
    assert!(passed >= 8, "held after {passed} sends, before min_volume");
    assert!(
        (1..=120).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(body["errors"][0]["code"], "pumping_hold", "{body}");
    assert_eq!(body["errors"][0]["field"], "number");
    assert_eq!(body["data"]["retry_after"], retry_after);

    // A held send writes and charges nothing.
    let (balance, count) = (app.balance().await, app.otp_count().await);
    let (status, _, _) = send_to(
        &app.client,
        &app.address,
        &app.key,
        &text_send(&burst_number(59)),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(app.balance().await, balance);
    assert_eq!(app.otp_count().await, count);

    // Another block, and another account's sends to this one, pass.
    app.send_ok(&text_send("9851023213")).await;
    let (_, other_key) = app.new_account("other", 10, 0).await;
    let (status, _, body) = send_to(
        &app.client,
        &app.address,
        &other_key,
        &text_send(&burst_number(58)),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The alerts: a signed event to the account, a POST to the operator.
    let (headers, event) = first_hit(&account_hits).await;
    assert_eq!(headers["x-otpgate-event"], "pumping_hold");
    assert!(
        headers["x-otpgate-signature"]
            .to_str()
            .unwrap()
            .starts_with("v1=")
    );
    assert_eq!(event["event"], "pumping_hold");
    assert_eq!(event["hold"]["scope"], "block");
    assert_eq!(event["hold"]["value"], "+9779801000");
    assert_eq!(event["hold"]["account_id"], app.account_id);
    let (_, alert) = first_hit(&operator_hits).await;
    assert_eq!(alert["hold"]["id"], event["hold"]["id"]);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("otpgate_guard_holds_total{scope=\"block\",accounts=\"account\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("otpgate_guard_active_holds{scope=\"block\",accounts=\"account\"} 1"));

    // The operator sees it and releases it; the block passes again.
    let (status, holds) = admin(&app, reqwest::Method::GET, HOLDS).await;
    assert_eq!(status, 200);
    let hold = &holds["data"][0];
    assert_eq!(hold["active"], true);
    let release = format!("{HOLDS}{}/release/", hold["id"]);
    let (status, released) = admin(&app, reqwest::Method::POST, &release).await;
    assert_eq!(status, 200, "{released}");
    assert_eq!(released["data"]["released_by"], "admin-api");
    assert_eq!(released["data"]["active"], false);
    assert_eq!(admin(&app, reqwest::Method::POST, &release).await.0, 404);
    app.send_ok(&text_send(&burst_number(57))).await;
}

async fn a_retry_of_a_send_accepted_before_the_hold_gets_its_first_answer(backend: Backend) {
    let app = spawn_app_with(backend, guarded).await;
    verify_one(&app.client, &app.address, &app.key).await;
    let keyed = |key: &str, number: &str| {
        app.client
            .post(app.url("/api/v1/auths/send/otp/"))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", key)
            .json(&text_send(number))
            .send()
    };
    let first: Value = keyed("before", &burst_number(100))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first_id = first["data"]["details"]["id"].clone();
    assert!(first_id.is_i64(), "{first}");
    burst(&app.client, &app.address, &app.key, 0).await;

    let (balance, count) = (app.balance().await, app.otp_count().await);
    let again = keyed("before", &burst_number(100)).await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["data"]["details"]["id"], first_id);
    assert_eq!(app.balance().await, balance);
    assert_eq!(app.otp_count().await, count);
    // The same key with another body is the usual conflict; a new key is held.
    assert_eq!(
        keyed("before", &burst_number(101)).await.unwrap().status(),
        422
    );
    assert_eq!(
        keyed("after", &burst_number(101)).await.unwrap().status(),
        429
    );
}

async fn a_number_verified_before_passes_a_hold_and_a_new_number_under_it_is_still_held(
    backend: Backend,
) {
    let app = spawn_app_with(backend, guarded).await;
    verify_one(&app.client, &app.address, &app.key).await;
    // A returning user: a number of the burst's block that verified a code
    // for this account before the burst.
    let returning = burst_number(900);
    send_and_verify(&app.client, &app.address, &app.key, &returning).await;
    let (_, _, held) = burst(&app.client, &app.address, &app.key, 0).await;
    assert_eq!(held["errors"][0]["code"], "pumping_hold", "{held}");

    // The returning user is accepted, and charged as any send.
    let (balance, count) = (app.balance().await, app.otp_count().await);
    let (status, _, body) =
        send_to(&app.client, &app.address, &app.key, &text_send(&returning)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.otp_count().await, count + 1);
    assert_eq!(app.balance().await.0, balance.0 - 1);

    // A new number under the held block is still held, with nothing
    // written or charged.
    let (balance, count) = (app.balance().await, app.otp_count().await);
    let (status, retry_after, body) = send_to(
        &app.client,
        &app.address,
        &app.key,
        &text_send(&burst_number(901)),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errors"][0]["code"], "pumping_hold", "{body}");
    assert!(retry_after.is_some());
    assert_eq!(app.balance().await, balance);
    assert_eq!(app.otp_count().await, count);

    // A number sent to before the burst but never verified proves nothing.
    let (status, _, body) = send_to(
        &app.client,
        &app.address,
        &app.key,
        &text_send(&burst_number(0)),
    )
    .await;
    assert_eq!(status, 429, "{body}");

    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .contains("otpgate_guard_passed_sends_total{scope=\"block\",accounts=\"account\"} 1"),
        "{metrics}"
    );
}

for_each_backend!(
    a_burst_that_is_never_verified_is_held_alerted_and_released,
    a_retry_of_a_send_accepted_before_the_hold_gets_its_first_answer,
    a_number_verified_before_passes_a_hold_and_a_new_number_under_it_is_still_held
);

/// Two nodes on one PostgreSQL database: a hold one node placed holds the
/// other's sends too, and a release on one lifts it on both.
#[tokio::test]
async fn a_hold_placed_by_one_node_holds_the_other_nodes_sends_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(Backend::Postgres, &dir).await;
    let mut config = test_config(&url, &dir);
    guarded(&mut config);
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
    let key = key.plaintext;
    let client = reqwest::Client::new();
    let (a, b) = (&addresses[0], &addresses[1]);

    verify_one(&client, a, &key).await;
    burst(&client, a, &key, 0).await;
    // Node b never judged this burst; it reads the hold from the store.
    let mut held = None;
    for i in 0..200 {
        let (status, _, body) = send_to(&client, b, &key, &text_send(&burst_number(200 + i))).await;
        if status == 429 {
            held = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let held = held.expect("node b never held the burst's block");
    assert_eq!(held["errors"][0]["code"], "pumping_hold");

    let holds: Value = client
        .get(format!("{b}{HOLDS}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = &holds["data"][0]["id"];
    let r = client
        .post(format!("{a}{HOLDS}{id}/release/"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut passed = false;
    for i in 0..200 {
        let (status, _, _) = send_to(&client, b, &key, &text_send(&burst_number(500 + i))).await;
        if status == 200 {
            passed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(passed, "node b never lifted the released hold");
    for (_, stop, running) in nodes {
        let _ = stop.send(());
        running.await.unwrap().unwrap();
    }
}

/// `otpgate guard list` and `otpgate guard release` work on the store itself.
async fn the_command_line_lists_and_releases_holds(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    let run = |args: &[&str]| {
        crate::durability::otpgate()
            .args(args)
            .args(["--database-url", &db])
            .output()
            .unwrap()
    };
    assert!(run(&["migrate"]).status.success());
    let store = otp_store::open(&db, &otp_store::StoreOptions::default())
        .await
        .unwrap();
    let now = otp_store::now_micros();
    let (hold, _) = store
        .place_hold(otp_store::guard::NewHold {
            scope: otp_store::guard::HoldScope::Prefix,
            value: "+880199".into(),
            account_id: None,
            reason: "a burst".into(),
            volume: 120,
            conversion_ppm: 0,
            baseline_ppm: 500_000,
            at: now,
            until: now + 600_000_000,
        })
        .await
        .unwrap();
    let listed = run(&["guard", "list", "--json"]);
    assert!(listed.status.success());
    let line: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(line["id"], hold.id);
    assert_eq!(line["value"], "+880199");
    assert_eq!(line["active"], true);

    let id = hold.id.to_string();
    let released = run(&["guard", "release", &id]);
    assert!(
        released.status.success(),
        "{}",
        String::from_utf8_lossy(&released.stderr)
    );
    assert!(String::from_utf8_lossy(&released.stdout).contains("released hold"));
    let again = run(&["guard", "release", &id]);
    assert!(!again.status.success(), "a hold is released once");
    let stored = store.guard_holds(now).await.unwrap();
    assert_eq!(stored[0].released_by.as_deref(), Some("cli"));
}

for_each_backend!(the_command_line_lists_and_releases_holds);

/// An account that never verifies is judged on its delivery receipts, fed
/// from a real SMSC (node-smpp): a burst that is never delivered is held.
async fn an_account_that_never_verifies_is_held_when_its_burst_is_never_delivered(
    backend: Backend,
) {
    // `mixed`: destinations ending in an odd digit come back UNDELIV.
    let smsc = crate::smsc::Smsc::start(&["--receipts", "mixed"]);
    let route = crate::smsc::smpp_route(smsc.port, "secret");
    let app = spawn_app_with(backend, move |c| {
        guarded(c);
        c.routes = vec![route];
    })
    .await;
    // A delivered receipt makes the account one judged on deliveries.
    let first = app.send_ok(&text_send("9851023212")).await;
    app.wait_for_status(crate::smsc::id_of(&first), "delivered")
        .await;
    let mut held = None;
    for i in 0..40 {
        let number = format!("9801000{:03}", 2 * i + 1);
        let r = app.send(&text_send(&number)).await;
        if r.status() == 429 {
            held = Some(r.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(r.status(), 200);
        // Let each receipt come back before the next send.
        let reply: Value = r.json().await.unwrap();
        app.wait_for_status(crate::smsc::id_of(&reply), "undeliverable")
            .await;
    }
    let held = held.expect("a burst that is never delivered was never held");
    assert_eq!(held["errors"][0]["code"], "pumping_hold", "{held}");
}

for_each_backend!(an_account_that_never_verifies_is_held_when_its_burst_is_never_delivered);
