//! [`ReceiptStore`] for the postgres backend: one statement looks up a whole
//! batch of receipts. And receipts applied around [`receipt_part`] and
//! [`receipt_step`], the parts and then the OTP locked (`FOR NO KEY UPDATE`).

use deadpool_postgres::Transaction;
use smpp::receipt::ids::IdLookup;

use super::jobs::{otp_state_and_pending, refund};
use super::{PgStore, Prepared, pg_err, webhooks};
use crate::conversions::{self, Change};
use crate::jobs::Refund;
use crate::receipts::{
    MAX_CANDIDATES, PART_COLUMNS, ReceiptStore, RecordedPart, UNMATCHED_KEEP_MICROS,
    UNMATCHED_KEEP_PER_ROUTE, UnmatchedReceipt, distinct, legacy_spellings, receipt_part,
    receipt_step,
};
use crate::{Micros, OtpStatus, Receipt, StoreError};

/// Applies one receipt in `tx`; the OTP it landed on. A status it moved is
/// added to `changes` (conversion tracking), a refund it owes to `refunds`:
/// the batch pays them with [`pay_refunds`] after every OTP row it locks, as
/// an accept locks a resend's first OTP before its account. Refunding in
/// between (an account locked, then another OTP) could close a cycle with
/// such an accept.
pub(super) async fn apply(
    tx: &Transaction<'_>,
    rc: &Receipt,
    changes: &mut Vec<Change>,
    refunds: &mut Vec<(Refund, Micros)>,
) -> Result<Option<i64>, StoreError> {
    let found = tx
        .query_cached(
            sql_once!(
                "SELECT {PART_COLUMNS} FROM provider_messages \
                 WHERE route = $1 AND message_id = ANY($2) ORDER BY message_id FOR NO KEY UPDATE"
            ),
            &[&rc.route, &rc.message_ids],
        )
        .await
        .map_err(pg_err)?
        .iter()
        .map(RecordedPart::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let Some(part) = receipt_part(rc, &found) else {
        return Ok(None);
    };
    let state = rc.status.map(OtpStatus::as_str);
    let took = tx
        .execute_cached(
            "UPDATE provider_messages SET state = $3 WHERE route = $1 AND message_id = $2 \
             AND state IS NULL",
            &[&rc.route, &part.message_id, &state],
        )
        .await
        .map_err(pg_err)?;
    if took == 0 {
        return Ok(None);
    }
    let loaded = otp_state_and_pending(tx, part.otp_id).await?;
    let step = receipt_step(rc, part, loaded.as_ref());
    if let Some(status) = step.status {
        tx.execute_cached(
            "UPDATE otps SET status = $2, status_at = $3, \
             delivered_at = COALESCE($4, delivered_at) WHERE id = $1",
            &[&step.otp_id, &status.as_str(), &rc.at, &step.delivered_at],
        )
        .await
        .map_err(pg_err)?;
    }
    tx.execute_cached(
        "INSERT INTO otp_events (otp_id, status, at, route, detail, error_code) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &step.otp_id,
            &step.event,
            &rc.at,
            &rc.route,
            &step.detail,
            &rc.error_code,
        ],
    )
    .await
    .map_err(pg_err)?;
    if let Some(error) = &step.failure {
        tx.execute_cached(
            "UPDATE otps SET error_code = $2, error = $3 WHERE id = $1",
            &[&step.otp_id, &rc.error_code, error],
        )
        .await
        .map_err(pg_err)?;
    }
    if let Some(r) = step.refund.clone() {
        refunds.push((r, rc.at));
    }
    if let Some(hook) = step.webhook {
        webhooks::enqueue(tx, step.otp_id, hook, rc.at).await?;
    }
    changes.extend(conversions::from_receipt(&step, rc));
    Ok(Some(step.otp_id))
}

/// Pays a batch's refunds, account by account in id order (as every other
/// transaction locks accounts).
pub(super) async fn pay_refunds(
    tx: &Transaction<'_>,
    mut refunds: Vec<(Refund, Micros)>,
) -> Result<(), StoreError> {
    refunds.sort_by_key(|(r, _)| (r.account_id, r.otp_id));
    for (r, at) in &refunds {
        refund(tx, r, *at).await?;
    }
    Ok(())
}

/// `UNION ALL`, deduplicated here, as in the sqlite backend: each branch
/// stays one index search whatever the planner thinks of sorting. As there,
/// the first branch's list holds the text form, so the second asks only for
/// parts whose text form differs from their id (its index holds no others,
/// migration 28).
pub(super) const CANDIDATES: &str = "SELECT k.i, pm.message_id \
     FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::bool[]) \
         WITH ORDINALITY AS k(a, b, h, d, t, by_hex, by_dec, i) \
     CROSS JOIN LATERAL ( \
         SELECT message_id FROM provider_messages \
             WHERE route = $1 AND message_id IN (k.a, k.b, k.h, k.d) \
         UNION ALL SELECT message_id FROM provider_messages \
             WHERE route = $1 AND id_text = k.t AND id_text <> message_id \
         UNION ALL SELECT message_id FROM provider_messages \
             WHERE k.by_hex AND route = $1 AND id_hex_decimal = k.t \
         UNION ALL SELECT message_id FROM provider_messages \
             WHERE k.by_dec AND route = $1 AND id_decimal_hex = k.t \
         LIMIT $9) pm";

#[async_trait::async_trait]
impl ReceiptStore for PgStore {
    async fn receipt_candidates(
        &self,
        route: &str,
        lookups: Vec<IdLookup>,
    ) -> Result<Vec<Vec<String>>, StoreError> {
        if lookups.is_empty() {
            return Ok(Vec::new());
        }
        let (mut a, mut b, mut h, mut d, mut t, mut by_hex, mut by_dec) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for l in &lookups {
            let [sa, sb, sh, sd] = legacy_spellings(l);
            a.push(sa);
            b.push(sb);
            h.push(sh);
            d.push(sd);
            t.push(l.text.clone());
            by_hex.push(l.by_hex_reading);
            by_dec.push(l.by_decimal_reading);
        }
        let c = self.client().await?;
        let rows = c
            .query_cached(
                CANDIDATES,
                &[
                    &route,
                    &a,
                    &b,
                    &h,
                    &d,
                    &t,
                    &by_hex,
                    &by_dec,
                    &(MAX_CANDIDATES * 4),
                ],
            )
            .await
            .map_err(pg_err)?;
        let mut out = vec![Vec::new(); lookups.len()];
        for r in rows {
            let i: i64 = r.get(0);
            if let Some(list) = usize::try_from(i - 1).ok().and_then(|i| out.get_mut(i)) {
                list.push(r.get(1));
            }
        }
        Ok(out.into_iter().map(distinct).collect())
    }

    async fn record_unmatched_receipts(
        &self,
        receipts: Vec<UnmatchedReceipt>,
        now: Micros,
    ) -> Result<(), StoreError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let (mut routes, mut ids, mut states, mut reasons, mut texts, mut ats) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for r in &receipts {
            let (id, text) = r.bounded();
            routes.push(r.route.clone());
            ids.push(id);
            states.push(r.state.clone());
            reasons.push(r.reason.clone());
            texts.push(text);
            ats.push(r.received_at);
        }
        let mut distinct = routes.clone();
        distinct.sort();
        distinct.dedup();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        tx.execute_cached(
            "INSERT INTO unmatched_receipts (route, message_id, state, reason, body, received_at) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[])",
            &[&routes, &ids, &states, &reasons, &texts, &ats],
        )
        .await
        .map_err(pg_err)?;
        tx.execute_cached(
            "DELETE FROM unmatched_receipts u USING UNNEST($1::text[]) AS r(route) \
             WHERE u.route = r.route AND u.id <= (SELECT id FROM unmatched_receipts \
                 WHERE route = r.route ORDER BY id DESC LIMIT 1 OFFSET $2)",
            &[&distinct, &UNMATCHED_KEEP_PER_ROUTE],
        )
        .await
        .map_err(pg_err)?;
        tx.execute_cached(
            "DELETE FROM unmatched_receipts WHERE received_at < $1",
            &[&(now - UNMATCHED_KEEP_MICROS)],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn unmatched_receipts(
        &self,
        route: Option<String>,
        limit: u32,
        now: Micros,
    ) -> Result<Vec<UnmatchedReceipt>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                "SELECT route, message_id, state, reason, body, received_at \
                 FROM unmatched_receipts \
                 WHERE ($1::text IS NULL OR route = $1) AND received_at >= $2 \
                 ORDER BY id DESC LIMIT $3",
                &[&route, &(now - UNMATCHED_KEEP_MICROS), &i64::from(limit)],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| UnmatchedReceipt {
                route: r.get(0),
                message_id: r.get(1),
                state: r.get(2),
                reason: r.get(3),
                text: r.get(4),
                received_at: r.get(5),
            })
            .collect())
    }
}
