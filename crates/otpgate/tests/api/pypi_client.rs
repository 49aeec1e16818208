//! The real PyPI `tingting` 1.0.1 client, driven through
//! peers/clients/pypi/driver.py against a live otpgate: one test per row of
//! its table in docs/compatibility.md, in development and production mode, on
//! both stores. The client takes the host alone as its base URL and writes
//! `api/v1/...` into every path.

use otpgate::config::Mode;
use serde_json::{Value, json};

use crate::conformance::{self, EMAIL, assert_kathmandu_time, codes_shown, user_with_key};
use crate::for_each_backend;
use crate::helpers::{TestApp, text_send};

const SEND: &str = "api/v1/auths/send/otp/";
const LIST: &str = "api/v1/auths/list/send-otps/";
/// A message with Devanagari, which the client sends `\uXXXX`-escaped.
const NEPALI: &str = "तपाईंको कोड {otp} हो";

/// The venv's python with `tingting==1.0.1`: missing is a failure, not a skip.
fn python() -> &'static str {
    let python = "/opt/otpgate-tingting-1.0.1/bin/python";
    let installed = std::process::Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; assert m.version('tingting') == '1.0.1'",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "the PyPI tingting 1.0.1 client is not in /opt/otpgate-tingting-1.0.1: run scripts/install-test-deps.sh"
    );
    python
}

/// Runs the driver with `TingTingClient(host, token)` and returns what it
/// printed: `{"ok": true, "reply": ...}` or `{"ok": false, "status": ...}`.
async fn pypi(app: &TestApp, token: &str, args: &[&str]) -> Value {
    let driver = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../peers/clients/pypi/driver.py"
    );
    let out = tokio::process::Command::new(python())
        .arg(driver)
        .arg(&app.address)
        .arg(token)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// What the client returned from a call that must succeed.
async fn pypi_ok(app: &TestApp, token: &str, args: &[&str]) -> Value {
    let out = pypi(app, token, args).await;
    assert_eq!(out["ok"], true, "{out}");
    out["reply"].clone()
}

for_each_backend! {
    modes: [
        development => (Mode::Development, conformance::development),
        production => (Mode::Production, conformance::production),
    ];

    async fn pypi_get_user_reads_the_profile(app, _mode) {
        let user = user_with_key(&app).await;
        // The profile is the same in both modes.
        let got = pypi_ok(&app, &user.key, &["get_user"]).await;
        assert_eq!(got, json!({
            "id": user.id,
            "first_name": null,
            "last_name": null,
            "username": EMAIL,
            "email": EMAIL,
            "profile_picture": null,
            "contact_no": null,
            "address": null,
            "is_verified_contact": null,
        }));
    }

    async fn pypi_post_data_sends_a_generated_text_code(app, _mode) {
        let user = user_with_key(&app).await;
        // The send reply carries the code in both modes.
        let body = json!({"number": "9851023212", "message": NEPALI, "sms_send_options": "text", "otp_length": 6});
        let reply = pypi_ok(&app, &user.key, &["post_data", SEND, &body.to_string()]).await;
        assert_eq!(reply["status"], 200);
        assert_eq!(reply["success"], true);
        assert_eq!(reply["message"], "OTP Sent Successfully.");
        let d = &reply["data"]["details"];
        let code = d["otp"].as_str().unwrap();
        assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
        assert_eq!(d["number"], "9851023212");
        assert_eq!(d["message"], NEPALI.replace("{otp}", code));
        assert_eq!(d["otp_options"], "generated");
        assert_eq!(d["sms_send_options"], "text");
        assert_eq!(d["credits_used"], 1);
        assert_eq!(d["remaining_sms_credits"], 99);
        assert_eq!(d["remaining_phone_credits"], 10);
        // What was stored is what the client sent, unescaped.
        let stored = app.store.otp(app.account_id, d["id"].as_i64().unwrap()).await.unwrap().unwrap();
        assert_eq!(stored.template.as_str(), NEPALI);
        assert_eq!(stored.code.shown(), code);
        assert_eq!(stored.number.as_str(), "+9779851023212");
    }

    async fn pypi_post_data_sends_a_personnel_voice_code(app, _mode) {
        let user = user_with_key(&app).await;
        let body = json!({
            "number": "9861489014", "message": "Your code is {otp}", "sms_send_options": "voice",
            "otp_options": "personnel", "otp": "4821", "voice_input": "np_rija",
        });
        let reply = pypi_ok(&app, &user.key, &["post_data", SEND, &body.to_string()]).await;
        assert_eq!(reply["message"], "OTP Call Initiated Successfully.");
        let d = &reply["data"]["details"];
        assert_eq!(d["otp"], "4821");
        assert_eq!(d["otp_options"], "personnel");
        assert_eq!(d["voice_input"], "np_rija");
        assert_eq!(d["length_factor"], 1.0);
        assert_eq!(d["remaining_phone_credits"], 9);
        assert_eq!(d["remaining_sms_credits"], 100);
        assert_eq!(app.balance().await, (100, 9));
    }

    async fn pypi_get_data_lists_sent_codes_and_follows_next(app, mode) {
        let user = user_with_key(&app).await;
        let mut codes = Vec::new();
        for number in ["9851023212", "9801234567", "9861489014"] {
            let reply = app.send_ok(&text_send(number)).await;
            codes.push(reply["data"]["details"]["otp"].as_str().unwrap().to_owned());
        }
        let page = pypi_ok(&app, &user.key, &["get_data", LIST, r#"{"limit": 2, "offset": 0}"#]).await;
        assert_eq!(page["count"], 3);
        assert_eq!(page["total_pages"], 2);
        assert_eq!(page["previous"], Value::Null);
        assert_eq!(page["results"]["status"], 200);
        assert_eq!(page["results"]["success"], true);
        let items = page["results"]["data"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        // Newest first, as TingTing lists.
        let newest = &items[0];
        assert_eq!(newest["phone_number"], "9861489014");
        assert_eq!(newest["otp_options"], "generated");
        assert_eq!(newest["sms_send_options"], "text");
        assert!(newest["id"].as_i64().is_some());
        assert_kathmandu_time(&newest["created_at"]);
        if codes_shown(mode) {
            assert_eq!(newest["otp"], codes[2].as_str());
            assert_eq!(newest["message"], format!("Your code is {}", codes[2]));
        } else {
            assert_eq!(newest["otp"], "******");
            assert_eq!(newest["message"], "Your code is ******");
        }
        // `next` is absolute; the client follows it as an endpoint under its base.
        let next = page["next"].as_str().unwrap();
        let endpoint = next
            .strip_prefix(&format!("{}/", app.address))
            .unwrap_or_else(|| panic!("{next} is not under {}", app.address));
        assert!(endpoint.starts_with(LIST), "{endpoint}");
        let last = pypi_ok(&app, &user.key, &["get_data", endpoint]).await;
        assert_eq!(last["next"], Value::Null);
        assert!(last["previous"].is_string());
        let items = last["results"]["data"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["phone_number"], "9851023212");
    }

    async fn pypi_a_refused_call_raises_http_error_with_the_envelope(app, _mode) {
        let user = user_with_key(&app).await;
        let body = json!({"number": "12345", "message": "Code {otp}", "sms_send_options": "text"});
        let out = pypi(&app, &user.key, &["post_data", SEND, &body.to_string()]).await;
        assert_eq!(out["ok"], false);
        assert_eq!(out["error"], "HTTPError");
        assert_eq!(out["status"], 400);
        assert_eq!(out["body"]["success"], false);
        assert_eq!(out["body"]["errors"][0]["field"], "number", "{out}");
        assert_eq!(app.otp_count().await, 0, "nothing written");
        assert_eq!(app.balance().await, (100, 10), "nothing spent");
        // Without a token the client sends an empty Authorization header.
        let out = pypi(&app, "", &["get_user"]).await;
        assert_eq!(out["status"], 401, "{out}");
        assert_eq!(out["body"]["detail"], "Authentication credentials were not provided.");
    }
}
