//! [`RetentionStore`] for the postgres backend: every node runs the purge, and
//! no two do the same chunk (an advisory lock per account, `SKIP LOCKED` for
//! the other rows).

use super::{PgStore, Prepared, pg_err};
use crate::retention::{
    Candidate, PurgeReport, PurgeSteps, RetentionRules, RetentionStore, Sweep, due_accounts_sql,
    live_sql, purge, purgeable_run,
};
use crate::{AccountId, Micros, StoreError};

/// The class of the advisory locks an account's purge chunk is taken under
/// ("otpr" in ASCII); the account id is the second key.
const PURGE_LOCK_CLASS: i32 = 0x6f74_7072;

#[async_trait::async_trait]
impl RetentionStore for PgStore {
    async fn purge_expired_rows(&self, rules: RetentionRules) -> Result<PurgeReport, StoreError> {
        purge(self, rules).await
    }
}

#[async_trait::async_trait]
impl PurgeSteps for PgStore {
    async fn sweep_chunk(&self, sweep: &Sweep, chunk: i64) -> Result<u64, StoreError> {
        let sql = format!(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} \
             WHERE {filter} LIMIT $2 FOR UPDATE SKIP LOCKED))",
            table = sweep.table,
            filter = sweep.filter("$1"),
        );
        self.client()
            .await?
            .execute(&sql, &[&sweep.bound, &chunk])
            .await
            .map_err(pg_err)
    }

    async fn due_accounts(&self, cutoff: Micros) -> Result<Vec<AccountId>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(&due_accounts_sql("$1"), &[&cutoff])
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// One chunk of one account (see `sqlite/retention.rs` for the same steps):
    /// `None` when another node holds the account's lock.
    async fn purge_chunk(
        &self,
        account: AccountId,
        cutoff: Micros,
        now: Micros,
        chunk: i64,
    ) -> Result<Option<u64>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let mine: bool = tx
            .query_one_cached(
                "SELECT pg_try_advisory_xact_lock($1, ($2::int8 & 2147483647)::int4)",
                &[&PURGE_LOCK_CLASS, &account],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        if !mine {
            return Ok(None);
        }
        let Some(through): Option<i64> = tx
            .query_opt_cached(
                "SELECT otp_purged_through FROM accounts WHERE id = $1",
                &[&account],
            )
            .await
            .map_err(pg_err)?
            .map(|r| r.get(0))
        else {
            return Ok(Some(0));
        };
        // Lock first, judge after: a change that committed while we waited for
        // a row is seen by the judging statement (a new snapshot).
        let locked: Vec<i64> = tx
            .query_cached(
                "SELECT id FROM otps WHERE account_id = $1 AND account_seq > $2 \
                 ORDER BY account_seq LIMIT $3 FOR UPDATE",
                &[&account, &through, &chunk],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let candidates: Vec<Candidate> = tx
            .query_cached(
                sql_once!(
                    "SELECT o.id, o.account_seq, o.created_at, NOT {} FROM otps o \
                     WHERE o.id = ANY($1) ORDER BY o.account_seq",
                    live_sql("$2", "$3")
                ),
                &[&locked, &cutoff, &now],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| Candidate {
                id: r.get(0),
                account_seq: r.get(1),
                created_at: r.get(2),
                purgeable: r.get(3),
            })
            .collect();
        let run = purgeable_run(&candidates);
        if run.ids.is_empty() {
            return Ok(Some(0));
        }
        for statement in [
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE otp_id = ANY($1))",
            "DELETE FROM webhook_deliveries WHERE otp_id = ANY($1)",
            "DELETE FROM otp_events WHERE otp_id = ANY($1)",
            "DELETE FROM provider_messages WHERE otp_id = ANY($1)",
            "DELETE FROM delivery_jobs WHERE otp_id = ANY($1)",
        ] {
            tx.execute_cached(statement, &[&run.ids])
                .await
                .map_err(pg_err)?;
        }
        tx.execute_cached(
            "DELETE FROM idempotency WHERE created_at <= $2 AND otp_id = ANY($1)",
            &[&run.ids, &run.newest_created_at],
        )
        .await
        .map_err(pg_err)?;
        let removed = tx
            .execute_cached("DELETE FROM otps WHERE id = ANY($1)", &[&run.ids])
            .await
            .map_err(pg_err)?;
        // Last, so the account row (which sends lock) is held only to commit.
        tx.execute_cached(
            "UPDATE accounts SET otp_purged_through = GREATEST(otp_purged_through, $2) \
             WHERE id = $1",
            &[&account, &run.through],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(removed))
    }
}
