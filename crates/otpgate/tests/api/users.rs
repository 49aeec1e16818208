//! Users: login, tokens, the user's API key, the login limit, tenant isolation,
//! secrets at rest, and the `users` commands, on both stores.

use std::io::Write;
use std::process::{Child, Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as B64URL};
use otpgate::config::{Config, Secret};
use otpgate::users::tokens::{TokenKind, Tokens};
use serde_json::{Value, json};

use crate::durability::otpgate;
use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, database_url, text_send};
use crate::verify::{contains, dump};

/// The token key of the test apps, so tests can make tokens of their own.
pub const TOKEN_KEY: [u8; 32] = [42; 32];
/// The admin token of the test apps.
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789abcdef";
pub const PASSWORD: &str = "correct horse battery staple";
const EMAIL: &str = "ana@example.com";

/// Known token and admin secrets.
pub fn configure(c: &mut Config) {
    c.auth.token_secret = Some(Secret::new(BASE64.encode(TOKEN_KEY)));
    c.admin.token = Some(Secret::new(ADMIN_TOKEN.into()));
    // Room for the simultaneous logins of these tests whatever the machine's
    // CPU count (the default is eight per CPU); `logins.rs` tests the bound.
    c.auth.max_pending_hashes = 64;
}

/// A user of `account_id`, straight into the store.
pub async fn add_user(app: &TestApp, account_id: i64, email: &str, password: &str) -> i64 {
    let hash = otpgate::users::hashing::hash_now(password).unwrap();
    app.store
        .create_user(otp_store::NewUser {
            account_id,
            email: email.to_owned(),
            password_hash: hash,
        })
        .await
        .unwrap()
        .id
}

/// Status, `Retry-After` and body of a login.
pub async fn login(app: &TestApp, email: &str, password: &str) -> (u16, Option<u64>, Value) {
    let r = app
        .client
        .post(app.url("/api/v1/auths/login/"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, r.json().await.unwrap())
}

/// The access and refresh tokens of a login that must succeed.
pub async fn tokens_of(app: &TestApp, email: &str, password: &str) -> (String, String) {
    let (status, _, body) = login(app, email, password).await;
    assert_eq!(status, 200, "{body}");
    (
        body["access"].as_str().unwrap().to_owned(),
        body["refresh"].as_str().unwrap().to_owned(),
    )
}

/// A GET or POST (with an empty JSON body) under a Bearer token.
pub async fn call(app: &TestApp, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = match method {
        "GET" => app.client.get(app.url(path)),
        _ => app.client.post(app.url(path)).json(&json!({})),
    };
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn refresh(app: &TestApp, token: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/api/v1/auths/login/refresh/"))
        .json(&json!({ "refresh": token }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The secret part of an API key (`otpg_<id>_<secret>`; the secret may hold `_`).
pub fn secret_of(key: &str) -> String {
    key.splitn(3, '_').nth(2).unwrap().to_owned()
}

/// The claims of a JWT, unchecked.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64URL.decode(payload).unwrap()).unwrap()
}

/// Generates a key as the user; returns the whole key.
async fn generate(app: &TestApp, access: &str) -> String {
    let (status, body) = call(
        app,
        "POST",
        "/api/v1/auths/generate-api-keys/",
        Some(access),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["token"].as_str().unwrap().to_owned()
}

for_each_backend! {
    config: configure;

    async fn a_user_logs_in_with_email_and_password_and_gets_two_tokens(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        // The email in any case and with blanks around it.
        let (status, _, body) = login(&app, "  Ana@Example.COM ", PASSWORD).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true);
        assert_eq!(body["data"]["token_type"], "Bearer");
        let access = body["access"].as_str().unwrap();
        let refresh = body["refresh"].as_str().unwrap();
        assert_eq!(body["data"]["access"], access);
        assert_eq!(body["data"]["refresh"], refresh);
        let (a, r) = (claims(access), claims(refresh));
        assert_eq!((a["token_type"].as_str(), r["token_type"].as_str()), (Some("access"), Some("refresh")));
        let life = |c: &Value| c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap();
        assert_eq!(life(&a), 86_400, "access tokens last a day");
        assert_eq!(life(&r), 7 * 86_400, "refresh tokens last a week");
        assert!(body["data"]["access_expires_at"].as_str().unwrap().ends_with("+05:45"));
        // Form bodies work too.
        let r = app.client.post(app.url("/api/v1/auths/login")).form(&[("email", EMAIL), ("password", PASSWORD)]).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn a_wrong_password_and_an_unknown_email_get_the_same_reply(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (s1, _, wrong_password) = login(&app, EMAIL, "not the password").await;
        let (s2, _, unknown_email) = login(&app, "nobody@example.com", PASSWORD).await;
        assert_eq!((s1, s2), (401, 401));
        assert_eq!(wrong_password, unknown_email, "one reply for both");
        assert_eq!(wrong_password["detail"], "No active account found with the given credentials");
        assert!(wrong_password.get("access").is_none());
        // A missing field is a validation error, not a login failure.
        let r = app.client.post(app.url("/api/v1/auths/login/")).json(&json!({ "email": EMAIL })).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], "password");
        assert_eq!(body["errors"][0]["code"], "required");
    }

    async fn login_attempts_are_limited_per_email_whether_it_exists_or_not(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        add_user(&app, app.account_id, "bo@example.com", PASSWORD).await;
        // A success clears the count: four failures, a success, five failures.
        for _ in 0..4 {
            assert_eq!(login(&app, EMAIL, "wrong password").await.0, 401);
        }
        assert_eq!(login(&app, EMAIL, PASSWORD).await.0, 200);
        for email in [EMAIL, "ghost@example.com"] {
            for _ in 0..5 {
                assert_eq!(login(&app, email, "wrong password").await.0, 401, "{email}");
            }
            // The sixth attempt in the window is refused, the right password too,
            // in the same way for an email no user has.
            let (status, retry, body) = login(&app, email, PASSWORD).await;
            assert_eq!(status, 429, "{email}: {body}");
            let retry = retry.expect("Retry-After");
            assert!((1..=900).contains(&retry), "{retry}");
            assert_eq!(body["errors"][0]["code"], "too_many_attempts");
            assert_eq!(body["data"]["retry_after"], retry);
        }
        // Another email is not affected.
        assert_eq!(login(&app, "BO@example.com", PASSWORD).await.0, 200);
        // A password reset lifts the lock.
        let user = app.store.user_by_email(EMAIL).await.unwrap().unwrap();
        let hash = otpgate::users::hashing::hash_now("a brand new password").unwrap();
        app.store.set_password(user.id, &hash).await.unwrap().unwrap();
        assert_eq!(login(&app, EMAIL, "a brand new password").await.0, 200);
    }

    async fn simultaneous_attempts_are_counted_exactly(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let attempts: Vec<_> = (0..16)
            .map(|_| {
                let request = app.client.post(app.url("/api/v1/auths/login/"))
                    .json(&json!({ "email": EMAIL, "password": "wrong password" }));
                tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
            })
            .collect();
        let mut statuses = Vec::new();
        for a in attempts {
            statuses.push(a.await.unwrap());
        }
        statuses.sort();
        let checked = statuses.iter().filter(|s| **s == 401).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((checked, refused), (5, 11), "{statuses:?}");
    }

    async fn refresh_gives_a_new_access_token_and_takes_nothing_else(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, refresh_token) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (status, body) = refresh(&app, &refresh_token).await;
        assert_eq!(status, 200, "{body}");
        let fresh = body["access"].as_str().unwrap().to_owned();
        assert_eq!(body["data"]["access"], fresh.as_str());
        assert_eq!(claims(&fresh)["token_type"], "access");
        assert_ne!(fresh, access);
        let (status, detail) = call(&app, "GET", "/api/v1/auths/user-detail/", Some(&fresh)).await;
        assert_eq!(status, 200, "{detail}");
        // An access token, an API key or garbage is not a refresh token.
        for wrong in [access.as_str(), app.key.as_str(), "garbage", "a.b.c"] {
            let (status, body) = refresh(&app, wrong).await;
            assert_eq!(status, 401, "{wrong}");
            assert_eq!(body["detail"], "Token is invalid or expired.");
        }
        let r = app.client.post(app.url("/api/v1/auths/login/refresh/")).json(&json!({})).send().await.unwrap();
        assert_eq!(r.status(), 400);
    }

    async fn expired_forged_garbage_and_wrong_type_tokens_are_refused(app) {
        let id = add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, refresh_token) = tokens_of(&app, EMAIL, PASSWORD).await;
        let user = app.store.user(id).await.unwrap().unwrap();
        let sid = claims(&access)["sid"].as_i64().unwrap();
        let now = otp_store::now_micros() / 1_000_000;
        let ours = Tokens::new(TOKEN_KEY.to_vec(), 86_400, 604_800);
        let expired = ours.issue(TokenKind::Access, &user, sid, now - 2 * 86_400).token;
        let expired_refresh = ours.issue(TokenKind::Refresh, &user, sid, now - 8 * 86_400).token;
        let forged = Tokens::new(vec![7; 32], 86_400, 604_800).issue(TokenKind::Access, &user, sid, now).token;
        // A token our key made for a user that does not exist.
        let mut ghost = user.clone();
        ghost.id += 1000;
        let ghost = ours.issue(TokenKind::Access, &ghost, sid, now).token;
        // A token our key made for the user in a session that does not exist.
        let no_session = ours.issue(TokenKind::Access, &user, sid + 1000, now).token;
        let (status, body) = call(&app, "GET", "/api/v1/auths/user-detail/", None).await;
        assert_eq!(status, 401);
        assert_eq!(body["detail"], "Authentication credentials were not provided.");
        // (An API key opens these endpoints: see tingting_compat.rs.)
        for bad in [&expired, &forged, &ghost, &no_session, &refresh_token, &"garbage".to_owned(), &format!("{access}x")] {
            for (method, path) in [("GET", "/api/v1/auths/user-detail/"), ("GET", "/api/v1/auths/get-api-keys/"), ("POST", "/api/v1/auths/generate-api-keys/")] {
                let (status, body) = call(&app, method, path, Some(bad)).await;
                assert_eq!(status, 401, "{path} with {bad}");
                assert_eq!(body["detail"], "Token is invalid or expired.");
            }
        }
        assert_eq!(refresh(&app, &expired_refresh).await.0, 401);
        // Nothing was generated by the refused calls.
        assert!(app.store.user_key(id).await.unwrap().is_none());
        // The JWT scheme name works as Bearer does.
        let r = app.client.get(app.url("/api/v1/auths/user-detail/")).header("authorization", format!("JWT {access}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn tokens_do_not_open_the_otp_endpoints(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, refresh_token) = tokens_of(&app, EMAIL, PASSWORD).await;
        for token in [&access, &refresh_token] {
            let r = app.send_as(token, &text_send("9851023212")).await;
            assert_eq!(r.status(), 401);
            assert_eq!(app.list_as(token, "").await.0, 401);
        }
        assert_eq!(app.otp_count().await, 0);
        assert_eq!(app.balance().await, (100, 10));
    }

    async fn user_detail_shows_the_user_and_its_account(app) {
        let id = add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, _) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (status, body) = call(&app, "GET", "/api/v1/auths/user-detail", Some(&access)).await;
        assert_eq!(status, 200, "{body}");
        let data = &body["data"];
        assert_eq!(data["id"], id);
        assert_eq!(data["email"], EMAIL);
        assert_eq!(data["account"]["id"], app.account_id);
        assert_eq!(data["account"]["name"], "acme");
        assert_eq!(data["account"]["sms_credits"], 100);
        assert!(data["created_at"].as_str().unwrap().ends_with("+05:45"));
        assert!(!body.to_string().contains("argon2"), "no hash in replies");
    }

    async fn generating_a_key_revokes_the_users_previous_key(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, _) = tokens_of(&app, EMAIL, PASSWORD).await;
        let first = generate(&app, &access).await;
        assert!(first.starts_with("otpg_"));
        assert_eq!(app.send_as(&first, &text_send("9851023212")).await.status(), 200);
        let second = generate(&app, &access).await;
        assert_ne!(first, second);
        let r = app.send_as(&first, &text_send("9851023212")).await;
        assert_eq!(r.status(), 401, "the previous key stops working");
        assert_eq!(app.send_as(&second, &text_send("9851023212")).await.status(), 200);
        // Keys made otherwise for the account are not the user's: they go on working.
        assert_eq!(app.send(&text_send("9851023212")).await.status(), 200);
        let keys = app.store.list_keys(Some(app.account_id)).await.unwrap();
        assert_eq!(keys.iter().filter(|k| k.revoked_at.is_none()).count(), 2);
        assert_eq!(app.otp_count().await, 3);
    }

    async fn the_current_key_is_shown_with_when_it_was_last_used(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, _) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (status, body) = call(&app, "GET", "/api/v1/auths/get-api-keys/", Some(&access)).await;
        assert_eq!(status, 404, "no key yet: {body}");
        assert_eq!(body["errors"][0]["code"], "no_api_key");
        let key = generate(&app, &access).await;
        let key_id = otpgate::auth::key_id_of(&key).unwrap().to_owned();
        let secret = secret_of(&key);
        let (status, body) = call(&app, "GET", "/api/v1/auths/get-api-keys/", Some(&access)).await;
        assert_eq!(status, 200, "{body}");
        // A development server shows the whole key (`api.reveal_keys`);
        // tingting_compat.rs tests the masked forms.
        assert_eq!(body["data"]["token"], key.as_str());
        assert_eq!(body["token"], key.as_str());
        assert_eq!(body["data"]["key_id"], key_id.as_str());
        assert!(body.to_string().contains(&secret));
        assert!(body["data"]["created_at"].as_str().unwrap().ends_with("+05:45"));
        assert_eq!(body["data"]["last_used"], Value::Null);
        assert_eq!(app.send_as(&key, &text_send("9851023212")).await.status(), 200);
        // last_used is written by the periodic flush (every 5 s).
        let mut last_used = Value::Null;
        for _ in 0..400 {
            let (_, body) = call(&app, "GET", "/api/v1/auths/get-api-keys/", Some(&access)).await;
            last_used = body["data"]["last_used"].clone();
            if !last_used.is_null() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(last_used.as_str().is_some_and(|t| t.ends_with("+05:45")), "{last_used}");
    }

    async fn a_user_sees_and_changes_only_its_own_accounts_keys(app) {
        let (other_account, other_key) = app.new_account("globex", 10, 0).await;
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        add_user(&app, other_account, "bo@globex.example", PASSWORD).await;
        let (ana, _) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (bo, _) = tokens_of(&app, "bo@globex.example", PASSWORD).await;
        let ana_key = generate(&app, &ana).await;
        let bo_key = generate(&app, &bo).await;
        // Ana generating again revokes only her own key.
        let ana_key2 = generate(&app, &ana).await;
        assert_eq!(app.send_as(&ana_key, &text_send("9851023212")).await.status(), 401);
        assert_eq!(app.send_as(&bo_key, &text_send("9851023212")).await.status(), 200);
        assert_eq!(app.send_as(&other_key, &text_send("9851023212")).await.status(), 200);
        let (_, shown) = call(&app, "GET", "/api/v1/auths/get-api-keys/", Some(&ana)).await;
        let ana_id = otpgate::auth::key_id_of(&ana_key2).unwrap();
        let bo_id = otpgate::auth::key_id_of(&bo_key).unwrap();
        assert_eq!(shown["data"]["key_id"], ana_id);
        assert!(!shown.to_string().contains(bo_id));
        let (_, detail) = call(&app, "GET", "/api/v1/auths/user-detail/", Some(&bo)).await;
        assert_eq!(detail["data"]["account"]["id"], other_account);
        // Ana's key sends for her account: Bo's account is not charged for it.
        assert_eq!(app.send_as(&ana_key2, &text_send("9851023212")).await.status(), 200);
        assert_eq!(app.balance().await.0, 99);
        let other = app.store.account(other_account).await.unwrap().unwrap();
        assert_eq!(other.sms_credits, 8);
        let (_, list) = app.list_as(&ana_key2, "").await;
        assert_eq!(list["count"], 1, "Ana sees her account's one OTP, not Globex's two");
    }

    async fn a_password_change_ends_the_users_tokens(app) {
        let id = add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, refresh_token) = tokens_of(&app, EMAIL, PASSWORD).await;
        let hash = otpgate::users::hashing::hash_now("another good password").unwrap();
        app.store.set_password(id, &hash).await.unwrap().unwrap();
        assert_eq!(call(&app, "GET", "/api/v1/auths/user-detail/", Some(&access)).await.0, 401);
        assert_eq!(refresh(&app, &refresh_token).await.0, 401);
        assert_eq!(login(&app, EMAIL, PASSWORD).await.0, 401);
        let (access, _) = tokens_of(&app, EMAIL, "another good password").await;
        assert_eq!(call(&app, "GET", "/api/v1/auths/user-detail/", Some(&access)).await.0, 200);
    }

    async fn emails_are_unique_whatever_their_case(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let again = otp_store::NewUser {
            account_id: app.account_id,
            email: EMAIL.to_owned(),
            password_hash: otpgate::users::hashing::hash_now(PASSWORD).unwrap(),
        };
        assert!(matches!(app.store.create_user(again).await, Err(otp_store::StoreError::Conflict(_))));
        // Through the admin API, which normalises the email first.
        let r = app.client.post(app.url(&format!("/admin/v1/accounts/{}/users/", app.account_id)))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "email": "ANA@example.com", "password": PASSWORD }))
            .send().await.unwrap();
        assert_eq!(r.status(), 409);
        assert_eq!(app.store.list_users(None).await.unwrap().len(), 1);
    }

    async fn no_password_hash_or_token_is_in_the_database_or_the_replies(app) {
        let id = add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        assert_eq!(login(&app, EMAIL, "a wrong guess here").await.0, 401);
        let (access, refresh_token) = tokens_of(&app, EMAIL, PASSWORD).await;
        let key = generate(&app, &access).await;
        let (_, shown) = call(&app, "GET", "/api/v1/auths/get-api-keys/", Some(&access)).await;
        let (_, detail) = call(&app, "GET", "/api/v1/auths/user-detail/", Some(&access)).await;
        let user = app.store.user(id).await.unwrap().unwrap();
        assert!(user.password_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", user.password_hash);
        assert!(!user.password_hash.contains(PASSWORD));
        for reply in [&shown, &detail] {
            assert!(!reply.to_string().contains(&user.password_hash));
            assert!(!reply.to_string().contains("$argon2"));
        }
        let dump = dump(&app).await;
        assert!(contains(&dump, user.password_hash.as_bytes()), "the dump holds the users table");
        let secret = secret_of(&key);
        for needle in [PASSWORD, "a wrong guess here", access.as_str(), refresh_token.as_str(), key.as_str(), secret.as_str()] {
            assert!(!contains(&dump, needle.as_bytes()), "{needle} is in the database");
        }
    }

    async fn the_user_endpoints_are_in_the_openapi_document(app) {
        let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
        for path in [
            "/api/v1/auths/login/",
            "/api/v1/auths/login/refresh/",
            "/api/v1/auths/user-profile/",
            "/api/v1/auths/generate-api-keys/",
            "/api/v1/auths/get-api-keys/",
            "/api/v1/auths/sessions/",
            "/api/v1/auths/logout/",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        assert!(doc["components"]["securitySchemes"].get("access_token").is_some());
        assert!(doc["components"]["schemas"].get("LoginResponse").is_some());
    }
}

// The command line: users are created and passwords reset, with the password
// on standard input; a server's log shows none of the secrets.

/// Runs a command with `stdin` as its standard input; status and stdout.
fn run_with_stdin(args: &[&str], db: &str, stdin: &str) -> (bool, String) {
    let mut child = otpgate()
        .args(args)
        .args(["--database-url", db])
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
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

/// A server process, killed when dropped (a failing test leaves none behind).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server whose log goes to `log` at debug level, with the admin API on.
fn start_logging_server(
    db: &str,
    dir: &std::path::Path,
    log: &std::path::Path,
) -> (Server, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_otpgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db])
        .env("OTPGATE_DEMO__CREATE_DEFAULT_ACCOUNT", "false")
        .env("OTPGATE_DELIVERY__LOG_PATH", dir.join("deliveries.jsonl"))
        .env("OTPGATE_SECRETS__FILE", dir.join("secrets.toml"))
        .env("OTPGATE_LOG__LEVEL", "debug")
        .env("OTPGATE_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("OTPGATE_AUTH__TOKEN_SECRET", BASE64.encode(TOKEN_KEY))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines.next().expect("otpgate exited").unwrap();
        if let Some(a) = line.strip_prefix("otpgate listening on ") {
            break a.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (server, address)
}

async fn users_are_created_and_passwords_reset_from_the_command_line(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    let (id, key) = crate::durability::create_account(&db, "shop", 5);
    // Too short, or too common: refused, nothing written.
    for refused in ["short\n", "password123\n", "Qwertyuiop\n", "aaaaaaaaaaaa\n"] {
        let (ok, _) = run_with_stdin(&["users", "create", "shop", EMAIL], &db, refused);
        assert!(!ok, "{refused}");
    }
    let (ok, out) = run_with_stdin(&["users", "list", "shop", "--json"], &db, "");
    assert!(ok);
    assert_eq!(out.trim(), "[]");
    let (ok, out) = run_with_stdin(
        &["users", "create", "shop", "Ana@Example.com", "--json"],
        &db,
        &format!("{PASSWORD}\n"),
    );
    assert!(ok, "{out}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["email"], EMAIL);
    assert_eq!(created["account_id"], id);
    let (ok, _) = run_with_stdin(
        &["users", "create", "shop", "ANA@example.com"],
        &db,
        &format!("{PASSWORD}\n"),
    );
    assert!(!ok, "the email is taken whatever its case");
    let (ok, out) = run_with_stdin(&["users", "list", "shop", "--json"], &db, "");
    assert!(ok);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!out.contains("argon2"), "listings show no hash");

    let log = dir.path().join("server.log");
    let (mut server, base) = start_logging_server(&db, dir.path(), &log);
    let client = reqwest::Client::new();
    let login = |password: &'static str| {
        let client = client.clone();
        let url = format!("{base}/api/v1/auths/login/");
        async move {
            let r = client
                .post(url)
                .json(&json!({ "email": EMAIL, "password": password }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(login("a wrong password!").await.0, 401);
    let (status, body) = login(PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    let access = body["access"].as_str().unwrap().to_owned();
    let refresh = body["refresh"].as_str().unwrap().to_owned();
    let generated: Value = client
        .post(format!("{base}/api/v1/auths/generate-api-keys/"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_key = generated["data"]["token"].as_str().unwrap().to_owned();
    let r = client
        .post(format!("{base}/api/v1/auths/login/refresh/"))
        .json(&json!({ "refresh": refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{base}/admin/v1/accounts/{id}/keys/"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/api/v1/auths/send/otp/"))
        .bearer_auth(&user_key)
        .json(&text_send("9851023212"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A common password is refused at a reset too, and changes nothing.
    let (ok, _) = run_with_stdin(&["users", "set-password", EMAIL], &db, "iloveyou123\n");
    assert!(!ok);
    assert_eq!(login(PASSWORD).await.0, 200);

    // Reset: the old password and the old tokens stop working.
    let (ok, out) = run_with_stdin(
        &["users", "set-password", "ANA@example.com"],
        &db,
        "the new password 2\n",
    );
    assert!(ok, "{out}");
    assert_eq!(login(PASSWORD).await.0, 401);
    let r = client
        .get(format!("{base}/api/v1/auths/user-detail/"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(format!("{base}/api/v1/auths/login/refresh/"))
        .json(&json!({ "refresh": refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the reset revoked the refresh token");
    assert_eq!(login("the new password 2").await.0, 200);

    // SIGTERM: a clean stop, so the log is complete.
    unsafe { libc_kill(server.0.id() as i32, 15) };
    assert!(server.0.wait().unwrap().success());
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("user logged in") && logs.contains("login refused"),
        "the capture holds the server's log: {logs}"
    );
    // A failed login names the client's address and the email's log id, which
    // `users log-id` computes with the same token secret; never the email.
    let out = otpgate()
        .args(["users", "log-id", "Ana@Example.com"])
        .env("OTPGATE_AUTH__TOKEN_SECRET", BASE64.encode(TOKEN_KEY))
        .output()
        .unwrap();
    assert!(out.status.success());
    let log_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(log_id.len(), 16, "{log_id}");
    let refused = logs
        .lines()
        .find(|l| l.contains("login refused: wrong email or password"))
        .expect("a refused login is logged");
    assert!(refused.contains("127.0.0.1"), "{refused}");
    assert!(refused.contains(&log_id), "{refused}");
    assert!(!logs.contains(EMAIL), "the email is in the log");
    let no_secret = otpgate()
        .args(["users", "log-id", EMAIL])
        .env_remove("OTPGATE_AUTH__TOKEN_SECRET")
        .output()
        .unwrap();
    assert!(
        !no_secret.status.success(),
        "no log id without the token secret"
    );
    let hash = {
        let store = otp_store::open(&db, &Default::default()).await.unwrap();
        store
            .user_by_email(EMAIL)
            .await
            .unwrap()
            .unwrap()
            .password_hash
    };
    let secret = secret_of(&user_key);
    for needle in [
        PASSWORD,
        "a wrong password!",
        "the new password 2",
        access.as_str(),
        refresh.as_str(),
        user_key.as_str(),
        secret.as_str(),
        key.as_str(),
        ADMIN_TOKEN,
        hash.as_str(),
        "$argon2",
    ] {
        assert!(!logs.contains(needle), "{needle} is in the log");
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

mod users_are_created_and_passwords_reset_from_the_command_line {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::users_are_created_and_passwords_reset_from_the_command_line(super::Backend::Sqlite)
            .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::users_are_created_and_passwords_reset_from_the_command_line(super::Backend::Postgres)
            .await
    }
}

#[tokio::test]
async fn production_mode_without_a_token_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("otpgate.db").display());
    let mut config = crate::helpers::test_config(&url, &dir);
    config.mode = otpgate::config::Mode::Production;
    config.secrets.hmac_key = Some(Secret::new(BASE64.encode([1u8; 32])));
    config.secrets.encryption_keys =
        [("k1".to_owned(), Secret::new(BASE64.encode([2u8; 32])))].into();
    config.secrets.current_key_id = "k1".into();
    let error = match otpgate::startup::Application::build(config.clone()).await {
        Ok(_) => panic!("started without a token secret"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("auth.token_secret"), "{error}");
    assert!(
        !dir.path().join("otpgate.db").exists(),
        "refused before the store was opened"
    );
    configure(&mut config);
    let app = otpgate::startup::Application::build(config).await;
    assert!(app.is_ok(), "with the secret it starts");
}
