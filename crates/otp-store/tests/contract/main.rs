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
//! - `conversions`: accepted sends, sends a carrier took, deliveries,
//!   failures and verifications are counted once each, by the transaction
//!   that moved the status, per channel, route, country and operator
//!   prefix, with their latencies; old minutes are purged.
//! - `fallback`: an account's default fallback call is set, read back and
//!   cleared; a send that asks for it gets it from the accepting
//!   transaction, its phone credits reserved in the send's debit, or is
//!   refused whole when it cannot pay for both; a send's own call wins.
//! - `guard`: a key has one open hold however many nodes place it at
//!   once; a hold is extended forward only, released once, and makes way
//!   for a new one when it ended; receipts find where their OTPs went; a
//!   send under an idempotency key is found again.
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
//! - `jobs`: a failed delivery refunds exactly once, a sent one never; a
//!   retry is claimed again when due and never requeues a finished job; a
//!   send reported without ids keeps the ids known; a corrupt stored channel,
//!   status, number or template reads back as an error naming it.
//! - `rules`: an account with approved templates sends only those (whitespace
//!   aside), a refused send writes and charges nothing, templates are
//!   bounded; a claimed job carries its account's senders per route.
//! - `receipts`: a receipt finds its part by every spelling of its id (and
//!   a delivery stamps the OTP's status and delivery time with the
//!   receipt's); a part takes one final receipt; a receipt for an id not recorded yet is
//!   held and lands once the part is recorded; a failure refunds once; a
//!   message of several parts is delivered with its last part; a part whose
//!   OTP is gone takes its receipt as history only.
//! - `routing`: a route's window is its newest finished OTPs, delivered or
//!   not, with the median time to the receipt; an overdue receipt is a
//!   failure, a recent missing one is not counted yet.

mod accounts;
mod admission;
mod conversions;
mod fallback;
mod guard;
mod jobs;
mod receipts;
mod retention;
mod routing;
mod rules;
mod users;
mod webhooks;

use otp_store::test_support::{fresh_pg_database, sample_otp};
use otp_store::{ClaimedJob, JobOutcome, JobResult, SharedStore, StoreOptions};

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
    /// The database's URL, for [`tamper`].
    pub url: String,
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
        url,
        _dir: dir,
    }
}

/// Runs `sql` on the store's database behind the store's back, as a bad
/// disk or a hand edit would (to plant a corrupt row).
pub async fn tamper(store: &Fresh, sql: &str) {
    match store.backend {
        Backend::Sqlite => {
            let path = store.url.strip_prefix("sqlite://").unwrap();
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            conn.execute_batch(sql).unwrap();
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(&store.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client.batch_execute(sql).await.unwrap();
        }
    }
}

/// The text jobs due at `now`, claimed by one node.
pub async fn claim_at(store: &Fresh, now: i64) -> Vec<ClaimedJob> {
    store
        .claim_jobs(otp_store::test_support::text_claim(now))
        .await
        .unwrap()
}

/// An account with 10 SMS credits and one accepted text OTP, its job
/// claimed: (account id, the claimed job).
pub async fn claimed_send(store: &Fresh) -> (i64, ClaimedJob) {
    let account = store.create_account("acme", 10, 0).await.unwrap();
    let accepted = store.accept(sample_otp(account.id)).await.unwrap();
    let mut jobs = claim_at(store, otp_store::now_micros()).await;
    assert_eq!(jobs.len(), 1, "the send's job is claimed");
    let job = jobs.pop().unwrap();
    assert_eq!(job.otp.id, accepted.id);
    (account.id, job)
}

/// Reports `outcome` for `job`, now.
pub async fn finish(store: &Fresh, job: &ClaimedJob, outcome: JobOutcome) {
    store
        .finish_jobs(vec![JobResult {
            job_id: job.job_id,
            otp_id: job.otp.id,
            outcome,
            at: otp_store::now_micros(),
        }])
        .await
        .unwrap();
}

/// `finish` with a send through `route` as `ids`.
pub async fn sent(store: &Fresh, job: &ClaimedJob, route: &str, ids: &[&str]) {
    let outcome = JobOutcome::Sent {
        route: Some(route.into()),
        message_ids: ids.iter().map(|s| s.to_string()).collect(),
    };
    finish(store, job, outcome).await;
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
