//! The store's contract: every rule the gateway relies on, run against both
//! backends through the [`Store`](otp_store::Store) trait alone, on a real
//! SQLite file and a fresh database on the real PostgreSQL server
//! (`OTPGATE_TEST_PG_URL`; a missing server fails the test, it never skips).
//!
//! A rule is written once in the store (a pure decision both backends run
//! their SQL around); these tests are what keeps the two backends' SQL
//! saying the same thing. Each module names the rules it covers:
//!
//! - `accounts`: an account starts with the credits it was given; top-ups
//!   add to the balance and to the ledger.
//! - `admission`: which sends are accepted: credits never go below zero
//!   under concurrent sends, an idempotency key replays its first send
//!   across and within batches and refuses another body, the per-number,
//!   per-key and per-account limits and the daily spend cap, a stale resend
//!   refused, a `low_balance` event once per fall.
//! - `users`: login attempts are counted per email, per client address and
//!   over the gateway, each locked until its window ends; a new password ends
//!   sessions and forgets attempts; a login past the session limit revokes
//!   the oldest; a user has one key, its copy sealed.
//! - `webhooks`: a webhook's secret and thresholds as set; removing it
//!   cancels what is pending; an attempt retries, delivers or gives up a
//!   delivery; claims keep to the per-account bound; the expiry sweep and a
//!   balance falling below its threshold each record their event once.
//! - `retention`: idempotency records and ended login windows go chunk by
//!   chunk; OTPs past retention go oldest first up to the first that must
//!   stay, leaving balances and the ledger alone.

mod accounts;
mod admission;
mod retention;
mod users;
mod webhooks;

use otp_store::{SharedStore, StoreOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store on a fresh database of `backend`, and what must live as long as
/// it (the SQLite file's directory).
pub struct Fresh {
    pub store: SharedStore,
    pub backend: Backend,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Fresh {
    type Target = SharedStore;
    fn deref(&self) -> &SharedStore {
        &self.store
    }
}

pub async fn fresh(backend: Backend) -> Fresh {
    fresh_with(backend, StoreOptions::default()).await
}

pub async fn fresh_with(backend: Backend, options: StoreOptions) -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("contract.db").display()),
        Backend::Postgres => fresh_pg_database().await,
    };
    let store = otp_store::open(&url, &options)
        .await
        .unwrap_or_else(|e| panic!("opening {backend:?} store: {e}"));
    Fresh {
        store,
        backend,
        _dir: dir,
    }
}

async fn fresh_pg_database() -> String {
    let admin = std::env::var("OTPGATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL for the tests is not reachable at {admin}: {e}. \
                 Run scripts/test.sh (it starts it) or set OTPGATE_TEST_PG_URL."
            )
        });
    tokio::spawn(conn);
    let name = format!("otpgate_c_{}", unique());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating a test database");
    let (server, _) = admin
        .rsplit_once('/')
        .expect("OTPGATE_TEST_PG_URL must end with /DATABASE");
    format!("{server}/{name}")
}

/// A name no other test of any process takes: the process id, the time and a
/// counter.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Each `async fn NAME(store: Fresh) { ... }` becomes two tests,
/// `NAME::sqlite` and `NAME::postgres`, each on a fresh store.
#[macro_export]
macro_rules! contract {
    ($(async fn $name:ident($store:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let $store = $crate::fresh($crate::Backend::Sqlite).await;
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let $store = $crate::fresh($crate::Backend::Postgres).await;
                    $body
                }
            }
        )*
    };
}
