//! Logins, on both stores: what a new password must be, the limits per client
//! address and over the whole gateway, the bounded queue of password checks,
//! and sessions (listing them, logging out, revocation by a password reset).

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use otpgate::config::{Config, Mode, Secret};
use serde_json::{Value, json};

use crate::for_each_backend;
use crate::helpers::{TestApp, sql_i64s};
use crate::users::{ADMIN_TOKEN, PASSWORD, add_user, call, configure, login, tokens_of};

const EMAIL: &str = "ana@example.com";
const BO: &str = "bo@example.com";

/// A client whose connections come from `ip` (any 127.0.0.0/8 address), so
/// the server sees another client address.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

/// Status, `Retry-After` and body of a login through `client`.
async fn login_via(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    password: &str,
) -> (u16, Option<String>, Value) {
    let r = client
        .post(app.url("/api/v1/auths/login/"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap())
}

/// A POST to the admin API.
async fn admin_post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A logout with `body`, under `token` if any.
async fn logout(app: &TestApp, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url("/api/v1/auths/logout/"))
        .json(&body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn refresh_status(app: &TestApp, token: &str) -> u16 {
    app.client
        .post(app.url("/api/v1/auths/login/refresh/"))
        .json(&json!({ "refresh": token }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn detail_status(app: &TestApp, access: &str) -> u16 {
    call(app, "GET", "/api/v1/auths/user-detail/", Some(access))
        .await
        .0
}

/// The sessions the user of `access` sees.
async fn sessions(app: &TestApp, access: &str) -> Vec<Value> {
    let (status, body) = call(app, "GET", "/api/v1/auths/sessions/", Some(access)).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// Refresh-token rows of a user that are not revoked, read from the database.
async fn active_rows(app: &TestApp, user_id: i64) -> i64 {
    sql_i64s(
        app,
        &format!(
            "SELECT COUNT(*) FROM refresh_tokens WHERE user_id = {user_id} AND revoked_at IS NULL"
        ),
    )
    .await[0]
}

fn production(c: &mut Config) {
    configure(c);
    c.mode = Mode::Production;
    c.secrets.hmac_key = Some(Secret::new(BASE64.encode([1u8; 32])));
    c.secrets.encryption_keys = [("k1".to_owned(), Secret::new(BASE64.encode([2u8; 32])))].into();
    c.secrets.current_key_id = "k1".into();
}

fn two_sessions_per_user(c: &mut Config) {
    configure(c);
    c.auth.max_sessions_per_user = 2;
}

fn small_address_limit(c: &mut Config) {
    configure(c);
    c.auth.login_max_attempts = 100;
    c.auth.login_max_attempts_per_address = 3;
    c.auth.login_max_attempts_global = 0;
}

fn small_global_limit(c: &mut Config) {
    configure(c);
    c.auth.login_max_attempts = 100;
    c.auth.login_max_attempts_per_address = 0;
    c.auth.login_max_attempts_global = 4;
}

fn one_password_check_at_a_time(c: &mut Config) {
    configure(c);
    c.auth.login_max_attempts = 1_000;
    c.auth.login_max_attempts_per_address = 0;
    c.auth.login_max_attempts_global = 0;
    c.auth.max_concurrent_hashes = 1;
    c.auth.max_pending_hashes = 1;
}

for_each_backend! {
    config: configure;

    async fn a_common_short_or_long_new_password_is_a_400_with_its_own_code_and_changes_nothing(app) {
        let users_path = format!("/admin/v1/accounts/{}/users/", app.account_id);
        for (password, code) in [
            ("12345678".to_owned(), "password_too_common"),
            ("Password123".to_owned(), "password_too_common"),
            ("qwertyuiop".to_owned(), "password_too_common"),
            ("1q2w3e4r5t".to_owned(), "password_too_common"),
            ("zzzzzzzzzzzz".to_owned(), "password_too_common"),
            ("abcdefghijkl".to_owned(), "password_too_common"),
            ("tul1p-7".to_owned(), "password_too_short"),
            ("x".repeat(1025), "password_too_long"),
        ] {
            let (status, body) = admin_post(&app, &users_path, json!({ "email": EMAIL, "password": password })).await;
            assert_eq!(status, 400, "{password}: {body}");
            assert_eq!(body["success"], false);
            assert_eq!(body["errors"][0]["field"], "password", "{body}");
            assert_eq!(body["errors"][0]["code"], code, "{password}: {body}");
            assert!(!body.to_string().contains(&password), "the reply repeats {password}: {body}");
        }
        assert!(app.store.list_users(None).await.unwrap().is_empty(), "no user was written");

        let (status, body) = admin_post(&app, &users_path, json!({ "email": EMAIL, "password": PASSWORD })).await;
        assert_eq!(status, 201, "{body}");
        let id = body["data"]["id"].as_i64().unwrap();
        let (access, refresh) = tokens_of(&app, EMAIL, PASSWORD).await;
        let password_path = format!("/admin/v1/users/{id}/password/");
        let (status, body) = admin_post(&app, &password_path, json!({ "password": "iloveyou1" })).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["code"], "password_too_common");
        // The refused reset changed nothing: the password, the tokens and the
        // session are as they were.
        assert_eq!(login(&app, EMAIL, PASSWORD).await.0, 200);
        assert_eq!(detail_status(&app, &access).await, 200);
        assert_eq!(refresh_status(&app, &refresh).await, 200);
        // Development mode takes 8 characters.
        let (status, body) = admin_post(&app, &password_path, json!({ "password": "tulip-owl" })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(login(&app, EMAIL, "tulip-owl").await.0, 200);
    }
}

for_each_backend! {
    config: production;

    async fn production_wants_ten_characters_but_passwords_set_before_keep_working(app) {
        // A password from before the rules: short and common.
        let id = add_user(&app, app.account_id, EMAIL, "12345678").await;
        assert_eq!(login(&app, EMAIL, "12345678").await.0, 200, "existing logins keep working");
        let password_path = format!("/admin/v1/users/{id}/password/");
        let (status, body) = admin_post(&app, &password_path, json!({ "password": "tulip-owl" })).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["code"], "password_too_short");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("10"), "{body}");
        assert_eq!(login(&app, EMAIL, "12345678").await.0, 200);
        let users_path = format!("/admin/v1/accounts/{}/users/", app.account_id);
        let (status, _) = admin_post(&app, &users_path, json!({ "email": BO, "password": "tulip-owl" })).await;
        assert_eq!(status, 400);
        let (status, body) = admin_post(&app, &users_path, json!({ "email": BO, "password": "tulip-owls" })).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(login(&app, BO, "tulip-owls").await.0, 200);
    }
}

for_each_backend! {
    config: two_sessions_per_user;

    async fn a_login_beyond_the_users_session_limit_revokes_its_oldest_session(app) {
        let ana = add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let bo = add_user(&app, app.account_id, BO, PASSWORD).await;
        let (b1, rb1) = tokens_of(&app, BO, PASSWORD).await;
        let (a1, r1) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (_, r2) = tokens_of(&app, EMAIL, PASSWORD).await;
        assert_eq!(refresh_status(&app, &r1).await, 200);
        let (a3, r3) = tokens_of(&app, EMAIL, PASSWORD).await;
        assert_eq!(refresh_status(&app, &r1).await, 401, "the oldest went");
        assert_eq!(detail_status(&app, &a1).await, 401);
        assert_eq!(refresh_status(&app, &r2).await, 200);
        assert_eq!(refresh_status(&app, &r3).await, 200);
        assert_eq!(sessions(&app, &a3).await.len(), 2);
        assert_eq!(active_rows(&app, ana).await, 2);
        // Another user's sessions are not counted or touched.
        assert_eq!(active_rows(&app, bo).await, 1);
        assert_eq!(refresh_status(&app, &rb1).await, 200);
        assert_eq!(detail_status(&app, &b1).await, 200);
    }
}

for_each_backend! {
    config: small_address_limit;

    async fn the_attempt_after_the_limit_from_one_address_is_a_429_while_another_address_is_served(app) {
        let ana = add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        add_user(&app, app.account_id, BO, PASSWORD).await;
        // From 127.0.0.1: a successful login (it counts too, and resets nothing),
        // then two guesses at other emails.
        assert_eq!(login_via(&app, &app.client, BO, PASSWORD).await.0, 200);
        for i in 0..2 {
            let (status, _, body) = login_via(&app, &app.client, &format!("ghost{i}@example.com"), "wrong password").await;
            assert_eq!(status, 401, "{body}");
        }
        // The fourth from that address is refused, the right password too,
        // without a check: no session is made.
        let (status, retry, body) = login_via(&app, &app.client, EMAIL, PASSWORD).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["errors"][0]["code"], "too_many_attempts_from_address");
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=900).contains(&retry), "{retry}");
        assert_eq!(body["data"]["retry_after"], retry);
        assert!(body.get("access").is_none());
        assert_eq!(active_rows(&app, ana).await, 0);
        // Another address is served, for another email and for the same one.
        let other = client_from([127, 0, 0, 2]);
        assert_eq!(login_via(&app, &other, BO, PASSWORD).await.0, 200);
        assert_eq!(login_via(&app, &other, EMAIL, PASSWORD).await.0, 200);
        assert_eq!(login_via(&app, &app.client, BO, PASSWORD).await.0, 429, "still refused from the first");
    }
}

for_each_backend! {
    config: small_global_limit;

    async fn the_gateway_wide_limit_counts_attempts_from_every_address(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        for last in 2..6u8 {
            let client = client_from([127, 0, 0, last]);
            let (status, _, body) = login_via(&app, &client, &format!("ghost{last}@example.com"), "wrong password").await;
            assert_eq!(status, 401, "{body}");
        }
        let fresh = client_from([127, 0, 0, 6]);
        let (status, retry, body) = login_via(&app, &fresh, EMAIL, PASSWORD).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["errors"][0]["code"], "too_many_logins");
        assert!(retry.is_some());
        // API keys are not concerned.
        assert_eq!(app.send(&crate::helpers::text_send("9851023212")).await.status(), 200);
    }
}

for_each_backend! {
    config: one_password_check_at_a_time;

    async fn with_one_place_for_password_checks_simultaneous_logins_are_shed_with_429_and_none_hang(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let logins: Vec<_> = (0..32)
            .map(|_| {
                let request = app.client.post(app.url("/api/v1/auths/login/"))
                    .json(&json!({ "email": EMAIL, "password": PASSWORD }));
                tokio::spawn(async move {
                    let r = request.send().await.unwrap();
                    let status = r.status().as_u16();
                    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                    let body: Value = r.json().await.unwrap();
                    (status, retry, body)
                })
            })
            .collect();
        let mut served = 0;
        let mut shed = 0;
        for handle in logins {
            // A guard against a hang, not a speed check.
            let (status, retry, body) = tokio::time::timeout(Duration::from_secs(300), handle)
                .await
                .expect("a login hung")
                .unwrap();
            match status {
                200 => served += 1,
                429 => {
                    assert_eq!(body["errors"][0]["code"], "login_busy", "{body}");
                    assert_eq!(retry.as_deref(), Some("1"));
                    shed += 1;
                }
                other => panic!("{other}: {body}"),
            }
        }
        assert!(served >= 1, "one login at least was checked");
        assert!(shed >= 1, "{served} served, none shed");
        // Every place was given back.
        assert_eq!(login(&app, EMAIL, PASSWORD).await.0, 200);
    }
}

for_each_backend! {
    config: configure;

    async fn a_user_sees_its_sessions_and_logging_one_out_ends_its_tokens_only(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (a1, r1) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (status, _, body) = login_via(&app, &client_from([127, 0, 0, 2]), EMAIL, PASSWORD).await;
        assert_eq!(status, 200, "{body}");
        let a2 = body["access"].as_str().unwrap().to_owned();
        let r2 = body["refresh"].as_str().unwrap().to_owned();

        let listed = sessions(&app, &a1).await;
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[0]["client"], "127.0.0.2", "newest first");
        assert_eq!(listed[1]["client"], "127.0.0.1");
        assert_eq!((listed[0]["current"].as_bool(), listed[1]["current"].as_bool()), (Some(false), Some(true)));
        assert!(listed[0]["expires_at"].as_str().unwrap().ends_with("+05:45"));
        assert_eq!(listed[0]["last_used_at"], Value::Null);
        assert!(!Value::Array(listed.clone()).to_string().contains(&r1), "no token in the list");

        assert_eq!(refresh_status(&app, &r2).await, 200);
        assert!(sessions(&app, &a2).await[0]["last_used_at"].is_string());

        // Logging out with a refresh token needs no access token.
        let (status, body) = logout(&app, None, json!({ "refresh": r1 })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["revoked"], 1);
        assert_eq!(refresh_status(&app, &r1).await, 401, "a revoked refresh token is refused");
        assert_eq!(detail_status(&app, &a1).await, 401, "so are its access tokens");
        assert_eq!(detail_status(&app, &a2).await, 200, "the other session goes on");
        assert_eq!(refresh_status(&app, &r2).await, 200);
        // Again: nothing more to revoke.
        let (status, body) = logout(&app, None, json!({ "refresh": r1 })).await;
        assert_eq!((status, body["data"]["revoked"].as_i64()), (200, Some(0)));
        assert_eq!(sessions(&app, &a2).await.len(), 1);
    }

    async fn logout_with_an_access_token_ends_its_own_session_a_chosen_one_or_all(app) {
        let ana = add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        add_user(&app, app.account_id, BO, PASSWORD).await;
        let (a1, r1) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (a2, r2) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (a3, r3) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (b1, rb1) = tokens_of(&app, BO, PASSWORD).await;

        // No body field: the caller's own session.
        let (status, body) = logout(&app, Some(&a1), json!({})).await;
        assert_eq!((status, body["data"]["revoked"].as_i64()), (200, Some(1)), "{body}");
        assert_eq!(detail_status(&app, &a1).await, 401);
        assert_eq!(refresh_status(&app, &r1).await, 401);

        // One chosen from the list.
        let third = sessions(&app, &a3).await.into_iter().find(|s| s["current"] == true).unwrap();
        let (status, _) = logout(&app, Some(&a2), json!({ "session_id": third["id"] })).await;
        assert_eq!(status, 200);
        assert_eq!(detail_status(&app, &a3).await, 401);
        assert_eq!(refresh_status(&app, &r3).await, 401);
        assert_eq!(detail_status(&app, &a2).await, 200);

        // Another user's session is not one of ours: 404, and it goes on.
        let bos = sessions(&app, &b1).await[0]["id"].clone();
        let (status, body) = logout(&app, Some(&a2), json!({ "session_id": bos })).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["errors"][0]["code"], "session_not_found");
        assert_eq!(refresh_status(&app, &rb1).await, 200);

        // All of them.
        let (_, _) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (status, body) = logout(&app, Some(&a2), json!({ "all": true })).await;
        assert_eq!((status, body["data"]["revoked"].as_i64()), (200, Some(2)), "{body}");
        assert_eq!(detail_status(&app, &a2).await, 401);
        assert_eq!(refresh_status(&app, &r2).await, 401);
        assert_eq!(active_rows(&app, ana).await, 0);
        assert_eq!(detail_status(&app, &b1).await, 200, "Bo is not logged out");
    }

    async fn a_bad_logout_is_refused_and_revokes_nothing(app) {
        let ana = add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, refresh) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (status, body) = logout(&app, None, json!({})).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!((body["errors"][0]["field"].as_str(), body["errors"][0]["code"].as_str()), (Some("refresh"), Some("required")));
        for garbage in ["garbage", "a.b.c", access.as_str(), app.key.as_str()] {
            let (status, body) = logout(&app, None, json!({ "refresh": garbage })).await;
            assert_eq!(status, 401, "{garbage}: {body}");
        }
        for (body, field) in [
            (json!({ "refresh": 5 }), "refresh"),
            (json!({ "session_id": "x" }), "session_id"),
            (json!({ "session_id": -1 }), "session_id"),
            (json!({ "all": "yes" }), "all"),
        ] {
            let (status, reply) = logout(&app, Some(&access), body.clone()).await;
            assert_eq!(status, 400, "{body}: {reply}");
            assert_eq!(reply["errors"][0]["field"], field, "{reply}");
        }
        // An API key or a refresh token is not an access token.
        for wrong in [app.key.as_str(), refresh.as_str()] {
            assert_eq!(logout(&app, Some(wrong), json!({})).await.0, 401);
        }
        assert_eq!(active_rows(&app, ana).await, 1);
        assert_eq!(detail_status(&app, &access).await, 200);
        assert_eq!(refresh_status(&app, &refresh).await, 200);
    }

    async fn a_password_reset_revokes_every_refresh_token_of_the_user(app) {
        let ana = add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let bo = add_user(&app, app.account_id, BO, PASSWORD).await;
        let (_, r1) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (_, r2) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (b1, rb1) = tokens_of(&app, BO, PASSWORD).await;
        assert_eq!(active_rows(&app, ana).await, 2);
        let (status, body) = admin_post(&app, &format!("/admin/v1/users/{ana}/password/"), json!({ "password": "a fresh passphrase" })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(active_rows(&app, ana).await, 0, "revoked in the database");
        for r in [&r1, &r2] {
            assert_eq!(refresh_status(&app, r).await, 401);
        }
        assert_eq!(active_rows(&app, bo).await, 1);
        assert_eq!(refresh_status(&app, &rb1).await, 200);
        assert_eq!(detail_status(&app, &b1).await, 200);
        let (access, _) = tokens_of(&app, EMAIL, "a fresh passphrase").await;
        assert_eq!(sessions(&app, &access).await.len(), 1);
        // A token the reset ended cannot log out the sessions made after it.
        let (status, _) = logout(&app, None, json!({ "refresh": r1, "all": true })).await;
        assert_eq!(status, 401);
        assert_eq!(active_rows(&app, ana).await, 1);
        assert_eq!(sessions(&app, &access).await.len(), 1);
    }
}
