//! The data lifecycle: the retention purge under load (nothing live lost,
//! balances and the ledger exact, the list's count true), and `otpgate backup`
//! taken under load restoring to a working service.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use otp_store::{PurgeReport, RetentionRules, SharedStore, StoreOptions, now_micros};
use serde_json::{Value, json};

use crate::durability::{create_account, otpgate, start_server};
use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, database_url, spawn_app_with, sql, sql_i64s, text_send};

/// A purge as it would run 700 s from now: codes sent now (600 s by
/// default) have expired by then, and every status change is past retention.
fn rules_ahead() -> RetentionRules {
    let later = now_micros() + 700_000_000;
    RetentionRules {
        now: later,
        otps_before: Some(later),
        idempotency_before: later,
        login_windows_ended: later,
        chunk: 7,
    }
}

async fn send_id(app: &TestApp, key: &str, body: &Value) -> i64 {
    let r = app.send_as(key, body).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["data"]["details"]["id"].as_i64().unwrap()
}

async fn wait_sent(store: &SharedStore, account: i64, id: i64) {
    for _ in 0..800 {
        let otp = store.otp(account, id).await.unwrap().unwrap();
        if otp.status.as_str() == "sent" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("OTP {id} was never sent");
}

/// The OTP ids the log driver delivered (its file stands in for the handsets).
fn delivered(app: &TestApp) -> HashSet<i64> {
    std::fs::read_to_string(&app.deliveries)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["otp_id"].as_i64())
        .collect()
}

async fn assert_ledger_matches_balance(app: &TestApp, account: i64) {
    let a = app.store.account(account).await.unwrap().unwrap();
    let ledger = app.store.ledger(account).await.unwrap();
    let sms: i64 = ledger.iter().map(|e| e.sms_delta).sum();
    let phone: i64 = ledger.iter().map(|e| e.phone_delta).sum();
    assert_eq!(
        (sms, phone),
        (a.sms_credits, a.phone_credits),
        "account {account}"
    );
}

async fn list_count(app: &TestApp, key: &str, query: &str) -> (u64, Vec<i64>) {
    let (status, body) = app.list_as(key, query).await;
    assert_eq!(status, 200, "{body}");
    let ids = body["results"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    (body["count"].as_u64().unwrap(), ids)
}

async fn a_purge_under_load_loses_nothing_live_and_keeps_balances_exact(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        // Webhook events to a closed port stay pending, retried every 10 minutes.
        c.webhooks.allow_private_addresses = true;
        c.webhooks.backoff_base_ms = 600_000;
        c.webhooks.backoff_cap_ms = 600_000;
        // The purge runs only when the test says.
        c.retention.interval_seconds = Some(3600);
    })
    .await;
    let a = app.account_id;

    // Account A: ten old OTPs, then one whose code is still valid (an hour),
    // then three more behind it. One old send carries an Idempotency-Key.
    let mut old = Vec::new();
    for i in 0..10 {
        let mut r = app
            .client
            .post(app.url("/api/v1/auths/send/otp/"))
            .bearer_auth(&app.key)
            .json(&text_send(&format!("98510000{i:02}")));
        if i == 0 {
            r = r.header("Idempotency-Key", "first-old-send");
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        old.push(body["data"]["details"]["id"].as_i64().unwrap());
    }
    let mut hour = text_send("9851000100");
    hour["expiry_seconds"] = json!(3600);
    let valid = send_id(&app, &app.key, &hour).await;
    let mut behind = Vec::new();
    for i in 0..3 {
        behind.push(send_id(&app, &app.key, &text_send(&format!("98510002{i:02}"))).await);
    }
    for id in old.iter().chain(&behind).chain([&valid]) {
        wait_sent(&app.store, a, *id).await;
    }

    // Account W: its events are still being retried.
    let (w, w_key) = app.new_account("webhooked", 10, 0).await;
    let r = app
        .client
        .put(app.url("/api/v1/auths/webhook/"))
        .bearer_auth(&w_key)
        .json(&json!({ "url": "http://127.0.0.1:1/hook" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let retried = send_id(&app, &w_key, &text_send("9851000300")).await;
    wait_sent(&app.store, w, retried).await;

    // Account Q: a job waiting for its retry (in flight, as far as the purge
    // is concerned).
    let (q, q_key) = app.new_account("queued", 10, 0).await;
    let waiting = send_id(&app, &q_key, &text_send("9851000400")).await;
    wait_sent(&app.store, q, waiting).await;
    let far = now_micros() + 86_400_000_000;
    sql(
        &app,
        &format!(
            "UPDATE delivery_jobs SET state = 'queued', next_attempt_at = {far} WHERE otp_id = {waiting}"
        ),
    )
    .await;

    // Account B: a load of sends while two purgers (two nodes' worth) run.
    let (b, b_key) = app.new_account("busy", 1000, 0).await;
    let second = otp_store::open(&app.database_url, &StoreOptions::default())
        .await
        .unwrap();
    let loading = Arc::new(AtomicBool::new(true));
    let mut purgers = Vec::new();
    for store in [app.store.clone(), second.clone()] {
        let loading = loading.clone();
        purgers.push(tokio::spawn(async move {
            let mut total = PurgeReport::default();
            loop {
                let last = !loading.load(Ordering::SeqCst);
                let r = store.purge_expired_rows(rules_ahead()).await.unwrap();
                total.otps += r.otps;
                total.idempotency += r.idempotency;
                if last {
                    return total;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let mut senders = Vec::new();
    for i in 0..150 {
        let client = app.client.clone();
        let url = app.url("/api/v1/auths/send/otp/");
        let key = b_key.clone();
        senders.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .json(&text_send(&format!("9852{i:06}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            body["data"]["details"]["id"].as_i64().unwrap()
        }));
    }
    let mut accepted = Vec::new();
    for s in senders {
        accepted.push(s.await.unwrap());
    }
    // Every accepted send reaches its handset: none was purged while queued.
    let mut waited = 0;
    while !accepted.iter().all(|id| delivered(&app).contains(id)) {
        waited += 1;
        assert!(waited < 2000, "some accepted sends were never delivered");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Their jobs are done once the log line is written; let the last ones
    // record it before the final pass.
    for id in &accepted {
        for _ in 0..800 {
            match app.store.otp(b, *id).await.unwrap() {
                Some(o) if o.status.as_str() != "sent" => {
                    tokio::time::sleep(Duration::from_millis(25)).await
                }
                _ => break,
            }
        }
    }
    loading.store(false, Ordering::SeqCst);
    let mut purged = 0;
    let mut idempotency = 0;
    for p in purgers {
        let t = p.await.unwrap();
        purged += t.otps;
        idempotency += t.idempotency;
    }
    let last = app.store.purge_expired_rows(rules_ahead()).await.unwrap();
    purged += last.otps;

    // What went: A's ten old ones and all of B's, each counted once.
    assert_eq!(purged, 10 + accepted.len() as u64);
    assert!(idempotency <= 1);
    assert_eq!(
        sql_i64s(&app, "SELECT COUNT(*) FROM idempotency").await,
        [0]
    );
    for id in &old {
        assert!(app.store.otp(a, *id).await.unwrap().is_none(), "{id}");
    }
    assert_eq!(
        sql_i64s(
            &app,
            &format!("SELECT COUNT(*) FROM otps WHERE account_id = {b}")
        )
        .await,
        [0]
    );
    let leftovers = sql_i64s(
        &app,
        "SELECT (SELECT COUNT(*) FROM delivery_jobs WHERE otp_id NOT IN (SELECT id FROM otps)) \
         + (SELECT COUNT(*) FROM otp_events WHERE otp_id NOT IN (SELECT id FROM otps)) \
         + (SELECT COUNT(*) FROM provider_messages WHERE otp_id NOT IN (SELECT id FROM otps)) \
         + (SELECT COUNT(*) FROM webhook_deliveries WHERE otp_id NOT IN (SELECT id FROM otps))",
    )
    .await;
    assert_eq!(leftovers, [0], "rows of purged OTPs were left behind");

    // What stayed: the valid code and the three behind it, the retried
    // event's OTP, the waiting job's OTP.
    for id in behind.iter().chain([&valid]) {
        assert!(app.store.otp(a, *id).await.unwrap().is_some(), "{id}");
    }
    assert!(app.store.otp(w, retried).await.unwrap().is_some());
    assert!(app.store.otp(q, waiting).await.unwrap().is_some());

    // The list's count is true, and offsets still find the right pages.
    let mut newest_first: Vec<i64> = behind.iter().rev().copied().collect();
    newest_first.push(valid);
    assert_eq!(
        list_count(&app, &app.key, "?limit=10").await,
        (4, newest_first.clone())
    );
    assert_eq!(
        list_count(&app, &app.key, "?limit=2&offset=1").await,
        (4, newest_first[1..3].to_vec())
    );
    assert_eq!(list_count(&app, &b_key, "?limit=10").await, (0, vec![]));

    // Balances are exact and the ledger, never purged, still adds up to them.
    let busy = app.store.account(b).await.unwrap().unwrap();
    assert_eq!(busy.sms_credits, 1000 - accepted.len() as i64);
    assert_eq!(app.store.ledger(b).await.unwrap().len(), 1 + accepted.len());
    for account in [a, w, q, b] {
        assert_ledger_matches_balance(&app, account).await;
    }

    // The account goes on as before: a new send lists and counts.
    let fresh = send_id(&app, &b_key, &text_send("9852999999")).await;
    assert_eq!(
        list_count(&app, &b_key, "?limit=10").await,
        (1, vec![fresh])
    );
    assert_ledger_matches_balance(&app, b).await;
    app.stop().await;
}

async fn old_codes_and_login_counters_go_on_their_own_clocks(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.retention.interval_seconds = Some(3600)).await;
    let r = app
        .client
        .post(app.url("/api/v1/auths/login/"))
        .json(&json!({ "email": "nobody@example.com", "password": "wrong password here" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(
        sql_i64s(&app, "SELECT COUNT(*) FROM login_attempts").await,
        [1]
    );
    // Within the window: kept. After it: gone.
    let now = now_micros();
    let mut rules = RetentionRules {
        now,
        otps_before: None,
        idempotency_before: now - 86_400_000_000,
        login_windows_ended: now - 900_000_000,
        chunk: 100,
    };
    assert!(
        app.store
            .purge_expired_rows(rules)
            .await
            .unwrap()
            .is_empty()
    );
    rules.login_windows_ended = now_micros();
    let r = app.store.purge_expired_rows(rules).await.unwrap();
    assert!(r.login_counters >= 1, "{r:?}");
    assert_eq!(
        sql_i64s(&app, "SELECT COUNT(*) FROM login_attempts").await,
        [0]
    );
    app.stop().await;
}

async fn the_server_purges_on_its_own_every_interval(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.retention.interval_seconds = Some(1);
        c.auth.login_window_seconds = 1;
    })
    .await;
    let r = app
        .client
        .post(app.url("/api/v1/auths/login/"))
        .json(&json!({ "email": "nobody@example.com", "password": "wrong password here" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let mut polls = 0;
    while sql_i64s(&app, "SELECT COUNT(*) FROM login_attempts").await != [0] {
        polls += 1;
        assert!(
            polls < 400,
            "the purge loop never removed the ended login window"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

for_each_backend!(
    a_purge_under_load_loses_nothing_live_and_keeps_balances_exact,
    old_codes_and_login_counters_go_on_their_own_clocks,
    the_server_purges_on_its_own_every_interval,
);

fn sqlite_at(db: &str) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db.trim_start_matches("sqlite://")).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// Every account's balance, and its ledger's sum, in one database.
fn balances(c: &rusqlite::Connection) -> Vec<(i64, i64, i64)> {
    let mut s = c
        .prepare(
            "SELECT a.id, a.sms_credits, (SELECT SUM(sms_delta) FROM ledger l WHERE l.account_id = a.id) \
             FROM accounts a ORDER BY a.id",
        )
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_to_a_working_service() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, &dir).await;
    let (account, key) = create_account(&db, "acme", 5000);
    let (server, base) = start_server(&db, dir.path());
    let client = reqwest::Client::new();

    // Sends keep arriving while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (client, key, stop) = (client.clone(), key.clone(), stop.clone());
        let url = format!("{base}/api/v1/auths/send/otp/");
        load.push(tokio::spawn(async move {
            let mut ok = 0;
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&text_send(&format!("985{worker}{i:06}")))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => ok += 1,
                    // The per-key rate (50 a second by default) holds the load back.
                    429 => tokio::time::sleep(Duration::from_millis(20)).await,
                    other => panic!("send answered {other}"),
                }
            }
            ok
        }));
    }
    let mut waited = 0;
    let before = loop {
        let n: i64 = sqlite_at(&db)
            .query_row("SELECT COUNT(*) FROM otps", [], |r| r.get(0))
            .unwrap();
        if n >= 100 {
            break n;
        }
        waited += 1;
        assert!(waited < 3000, "the load never reached 100 sends");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let copy = dir.path().join("backup.db");
    let out = otpgate()
        .args(["backup", copy.to_str().unwrap(), "--database-url", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("integrity ok"));
    // The load went on past the backup.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut sent = 0;
    for l in load {
        sent += l.await.unwrap();
    }
    drop(server);

    // A second backup over the first is refused: nothing is overwritten.
    let again = otpgate()
        .args(["backup", copy.to_str().unwrap(), "--database-url", &db])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let restored_path = dir.path().join("restored.db");
    let restored = format!("sqlite://{}", restored_path.display());
    let out = otpgate()
        .args([
            "restore",
            copy.to_str().unwrap(),
            "--database-url",
            &restored,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Restoring over a database needs --replace.
    let over = otpgate()
        .args([
            "restore",
            copy.to_str().unwrap(),
            "--database-url",
            &restored,
        ])
        .output()
        .unwrap();
    assert!(!over.status.success());
    assert!(String::from_utf8_lossy(&over.stderr).contains("--replace"));

    // --replace writes over a database (the original here, its server
    // stopped), through SQLite, whatever WAL lies beside it.
    let replaced = otpgate()
        .args([
            "restore",
            copy.to_str().unwrap(),
            "--replace",
            "--database-url",
            &db,
        ])
        .output()
        .unwrap();
    assert!(
        replaced.status.success(),
        "{}",
        String::from_utf8_lossy(&replaced.stderr)
    );
    let back: i64 = sqlite_at(&db)
        .query_row("SELECT COUNT(*) FROM otps", [], |r| r.get(0))
        .unwrap();

    let c = sqlite_at(&restored);
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let (in_copy, newest): (i64, i64) = c
        .query_row(
            "SELECT COUNT(*), (SELECT otp_count FROM accounts WHERE id = ?1) FROM otps",
            [account],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // Taken under load: sends were accepted before it and after it.
    assert!(
        in_copy >= before && in_copy < sent,
        "{before} <= {in_copy} < {sent}"
    );
    // Consistent: the counter, the OTPs, the balance and the ledger agree.
    assert_eq!(newest, in_copy);
    assert_eq!(back, in_copy);
    for (id, balance, ledger) in balances(&c) {
        assert_eq!(balance, ledger, "account {id}");
        if id == account {
            assert_eq!(balance, 5000 - in_copy);
        }
    }
    drop(c);

    // The restored file serves: with the code keys kept beside it, send and
    // verify work.
    std::fs::copy(
        format!("{}.secrets.toml", db.trim_start_matches("sqlite://")),
        format!("{}.secrets.toml", restored_path.display()),
    )
    .unwrap();
    let (_server, base) = start_server(&restored, dir.path());
    let r = client
        .post(format!("{base}/api/v1/auths/send/otp/"))
        .bearer_auth(&key)
        .json(&text_send("9851234567"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let code = body["data"]["details"]["otp"].as_str().unwrap().to_owned();
    let r = client
        .post(format!("{base}/api/v1/auths/verify/otp/"))
        .bearer_auth(&key)
        .json(&json!({ "number": "9851234567", "otp": code }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let list: Value = client
        .get(format!("{base}/api/v1/auths/list/send-otps/?limit=1"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"].as_i64().unwrap(), in_copy + 1);
}

#[test]
fn backup_of_a_postgresql_store_points_at_pg_dump() {
    let out = otpgate()
        .args([
            "backup",
            "/tmp/never-written.db",
            "--database-url",
            "postgres://postgres@127.0.0.1:5432/postgres",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pg_dump"), "{err}");
}
