//! Noisy neighbours: one account's lists cannot starve another account's sends
//! and key checks. Lists run on store connections of their own, each account
//! has a bounded number of lists running at once, and a list that runs too
//! long is stopped with a 503.

use std::time::Duration;

use serde_json::Value;

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, spawn_app_with, text_send};

const NUMBER: &str = "9851023212";
const FILTERED: &str = "?phone_number=9851023212&sms_send_options=text";

fn reason(body: &Value) -> &str {
    body["errors"][0]["code"].as_str().unwrap_or("")
}

async fn list_reply(app: &TestApp, key: &str, query: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/v1/auths/list/send-otps/{query}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// A request whose only store work is the key check and one small read of
/// another table: 404 means the key was checked and found good.
async fn key_check(app: &TestApp, key: &str) -> u16 {
    app.client
        .get(app.url("/api/v1/auths/webhook/"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

for_each_backend! {
    config: |c| {
        c.api.max_concurrent_lists = 2;
        c.api.list_wait_ms = 0;
    };
    async fn an_accounts_lists_past_its_bound_are_refused_while_other_accounts_list(app) {
        app.send_ok(&text_send(NUMBER)).await;
        let (_, other) = app.new_account("other", 10, 0).await;
        // Two lists of the account running (their slots held, as a running
        // list holds one for its query).
        let running = [
            app.state.list_slots.acquire(app.account_id).await.unwrap(),
            app.state.list_slots.acquire(app.account_id).await.unwrap(),
        ];
        let r = list_reply(&app, &app.key, FILTERED).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "1");
        let body: Value = r.json().await.unwrap();
        assert_eq!(reason(&body), "too_many_concurrent_lists", "{body}");
        assert_eq!(body["data"]["retry_after"], 1);

        // Another account lists; the account itself still sends and is let in.
        let (status, page) = app.list_as(&other, FILTERED).await;
        assert_eq!(status, 200, "{page}");
        app.send_ok(&text_send("9841000000")).await;
        assert_eq!(key_check(&app, &app.key).await, 404);

        // A list that ends gives its slot back.
        drop(running);
        let (status, page) = app.list(FILTERED).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["count"], 1);
        assert_eq!(app.state.list_slots.busy_accounts(), 0);
    }
}

/// Holds `otps` under an ACCESS EXCLUSIVE lock until the returned client's
/// transaction ends: every list query on it waits, holding its connection.
async fn lock_otps(app: &TestApp) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute("BEGIN; LOCK TABLE otps IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    c
}

/// Waits until `n` list-pool sessions are waiting for a lock. Asked on a
/// connection of its own: inside the locking transaction PostgreSQL would show
/// the same snapshot of `pg_stat_activity` every time.
async fn wait_for_stuck_lists(app: &TestApp, n: i64) {
    let (watch, conn) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let db = app.database_url.rsplit('/').next().unwrap().to_owned();
    for _ in 0..800 {
        let stuck: i64 = watch
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 \
                 AND application_name = 'otpgate-lists' AND wait_event_type = 'Lock'",
                &[&db],
            )
            .await
            .unwrap()
            .get(0);
        if stuck == n {
            return;
        }
        assert!(stuck < n, "{stuck} lists stuck, more than {n}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{n} lists never got stuck on the lock");
}

/// PostgreSQL only: a SQLite reader cannot be held from outside (WAL readers
/// wait for nobody), so the SQLite pools are tested in the store's own tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_stuck_in_the_database_hold_only_the_list_connections() {
    let app = spawn_app_with(Backend::Postgres, |c| {
        c.store.list_connections = 2;
        c.api.max_concurrent_lists = 2;
        c.api.list_wait_ms = 0;
        c.store.list_timeout_ms = 120_000;
    })
    .await;
    app.send_ok(&text_send(NUMBER)).await;
    let (_, other) = app.new_account("other", 10, 0).await;
    let lock = lock_otps(&app).await;
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let request = app
                .client
                .get(app.url(&format!("/api/v1/auths/list/send-otps/{FILTERED}")))
                .bearer_auth(&app.key);
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    wait_for_stuck_lists(&app, 2).await;

    // Every list connection is taken and the account is at its bound: a third
    // list of it is refused at once ...
    let r = list_reply(&app, &app.key, FILTERED).await;
    assert_eq!(r.status(), 429);
    // ... while key checks of both accounts, on the other pool, go through,
    // and a bad key is still told so.
    for key in [&app.key, &other] {
        assert_eq!(key_check(&app, key).await, 404);
    }
    assert_eq!(key_check(&app, "otpg_abcdefghijkm_nope").await, 401);

    lock.batch_execute("ROLLBACK").await.unwrap();
    for list in stuck {
        assert_eq!(list.await.unwrap(), 200);
    }
    app.send_ok(&text_send("9841000000")).await;
}

/// PostgreSQL only, for the same reason: the list waits on a lock past its
/// `statement_timeout` (the SQLite progress handler is tested in the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_past_its_time_budget_is_a_503_query_timeout() {
    let app = spawn_app_with(Backend::Postgres, |c| c.store.list_timeout_ms = 200).await;
    app.send_ok(&text_send(NUMBER)).await;
    let lock = lock_otps(&app).await;
    let r = list_reply(&app, &app.key, FILTERED).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: Value = r.json().await.unwrap();
    assert_eq!(reason(&body), "query_timeout", "{body}");
    assert_eq!(body["success"], false);
    lock.batch_execute("ROLLBACK").await.unwrap();

    let (status, page) = app.list(FILTERED).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["count"], 1);
}
