//! Channel fallback for the sqlite backend: the scan, the moves and the
//! verification's cancel, all in the writer's transaction (which is the row
//! lock: nothing else writes between the read and the write).

use rusqlite::{Transaction, params};

use super::{event, map_err, rows, webhooks};
use crate::fallback::{self, DUE_COLUMNS, Due, FallbackScan, Move, Step};
use crate::webhooks::WebhookEvent;
use crate::{Micros, StoreError};

/// Starts the due fallbacks (at most `limit`) or gives their credits back.
pub(super) fn start_due(
    tx: &Transaction<'_>,
    now: Micros,
    limit: usize,
) -> Result<FallbackScan, StoreError> {
    let due: Vec<Due> = {
        let mut s = tx
            .prepare_cached(&format!(
                "SELECT {DUE_COLUMNS} FROM otps o JOIN delivery_jobs j ON j.otp_id = o.id \
                 WHERE {} ORDER BY o.fallback_due_at LIMIT ?2",
                fallback::due_filter("?1")
            ))
            .map_err(map_err)?;
        let rows = s
            .query_map(params![now, limit as i64], |r| {
                rows::lift(crate::rows::fallback_due(r))
            })
            .map_err(map_err)?;
        rows.collect::<Result<_, _>>().map_err(map_err)?
    };
    let mut scan = FallbackScan::default();
    for d in due {
        match d.step(now) {
            Step::Start { started, detail } => {
                if !apply_move(tx, &started, now)? {
                    continue;
                }
                tx.prepare_cached(
                    "UPDATE delivery_jobs SET channel = 'voice', state = 'queued', attempts = 0, \
                     next_attempt_at = ?2, lease_owner = NULL, last_error = NULL, updated_at = ?2 \
                     WHERE otp_id = ?1",
                )
                .and_then(|mut s| s.execute(params![d.id, now]))
                .map_err(map_err)?;
                event(tx, d.id, "fallback_started", now, None, Some(&detail), None)?;
                webhooks::enqueue(tx, d.id, WebhookEvent::FallbackStarted, now)?;
                scan.started += 1;
            }
            Step::Refund(m) => {
                if apply_move(tx, &m, now)? {
                    scan.refunded += 1;
                }
            }
        }
    }
    Ok(scan)
}

/// Moves a fallback if it is still where the move starts; gives its credits
/// back and records the event when the move says so. Returns whether it moved.
pub(super) fn apply_move(tx: &Transaction<'_>, m: &Move, at: Micros) -> Result<bool, StoreError> {
    let changed = tx
        .prepare_cached(
            "UPDATE otps SET fallback_state = ?3, fallback_at = ?4 \
             WHERE id = ?1 AND fallback_state = ?2",
        )
        .and_then(|mut s| s.execute(params![m.otp_id, m.from.as_str(), m.to.as_str(), at]))
        .map_err(map_err)?;
    if changed == 0 {
        return Ok(false);
    }
    if m.phone != 0 {
        tx.prepare_cached("UPDATE accounts SET phone_credits = phone_credits + ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![m.account_id, m.phone]))
            .map_err(map_err)?;
        tx.prepare_cached(
            "INSERT INTO ledger (account_id, kind, sms_delta, phone_delta, otp_id, note, created_at) \
             VALUES (?1, 'refund', 0, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![m.account_id, m.phone, m.otp_id, m.note, at]))
        .map_err(map_err)?;
    }
    if let Some(status) = m.event() {
        event(tx, m.otp_id, status, at, None, Some(&m.note), None)?;
    }
    Ok(true)
}

/// A verification of the chain whose first record is `head`: its pending
/// fallbacks are not needed any more.
pub(super) fn cancel_pending(
    tx: &Transaction<'_>,
    head: i64,
    at: Micros,
) -> Result<(), StoreError> {
    let pending: Vec<(i64, i64, i64)> = {
        let mut s = tx
            .prepare_cached(
                "SELECT id, account_id, fallback_credits FROM otps \
                 WHERE (id = ?1 OR resend_of = ?1) AND fallback_state = 'pending'",
            )
            .map_err(map_err)?;
        let rows = s
            .query_map([head], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(map_err)?;
        rows.collect::<Result<_, _>>().map_err(map_err)?
    };
    for (id, account, credits) in pending {
        apply_move(
            tx,
            &fallback::cancelled_by_verification(id, account, credits),
            at,
        )?;
    }
    Ok(())
}
