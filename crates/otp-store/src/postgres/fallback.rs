//! Channel fallback for the postgres backend. The scan locks the due rows
//! (`FOR UPDATE OF o SKIP LOCKED`: nodes scanning at once take different
//! rows, and a row a verification is writing is left for the next scan,
//! which sees it verified); each move is conditional on the state it leaves,
//! so whichever node or path gets there first moves it, once.

use deadpool_postgres::Transaction;

use super::{Prepared, pg_err, webhooks};
use crate::fallback::{self, DUE_COLUMNS, FallbackScan, Move, Step};
use crate::webhooks::WebhookEvent;
use crate::{Micros, StoreError};

/// Starts the due fallbacks (at most `limit`) or gives their credits back.
pub(super) async fn start_due(
    tx: &Transaction<'_>,
    now: Micros,
    limit: usize,
) -> Result<FallbackScan, StoreError> {
    let rows = tx
        .query_cached(
            sql_once!(
                "SELECT {DUE_COLUMNS} FROM otps o JOIN delivery_jobs j ON j.otp_id = o.id \
                 WHERE {} ORDER BY o.fallback_due_at LIMIT $2 FOR UPDATE OF o SKIP LOCKED",
                fallback::due_filter("$1")
            ),
            &[&now, &(limit as i64)],
        )
        .await
        .map_err(pg_err)?;
    let mut scan = FallbackScan::default();
    for row in &rows {
        let d = crate::rows::fallback_due(row)?;
        match d.step(now) {
            Step::Start { started, detail } => {
                if !apply_move(tx, &started, now).await? {
                    continue;
                }
                tx.execute_cached(
                    "UPDATE delivery_jobs SET channel = 'voice', state = 'queued', attempts = 0, \
                     next_attempt_at = $2, lease_owner = NULL, last_error = NULL, updated_at = $2 \
                     WHERE otp_id = $1",
                    &[&d.id, &now],
                )
                .await
                .map_err(pg_err)?;
                tx.execute_cached(
                    "INSERT INTO otp_events (otp_id, status, at, detail) \
                     VALUES ($1, 'fallback_started', $2, $3)",
                    &[&d.id, &now, &detail],
                )
                .await
                .map_err(pg_err)?;
                webhooks::enqueue(tx, d.id, WebhookEvent::FallbackStarted, now).await?;
                scan.started += 1;
            }
            Step::Refund(m) => {
                if apply_move(tx, &m, now).await? {
                    scan.refunded += 1;
                }
            }
        }
    }
    Ok(scan)
}

/// Moves a fallback if it is still where the move starts; gives its credits
/// back and records the event when the move says so. Returns whether it moved.
pub(super) async fn apply_move(
    tx: &Transaction<'_>,
    m: &Move,
    at: Micros,
) -> Result<bool, StoreError> {
    let changed = tx
        .execute_cached(
            "UPDATE otps SET fallback_state = $3, fallback_at = $4 \
             WHERE id = $1 AND fallback_state = $2",
            &[&m.otp_id, &m.from.as_str(), &m.to.as_str(), &at],
        )
        .await
        .map_err(pg_err)?;
    if changed == 0 {
        return Ok(false);
    }
    if m.phone != 0 {
        tx.execute_cached(
            "UPDATE accounts SET phone_credits = phone_credits + $2 WHERE id = $1",
            &[&m.account_id, &m.phone],
        )
        .await
        .map_err(pg_err)?;
        tx.execute_cached(
            "INSERT INTO ledger (account_id, kind, sms_delta, phone_delta, otp_id, note, created_at) \
             VALUES ($1, 'refund', 0, $2, $3, $4, $5)",
            &[&m.account_id, &m.phone, &m.otp_id, &m.note, &at],
        )
        .await
        .map_err(pg_err)?;
    }
    if let Some(status) = m.event() {
        tx.execute_cached(
            "INSERT INTO otp_events (otp_id, status, at, detail) VALUES ($1, $2, $3, $4)",
            &[&m.otp_id, &status, &at, &m.note],
        )
        .await
        .map_err(pg_err)?;
    }
    Ok(true)
}

/// A verification of the chain whose first record is `head` (locked by the
/// verifying transaction): its pending fallbacks are not needed any more.
pub(super) async fn cancel_pending(
    tx: &Transaction<'_>,
    head: i64,
    at: Micros,
) -> Result<(), StoreError> {
    let rows = tx
        .query_cached(
            "SELECT id, account_id, fallback_credits FROM otps \
             WHERE (id = $1 OR resend_of = $1) AND fallback_state = 'pending' \
             ORDER BY id FOR UPDATE",
            &[&head],
        )
        .await
        .map_err(pg_err)?;
    for r in &rows {
        let m = fallback::cancelled_by_verification(r.get(0), r.get(1), r.get(2));
        apply_move(tx, &m, at).await?;
    }
    Ok(())
}
