//! [`ConversionStore`] for the postgres backend: the changes a transaction
//! decided are tallied ([`conversions::tally`]) and upserted in it, one
//! statement per key (a key's row is locked by its upsert until the commit,
//! so nodes add to it in turn and no count is lost).

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::Transaction;
use otp_domain::channel::Channel;

use super::{Params, PgStore, Prepared, pg_err, refs};
use crate::conversions::{
    self, Change, ConversionStore, Counts, FACT_COLUMNS, Facts, Key, MetricKey, MinuteSends, SUMS,
    StatsGroup, StatsQuery, counts_from, minute_of, minutes, sum_columns, upsert_numbers,
    upsert_sql,
};
use crate::rows::parsed;
use crate::{AccountId, Micros, NewOtp, StoreError};

/// Counts `accepted` sends and `changes` in `tx`; returns the tally, for the
/// live totals once the transaction committed.
pub(super) async fn record<'a>(
    tx: &Transaction<'_>,
    accepted: impl IntoIterator<Item = &'a NewOtp>,
    changes: &[Change],
) -> Result<BTreeMap<Key, Counts>, StoreError> {
    let mut facts = HashMap::new();
    if !changes.is_empty() {
        let ids = conversions::wanted(changes);
        for row in tx
            .query_cached(
                sql_once!("SELECT {FACT_COLUMNS} FROM otps WHERE id = ANY($1)"),
                &[&ids],
            )
            .await
            .map_err(pg_err)?
        {
            let (id, f) = Facts::from_row(&row)?;
            facts.insert(id, f);
        }
    }
    let tally = conversions::tally(accepted, changes, &facts);
    if !tally.is_empty() {
        let sql = upsert_sql('$');
        // Keys in order (a BTreeMap): two transactions upserting the same
        // keys lock them in the same order.
        for (k, c) in &tally {
            let mut values: Params = vec![
                Box::new(k.account_id),
                Box::new(k.minute),
                Box::new(k.channel.to_owned()),
                Box::new(k.route.clone()),
                Box::new(k.country.clone()),
                Box::new(k.prefix.clone()),
            ];
            values.extend(
                upsert_numbers(c)
                    .into_iter()
                    .map(|n| Box::new(n) as Box<dyn tokio_postgres::types::ToSql + Sync + Send>),
            );
            tx.execute_cached(sql, &refs(&values))
                .await
                .map_err(pg_err)?;
        }
    }
    Ok(tally)
}

fn sums(r: &tokio_postgres::Row, from: usize) -> Result<Counts, StoreError> {
    let values = (from..from + SUMS)
        .map(|i| {
            r.try_get::<_, Option<i64>>(i)
                .map(Option::unwrap_or_default)
                .map_err(pg_err)
        })
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(counts_from(&values))
}

/// [`sum_columns`] with each sum cast back to `BIGINT` (`SUM` of a `BIGINT`
/// is `numeric` in PostgreSQL).
fn bigint_sums() -> String {
    sum_columns()
        .split(", ")
        .map(|s| format!("{s}::int8"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait::async_trait]
impl ConversionStore for PgStore {
    async fn conversion_stats(&self, q: StatsQuery) -> Result<Vec<StatsGroup>, StoreError> {
        let c = self.client().await?;
        let column = q.group_by.as_str();
        let rows = c
            .query(
                &format!(
                    "SELECT {column}, {} FROM conversions WHERE account_id = $1 \
                     AND minute >= $2 AND minute < $3 GROUP BY {column} ORDER BY {column}",
                    bigint_sums()
                ),
                &[
                    &q.account_id,
                    &minutes(q.from, q.to).0,
                    &minutes(q.from, q.to).1,
                ],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                Ok(StatsGroup {
                    group: r.get(0),
                    counts: sums(r, 1)?,
                })
            })
            .collect()
    }

    async fn sends_per_minute(
        &self,
        account_id: AccountId,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<MinuteSends>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                "SELECT minute, channel, SUM(sent)::int8 FROM conversions WHERE account_id = $1 \
                 AND minute >= $2 AND minute < $3 GROUP BY minute, channel \
                 HAVING SUM(sent) > 0 ORDER BY minute, channel",
                &[&account_id, &minutes(from, to).0, &minutes(from, to).1],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let channel: String = r.get(1);
                Ok(MinuteSends {
                    minute: r.get(0),
                    channel: parsed("conversions.channel", &channel, Channel::parse)?,
                    sent: r.get(2),
                })
            })
            .collect()
    }

    async fn purge_conversions(&self, before: Micros) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let mut total = 0;
        loop {
            // A chunk per statement, so a large purge holds few locks at once.
            let n = c
                .execute_cached(
                    "DELETE FROM conversions WHERE ctid = ANY(ARRAY(SELECT ctid FROM conversions \
                     WHERE minute < $1 LIMIT $2))",
                    &[&minute_of(before), &crate::PURGE_CHUNK],
                )
                .await
                .map_err(pg_err)?;
            total += n;
            if (n as i64) < crate::PURGE_CHUNK {
                return Ok(total);
            }
        }
    }

    fn live_totals(&self) -> Vec<(MetricKey, Counts)> {
        self.conversions.snapshot()
    }
}
