//! Channel fallback: an SMS send with `fallback_channel: "voice"` becomes a
//! call reading the same code when the SMS is not verified in time (or comes
//! back failed sooner). The call's phone credit is reserved at accept and
//! given back once when no call is needed. The scan is driven here with a
//! clock moved past the due time ([`scan_once`]), so no test waits for it;
//! the call itself goes through the `log` voice driver (`voice.rs` has the
//! end-to-end one: the node-smpp SMSC's `UNDELIV` and baresip answering).

use std::sync::Arc;

use otp_store::{FallbackScan, SharedStore, StoreOptions, now_micros};
use otpgate::delivery::fallback::scan_once;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, spawn_app, sql_i64s, text_send};

const NUMBER: &str = "9851023212";
const SECOND: i64 = 1_000_000;

fn with_fallback(after: i64) -> Value {
    json!({
        "number": NUMBER,
        "message": "Your code is {otp}",
        "sms_send_options": "text",
        "expiry_seconds": 3600,
        "fallback_channel": "voice",
        "fallback_after_seconds": after,
        "fallback_voice_input": "np_binod",
    })
}

fn details(reply: &Value) -> &Value {
    &reply["data"]["details"]
}

fn id_of(reply: &Value) -> i64 {
    details(reply)["id"].as_i64().unwrap()
}

async fn verify(app: &TestApp, key: &str, id: i64, code: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/api/v1/auths/verify/otp/"))
        .bearer_auth(key)
        .json(&json!({"id": id, "otp": code}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn detail(app: &TestApp, id: i64) -> Value {
    let r = app
        .client
        .get(app.url(&format!("/api/v1/auths/otps/{id}/")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["data"].clone()
}

/// One scan by `store`, its clock `ahead` seconds in the future.
async fn scan(app: &TestApp, store: &SharedStore, ahead: i64) -> FallbackScan {
    scan_once(
        store,
        &Notify::new(),
        &app.state.metrics,
        now_micros() + ahead * SECOND,
    )
    .await
    .unwrap()
}

fn history(detail: &Value) -> Vec<String> {
    detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

/// The refunds the ledger holds for one OTP: (sms, phone) each.
async fn refunds(app: &TestApp, id: i64) -> Vec<(i64, i64)> {
    let sms = sql_i64s(
        app,
        &format!(
            "SELECT sms_delta FROM ledger WHERE otp_id = {id} AND kind = 'refund' ORDER BY id"
        ),
    )
    .await;
    let phone = sql_i64s(
        app,
        &format!(
            "SELECT phone_delta FROM ledger WHERE otp_id = {id} AND kind = 'refund' ORDER BY id"
        ),
    )
    .await;
    sms.into_iter().zip(phone).collect()
}

async fn fallback_state(app: &TestApp, id: i64) -> String {
    detail(app, id).await["fallback"]["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Waits for the fallback of `id` to reach `state` (the voice worker runs in
/// the background).
async fn wait_for_fallback(app: &TestApp, id: i64, state: &str) -> Value {
    // Up to a minute: the call is due ten seconds after the send.
    for _ in 0..2400 {
        let d = detail(app, id).await;
        if d["fallback"]["state"] == state {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!(
        "the fallback of OTP {id} never reached {state}: {}",
        detail(app, id).await
    );
}

/// Fallback fields the send and an account's default refuse alike: each
/// with the field the error names and its code.
pub fn bad_call_fields() -> Vec<(Value, &'static str, &'static str)> {
    vec![
        (
            json!({"fallback_channel": "sms"}),
            "fallback_channel",
            "invalid_choice",
        ),
        (
            json!({"fallback_channel": 5}),
            "fallback_channel",
            "invalid_choice",
        ),
        (
            json!({"fallback_channel": "voice", "fallback_voice_input": "np_rija",
                   "fallback_after_seconds": 9}),
            "fallback_after_seconds",
            "out_of_range",
        ),
        (
            json!({"fallback_channel": "voice", "fallback_voice_input": "np_rija",
                   "fallback_after_seconds": 3601}),
            "fallback_after_seconds",
            "out_of_range",
        ),
        (
            json!({"fallback_channel": "voice"}),
            "fallback_voice_input",
            "required",
        ),
        (
            json!({"fallback_channel": "voice", "fallback_voice_input": "robot"}),
            "fallback_voice_input",
            "invalid_choice",
        ),
    ]
}

for_each_backend! {
    async fn bad_fallback_fields_are_400_naming_the_field_and_change_nothing(app) {
        let mut cases = bad_call_fields();
        cases.extend([
            (json!({"fallback_after_seconds": 30}), "fallback_after_seconds", "not_allowed"),
            (
                json!({"fallback_channel": "none", "fallback_voice_input": "np_rija"}),
                "fallback_voice_input",
                "not_allowed",
            ),
            (
                json!({"fallback_channel": "voice", "fallback_voice_input": "np_rija",
                       "otp_options": "personnel", "otp": "AB12"}),
                "otp",
                "invalid",
            ),
            (
                json!({"sms_send_options": "voice", "voice_input": "np_rija",
                       "fallback_channel": "voice", "fallback_voice_input": "np_rija"}),
                "fallback_channel",
                "not_allowed",
            ),
        ]);
        let before = (app.balance().await, app.otp_count().await);
        for (fields, field, code) in cases {
            let mut body = text_send(NUMBER);
            for (k, v) in fields.as_object().unwrap() {
                body[k] = v.clone();
            }
            let r = app.send(&body).await;
            let status = r.status().as_u16();
            let reply: Value = r.json().await.unwrap();
            assert_eq!(status, 400, "{body}: {reply}");
            assert!(
                crate::helpers::named_errors(&reply).contains(&(field, code)),
                "{body}: {reply}"
            );
        }
        assert_eq!((app.balance().await, app.otp_count().await), before, "nothing written");
        app.stop().await;
    }

    async fn a_send_that_cannot_reserve_the_call_is_refused_and_pays_nothing(app) {
        let (_, key) = app.new_account("no-phone", 10, 0).await;
        let r = app.send_as(&key, &with_fallback(60)).await;
        assert_eq!(r.status(), 402);
        let reply: Value = r.json().await.unwrap();
        assert_eq!(reply["errors"][0]["code"], "insufficient_credits", "{reply}");
        assert!(reply["message"].as_str().unwrap().contains("phone"), "{reply}");
        let (status, _) = app.list_as(&key, "").await;
        assert_eq!(status, 200);
        let a = app.store.account_by_name("no-phone").await.unwrap().unwrap();
        assert_eq!((a.sms_credits, a.phone_credits, a.otp_count), (10, 0, 0));
        // Without the fallback the same account sends.
        assert_eq!(app.send_as(&key, &text_send(NUMBER)).await.status(), 200);
        app.stop().await;
    }

    async fn a_code_verified_before_the_call_is_due_gets_its_phone_credit_back_once(app) {
        let reply = app.send_ok(&with_fallback(600)).await;
        let id = id_of(&reply);
        let d = details(&reply);
        assert_eq!(d["fallback"]["state"], "pending", "{reply}");
        assert_eq!(d["fallback"]["voice_input"], "np_binod");
        assert_eq!(d["fallback"]["reserved_phone_credits"], 1);
        assert_eq!(d["credits_used"], 1, "the SMS's cost; the call is reserved");
        assert_eq!((d["remaining_sms_credits"].as_i64(), d["remaining_phone_credits"].as_i64()), (Some(99), Some(9)));
        assert_eq!(app.balance().await, (99, 9), "the call's credit is reserved at accept");

        let code = d["otp"].as_str().unwrap().to_owned();
        let (status, body) = verify(&app, &app.key, id, &code).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(app.balance().await.1, 10, "given back by the verification");
        assert_eq!(fallback_state(&app, id).await, "refunded");
        let (status, _) = verify(&app, &app.key, id, &code).await;
        assert_eq!(status, 404, "already verified");

        // Past its due time, no node starts the call, and nothing goes back twice.
        let other = otp_store::open(&app.database_url, &StoreOptions::default()).await.unwrap();
        for store in [&app.store, &other] {
            assert_eq!(scan(&app, store, 601).await, FallbackScan::default());
        }
        assert_eq!(app.balance().await.1, 10);
        assert_eq!(refunds(&app, id).await, vec![(0, 1)], "one refund, of the phone credit");
        let detail = detail(&app, id).await;
        assert!(!history(&detail).contains(&"fallback_started".to_owned()), "{detail}");
        assert_eq!(detail["attempts"].as_array().unwrap().len(), 1, "{detail}");
        let voice_jobs = sql_i64s(
            &app,
            &format!("SELECT COUNT(*) FROM delivery_jobs WHERE otp_id = {id} AND channel = 'voice'"),
        )
        .await;
        assert_eq!(voice_jobs, vec![0]);
        app.stop().await;
    }

    async fn an_sms_not_verified_in_time_becomes_a_call_reading_the_same_code(app) {
        // The shortest wait, and the node's own scan: the call is queued due
        // now, so a scan with a clock moved ahead would queue it in the future.
        let reply = app.send_ok(&with_fallback(10)).await;
        let id = id_of(&reply);
        app.wait_for_status(id, "sent").await;
        assert_eq!(fallback_state(&app, id).await, "pending");

        let detail = wait_for_fallback(&app, id, "sent").await;
        let attempts: Vec<(&str, &str)> = detail["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["channel"].as_str().unwrap(), a["status"].as_str().unwrap()))
            .collect();
        assert_eq!(attempts, [("text", "sent"), ("voice", "sent")], "{detail}");
        let events = history(&detail);
        assert_eq!(
            events.iter().filter(|e| *e == "fallback_started").count(),
            1,
            "started once: {events:?}"
        );
        let started = events.iter().position(|e| e == "fallback_started").expect("started");
        let called = events.iter().position(|e| e == "fallback_sent").expect("called");
        assert!(started < called, "{events:?}");
        assert_eq!(detail["status"], "sent", "the status stays the SMS's");
        assert_eq!(app.balance().await, (99, 9), "both channels were used and charged");
        assert!(refunds(&app, id).await.is_empty());

        // The log driver wrote the call's prompt: the same code, in the fallback's voice.
        let line = std::fs::read_to_string(&app.deliveries).unwrap();
        let call: Value = line
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|l| l["channel"] == "voice")
            .expect("the call in the delivery log");
        let code = details(&reply)["otp"].as_str().unwrap();
        assert_eq!(call["voice_input"], "np_binod", "{call}");
        assert_eq!(call["otp_id"], id, "{call}");
        assert!(call["message"].as_str().unwrap().contains(code), "{call}");
        assert!(call["audio"].is_string(), "the prompt was rendered: {call}");

        // The code still verifies after the call.
        assert_eq!(verify(&app, &app.key, id, code).await.0, 200);
        app.stop().await;
    }

    async fn a_call_started_but_not_yet_placed_is_not_placed_after_a_verification(app) {
        let reply = app.send_ok(&with_fallback(10)).await;
        let id = id_of(&reply);
        app.wait_for_status(id, "sent").await;
        // Started by a clock 11 seconds ahead: the call is queued for then.
        assert_eq!(scan(&app, &app.store, 11).await, FallbackScan { started: 1, refunded: 0 });
        let code = details(&reply)["otp"].as_str().unwrap();
        let (status, body) = verify(&app, &app.key, id, code).await;
        assert_eq!(status, 200, "{body}");
        let detail = wait_for_fallback(&app, id, "cancelled").await;
        let attempts: Vec<(&str, &str)> = detail["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["channel"].as_str().unwrap(), a["status"].as_str().unwrap()))
            .collect();
        assert_eq!(attempts, [("text", "verified"), ("voice", "cancelled")], "{detail}");
        assert!(history(&detail).contains(&"fallback_cancelled".to_owned()), "{detail}");
        assert_eq!(app.balance().await, (99, 10), "the call's credit went back");
        assert_eq!(refunds(&app, id).await, vec![(0, 1)]);
        let line = std::fs::read_to_string(&app.deliveries).unwrap();
        assert!(
            !line.lines().any(|l| l.contains("\"channel\":\"voice\"")),
            "no call in the delivery log: {line}"
        );
        app.stop().await;
    }

    async fn a_code_that_expires_before_the_call_is_due_gets_its_phone_credit_back(app) {
        let mut body = with_fallback(600);
        body["expiry_seconds"] = json!(120);
        let id = id_of(&app.send_ok(&body).await);
        app.wait_for_status(id, "sent").await;
        assert_eq!(scan(&app, &app.store, 121).await, FallbackScan { started: 0, refunded: 1 });
        assert_eq!(scan(&app, &app.store, 601).await, FallbackScan::default());
        assert_eq!(app.balance().await, (99, 10));
        assert_eq!(fallback_state(&app, id).await, "refunded");
        let detail = detail(&app, id).await;
        assert!(history(&detail).contains(&"fallback_refunded".to_owned()), "{detail}");
        app.stop().await;
    }

    async fn a_started_fallback_is_recorded_once_in_the_history(app) {
        assert!(otp_store::webhooks::WebhookEvent::parse("fallback_started").is_some());
        let reply = app.send_ok(&with_fallback(30)).await;
        let id = id_of(&reply);
        app.wait_for_status(id, "sent").await;
        assert_eq!(scan(&app, &app.store, 31).await.started, 1);
        assert_eq!(scan(&app, &app.store, 62).await.started, 0);
        // Recorded with the start, in its transaction (`webhooks.rs` has
        // the `fallback_started` webhook taken by a receiver).
        let events = sql_i64s(
            &app,
            &format!(
                "SELECT COUNT(*) FROM otp_events WHERE otp_id = {id} AND status = 'fallback_started'"
            ),
        )
        .await;
        assert_eq!(events, vec![1]);
        app.stop().await;
    }
}

/// Verifications on one node racing the scan of another, on one PostgreSQL
/// database: each fallback ends either given back (and then no call was ever
/// queued for it) or started (and charged), never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_on_one_node_means_another_node_never_starts_the_call() {
    const SENDS: usize = 8;
    let app = spawn_app(Backend::Postgres).await;
    let (account, key) = app.new_account("racing", 100, 100).await;
    let mut sends = Vec::new();
    for i in 0..SENDS {
        // One number each: sends to one number would share one code (a resend).
        let mut body = with_fallback(600);
        body["number"] = json!(format!("98510232{:02}", 10 + i));
        let r = app.send_as(&key, &body).await;
        assert_eq!(r.status(), 200);
        let reply: Value = r.json().await.unwrap();
        sends.push((
            id_of(&reply),
            details(&reply)["otp"].as_str().unwrap().to_owned(),
        ));
    }
    let other: SharedStore = otp_store::open(&app.database_url, &StoreOptions::default())
        .await
        .unwrap();
    let app = Arc::new(app);
    let verifying = {
        let app = app.clone();
        let sends = sends.clone();
        tokio::spawn(async move {
            for (id, code) in sends {
                let (status, body) = verify(&app, &key, id, &code).await;
                assert_eq!(status, 200, "{body}");
            }
        })
    };
    let mut started = 0;
    let mut refunded = 0;
    for _ in 0..200 {
        let s = scan(&app, &other, 601).await;
        started += s.started;
        refunded += s.refunded;
        if verifying.is_finished() && s == FallbackScan::default() {
            break;
        }
        tokio::task::yield_now().await;
    }
    verifying.await.unwrap();
    let ids: Vec<String> = sends.iter().map(|(id, _)| id.to_string()).collect();
    let ids = ids.join(",");
    let given_back = sql_i64s(
        &app,
        &format!("SELECT COUNT(*) FROM otps WHERE id IN ({ids}) AND fallback_state = 'refunded'"),
    )
    .await[0] as usize;
    let called = sql_i64s(
        &app,
        &format!(
            "SELECT COUNT(*) FROM otps WHERE id IN ({ids}) \
             AND fallback_state IN ('started', 'sent', 'failed', 'cancelled')"
        ),
    )
    .await[0] as usize;
    assert_eq!(given_back + called, SENDS, "every fallback was decided");
    assert_eq!(called, started, "every call was started by the scan");
    assert!(refunded <= given_back);
    let calls_of_refunded = sql_i64s(
        &app,
        &format!(
            "SELECT COUNT(*) FROM otps o JOIN delivery_jobs j ON j.otp_id = o.id \
             WHERE o.id IN ({ids}) AND o.fallback_state = 'refunded' AND j.channel = 'voice'"
        ),
    )
    .await;
    assert_eq!(
        calls_of_refunded,
        vec![0],
        "no call queued for a fallback given back"
    );
    let started_events = sql_i64s(
        &app,
        &format!(
            "SELECT COUNT(*) FROM otp_events WHERE otp_id IN ({ids}) AND status = 'fallback_started'"
        ),
    )
    .await;
    assert_eq!(started_events, vec![called as i64]);
    // Each refund went back once: the phone balance is what the calls took
    // (the log driver answers them all).
    for (id, _) in &sends {
        let d = app.store.otp(account, *id).await.unwrap().unwrap();
        if d.fallback.map(|f| f.state) == Some(otp_store::FallbackState::Refunded) {
            assert_eq!(refunds(&app, *id).await, vec![(0, 1)]);
        }
    }
    let phone = app
        .store
        .account(account)
        .await
        .unwrap()
        .unwrap()
        .phone_credits;
    let charged = sql_i64s(
        &app,
        &format!(
            "SELECT COUNT(*) FROM otps WHERE id IN ({ids}) AND fallback_state IN ('started', 'sent')"
        ),
    )
    .await[0];
    assert_eq!(phone, 100 - charged, "only calls made keep their credit");
    Arc::into_inner(app).expect("the only handle").stop().await;
}
