//! Production mode's defaults: no demo account and no key on the console,
//! files only their owner can read, a daily spend cap, and no PostgreSQL
//! statement parameters in the logs at debug level.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use otpgate::config::{Config, Mode, PRODUCTION_DAILY_SPEND_CAP, Secret};
use serde_json::Value;

use crate::durability::create_account;
use crate::helpers::{
    Backend, TestApp, database_url, pg_admin_url, spawn_app_with, sql, text_send,
};

/// The keys production mode refuses to start without, as environment variables.
fn production_env() -> [(&'static str, String); 6] {
    [
        ("OTPGATE_MODE", "production".to_owned()),
        // Production's own default, 127.0.0.1:9091, would be shared by the
        // tests running at once: a free port instead.
        ("OTPGATE_ADMIN_LISTEN", "127.0.0.1:0".to_owned()),
        ("OTPGATE_SECRETS__HMAC_KEY", BASE64.encode([1u8; 32])),
        (
            "OTPGATE_SECRETS__ENCRYPTION_KEYS__K1",
            BASE64.encode([2u8; 32]),
        ),
        ("OTPGATE_SECRETS__CURRENT_KEY_ID", "k1".to_owned()),
        ("OTPGATE_AUTH__TOKEN_SECRET", BASE64.encode([3u8; 32])),
    ]
}

/// The same keys on a configuration, with the production defaults left unset.
fn production(c: &mut Config) {
    c.mode = Mode::Production;
    c.secrets.hmac_key = Some(Secret::new(BASE64.encode([1u8; 32])));
    c.secrets.encryption_keys = [("k1".to_owned(), Secret::new(BASE64.encode([2u8; 32])))].into();
    c.secrets.current_key_id = "k1".into();
    c.auth.token_secret = Some(Secret::new(BASE64.encode([3u8; 32])));
    c.demo.create_default_account = None;
    c.limits.daily_spend_cap = None;
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// The real binary, started by a shell that clears the umask first: whatever
/// the server creates is as open as its own code makes it.
async fn a_production_server_prints_no_demo_key_and_keeps_its_files_private_under_an_open_umask(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    let log = dir.path().join("deliveries.jsonl");
    let mut child = Command::new("sh")
        .args([
            "-c",
            "umask 000 && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_otpgate"),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db,
        ])
        .envs(production_env())
        .env("OTPGATE_DELIVERY__LOG_PATH", &log)
        .env("OTPGATE_DELIVERY__POLL_INTERVAL_MS", "50")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    let mut console = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = match lines.next() {
            Some(line) => line.unwrap(),
            None => panic!("otpgate exited before listening: {console:?}"),
        };
        if let Some(a) = line.strip_prefix("otpgate listening on ") {
            break a.trim().to_owned();
        }
        console.push(line);
    };
    std::thread::spawn(move || for _ in lines {});
    assert!(
        console
            .iter()
            .all(|l| !l.contains("otpg_") && !l.contains("default")),
        "production printed a demo key: {console:?}"
    );

    let listed = crate::durability::otpgate()
        .args(["accounts", "list", "--json", "--database-url", &db])
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed, serde_json::json!([]), "no demo account was made");

    let (_, key) = create_account(&db, "acme", 100);
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/auths/send/otp/"))
        .bearer_auth(&key)
        .json(&text_send("9851023212"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for _ in 0..800 {
        if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("9851023212")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("9851023212"),
        "the delivery was logged"
    );

    assert_eq!(mode_of(&log), 0o600, "the delivery log holds every code");
    if backend == Backend::Sqlite {
        // The server is still running, so the WAL and shared-memory files exist.
        for name in ["otpgate.db", "otpgate.db-wal", "otpgate.db-shm"] {
            assert_eq!(mode_of(&dir.path().join(name)), 0o600, "{name}");
        }
    }

    unsafe { libc_kill(child.id() as i32, 15) };
    assert!(child.wait().unwrap().success(), "SIGTERM stops it cleanly");
    let logs = logs.join().unwrap();
    assert!(!logs.contains(&key[10..]), "the key never reaches the logs");
}

async fn production_caps_each_account_at_ten_thousand_credits_a_day_unless_it_has_its_own_cap(
    backend: Backend,
) {
    let app = spawn_app_with(backend, production).await;
    let accounts = app.store.list_accounts().await.unwrap();
    assert_eq!(
        accounts.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        ["acme"],
        "production made no demo account"
    );
    assert_eq!(PRODUCTION_DAILY_SPEND_CAP, 10_000);

    app.send_ok(&text_send("9851023212")).await;
    // As if the account had spent all but one credit of the cap today.
    set_spent_today(&app, PRODUCTION_DAILY_SPEND_CAP - 1).await;
    app.send_ok(&text_send("9851023213")).await;
    let before = (app.balance().await, app.otp_count().await);
    let r = app.send(&text_send("9851023214")).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "daily_spend_cap", "{body}");
    assert_eq!(
        (app.balance().await, app.otp_count().await),
        before,
        "nothing written or charged"
    );

    // An account's own cap replaces the default.
    app.store
        .set_account_limits(app.account_id, None, Some(20_000))
        .await
        .unwrap();
    app.send_ok(&text_send("9851023214")).await;
    app.stop().await;
}

async fn development_mode_has_no_spend_cap_by_default(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.limits.daily_spend_cap = None).await;
    app.send_ok(&text_send("9851023212")).await;
    set_spent_today(&app, 1_000_000).await;
    app.send_ok(&text_send("9851023213")).await;
    app.stop().await;
}

async fn set_spent_today(app: &TestApp, spent: i64) {
    sql(
        app,
        &format!(
            "UPDATE accounts SET spend_today = {spent} WHERE id = {}",
            app.account_id
        ),
    )
    .await;
}

/// A writer into a shared buffer, for a subscriber the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a subscriber with `filter` logs while tokio-postgres runs a statement
/// with a parameter (the driver logs through the `log` crate, which the
/// subscriber picks up as the server's does).
async fn logged_during_a_query(filter: tracing_subscriber::EnvFilter) -> String {
    use tracing_subscriber::util::SubscriberInitExt;
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = subscriber.set_default();
    let (client, conn) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let row = client
        .query_one("SELECT $1::text", &[&"parameter-4821-secret"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "parameter-4821-secret");
    tracing::debug!("debug is on");
    drop(client);
    let _ = conn.await;
    drop(guard);
    String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
}

// A current-thread runtime: the subscriber is this thread's default, and the
// driver logs from the task the test polls.
#[tokio::test]
async fn postgres_statement_parameters_stay_out_of_debug_logs_even_with_rust_log_debug() {
    let unfiltered = logged_during_a_query(tracing_subscriber::EnvFilter::new("debug")).await;
    assert!(
        unfiltered.contains("parameter-4821-secret"),
        "the driver does log parameters at debug, so the filter matters: {unfiltered}"
    );
    for (rust_log, level) in [
        (Some("debug"), "info"),
        (None, "debug"),
        (Some("trace"), "info"),
    ] {
        let logged = logged_during_a_query(otpgate::telemetry::env_filter(rust_log, level)).await;
        assert!(
            logged.contains("debug is on"),
            "{rust_log:?} / {level}: {logged}"
        );
        assert!(
            !logged.contains("parameter-4821-secret"),
            "{rust_log:?} / {level}: {logged}"
        );
    }
}

mod a_production_server_prints_no_demo_key_and_keeps_its_files_private_under_an_open_umask {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_production_server_prints_no_demo_key_and_keeps_its_files_private_under_an_open_umask(
            super::Backend::Sqlite,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_production_server_prints_no_demo_key_and_keeps_its_files_private_under_an_open_umask(
            super::Backend::Postgres,
        )
        .await
    }
}

mod production_caps_each_account_at_ten_thousand_credits_a_day_unless_it_has_its_own_cap {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::production_caps_each_account_at_ten_thousand_credits_a_day_unless_it_has_its_own_cap(
            super::Backend::Sqlite,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::production_caps_each_account_at_ten_thousand_credits_a_day_unless_it_has_its_own_cap(
            super::Backend::Postgres,
        )
        .await
    }
}

mod development_mode_has_no_spend_cap_by_default {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::development_mode_has_no_spend_cap_by_default(super::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::development_mode_has_no_spend_cap_by_default(super::Backend::Postgres).await
    }
}
