//! [`GuardStore`] for the postgres backend. Placing a hold is one
//! transaction: of two nodes inserting the same key's hold at once, the
//! second waits on the unique index of open holds, inserts nothing, and
//! reads back the first's.

use super::{PgStore, Prepared, pg_err};
use crate::guard::{
    GuardHold, GuardStore, MAX_HOLDS_LISTED, NewHold, hold_from_row, proving_status, sql,
    stored_account,
};
use crate::{Accepted, AccountId, Micros, StoreError};

#[async_trait::async_trait]
impl GuardStore for PgStore {
    async fn place_hold(&self, hold: NewHold) -> Result<(GuardHold, bool), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let account = stored_account(hold.account_id);
        let scope = hold.scope.as_str();
        tx.execute_cached(sql::CLOSE_ENDED, &[&scope, &hold.value, &account, &hold.at])
            .await
            .map_err(pg_err)?;
        let created = tx
            .query_opt(
                sql::insert().as_str(),
                &[
                    &scope,
                    &hold.value,
                    &account,
                    &hold.reason,
                    &hold.volume,
                    &hold.conversion_ppm,
                    &hold.baseline_ppm,
                    &hold.at,
                    &hold.until,
                ],
            )
            .await
            .map_err(pg_err)?;
        let placed = match created {
            Some(row) => (hold_from_row(&row)?, true),
            None => {
                let row = tx
                    .query_one(
                        sql::open_of_key().as_str(),
                        &[&scope, &hold.value, &account],
                    )
                    .await
                    .map_err(pg_err)?;
                (hold_from_row(&row)?, false)
            }
        };
        tx.commit().await.map_err(pg_err)?;
        Ok(placed)
    }

    async fn extend_hold(&self, id: i64, until: Micros) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute_cached(sql::EXTEND, &[&id, &until])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn guard_holds(&self, since: Micros) -> Result<Vec<GuardHold>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(sql::listed().as_str(), &[&since, &MAX_HOLDS_LISTED])
            .await
            .map_err(pg_err)?;
        rows.iter().map(hold_from_row).collect()
    }

    async fn release_hold(
        &self,
        id: i64,
        by: &str,
        now: Micros,
    ) -> Result<Option<GuardHold>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(sql::release().as_str(), &[&id, &now, &by])
            .await
            .map_err(pg_err)?;
        row.as_ref().map(hold_from_row).transpose()
    }

    async fn otp_destinations(
        &self,
        ids: Vec<i64>,
    ) -> Result<Vec<(i64, AccountId, String)>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                "SELECT id, account_id, e164 FROM otps WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    async fn proven_number(
        &self,
        account: AccountId,
        e164: String,
        delivered: bool,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(sql::PROVEN, &[&account, &e164, &proving_status(delivered)])
            .await
            .map_err(pg_err)?;
        Ok(row.is_some())
    }

    async fn idempotent_send(
        &self,
        account: AccountId,
        key: String,
        since: Micros,
    ) -> Result<Option<(Vec<u8>, Accepted)>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(sql::IDEMPOTENT, &[&account, &key, &since])
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| {
            (
                r.get(0),
                Accepted {
                    id: r.get(1),
                    account_seq: r.get(2),
                    sms_credits: r.get(3),
                    phone_credits: r.get(4),
                    fallback: None,
                    leased_job: None,
                },
            )
        }))
    }
}
