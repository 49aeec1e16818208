use serde_json::{Value, json};

use crate::for_each_backend;
use crate::helpers::{TestApp, text_send};

/// Asserts a 400 naming `field`, and that nothing was written or charged.
async fn assert_rejected(app: &TestApp, body: Value, field: &str) {
    let before = app.balance().await;
    let r = app.send(&body).await;
    let status = r.status();
    let reply: Value = r.json().await.unwrap();
    assert_eq!(status, 400, "{body} -> {reply}");
    assert_eq!(reply["status"], 400);
    assert_eq!(reply["success"], false);
    assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(reply["data"].is_null());
    let fields: Vec<&str> = reply["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&field),
        "{body} -> expected an error on {field}, got {reply}"
    );
    assert_eq!(app.balance().await, before, "{body} spent credits");
    assert_eq!(app.otp_count().await, 0, "{body} wrote a record");
}

for_each_backend! {
    async fn a_text_send_replies_in_the_tingting_envelope_and_debits_one_credit(app) {
        let reply = app.send_ok(&json!({
            "number": "9851023212",
            "message": "Hi your OTP is {otp}",
            "sms_send_options": "text",
            "otp_options": "personnel",
            "otp": "12345",
        })).await;
        assert_eq!(reply["status"], 200);
        assert_eq!(reply["success"], true);
        assert_eq!(reply["message"], "OTP Sent Successfully.");
        assert_eq!(reply["errors"], json!([]));
        let d = &reply["data"]["details"];
        assert_eq!(d["number"], "9851023212");
        assert_eq!(d["otp_options"], "personnel");
        assert_eq!(d["message"], "Hi your OTP is 12345");
        assert_eq!(d["otp"], "12345");
        assert_eq!(d["sms_send_options"], "text");
        assert_eq!(d["credits_used"], 1);
        assert_eq!(d["remaining_sms_credits"], 99);
        assert_eq!(d["remaining_phone_credits"], 10);
        assert_eq!(d["status"], "queued");
        assert!(d["id"].as_i64().unwrap() > 0);
        assert!(d.get("voice_input").is_none());
        assert_eq!(app.balance().await, (99, 10));
        let ledger = app.store.ledger(app.account_id).await.unwrap();
        let debit = ledger.iter().find(|e| e.kind == "debit").expect("a debit row");
        assert_eq!((debit.sms_delta, debit.phone_delta), (-1, 0));
        assert_eq!(debit.otp_id, d["id"].as_i64());
    }

    async fn a_voice_send_says_the_call_was_initiated_and_spends_a_phone_credit(app) {
        let reply = app.send_ok(&json!({
            "number": "+9779861489014",
            "message": "तपाईंको कोड {otp} हो",
            "sms_send_options": "voice",
            "voice_input": "np_binod",
        })).await;
        assert_eq!(reply["message"], "OTP Call Initiated Successfully.");
        let d = &reply["data"]["details"];
        assert_eq!(d["number"], "9861489014");
        assert_eq!(d["voice_input"], "np_binod");
        assert_eq!(d["length_factor"], 1.0);
        assert_eq!(d["credits_used"], 1);
        assert_eq!(d["remaining_phone_credits"], 9);
        assert_eq!(d["remaining_sms_credits"], 100);
        assert_eq!(app.balance().await, (100, 9));
    }

    async fn a_form_encoded_send_is_accepted(app) {
        let r = app.client.post(app.url("/api/v1/auths/send/otp/"))
            .bearer_auth(&app.key)
            .form(&[("number", "9801234567"), ("message", "Code {otp}"), ("sms_send_options", "text"), ("otp_length", "8")])
            .send().await.unwrap();
        assert_eq!(r.status(), 200);
        let reply: Value = r.json().await.unwrap();
        assert_eq!(reply["data"]["details"]["otp"].as_str().unwrap().len(), 8);
    }

    async fn generated_codes_are_digits_of_the_requested_length(app) {
        // One number each: a second generated send to a number with a live
        // code would repeat that code (`verify.resend_same_code`).
        for (len, expect, number) in [(None, 6, "9851023212"), (Some(4), 4, "9851023213"), (Some(10), 10, "9851023214")] {
            let mut body = text_send(number);
            if let Some(l) = len {
                body["otp_length"] = json!(l);
            }
            let reply = app.send_ok(&body).await;
            let code = reply["data"]["details"]["otp"].as_str().unwrap().to_owned();
            assert_eq!(code.len(), expect, "{code}");
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
            assert_eq!(reply["data"]["details"]["message"], format!("Your code is {code}"));
        }
    }

    async fn unknown_fields_are_ignored_and_company_name_is_kept(app) {
        let mut body = text_send("9851023212");
        body["company_name"] = json!("Acme Pvt. Ltd.");
        body["something_new"] = json!({"nested": true});
        let reply = app.send_ok(&body).await;
        assert_eq!(reply["data"]["details"]["company_name"], "Acme Pvt. Ltd.");
        let id = reply["data"]["details"]["id"].as_i64().unwrap();
        let stored = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        assert_eq!(stored.company_name.as_deref(), Some("Acme Pvt. Ltd."));
    }

    async fn every_invalid_field_is_a_400_that_writes_nothing(app) {
        let base = || json!({"number": "9851023212", "message": "Code {otp}", "sms_send_options": "text"});
        let with = |k: &str, v: Value| { let mut b = base(); b[k] = v; b };
        let without = |k: &str| { let mut b = base(); b.as_object_mut().unwrap().remove(k); b };
        let voice = |extra: &[(&str, Value)]| {
            let mut b = json!({"number": "9851023212", "message": "Code {otp}", "sms_send_options": "voice", "voice_input": "np_rija"});
            for (k, v) in extra { b[*k] = v.clone(); }
            b
        };
        let cases: Vec<(Value, &str)> = vec![
            (without("number"), "number"),
            (with("number", json!("")), "number"),
            (with("number", json!(true)), "number"),
            (with("number", json!(["9851023212"])), "number"),
            (with("number", json!("12345")), "number"),
            (with("number", json!("98510232121")), "number"),
            (with("number", json!("98510abc12")), "number"),
            (with("number", json!("9".repeat(1000))), "number"),
            (without("message"), "message"),
            (with("message", json!("no placeholder here")), "message"),
            (with("message", json!(12)), "message"),
            (with("message", json!(format!("{{otp}}{}", "a".repeat(1000)))), "message"),
            (with("message", json!("bad \u{0} char {otp}")), "message"),
            (without("sms_send_options"), "sms_send_options"),
            (with("sms_send_options", json!("email")), "sms_send_options"),
            (with("sms_send_options", json!(1)), "sms_send_options"),
            (with("otp_options", json!("random")), "otp_options"),
            (with("otp_options", json!("personnel")), "otp"),
            (json!({"number": "9851023212", "message": "Code {otp}", "sms_send_options": "text", "otp_options": "personnel", "otp": "12"}), "otp"),
            (json!({"number": "9851023212", "message": "Code {otp}", "sms_send_options": "text", "otp_options": "personnel", "otp": "12345678901"}), "otp"),
            (json!({"number": "9851023212", "message": "Code {otp}", "sms_send_options": "text", "otp_options": "personnel", "otp": "12 45"}), "otp"),
            (with("otp", json!("4444")), "otp"),
            (with("otp_length", json!(3)), "otp_length"),
            (with("otp_length", json!(11)), "otp_length"),
            (with("otp_length", json!(-6)), "otp_length"),
            (with("otp_length", json!("six")), "otp_length"),
            (with("otp_length", json!(6.5)), "otp_length"),
            (voice(&[("voice_input", Value::Null)]), "voice_input"),
            (voice(&[("voice_input", json!("en_us"))]), "voice_input"),
            (voice(&[("length_factor", json!(5))]), "length_factor"),
            (voice(&[("length_factor", json!("fast"))]), "length_factor"),
            (voice(&[("otp_options", json!("personnel")), ("otp", json!("12ab"))]), "otp"),
            (with("company_name", json!("x".repeat(101))), "company_name"),
            // 10 segments is the most: 11 UCS-2 parts of 67 characters.
            (with("message", json!(format!("{{otp}}{}", "क".repeat(700)))), "message"),
        ];
        for (body, field) in cases {
            assert_rejected(&app, body, field).await;
        }
    }

    async fn malformed_bodies_get_the_error_envelope(app) {
        let post = |ct: Option<&'static str>, body: Vec<u8>| {
            let mut req = app.client.post(app.url("/api/v1/auths/send/otp/")).bearer_auth(&app.key).body(body);
            if let Some(ct) = ct { req = req.header("content-type", ct); }
            req.send()
        };
        let cases: Vec<(Option<&'static str>, Vec<u8>, u16)> = vec![
            (Some("application/json"), b"{\"number\": ".to_vec(), 400),
            (Some("application/json"), b"[1, 2]".to_vec(), 400),
            (Some("application/json"), b"\xff\xfe{}".to_vec(), 400),
            (Some("text/plain"), b"number=1".to_vec(), 415),
            (None, b"{}".to_vec(), 415),
            (Some("application/json"), vec![b' '; 64 * 1024 + 1], 413),
        ];
        for (ct, body, expect) in cases {
            let r = post(ct, body).await.unwrap();
            assert_eq!(r.status().as_u16(), expect, "{ct:?}");
            let reply: Value = r.json().await.unwrap();
            assert_eq!(reply["status"], expect);
            assert_eq!(reply["success"], false);
            assert!(reply["errors"].is_array());
        }
        // A body streamed without a length is cut off at the limit too.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..80).map(|_| Ok(vec![b' '; 1024])).collect();
        let r = app.client.post(app.url("/api/v1/auths/send/otp/")).bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
            .send().await.unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(app.otp_count().await, 0);
    }

    async fn insufficient_credits_is_a_402_that_writes_nothing(app) {
        let (_, key) = app.new_account("poor", 1, 0).await;
        // A Devanagari message of 71 characters needs two UCS-2 segments.
        let body = json!({"number": "9851023212", "message": format!("{}{{otp}}", "क".repeat(65)), "sms_send_options": "text"});
        let r = app.send_as(&key, &body).await;
        assert_eq!(r.status(), 402);
        let reply: Value = r.json().await.unwrap();
        assert_eq!(reply["success"], false);
        assert_eq!(reply["errors"][0]["code"], "insufficient_credits");
        let voice = json!({"number": "9851023212", "message": "{otp}", "sms_send_options": "voice", "voice_input": "np_rija"});
        assert_eq!(app.send_as(&key, &voice).await.status(), 402);
        let (_, list) = app.list_as(&key, "").await;
        assert_eq!(list["count"], 0);
    }

    async fn segments_are_charged_by_gsm_and_ucs2_rules(app) {
        // (template, expected credits); generated codes are 6 digits.
        let cases = [
            (format!("{}{{otp}}", "a".repeat(154)), 1),          // 160 GSM-7
            (format!("{}{{otp}}", "a".repeat(155)), 2),          // 161
            (format!("{}{{otp}}", "€".repeat(77)), 1),           // 154 + 6 = 160 septets
            (format!("{}{{otp}}", "€".repeat(78)), 2),           // 162 septets
            (format!("{}{{otp}}", "क".repeat(64)), 1),            // 70 UCS-2 units
            (format!("{}{{otp}}", "क".repeat(65)), 2),            // 71
            (format!("{}{{otp}}", "क".repeat(128)), 2),           // 134 = 2 x 67
            (format!("{}{{otp}}", "क".repeat(129)), 3),           // 135
            ("हेल्लो नमस्ते {otp}".to_owned(), 1),
        ];
        let mut spent = 0;
        for (template, credits) in cases {
            let reply = app.send_ok(&json!({"number": "9851023212", "message": template, "sms_send_options": "text"})).await;
            assert_eq!(reply["data"]["details"]["credits_used"], credits, "{template}");
            assert_eq!(reply["data"]["details"]["segments"], credits, "{template}");
            let encoding = if template.contains('क') || template.contains('न') { "ucs2" } else { "gsm7" };
            assert_eq!(reply["data"]["details"]["encoding"], encoding, "{template}");
            spent += credits;
        }
        // A replay under an idempotency key says the stored text's encoding.
        let body = json!({"number": "9851023212", "message": "नमस्ते {otp}", "sms_send_options": "text"});
        let mut replies = Vec::new();
        for _ in 0..2 {
            let r = app
                .client
                .post(app.url("/api/v1/auths/send/otp/"))
                .bearer_auth(&app.key)
                .header("Idempotency-Key", "ucs2-once")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            replies.push(r.json::<serde_json::Value>().await.unwrap());
        }
        assert_eq!(replies[0]["data"]["details"]["encoding"], "ucs2", "{}", replies[0]);
        assert_eq!(replies[1], replies[0]);
        spent += 1;
        assert_eq!(app.balance().await.0, 100 - spent);
    }
}

/// Sends `number` by `channel` and asserts a 400 on `number` with `code`,
/// nothing written and nothing charged.
async fn assert_number_refused(app: &TestApp, number: &str, channel: &str, code: &str) {
    let body = match channel {
        "text" => text_send(number),
        _ => {
            json!({"number": number, "message": "Code {otp}", "sms_send_options": "voice", "voice_input": "np_rija"})
        }
    };
    let before = app.balance().await;
    let r = app.send(&body).await;
    let status = r.status();
    let reply: Value = r.json().await.unwrap();
    assert_eq!(status, 400, "{number} by {channel} -> {reply}");
    assert_eq!(reply["errors"].as_array().unwrap().len(), 1, "{reply}");
    assert_eq!(reply["errors"][0]["field"], "number", "{reply}");
    assert_eq!(
        reply["errors"][0]["code"], code,
        "{number} by {channel} -> {reply}"
    );
    assert!(reply["data"].is_null());
    assert_eq!(
        app.balance().await,
        before,
        "{number} by {channel} spent credits"
    );
    assert_eq!(
        app.otp_count().await,
        0,
        "{number} by {channel} wrote a record"
    );
}

/// Premium-rate, shared-cost, personal, VoIP, UAN, pager, toll-free and
/// satellite numbers, each valid in libphonenumber's metadata.
const TOLL_FRAUD_NUMBERS: [&str; 12] = [
    "+19002345678",  // US premium rate
    "+449098765432", // UK premium rate
    "+448712345678", // UK 0871, premium rate
    "+447012345678", // UK personal number
    "+33884012345",  // France shared cost
    "+445612345678", // UK VoIP
    "+445512345678", // UK UAN
    "+447640123456", // UK pager
    "+18002345678",  // US toll free
    "+881612345678", // Iridium satellite
    "+870301234567", // Inmarsat
    "+80012345678",  // international freephone
];

for_each_backend! {
    config: |c| c.limits.allowed_countries = Vec::new();

    async fn premium_satellite_and_other_service_numbers_are_refused_on_both_channels_even_with_every_country_allowed(app) {
        for number in TOLL_FRAUD_NUMBERS {
            for channel in ["text", "voice"] {
                assert_number_refused(&app, number, channel, "number_type_not_allowed").await;
            }
        }
        let r = app.send(&text_send("+19002345678")).await;
        let reply: Value = r.json().await.unwrap();
        assert_eq!(
            reply["errors"][0]["message"],
            "OTPs are not sent to premium-rate numbers; give a mobile number."
        );
    }

    async fn mobiles_at_home_and_abroad_still_get_otps_by_text_and_voice(app) {
        for number in [
            "9851023212", "9801234567", "9741234567", "9721234567", "9612345678",
            "+447400123456", "+14155552671", "+919812345678", "+61412345678",
        ] {
            let reply = app.send_ok(&text_send(number)).await;
            assert_eq!(reply["data"]["details"]["sms_send_options"], "text", "{number}");
            let reply = app.send_ok(&json!({"number": number, "message": "Code {otp}", "sms_send_options": "voice", "voice_input": "np_rija"})).await;
            assert_eq!(reply["data"]["details"]["sms_send_options"], "voice", "{number}");
        }
        assert_eq!(app.balance().await, (91, 1));
    }

    async fn a_fixed_line_gets_a_call_but_no_sms(app) {
        for number in ["014123456", "+441212345678"] {
            assert_number_refused(&app, number, "text", "not_mobile").await;
        }
        for number in ["014123456", "+441212345678"] {
            let reply = app.send_ok(&json!({"number": number, "message": "Code {otp}", "sms_send_options": "voice", "voice_input": "np_rija"})).await;
            assert_eq!(reply["data"]["details"]["credits_used"], 1, "{number}");
        }
    }
}

for_each_backend! {
    async fn a_satellite_number_is_refused_for_its_type_before_its_country(app) {
        for channel in ["text", "voice"] {
            assert_number_refused(&app, "+881612345678", channel, "number_type_not_allowed").await;
        }
        // A number of a country outside the list is still refused for that.
        assert_number_refused(&app, "+447400123456", "text", "country_not_allowed").await;
    }
}

/// A client that hangs up while its send is being accepted drops the request's
/// handler, but the store commits the send all the same: it is counted, and
/// the delivery worker is woken for it as for any accepted send. With the
/// worker's poll set to an hour, only that wake-up delivers it in time.
/// SQLite's write lock, held by another connection, keeps the send waiting in
/// the store's writer while the client hangs up.
#[tokio::test]
async fn a_send_whose_client_hung_up_while_it_was_accepted_is_counted_and_delivered() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |c| {
        c.delivery.poll_interval_ms = 3_600_000;
    })
    .await;
    let path = app
        .database_url
        .strip_prefix("sqlite://")
        .unwrap()
        .to_owned();
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let address = app.address.strip_prefix("http://").unwrap().to_owned();
    let body = serde_json::to_vec(&text_send("9851023212")).unwrap();
    let head = format!(
        "POST /api/v1/auths/send/otp/ HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        app.key,
        body.len()
    );
    let mut client = tokio::net::TcpStream::connect(&address).await.unwrap();
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&body).await.unwrap();
    // The send reaches the writer, which waits for the lock; then the client
    // hangs up and the server drops the handler.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.otp_count().await,
        0,
        "nothing is committed while the lock is held"
    );
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);

    let mut stored = 0;
    for _ in 0..400 {
        stored = app.otp_count().await;
        if stored > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(stored, 1, "the send is committed once the lock is gone");
    let (_, list) = app.list("").await;
    let id = list["results"]["data"][0]["id"]
        .as_i64()
        .expect("the stored send's id");
    app.wait_for_status(id, "sent").await;
    assert!(
        app.metrics_text()
            .await
            .contains("otpgate_sends_total{channel=\"text\",outcome=\"accepted\"} 1"),
        "the send is counted as accepted"
    );
}
