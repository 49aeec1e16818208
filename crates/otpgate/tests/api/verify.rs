//! Verifying codes, and codes at rest: outcomes, attempts under concurrency,
//! tenant isolation, expiry, the purge, and a database dump without codes.

use otp_store::{OtpStatus, Receipt, now_micros};
use serde_json::{Value, json};

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, spawn_app_with, sql, sql_i64s, text_send};
use otpgate::auth::issue_key;

const NUMBER: &str = "9851023212";
const VERIFY: &str = "/api/v1/auths/verify/otp/";

fn personnel(number: &str, code: &str) -> Value {
    json!({
        "number": number,
        "message": "Your code is {otp}",
        "sms_send_options": "text",
        "otp_options": "personnel",
        "otp": code,
    })
}

async fn verify_as(app: &TestApp, key: &str, body: &Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(VERIFY))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn verify(app: &TestApp, body: &Value) -> (u16, Value) {
    verify_as(app, &app.key, body).await
}

async fn send_code(app: &TestApp, number: &str, code: &str) -> i64 {
    let reply = app.send_ok(&personnel(number, code)).await;
    reply["data"]["details"]["id"].as_i64().unwrap()
}

fn reason(body: &Value) -> &str {
    body["errors"][0]["code"].as_str().unwrap_or("")
}

/// Moves an OTP's expiry into the past, as if its time had run out.
async fn expire(app: &TestApp, id: i64) {
    let past = now_micros() - 1_000_000;
    sql(
        app,
        &format!("UPDATE otps SET expires_at = {past} WHERE id = {id}"),
    )
    .await;
}

async fn history(app: &TestApp, id: i64) -> Vec<String> {
    let (events, _) = app.store.otp_history(id).await.unwrap();
    events.into_iter().map(|e| e.status).collect()
}

for_each_backend! {
    async fn a_right_code_verifies_once(app) {
        let id = send_code(&app, NUMBER, "482193").await;
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": "482193"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true);
        assert_eq!(body["message"], "OTP Verified Successfully.");
        assert_eq!(body["data"]["id"], id);
        assert!(body["data"]["verified_at"].as_str().unwrap().ends_with("+05:45"));

        // Once: the same code again finds nothing waiting.
        let (status, again) = verify(&app, &json!({"number": "+9779851023212", "otp": "482193"})).await;
        assert_eq!(status, 404, "{again}");
        assert_eq!(reason(&again), "already_verified");

        let (_, list) = app.list("").await;
        let item = &list["results"]["data"][0];
        assert_eq!(item["status"], "verified");
        assert_eq!(item["verified_at"], body["data"]["verified_at"]);
        assert_eq!(item["otp"], "482193");
        assert!(history(&app, id).await.contains(&"verified".to_owned()));
    }

    async fn a_wrong_code_counts_down_and_the_sixth_attempt_is_refused(app) {
        let id = send_code(&app, NUMBER, "482193").await;
        for remaining in (0..5).rev() {
            let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": "000000"})).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(reason(&body), "invalid_otp");
            assert_eq!(body["errors"][0]["field"], "otp");
            assert_eq!(body["data"]["attempts_remaining"], remaining);
        }
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": "482193"})).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(reason(&body), "max_attempts");
        assert_eq!(body["data"]["attempts_remaining"], 0);

        let otp = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        assert_eq!(otp.verify_attempts, 5);
        assert_eq!(otp.verified_at, None);
        let events = history(&app, id).await;
        assert_eq!(events.iter().filter(|e| *e == "verify_failed").count(), 5);
        assert_eq!(events.iter().filter(|e| *e == "max_attempts").count(), 1);
    }

    async fn an_expired_code_is_refused_and_listed_as_expired(app) {
        let mut body = personnel(NUMBER, "482193");
        body["expiry_seconds"] = json!(60);
        let reply = app.send_ok(&body).await;
        let id = reply["data"]["details"]["id"].as_i64().unwrap();
        let otp = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        assert_eq!(otp.expires_at - otp.created_at, 60_000_000);

        expire(&app, id).await;
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": "482193"})).await;
        assert_eq!(status, 410, "{body}");
        assert_eq!(reason(&body), "expired");
        let (_, list) = app.list("").await;
        assert_eq!(list["results"]["data"][0]["status"], "expired");
        assert!(history(&app, id).await.contains(&"expired".to_owned()));
    }

    async fn expiry_seconds_must_be_between_60_and_3600(app) {
        for bad in [json!(59), json!(3601), json!("soon"), json!(-1)] {
            let mut body = text_send(NUMBER);
            body["expiry_seconds"] = bad.clone();
            let r = app.send(&body).await;
            assert_eq!(r.status(), 400, "{bad}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["errors"][0]["field"], "expiry_seconds", "{body}");
        }
        assert_eq!(app.otp_count().await, 0, "a refused send writes nothing");
        let mut body = text_send(NUMBER);
        body["expiry_seconds"] = json!("3600");
        let reply = app.send_ok(&body).await;
        let id = reply["data"]["details"]["id"].as_i64().unwrap();
        let otp = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        assert_eq!(otp.expires_at - otp.created_at, 3_600_000_000);
        // Another number: a send to NUMBER now would repeat its live code,
        // with that code's expiry (`verify.resend_same_code`).
        let default = app.send_ok(&text_send("9841000001")).await;
        let id = default["data"]["details"]["id"].as_i64().unwrap();
        let otp = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        assert_eq!(otp.expires_at - otp.created_at, 600_000_000);
        assert!(default["data"]["details"]["expires_at"].as_str().unwrap().ends_with("+05:45"));
    }

    async fn an_id_names_the_otp_to_check(app) {
        let older = send_code(&app, NUMBER, "111111").await;
        let newer = send_code(&app, NUMBER, "222222").await;
        let (status, body) = verify(&app, &json!({"id": older, "otp": "111111"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["id"], older);
        // With a number, the id must be to that number.
        let (status, body) = verify(&app, &json!({"id": newer, "number": "9841000000", "otp": "222222"})).await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = verify(&app, &json!({"id": newer.to_string(), "number": NUMBER, "otp": "222222"})).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = verify(&app, &json!({"id": newer + 1000, "otp": "222222"})).await;
        assert_eq!((status, reason(&body)), (404, "not_found"), "{body}");
    }

    async fn a_number_never_sent_to_has_nothing_to_verify(app) {
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": "482193"})).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["success"], false);
        assert_eq!(reason(&body), "not_found");
    }

    async fn invalid_verify_bodies_are_refused_naming_the_field(app) {
        send_code(&app, NUMBER, "482193").await;
        let cases = [
            (json!({}), vec!["number", "otp"]),
            (json!({"number": NUMBER}), vec!["otp"]),
            (json!({"otp": "482193"}), vec!["number"]),
            (json!({"number": "12", "otp": "482193"}), vec!["number"]),
            (json!({"number": NUMBER, "otp": "12"}), vec!["otp"]),
            (json!({"number": NUMBER, "otp": "48 21 93"}), vec!["otp"]),
            (json!({"number": NUMBER, "otp": ["482193"]}), vec!["otp"]),
            (json!({"id": "x", "otp": "482193"}), vec!["id"]),
            (json!({"id": 0, "otp": "482193"}), vec!["id"]),
        ];
        for (body, fields) in cases {
            let (status, reply) = verify(&app, &body).await;
            assert_eq!(status, 400, "{body} -> {reply}");
            let named: Vec<&str> = reply["errors"].as_array().unwrap().iter()
                .map(|e| e["field"].as_str().unwrap()).collect();
            assert_eq!(named, fields, "{body} -> {reply}");
        }
        // None of those counted as an attempt; a form body works too, and a code
        // given as a JSON number is read as its digits.
        let otp = app.store.otp(app.account_id, 1).await.unwrap();
        assert_eq!(otp.map(|o| o.verify_attempts), Some(0));
        let r = app.client.post(app.url(VERIFY)).bearer_auth(&app.key)
            .form(&[("number", NUMBER), ("otp", " 482193 ")]).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn verifying_needs_a_key(app) {
        let r = app.client.post(app.url(VERIFY)).json(&json!({"number": NUMBER, "otp": "482193"}))
            .send().await.unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["detail"], "Authentication credentials were not provided.");
        let (status, _) = verify_as(&app, "otpg_nope_nope", &json!({"number": NUMBER, "otp": "482193"})).await;
        assert_eq!(status, 401);
    }

    async fn another_account_cannot_verify_or_learn_of_a_code(app) {
        let id = send_code(&app, NUMBER, "482193").await;
        let (_, other) = app.new_account("other", 10, 0).await;
        let (s1, b1) = verify_as(&app, &other, &json!({"number": NUMBER, "otp": "482193"})).await;
        let (s2, b2) = verify_as(&app, &other, &json!({"number": "9841000000", "otp": "482193"})).await;
        assert_eq!((s1, &b1), (s2, &b2), "the same answer as for a number never sent to");
        assert_eq!(s1, 404);
        let (s3, b3) = verify_as(&app, &other, &json!({"id": id, "otp": "482193"})).await;
        let (s4, b4) = verify_as(&app, &other, &json!({"id": id + 1000, "otp": "482193"})).await;
        assert_eq!((s3, &b3), (s4, &b4));
        // Nothing was counted against the owner's code, and it still verifies.
        let otp = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        assert_eq!(otp.verify_attempts, 0);
        assert_eq!(history(&app, id).await.iter().filter(|e| e.starts_with("verif")).count(), 0);
        let (status, _) = verify(&app, &json!({"number": NUMBER, "otp": "482193"})).await;
        assert_eq!(status, 200);
    }

    async fn of_20_concurrent_right_codes_exactly_one_verifies(app) {
        send_code(&app, NUMBER, "482193").await;
        let body = json!({"number": NUMBER, "otp": "482193"});
        let replies = futures_util::future::join_all((0..20).map(|_| verify(&app, &body))).await;
        let ok = replies.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(ok, 1, "{replies:?}");
        assert!(replies.iter().all(|(s, _)| *s == 200 || *s == 404), "{replies:?}");
    }

    async fn twenty_concurrent_wrong_codes_kill_the_code_exactly(app) {
        let id = send_code(&app, NUMBER, "482193").await;
        let body = json!({"number": NUMBER, "otp": "000000"});
        let replies = futures_util::future::join_all((0..20).map(|_| verify(&app, &body))).await;
        let mut remaining: Vec<i64> = replies.iter()
            .filter(|(_, b)| reason(b) == "invalid_otp")
            .map(|(_, b)| b["data"]["attempts_remaining"].as_i64().unwrap())
            .collect();
        remaining.sort();
        assert_eq!(remaining, vec![0, 1, 2, 3, 4], "{replies:?}");
        assert!(replies.iter().all(|(s, b)| *s == 400
            && ["invalid_otp", "max_attempts"].contains(&reason(b))
            && b["data"]["attempts_remaining"].as_i64().unwrap() >= 0), "{replies:?}");
        let otp = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        assert_eq!(otp.verify_attempts, 5);
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": "482193"})).await;
        assert_eq!((status, reason(&body)), (400, "max_attempts"));
    }

    async fn a_late_receipt_does_not_undo_a_verification(app) {
        let id = send_code(&app, NUMBER, "482193").await;
        app.wait_for_status(id, "sent").await;
        let (status, _) = verify(&app, &json!({"number": NUMBER, "otp": "482193"})).await;
        assert_eq!(status, 200);
        let (_, ids) = app.store.otp_history(id).await.unwrap();
        let matched = app.store.record_receipts(vec![Receipt {
            route: String::new(),
            message_ids: ids,
            status: Some(OtpStatus::Undeliverable),
            state: "UNDELIV".into(),
            error_code: None,
            at: now_micros(),
        }]).await.unwrap();
        assert_eq!(matched, vec![Some(id)]);
        let otp = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        assert_eq!(otp.status, OtpStatus::Verified);
        assert!(!otp.refunded);
    }

    async fn the_list_shows_codes_until_they_are_purged(app) {
        let id = send_code(&app, NUMBER, "482193").await;
        let (_, list) = app.list("").await;
        let item = &list["results"]["data"][0];
        assert_eq!(item["otp"], "482193");
        assert_eq!(item["message"], "Your code is 482193");
        let detail: Value = app.client.get(app.url(&format!("/api/v1/auths/otps/{id}/")))
            .bearer_auth(&app.key).send().await.unwrap().json().await.unwrap();
        assert_eq!(detail["data"]["otp"], "482193");

        // Nothing has expired long enough: nothing is purged.
        assert_eq!(app.store.purge_codes(now_micros() - 86_400_000_000).await.unwrap(), 0);
        expire(&app, id).await;
        assert_eq!(app.store.purge_codes(now_micros()).await.unwrap(), 1);
        let (_, list) = app.list("").await;
        let item = &list["results"]["data"][0];
        assert_eq!(item["otp"], "******");
        assert_eq!(item["message"], "Your code is ******");
        assert_eq!(item["status"], "expired");
    }

    async fn a_database_dump_shows_no_code_and_no_key(app) {
        let codes = ["482193", "Zq81Xk", "90817263"];
        for code in codes {
            send_code(&app, NUMBER, code).await;
        }
        let generated = app.send_ok(&text_send("9841000000")).await;
        let generated = generated["data"]["details"]["otp"].as_str().unwrap().to_owned();
        // Delivered, verified and wrongly guessed: every path that writes.
        app.wait_for_status(1, "sent").await;
        verify(&app, &json!({"number": NUMBER, "otp": "31415926"})).await;
        verify(&app, &json!({"number": NUMBER, "otp": "90817263"})).await;

        let dump = dump(&app).await;
        assert!(dump.len() > 1000, "the dump has content");
        let secret = app.key.splitn(3, '_').nth(2).unwrap().to_owned();
        for needle in codes.iter().copied().chain([generated.as_str(), app.key.as_str(), secret.as_str()]) {
            assert!(!contains(&dump, needle.as_bytes()), "{needle} is in the database");
        }
        // The dump is of the database that holds the OTPs (the search can find things).
        assert!(contains(&dump, b"Your code is ******"));
    }
}

/// The OTP's detail reply (`GET /otps/{id}/`) as the API sends it.
async fn detail(app: &TestApp, id: i64) -> String {
    let r = app
        .client
        .get(app.url(&format!("/api/v1/auths/otps/{id}/")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

async fn events_of(app: &TestApp, id: i64) -> i64 {
    sql_i64s(
        app,
        &format!("SELECT COUNT(*) FROM otp_events WHERE otp_id = {id}"),
    )
    .await[0]
}

async fn refusals_of(app: &TestApp, id: i64) -> i64 {
    sql_i64s(
        app,
        &format!("SELECT verify_refusals FROM otps WHERE id = {id}"),
    )
    .await[0]
}

/// A second API key of the app's account.
async fn second_key(app: &TestApp) -> String {
    let key = issue_key(app.account_id, Some("send-only".into()));
    app.store.create_key(key.record).await.unwrap();
    key.plaintext
}

for_each_backend! {
    async fn three_hundred_guesses_at_a_dead_code_leave_its_history_bounded(app) {
        let id = send_code(&app, NUMBER, "482193").await;
        app.wait_for_status(id, "sent").await;
        for _ in 0..6 {
            verify(&app, &json!({"number": NUMBER, "otp": "000000"})).await;
        }
        let (events, size) = (events_of(&app, id).await, detail(&app, id).await.len());
        let guess = json!({"number": NUMBER, "otp": "000000"});
        for round in 0..15 {
            let replies = futures_util::future::join_all((0..20).map(|_| verify(&app, &guess))).await;
            for (status, body) in replies {
                assert_eq!((status, reason(&body)), (400, "max_attempts"), "round {round}: {body}");
            }
        }
        // The death is in the history once; the 301 refusals are one row and a count.
        assert_eq!(events_of(&app, id).await, events, "no row per refused guess");
        assert_eq!(detail(&app, id).await.len(), size, "the detail did not grow");
        let kinds = history(&app, id).await;
        assert_eq!(kinds.iter().filter(|e| *e == "verify_failed").count(), 5);
        assert_eq!(kinds.iter().filter(|e| *e == "max_attempts").count(), 1);
        assert_eq!(refusals_of(&app, id).await, 301);
        let otp = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        assert_eq!(otp.verify_attempts, 5);
    }

    async fn guesses_at_an_expired_code_are_recorded_once_and_counted(app) {
        let id = send_code(&app, NUMBER, "482193").await;
        app.wait_for_status(id, "sent").await;
        expire(&app, id).await;
        for _ in 0..50 {
            let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": "482193"})).await;
            assert_eq!((status, reason(&body)), (410, "expired"), "{body}");
        }
        let kinds = history(&app, id).await;
        assert_eq!(kinds.iter().filter(|e| *e == "expired").count(), 1, "{kinds:?}");
        assert_eq!(refusals_of(&app, id).await, 50);
    }

    async fn a_verification_by_number_sees_only_codes_sent_under_the_calling_key(app) {
        // The app's key sends the real code; a leaked key of the same account
        // then plants one of its choosing, newer, to the same number.
        let leaked = second_key(&app).await;
        let real = send_code(&app, NUMBER, "222222").await;
        let planted = app.send_as(&leaked, &personnel(NUMBER, "111111")).await;
        assert_eq!(planted.status(), 200);
        let planted: Value = planted.json().await.unwrap();
        let planted = planted["data"]["details"]["id"].as_i64().unwrap();

        // The victim's login types the planted code: it is checked against the
        // login's own code, and fails.
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": "111111"})).await;
        assert_eq!((status, reason(&body)), (400, "invalid_otp"), "{body}");
        let planted_row = app.store.otp(app.account_id, planted).await.unwrap().unwrap();
        assert_eq!((planted_row.verify_attempts, planted_row.verified_at), (0, None));
        assert_eq!(refusals_of(&app, planted).await, 0);
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": "222222"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["id"], real);

        // A key that sent nothing to the number finds nothing by number; by id
        // it may check any OTP of its account.
        let (status, body) = verify_as(&app, &leaked, &json!({"number": NUMBER, "otp": "222222"})).await;
        assert_eq!(status, 400, "the leaked key sees only its own code: {body}");
        let third = second_key(&app).await;
        let (status, body) = verify_as(&app, &third, &json!({"number": NUMBER, "otp": "111111"})).await;
        assert_eq!((status, reason(&body)), (404, "not_found"), "{body}");
        let (status, body) = verify_as(&app, &third, &json!({"id": planted, "otp": "111111"})).await;
        assert_eq!(status, 200, "{body}");
    }
}

for_each_backend! {
    config: |c| c.verify.number_scope = otpgate::config::NumberScope::Account;
    async fn number_scope_account_lets_any_key_of_the_account_verify_by_number(app) {
        let other = second_key(&app).await;
        let id = send_code(&app, NUMBER, "482193").await;
        let (status, body) = verify_as(&app, &other, &json!({"number": NUMBER, "otp": "482193"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["id"], id);
    }
}

for_each_backend! {
    config: |c| {
        c.verify.per_number_max = 3;
        c.verify.per_number_window_seconds = 60;
    };
    async fn the_verify_limit_refuses_the_fourth_verification_of_a_number_and_counts_nothing(app) {
        let id = send_code(&app, NUMBER, "482193").await;
        for _ in 0..3 {
            let (status, _) = verify(&app, &json!({"number": NUMBER, "otp": "000000"})).await;
            assert_eq!(status, 400);
        }
        for code in ["000000", "482193"] {
            let r = app.client.post(app.url(VERIFY)).bearer_auth(&app.key)
                .json(&json!({"number": NUMBER, "otp": code})).send().await.unwrap();
            assert_eq!(r.status(), 429);
            let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(reason(&body), "verify_rate_limited", "{body}");
            assert_eq!(body["data"]["retry_after"], retry);
            assert_eq!(body["success"], false);
        }
        let otp = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        assert_eq!((otp.verify_attempts, otp.verified_at), (3, None), "nothing counted");
        // Another number of the account is not held back.
        let (status, body) = verify(&app, &json!({"number": "9841000000", "otp": "482193"})).await;
        assert_eq!((status, reason(&body)), (404, "not_found"));
    }
}

for_each_backend! {
    config: |c| c.verify.per_account_rps = 1;
    async fn the_verify_limit_holds_an_account_to_its_rate(app) {
        let bodies: Vec<Value> = (0..10)
            .map(|i| json!({"number": format!("98410000{i:02}"), "otp": "482193"}))
            .collect();
        // Ten at once, again (up to three rounds) if a loaded machine spread
        // them so thin that none met the rate.
        let mut replies = Vec::new();
        for _ in 0..3 {
            replies.extend(futures_util::future::join_all(bodies.iter().map(|b| verify(&app, b))).await);
            if replies.iter().any(|(s, _)| *s == 429) {
                break;
            }
        }
        let limited: Vec<_> = replies.iter().filter(|(s, _)| *s == 429).collect();
        assert!(!limited.is_empty(), "{replies:?}");
        for (_, body) in limited {
            assert_eq!(reason(body), "verify_account_rate_limited");
            assert_eq!(body["data"]["retry_after"], 1);
        }
        assert!(replies.iter().all(|(s, _)| *s == 429 || *s == 404), "{replies:?}");
    }
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every byte of the database: the SQLite files, or every column of every
/// PostgreSQL table (text as text, bytea as its bytes).
pub(crate) async fn dump(app: &TestApp) -> Vec<u8> {
    match app.backend {
        Backend::Sqlite => {
            let db = app.database_url.trim_start_matches("sqlite://").to_owned();
            let mut all = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                if let Ok(bytes) = std::fs::read(format!("{db}{suffix}")) {
                    all.extend(bytes);
                }
            }
            all
        }
        Backend::Postgres => {
            let (c, conn) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let columns = c
                .query(
                    "SELECT table_name::text, column_name::text, data_type::text \
                     FROM information_schema.columns WHERE table_schema = 'public'",
                    &[],
                )
                .await
                .unwrap();
            let mut all = Vec::new();
            for col in columns {
                let (table, column, kind): (String, String, String) =
                    (col.get(0), col.get(1), col.get(2));
                if kind == "bytea" {
                    for r in c
                        .query(&format!("SELECT \"{column}\" FROM \"{table}\""), &[])
                        .await
                        .unwrap()
                    {
                        all.extend(r.get::<_, Option<Vec<u8>>>(0).unwrap_or_default());
                    }
                } else {
                    for r in c
                        .query(&format!("SELECT \"{column}\"::text FROM \"{table}\""), &[])
                        .await
                        .unwrap()
                    {
                        all.extend(
                            r.get::<_, Option<String>>(0)
                                .unwrap_or_default()
                                .into_bytes(),
                        );
                        all.push(0);
                    }
                }
            }
            all
        }
    }
}

async fn hidden_codes_are_masked_in_the_list(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.api.hide_codes = Some(true)).await;
    let id = send_code(&app, NUMBER, "482193").await;
    let (_, list) = app.list("").await;
    let item = &list["results"]["data"][0];
    assert_eq!(item["otp"], "******");
    assert_eq!(item["message"], "Your code is ******");
    let detail: Value = app
        .client
        .get(app.url(&format!("/api/v1/auths/otps/{id}/")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["data"]["otp"], "******");
    // The send reply still shows it, and it still verifies.
    let (status, _) = verify(&app, &json!({"number": NUMBER, "otp": "482193"})).await;
    assert_eq!(status, 200);
}

mod hidden_codes_are_masked_in_the_list {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::hidden_codes_are_masked_in_the_list(super::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::hidden_codes_are_masked_in_the_list(super::Backend::Postgres).await
    }
}

#[tokio::test]
async fn production_mode_without_secrets_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("otpgate.db").display());
    let mut config = crate::helpers::test_config(&url, &dir);
    config.mode = otpgate::config::Mode::Production;
    let error = match otpgate::startup::Application::build(config).await {
        Ok(_) => panic!("started without secrets"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("production"), "{error}");
    for key in [
        "secrets.hmac_key",
        "secrets.encryption_keys",
        "secrets.current_key_id",
    ] {
        assert!(error.contains(key), "{error}");
    }
    assert!(
        !dir.path().join("secrets.toml").exists(),
        "production mode generates no keys"
    );
}

/// A code whose key is no longer configured is never delivered masked: its job
/// fails (and is refunded) when claimed.
async fn a_code_that_cannot_be_read_back_is_not_delivered(backend: Backend) {
    use otp_domain::channel::Channel;
    use otp_domain::vault::CodeVault;
    use otp_store::test_support::sample_otp;
    use otp_store::{Claim, StoreOptions};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(backend, &dir).await;
    let old = otp_store::open(&url, &StoreOptions::default())
        .await
        .unwrap();
    let account = old.create_account("acme", 10, 0).await.unwrap().id;
    let id = old.accept(sample_otp(account)).await.unwrap().id;
    let now = now_micros();
    // The same database under other keys (the old key was removed).
    let options = StoreOptions {
        vault: Arc::new(CodeVault::ephemeral()),
        ..StoreOptions::default()
    };
    let store = otp_store::open(&url, &options).await.unwrap();
    let jobs = store
        .claim_jobs(Claim {
            node: "test".into(),
            channel: Channel::Text,
            limit: 10,
            now,
            lease_until: now + 60_000_000,
        })
        .await
        .unwrap();
    assert!(jobs.is_empty(), "nothing is handed to a driver");
    let otp = store.otp(account, id).await.unwrap().unwrap();
    assert_eq!(otp.status, OtpStatus::Failed);
    assert_eq!(otp.code, otp_store::RecordCode::Masked);
    assert_eq!(otp.message(), "Code ******");
    assert!(otp.refunded);
    assert_eq!(
        store.account(account).await.unwrap().unwrap().sms_credits,
        10
    );
}

mod a_code_that_cannot_be_read_back_is_not_delivered {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_code_that_cannot_be_read_back_is_not_delivered(super::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_code_that_cannot_be_read_back_is_not_delivered(super::Backend::Postgres).await
    }
}
