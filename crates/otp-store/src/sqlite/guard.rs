//! [`GuardStore`] for the sqlite backend: placing, extending and releasing
//! a hold are writes of the writer; the rest reads on the read pool.

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, collect, map_err, rows};
use crate::guard::{
    GuardHold, GuardStore, MAX_HOLDS_LISTED, NewHold, hold_from_row, proving_status, sql,
    stored_account,
};
use crate::{Accepted, AccountId, Micros, StoreError};

fn lite(sql: &str) -> String {
    sql.replace('$', "?")
}

#[async_trait::async_trait]
impl GuardStore for SqliteStore {
    async fn place_hold(&self, hold: NewHold) -> Result<(GuardHold, bool), StoreError> {
        self.write(move |tx| {
            let account = stored_account(hold.account_id);
            let scope = hold.scope.as_str();
            tx.prepare_cached(&lite(sql::CLOSE_ENDED))
                .and_then(|mut s| s.execute(params![scope, hold.value, account, hold.at]))
                .map_err(map_err)?;
            let created = tx
                .prepare_cached(&lite(&sql::insert()))
                .map_err(map_err)?
                .query_row(
                    params![
                        scope,
                        hold.value,
                        account,
                        hold.reason,
                        hold.volume,
                        hold.conversion_ppm,
                        hold.baseline_ppm,
                        hold.at,
                        hold.until
                    ],
                    |r| rows::lift(hold_from_row(r)),
                )
                .optional()
                .map_err(map_err)?;
            if let Some(created) = created {
                return Ok((created, true));
            }
            let standing = tx
                .prepare_cached(&lite(&sql::open_of_key()))
                .map_err(map_err)?
                .query_row(params![scope, hold.value, account], |r| {
                    rows::lift(hold_from_row(r))
                })
                .map_err(map_err)?;
            Ok((standing, false))
        })
        .await
    }

    async fn extend_hold(&self, id: i64, until: Micros) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.prepare_cached(&lite(sql::EXTEND))
                .and_then(|mut s| s.execute(params![id, until]))
                .map_err(map_err)
                .map(drop)
        })
        .await
    }

    async fn guard_holds(&self, since: Micros) -> Result<Vec<GuardHold>, StoreError> {
        self.read(move |c| {
            let mut s = c.prepare_cached(&lite(&sql::listed())).map_err(map_err)?;
            collect(
                s.query_map(params![since, MAX_HOLDS_LISTED], |r| {
                    rows::lift(hold_from_row(r))
                })
                .map_err(map_err)?,
            )
        })
        .await
    }

    async fn release_hold(
        &self,
        id: i64,
        by: &str,
        now: Micros,
    ) -> Result<Option<GuardHold>, StoreError> {
        let by = by.to_owned();
        self.write(move |tx| {
            tx.prepare_cached(&lite(&sql::release()))
                .map_err(map_err)?
                .query_row(params![id, now, by], |r| rows::lift(hold_from_row(r)))
                .optional()
                .map_err(map_err)
        })
        .await
    }

    async fn otp_destinations(
        &self,
        ids: Vec<i64>,
    ) -> Result<Vec<(i64, AccountId, String)>, StoreError> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached("SELECT id, account_id, e164 FROM otps WHERE id = ?1")
                .map_err(map_err)?;
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(row) = s
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
                    .map_err(map_err)?
                {
                    found.push(row);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn proven_number(
        &self,
        account: AccountId,
        e164: String,
        delivered: bool,
    ) -> Result<bool, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&lite(sql::PROVEN))
                .map_err(map_err)?
                .query_row(
                    params![account, e164, proving_status(delivered)],
                    |_| Ok(()),
                )
                .optional()
                .map(|found| found.is_some())
                .map_err(map_err)
        })
        .await
    }

    async fn idempotent_send(
        &self,
        account: AccountId,
        key: String,
        since: Micros,
    ) -> Result<Option<(Vec<u8>, Accepted)>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&lite(sql::IDEMPOTENT))
                .map_err(map_err)?
                .query_row(params![account, key, since], |r| {
                    Ok((
                        r.get(0)?,
                        Accepted {
                            id: r.get(1)?,
                            account_seq: r.get(2)?,
                            sms_credits: r.get(3)?,
                            phone_credits: r.get(4)?,
                            fallback: None,
                            leased_job: None,
                        },
                    ))
                })
                .optional()
                .map_err(map_err)
        })
        .await
    }
}
