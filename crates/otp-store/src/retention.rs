//! Data lifecycle: removing what is past its retention, and nothing live.
//!
//! [`RetentionStore::purge_expired_rows`] removes, in chunks of at most
//! [`RetentionRules::chunk`] rows per transaction:
//!
//! - **OTPs** whose last status change (`status_at`) is older than
//!   [`RetentionRules::otps_before`], each with its delivery job, status events,
//!   carrier message ids, webhook deliveries and their attempts, and its
//!   idempotency record, all in the transaction that removes the OTP. An OTP is
//!   *live*, and kept whatever its age, while its code can still be verified
//!   (`expires_at` not passed), its delivery job is still queued or leased, a
//!   webhook event of it is still pending (being retried), or its `expired`
//!   event has yet to be emitted by the expiry sweep.
//! - **Idempotency records** older than [`RetentionRules::idempotency_before`].
//! - **Login attempt counters** whose window ended at
//!   [`RetentionRules::login_windows_ended`] (a login also drops them as it
//!   counts, but an idle gateway would keep them).
//! - **Pumping-guard holds** that ended (and, if released, were released)
//!   before [`RetentionRules::otps_before`]: a hold is kept as long as the
//!   OTPs it judged, and for ever when OTPs are.
//!
//! Each account's OTPs go oldest first (by `account_seq`), and the purge stops
//! at the first one that must stay ([`purgeable_run`]): the account's
//! `otp_purged_through` records how far it got, so the OTPs left are exactly
//! `otp_purged_through + 1 ..= otp_count`, the list's count is their number and
//! its offsets still map to index bounds. An old OTP behind a live one waits for
//! it. The ledger is never touched: its rows keep the `otp_id` of a purged OTP,
//! and balances (kept on the account row) do not change.
//!
//! On PostgreSQL several nodes purge at once without doing the same work: an
//! account's chunk is taken under a transaction-level advisory lock that other
//! nodes skip (`pg_try_advisory_xact_lock`), and the idempotency and login rows
//! are claimed with `FOR UPDATE SKIP LOCKED`. The OTP rows of a chunk are locked
//! (`FOR UPDATE`) before they are judged, so a receipt or a verification that
//! changes one either lands before (and the OTP is judged on it) or after the
//! delete (and finds nothing). On SQLite each chunk is one write of the writer.
//!
//! The purge's order and when it stops (`purge`, over the steps of
//! `PurgeSteps`), what else goes and when (`RetentionRules::sweeps`) and
//! which OTPs of a chunk go (`purgeable_run`) are decided here; each backend,
//! in `sqlite/retention.rs` and `postgres/retention.rs`, only runs the SQL of
//! the steps.

use crate::{AccountId, Micros, StoreError};

/// What to purge, decided by the caller from its settings and the clock.
#[derive(Debug, Clone, Copy)]
pub struct RetentionRules {
    /// Now: codes expiring after it are live.
    pub now: Micros,
    /// OTPs whose last status change is before this go (`None`: OTPs are kept).
    pub otps_before: Option<Micros>,
    /// Idempotency records created before this go.
    pub idempotency_before: Micros,
    /// Login counters whose window started at or before this go.
    pub login_windows_ended: Micros,
    /// Most OTPs (or other rows) removed per transaction.
    pub chunk: usize,
}

/// What one purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// OTPs removed (each with its job, events, carrier ids and webhook rows).
    pub otps: u64,
    /// Idempotency records removed.
    pub idempotency: u64,
    /// Login attempt counters removed.
    pub login_counters: u64,
    /// Ended pumping-guard holds removed.
    pub guard_holds: u64,
}

impl PurgeReport {
    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        *self == PurgeReport::default()
    }
}

/// The store's side of the data lifecycle.
#[async_trait::async_trait]
pub trait RetentionStore {
    /// Removes what `rules` names, chunk by chunk (see the module docs), and
    /// says how much went. An error stops the purge; the chunks committed
    /// before it stay purged.
    async fn purge_expired_rows(&self, rules: RetentionRules) -> Result<PurgeReport, StoreError>;
}

impl RetentionRules {
    /// Rows per transaction: at least one, so a purge always moves.
    pub(crate) fn chunk_rows(&self) -> i64 {
        self.chunk.max(1) as i64
    }

    /// The rows other than OTPs that go, in the order they are removed.
    pub(crate) fn sweeps(&self) -> Vec<Sweep> {
        let [attempts, throttle] = crate::users::LOGIN_COUNTER_TABLES;
        let login = |table| Sweep {
            table,
            column: "window_start",
            comparison: "<=",
            also: "",
            bound: self.login_windows_ended,
            counted_as: Swept::LoginCounter,
        };
        let mut sweeps = vec![
            Sweep {
                table: "idempotency",
                column: "created_at",
                comparison: "<",
                also: "",
                bound: self.idempotency_before,
                counted_as: Swept::Idempotency,
            },
            login(attempts),
            login(throttle),
        ];
        if let Some(bound) = self.otps_before {
            sweeps.push(Sweep {
                table: "guard_holds",
                column: "until_at",
                comparison: "<",
                also: " AND COALESCE(released_at, 0) < {bound}",
                bound,
                counted_as: Swept::GuardHold,
            });
        }
        sweeps
    }
}

/// Which count of the [`PurgeReport`] a swept row adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Swept {
    Idempotency,
    LoginCounter,
    GuardHold,
}

/// Rows of one table that go when a column is before a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sweep {
    pub table: &'static str,
    pub column: &'static str,
    /// `<` or `<=`: whether a row right at the bound goes too.
    pub comparison: &'static str,
    /// More of the filter (SQL), `{bound}` standing for the bound.
    pub also: &'static str,
    pub bound: Micros,
    pub counted_as: Swept,
}

impl Sweep {
    /// The filter (SQL) of the rows that go, `param` standing for the bound.
    pub(crate) fn filter(&self, param: &str) -> String {
        format!(
            "{} {} {param}{}",
            self.column,
            self.comparison,
            self.also.replace("{bound}", param)
        )
    }
}

impl PurgeReport {
    fn add(&mut self, swept: Swept, rows: u64) {
        match swept {
            Swept::Idempotency => self.idempotency += rows,
            Swept::LoginCounter => self.login_counters += rows,
            Swept::GuardHold => self.guard_holds += rows,
        }
    }
}

/// What a backend runs for a purge; [`purge`] decides the order and when
/// to stop.
#[async_trait::async_trait]
pub(crate) trait PurgeSteps: Sync {
    /// Removes up to `chunk` rows of `sweep` in one transaction, skipping
    /// rows another node is removing; how many went.
    async fn sweep_chunk(&self, sweep: &Sweep, chunk: i64) -> Result<u64, StoreError>;
    /// The accounts whose oldest OTP left changed status before `cutoff`
    /// ([`due_accounts_sql`]).
    async fn due_accounts(&self, cutoff: Micros) -> Result<Vec<AccountId>, StoreError>;
    /// One chunk of one account, in one transaction: its oldest OTPs (at
    /// most `chunk`) judged with [`live_sql`], the [`purgeable_run`] removed
    /// with everything hanging off it and the account's mark moved. How
    /// many OTPs went; `None` when another node holds the account's chunk.
    async fn purge_chunk(
        &self,
        account: AccountId,
        cutoff: Micros,
        now: Micros,
        chunk: i64,
    ) -> Result<Option<u64>, StoreError>;
}

/// The purge both backends run: each sweep chunk by chunk, then each due
/// account's OTPs chunk by chunk. A chunk that comes back short is the last
/// of its table or account; an account another node holds is left to it.
pub(crate) async fn purge<S: PurgeSteps + ?Sized>(
    steps: &S,
    rules: RetentionRules,
) -> Result<PurgeReport, StoreError> {
    let chunk = rules.chunk_rows();
    let full = |n: u64| n >= chunk as u64;
    let mut report = PurgeReport::default();
    for sweep in rules.sweeps() {
        loop {
            let n = steps.sweep_chunk(&sweep, chunk).await?;
            report.add(sweep.counted_as, n);
            if !full(n) {
                break;
            }
        }
    }
    let Some(cutoff) = rules.otps_before else {
        return Ok(report);
    };
    for account in steps.due_accounts(cutoff).await? {
        while let Some(n) = steps.purge_chunk(account, cutoff, rules.now, chunk).await? {
            report.otps += n;
            if !full(n) {
                break;
            }
        }
    }
    Ok(report)
}

/// One of an account's oldest OTPs, as the purge judges it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub id: i64,
    pub account_seq: i64,
    pub created_at: Micros,
    /// Past retention and nothing live about it.
    pub purgeable: bool,
}

/// The OTPs of one chunk to remove: the run of `candidates` (oldest first)
/// before the first one that must stay.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PurgeRun {
    pub ids: Vec<i64>,
    /// The account's new `otp_purged_through`: the last removed `account_seq`.
    pub through: i64,
    /// The newest `created_at` among them (their idempotency records are no
    /// newer).
    pub newest_created_at: Micros,
}

/// The decision of one chunk: from the oldest, every candidate up to the first
/// that is not purgeable. A number missing between two candidates has no row
/// to keep, so it does not stop the run.
pub(crate) fn purgeable_run(candidates: &[Candidate]) -> PurgeRun {
    let mut run = PurgeRun::default();
    for c in candidates.iter().take_while(|c| c.purgeable) {
        run.ids.push(c.id);
        run.through = c.account_seq;
        run.newest_created_at = run.newest_created_at.max(c.created_at);
    }
    run
}

/// The accounts whose oldest OTP left changed status before `cutoff` (a
/// parameter): the only ones a purge pass looks at, one index search each.
pub(crate) fn due_accounts_sql(cutoff: &str) -> String {
    format!(
        "SELECT a.id FROM accounts a WHERE a.otp_count > a.otp_purged_through \
         AND (SELECT o.status_at FROM otps o WHERE o.account_id = a.id \
              AND o.account_seq > a.otp_purged_through ORDER BY o.account_seq LIMIT 1) < {cutoff} \
         ORDER BY a.id"
    )
}

/// The condition (SQL, both backends) under which the OTP `o` must stay:
/// changed recently, still verifiable, queued for delivery, with a webhook
/// event pending, or with its `expired` event not yet swept out. Parameters:
/// `{cutoff}` is the retention bound, `{now}` the clock.
pub(crate) fn live_sql(cutoff: &str, now: &str) -> String {
    format!(
        "(o.status_at >= {cutoff} OR o.expires_at > {now} \
         OR EXISTS (SELECT 1 FROM delivery_jobs j WHERE j.otp_id = o.id AND j.state = 'queued') \
         OR EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.otp_id = o.id AND d.state = 'pending') \
         OR (o.verified_at IS NULL AND EXISTS (SELECT 1 FROM webhooks w \
             WHERE w.account_id = o.account_id AND w.expired_swept_until < o.expires_at)))"
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    fn c(seq: i64, purgeable: bool) -> Candidate {
        Candidate {
            id: seq * 10,
            account_seq: seq,
            created_at: seq * 1000,
            purgeable,
        }
    }

    #[test]
    fn the_run_stops_at_the_first_otp_that_must_stay() {
        let run = purgeable_run(&[c(3, true), c(4, true), c(5, false), c(6, true)]);
        assert_eq!(
            run,
            PurgeRun {
                ids: vec![30, 40],
                through: 4,
                newest_created_at: 4000
            }
        );
    }

    #[test]
    fn a_live_oldest_otp_holds_the_whole_account_back() {
        assert_eq!(
            purgeable_run(&[c(1, false), c(2, true)]),
            PurgeRun::default()
        );
        assert_eq!(purgeable_run(&[]), PurgeRun::default());
    }

    /// A store of row counts: each sweep has rows left per table, and each
    /// account scripted answers to its chunks.
    struct Fake {
        rows: Mutex<HashMap<&'static str, u64>>,
        due: Vec<AccountId>,
        chunks: Mutex<HashMap<AccountId, Vec<Option<u64>>>>,
        calls: Mutex<Vec<String>>,
    }

    impl Fake {
        fn new(rows: &[(&'static str, u64)], chunks: &[(AccountId, &[Option<u64>])]) -> Fake {
            Fake {
                rows: Mutex::new(rows.iter().copied().collect()),
                due: chunks.iter().map(|(a, _)| *a).collect(),
                chunks: Mutex::new(chunks.iter().map(|(a, c)| (*a, c.to_vec())).collect()),
                calls: Mutex::new(Vec::new()),
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait::async_trait]
    impl PurgeSteps for Fake {
        async fn sweep_chunk(&self, sweep: &Sweep, chunk: i64) -> Result<u64, StoreError> {
            let mut rows = self.rows.lock().unwrap();
            let left = rows.entry(sweep.table).or_default();
            let n = (*left).min(chunk as u64);
            *left -= n;
            self.calls
                .lock()
                .unwrap()
                .push(format!("{} {n}", sweep.table));
            Ok(n)
        }

        async fn due_accounts(&self, _cutoff: Micros) -> Result<Vec<AccountId>, StoreError> {
            Ok(self.due.clone())
        }

        async fn purge_chunk(
            &self,
            account: AccountId,
            _cutoff: Micros,
            _now: Micros,
            _chunk: i64,
        ) -> Result<Option<u64>, StoreError> {
            let mut chunks = self.chunks.lock().unwrap();
            let script = chunks.get_mut(&account).unwrap();
            let answer = if script.is_empty() {
                Some(0)
            } else {
                script.remove(0)
            };
            self.calls
                .lock()
                .unwrap()
                .push(format!("account {account} {answer:?}"));
            Ok(answer)
        }
    }

    fn rules(chunk: usize, otps_before: Option<Micros>) -> RetentionRules {
        RetentionRules {
            now: 1_000,
            otps_before,
            idempotency_before: 500,
            login_windows_ended: 400,
            chunk,
        }
    }

    #[tokio::test]
    async fn each_table_goes_chunk_by_chunk_until_a_chunk_comes_back_short() {
        let fake = Fake::new(
            &[
                ("idempotency", 5),
                ("login_attempts", 4),
                ("login_throttle", 1),
            ],
            &[],
        );
        let report = purge(&fake, rules(2, None)).await.unwrap();
        assert_eq!(
            report,
            PurgeReport {
                otps: 0,
                idempotency: 5,
                login_counters: 5,
                guard_holds: 0
            }
        );
        assert_eq!(
            fake.calls(),
            [
                "idempotency 2",
                "idempotency 2",
                "idempotency 1",
                "login_attempts 2",
                "login_attempts 2",
                "login_attempts 0",
                "login_throttle 1"
            ]
        );
    }

    #[tokio::test]
    async fn a_chunk_of_zero_rows_is_taken_as_one() {
        let fake = Fake::new(&[("idempotency", 2)], &[]);
        purge(&fake, rules(0, None)).await.unwrap();
        assert_eq!(
            fake.calls()[..3],
            ["idempotency 1", "idempotency 1", "idempotency 0"]
        );
    }

    #[tokio::test]
    async fn without_an_otp_cutoff_no_account_is_looked_at() {
        let fake = Fake::new(&[], &[(7, &[Some(2)])]);
        let report = purge(&fake, rules(2, None)).await.unwrap();
        assert!(report.is_empty());
        assert!(!fake.calls().iter().any(|c| c.starts_with("account")));
    }

    #[tokio::test]
    async fn an_account_goes_on_while_its_chunks_are_full_and_one_held_elsewhere_is_left() {
        let fake = Fake::new(
            &[],
            &[
                (7, &[Some(2), Some(2), Some(1), Some(2)]),
                (8, &[None, Some(2)]),
            ],
        );
        let report = purge(&fake, rules(2, Some(900))).await.unwrap();
        assert_eq!(report.otps, 5);
        let accounts: Vec<String> = fake
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("account"))
            .collect();
        assert_eq!(
            accounts,
            [
                "account 7 Some(2)",
                "account 7 Some(2)",
                "account 7 Some(1)",
                "account 8 None"
            ]
        );
    }

    #[test]
    fn idempotency_records_go_strictly_before_their_bound_and_login_windows_at_it() {
        let filters: Vec<(&str, String, Micros)> = rules(10, None)
            .sweeps()
            .iter()
            .map(|s| (s.table, s.filter("?1"), s.bound))
            .collect();
        assert_eq!(
            filters,
            [
                ("idempotency", "created_at < ?1".to_owned(), 500),
                ("login_attempts", "window_start <= ?1".to_owned(), 400),
                ("login_throttle", "window_start <= ?1".to_owned(), 400),
            ]
        );
    }

    #[test]
    fn ended_guard_holds_go_with_the_otps_and_stay_when_otps_do() {
        let with_otps = rules(10, Some(300));
        let holds: Vec<(&str, String, Micros)> = with_otps
            .sweeps()
            .iter()
            .filter(|s| s.table == "guard_holds")
            .map(|s| (s.table, s.filter("$1"), s.bound))
            .collect();
        assert_eq!(
            holds,
            [(
                "guard_holds",
                "until_at < $1 AND COALESCE(released_at, 0) < $1".to_owned(),
                300
            )]
        );
        assert!(
            rules(10, None)
                .sweeps()
                .iter()
                .all(|s| s.table != "guard_holds")
        );
    }

    #[test]
    fn a_missing_number_does_not_stop_the_run() {
        let run = purgeable_run(&[c(1, true), c(3, true)]);
        assert_eq!((run.ids, run.through), (vec![10, 30], 3));
    }
}
