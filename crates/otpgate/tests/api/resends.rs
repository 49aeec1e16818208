//! Resends that keep working (`verify.resend_same_code`, on by default): a
//! generated-code send to a number with a live code of the same account and
//! key sends that code again, and the first message to arrive verifies, by
//! the number or by either `id`, once; the attempts are counted across them.

use otp_domain::channel::{Channel, OtpOption};
use otp_domain::credits::Cost;
use otp_domain::phone::PhoneNumber;
use otp_store::{AcceptError, NewOtp, ResendOf, ResendQuery, now_micros};
use serde_json::{Value, json};

use crate::for_each_backend;
use crate::helpers::{TestApp, sql, sql_i64s, text_send};
use otp_store::Scopes;
use otpgate::auth::issue_key_with_scopes;

const NUMBER: &str = "9851023212";
const VERIFY: &str = "/api/v1/auths/verify/otp/";

async fn verify(app: &TestApp, body: &Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(VERIFY))
        .bearer_auth(&app.key)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn reason(body: &Value) -> &str {
    body["errors"][0]["code"].as_str().unwrap_or("")
}

fn details(reply: &Value) -> &Value {
    &reply["data"]["details"]
}

fn id_of(reply: &Value) -> i64 {
    details(reply)["id"].as_i64().unwrap()
}

fn code_of(reply: &Value) -> String {
    details(reply)["otp"].as_str().unwrap().to_owned()
}

/// A send whose code is 10 digits, so two fresh codes never agree by chance.
fn long_code(number: &str) -> Value {
    json!({
        "number": number,
        "message": "Your code is {otp}",
        "sms_send_options": "text",
        "otp_length": 10,
    })
}

/// A first send and its resend, checked to be one chain.
async fn send_and_resend(app: &TestApp) -> (Value, Value) {
    let first = app.send_ok(&text_send(NUMBER)).await;
    let second = app.send_ok(&text_send(NUMBER)).await;
    assert_ne!(id_of(&first), id_of(&second), "a resend is a new record");
    assert_eq!(details(&first)["resend_of"], Value::Null);
    assert_eq!(details(&second)["resend_of"], id_of(&first));
    assert_eq!(
        code_of(&second),
        code_of(&first),
        "the same code, sent again"
    );
    assert_eq!(
        details(&second)["expires_at"],
        details(&first)["expires_at"]
    );
    (first, second)
}

async fn item(app: &TestApp, id: i64) -> Value {
    let r = app
        .client
        .get(app.url(&format!("/api/v1/auths/otps/{id}/")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

for_each_backend! {
    async fn the_first_code_verifies_by_number_after_a_resend_and_only_once(app) {
        let (first, second) = send_and_resend(&app).await;
        let code = code_of(&first);
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": code})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["id"], id_of(&second), "by number: the newest record");
        for again in [
            json!({"number": NUMBER, "otp": code}),
            json!({"id": id_of(&first), "otp": code}),
            json!({"id": id_of(&second), "otp": code}),
        ] {
            let (status, body) = verify(&app, &again).await;
            assert_eq!((status, reason(&body)), (404, "already_verified"), "{again}: {body}");
        }
        let (_, list) = app.list("").await;
        let items = list["results"]["data"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["resend_of"], id_of(&first));
        assert_eq!(items[1]["resend_of"], Value::Null);
        for i in items {
            assert_eq!(i["status"], "verified", "{i}");
            assert!(i["verified_at"].is_string());
        }
    }

    async fn the_first_code_verifies_by_the_first_id_after_a_resend(app) {
        let (first, second) = send_and_resend(&app).await;
        let code = code_of(&first);
        let (status, body) = verify(&app, &json!({"id": id_of(&first), "otp": code})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["id"], id_of(&first));
        let (status, body) = verify(&app, &json!({"id": id_of(&second), "otp": code})).await;
        assert_eq!((status, reason(&body)), (404, "already_verified"), "{body}");
        let detail = item(&app, id_of(&second)).await;
        assert_eq!(detail["data"]["resend_of"], id_of(&first), "{detail}");
        assert_eq!(detail["data"]["status"], "verified", "{detail}");
    }

    async fn the_code_verifies_by_the_resend_id_and_then_not_by_the_first(app) {
        let (first, second) = send_and_resend(&app).await;
        let code = code_of(&first);
        let (status, body) = verify(&app, &json!({"id": id_of(&second), "otp": code})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["id"], id_of(&second));
        let (status, body) = verify(&app, &json!({"id": id_of(&first), "otp": code})).await;
        assert_eq!((status, reason(&body)), (404, "already_verified"), "{body}");
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": code})).await;
        assert_eq!((status, reason(&body)), (404, "already_verified"), "{body}");
    }

    async fn five_wrong_guesses_across_the_resends_kill_the_code(app) {
        let (first, second) = send_and_resend(&app).await;
        let third = app.send_ok(&text_send(NUMBER)).await;
        assert_eq!(details(&third)["resend_of"], id_of(&first), "always the first record");
        let code = code_of(&first);
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let guesses = [
            json!({"id": id_of(&first), "otp": wrong}),
            json!({"id": id_of(&second), "otp": wrong}),
            json!({"number": NUMBER, "otp": wrong}),
            json!({"id": id_of(&third), "otp": wrong}),
            json!({"id": id_of(&second), "otp": wrong}),
        ];
        for (n, guess) in guesses.iter().enumerate() {
            let (status, body) = verify(&app, guess).await;
            assert_eq!((status, reason(&body)), (400, "invalid_otp"), "{body}");
            assert_eq!(body["data"]["attempts_remaining"], 4 - n as i64, "{guess}: {body}");
        }
        for right in [
            json!({"id": id_of(&first), "otp": code}),
            json!({"id": id_of(&third), "otp": code}),
        ] {
            let (status, body) = verify(&app, &right).await;
            assert_eq!((status, reason(&body)), (400, "max_attempts"), "{right}: {body}");
        }
        // By number nothing is live any more: the newest says why.
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": code})).await;
        assert_eq!((status, reason(&body)), (400, "max_attempts"), "{body}");
        let (_, list) = app.list("").await;
        for i in list["results"]["data"].as_array().unwrap() {
            assert_eq!(i["verify_attempts"], 5, "every record shows the shared count: {i}");
        }
        // A dead code is not repeated: the next send starts a new chain.
        let fresh = app.send_ok(&long_code(NUMBER)).await;
        assert_eq!(details(&fresh)["resend_of"], Value::Null);
        assert_eq!(code_of(&fresh).len(), 10);
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": code_of(&fresh)})).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn a_verified_code_is_not_resent(app) {
        let first = app.send_ok(&long_code(NUMBER)).await;
        let (status, _) = verify(&app, &json!({"number": NUMBER, "otp": code_of(&first)})).await;
        assert_eq!(status, 200);
        let next = app.send_ok(&long_code(NUMBER)).await;
        assert_eq!(details(&next)["resend_of"], Value::Null);
        assert_ne!(code_of(&next), code_of(&first));
    }

    async fn another_key_of_the_account_sends_a_new_code(app) {
        let first = app.send_ok(&long_code(NUMBER)).await;
        let other = issue_key_with_scopes(app.account_id, None, Scopes::ALL);
        app.store.create_key(other.record).await.unwrap();
        let r = app.send_as(&other.plaintext, &long_code(NUMBER)).await;
        assert_eq!(r.status(), 200);
        let second: Value = r.json().await.unwrap();
        assert_eq!(details(&second)["resend_of"], Value::Null);
        assert_ne!(code_of(&second), code_of(&first));
        // The first key's own code still verifies by number under that key.
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": code_of(&first)})).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn another_number_or_account_gets_its_own_code(app) {
        let first = app.send_ok(&long_code(NUMBER)).await;
        let other_number = app.send_ok(&long_code("9841000001")).await;
        assert_eq!(details(&other_number)["resend_of"], Value::Null);
        assert_ne!(code_of(&other_number), code_of(&first));
        let (_, other_key) = app.new_account("other", 10, 0).await;
        let r = app.send_as(&other_key, &long_code(NUMBER)).await;
        let theirs: Value = r.json().await.unwrap();
        assert_eq!(details(&theirs)["resend_of"], Value::Null, "{theirs}");
        assert_ne!(code_of(&theirs), code_of(&first));
    }

    async fn an_expired_first_code_is_not_resent(app) {
        let first = app.send_ok(&long_code(NUMBER)).await;
        let past = now_micros() - 1_000_000;
        sql(&app, &format!("UPDATE otps SET expires_at = {past} WHERE id = {}", id_of(&first))).await;
        let next = app.send_ok(&long_code(NUMBER)).await;
        assert_eq!(details(&next)["resend_of"], Value::Null);
        assert_ne!(code_of(&next), code_of(&first));
        let (status, body) = verify(&app, &json!({"id": id_of(&first), "otp": code_of(&first)})).await;
        assert_eq!((status, reason(&body)), (410, "expired"), "{body}");
        let (status, _) = verify(&app, &json!({"number": NUMBER, "otp": code_of(&next)})).await;
        assert_eq!(status, 200);
    }

    async fn personnel_codes_are_the_clients_and_never_resent(app) {
        let personnel = |code: &str| json!({
            "number": NUMBER, "message": "Code {otp}", "sms_send_options": "text",
            "otp_options": "personnel", "otp": code,
        });
        let a = app.send_ok(&personnel("4821")).await;
        let b = app.send_ok(&personnel("7733")).await;
        assert_eq!(details(&a)["resend_of"], Value::Null);
        assert_eq!(details(&b)["resend_of"], Value::Null);
        assert_eq!(code_of(&b), "7733");
        // A generated send does not repeat a personnel code either.
        let generated = app.send_ok(&long_code(NUMBER)).await;
        assert_eq!(details(&generated)["resend_of"], Value::Null);
        // A personnel send after a generated one is not a resend.
        let c = app.send_ok(&personnel("5150")).await;
        assert_eq!(details(&c)["resend_of"], Value::Null);
        assert_eq!(code_of(&c), "5150");
        // By number: the newest live one; by id: that one, as before.
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": "7733"})).await;
        assert_eq!((status, reason(&body)), (400, "invalid_otp"), "{body}");
        let (status, body) = verify(&app, &json!({"id": id_of(&a), "otp": "4821"})).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": "5150"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["id"], id_of(&c));
    }

    async fn the_resent_messages_carry_the_same_code_and_each_is_charged(app) {
        let before = app.balance().await;
        let (first, second) = send_and_resend(&app).await;
        assert_eq!(app.balance().await, (before.0 - 2, before.1), "one SMS credit per message");
        assert_eq!(details(&second)["credits_used"], 1);
        assert_eq!(details(&second)["remaining_sms_credits"], before.0 - 2);
        app.wait_for_status(id_of(&first), "sent").await;
        app.wait_for_status(id_of(&second), "sent").await;
        let log = std::fs::read_to_string(&app.deliveries).unwrap();
        let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let code = code_of(&first);
        for id in [id_of(&first), id_of(&second)] {
            let line = lines.iter().find(|l| l["otp_id"] == id).expect("a delivery line");
            assert_eq!(line["message"], format!("Your code is {code}"), "{line}");
        }
        let debits = sql_i64s(&app, &format!(
            "SELECT otp_id FROM ledger WHERE kind = 'debit' AND account_id = {} ORDER BY otp_id",
            app.account_id
        )).await;
        assert_eq!(debits, [id_of(&first), id_of(&second)]);
    }

    async fn a_call_after_an_sms_says_the_same_code(app) {
        let sms = app.send_ok(&text_send(NUMBER)).await;
        let call = app.send_ok(&json!({
            "number": NUMBER, "message": "Your code is {otp}", "sms_send_options": "voice",
            "voice_input": "np_rija",
        })).await;
        assert_eq!(details(&call)["resend_of"], id_of(&sms));
        assert_eq!(code_of(&call), code_of(&sms));
        assert_eq!(details(&call)["sms_send_options"], "voice");
        assert_eq!(details(&call)["remaining_phone_credits"], 9, "the call costs a phone credit");
        let (status, body) = verify(&app, &json!({"id": id_of(&call), "otp": code_of(&sms)})).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn a_replayed_resend_returns_its_first_reply_exactly(app) {
        let first = app.send_ok(&text_send(NUMBER)).await;
        let send_keyed = || async {
            let r = app.client.post(app.url("/api/v1/auths/send/otp/"))
                .bearer_auth(&app.key).header("Idempotency-Key", "resend-1")
                .json(&text_send(NUMBER)).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        };
        let resend = send_keyed().await;
        assert_eq!(details(&resend)["resend_of"], id_of(&first));
        let replay = send_keyed().await;
        assert_eq!(replay, resend);
        assert_eq!(app.otp_count().await, 2, "the replay wrote nothing");
    }

    async fn the_store_refuses_a_resend_of_a_code_verified_since_it_was_found(app) {
        let first = app.send_ok(&text_send(NUMBER)).await;
        let first_id = id_of(&first);
        let record = app.store.otp(app.account_id, first_id).await.unwrap().unwrap();
        let key_row = sql_i64s(&app, &format!("SELECT api_key_id FROM otps WHERE id = {first_id}")).await[0];
        let head = app.store.resend_head(ResendQuery {
            account_id: app.account_id,
            api_key_id: key_row,
            e164: record.number.as_str().to_owned(),
            max_attempts: 5,
            now: now_micros(),
            created_after: 0,
        }).await.unwrap().expect("the live first send");
        assert_eq!((head.id, head.code.as_str()), (first_id, code_of(&first).as_str()));
        // Verified between the lookup and the accepting transaction.
        let (status, _) = verify(&app, &json!({"id": first_id, "otp": code_of(&first)})).await;
        assert_eq!(status, 200);
        let before = app.balance().await;
        let now = now_micros();
        let resend = NewOtp {
            account_id: app.account_id,
            api_key_id: Some(key_row),
            number: PhoneNumber::parse(record.number.as_str()).unwrap(),
            template: record.template.clone(),
            otp: head.code.clone(),
            otp_option: OtpOption::Generated,
            channel: Channel::Text,
            voice: None,
            length_factor: None,
            company_name: None,
            segments: 1,
            cost: Cost { sms: 1, phone: 0 },
            created_at: now,
            expires_at: head.expires_at,
            spend_day: 0,
            spend_day_ends: i64::MAX,
            resend_of: Some(ResendOf { id: first_id, max_attempts: 5 }),
            fallback: otp_store::fallback::SendFallback::None,
        };
        assert!(matches!(app.store.accept(resend).await, Err(AcceptError::ResendStale)));
        assert_eq!(app.otp_count().await, 1, "nothing written");
        assert_eq!(app.balance().await, before, "nothing charged");
        // And the API, asked now, sends a new code.
        let next = app.send_ok(&long_code(NUMBER)).await;
        assert_eq!(details(&next)["resend_of"], Value::Null);
    }

    async fn concurrent_guesses_and_resends_count_every_wrong_guess_once_and_one_right_code_wins(app) {
        let first = app.send_ok(&text_send(NUMBER)).await;
        let code = code_of(&first);
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let second = app.send_ok(&text_send(NUMBER)).await;
        let ids = [id_of(&first), id_of(&second)];
        // Wrong and right codes by every id and by number, with resends
        // accepted at the same time.
        let mut bodies = Vec::new();
        for n in 0..12 {
            let otp = if n % 3 == 0 { code.as_str() } else { wrong };
            bodies.push(match n % 3 {
                0 | 1 => json!({"id": ids[n % 2], "otp": otp}),
                _ => json!({"number": NUMBER, "otp": otp}),
            });
        }
        let guesses = futures_util::future::join_all(bodies.iter().map(|b| verify(&app, b)));
        let resend = text_send(NUMBER);
        let resends = futures_util::future::join_all((0..3).map(|_| app.send(&resend)));
        let (replies, sent) = tokio::join!(guesses, resends);
        let verified = replies.iter().filter(|(s, _)| *s == 200).count();
        let wrong_counted = replies.iter().filter(|(_, b)| reason(b) == "invalid_otp").count() as i64;
        for (status, body) in &replies {
            assert!(
                matches!((*status, reason(body)), (200, _) | (400, "invalid_otp") | (400, "max_attempts") | (404, "already_verified")),
                "{status} {body}"
            );
        }
        // A resend accepted after the code was verified starts a new chain,
        // which the guesses by number then reach: count per chain.
        let per_chain = sql_i64s(&app, "SELECT verify_attempts FROM otps WHERE resend_of IS NULL").await;
        assert_eq!(per_chain.iter().sum::<i64>(), wrong_counted, "every wrong guess counted once, on a first record");
        let unlike = sql_i64s(&app, "SELECT COUNT(*) FROM otps r JOIN otps h ON h.id = r.resend_of \
            WHERE r.verify_attempts <> h.verify_attempts OR (r.verified_at IS NULL) <> (h.verified_at IS NULL)").await;
        assert_eq!(unlike, [0], "every record of a chain shows its state");
        assert!(verified <= 1, "at most one right code wins: {replies:?}");
        let first_state = sql_i64s(&app, &format!(
            "SELECT CAST(CASE WHEN verified_at IS NOT NULL THEN 1 WHEN verify_attempts >= 5 THEN 2 \
             ELSE 0 END AS BIGINT) FROM otps WHERE id = {}", ids[0]
        )).await;
        assert_ne!(first_state, [0], "the right codes by id verified the chain unless it died first");
        assert_eq!(verified == 1, first_state == [1], "{replies:?}");
        // The resends either joined a chain and carry its code or, once the
        // chain was verified or dead, started a new one.
        let mut codes = std::collections::HashMap::from([(ids[0], code.clone())]);
        let mut replies_sent = Vec::new();
        for r in sent {
            assert_eq!(r.status(), 200);
            let reply: Value = r.json().await.unwrap();
            codes.entry(id_of(&reply)).or_insert_with(|| code_of(&reply));
            replies_sent.push(reply);
        }
        for reply in &replies_sent {
            if let Some(of) = details(reply)["resend_of"].as_i64() {
                assert_eq!(Some(&code_of(reply)), codes.get(&of), "{reply}");
            }
        }
        assert_eq!(app.otp_count().await, 5);
        let (sms, _) = app.balance().await;
        assert_eq!(sms, 100 - 5);
    }

    async fn bad_input_while_a_code_is_live_changes_nothing(app) {
        let first = app.send_ok(&text_send(NUMBER)).await;
        let before = app.balance().await;
        for bad in [
            json!({"number": NUMBER, "message": "no placeholder", "sms_send_options": "text"}),
            json!({"number": NUMBER, "message": "Code {otp}", "sms_send_options": "fax"}),
            json!({"number": "12", "message": "Code {otp}", "sms_send_options": "text"}),
        ] {
            let r = app.send(&bad).await;
            assert_eq!(r.status(), 400);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["success"], false, "{body}");
            assert!(body["errors"][0]["field"].is_string(), "{body}");
        }
        assert_eq!(app.otp_count().await, 1);
        assert_eq!(app.balance().await, before);
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": code_of(&first)})).await;
        assert_eq!(status, 200, "{body}");
    }
}

for_each_backend! {
    config: |c| c.verify.resend_same_code = false;

    async fn with_resends_off_every_send_gets_a_new_code_and_the_newest_verifies(app) {
        let first = app.send_ok(&long_code(NUMBER)).await;
        let second = app.send_ok(&long_code(NUMBER)).await;
        assert_eq!(details(&second)["resend_of"], Value::Null);
        assert_ne!(code_of(&second), code_of(&first));
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": code_of(&first)})).await;
        assert_eq!((status, reason(&body)), (400, "invalid_otp"), "{body}");
        let (status, body) = verify(&app, &json!({"number": NUMBER, "otp": code_of(&second)})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["id"], id_of(&second));
    }
}

for_each_backend! {
    config: |c| {
        c.limits.per_number_max = 5;
        c.limits.per_number_window_seconds = 600;
    };

    async fn each_resend_counts_against_the_per_number_limit(app) {
        let first = app.send_ok(&text_send(NUMBER)).await;
        for _ in 0..4 {
            let r = app.send_ok(&text_send(NUMBER)).await;
            assert_eq!(details(&r)["resend_of"], id_of(&first));
        }
        let r = app.send(&text_send(NUMBER)).await;
        assert_eq!(r.status(), 429);
        let body: Value = r.json().await.unwrap();
        assert_eq!(reason(&body), "rate_limited", "{body}");
        assert_eq!(app.otp_count().await, 5);
    }
}

for_each_backend! {
    async fn the_openapi_document_shows_the_resend_link(app) {
        let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
        let schemas = &doc["components"]["schemas"];
        for schema in ["SendDetails", "OtpItem"] {
            assert!(schemas[schema]["properties"]["resend_of"].is_object(), "{schema}: {}", schemas[schema]);
        }
        let send = doc["paths"]["/api/v1/auths/send/otp/"]["post"]["responses"]["200"]["description"]
            .as_str().unwrap();
        assert!(send.contains("resend_of"), "{send}");
    }
}
