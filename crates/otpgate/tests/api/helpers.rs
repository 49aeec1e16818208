//! Spawning the real application on port 0 against a fresh SQLite file or a fresh
//! PostgreSQL database, and small helpers to talk to it.

use std::path::PathBuf;
use std::time::Duration;

use otp_store::Scopes;
use otp_store::SharedStore;
use otpgate::auth::issue_key_with_scopes;
use otpgate::config::{Config, Secret};
use otpgate::startup::Application;
use serde_json::Value;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub use otp_store::test_support::{fresh_pg_database, pg_admin_url};

pub struct TestApp {
    pub backend: Backend,
    pub address: String,
    pub client: reqwest::Client,
    pub store: SharedStore,
    /// The running app's shared state (its throttles, for tests that hold them).
    pub state: otpgate::state::AppState,
    pub account_id: i64,
    pub key: String,
    pub deliveries: PathBuf,
    /// The store's URL (`sqlite://...` or `postgres://...`), for tests that look
    /// at the database itself.
    pub database_url: String,
    /// Holds the SQLite file and the delivery log until the test ends.
    _dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn database_url(backend: Backend, dir: &tempfile::TempDir) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("otpgate.db").display()),
        Backend::Postgres => fresh_pg_database().await,
    }
}

pub fn test_config(database_url: &str, dir: &tempfile::TempDir) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        database_url: Secret::new(database_url.to_owned()),
        ..Config::default()
    };
    config.delivery.log_path = dir.path().join("deliveries.jsonl").display().to_string();
    config.secrets.file = dir.path().join("secrets.toml").display().to_string();
    config.delivery.voice_dir = dir.path().join("voice").display().to_string();
    config.delivery.poll_interval_ms = 50;
    // Webhook attempts and their retries come quickly in tests.
    config.webhooks.poll_interval_ms = 50;
    config.webhooks.backoff_base_ms = 100;
    config.webhooks.backoff_cap_ms = 400;
    config.webhooks.sweep_interval_ms = 100;
    config.demo.create_default_account = Some(false);
    // One listener whatever the mode: a production-mode test must not bind the
    // production default 127.0.0.1:9091 (edge.rs sets `admin_listen` itself).
    config.admin_listen = Some(String::new());
    // Most tests send many OTPs to one number; `limits.rs` turns limits back on.
    config.limits = otpgate::config::LimitsConfig::off();
    // Many tests send bursts nobody verifies; `guard.rs` turns the pumping
    // guard on.
    config.guard.enabled = false;
    // Verify tests guess many times; `verify.rs` turns the verify limits on.
    config.verify.per_number_max = 0;
    config.verify.per_account_rps = 0;
    config
}

/// The real application on port 0 with an account holding 100 SMS and 10 phone
/// credits.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// The (field, code) of each error of an error envelope.
pub fn named_errors(reply: &Value) -> Vec<(&str, &str)> {
    reply["errors"]
        .as_array()
        .expect("an error envelope")
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect()
}

/// Another node on `config` (a running app's, so the same database): its
/// base URL; [`Node::stop`] stops it cleanly.
pub struct Node {
    pub url: String,
    stop: oneshot::Sender<()>,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Node {
    pub async fn start(config: Config) -> Node {
        let app = Application::build(config)
            .await
            .expect("building the second node");
        let url = format!("http://{}", app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Node { url, stop, running }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.running.await.unwrap().unwrap();
    }
}

pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = database_url(backend, &dir).await;
    let mut config = test_config(&url, &dir);
    tweak(&mut config);
    let deliveries = PathBuf::from(&config.delivery.log_path);
    let app = Application::build(config).await.expect("building the app");
    let address = format!("http://{}", app.local_addr());
    let store = app.state().store.clone();
    let state = app.state().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let account = store
        .create_account("acme", 100, 10)
        .await
        .expect("creating the test account");
    // Every scope, so that each test reaches what it tests; `scopes.rs` tests
    // keys with fewer.
    let key = issue_key_with_scopes(account.id, None, Scopes::ALL);
    store.create_key(key.record).await.expect("storing the key");
    TestApp {
        backend,
        address,
        client: reqwest::Client::new(),
        store,
        state,
        account_id: account.id,
        key: key.plaintext,
        deliveries,
        database_url: url,
        _dir: dir,
        shutdown: Some(tx),
        running: Some(running),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Another account with its own key (every scope).
    pub async fn new_account(&self, name: &str, sms: i64, phone: i64) -> (i64, String) {
        let a = self.store.create_account(name, sms, phone).await.unwrap();
        let key = issue_key_with_scopes(a.id, None, Scopes::ALL);
        self.store.create_key(key.record).await.unwrap();
        (a.id, key.plaintext)
    }

    pub async fn send_as(&self, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auths/send/otp/"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("sending the request")
    }

    pub async fn send(&self, body: &Value) -> reqwest::Response {
        self.send_as(&self.key, body).await
    }

    /// Sends and returns the reply body, asserting a 200.
    pub async fn send_ok(&self, body: &Value) -> Value {
        let r = self.send(body).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn list_as(&self, key: &str, query: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(&format!("/api/v1/auths/list/send-otps/{query}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub async fn list(&self, query: &str) -> (u16, Value) {
        self.list_as(&self.key, query).await
    }

    pub async fn balance(&self) -> (i64, i64) {
        let a = self.store.account(self.account_id).await.unwrap().unwrap();
        (a.sms_credits, a.phone_credits)
    }

    pub async fn otp_count(&self) -> i64 {
        self.store
            .account(self.account_id)
            .await
            .unwrap()
            .unwrap()
            .otp_count
    }

    /// Waits until the OTP reaches `status` (delivery runs in the background).
    pub async fn wait_for_status(&self, id: i64, status: &str) -> otp_store::OtpRecord {
        // Generous: a loaded 2-core CI machine runs two tests at once.
        for _ in 0..800 {
            let otp = self.store.otp(self.account_id, id).await.unwrap().unwrap();
            if otp.status.as_str() == status {
                return otp;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("OTP {id} never reached status {status}");
    }

    /// Waits until the OTP reaches one of `statuses`.
    pub async fn wait_for_any_status(&self, id: i64, statuses: &[&str]) -> otp_store::OtpRecord {
        for _ in 0..800 {
            let otp = self.store.otp(self.account_id, id).await.unwrap().unwrap();
            if statuses.contains(&otp.status.as_str()) {
                return otp;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("OTP {id} never reached any of {statuses:?}");
    }

    /// Stops the app gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(r) = self.running.take() {
            r.await.unwrap().unwrap();
        }
    }
}

pub fn text_send(number: &str) -> Value {
    serde_json::json!({
        "number": number,
        "message": "Your code is {otp}",
        "sms_send_options": "text",
    })
}

/// Generates the tests of the calling module, each once against SQLite and
/// once against PostgreSQL, in one of these forms:
///
/// - `for_each_backend!(NAME, ...)` runs each `async fn NAME(backend: Backend)`
///   as `NAME::sqlite` and `NAME::postgres`; `NAME => BODY` runs the function
///   `BODY` under the name `NAME` (one body, several configurations).
/// - `for_each_backend! { async fn NAME(app) { ... } ... }` gives each body the
///   started [`TestApp`] of `spawn_app(backend)`; with `config: TWEAK;` first,
///   of `spawn_app_with(backend, TWEAK)`. Same names.
/// - `for_each_backend! { modes: [VARIANT => (MODE, TWEAK), ...]; async fn
///   NAME(app, mode) { ... } ... }` runs each body once per server [`Mode`]
///   (`mode`), its app started with that mode's `TWEAK`: `NAME::VARIANT::sqlite`
///   and `NAME::VARIANT::postgres`.
/// - `for_each_backend! { peers: [PEER => (SQLITE, POSTGRES), ...]; NAME, ... }`
///   runs each `async fn NAME(peer, backend: Backend)` once per `PEER`, as
///   `NAME::SQLITE` and `NAME::POSTGRES`.
///
/// [`Mode`]: otpgate::config::Mode
#[macro_export]
macro_rules! for_each_backend {
    (@pair $sqlite:ident, $postgres:ident, |$backend:ident| $run:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let $backend = $crate::helpers::Backend::Sqlite;
            $run
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let $backend = $crate::helpers::Backend::Postgres;
            $run
        }
    };
    (@modes [$($variant:ident => ($mode:expr, $tweak:expr)),* $(,)?]) => {
        $(
            mod $variant {
                #[allow(unused_imports)]
                use super::*;

                $crate::for_each_backend!(@pair sqlite, postgres, |backend| {
                    let app = $crate::helpers::spawn_app_with(backend, $tweak).await;
                    super::run(app, $mode).await
                });
            }
        )*
    };
    (@peers $name:ident [$($peer:expr => ($sqlite:ident, $postgres:ident)),* $(,)?]) => {
        $(
            $crate::for_each_backend!(@pair $sqlite, $postgres, |backend| {
                super::$name($peer, backend).await
            });
        )*
    };
    (config: $tweak:expr; $(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                #[allow(unused_imports)]
                use $crate::helpers::{spawn_app_with, Backend};

                $crate::for_each_backend!(@pair sqlite, postgres, |backend| {
                    let $app = spawn_app_with(backend, $tweak).await;
                    $body
                });
            }
        )*
    };
    (modes: $modes:tt; $(async fn $name:ident($app:ident, $mode:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($app: $crate::helpers::TestApp, $mode: ::otpgate::config::Mode) $body

                $crate::for_each_backend!(@modes $modes);
            }
        )*
    };
    (peers: $peers:tt; $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                $crate::for_each_backend!(@peers $name $peers);
            }
        )*
    };
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                #[allow(unused_imports)]
                use $crate::helpers::{spawn_app, Backend};

                $crate::for_each_backend!(@pair sqlite, postgres, |backend| {
                    let $app = spawn_app(backend).await;
                    $body
                });
            }
        )*
    };
    ($($name:ident),* $(,)?) => {
        $crate::for_each_backend!($($name => $name),*);
    };
    ($($name:ident => $body:ident),* $(,)?) => {
        $(
            mod $name {
                $crate::for_each_backend!(@pair sqlite, postgres, |backend| {
                    super::$body(backend).await
                });
            }
        )*
    };
}

/// The app form of [`for_each_backend!`] under its former name, kept so that
/// tests written against it still compile.
#[macro_export]
macro_rules! both_backends {
    ($($tests:tt)*) => { $crate::for_each_backend! { $($tests)* } };
}

/// Runs SQL on the test's database (the SQLite file or the PostgreSQL database).
pub async fn sql(app: &TestApp, statement: &str) {
    match app.backend {
        Backend::Sqlite => {
            let path = app.database_url.trim_start_matches("sqlite://").to_owned();
            let statement = statement.to_owned();
            tokio::task::spawn_blocking(move || {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(Duration::from_secs(5)).unwrap();
                c.execute_batch(&statement).unwrap();
            })
            .await
            .unwrap();
        }
        Backend::Postgres => sql_client(app)
            .await
            .batch_execute(statement)
            .await
            .unwrap(),
    }
}

/// The first column of every row `query` returns, read from the test's database.
pub async fn sql_i64s(app: &TestApp, query: &str) -> Vec<i64> {
    match app.backend {
        Backend::Sqlite => {
            let path = app.database_url.trim_start_matches("sqlite://").to_owned();
            let query = query.to_owned();
            tokio::task::spawn_blocking(move || {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(Duration::from_secs(5)).unwrap();
                let mut stmt = c.prepare(&query).unwrap();
                stmt.query_map([], |r| r.get::<_, i64>(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            })
            .await
            .unwrap()
        }
        Backend::Postgres => sql_client(app)
            .await
            .query(query, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect(),
    }
}

async fn sql_client(app: &TestApp) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}
