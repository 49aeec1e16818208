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
//! Implemented for both backends in `sqlite/retention.rs` and
//! `postgres/retention.rs`.

use crate::{Micros, StoreError};

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

    #[test]
    fn a_missing_number_does_not_stop_the_run() {
        let run = purgeable_run(&[c(1, true), c(3, true)]);
        assert_eq!((run.ids, run.through), (vec![10, 30], 3));
    }
}
