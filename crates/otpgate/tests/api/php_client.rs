//! The requests of the Laravel package `tingting/laravel`, issued with Guzzle
//! from Debian's `php-cli` and `php-guzzlehttp-guzzle` by
//! peers/clients/php/driver.php (the package is on no registry this project
//! reaches; the driver does what its source does). One test per row of its
//! table in docs/compatibility.md, in development and production mode, on both
//! stores. The package takes a path-style base URL, `.../api/v1/`.

use otpgate::auth::key_id_of;
use otpgate::config::Mode;
use serde_json::{Value, json};

use crate::conformance::{self, EMAIL, assert_kathmandu_time, codes_shown, user_with_key};
use crate::for_each_backend;
use crate::helpers::{TestApp, text_send};
use crate::users::PASSWORD;

/// `php driver.php BASE TOKEN METHOD ARGS...`; what it printed:
/// `{"ok": true, "reply": ...}` or `{"ok": false, "code": ..., "message": ...}`.
async fn php(app: &TestApp, token: &str, method: &str, args: &[&str]) -> Value {
    let driver = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../peers/clients/php/driver.php"
    );
    let out = tokio::process::Command::new("php")
        .arg(driver)
        .arg(format!("{}/api/v1/", app.address))
        .arg(token)
        .arg(method)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("php is not installed ({e}): run scripts/install-test-deps.sh"));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// What the package returned from a call that must succeed.
async fn php_ok(app: &TestApp, token: &str, method: &str, args: &[&str]) -> Value {
    let out = php(app, token, method, args).await;
    assert_eq!(out["ok"], true, "{method}: {out}");
    out["reply"].clone()
}

/// Whether `token` works as the package's Bearer token.
async fn profile_id_with(app: &TestApp, token: &str) -> Value {
    php_ok(app, token, "userDetail", &[]).await["id"].clone()
}

for_each_backend! {
    modes: [
        development => (Mode::Development, conformance::development),
        production => (Mode::Production, conformance::production),
    ];

    async fn php_login_reads_the_tokens_where_either_doc_version_puts_them(app, _mode) {
        let user = user_with_key(&app).await;
        // Login sends no Authorization header (the package has no token yet).
        let reply = php_ok(&app, "", "login", &[EMAIL, PASSWORD]).await;
        assert_eq!(reply["has_logged_in"], true);
        assert_eq!(reply["success"], true);
        assert!(reply["message"].is_string());
        let access = reply["data"]["token"]["access"].as_str().unwrap();
        assert!(reply["data"]["token"]["refresh"].is_string());
        assert_eq!(reply["access"], access);
        // `setToken($access)` then works for the other calls.
        assert_eq!(profile_id_with(&app, access).await, user.id);
        // A wrong password is the package's exception with the reply's message.
        let out = php(&app, "", "login", &[EMAIL, "wrong password"]).await;
        assert_eq!(out["ok"], false);
        assert_eq!(out["code"], 401, "{out}");
        assert_eq!(out["message"], out["data"]["message"]);
    }

    async fn php_refresh_token_reads_a_new_access_token(app, _mode) {
        let user = user_with_key(&app).await;
        let reply = php_ok(&app, "", "refreshToken", &[&user.refresh]).await;
        let access = reply["access"].as_str().unwrap();
        assert_eq!(reply["data"]["access"], access);
        assert_eq!(profile_id_with(&app, access).await, user.id);
    }

    async fn php_generate_api_keys_reads_token_and_message(app, _mode) {
        let user = user_with_key(&app).await;
        // A POST without a body, with `Content-Type: application/json`, under the
        // login's access token.
        let reply = php_ok(&app, &user.access, "generateApiKeys", &[]).await;
        let token = reply["token"].as_str().unwrap();
        assert!(reply["message"].as_str().unwrap().contains("generated"), "{reply}");
        assert_ne!(token, user.key);
        // The new token works; the one it replaced does not.
        assert_eq!(profile_id_with(&app, token).await, user.id);
        let out = php(&app, &user.key, "userDetail", &[]).await;
        assert_eq!(out["code"], 401, "{out}");
        // Documented difference: under the static token it needs the `account`
        // scope, which a generated key lacks; the package throws, nothing changes.
        let out = php(&app, token, "generateApiKeys", &[]).await;
        assert_eq!(out["code"], 403, "{out}");
        assert_eq!(out["data"]["errors"][0]["code"], "insufficient_scope");
        assert!(out["message"].as_str().unwrap().contains("account"), "{out}");
        assert_eq!(profile_id_with(&app, token).await, user.id, "the token still works");
    }

    async fn php_get_api_keys_reads_token_last_used_and_created_at(app, mode) {
        let user = user_with_key(&app).await;
        let reply = php_ok(&app, &user.access, "getApiKeys", &[]).await;
        assert_kathmandu_time(&reply["created_at"]);
        assert!(reply.as_object().unwrap().contains_key("last_used"), "{reply}");
        if mode == Mode::Development {
            assert_eq!(reply["token"], user.key.as_str());
            assert_eq!(profile_id_with(&app, reply["token"].as_str().unwrap()).await, user.id);
        } else {
            // Documented difference: `api.reveal_keys` is off in production.
            let masked = format!("otpg_{}_********", key_id_of(&user.key).unwrap());
            assert_eq!(reply["token"], masked);
            assert!(reply["message"].as_str().unwrap().contains("api.reveal_keys"), "{reply}");
        }
        // `last_used` once the key was used (written in bulk every few seconds).
        php_ok(&app, &user.key, "userDetail", &[]).await;
        let key_id = key_id_of(&user.key).unwrap();
        let mut used = false;
        for _ in 0..600 {
            let keys = app.store.list_keys(Some(app.account_id)).await.unwrap();
            used = keys.iter().any(|k| k.key_id == key_id && k.last_used.is_some());
            if used {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(used, "the key's use was never recorded");
        let reply = php_ok(&app, &user.key, "getApiKeys", &[]).await;
        assert_kathmandu_time(&reply["last_used"]);
    }

    async fn php_user_detail_reads_the_profile(app, _mode) {
        let user = user_with_key(&app).await;
        let reply = php_ok(&app, &user.key, "userDetail", &[]).await;
        assert_eq!(reply["id"], user.id);
        assert_eq!(reply["user"], json!({"first_name": null, "last_name": null, "username": EMAIL, "email": EMAIL}));
        for field in ["profile_picture", "contact_no", "address", "is_verified_contact"] {
            assert_eq!(reply.get(field), Some(&Value::Null), "{field}");
        }
    }

    async fn php_send_otp_posts_the_array_as_json_and_reads_the_details(app, _mode) {
        let user = user_with_key(&app).await;
        // The package README's example (its voice send also names a voice):
        // `otp_length` an integer, Devanagari and `/` escaped by json_encode.
        let message = "तपाईको रिसेटिंग कोड {otp} हो / TingTing";
        let data = json!({
            "number": "9800000000",
            "message": message,
            "sms_send_options": "voice",
            "voice_input": "np_shreegya",
            "otp_length": 4,
            "otp_options": "generated",
        });
        let reply = php_ok(&app, &user.key, "sendOtp", &[&data.to_string()]).await;
        assert_eq!(reply["status"], 200);
        assert_eq!(reply["success"], true);
        assert_eq!(reply["message"], "OTP Call Initiated Successfully.");
        let d = &reply["data"]["details"];
        let code = d["otp"].as_str().unwrap();
        assert_eq!(code.len(), 4, "{code}");
        assert_eq!(d["number"], "9800000000");
        assert_eq!(d["message"], message.replace("{otp}", code));
        assert_eq!(d["voice_input"], "np_shreegya");
        assert_eq!(d["length_factor"], 1.0);
        assert_eq!(d["credits_used"], 1);
        assert_eq!(d["remaining_phone_credits"], 9);
        let stored = app.store.otp(app.account_id, d["id"].as_i64().unwrap()).await.unwrap().unwrap();
        assert_eq!(stored.template.as_str(), message);
        assert_eq!(stored.code.shown(), code);
    }

    async fn php_list_sent_otps_passes_filters_as_the_query(app, mode) {
        let user = user_with_key(&app).await;
        let mut codes = Vec::new();
        for number in ["9851023212", "9801234567", "9851023212"] {
            let reply = app.send_ok(&text_send(number)).await;
            codes.push(reply["data"]["details"]["otp"].as_str().unwrap().to_owned());
        }
        let reply = php_ok(&app, &user.key, "listSentOtps", &[r#"{"limit": 2, "offset": 0}"#]).await;
        assert_eq!(reply["count"], 3);
        assert_eq!(reply["total_pages"], 2);
        assert!(reply["next"].as_str().unwrap().starts_with(&format!("{}/api/v1/auths/list/send-otps/?", app.address)));
        assert_eq!(reply["previous"], Value::Null);
        let items = reply["results"]["data"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["phone_number"], "9851023212");
        assert_kathmandu_time(&items[0]["created_at"]);
        if codes_shown(mode) {
            assert_eq!(items[0]["otp"], codes[2].as_str());
            assert_eq!(items[0]["message"], format!("Your code is {}", codes[2]));
        } else {
            // Documented difference: codes are masked in lists in production.
            assert_eq!(items[0]["otp"], "******");
            assert_eq!(items[0]["message"], "Your code is ******");
        }
        // A filter of ours through the same query string.
        let reply = php_ok(&app, &user.key, "listSentOtps", &[r#"{"phone_number": "9851023212"}"#]).await;
        assert_eq!(reply["count"], 2);
        let numbers: Vec<&Value> = reply["results"]["data"].as_array().unwrap().iter().map(|i| &i["phone_number"]).collect();
        assert_eq!(numbers, [&json!("9851023212"), &json!("9851023212")]);
    }

    async fn php_a_refused_call_is_an_exception_with_the_replys_message(app, _mode) {
        let user = user_with_key(&app).await;
        let data = json!({"number": "12345", "message": "Code {otp}", "sms_send_options": "text"});
        let out = php(&app, &user.key, "sendOtp", &[&data.to_string()]).await;
        assert_eq!(out["ok"], false);
        assert_eq!(out["exception"], "TingTingApiException");
        assert_eq!(out["code"], 400);
        assert_eq!(out["message"], out["data"]["message"]);
        assert!(!out["message"].as_str().unwrap().is_empty());
        assert_eq!(out["data"]["errors"][0]["field"], "number", "{out}");
        assert_eq!(app.otp_count().await, 0, "nothing written");
        assert_eq!(app.balance().await, (100, 10), "nothing spent");
        // A wrong token: the message is DRF's `detail`, which our 401 also
        // carries as `message`.
        let out = php(&app, "otpg_1_not-a-key", "userDetail", &[]).await;
        assert_eq!(out["code"], 401, "{out}");
        assert_eq!(out["message"], out["data"]["detail"]);
    }
}
