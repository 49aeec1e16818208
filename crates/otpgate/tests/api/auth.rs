use otpgate::startup::Application;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::for_each_backend;
use crate::helpers::{Backend, spawn_app_with, text_send};

for_each_backend! {
    async fn a_request_without_a_key_is_401_with_drf_detail(app) {
        let r = app.client.post(app.url("/api/v1/auths/send/otp/")).json(&text_send("9851023212")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().get("www-authenticate").is_some());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["detail"], "Authentication credentials were not provided.");
        assert_eq!(body["status"], 401);
        assert_eq!(body["success"], false);
        let r = app.client.get(app.url("/api/v1/auths/list/send-otps/")).header("authorization", "Basic dXNlcjpwYXNz").send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(app.otp_count().await, 0);
    }

    async fn a_wrong_or_malformed_key_is_401_invalid_token(app) {
        let mut wrong = app.key.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'a' { 'b' } else { 'a' });
        for key in [wrong.as_str(), "otpg_nothing", "garbage", "otpg_abcdefghijkm_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
            let r = app.send_as(key, &text_send("9851023212")).await;
            assert_eq!(r.status(), 401, "{key}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["detail"], "Invalid token.");
        }
        assert_eq!(app.otp_count().await, 0);
        assert_eq!(app.balance().await, (100, 10));
    }

    async fn the_token_scheme_works_like_bearer(app) {
        let r = app.client.post(app.url("/api/v1/auths/send/otp/"))
            .header("authorization", format!("Token {}", app.key))
            .json(&text_send("9851023212")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn a_revoked_key_stops_working_at_once(app) {
        assert_eq!(app.send(&text_send("9851023212")).await.status(), 200);
        let key_id = otpgate::auth::key_id_of(&app.key).unwrap().to_owned();
        assert!(app.store.revoke_key(&key_id).await.unwrap());
        assert_eq!(app.send(&text_send("9851023212")).await.status(), 401);
        let (status, _) = app.list("").await;
        assert_eq!(status, 401);
        assert_eq!(app.otp_count().await, 1);
    }

    async fn a_revoked_keys_retry_under_its_idempotency_key_is_refused_and_replays_nothing(app) {
        let send = |key: &str| {
            app.client.post(app.url("/api/v1/auths/send/otp/"))
                .bearer_auth(key)
                .header("Idempotency-Key", "retry-me")
                .json(&text_send("9851023212"))
        };
        // Twice: the second is a replay, and the key is in the send route's cache.
        assert_eq!(send(&app.key).send().await.unwrap().status(), 200);
        assert_eq!(send(&app.key).send().await.unwrap().status(), 200);
        let key_id = otpgate::auth::key_id_of(&app.key).unwrap().to_owned();
        assert!(app.store.revoke_key(&key_id).await.unwrap());
        for _ in 0..2 {
            let r = send(&app.key).send().await.unwrap();
            assert_eq!(r.status(), 401);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["detail"], "Invalid token.", "{body}");
        }
        assert_eq!(app.otp_count().await, 1);
        assert_eq!(app.balance().await, (99, 10));
    }

    async fn another_accounts_records_are_invisible(app) {
        let mine = app.send_ok(&text_send("9851023212")).await;
        let my_id = mine["data"]["details"]["id"].as_i64().unwrap();
        let (_, other_key) = app.new_account("other", 10, 0).await;
        let (status, list) = app.list_as(&other_key, "").await;
        assert_eq!(status, 200);
        assert_eq!(list["count"], 0);
        assert_eq!(list["results"]["data"].as_array().unwrap().len(), 0);
        let (_, filtered) = app.list_as(&other_key, "?phone_number=9851023212").await;
        assert_eq!(filtered["count"], 0);
        let r = app.client.get(app.url(&format!("/api/v1/auths/otps/{my_id}/"))).bearer_auth(&other_key).send().await.unwrap();
        assert_eq!(r.status(), 404);
        let r = app.client.get(app.url(&format!("/api/v1/auths/otps/{my_id}/"))).bearer_auth(&app.key).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn last_used_is_recorded_without_a_write_per_request(app) {
        for _ in 0..3 {
            assert_eq!(app.list("").await.0, 200);
        }
        let key_id = otpgate::auth::key_id_of(&app.key).unwrap().to_owned();
        // Not written per request: still empty right after use...
        let before = app.store.find_key(&key_id).await.unwrap().unwrap();
        assert_eq!(before.last_used, None);
        // ...and written by the periodic flush (or at shutdown).
        let store = app.store.clone();
        app.stop().await;
        let after = store.find_key(&key_id).await.unwrap().unwrap();
        assert!(after.last_used.is_some());
    }
}

/// Two nodes on one PostgreSQL database: a key that sent through the first
/// node (so that node's send route has it cached) and is then revoked through
/// the second is refused by the first on its very next send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_another_node_is_refused_on_the_next_send() {
    let mut config = None;
    let app = spawn_app_with(Backend::Postgres, |c| config = Some(c.clone())).await;
    let second = Application::build(config.expect("the tweak ran"))
        .await
        .expect("building the second node");
    let second_url = format!("http://{}", second.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(second.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    for _ in 0..3 {
        assert_eq!(app.send(&text_send("9851023212")).await.status(), 200);
    }
    let key_id = otpgate::auth::key_id_of(&app.key).unwrap().to_owned();
    let r = app
        .client
        .post(format!(
            "{second_url}/api/v1/auths/api-keys/{key_id}/revoke/"
        ))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let r = app.send(&text_send("9851023212")).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["detail"], "Invalid token.", "{body}");
    assert_eq!(app.list("").await.0, 401);
    assert_eq!(app.otp_count().await, 3);
    assert_eq!(app.balance().await, (97, 10));

    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
