//! Safe upgrades: a binary refuses a database whose applied migrations were
//! changed or that a newer release moved past what it supports, and the first
//! release (v0.1.0, built by `scripts/build-old-release.sh`) keeps serving on a
//! PostgreSQL database this release has migrated.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

use crate::durability::{otpgate, start_binary};
use crate::helpers::{Backend, database_url};

/// The first release's binary, built once and cached in target/old-release/.
fn first_release() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("scripts/build-old-release.sh"))
        .current_dir(&root)
        .output()
        .expect("running scripts/build-old-release.sh");
    assert!(
        out.status.success(),
        "building the first release failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn migrate(binary: Command, db: &str) -> Output {
    let mut binary = binary;
    binary
        .args(["migrate", "--database-url", db])
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn must_succeed(out: Output) -> Output {
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// Runs statements on the database behind `db`, either backend.
async fn exec(db: &str, statements: &str) {
    match db.strip_prefix("sqlite://") {
        Some(path) => rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(statements)
            .unwrap(),
        None => pg(db).await.batch_execute(statements).await.unwrap(),
    }
}

/// The first column of every row, as text (NULL as "NULL").
async fn texts(db: &str, query: &str) -> Vec<String> {
    match db.strip_prefix("sqlite://") {
        Some(path) => {
            let c = rusqlite::Connection::open(path).unwrap();
            let mut s = c.prepare(query).unwrap();
            s.query_map([], |r| r.get::<_, Option<String>>(0))
                .unwrap()
                .map(|v| v.unwrap().unwrap_or_else(|| "NULL".into()))
                .collect()
        }
        None => pg(db)
            .await
            .query(query, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| {
                r.get::<_, Option<String>>(0)
                    .unwrap_or_else(|| "NULL".into())
            })
            .collect(),
    }
}

async fn pg(db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn a_changed_migration_stops_the_binary_with_a_message_naming_it(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    must_succeed(migrate(otpgate(), &db));
    let tampered = "0".repeat(64);
    exec(
        &db,
        &format!("UPDATE otpgate_migrations SET checksum = '{tampered}' WHERE version = 3"),
    )
    .await;

    // `timeout`: a serve that wrongly started would otherwise run on.
    for args in [&["migrate"][..], &["serve", "--listen", "127.0.0.1:0"]] {
        let out = Command::new("timeout")
            .args(["30", env!("CARGO_BIN_EXE_otpgate")])
            .args(args)
            .args(["--database-url", &db])
            .env("OTPGATE_DELIVERY__LOG_PATH", dir.path().join("d.jsonl"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} ran on a changed migration");
        let err = stderr(&out);
        assert!(
            err.contains("migration 3 (codes_at_rest) was changed after it was applied"),
            "{args:?}: {err}"
        );
    }
    // The doctor says the same before anyone tries to start.
    let out = otpgate()
        .args(["doctor", "--database-url", &db])
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("FAIL store:")
            && report.contains("migration 3 (codes_at_rest) was changed after it was applied"),
        "{report}"
    );
    assert_eq!(
        texts(
            &db,
            "SELECT checksum FROM otpgate_migrations WHERE version = 3"
        )
        .await,
        [tampered],
        "a refused start writes nothing"
    );
}

async fn a_database_migrated_past_this_binary_is_refused_and_left_as_it_was(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    must_succeed(migrate(otpgate(), &db));
    // What a future release that removed something this one reads would leave.
    exec(
        &db,
        "INSERT INTO otpgate_migrations (version, name, applied_at, checksum, min_binary) \
         VALUES (9001, 'drop_old_columns', 0, 'x', '9.0.0'); \
         UPDATE otpgate_schema SET min_binary = '9.0.0', written_by = '9.0.0'",
    )
    .await;
    let out = migrate(otpgate(), &db);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("needs otpgate 9.0.0 or newer")
            && err.contains(&format!("this is otpgate {}", env!("CARGO_PKG_VERSION"))),
        "{err}"
    );
    // Without the summary row, the unknown migration itself is named.
    exec(&db, "DELETE FROM otpgate_schema").await;
    let err = stderr(&migrate(otpgate(), &db));
    assert!(
        err.contains("migration 9001 (drop_old_columns)")
            && err.contains("needs otpgate 9.0.0 or newer"),
        "{err}"
    );
    assert!(
        texts(&db, "SELECT min_binary FROM otpgate_schema")
            .await
            .is_empty(),
        "a refused start writes nothing"
    );
}

async fn unknown_migrations_that_still_support_this_binary_are_accepted(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    must_succeed(migrate(otpgate(), &db));
    // What a newer release that only added a table would leave.
    exec(
        &db,
        "CREATE TABLE future_things (id BIGINT PRIMARY KEY); \
         INSERT INTO otpgate_migrations (version, name, applied_at, checksum, min_binary) \
         VALUES (9001, 'future_things', 0, 'x', '0.1.0')",
    )
    .await;
    must_succeed(migrate(otpgate(), &db));
    let out = must_succeed(
        otpgate()
            .args([
                "accounts",
                "create",
                "shop",
                "--json",
                "--database-url",
                &db,
            ])
            .output()
            .unwrap(),
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["name"], "shop", "{created}");
    assert_eq!(
        texts(&db, "SELECT min_binary FROM otpgate_schema").await,
        ["0.1.0"]
    );
}

async fn a_first_release_database_gets_its_checksums_recorded_and_stays_usable_by_that_release(
    backend: Backend,
) {
    let old = first_release();
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    must_succeed(migrate(Command::new(&old), &db));
    // The first release's table has neither checksums nor min_binary.
    let first = texts(&db, "SELECT name FROM otpgate_migrations").await;
    assert!(first.contains(&"init".to_owned()), "{first:?}");
    // The doctor reads that table as it is and names what this release adds.
    let out = otpgate()
        .args(["doctor", "--database-url", &db])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("lacks migrations 0016_resends, 0017_retention"),
        "{report}"
    );
    must_succeed(migrate(otpgate(), &db));
    let stamped = texts(
        &db,
        "SELECT checksum || ' ' || min_binary FROM otpgate_migrations",
    )
    .await;
    assert!(!stamped.is_empty());
    assert!(
        stamped
            .iter()
            .all(|c| c.len() == 64 + " 0.1.0".len() && c.ends_with(" 0.1.0")),
        "{stamped:?}"
    );
    // The first release still opens it, and so does this one again.
    must_succeed(migrate(Command::new(&old), &db));
    must_succeed(migrate(otpgate(), &db));
}

crate::for_each_backend!(
    a_changed_migration_stops_the_binary_with_a_message_naming_it,
    a_database_migrated_past_this_binary_is_refused_and_left_as_it_was,
    unknown_migrations_that_still_support_this_binary_are_accepted,
    a_first_release_database_gets_its_checksums_recorded_and_stays_usable_by_that_release,
);

/// Migrations compare their `min_binary` with the store's version: it must be
/// the binary's.
#[test]
fn the_binary_and_its_store_carry_one_version() {
    assert_eq!(otp_store::BINARY_VERSION, env!("CARGO_PKG_VERSION"));
}

fn create_account(binary: &Path, db: &str) -> String {
    let out = must_succeed(
        Command::new(binary)
            .args([
                "accounts",
                "create",
                "shop",
                "--sms-credits",
                "100",
                "--phone-credits",
                "0",
                "--json",
                "--database-url",
                db,
            ])
            .output()
            .unwrap(),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["api_key"].as_str().unwrap().to_owned()
}

/// Sends an OTP whose code the client chose, so any node can verify it.
async fn send(base: &str, key: &str, number: &str, code: &str) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/auths/send/otp/"))
        .bearer_auth(key)
        .json(&json!({
            "number": number,
            "message": "Your code is {otp}",
            "sms_send_options": "text",
            "otp_options": "personnel",
            "otp": code,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn verify(base: &str, key: &str, number: &str, code: &str) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/auths/verify/otp/"))
        .bearer_auth(key)
        .json(&json!({"number": number, "otp": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Waits (up to a minute: this is not a speed test) until the node's delivery
/// log has a message to `number`.
async fn wait_for_delivery(log: &Path, number: &str) {
    for _ in 0..600 {
        if std::fs::read_to_string(log).is_ok_and(|l| l.contains(number)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no delivery to {number} in {}", log.display());
}

/// The rolling upgrade: node A runs the first release; this release migrates
/// the database under it and starts as node B; OTPs sent through either node
/// verify on the other; A restarts on the migrated database; A is retired and
/// B delivers alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_nodes_share_one_postgres_database_during_a_rolling_upgrade() {
    let old = first_release();
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Postgres, &dir).await;
    let (log_a, log_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));

    must_succeed(migrate(Command::new(&old), &db));
    let key = create_account(&old, &db);
    let (node_a, a) = start_binary(Command::new(&old), &db, &log_a);
    send(&a, &key, "9851000001", "111111").await;
    wait_for_delivery(&log_a, "9851000001").await;

    must_succeed(migrate(otpgate(), &db));
    assert_eq!(
        texts(
            &db,
            "SELECT min_binary || ' ' || written_by FROM otpgate_schema"
        )
        .await,
        [format!("0.1.0 {}", env!("CARGO_PKG_VERSION"))],
        "this release migrated the database and still supports the first"
    );
    let (_node_b, b) = start_binary(otpgate(), &db, &log_b);
    verify(&b, &key, "9851000001", "111111").await;
    send(&b, &key, "9851000002", "222222").await;
    send(&a, &key, "9851000003", "333333").await;
    verify(&a, &key, "9851000002", "222222").await;
    verify(&b, &key, "9851000003", "333333").await;

    // A node of the first release restarting mid-upgrade still starts.
    drop(node_a);
    must_succeed(migrate(Command::new(&old), &db));
    let (node_a, a) = start_binary(Command::new(&old), &db, &log_a);
    send(&a, &key, "9851000004", "444444").await;
    verify(&b, &key, "9851000004", "444444").await;
    drop(node_a);

    send(&b, &key, "9851000005", "555555").await;
    wait_for_delivery(&log_b, "9851000005").await;
    verify(&b, &key, "9851000005", "555555").await;
}
