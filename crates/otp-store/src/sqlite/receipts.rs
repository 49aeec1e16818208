//! [`ReceiptStore`] for the sqlite backend: candidate lookups on the read
//! pool, unmatched receipts written (and pruned) in the writer's next batch;
//! and receipts applied in the writer around [`receipt_part`] and
//! [`receipt_step`].

use rusqlite::{OptionalExtension, Transaction, params, params_from_iter};
use smpp::receipt::ids::IdLookup;

use super::jobs::{otp_state_and_pending, refund};
use super::{SqliteStore, collect, event, map_err, rows, webhooks};
use crate::conversions::{self, Change};
use crate::receipts::{
    MAX_CANDIDATES, PART_COLUMNS, ReceiptStore, RecordedPart, UNMATCHED_KEEP_MICROS,
    UNMATCHED_KEEP_PER_ROUTE, UnmatchedReceipt, distinct, legacy_spellings, receipt_part,
    receipt_step,
};
use crate::{Micros, OtpStatus, Receipt, StoreError};

/// Applies one receipt in the writer's transaction; the OTP it landed on.
/// A status it moved is added to `changes` (conversion tracking).
pub(super) fn apply(
    tx: &Transaction<'_>,
    rc: &Receipt,
    changes: &mut Vec<Change>,
) -> Result<Option<i64>, StoreError> {
    let mut found = Vec::with_capacity(rc.message_ids.len());
    for id in &rc.message_ids {
        let part = tx
            .prepare_cached(sql_once!(
                "SELECT {PART_COLUMNS} FROM provider_messages WHERE route = ?1 AND message_id = ?2"
            ))
            .and_then(|mut s| {
                s.query_row(params![rc.route, id], |r| {
                    rows::lift(RecordedPart::from_row(r))
                })
                .optional()
            })
            .map_err(map_err)?;
        found.extend(part);
    }
    let Some(part) = receipt_part(rc, &found) else {
        return Ok(None);
    };
    let took = tx
        .prepare_cached(
            "UPDATE provider_messages SET state = ?3 WHERE route = ?1 AND message_id = ?2 \
             AND state IS NULL",
        )
        .and_then(|mut s| {
            s.execute(params![
                rc.route,
                part.message_id,
                rc.status.map(OtpStatus::as_str)
            ])
        })
        .map_err(map_err)?;
    if took == 0 {
        return Ok(None);
    }
    let loaded = otp_state_and_pending(tx, part.otp_id)?;
    let step = receipt_step(rc, part, loaded.as_ref());
    if let Some(status) = step.status {
        tx.prepare_cached(
            "UPDATE otps SET status = ?2, status_at = ?3, \
             delivered_at = COALESCE(?4, delivered_at) WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                step.otp_id,
                status.as_str(),
                rc.at,
                step.delivered_at
            ])
        })
        .map_err(map_err)?;
    }
    event(
        tx,
        step.otp_id,
        step.event,
        rc.at,
        Some(&rc.route),
        Some(&step.detail),
        rc.error_code.as_deref(),
    )?;
    if let Some(error) = &step.failure {
        tx.prepare_cached("UPDATE otps SET error_code = ?2, error = ?3 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![step.otp_id, rc.error_code, error]))
            .map_err(map_err)?;
    }
    if let Some(r) = &step.refund {
        refund(tx, r, rc.at)?;
    }
    if let Some(hook) = step.webhook {
        webhooks::enqueue(tx, step.otp_id, hook, rc.at)?;
    }
    changes.extend(conversions::from_receipt(&step, rc));
    Ok(Some(step.otp_id))
}

/// ?1 route, ?2-?5 spellings as written, ?6 the text form, ?7 / ?8 whether
/// to search the hex and the decimal readings, ?9 the limit. The spellings
/// hold the text form, so the first branch finds a part whose id is its own
/// text form, and the second asks only for the others, which are all its
/// partial index holds (migration 28).
///
/// `UNION ALL`, deduplicated by the caller: with `UNION` SQLite 3.54 merges
/// the branches in `message_id` order and walks every part of the route for
/// three of them (6.7 ms a lookup at 30,000 parts, which stalled the receipt
/// task and with it the SMPP session); each branch here is one index search
/// (`a_receipt_lookup_is_index_searches_only` checks the plan).
const CANDIDATES: &str = "SELECT message_id FROM provider_messages \
         WHERE route = ?1 AND message_id IN (?2, ?3, ?4, ?5) \
     UNION ALL SELECT message_id FROM provider_messages \
         WHERE route = ?1 AND id_text = ?6 AND id_text <> message_id \
     UNION ALL SELECT message_id FROM provider_messages \
         WHERE ?7 AND route = ?1 AND id_hex_decimal = ?6 \
     UNION ALL SELECT message_id FROM provider_messages \
         WHERE ?8 AND route = ?1 AND id_decimal_hex = ?6 \
     LIMIT ?9";

/// Most receipt lookups looked up on the caller's thread
/// (`SqliteStore::read_now`): a few index searches each (the plan is pinned by
/// `a_receipt_lookup_is_index_searches_only`). A bigger batch goes to a
/// blocking thread, where its wait is shared by all its receipts.
const INLINE_LOOKUPS: usize = 8;

#[async_trait::async_trait]
impl ReceiptStore for SqliteStore {
    async fn receipt_candidates(
        &self,
        route: &str,
        lookups: Vec<IdLookup>,
    ) -> Result<Vec<Vec<String>>, StoreError> {
        let route = route.to_owned();
        let few = lookups.len() <= INLINE_LOOKUPS;
        let read = move |c: &rusqlite::Connection| {
            let mut s = c.prepare_cached(CANDIDATES).map_err(map_err)?;
            let mut out = Vec::with_capacity(lookups.len());
            for l in &lookups {
                let [a, b, h, d] = legacy_spellings(l);
                let args: Vec<rusqlite::types::Value> = vec![
                    route.clone().into(),
                    a.into(),
                    b.into(),
                    h.into(),
                    d.into(),
                    l.text.clone().into(),
                    l.by_hex_reading.into(),
                    l.by_decimal_reading.into(),
                    // A part can come from each of the four branches.
                    (MAX_CANDIDATES * 4).into(),
                ];
                out.push(distinct(collect(
                    s.query_map(params_from_iter(args), |r| r.get(0))
                        .map_err(map_err)?,
                )?));
            }
            Ok(out)
        };
        if few {
            self.read_now(read).await
        } else {
            self.read(read).await
        }
    }

    async fn record_unmatched_receipts(
        &self,
        receipts: Vec<UnmatchedReceipt>,
        now: Micros,
    ) -> Result<(), StoreError> {
        if receipts.is_empty() {
            return Ok(());
        }
        self.write(move |tx| {
            let mut routes: Vec<&str> = Vec::new();
            for r in &receipts {
                let (id, text) = r.bounded();
                tx.prepare_cached(
                    "INSERT INTO unmatched_receipts \
                     (route, message_id, state, reason, body, received_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![r.route, id, r.state, r.reason, text, r.received_at])
                })
                .map_err(map_err)?;
                if !routes.contains(&r.route.as_str()) {
                    routes.push(&r.route);
                }
            }
            for route in routes {
                tx.prepare_cached(
                    "DELETE FROM unmatched_receipts WHERE route = ?1 AND id <= \
                     (SELECT id FROM unmatched_receipts WHERE route = ?1 \
                      ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                )
                .and_then(|mut s| s.execute(params![route, UNMATCHED_KEEP_PER_ROUTE]))
                .map_err(map_err)?;
            }
            tx.prepare_cached("DELETE FROM unmatched_receipts WHERE received_at < ?1")
                .and_then(|mut s| s.execute([now - UNMATCHED_KEEP_MICROS]))
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn unmatched_receipts(
        &self,
        route: Option<String>,
        limit: u32,
        now: Micros,
    ) -> Result<Vec<UnmatchedReceipt>, StoreError> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT route, message_id, state, reason, body, received_at \
                     FROM unmatched_receipts \
                     WHERE (?1 IS NULL OR route = ?1) AND received_at >= ?2 \
                     ORDER BY id DESC LIMIT ?3",
                )
                .map_err(map_err)?;
            collect(
                s.query_map(
                    params![route, now - UNMATCHED_KEEP_MICROS, i64::from(limit)],
                    |r| {
                        Ok(UnmatchedReceipt {
                            route: r.get(0)?,
                            message_id: r.get(1)?,
                            state: r.get(2)?,
                            reason: r.get(3)?,
                            text: r.get(4)?,
                            received_at: r.get(5)?,
                        })
                    },
                )
                .map_err(map_err)?,
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    /// Migration 28: the index of a reading of ids (hex as decimal, decimal
    /// as hex) holds only the parts whose id has it, the text form's only the
    /// parts whose text form is not their id as written (the contract test
    /// `every_kind_of_id_is_found_by_another_spelling` looks them up).
    /// ANALYZE counts each index's entries (the first number of its
    /// `sqlite_stat1` row).
    #[tokio::test]
    async fn parts_without_another_reading_of_their_id_stay_out_of_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // Opening the store migrates the file.
        let _store = SqliteStore::open(path.to_str().unwrap(), &StoreOptions::default())
            .await
            .unwrap();
        let c = rusqlite::Connection::open(&path).unwrap();
        for (n, (id, f)) in crate::receipts::id_kinds().into_iter().enumerate() {
            c.execute(
                "INSERT INTO provider_messages (route, message_id, otp_id, part, parts, \
                 id_text, id_hex_decimal, id_decimal_hex) VALUES ('smsc', ?1, ?2, 1, 1, ?3, ?4, ?5)",
                params![id, n as i64 + 1, f.text, f.hex_as_decimal, f.decimal_as_hex],
            )
            .unwrap();
        }
        c.execute_batch("ANALYZE").unwrap();
        let entries = |index: &str| -> i64 {
            let stat: String = c
                .query_row(
                    "SELECT stat FROM sqlite_stat1 WHERE idx = ?1",
                    [index],
                    |r| r.get(0),
                )
                .unwrap();
            stat.split(' ').next().unwrap().parse().unwrap()
        };
        for (index, want) in crate::receipts::ID_KIND_ENTRIES {
            assert_eq!(entries(index), want, "{index}");
        }
    }

    /// The lookup's plan, one line a step, from the SQLite this build links.
    #[tokio::test]
    async fn a_receipt_lookup_is_index_searches_only() {
        let args: Vec<rusqlite::types::Value> = vec![
            "smsc".to_owned().into(),
            "1d0bb113".to_owned().into(),
            "1d0bb113".to_owned().into(),
            "487305491".to_owned().into(),
            rusqlite::types::Value::Null,
            "1d0bb113".to_owned().into(),
            true.into(),
            true.into(),
            MAX_CANDIDATES.into(),
        ];
        let plan = crate::sqlite::query_plan(CANDIDATES, args).await;
        let searches: Vec<&String> = plan.iter().filter(|l| l.starts_with("SEARCH")).collect();
        assert_eq!(searches.len(), 4, "{plan:#?}");
        for step in &plan {
            assert!(!step.starts_with("SCAN"), "{plan:#?}");
            // Every search pins the route and an id column, never the route alone.
            if step.starts_with("SEARCH") {
                assert!(step.contains("(route=? AND "), "{plan:#?}");
            }
        }
    }
}
