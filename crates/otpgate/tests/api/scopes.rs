//! API key scopes (`send`, `verify`, `read`, `account`), how keys get them
//! (API, admin API, a user's `generate-api-keys`, the CLI, the migration
//! default), codes hidden from replies, and `Idempotency-Key`s bound to the key
//! that used them; on both stores.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use otp_store::{Scope, Scopes};
use otpgate::auth::{issue_key, issue_key_with_scopes, key_id_of};
use otpgate::config::{Config, Mode, Secret};
use serde_json::{Value, json};

use crate::durability::otpgate;
use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, sql, sql_i64s, text_send};
use crate::users::{ADMIN_TOKEN, PASSWORD, add_user, configure, tokens_of};

const NUMBER: &str = "9851023212";

/// A key of the test account with exactly `scopes`.
async fn key_with(app: &TestApp, scopes: &[Scope]) -> String {
    let issued = issue_key_with_scopes(app.account_id, None, Scopes::of(scopes));
    app.store.create_key(issued.record).await.unwrap();
    issued.plaintext
}

/// Status and body of a request under `key` (a JSON body for POST and PUT).
async fn call(
    app: &TestApp,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let url = app.url(path);
    let mut request = match method {
        "GET" => app.client.get(url),
        "POST" => app.client.post(url),
        "PUT" => app.client.put(url),
        "DELETE" => app.client.delete(url),
        other => panic!("no method {other}"),
    }
    .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(body);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let is_json = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
    let body = if is_json {
        r.json().await.unwrap()
    } else {
        Value::Null
    };
    (status, body)
}

fn assert_insufficient(status: u16, body: &Value, scope: &str, what: &str) {
    assert_eq!(status, 403, "{what}: {body}");
    assert_eq!(body["success"], false, "{what}: {body}");
    assert_eq!(
        body["errors"][0]["code"], "insufficient_scope",
        "{what}: {body}"
    );
    assert_eq!(body["data"]["required_scope"], scope, "{what}: {body}");
    assert!(
        body["message"].as_str().unwrap().contains(scope),
        "{what}: the message names the scope: {body}"
    );
}

/// A personnel send under the test account's key (every scope); its id.
async fn seed(app: &TestApp, code: &str) -> i64 {
    let body = app
        .send_ok(&json!({
            "number": NUMBER, "message": "Your code is {otp}", "sms_send_options": "text",
            "otp_options": "personnel", "otp": code,
        }))
        .await;
    body["data"]["details"]["id"].as_i64().unwrap()
}

/// Every endpoint an API key opens: the scope it needs, the request, and the
/// status a key with that scope gets.
fn probes(id: i64, number: &str) -> Vec<(Scope, &'static str, String, Option<Value>, u16)> {
    vec![
        (
            Scope::Send,
            "POST",
            "/api/v1/auths/send/otp/".into(),
            Some(text_send(number)),
            200,
        ),
        (
            Scope::Verify,
            "POST",
            "/api/v1/auths/verify/otp/".into(),
            Some(json!({"id": id, "otp": "111111"})),
            400,
        ),
        (
            Scope::Read,
            "GET",
            "/api/v1/auths/list/send-otps/".into(),
            None,
            200,
        ),
        (
            Scope::Read,
            "GET",
            format!("/api/v1/auths/otps/{id}/"),
            None,
            200,
        ),
        (
            Scope::Read,
            "GET",
            "/api/v1/auths/voices/".into(),
            None,
            200,
        ),
        (
            Scope::Read,
            "POST",
            "/api/v1/auths/voice/preview/".into(),
            Some(json!({"message": "Code {otp}", "voice_input": "np_rija"})),
            200,
        ),
        (
            Scope::Read,
            "GET",
            "/api/v1/auths/webhook/deliveries/".into(),
            None,
            200,
        ),
        (
            Scope::Account,
            "GET",
            "/api/v1/auths/webhook/".into(),
            None,
            404,
        ),
        (
            Scope::Account,
            "GET",
            "/api/v1/auths/api-keys/".into(),
            None,
            200,
        ),
        (
            Scope::Account,
            "POST",
            "/api/v1/auths/api-keys/".into(),
            Some(json!({"label": "minted", "scopes": ["account"]})),
            201,
        ),
    ]
}

async fn key_count(app: &TestApp) -> usize {
    app.store
        .list_keys(Some(app.account_id))
        .await
        .unwrap()
        .len()
}

for_each_backend! {
    async fn each_scope_allows_its_endpoints_and_nothing_else(app) {
        let id = seed(&app, "482193").await;
        let mut keys = Vec::new();
        for scope in Scope::ALL {
            keys.push((scope, key_with(&app, &[scope]).await));
        }
        for (i, (scope, key)) in keys.iter().enumerate() {
            // Each key sends to its own number, so a send it is allowed is not
            // held back by an earlier one.
            let number = format!("98510232{i:02}");
            for (needed, method, path, body, allowed) in probes(id, &number) {
                let what = format!("{} key, {method} {path}", scope.as_str());
                let (status, reply) = call(&app, key, method, &path, body.as_ref()).await;
                if needed == *scope {
                    assert_eq!(status, allowed, "{what}: {reply}");
                } else {
                    assert_insufficient(status, &reply, needed.as_str(), &what);
                }
            }
        }
        // Only the send key's send was written; only the account key minted a key.
        assert_eq!(app.otp_count().await, 2);
        assert_eq!(key_count(&app).await, 1 + 4 + 1);
        let (_, list) = app.list("").await;
        assert_eq!(list["results"]["data"][1]["verify_attempts"], 1, "only the verify key's attempt counted");
    }

    async fn a_key_never_mints_a_scope_it_lacks(app) {
        let manager = key_with(&app, &[Scope::Read, Scope::Account]).await;
        let path = "/api/v1/auths/api-keys/";
        // Without `scopes`, a new key would get send, verify and read.
        let (status, body) = call(&app, &manager, "POST", path, Some(&json!({}))).await;
        assert_insufficient(status, &body, "send", "the default scopes");
        let (status, body) = call(&app, &manager, "POST", path, Some(&json!({"scopes": "read,verify"}))).await;
        assert_insufficient(status, &body, "verify", "a scope the caller lacks");
        let (status, body) = call(&app, &manager, "POST", path, Some(&json!({"scopes": ["read", "admin"]}))).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["field"], "scopes", "{body}");
        assert_eq!(body["errors"][0]["code"], "invalid", "{body}");
        assert_eq!(key_count(&app).await, 2, "nothing was written");

        let (status, body) = call(&app, &manager, "POST", path, Some(&json!({"scopes": ["read"], "label": "dashboard"}))).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["data"]["scopes"], json!(["read"]));
        let minted = body["data"]["api_key"].as_str().unwrap().to_owned();
        assert_eq!(call(&app, &minted, "GET", "/api/v1/auths/list/send-otps/", None).await.0, 200);
        let (status, body) = call(&app, &minted, "POST", "/api/v1/auths/send/otp/", Some(&text_send(NUMBER))).await;
        assert_insufficient(status, &body, "send", "the minted read key");
        // A key with every scope may give any of them; the listing shows them.
        let (status, body) = call(&app, &app.key, "POST", path, Some(&json!({"scopes": "send account"}))).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["data"]["scopes"], json!(["send", "account"]));
        let (_, listed) = call(&app, &manager, "GET", path, None).await;
        let listed = listed["data"].as_array().unwrap();
        assert_eq!(listed.len(), 4);
        assert!(listed.iter().all(|k| k.get("api_key").is_none()), "no secrets in the listing");
        assert_eq!(listed[2]["label"], "dashboard");
        assert_eq!(listed[2]["scopes"], json!(["read"]));
    }

    async fn an_account_key_revokes_its_own_accounts_keys_only(app) {
        let manager = key_with(&app, &[Scope::Account]).await;
        let victim = key_with(&app, &[Scope::Send]).await;
        let (_, other_key) = app.new_account("other", 10, 0).await;
        let other_id = key_id_of(&other_key).unwrap();
        let (status, body) = call(&app, &manager, "POST", &format!("/api/v1/auths/api-keys/{other_id}/revoke/"), None).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(app.send_as(&other_key, &text_send(NUMBER)).await.status(), 200, "still works");
        let victim_id = key_id_of(&victim).unwrap();
        let (status, body) = call(&app, &manager, "POST", &format!("/api/v1/auths/api-keys/{victim_id}/revoke/"), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["revoked"], true);
        assert_eq!(app.send_as(&victim, &text_send(NUMBER)).await.status(), 401);
        let (status, _) = call(&app, &manager, "POST", &format!("/api/v1/auths/api-keys/{victim_id}/revoke/"), None).await;
        assert_eq!(status, 404, "already revoked");
        // A key without `account` may not revoke, not even itself.
        let reader = key_with(&app, &[Scope::Read]).await;
        let reader_id = key_id_of(&reader).unwrap();
        let (status, body) = call(&app, &reader, "POST", &format!("/api/v1/auths/api-keys/{reader_id}/revoke/"), None).await;
        assert_insufficient(status, &body, "account", "revoking without account");
    }

    async fn a_key_written_without_scopes_keeps_everything_it_could_do(app) {
        // As a key made before scopes existed, or by an older node during a
        // rolling upgrade: the row names no scopes.
        let issued = issue_key(app.account_id, None);
        let hash: String = issued.record.secret_hash.iter().map(|b| format!("{b:02x}")).collect();
        let literal = match app.backend {
            Backend::Sqlite => format!("X'{hash}'"),
            Backend::Postgres => format!("'\\x{hash}'::bytea"),
        };
        sql(&app, &format!(
            "INSERT INTO api_keys (key_id, account_id, secret_hash, created_at) VALUES ('{}', {}, {literal}, 0)",
            issued.record.key_id, app.account_id
        )).await;
        let stored = app.store.find_key(&issued.record.key_id).await.unwrap().unwrap();
        assert_eq!(stored.scopes, Scopes::ALL);
        let old = issued.plaintext;
        assert_eq!(app.send_as(&old, &text_send(NUMBER)).await.status(), 200);
        assert_eq!(call(&app, &old, "GET", "/api/v1/auths/list/send-otps/", None).await.0, 200);
        assert_eq!(call(&app, &old, "GET", "/api/v1/auths/webhook/", None).await.0, 404, "not set, not forbidden");
        // Keys made now get send, verify and read unless asked.
        let new = issue_key(app.account_id, None);
        assert_eq!(app.store.create_key(new.record).await.unwrap().scopes, Scopes::DEFAULT);
    }
}

for_each_backend! {
    config: configure;

    async fn the_admin_api_gives_keys_the_scopes_it_is_asked_for(app) {
        let path = format!("/admin/v1/accounts/{}/keys/", app.account_id);
        let (status, body) = call(&app, ADMIN_TOKEN, "POST", &path, Some(&json!({"label": "ci"}))).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["data"]["scopes"], json!(["send", "verify", "read"]));
        let (status, body) = call(&app, ADMIN_TOKEN, "POST", &path, Some(&json!({"scopes": ["verify"]}))).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["data"]["scopes"], json!(["verify"]));
        let verifier = body["data"]["api_key"].as_str().unwrap().to_owned();
        let (status, reply) = call(&app, &verifier, "POST", "/api/v1/auths/send/otp/", Some(&text_send(NUMBER))).await;
        assert_insufficient(status, &reply, "send", "an admin-made verify key");
        let before = key_count(&app).await;
        for bad in [json!({"scopes": ["root"]}), json!({"scopes": []}), json!({"scopes": 7})] {
            let (status, body) = call(&app, ADMIN_TOKEN, "POST", &path, Some(&bad)).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["errors"][0]["field"], "scopes", "{body}");
        }
        assert_eq!(key_count(&app).await, before, "nothing was written");
        let (_, listed) = call(&app, ADMIN_TOKEN, "GET", &path, None).await;
        assert_eq!(listed["data"][0]["scopes"], json!(["send", "verify", "read", "account"]));
        assert_eq!(listed["data"][2]["scopes"], json!(["verify"]));
        // An account's first key too.
        let (status, body) = call(&app, ADMIN_TOKEN, "POST", "/admin/v1/accounts/", Some(&json!({"name": "globex", "scopes": "send"}))).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["data"]["key"]["scopes"], json!(["send"]));
        let (status, body) = call(&app, ADMIN_TOKEN, "POST", "/admin/v1/accounts/", Some(&json!({"name": "initech", "scopes": "all"}))).await;
        assert_eq!(status, 400, "{body}");
        assert!(app.store.account_by_name("initech").await.unwrap().is_none(), "nothing was written");
    }

    async fn generate_api_keys_mints_send_verify_read_unless_asked_otherwise(app) {
        add_user(&app, app.account_id, "ana@example.com", PASSWORD).await;
        let (access, _) = tokens_of(&app, "ana@example.com", PASSWORD).await;
        let generate = |body: Option<Value>| {
            let mut request = app.client.post(app.url("/api/v1/auths/generate-api-keys/")).bearer_auth(&access);
            if let Some(body) = body {
                request = request.json(&body);
            }
            async move {
                let r = request.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        let scopes_of = |body: &Value| {
            let key = body["data"]["token"].as_str().unwrap().to_owned();
            let store = app.store.clone();
            async move { store.find_key(key_id_of(&key).unwrap()).await.unwrap().unwrap().scopes }
        };
        // No body at all, as TingTing's dashboard sends it.
        let (status, body) = generate(None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(scopes_of(&body).await, Scopes::DEFAULT);
        let key = body["data"]["token"].as_str().unwrap().to_owned();
        assert_insufficient_call(&app, &key, "/api/v1/auths/api-keys/", "account").await;

        let (status, body) = generate(Some(json!({"scopes": ["send", "account"]}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(scopes_of(&body).await, Scopes::of(&[Scope::Send, Scope::Account]));
        let current = body["data"]["token"].as_str().unwrap().to_owned();

        let (status, body) = generate(Some(json!({"scopes": "send,everything"}))).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["field"], "scopes");
        assert_eq!(
            call(&app, &current, "GET", "/api/v1/auths/api-keys/", None).await.0, 200,
            "a refused request leaves the current key alone"
        );
    }
}

async fn assert_insufficient_call(app: &TestApp, key: &str, path: &str, scope: &str) {
    let (status, body) = call(app, key, "GET", path, None).await;
    assert_insufficient(status, &body, scope, path);
}

/// Sends under `key` with an `Idempotency-Key`.
async fn send_once(app: &TestApp, key: &str, idempotency: &str, body: &Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/api/v1/auths/send/otp/"))
        .bearer_auth(key)
        .header("Idempotency-Key", idempotency)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

for_each_backend! {
    async fn an_idempotency_key_replays_only_to_the_api_key_that_used_it(app) {
        let other = key_with(&app, &[Scope::Send]).await;
        let (status, first) = send_once(&app, &app.key, "order-17", &text_send(NUMBER)).await;
        assert_eq!(status, 200, "{first}");
        let (status, body) = send_once(&app, &other, "order-17", &text_send(NUMBER)).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["errors"][0]["code"], "idempotency_key_reused", "{body}");
        assert!(!body.to_string().contains(first["data"]["details"]["otp"].as_str().unwrap()), "no code leaks: {body}");
        assert_eq!(app.otp_count().await, 1, "nothing was sent for the other key");
        let (status, again) = send_once(&app, &app.key, "order-17", &text_send(NUMBER)).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again, first, "the key that used it gets its reply again");
        assert_eq!(app.otp_count().await, 1);
    }
}

for_each_backend! {
    async fn two_keys_racing_on_one_idempotency_key_send_once_and_never_share_a_reply(app) {
        let other = key_with(&app, &[Scope::Send]).await;
        let sends: Vec<_> = (0..10)
            .map(|i| {
                let key = if i % 2 == 0 { app.key.clone() } else { other.clone() };
                let request = app
                    .client
                    .post(app.url("/api/v1/auths/send/otp/"))
                    .bearer_auth(key)
                    .header("Idempotency-Key", "shared")
                    .json(&text_send(NUMBER));
                tokio::spawn(async move {
                    let r = request.send().await.unwrap();
                    (i % 2, r.status().as_u16(), r.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut winners = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for s in sends {
            let (side, status, body) = s.await.unwrap();
            match status {
                200 => {
                    winners.insert(side);
                    ids.insert(body["data"]["details"]["id"].as_i64().unwrap());
                }
                422 => assert_eq!(body["errors"][0]["code"], "idempotency_key_reused", "{body}"),
                other => panic!("{other}: {body}"),
            }
        }
        assert_eq!(winners.len(), 1, "only one key's requests got replies");
        assert_eq!(ids.len(), 1, "every reply names the one OTP");
        assert_eq!(app.otp_count().await, 1);
    }
}

fn code_hidden_in_send_reply(c: &mut Config) {
    c.api.code_in_send_reply = false;
}

for_each_backend! {
    config: code_hidden_in_send_reply;

    async fn with_code_in_send_reply_off_the_reply_and_its_replay_hide_the_code(app) {
        let body = json!({
            "number": NUMBER, "message": "Your code is {otp}", "sms_send_options": "text",
            "otp_options": "personnel", "otp": "482193",
        });
        let (status, first) = send_once(&app, &app.key, "login-1", &body).await;
        assert_eq!(status, 200, "{first}");
        let details = &first["data"]["details"];
        assert_eq!(details["otp"], "******", "{first}");
        assert_eq!(details["message"], "Your code is ******", "{first}");
        assert!(!first.to_string().contains("482193"), "{first}");
        let (status, again) = send_once(&app, &app.key, "login-1", &body).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again, first, "the replay carries exactly what the first reply did");
        assert_eq!(app.otp_count().await, 1);
        // The code itself went out and verifies.
        let id = details["id"].as_i64().unwrap();
        app.wait_for_status(id, "sent").await;
        let delivered = std::fs::read_to_string(&app.deliveries).unwrap();
        assert!(delivered.contains("Your code is 482193"), "{delivered}");
        let (status, verified) = call(&app, &app.key, "POST", "/api/v1/auths/verify/otp/", Some(&json!({"id": id, "otp": "482193"}))).await;
        assert_eq!(status, 200, "{verified}");
        // Lists follow `api.hide_codes`, not this setting (development: shown).
        let (_, list) = app.list("").await;
        assert_eq!(list["results"]["data"][0]["otp"], "482193");
    }
}

/// Production mode with every secret configured.
fn production(c: &mut Config) {
    configure(c);
    c.mode = Mode::Production;
    c.secrets.hmac_key = Some(Secret::new(BASE64.encode([1u8; 32])));
    c.secrets.encryption_keys = [("k1".to_owned(), Secret::new(BASE64.encode([2u8; 32])))].into();
    c.secrets.current_key_id = "k1".into();
}

for_each_backend! {
    config: production;

    async fn production_mode_hides_codes_in_list_and_detail_but_not_in_the_send_reply(app) {
        let id = seed(&app, "482193").await;
        let (_, list) = app.list("").await;
        let item = &list["results"]["data"][0];
        assert_eq!(item["otp"], "******", "{list}");
        assert_eq!(item["message"], "Your code is ******", "{list}");
        let (status, detail) = call(&app, &app.key, "GET", &format!("/api/v1/auths/otps/{id}/"), None).await;
        assert_eq!(status, 200, "{detail}");
        assert_eq!(detail["data"]["otp"], "******");
        assert!(!detail.to_string().contains("482193"), "{detail}");
        let reply = app.send_ok(&text_send("9851023299")).await;
        let code = reply["data"]["details"]["otp"].as_str().unwrap();
        assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_mode_shows_codes_when_hide_codes_is_set_to_false() {
    let app = crate::helpers::spawn_app_with(Backend::Sqlite, |c| {
        production(c);
        c.api.hide_codes = Some(false);
    })
    .await;
    seed(&app, "482193").await;
    let (_, list) = app.list("").await;
    assert_eq!(list["results"]["data"][0]["otp"], "482193");
}

/// `otpgate keys create --scopes` against the running app's database.
async fn the_cli_sets_the_scopes_of_the_keys_it_makes(backend: Backend) {
    let app = crate::helpers::spawn_app(backend).await;
    let run = |args: &[&str]| {
        otpgate()
            .args(args)
            .args(["--database-url", &app.database_url])
            .output()
            .unwrap()
    };
    let out = run(&[
        "keys",
        "create",
        "acme",
        "--scopes",
        "read,verify",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made["scopes"], json!(["verify", "read"]));
    let key = made["api_key"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&app, &key, "GET", "/api/v1/auths/list/send-otps/", None)
            .await
            .0,
        200
    );
    let (status, body) = call(
        &app,
        &key,
        "POST",
        "/api/v1/auths/send/otp/",
        Some(&text_send(NUMBER)),
    )
    .await;
    assert_insufficient(status, &body, "send", "a CLI read,verify key");

    let out = run(&["keys", "create", "acme", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        made["scopes"],
        json!(["send", "verify", "read"]),
        "the default"
    );

    let before = sql_i64s(&app, "SELECT COUNT(*) FROM api_keys").await;
    let out = run(&["keys", "create", "acme", "--scopes", "send,sudo"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sudo"));
    assert_eq!(
        sql_i64s(&app, "SELECT COUNT(*) FROM api_keys").await,
        before,
        "nothing was written"
    );

    let out = run(&["keys", "list", "acme", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[1]["scopes"], json!(["verify", "read"]));

    let out = run(&[
        "accounts",
        "create",
        "globex",
        "--scopes",
        "send,account",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = made["api_key"].as_str().unwrap();
    let stored = app
        .store
        .find_key(key_id_of(key).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.scopes, Scopes::of(&[Scope::Send, Scope::Account]));
    app.stop().await;
}

mod the_cli_sets_the_scopes_of_the_keys_it_makes {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::the_cli_sets_the_scopes_of_the_keys_it_makes(super::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::the_cli_sets_the_scopes_of_the_keys_it_makes(super::Backend::Postgres).await
    }
}

for_each_backend! {
    async fn the_openapi_document_names_the_scope_of_each_operation(app) {
        let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
        for (path, method, scope) in [
            ("/api/v1/auths/send/otp/", "post", "send"),
            ("/api/v1/auths/verify/otp/", "post", "verify"),
            ("/api/v1/auths/list/send-otps/", "get", "read"),
            ("/api/v1/auths/webhook/", "put", "account"),
            ("/api/v1/auths/api-keys/", "post", "account"),
        ] {
            let operation = &doc["paths"][path][method];
            assert_eq!(operation["security"], json!([{"bearer": [scope]}]), "{path}");
            assert!(operation["responses"]["403"].is_object(), "{path}");
        }
        let login = &doc["paths"]["/api/v1/auths/login/"]["post"];
        assert!(login["responses"].get("403").is_none(), "no key, no scope");
        let scheme = doc["components"]["securitySchemes"]["bearer"]["description"].as_str().unwrap();
        assert!(scheme.contains("`account`"), "{scheme}");
    }
}
