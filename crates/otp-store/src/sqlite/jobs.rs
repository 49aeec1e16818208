//! Finishing delivery jobs and refunds for the sqlite backend: in the
//! writer, each result's OTP is read, [`jobs::finish`] decides, and what it
//! decided is written before the next result is read.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{event, map_err, rows, webhooks};
use crate::conversions::{self, Change};
use crate::jobs::{self, Finish, OTP_STATE_COLUMNS, OtpState, Refund};
use crate::rows::Columns;
use crate::{JobResult, OtpStatus, StoreError};

/// Records what happened to claimed jobs, in the writer's transaction.
/// Returns the status changes conversion tracking counts.
pub(super) fn finish_all(
    tx: &Transaction<'_>,
    results: &[JobResult],
) -> Result<Vec<Change>, StoreError> {
    let mut changes = Vec::new();
    for r in results {
        let otp = otp_state(tx, r.otp_id)?;
        let (finish, _) = jobs::finish(otp.as_ref(), r);
        write(tx, &finish)?;
        changes.extend(conversions::from_finish(&finish));
    }
    Ok(changes)
}

fn otp_state_sql() -> &'static str {
    sql_once!("SELECT {OTP_STATE_COLUMNS} FROM otps o WHERE o.id = ?1")
}

fn otp_state_and_pending_sql() -> &'static str {
    sql_once!(
        "SELECT {OTP_STATE_COLUMNS}, (SELECT COUNT(*) FROM provider_messages p \
         WHERE p.otp_id = o.id AND (p.state IS NULL OR p.state <> 'delivered')) \
         FROM otps o WHERE o.id = ?1"
    )
}

/// What finishing a job reads of an OTP (`None`: gone).
fn otp_state(tx: &Transaction<'_>, otp_id: i64) -> Result<Option<OtpState>, StoreError> {
    tx.prepare_cached(otp_state_sql())
        .and_then(|mut s| {
            s.query_row([otp_id], |r| rows::lift(OtpState::from_row(r)))
                .optional()
        })
        .map_err(map_err)
}

/// What applying a receipt reads of an OTP (`None`: gone): its state and
/// how many of its parts are not delivered yet.
pub(super) fn otp_state_and_pending(
    tx: &Transaction<'_>,
    otp_id: i64,
) -> Result<Option<(OtpState, i64)>, StoreError> {
    tx.prepare_cached(otp_state_and_pending_sql())
        .and_then(|mut s| {
            s.query_row([otp_id], |r| {
                rows::lift(
                    OtpState::from_row(r).and_then(|o| Ok((o, r.int(jobs::OTP_STATE_WIDTH)?))),
                )
            })
            .optional()
        })
        .map_err(map_err)
}

/// Writes what finishing one job decided.
fn write(tx: &Transaction<'_>, f: &Finish) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE delivery_jobs SET state = COALESCE(?2, state), last_error = ?3, \
         next_attempt_at = COALESCE(?4, next_attempt_at), updated_at = ?5 WHERE id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            f.job_id,
            f.job_state,
            f.error,
            f.next_attempt_at,
            f.at
        ])
    })
    .map_err(map_err)?;
    tx.prepare_cached(
        "UPDATE otps SET status = COALESCE(?2, status), \
         status_at = CASE WHEN ?2 IS NULL THEN status_at ELSE ?3 END, error = ?4, \
         provider_message_id = COALESCE(?5, provider_message_id), route = COALESCE(?6, route) \
         WHERE id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            f.otp_id,
            f.status.map(OtpStatus::as_str),
            f.at,
            f.error,
            f.provider_message_id,
            f.route
        ])
    })
    .map_err(map_err)?;
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO provider_messages (route, message_id, otp_id, part, parts, \
             id_text, id_hex_decimal, id_decimal_hex) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (route, message_id) DO UPDATE SET otp_id = excluded.otp_id, state = NULL, \
             part = excluded.part, parts = excluded.parts, id_text = excluded.id_text, \
             id_hex_decimal = excluded.id_hex_decimal, id_decimal_hex = excluded.id_decimal_hex",
        )
        .map_err(map_err)?;
    for p in &f.parts {
        insert
            .execute(params![
                p.route,
                p.message_id,
                f.otp_id,
                p.part,
                p.parts,
                p.text,
                p.hex_as_decimal,
                p.decimal_as_hex
            ])
            .map_err(map_err)?;
    }
    event(
        tx,
        f.otp_id,
        f.event,
        f.at,
        f.route.as_deref(),
        Some(&f.detail),
        None,
    )?;
    if let Some(hook) = f.webhook {
        webhooks::enqueue(tx, f.otp_id, hook, f.at)?;
    }
    if let Some(refund) = &f.refund {
        self::refund(tx, refund, f.at)?;
    }
    if let Some(m) = &f.fallback {
        super::fallback::apply_move(tx, m, f.at)?;
    }
    Ok(())
}

/// Gives an OTP's credits back, once (the `refunded` flag decides, in this
/// transaction), with a ledger row.
pub(super) fn refund(
    tx: &Transaction<'_>,
    r: &Refund,
    at: crate::Micros,
) -> Result<(), StoreError> {
    let changed = tx
        .prepare_cached("UPDATE otps SET refunded = 1 WHERE id = ?1 AND refunded = 0")
        .and_then(|mut s| s.execute([r.otp_id]))
        .map_err(map_err)?;
    if changed == 0 {
        return Ok(());
    }
    tx.prepare_cached(
        "UPDATE accounts SET sms_credits = sms_credits + ?2, phone_credits = phone_credits + ?3 \
         WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![r.account_id, r.sms, r.phone]))
    .map_err(map_err)?;
    tx.prepare_cached(
        "INSERT INTO ledger (account_id, kind, sms_delta, phone_delta, otp_id, note, created_at) \
         VALUES (?1, 'refund', ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| s.execute(params![r.account_id, r.sms, r.phone, r.otp_id, r.note, at]))
    .map_err(map_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reads of a finished job and of a receipt, the webhook check
    /// included, search by key and never scan a table.
    #[tokio::test]
    async fn the_state_reads_of_a_finish_and_a_receipt_are_searches_by_key() {
        for sql in [otp_state_sql(), otp_state_and_pending_sql()] {
            let plan = crate::sqlite::query_plan(sql, vec![1.into()]).await;
            assert!(plan.iter().all(|l| !l.starts_with("SCAN")), "{plan:#?}");
            for table in ["o", "w"] {
                let key = format!("SEARCH {table} USING INTEGER PRIMARY KEY");
                assert!(plan.iter().any(|l| l.starts_with(&key)), "{plan:#?}");
            }
        }
    }
}
