//! Finishing delivery jobs and refunds for the postgres backend: the
//! results' OTPs are locked and read (`FOR NO KEY UPDATE`, in id order: the
//! lock an UPDATE takes, so inserts of rows naming the OTP do not wait),
//! [`jobs::finish`] decides each result on the state the ones before it
//! left, and the batch is written with a few `UNNEST` statements.

use std::collections::HashMap;

use deadpool_postgres::Transaction;

use super::{Prepared, pg_err, webhooks};
use crate::conversions::{self, Change};
use crate::jobs::{self, Finish, OTP_STATE_COLUMNS, OtpState, Refund};
use crate::rows::Columns;
use crate::{JobResult, Micros, OtpStatus, StoreError};

/// Records what happened to claimed jobs, in `tx`; returns the status
/// changes conversion tracking counts.
pub(super) async fn finish_all(
    tx: &Transaction<'_>,
    results: &[JobResult],
) -> Result<Vec<Change>, StoreError> {
    let mut ids: Vec<i64> = results.iter().map(|r| r.otp_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = tx
        .query_cached(
            sql_once!(
                "SELECT {OTP_STATE_COLUMNS} FROM otps o \
                 WHERE o.id = ANY($1) ORDER BY o.id FOR NO KEY UPDATE OF o"
            ),
            &[&ids],
        )
        .await
        .map_err(pg_err)?;
    let mut states = HashMap::with_capacity(rows.len());
    for r in &rows {
        let s = OtpState::from_row(r)?;
        states.insert(s.id, s);
    }
    let mut plan = Vec::with_capacity(results.len());
    for r in results {
        let (finish, next) = jobs::finish(states.get(&r.otp_id), r);
        if let Some(next) = next {
            states.insert(r.otp_id, next);
        }
        plan.push(finish);
    }
    write(tx, &plan).await?;
    Ok(plan.iter().filter_map(conversions::from_finish).collect())
}

/// What applying a receipt reads of an OTP (locked; `None`: gone) and how
/// many of its parts are not delivered yet.
pub(super) async fn otp_state_and_pending(
    tx: &Transaction<'_>,
    otp_id: i64,
) -> Result<Option<(OtpState, i64)>, StoreError> {
    let Some(row) = tx
        .query_opt_cached(
            sql_once!(
                "SELECT {OTP_STATE_COLUMNS}, (SELECT COUNT(*) FROM provider_messages p \
                 WHERE p.otp_id = o.id AND (p.state IS NULL OR p.state <> 'delivered')) \
                 FROM otps o WHERE o.id = $1 FOR NO KEY UPDATE OF o"
            ),
            &[&otp_id],
        )
        .await
        .map_err(pg_err)?
    else {
        return Ok(None);
    };
    Ok(Some((
        OtpState::from_row(&row)?,
        row.int(jobs::OTP_STATE_WIDTH)?,
    )))
}

/// Records how each job of a batch ended: ids, new states (NULL keeps it),
/// errors, next attempts (NULL keeps it), times.
pub(super) const FINISH_JOBS: &str = "UPDATE delivery_jobs j SET state = COALESCE(u.state, j.state), \
         last_error = u.err, next_attempt_at = COALESCE(u.next, j.next_attempt_at), updated_at = u.at \
     FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int8[], $5::int8[]) \
         AS u(id, state, err, next, at) WHERE j.id = u.id";

/// Writes what finishing the batch decided.
async fn write(tx: &Transaction<'_>, plan: &[Finish]) -> Result<(), StoreError> {
    let jobs: Vec<i64> = plan.iter().map(|f| f.job_id).collect();
    let otp_ids: Vec<i64> = plan.iter().map(|f| f.otp_id).collect();
    let ats: Vec<Micros> = plan.iter().map(|f| f.at).collect();
    let states: Vec<Option<&str>> = plan.iter().map(|f| f.job_state).collect();
    let errors: Vec<Option<&str>> = plan.iter().map(|f| f.error.as_deref()).collect();
    let nexts: Vec<Option<Micros>> = plan.iter().map(|f| f.next_attempt_at).collect();
    let statuses: Vec<Option<&str>> = plan
        .iter()
        .map(|f| f.status.map(OtpStatus::as_str))
        .collect();
    let providers: Vec<Option<&str>> = plan
        .iter()
        .map(|f| f.provider_message_id.as_deref())
        .collect();
    let routes: Vec<Option<&str>> = plan.iter().map(|f| f.route.as_deref()).collect();
    let events: Vec<&str> = plan.iter().map(|f| f.event).collect();
    let details: Vec<&str> = plan.iter().map(|f| f.detail.as_str()).collect();
    tx.execute_cached(FINISH_JOBS, &[&jobs, &states, &errors, &nexts, &ats])
        .await
        .map_err(pg_err)?;
    tx.execute_cached(
        "UPDATE otps o SET status = COALESCE(u.status, o.status), \
             status_at = CASE WHEN u.status IS NULL THEN o.status_at ELSE u.at END, \
             error = u.err, \
             provider_message_id = COALESCE(u.provider, o.provider_message_id), \
             route = COALESCE(u.route, o.route) \
         FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[]) \
             AS u(id, status, err, provider, route, at) WHERE o.id = u.id",
        &[&otp_ids, &statuses, &errors, &providers, &routes, &ats],
    )
    .await
    .map_err(pg_err)?;
    tx.execute_cached(
        "INSERT INTO otp_events (otp_id, status, at, route, detail) \
         SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::text[], $5::text[])",
        &[&otp_ids, &events, &ats, &routes, &details],
    )
    .await
    .map_err(pg_err)?;
    webhooks::enqueue_jobs(tx, plan).await?;
    let all: Vec<(i64, &jobs::Part)> = plan
        .iter()
        .flat_map(|f| f.parts.iter().map(move |p| (f.otp_id, p)))
        .collect();
    // One statement may not update a row twice: of an id given twice in the
    // batch, only the later part is written, which takes the id over as the
    // later insert does on SQLite.
    let mut last = std::collections::HashMap::new();
    for (i, (_, p)) in all.iter().enumerate() {
        last.insert((p.route.as_str(), p.message_id.as_str()), i);
    }
    let parts: Vec<(i64, &jobs::Part)> = all
        .iter()
        .enumerate()
        .filter(|(i, (_, p))| last[&(p.route.as_str(), p.message_id.as_str())] == *i)
        .map(|(_, part)| *part)
        .collect();
    if !parts.is_empty() {
        let col = |get: fn(&jobs::Part) -> Option<&str>| -> Vec<Option<&str>> {
            parts.iter().map(|(_, p)| get(p)).collect()
        };
        let pm_otps: Vec<i64> = parts.iter().map(|(otp, _)| *otp).collect();
        let pm_parts: Vec<i64> = parts.iter().map(|(_, p)| p.part).collect();
        let pm_totals: Vec<i64> = parts.iter().map(|(_, p)| p.parts).collect();
        tx.execute_cached(
            "INSERT INTO provider_messages (route, message_id, otp_id, part, parts, \
                 id_text, id_hex_decimal, id_decimal_hex) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], \
                 $6::text[], $7::text[], $8::text[]) \
             ON CONFLICT (route, message_id) DO UPDATE SET otp_id = excluded.otp_id, state = NULL, \
             part = excluded.part, parts = excluded.parts, id_text = excluded.id_text, \
             id_hex_decimal = excluded.id_hex_decimal, id_decimal_hex = excluded.id_decimal_hex",
            &[
                &col(|p| Some(p.route.as_str())),
                &col(|p| Some(p.message_id.as_str())),
                &pm_otps,
                &pm_parts,
                &pm_totals,
                &col(|p| Some(p.text.as_str())),
                &col(|p| p.hex_as_decimal.as_deref()),
                &col(|p| p.decimal_as_hex.as_deref()),
            ],
        )
        .await
        .map_err(pg_err)?;
    }
    for f in plan {
        if let Some(r) = &f.refund {
            refund(tx, r, f.at).await?;
        }
        if let Some(m) = &f.fallback {
            super::fallback::apply_move(tx, m, f.at).await?;
        }
    }
    Ok(())
}

/// Gives an OTP's credits back, once (the `refunded` flag decides, under the
/// OTP's lock), with a ledger row.
pub(super) async fn refund(tx: &Transaction<'_>, r: &Refund, at: Micros) -> Result<(), StoreError> {
    let changed = tx
        .execute_cached(
            "UPDATE otps SET refunded = 1 WHERE id = $1 AND refunded = 0",
            &[&r.otp_id],
        )
        .await
        .map_err(pg_err)?;
    if changed == 0 {
        return Ok(());
    }
    tx.execute_cached(
        "UPDATE accounts SET sms_credits = sms_credits + $2, phone_credits = phone_credits + $3 \
         WHERE id = $1",
        &[&r.account_id, &r.sms, &r.phone],
    )
    .await
    .map_err(pg_err)?;
    tx.execute_cached(
        "INSERT INTO ledger (account_id, kind, sms_delta, phone_delta, otp_id, note, created_at) \
         VALUES ($1, 'refund', $2, $3, $4, $5, $6)",
        &[&r.account_id, &r.sms, &r.phone, &r.otp_id, &r.note, &at],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}
