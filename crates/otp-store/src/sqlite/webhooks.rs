//! [`WebhookStore`] for the sqlite backend: writes run in the writer's next
//! batch transaction, reads on the read pool, secrets are opened off the writer.
//! [`enqueue`] is what the status changes in `sqlite.rs` call, inside their
//! own transaction.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::rows::lift;
use super::{SqliteStore, collect, map_err};
use crate::rows::{self, CLAIM_COLUMNS, DELIVERY_COLUMNS};
use crate::webhooks::{
    AttemptResult, CLAIM_SQL, ClaimedDelivery, DeliveryClaim, DeliveryQuery, ExpirySweep,
    SetWebhook, WEBHOOK_COLUMNS, Webhook, WebhookAttempt, WebhookDelivery, WebhookEvent,
    WebhookStore, open_secret, seal_secret, set_webhook_sql, sweep_expired_sql,
};
use crate::webhooks::{LowBalance, LowBalanceThresholds};
use crate::{AccountId, Micros, StoreError};

/// Records `event` of an OTP for its account's webhook, if the account has
/// one; an event the OTP already had is not recorded again. Runs in the
/// transaction of the change it reports.
/// The outbox insert of [`enqueue`]; a no-op for accounts without a webhook.
pub(super) const ENQUEUE: &str = "INSERT INTO webhook_deliveries (account_id, otp_id, event, \
     otp_status, occurred_at, state, next_attempt_at, created_at) \
     SELECT o.account_id, o.id, ?2, o.status, ?3, 'pending', ?3, ?3 \
     FROM otps o JOIN webhooks w ON w.account_id = o.account_id WHERE o.id = ?1 \
     ON CONFLICT (otp_id, event) DO NOTHING";

pub(super) fn enqueue(
    tx: &Transaction<'_>,
    otp_id: i64,
    event: WebhookEvent,
    at: Micros,
) -> Result<(), StoreError> {
    tx.prepare_cached(ENQUEUE)
        .and_then(|mut s| s.execute(params![otp_id, event.as_str(), at]))
        .map_err(map_err)?;
    Ok(())
}

/// The account's `low_balance` thresholds (its own over `configured`), if it
/// has a webhook (only then is an event recorded). Runs in the accept batch's
/// transaction.
pub(super) fn low_balance_thresholds(
    tx: &Transaction<'_>,
    account: AccountId,
    configured: LowBalanceThresholds,
) -> Result<Option<LowBalanceThresholds>, StoreError> {
    tx.prepare_cached(
        "SELECT low_balance_sms_credits, low_balance_phone_credits FROM webhooks \
         WHERE account_id = ?1",
    )
    .and_then(|mut s| {
        s.query_row([account], |r| {
            Ok(configured.with_overrides(r.get(0)?, r.get(1)?))
        })
        .optional()
    })
    .map_err(map_err)
}

/// Records the `low_balance` event of the send `otp_id`, which left the
/// account with `sms`/`phone` credits. Runs in the accept batch's transaction.
pub(super) fn enqueue_low_balance(
    tx: &Transaction<'_>,
    otp_id: i64,
    low: LowBalance,
    (sms, phone): (i64, i64),
    at: Micros,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO webhook_deliveries (account_id, otp_id, event, otp_status, occurred_at, \
         state, next_attempt_at, created_at, credits, threshold, sms_credits, phone_credits) \
         SELECT o.account_id, o.id, 'low_balance', o.status, ?2, 'pending', ?2, ?2, ?3, ?4, ?5, ?6 \
         FROM otps o JOIN webhooks w ON w.account_id = o.account_id WHERE o.id = ?1 \
         ON CONFLICT (otp_id, event) DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            otp_id,
            at,
            low.credits.as_str(),
            low.threshold,
            sms,
            phone
        ])
    })
    .map_err(map_err)?;
    Ok(())
}

/// A webhook row with its secret still sealed.
struct SealedWebhook {
    account_id: AccountId,
    url: String,
    salt: Vec<u8>,
    cipher: Vec<u8>,
    key_id: String,
    created_at: Micros,
    updated_at: Micros,
    low_balance: (Option<i64>, Option<i64>),
}

fn sealed_from_row(r: &Row<'_>) -> rusqlite::Result<SealedWebhook> {
    Ok(SealedWebhook {
        account_id: r.get(0)?,
        url: r.get(1)?,
        salt: r.get(2)?,
        cipher: r.get(3)?,
        key_id: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        low_balance: (r.get(7)?, r.get(8)?),
    })
}

fn webhook_row(c: &Connection, account: AccountId) -> Result<Option<SealedWebhook>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = ?1"
    ))
    .and_then(|mut s| s.query_row([account], sealed_from_row).optional())
    .map_err(map_err)
}

impl SqliteStore {
    fn opened(&self, w: SealedWebhook) -> Webhook {
        Webhook {
            secret: open_secret(&self.vault, w.account_id, &w.salt, &w.cipher, &w.key_id),
            account_id: w.account_id,
            url: w.url,
            low_balance_sms_credits: w.low_balance.0,
            low_balance_phone_credits: w.low_balance.1,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<WebhookAttempt> {
    Ok(WebhookAttempt {
        attempt: r.get(0)?,
        at: r.get(1)?,
        duration_us: r.get(2)?,
        status_code: r.get(3)?,
        error: r.get(4)?,
    })
}

#[async_trait::async_trait]
impl WebhookStore for SqliteStore {
    async fn webhook(&self, account: AccountId) -> Result<Option<Webhook>, StoreError> {
        let row = self.read(move |c| webhook_row(c, account)).await?;
        Ok(row.map(|w| self.opened(w)))
    }

    async fn set_webhook(&self, set: SetWebhook) -> Result<Webhook, StoreError> {
        // Sealed here, on the caller's task; used only if the secret changes.
        let sealed = seal_secret(&self.vault, set.account_id, &set.new_secret);
        let row = self
            .write(move |tx| {
                tx.prepare_cached(&set_webhook_sql().replace('$', "?"))
                    .and_then(|mut s| {
                        s.query_row(
                            params![
                                set.account_id,
                                set.url,
                                &sealed.salt[..],
                                sealed.cipher,
                                sealed.key_id,
                                set.now,
                                set.rotate,
                                set.low_balance_sms_credits.is_some(),
                                set.low_balance_sms_credits.flatten(),
                                set.low_balance_phone_credits.is_some(),
                                set.low_balance_phone_credits.flatten()
                            ],
                            sealed_from_row,
                        )
                        .optional()
                    })
                    .map_err(map_err)?
                    .ok_or_else(|| StoreError::NotFound(format!("account {}", set.account_id)))
            })
            .await?;
        Ok(self.opened(row))
    }

    async fn delete_webhook(&self, account: AccountId, now: Micros) -> Result<bool, StoreError> {
        self.write(move |tx| {
            let n = tx
                .execute("DELETE FROM webhooks WHERE account_id = ?1", [account])
                .map_err(map_err)?;
            tx.execute(
                "UPDATE webhook_deliveries SET state = 'cancelled', finished_at = ?2 \
                 WHERE account_id = ?1 AND state = 'pending'",
                params![account, now],
            )
            .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn claim_webhook_deliveries(
        &self,
        claim: DeliveryClaim,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let raw = self
            .write(move |tx| {
                // The writer runs one transaction at a time: the count of
                // leased deliveries cannot change between the pick and the lease.
                let ids: Vec<i64> = {
                    let mut s = tx
                        .prepare_cached(&CLAIM_SQL.replace("{lock}", "").replace('$', "?"))
                        .map_err(map_err)?;
                    let rows = s
                        .query_map(
                            params![
                                claim.now,
                                claim.limit as i64,
                                claim.per_account.max(1) as i64
                            ],
                            |r| r.get(0),
                        )
                        .map_err(map_err)?;
                    collect(rows)?
                };
                let mut lease = tx
                    .prepare_cached(
                        "UPDATE webhook_deliveries SET next_attempt_at = ?2, lease_owner = ?3, \
                         attempts = attempts + 1 WHERE id = ?1",
                    )
                    .map_err(map_err)?;
                for id in &ids {
                    lease
                        .execute(params![id, claim.lease_until, claim.node])
                        .map_err(map_err)?;
                }
                let mut s = tx
                    .prepare_cached(&format!(
                        "SELECT {CLAIM_COLUMNS} FROM webhook_deliveries d \
                         LEFT JOIN webhooks w ON w.account_id = d.account_id \
                         LEFT JOIN otps o ON o.id = d.otp_id WHERE d.id = ?1"
                    ))
                    .map_err(map_err)?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    match s
                        .query_row([id], |r| lift(rows::webhook_claim(r)))
                        .optional()
                        .map_err(map_err)?
                        .flatten()
                    {
                        Some(c) => out.push(c),
                        // Its webhook or OTP is gone: nowhere to send it.
                        None => {
                            tx.prepare_cached(
                                "UPDATE webhook_deliveries SET state = 'cancelled', \
                                 finished_at = ?2 WHERE id = ?1",
                            )
                            .and_then(|mut u| u.execute(params![id, claim.now]))
                            .map_err(map_err)?;
                        }
                    }
                }
                out.sort_by_key(|c| c.delivery.id);
                Ok(out)
            })
            .await?;
        Ok(raw.into_iter().map(|c| c.open(&self.vault)).collect())
    }

    async fn finish_webhook_deliveries(
        &self,
        results: Vec<AttemptResult>,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            let mut attempt = tx
                .prepare_cached(
                    "INSERT INTO webhook_attempts (delivery_id, attempt, at, duration_us, \
                     status_code, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(map_err)?;
            // Only a pending delivery moves: one cancelled meanwhile stays so.
            let mut update = tx
                .prepare_cached(
                    "UPDATE webhook_deliveries SET state = ?2, next_attempt_at = ?3, \
                     last_error = ?4, finished_at = ?5, lease_owner = NULL \
                     WHERE id = ?1 AND state = 'pending'",
                )
                .map_err(map_err)?;
            for r in &results {
                attempt
                    .execute(params![
                        r.delivery_id,
                        r.attempt,
                        r.at,
                        r.duration_us,
                        r.status_code,
                        r.error
                    ])
                    .map_err(map_err)?;
                let settled = r.settlement();
                update
                    .execute(params![
                        r.delivery_id,
                        settled.state.as_str(),
                        settled.next_attempt_at,
                        r.error,
                        settled.finished_at
                    ])
                    .map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn webhook_deliveries(
        &self,
        query: DeliveryQuery,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.read(move |c| {
            c.execute_batch("BEGIN DEFERRED").map_err(map_err)?;
            let result = (|| {
                let mut s = c
                    .prepare_cached(&format!(
                        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                         WHERE account_id = ?1 AND (?2 IS NULL OR id < ?2) \
                         ORDER BY id DESC LIMIT ?3"
                    ))
                    .map_err(map_err)?;
                let mut list = collect(
                    s.query_map(
                        params![query.account_id, query.before_id, i64::from(query.limit)],
                        |r| lift(rows::webhook_delivery(r)),
                    )
                    .map_err(map_err)?,
                )?;
                let mut s = c
                    .prepare_cached(
                        "SELECT attempt, at, duration_us, status_code, error FROM webhook_attempts \
                         WHERE delivery_id = ?1 ORDER BY id",
                    )
                    .map_err(map_err)?;
                for d in &mut list {
                    d.attempts = collect(s.query_map([d.id], attempt_from_row).map_err(map_err)?)?;
                }
                Ok(list)
            })();
            let _ = c.execute_batch("COMMIT");
            result
        })
        .await
    }

    async fn sweep_expired(&self, sweep: ExpirySweep) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let n = tx
                .prepare_cached(
                    &sweep_expired_sql("MAX", "w.expired_swept_until < $2").replace('$', "?"),
                )
                .and_then(|mut s| {
                    s.execute(params![
                        sweep.now,
                        sweep.expired_until,
                        sweep.longest_expiry,
                        sweep.not_before
                    ])
                })
                .map_err(map_err)?;
            tx.prepare_cached(
                "UPDATE webhooks SET expired_swept_until = ?1 WHERE expired_swept_until < ?1",
            )
            .and_then(|mut s| s.execute([sweep.expired_until]))
            .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }
}
