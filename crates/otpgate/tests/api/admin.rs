//! The admin API: off without a token, its token required and matched exactly,
//! and what its calls change, on both stores.

use serde_json::{Value, json};

use crate::for_each_backend;
use crate::helpers::{TestApp, text_send};
use crate::users::{ADMIN_TOKEN, PASSWORD, configure, login, tokens_of};

/// Status and body of an admin call with `token` (GET without a body, POST
/// with `body`).
async fn admin(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = match method {
        "GET" => app.client.get(app.url(path)),
        _ => app
            .client
            .post(app.url(path))
            .json(&body.unwrap_or(json!({}))),
    };
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    admin(app, "GET", path, Some(ADMIN_TOKEN), None).await
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    admin(app, "POST", path, Some(ADMIN_TOKEN), Some(body)).await
}

for_each_backend! {
    async fn the_admin_api_is_off_without_a_token(app) {
        for token in [None, Some(ADMIN_TOKEN), Some(app.key.as_str())] {
            let (status, body) = admin(&app, "GET", "/admin/v1/accounts/", token, None).await;
            assert_eq!(status, 404, "{body}");
            assert_eq!(body["success"], false);
            let (status, _) = admin(&app, "POST", "/admin/v1/accounts/", token, Some(json!({"name": "x"}))).await;
            assert_eq!(status, 404);
        }
        assert_eq!(app.store.list_accounts().await.unwrap().len(), 1);
    }
}

for_each_backend! {
    config: configure;

    async fn the_admin_api_takes_only_its_own_token(app) {
        crate::users::add_user(&app, app.account_id, "ana@example.com", PASSWORD).await;
        let (access, _) = tokens_of(&app, "ana@example.com", PASSWORD).await;
        let (status, body) = admin(&app, "GET", "/admin/v1/accounts/", None, None).await;
        assert_eq!(status, 401);
        assert_eq!(body["detail"], "Authentication credentials were not provided.");
        let mut last_changed = ADMIN_TOKEN.to_owned();
        last_changed.pop();
        last_changed.push('X');
        let mut first_changed = ADMIN_TOKEN.to_owned();
        first_changed.replace_range(0..1, "X");
        let near_misses = [
            last_changed,
            first_changed,
            ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1].to_owned(),
            format!("{ADMIN_TOKEN}0"),
            ADMIN_TOKEN.to_uppercase(),
            app.key.clone(),
            access.clone(),
        ];
        for wrong in &near_misses {
            let (status, body) = admin(&app, "GET", "/admin/v1/accounts/", Some(wrong), None).await;
            assert_eq!(status, 401, "{wrong}");
            assert_eq!(body["detail"], "Invalid admin token.");
            let (status, _) = admin(&app, "POST", "/admin/v1/accounts/", Some(wrong), Some(json!({"name": "sneaky"}))).await;
            assert_eq!(status, 401);
        }
        assert!(app.store.account_by_name("sneaky").await.unwrap().is_none(), "nothing was written");
        // Another scheme with the right token is not the admin token either.
        let r = app.client.get(app.url("/admin/v1/accounts/")).header("authorization", format!("Token {ADMIN_TOKEN}")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        // The admin token opens no OTP or user endpoint.
        assert_eq!(app.send_as(ADMIN_TOKEN, &text_send("9851023212")).await.status(), 401);
        let (status, _) = crate::users::call(&app, "GET", "/api/v1/auths/user-detail/", Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 401);
        let (status, body) = get(&app, "/admin/v1/accounts").await;
        assert_eq!(status, 200, "{body}");
    }

    async fn accounts_are_created_listed_and_topped_up(app) {
        let (status, body) = post(&app, "/admin/v1/accounts/", json!({"name": "globex", "sms_credits": 3, "phone_credits": 1})).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], 201);
        let id = body["data"]["account"]["id"].as_i64().unwrap();
        assert_eq!(body["data"]["account"]["sms_credits"], 3);
        let key = body["data"]["key"]["api_key"].as_str().unwrap().to_owned();
        let sent = app.send_as(&key, &text_send("9851023212")).await;
        assert_eq!(sent.status(), 200, "the new account's key works");
        let sent: Value = sent.json().await.unwrap();
        assert_eq!(sent["data"]["details"]["remaining_sms_credits"], 2);

        let (status, body) = post(&app, &format!("/admin/v1/accounts/{id}/credits/"), json!({"sms": 10, "note": "invoice 7"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["data"]["sms_credits"].as_i64(), body["data"]["phone_credits"].as_i64()), (Some(12), Some(1)));
        let sent: Value = app.send_as(&key, &text_send("9851023213")).await.json().await.unwrap();
        assert_eq!(sent["data"]["details"]["remaining_sms_credits"], 11, "the top-up is spendable");
        let ledger = app.store.ledger(id).await.unwrap();
        assert!(ledger.iter().any(|e| e.kind == "topup" && e.sms_delta == 10 && e.note.as_deref() == Some("invoice 7")));

        // Refused changes write nothing.
        let (status, body) = post(&app, &format!("/admin/v1/accounts/{id}/credits/"), json!({"sms": -100})).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["errors"][0]["code"], "negative_balance");
        for bad in [json!({}), json!({"sms": "many"}), json!({"sms": 0, "phone": 0})] {
            let (status, _) = post(&app, &format!("/admin/v1/accounts/{id}/credits/"), bad.clone()).await;
            assert_eq!(status, 400, "{bad}");
        }
        assert_eq!(app.store.account(id).await.unwrap().unwrap().sms_credits, 11);
        for (bad, code) in [(json!({"name": "globex"}), 409), (json!({"name": " "}), 400), (json!({"name": "x", "sms_credits": -1}), 400), (json!({}), 400)] {
            let (status, _) = post(&app, "/admin/v1/accounts/", bad.clone()).await;
            assert_eq!(status, code, "{bad}");
        }
        for (path, code) in [("/admin/v1/accounts/999999/credits/", 404), ("/admin/v1/accounts/abc/credits/", 404)] {
            assert_eq!(post(&app, path, json!({"sms": 1})).await.0, code, "{path}");
        }

        let (status, list) = get(&app, "/admin/v1/accounts/").await;
        assert_eq!(status, 200);
        let names: Vec<&str> = list["data"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["acme", "globex"]);
        let (status, one) = get(&app, &format!("/admin/v1/accounts/{id}/")).await;
        assert_eq!(status, 200);
        assert_eq!(one["data"]["otps"], 2);
        assert_eq!(get(&app, "/admin/v1/accounts/424242/").await.0, 404);
    }

    async fn keys_are_created_listed_and_revoked(app) {
        let path = format!("/admin/v1/accounts/{}/keys/", app.account_id);
        let (status, body) = post(&app, &path, json!({"label": "ci"})).await;
        assert_eq!(status, 201, "{body}");
        let key = body["data"]["api_key"].as_str().unwrap().to_owned();
        let key_id = body["data"]["key_id"].as_str().unwrap().to_owned();
        assert_eq!(app.send_as(&key, &text_send("9851023212")).await.status(), 200);
        let (status, list) = get(&app, &path).await;
        assert_eq!(status, 200);
        let keys = list["data"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().any(|k| k["key_id"] == key_id.as_str() && k["label"] == "ci" && k["revoked_at"].is_null()));
        let secret = crate::users::secret_of(&key);
        assert!(!list.to_string().contains(&secret), "listings show no secret");

        let (status, body) = post(&app, &format!("/admin/v1/keys/{key_id}/revoke/"), json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(app.send_as(&key, &text_send("9851023212")).await.status(), 401, "revoked at once");
        assert_eq!(app.send(&text_send("9851023212")).await.status(), 200, "the other key is untouched");
        assert_eq!(post(&app, &format!("/admin/v1/keys/{key_id}/revoke/"), json!({})).await.0, 404);
        assert_eq!(post(&app, "/admin/v1/keys/nosuchkey/revoke/", json!({})).await.0, 404);
        let (_, list) = get(&app, &path).await;
        assert!(list["data"].as_array().unwrap().iter().any(|k| k["key_id"] == key_id.as_str() && !k["revoked_at"].is_null()));
    }

    async fn users_are_created_and_their_passwords_set(app) {
        let path = format!("/admin/v1/accounts/{}/users/", app.account_id);
        for (bad, field) in [
            (json!({"email": "not-an-email", "password": PASSWORD}), "email"),
            (json!({"email": "ana@example.com", "password": "short"}), "password"),
            (json!({"email": "ana@example.com"}), "password"),
        ] {
            let (status, body) = post(&app, &path, bad.clone()).await;
            assert_eq!(status, 400, "{bad}");
            assert_eq!(body["errors"][0]["field"], field);
        }
        assert!(app.store.list_users(None).await.unwrap().is_empty(), "nothing written");
        let (status, body) = post(&app, &path, json!({"email": "Ana@Example.com", "password": PASSWORD})).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["data"]["email"], "ana@example.com");
        let user_id = body["data"]["id"].as_i64().unwrap();
        assert!(!body.to_string().contains(PASSWORD) && !body.to_string().contains("argon2"));
        assert_eq!(post(&app, "/admin/v1/accounts/999999/users/", json!({"email": "x@example.com", "password": PASSWORD})).await.0, 404);
        let (status, list) = get(&app, &path).await;
        assert_eq!(status, 200);
        assert_eq!(list["data"][0]["id"], user_id);

        let (access, _) = tokens_of(&app, "ana@example.com", PASSWORD).await;
        let password_path = format!("/admin/v1/users/{user_id}/password/");
        assert_eq!(post(&app, &password_path, json!({"password": "tiny"})).await.0, 400);
        assert_eq!(login(&app, "ana@example.com", PASSWORD).await.0, 200, "a refused change changes nothing");
        let (status, body) = post(&app, &password_path, json!({"password": "a fresh password"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(login(&app, "ana@example.com", PASSWORD).await.0, 401);
        assert_eq!(login(&app, "ana@example.com", "a fresh password").await.0, 200);
        let (status, _) = crate::users::call(&app, "GET", "/api/v1/auths/user-detail/", Some(&access)).await;
        assert_eq!(status, 401, "the old token ended with the old password");
        assert_eq!(post(&app, "/admin/v1/users/999999/password/", json!({"password": "a fresh password"})).await.0, 404);
    }

    async fn the_admin_api_is_in_the_openapi_document(app) {
        let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
        for path in [
            "/admin/v1/accounts/",
            "/admin/v1/accounts/{id}/",
            "/admin/v1/accounts/{id}/credits/",
            "/admin/v1/accounts/{id}/keys/",
            "/admin/v1/keys/{key_id}/revoke/",
            "/admin/v1/accounts/{id}/users/",
            "/admin/v1/users/{id}/password/",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        assert!(doc["paths"]["/admin/v1/accounts/"].get("post").is_some());
        for path in ["/admin/v1/accounts/{id}/disable/", "/admin/v1/accounts/{id}/enable/"] {
            assert!(doc["paths"][path].get("post").is_some(), "{path}");
        }
        assert!(doc["components"]["securitySchemes"].get("admin_token").is_some());
    }
}

/// `otpgate ARGS --database-url <the app's store>`, with `stdin`: whether it
/// succeeded, and its standard error.
fn cli(app: &TestApp, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = crate::durability::otpgate()
        .args(args)
        .args(["--database-url", &app.database_url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The command line refuses as the admin API did: with its sentence and code.
fn assert_cli_refuses(app: &TestApp, args: &[&str], stdin: &str, api: &Value) {
    let (ok, stderr) = cli(app, args, stdin);
    assert!(!ok, "{args:?} was accepted; the admin API answered {api}");
    let (message, code) = (
        api["message"].as_str().unwrap(),
        api["errors"][0]["code"].as_str().unwrap(),
    );
    assert!(
        stderr.contains(message) && stderr.contains(code),
        "{args:?}: {stderr} (the admin API: {api})"
    );
}

for_each_backend! {
    config: configure;

    async fn the_command_line_and_the_admin_api_give_the_same_input_the_same_answer(app) {
        let id = app.account_id.to_string();
        let long = "n".repeat(101);

        let (status, body) = post(&app, "/admin/v1/accounts/", json!({"name": long})).await;
        assert_eq!((status, body["errors"][0]["code"].as_str()), (400, Some("too_long")), "{body}");
        assert_cli_refuses(&app, &["accounts", "create", &long], "", &body);

        let (status, body) = post(&app, "/admin/v1/accounts/", json!({"name": "acme"})).await;
        assert_eq!(status, 409, "{body}");
        assert_cli_refuses(&app, &["accounts", "create", "acme"], "", &body);

        let (ok, stderr) = cli(&app, &["accounts", "create", "  spaced  "], "");
        assert!(ok, "{stderr}");
        assert!(app.store.account_by_name("spaced").await.unwrap().is_some(), "the name is kept trimmed");
        let (status, body) = post(&app, "/admin/v1/accounts/", json!({"name": " spaced "})).await;
        assert_eq!((status, body["errors"][0]["code"].as_str()), (409, Some("name_taken")), "{body}");

        let credits = format!("/admin/v1/accounts/{id}/credits/");
        let ledger = app.store.ledger(app.account_id).await.unwrap().len();
        let (status, body) = post(&app, &credits, json!({"sms": 0, "phone": 0})).await;
        assert_eq!((status, body["errors"][0]["code"].as_str()), (400, Some("nothing_to_add")), "{body}");
        assert_cli_refuses(&app, &["credits", "add", &id], "", &body);
        let (status, body) = post(&app, &credits, json!({"sms": -1_000_000})).await;
        assert_eq!(status, 409, "{body}");
        assert_cli_refuses(&app, &["credits", "add", &id, "--sms", "-1000000"], "", &body);
        assert_eq!(app.store.ledger(app.account_id).await.unwrap().len(), ledger, "nothing was added");

        let (status, body) = post(&app, &format!("/admin/v1/accounts/{id}/keys/"), json!({"label": long})).await;
        assert_eq!((status, body["errors"][0]["code"].as_str()), (400, Some("too_long")), "{body}");
        assert_cli_refuses(&app, &["keys", "create", &id, "--label", &long], "", &body);
        assert_eq!(app.store.list_keys(Some(app.account_id)).await.unwrap().len(), 1, "no key was made");

        let users = format!("/admin/v1/accounts/{id}/users/");
        let (status, _) = post(&app, &users, json!({"email": "ana@example.com", "password": PASSWORD})).await;
        assert_eq!(status, 201);
        let (status, body) = post(&app, &users, json!({"email": "ANA@example.com", "password": PASSWORD})).await;
        assert_eq!(status, 409, "{body}");
        assert_cli_refuses(&app, &["users", "create", &id, "ANA@example.com"], &format!("{PASSWORD}\n"), &body);
        assert_eq!(app.store.list_users(None).await.unwrap().len(), 1);
    }
}

/// The one answer a disabled account's key, user or token gets.
fn assert_disabled(status: u16, body: &Value) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["errors"][0]["code"], "account_disabled", "{body}");
}

async fn send_reply(app: &TestApp, key: &str) -> (u16, Value) {
    let r = app.send_as(key, &text_send("9851023212")).await;
    (r.status().as_u16(), r.json().await.unwrap())
}

for_each_backend! {
    config: configure;

    async fn a_disabled_account_is_refused_everywhere_until_it_is_enabled(app) {
        let id = app.account_id;
        crate::users::add_user(&app, id, "ana@example.com", PASSWORD).await;
        let (access, refresh) = tokens_of(&app, "ana@example.com", PASSWORD).await;
        // Sent before, so the send route has the key cached.
        app.send_ok(&text_send("9851023212")).await;
        let (otps, balance) = (app.otp_count().await, app.balance().await);

        let (status, body) = post(&app, &format!("/admin/v1/accounts/{id}/disable/"), json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["data"]["disabled_at"].is_string(), "{body}");
        let (_, listed) = get(&app, "/admin/v1/accounts/").await;
        let shown = listed["data"].as_array().unwrap().iter().find(|a| a["id"] == id).unwrap().clone();
        assert!(shown["disabled_at"].is_string(), "{listed}");

        let (status, body) = send_reply(&app, &app.key).await;
        assert_disabled(status, &body);
        let (status, body) = app.list("").await;
        assert_disabled(status, &body);
        let r = app.client.post(app.url("/api/v1/auths/verify/otp/")).bearer_auth(&app.key)
            .json(&json!({"number": "9851023212", "otp": "000000"})).send().await.unwrap();
        let status = r.status().as_u16();
        assert_disabled(status, &r.json().await.unwrap());
        let (status, body) = crate::users::call(&app, "GET", "/api/v1/auths/user-detail/", Some(&access)).await;
        assert_disabled(status, &body);
        let r = app.client.post(app.url("/api/v1/auths/login/refresh/")).json(&json!({"refresh": refresh})).send().await.unwrap();
        let status = r.status().as_u16();
        assert_disabled(status, &r.json().await.unwrap());
        let (status, _, body) = login(&app, "ana@example.com", PASSWORD).await;
        assert_disabled(status, &body);
        // A wrong password is still only a wrong password: the account's state
        // is told to nobody who has not proved who they are.
        let (status, _, _) = login(&app, "ana@example.com", "not the password at all").await;
        assert_eq!(status, 401);
        let (status, body) = send_reply(&app, "otpg_0000000000000000_nottherightsecret").await;
        assert_eq!(status, 401, "{body}");
        assert_eq!((app.otp_count().await, app.balance().await), (otps, balance), "nothing was written or spent");
        let (status, body) = post(&app, "/admin/v1/accounts/999999/disable/", json!({})).await;
        assert_eq!(status, 404, "{body}");

        let (ok, stderr) = cli(&app, &["accounts", "enable", &id.to_string()], "");
        assert!(ok, "{stderr}");
        let (status, body) = send_reply(&app, &app.key).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(app.list("").await.0, 200);
        let (status, _, body) = login(&app, "ana@example.com", PASSWORD).await;
        assert_eq!(status, 200, "{body}");
        let (ok, stderr) = cli(&app, &["accounts", "disable", &id.to_string()], "");
        assert!(ok, "{stderr}");
        let (status, body) = send_reply(&app, &app.key).await;
        assert_disabled(status, &body);
        let (status, body) = post(&app, &format!("/admin/v1/accounts/{id}/enable/"), json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["data"]["disabled_at"].is_null(), "{body}");
        assert_eq!(send_reply(&app, &app.key).await.0, 200);
    }
}

/// Two nodes on one PostgreSQL database: an account disabled through one
/// node's admin API is refused by the other at once, although the other has
/// its key cached from a send a moment before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_disabled_on_one_node_is_refused_by_the_other() {
    use crate::helpers::{Backend, spawn_app_with};
    let mut config = None;
    let app = spawn_app_with(Backend::Postgres, |c| {
        configure(c);
        config = Some(c.clone());
    })
    .await;
    let second = crate::helpers::Node::start(config.expect("the tweak ran")).await;
    let second_url = second.url.clone();
    let send_on_second = || {
        app.client
            .post(format!("{second_url}/api/v1/auths/send/otp/"))
            .bearer_auth(&app.key)
            .json(&text_send("9851023212"))
            .send()
    };
    assert_eq!(send_on_second().await.unwrap().status(), 200);

    let (status, body) = post(
        &app,
        &format!("/admin/v1/accounts/{}/disable/", app.account_id),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r = send_on_second().await.unwrap();
    let status = r.status().as_u16();
    assert_disabled(status, &r.json().await.unwrap());

    let (status, body) = post(
        &app,
        &format!("/admin/v1/accounts/{}/enable/", app.account_id),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(send_on_second().await.unwrap().status(), 200);
    second.stop().await;
}
