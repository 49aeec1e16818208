//! The dashboard API as TingTing's clients call it: the profile's shape, API
//! keys on the dashboard endpoints, the usable key from `get-api-keys`, the
//! login reply's older and newer shapes, and the default per-number limits a
//! client's "resend" survives. On both stores.

use otp_store::Scopes;
use otpgate::auth::{issue_key_with_scopes, key_id_of};
use otpgate::config::{Config, LimitsConfig};
use serde_json::{Value, json};

use crate::for_each_backend;
use crate::helpers::{TestApp, sql, text_send};
use crate::users::{PASSWORD, add_user, call, configure, secret_of, tokens_of};
use crate::verify::{contains, dump};

const EMAIL: &str = "ana@example.com";

/// A key of the test account with `scopes`.
async fn key_with(app: &TestApp, scopes: Scopes) -> String {
    let key = issue_key_with_scopes(app.account_id, None, scopes);
    app.store.create_key(key.record).await.unwrap();
    key.plaintext
}

/// A generated key of the user with this access token; the whole reply.
async fn generate(app: &TestApp, token: &str) -> (u16, Value) {
    call(app, "POST", "/api/v1/auths/generate-api-keys/", Some(token)).await
}

fn scopes(list: &str) -> Scopes {
    Scopes::parse_list(list).unwrap()
}

fn masked(key: &str) -> String {
    format!("otpg_{}_********", key_id_of(key).unwrap())
}

fn production_keys(c: &mut Config) {
    configure(c);
    c.api.reveal_keys = Some(false);
}

fn default_limits(c: &mut Config) {
    c.limits = LimitsConfig::default();
}

for_each_backend! {
    config: configure;

    async fn the_profile_has_tingtings_shape_at_the_top_level_under_both_paths(app) {
        let id = add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, _) = tokens_of(&app, EMAIL, PASSWORD).await;
        for path in ["/api/v1/auths/user-profile/", "/api/v1/auths/user-profile", "/api/v1/auths/user-detail/"] {
            let (status, body) = call(&app, "GET", path, Some(&access)).await;
            assert_eq!(status, 200, "{path}: {body}");
            assert_eq!(body["id"], id);
            assert_eq!(body["user"], json!({"first_name": null, "last_name": null, "username": EMAIL, "email": EMAIL}));
            for field in ["profile_picture", "contact_no", "address", "is_verified_contact"] {
                assert_eq!(body.get(field), Some(&Value::Null), "{field} is present and null");
            }
            // Our envelope stays beside it.
            assert_eq!(body["success"], true);
            assert_eq!(body["data"]["email"], EMAIL);
            assert_eq!(body["data"]["account"]["id"], app.account_id);
        }
    }

    async fn an_api_key_with_read_opens_the_profile_and_get_api_keys_describes_that_key(app) {
        let (other_account, _) = app.new_account("globex", 10, 0).await;
        add_user(&app, other_account, "bo@globex.example", PASSWORD).await;
        let oldest = add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let younger = add_user(&app, app.account_id, "cy@example.com", PASSWORD).await;
        let reader = key_with(&app, scopes("read")).await;
        // A key no user generated acts for the account's oldest user.
        let (status, body) = call(&app, "GET", "/api/v1/auths/user-profile/", Some(&reader)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"], oldest);
        // A key a user generated acts for that user.
        let (cy, _) = tokens_of(&app, "cy@example.com", PASSWORD).await;
        let (_, made) = generate(&app, &cy).await;
        let cys_key = made["token"].as_str().unwrap().to_owned();
        let (_, body) = call(&app, "GET", "/api/v1/auths/user-profile/", Some(&cys_key)).await;
        assert_eq!(body["id"], younger);
        assert_eq!(body["user"]["email"], "cy@example.com");
        // get-api-keys with a key describes the calling key itself.
        let (status, body) = call(&app, "GET", "/api/v1/auths/get-api-keys/", Some(&reader)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token"], reader.as_str());
        assert_eq!(body["data"]["key_id"], key_id_of(&reader).unwrap());
        assert!(body["created_at"].as_str().unwrap().ends_with("+05:45"));
        assert!(body.get("last_used").is_some());
        assert_eq!(body["message"], "API key.");
        // A key without `read` gets 403 and nothing else.
        let sender = key_with(&app, scopes("send")).await;
        for path in ["/api/v1/auths/user-profile/", "/api/v1/auths/get-api-keys/"] {
            let (status, body) = call(&app, "GET", path, Some(&sender)).await;
            assert_eq!(status, 403, "{path}: {body}");
            assert_eq!(body["errors"][0]["code"], "insufficient_scope");
            assert_eq!(body["data"]["required_scope"], "read");
        }
        // A revoked or unknown key is a 401.
        let (status, _) = call(&app, "GET", "/api/v1/auths/user-profile/", Some(&format!("{reader}x"))).await;
        assert_eq!(status, 401);
    }

    async fn a_key_of_an_account_without_users_gets_a_clear_404(app) {
        let (status, body) = call(&app, "GET", "/api/v1/auths/user-profile/", Some(&app.key)).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["success"], false);
        assert_eq!(body["errors"][0]["code"], "no_user");
        let keys = app.store.list_keys(Some(app.account_id)).await.unwrap().len();
        let (status, body) = generate(&app, &app.key).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(app.store.list_keys(Some(app.account_id)).await.unwrap().len(), keys, "no key was made");
    }

    async fn generate_api_keys_with_a_key_needs_account_and_replaces_only_the_users_own_key(app) {
        let user = add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, _) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (_, first) = generate(&app, &access).await;
        let first = first["token"].as_str().unwrap().to_owned();
        let reader = key_with(&app, scopes("send,verify,read")).await;
        let keys = || async {
            let keys = app.store.list_keys(Some(app.account_id)).await.unwrap();
            keys.into_iter().map(|k| (k.key_id, k.revoked_at)).collect::<Vec<_>>()
        };
        let keys_before = keys().await;
        let (status, body) = generate(&app, &reader).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["data"]["required_scope"], "account");
        assert_eq!(keys().await, keys_before, "nothing changed");
        // With `account` (the test app's key has every scope).
        let (status, body) = generate(&app, &app.key).await;
        assert_eq!(status, 200, "{body}");
        let second = body["token"].as_str().unwrap().to_owned();
        assert_eq!(body["data"]["token"], second.as_str());
        assert!(body["message"].as_str().unwrap().contains("generated"));
        assert!(body["created_at"].as_str().unwrap().ends_with("+05:45"));
        assert_eq!(body["last_used"], Value::Null);
        // The user's earlier key stopped; the calling key and the others go on.
        assert_eq!(app.send_as(&first, &text_send("9851023212")).await.status(), 401);
        assert_eq!(app.send_as(&second, &text_send("9851023212")).await.status(), 200);
        assert_eq!(app.send_as(&app.key, &text_send("9851023212")).await.status(), 200);
        assert_eq!(app.send_as(&reader, &text_send("9851023212")).await.status(), 200);
        assert_eq!(app.store.user_key(user).await.unwrap().unwrap().record.key_id, key_id_of(&second).unwrap());
        // A key cannot give a scope it lacks.
        let narrow = key_with(&app, scopes("read,account")).await;
        let r = app.client.post(app.url("/api/v1/auths/generate-api-keys/")).bearer_auth(&narrow)
            .json(&json!({"scopes": ["send"]})).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(app.send_as(&second, &text_send("9851023212")).await.status(), 200, "still the user's key");
    }

    async fn get_api_keys_returns_the_usable_key_and_the_database_holds_no_copy_in_plain(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, _) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (_, made) = generate(&app, &access).await;
        let key = made["token"].as_str().unwrap().to_owned();
        let (status, body) = call(&app, "GET", "/api/v1/auths/get-api-keys/", Some(&access)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token"], key.as_str());
        assert_eq!(body["message"], "API key.");
        // The key read back works as a Bearer token.
        let shown = body["token"].as_str().unwrap();
        assert_eq!(app.send_as(shown, &text_send("9851023212")).await.status(), 200);
        let dump = dump(&app).await;
        for needle in [key.as_str(), secret_of(&key).as_str()] {
            assert!(!contains(&dump, needle.as_bytes()), "the key is in the database");
        }
    }

    async fn a_key_made_before_copies_were_kept_is_shown_masked_with_a_clear_message(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, _) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (_, made) = generate(&app, &access).await;
        let key = made["token"].as_str().unwrap().to_owned();
        sql(&app, "UPDATE api_keys SET copy_salt = NULL, copy_cipher = NULL, copy_key_id = NULL").await;
        let (status, body) = call(&app, "GET", "/api/v1/auths/get-api-keys/", Some(&access)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token"], masked(&key));
        assert_eq!(body["data"]["token"], masked(&key));
        assert!(body["message"].as_str().unwrap().contains("before otpgate kept a copy"), "{body}");
        assert!(!body.to_string().contains(&secret_of(&key)));
    }

    async fn login_replies_carry_both_of_tingtings_shapes_and_httponly_cookies(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let r = app.client.post(app.url("/api/v1/auths/login/"))
            .json(&json!({"email": EMAIL, "password": PASSWORD})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let cookies: Vec<String> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        let body: Value = r.json().await.unwrap();
        let access = body["access"].as_str().unwrap();
        let refresh = body["refresh"].as_str().unwrap();
        assert_eq!(body["has_logged_in"], true);
        assert_eq!(body["data"]["token"]["access"], access);
        assert_eq!(body["data"]["token"]["refresh"], refresh);
        assert_eq!(body["data"]["access"], access);
        assert_eq!(cookies.len(), 2, "{cookies:?}");
        for (name, token) in [("access", access), ("refresh", refresh)] {
            let cookie = cookies.iter().find(|c| c.starts_with(&format!("{name}="))).unwrap();
            assert!(cookie.starts_with(&format!("{name}={token};")), "{cookie}");
            assert!(cookie.contains("HttpOnly"), "{cookie}");
            assert!(cookie.contains("SameSite=Strict"), "{cookie}");
        }
        // A cookie alone is no authentication anywhere under /api/v1.
        let cookie = format!("access={access}; refresh={refresh}");
        for path in ["/api/v1/auths/user-profile/", "/api/v1/auths/get-api-keys/", "/api/v1/auths/list/send-otps/", "/api/v1/auths/sessions/"] {
            let r = app.client.get(app.url(path)).header("cookie", &cookie).send().await.unwrap();
            assert_eq!(r.status(), 401, "{path}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["detail"], "Authentication credentials were not provided.", "{path}");
        }
        let r = app.client.post(app.url("/api/v1/auths/generate-api-keys/")).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = app.client.post(app.url("/api/v1/auths/send/otp/")).header("cookie", &cookie).json(&text_send("9851023212")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(app.otp_count().await, 0);
        assert!(app.store.user_key(app.store.list_users(None).await.unwrap()[0].id).await.unwrap().is_none());
    }

    async fn the_dashboard_endpoints_take_api_keys_in_the_openapi_document(app) {
        let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
        for (path, method) in [("/api/v1/auths/user-profile/", "get"), ("/api/v1/auths/get-api-keys/", "get"), ("/api/v1/auths/generate-api-keys/", "post")] {
            let op = &doc["paths"][path][method];
            let security = op["security"].to_string();
            assert!(security.contains("access_token") && security.contains("bearer"), "{path}: {security}");
        }
        // (A flattened envelope makes these `allOf` schemas.)
        for (schema, field) in [("ProfileResponse", "is_verified_contact"), ("LoginResponse", "has_logged_in"), ("KeyResponse", "last_used")] {
            let text = doc["components"]["schemas"][schema].to_string();
            assert!(text.contains(&format!("\"{field}\"")), "{schema}: {text}");
        }
    }
}

for_each_backend! {
    config: production_keys;

    async fn with_reveal_keys_off_get_api_keys_masks_the_key_and_says_why(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (access, _) = tokens_of(&app, EMAIL, PASSWORD).await;
        let (_, made) = generate(&app, &access).await;
        let key = made["token"].as_str().unwrap().to_owned();
        for token in [access.as_str(), key.as_str()] {
            let (status, body) = call(&app, "GET", "/api/v1/auths/get-api-keys/", Some(token)).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["token"], masked(&key));
            assert!(body["message"].as_str().unwrap().contains("api.reveal_keys"), "{body}");
            assert!(!body.to_string().contains(&secret_of(&key)));
        }
    }
}

for_each_backend! {
    config: default_limits;

    async fn by_default_a_resend_at_once_passes_and_the_sixth_send_in_ten_minutes_is_429(app) {
        for n in 1..=5 {
            let r = app.send(&text_send("9851023212")).await;
            assert_eq!(r.status(), 200, "send {n} to the number");
        }
        let r = app.send(&text_send("9851023212")).await;
        assert_eq!(r.status(), 429);
        assert!(r.headers().get("retry-after").is_some());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "rate_limited", "{body}");
        assert_eq!(app.otp_count().await, 5, "nothing written for the refused send");
        assert_eq!(app.balance().await, (95, 10));
    }
}
