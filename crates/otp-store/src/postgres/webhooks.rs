//! [`WebhookStore`] for the postgres backend. Deliveries are claimed with
//! `FOR UPDATE SKIP LOCKED` and the expiry sweep locks the webhook rows it
//! advances the same way, so nodes sharing the database split the work and
//! never send one delivery at the same time. [`enqueue`] and [`enqueue_jobs`]
//! are what the status changes in `postgres.rs` call, inside their own
//! transaction.

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::{PgStore, Prepared, pg_err};
use crate::rows::{self, CLAIM_COLUMNS, DELIVERY_COLUMNS};
use crate::webhooks::{
    AttemptResult, CLAIM_SQL, ClaimedDelivery, DeliveryClaim, DeliveryQuery, ExpirySweep,
    SetWebhook, WEBHOOK_COLUMNS, Webhook, WebhookAttempt, WebhookDelivery, WebhookEvent,
    WebhookStore, open_secret, seal_secret, set_webhook_sql, sweep_expired_sql,
};
use crate::{AccountId, Micros, StoreError};

const ENQUEUE_SQL: &str = "INSERT INTO webhook_deliveries (account_id, otp_id, event, otp_status, \
     occurred_at, state, next_attempt_at, created_at) \
     SELECT o.account_id, o.id, u.event, o.status, u.at, 'pending', u.at, u.at \
     FROM UNNEST($1::int8[], $2::text[], $3::int8[]) AS u(otp_id, event, at) \
     JOIN otps o ON o.id = u.otp_id JOIN webhooks w ON w.account_id = o.account_id \
     ON CONFLICT (otp_id, event) DO NOTHING";

/// Records `event` of an OTP for its account's webhook, if the account has
/// one; an event the OTP already had is not recorded again. Runs in the
/// transaction of the change it reports.
pub(super) async fn enqueue(
    tx: &Transaction<'_>,
    otp_id: i64,
    event: WebhookEvent,
    at: Micros,
) -> Result<(), StoreError> {
    tx.execute_cached(
        ENQUEUE_SQL,
        &[&vec![otp_id], &vec![event.as_str()], &vec![at]],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// Records the `low_balance` events of an accept batch: the sends `otp_ids`,
/// which credits fell below which threshold, and the balances each left.
/// Accounts without a webhook record nothing. Runs in the batch's transaction.
pub(super) async fn enqueue_low_balance(
    tx: &Transaction<'_>,
    otp_ids: &[i64],
    credits: &[&str],
    thresholds: &[i64],
    balances: (&[i64], &[i64]),
    at: &[i64],
) -> Result<(), StoreError> {
    if otp_ids.is_empty() {
        return Ok(());
    }
    tx.execute_cached(
        "INSERT INTO webhook_deliveries (account_id, otp_id, event, otp_status, occurred_at, \
         state, next_attempt_at, created_at, credits, threshold, sms_credits, phone_credits) \
         SELECT o.account_id, o.id, 'low_balance', o.status, u.at, 'pending', u.at, u.at, \
         u.credits, u.threshold, u.sms, u.phone \
         FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[]) \
         AS u(otp_id, credits, threshold, sms, phone, at) \
         JOIN otps o ON o.id = u.otp_id JOIN webhooks w ON w.account_id = o.account_id \
         ON CONFLICT (otp_id, event) DO NOTHING",
        &[
            &otp_ids,
            &credits,
            &thresholds,
            &balances.0,
            &balances.1,
            &at,
        ],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// [`enqueue`] for the webhooks a batch of finished jobs decided
/// ([`crate::jobs::finish`] gives one only to an account that has a webhook),
/// in one statement; none when no job has one.
pub(super) async fn enqueue_jobs(
    tx: &Transaction<'_>,
    plan: &[crate::jobs::Finish],
) -> Result<(), StoreError> {
    let (mut ids, mut events, mut times) = (Vec::new(), Vec::new(), Vec::new());
    for f in plan {
        if let Some(e) = f.webhook {
            ids.push(f.otp_id);
            events.push(e.as_str());
            times.push(f.at);
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    tx.execute_cached(ENQUEUE_SQL, &[&ids, &events, &times])
        .await
        .map_err(pg_err)?;
    Ok(())
}

/// The advisory lock webhook claims take turns under ("otpgate-wh" in ASCII).
const CLAIM_LOCK: i64 = 0x6f74_7067_6174_6577;

impl PgStore {
    fn opened(&self, r: &Row) -> Webhook {
        let account_id: i64 = r.get(0);
        let (salt, cipher, key_id): (Vec<u8>, Vec<u8>, String) = (r.get(2), r.get(3), r.get(4));
        Webhook {
            secret: open_secret(&self.vault, account_id, &salt, &cipher, &key_id),
            account_id,
            url: r.get(1),
            low_balance_sms_credits: r.get(7),
            low_balance_phone_credits: r.get(8),
            created_at: r.get(5),
            updated_at: r.get(6),
        }
    }
}

#[async_trait::async_trait]
impl WebhookStore for PgStore {
    async fn webhook(&self, account: AccountId) -> Result<Option<Webhook>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = $1"),
                &[&account],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| self.opened(&r)))
    }

    async fn set_webhook(&self, set: SetWebhook) -> Result<Webhook, StoreError> {
        let sealed = seal_secret(&self.vault, set.account_id, &set.new_secret);
        let c = self.client().await?;
        let row = c
            .query_opt(
                &set_webhook_sql(),
                &[
                    &set.account_id,
                    &set.url,
                    &&sealed.salt[..],
                    &sealed.cipher,
                    &sealed.key_id,
                    &set.now,
                    &set.rotate,
                    &set.low_balance_sms_credits.is_some(),
                    &set.low_balance_sms_credits.flatten(),
                    &set.low_balance_phone_credits.is_some(),
                    &set.low_balance_phone_credits.flatten(),
                ],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| self.opened(&r))
            .ok_or_else(|| StoreError::NotFound(format!("account {}", set.account_id)))
    }

    async fn delete_webhook(&self, account: AccountId, now: Micros) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let n = tx
            .execute_cached("DELETE FROM webhooks WHERE account_id = $1", &[&account])
            .await
            .map_err(pg_err)?;
        tx.execute_cached(
            "UPDATE webhook_deliveries SET state = 'cancelled', finished_at = $2 \
             WHERE account_id = $1 AND state = 'pending'",
            &[&account, &now],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn claim_webhook_deliveries(
        &self,
        claim: DeliveryClaim,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        // Claims take turns, so that two nodes counting an account's leased
        // deliveries at once cannot both fill its last slot.
        tx.execute_cached("SELECT pg_advisory_xact_lock($1)", &[&CLAIM_LOCK])
            .await
            .map_err(pg_err)?;
        let ids: Vec<i64> = tx
            .query(
                &CLAIM_SQL.replace("{lock}", "FOR UPDATE SKIP LOCKED"),
                &[
                    &claim.now,
                    &(claim.limit as i64),
                    &(claim.per_account.max(1) as i64),
                ],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let rows = tx
            .query_cached(
                sql_once!(
                    "WITH d AS (UPDATE webhook_deliveries SET next_attempt_at = $1, \
                         lease_owner = $2, attempts = attempts + 1 WHERE id = ANY($3) \
                     RETURNING id, account_id, event, otp_status, occurred_at, attempts, \
                         created_at, otp_id, credits, threshold, sms_credits, phone_credits) \
                     SELECT {CLAIM_COLUMNS} FROM d \
                     LEFT JOIN webhooks w ON w.account_id = d.account_id \
                     LEFT JOIN otps o ON o.id = d.otp_id ORDER BY d.id"
                ),
                &[&claim.lease_until, &claim.node, &ids],
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::with_capacity(rows.len());
        let mut orphans = Vec::new();
        for r in &rows {
            match rows::webhook_claim(r)? {
                Some(claim) => out.push(claim.open(&self.vault)),
                None => orphans.push(r.get::<_, i64>(0)),
            }
        }
        if !orphans.is_empty() {
            // Their webhook is gone: nowhere to send them.
            tx.execute_cached(
                "UPDATE webhook_deliveries SET state = 'cancelled', finished_at = $2 \
                 WHERE id = ANY($1)",
                &[&orphans, &claim.now],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(out)
    }

    async fn finish_webhook_deliveries(
        &self,
        results: Vec<AttemptResult>,
    ) -> Result<(), StoreError> {
        let mut ids = Vec::with_capacity(results.len());
        let mut attempts = Vec::with_capacity(results.len());
        let mut ats = Vec::with_capacity(results.len());
        let mut durations = Vec::with_capacity(results.len());
        let mut codes: Vec<Option<i64>> = Vec::with_capacity(results.len());
        let mut errors: Vec<Option<&str>> = Vec::with_capacity(results.len());
        let mut states = Vec::with_capacity(results.len());
        let mut nexts = Vec::with_capacity(results.len());
        let mut finished: Vec<Option<i64>> = Vec::with_capacity(results.len());
        for r in &results {
            let settled = r.settlement();
            ids.push(r.delivery_id);
            attempts.push(r.attempt);
            ats.push(r.at);
            durations.push(r.duration_us);
            codes.push(r.status_code.map(i64::from));
            errors.push(r.error.as_deref());
            states.push(settled.state.as_str());
            nexts.push(settled.next_attempt_at);
            finished.push(settled.finished_at);
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        tx.execute_cached(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, duration_us, status_code, error) \
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::text[])",
            &[&ids, &attempts, &ats, &durations, &codes, &errors],
        )
        .await
        .map_err(pg_err)?;
        // Only a pending delivery moves: one cancelled meanwhile stays so.
        tx.execute_cached(
            "UPDATE webhook_deliveries d SET state = u.state, next_attempt_at = u.next, \
                 last_error = u.err, finished_at = u.fin, lease_owner = NULL \
             FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::text[], $5::int8[]) \
                 AS u(id, state, next, err, fin) \
             WHERE d.id = u.id AND d.state = 'pending'",
            &[&ids, &states, &nexts, &errors, &finished],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn webhook_deliveries(
        &self,
        query: DeliveryQuery,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let mut c = self.client().await?;
        // One snapshot, so the attempts match the deliveries.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_err)?;
        let rows = tx
            .query_cached(
                sql_once!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                     WHERE account_id = $1 AND ($2::int8 IS NULL OR id < $2) \
                     ORDER BY id DESC LIMIT $3"
                ),
                &[&query.account_id, &query.before_id, &i64::from(query.limit)],
            )
            .await
            .map_err(pg_err)?;
        let mut list = rows
            .iter()
            .map(rows::webhook_delivery)
            .collect::<Result<Vec<WebhookDelivery>, StoreError>>()?;
        let ids: Vec<i64> = list.iter().map(|d| d.id).collect();
        let attempts = tx
            .query_cached(
                "SELECT delivery_id, attempt, at, duration_us, status_code, error \
                 FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        for r in &attempts {
            let id: i64 = r.get(0);
            if let Some(d) = list.iter_mut().find(|d| d.id == id) {
                d.attempts.push(WebhookAttempt {
                    attempt: r.get(1),
                    at: r.get(2),
                    duration_us: r.get(3),
                    status_code: r.get(4),
                    error: r.get(5),
                });
            }
        }
        Ok(list)
    }

    async fn sweep_expired(&self, sweep: ExpirySweep) -> Result<u64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        // The webhooks this node sweeps now; another node takes the others.
        let accounts: Vec<i64> = tx
            .query_cached(
                "SELECT account_id FROM webhooks WHERE expired_swept_until < $1 \
                 FOR UPDATE SKIP LOCKED",
                &[&sweep.expired_until],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if accounts.is_empty() {
            return Ok(0);
        }
        let n = tx
            .execute(
                &sweep_expired_sql("GREATEST", "w.account_id = ANY($5)"),
                &[
                    &sweep.now,
                    &sweep.expired_until,
                    &sweep.longest_expiry,
                    &sweep.not_before,
                    &accounts,
                ],
            )
            .await
            .map_err(pg_err)?;
        tx.execute_cached(
            "UPDATE webhooks SET expired_swept_until = $1 WHERE account_id = ANY($2)",
            &[&sweep.expired_until, &accounts],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(n)
    }
}
