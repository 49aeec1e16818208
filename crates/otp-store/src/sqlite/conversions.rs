//! [`ConversionStore`] for the sqlite backend: the changes a write decided
//! are tallied ([`conversions::tally`]) and upserted in the writer's
//! transaction, one statement per key; reads use the read pool.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{OptionalExtension, Transaction, params, params_from_iter};

use super::{SqliteStore, collect, map_err, rows};
use crate::conversions::{
    self, Change, ConversionStore, Counts, FACT_COLUMNS, Facts, Key, MetricKey, MinuteSends, SUMS,
    StatsGroup, StatsQuery, counts_from, minute_of, minutes, sum_columns, upsert_numbers,
    upsert_sql,
};
use crate::{AccountId, Micros, NewOtp, StoreError};

/// Counts `accepted` sends and `changes` in `tx`; returns the tally, for the
/// live totals once the transaction committed.
pub(super) fn record<'a>(
    tx: &Transaction<'_>,
    accepted: impl IntoIterator<Item = &'a NewOtp>,
    changes: &[Change],
) -> Result<BTreeMap<Key, Counts>, StoreError> {
    let mut facts = HashMap::new();
    if !changes.is_empty() {
        let mut s = tx
            .prepare_cached(sql_once!("SELECT {FACT_COLUMNS} FROM otps WHERE id = ?1"))
            .map_err(map_err)?;
        for id in conversions::wanted(changes) {
            if let Some((id, f)) = s
                .query_row([id], |r| rows::lift(Facts::from_row(r)))
                .optional()
                .map_err(map_err)?
            {
                facts.insert(id, f);
            }
        }
    }
    let tally = conversions::tally(accepted, changes, &facts);
    if !tally.is_empty() {
        let mut s = tx.prepare_cached(upsert_sql('?')).map_err(map_err)?;
        for (k, c) in &tally {
            let mut values: Vec<rusqlite::types::Value> = vec![
                k.account_id.into(),
                k.minute.into(),
                k.channel.to_owned().into(),
                k.route.clone().into(),
                k.country.clone().into(),
                k.prefix.clone().into(),
            ];
            values.extend(upsert_numbers(c).into_iter().map(Into::into));
            s.execute(params_from_iter(values)).map_err(map_err)?;
        }
    }
    Ok(tally)
}

fn sums(r: &rusqlite::Row<'_>, from: usize) -> rusqlite::Result<Counts> {
    let values = (from..from + SUMS)
        .map(|i| r.get::<_, Option<i64>>(i).map(Option::unwrap_or_default))
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(counts_from(&values))
}

#[async_trait::async_trait]
impl ConversionStore for SqliteStore {
    async fn conversion_stats(&self, q: StatsQuery) -> Result<Vec<StatsGroup>, StoreError> {
        self.read(move |c| {
            let column = q.group_by.as_str();
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {column}, {} FROM conversions WHERE account_id = ?1 \
                     AND minute >= ?2 AND minute < ?3 GROUP BY {column} ORDER BY {column}",
                    sum_columns()
                ))
                .map_err(map_err)?;
            collect(
                s.query_map(
                    params![
                        q.account_id,
                        minutes(q.from, q.to).0,
                        minutes(q.from, q.to).1
                    ],
                    |r| {
                        Ok(StatsGroup {
                            group: r.get(0)?,
                            counts: sums(r, 1)?,
                        })
                    },
                )
                .map_err(map_err)?,
            )
        })
        .await
    }

    async fn sends_per_minute(
        &self,
        account_id: AccountId,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<MinuteSends>, StoreError> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT minute, channel, SUM(sent) FROM conversions WHERE account_id = ?1 \
                     AND minute >= ?2 AND minute < ?3 GROUP BY minute, channel \
                     HAVING SUM(sent) > 0 ORDER BY minute, channel",
                )
                .map_err(map_err)?;
            collect(
                s.query_map(
                    params![account_id, minutes(from, to).0, minutes(from, to).1],
                    |r| {
                        let channel: String = r.get(1)?;
                        Ok(MinuteSends {
                            minute: r.get(0)?,
                            channel: rows::lift(crate::rows::parsed(
                                "conversions.channel",
                                &channel,
                                otp_domain::channel::Channel::parse,
                            ))?,
                            sent: r.get(2)?,
                        })
                    },
                )
                .map_err(map_err)?,
            )
        })
        .await
    }

    async fn purge_conversions(&self, before: Micros) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            // A chunk per write, so a large purge never holds up sends for long.
            let n = self
                .write(move |tx| {
                    tx.prepare_cached(
                        "DELETE FROM conversions WHERE rowid IN (SELECT rowid FROM conversions \
                         WHERE minute < ?1 LIMIT ?2)",
                    )
                    .and_then(|mut s| s.execute(params![minute_of(before), crate::PURGE_CHUNK]))
                    .map_err(map_err)
                })
                .await?;
            total += n as u64;
            if (n as i64) < crate::PURGE_CHUNK {
                return Ok(total);
            }
        }
    }

    fn live_totals(&self) -> Vec<(MetricKey, Counts)> {
        self.conversions.snapshot()
    }
}
