//! Accepting a batch of sends: a few batcher tasks each take whatever sends
//! are waiting and commit them in one transaction that loads what the
//! admission rules read (locking the resends' first records, then the
//! accounts, each in id order), runs [`admission::decide`] and writes what its
//! plan says with `UNNEST` multi-row statements. Statements that do not need
//! one another's results are sent together, pipelined on the connection, so
//! the account locks are held for about six round trips (begin, lock, the
//! reads, the OTP insert with the balance updates, the rows naming the new
//! OTPs, commit) instead of one or two per statement.

use std::collections::HashMap;

use deadpool_postgres::{Pool, Transaction};
use tokio::sync::mpsc;
use tokio_postgres::Row;

use super::{AcceptReply, Prepared, pg_err, pool_err, webhooks};
use crate::admission::{
    self, AccountOverrides, IdempotencyRecords, KeyRates, Loaded, Plan, RateWindow, Recent,
    SpendDay,
};
use crate::model::ChainHead;
use crate::rules::TemplateRules;
use crate::*;

/// Takes batches of waiting sends off its queue and answers each send.
pub(super) async fn batcher(
    pool: Pool,
    mut rx: mpsc::UnboundedReceiver<(SealedOtp, AcceptReply)>,
    max_batch: usize,
    limits: LiveLimits,
) {
    loop {
        let mut batch = Vec::new();
        match rx.recv().await {
            Some(first) => batch.push(first),
            None => return,
        }
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (otps, replies): (Vec<SealedOtp>, Vec<AcceptReply>) = batch.into_iter().unzip();
        match accept_batch(&pool, &otps, &limits.get()).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "PostgreSQL batch was not committed");
                for reply in replies {
                    let _ = reply.send(Err(AcceptError::Store(e.clone())));
                }
            }
        }
    }
}

/// Loads, decides, writes and commits a batch of sends. The outer error means
/// nothing was committed; inner errors are per send.
async fn accept_batch(
    pool: &Pool,
    sealed: &[SealedOtp],
    limits: &SendLimits,
) -> Result<Vec<Result<Accepted, AcceptError>>, StoreError> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let loaded = load(&tx, sealed, limits).await?;
    let plan = admission::decide(
        loaded,
        sealed.iter().map(|s| (&s.otp, s.idempotency.as_ref())),
        limits,
    );
    let (ids, jobs) = write(&tx, sealed, &plan).await?;
    tx.commit().await.map_err(pg_err)?;
    plan.results(&ids, &jobs, |i, insert, id| sealed[i].written(insert, id))
}

async fn load(
    tx: &Transaction<'_>,
    sealed: &[SealedOtp],
    limits: &SendLimits,
) -> Result<Loaded, StoreError> {
    let otps: Vec<&NewOtp> = sealed.iter().map(|s| &s.otp).collect();
    let mut loaded = Loaded::default();
    // The first records resends repeat, locked in id order, before the
    // accounts (a verification holds a first record's lock while it writes
    // the chain's other records, and a refund holds such a record while it
    // waits for its account, so locking them after the accounts could close
    // a cycle). A resend so copies the attempts and expiry as they stand.
    let mut head_ids: Vec<i64> = otps
        .iter()
        .filter_map(|o| o.resend_of.map(|r| r.id))
        .collect();
    if !head_ids.is_empty() {
        head_ids.sort_unstable();
        head_ids.dedup();
        let rows = tx
            .query_cached(
                "SELECT id, account_id, api_key_id, e164, otp_options, resend_of, \
                 otp_hash IS NOT NULL, expires_at, verify_attempts, verified_at \
                 FROM otps WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&head_ids],
            )
            .await
            .map_err(pg_err)?;
        for r in rows {
            let option: String = r.get(4);
            loaded.heads.insert(
                r.get(0),
                ChainHead {
                    id: r.get(0),
                    account_id: r.get(1),
                    api_key_id: r.get(2),
                    e164: r.get(3),
                    generated: option == "generated",
                    resend_of: r.get(5),
                    has_code: r.get(6),
                    expires_at: r.get(7),
                    attempts: r.get(8),
                    verified_at: r.get(9),
                },
            );
        }
    }

    let mut ids: Vec<i64> = otps.iter().map(|o| o.account_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = tx
        .query_cached(
            "SELECT id, sms_credits, phone_credits, otp_count, rate_second, rate_current, \
             rate_previous, spend_day, spend_today, max_rps, daily_spend_cap, \
             disabled_at IS NOT NULL, fallback_channel, fallback_after_seconds, fallback_voice \
             FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await
        .map_err(pg_err)?;
    for r in rows {
        if r.get::<_, bool>(11) {
            loaded.disabled_accounts.insert(r.get(0));
        }
        if let Some(default) = crate::rows::account_fallback(r.get(12), r.get(13), r.get(14))? {
            loaded.fallbacks.insert(r.get(0), default);
        }
        loaded.balances.insert_with(
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            RateWindow {
                second: r.get(4),
                current: r.get(5),
                previous: r.get(6),
            },
            SpendDay {
                day: r.get(7),
                spent: r.get(8),
            },
            AccountOverrides {
                max_rps: r.get(9),
                daily_spend_cap: r.get(10),
            },
        );
    }
    // The rest reads what the locked accounts' sends need. The statements do
    // not depend on one another, so they go out together, pipelined on the
    // connection: one round trip for the lot while the account locks are held.
    let wanted_keys = KeyRates::wanted(&otps);
    let wanted = Recent::wanted(&otps, limits);
    let (template_accounts, template_keys): (Vec<i64>, Vec<Vec<u8>>) =
        TemplateRules::wanted(&otps).into_iter().unzip();
    let keyed: Vec<(i64, &str)> = sealed
        .iter()
        .filter_map(|s| Some((s.otp.account_id, s.idempotency.as_ref()?.key.as_str())))
        .collect();
    let (watch_rows, key_rows, recent_rows, template_rows, idempotency_rows) = tokio::try_join!(
        // Where accounts with a webhook get a `low_balance` event.
        async {
            tx.query_cached(
                "SELECT account_id, low_balance_sms_credits, low_balance_phone_credits \
                 FROM webhooks WHERE account_id = ANY($1)",
                &[&ids],
            )
            .await
        },
        // Every key of the batch: whether it is still live (a revocation
        // committed on any node before this statement is seen), and its
        // window. A key belongs to one account, and that account's row is
        // locked now, so no other batch changes the key's window until this
        // one commits.
        async {
            if wanted_keys.is_empty() {
                return Ok(Vec::new());
            }
            tx.query_cached(
                "SELECT id, revoked_at IS NOT NULL, rate_second, rate_current, rate_previous \
                 FROM api_keys WHERE id = ANY($1)",
                &[&wanted_keys],
            )
            .await
        },
        // The account rows are locked now, so every earlier send to these
        // numbers (from any node) is committed, and this statement's snapshot
        // sees it.
        recent_sends(tx, &wanted, limits),
        // Approved templates: whether each account of the batch has any, and
        // whether the text each send names is one of them.
        async {
            tx.query_cached(
                "SELECT u.a, u.h, \
                 EXISTS (SELECT 1 FROM account_templates t WHERE t.account_id = u.a), \
                 EXISTS (SELECT 1 FROM account_templates t WHERE t.account_id = u.a \
                   AND t.text_hash = u.h) \
                 FROM UNNEST($1::int8[], $2::bytea[]) AS u(a, h)",
                &[&template_accounts, &template_keys],
            )
            .await
        },
        stored_idempotency(tx, &keyed, &otps),
    )
    .map_err(pg_err)?;
    for r in watch_rows {
        loaded.balances.watch_low_balance(
            r.get(0),
            limits.low_balance.with_overrides(r.get(1), r.get(2)),
        );
    }
    let mut live = std::collections::HashSet::new();
    for r in key_rows {
        if r.get::<_, bool>(1) {
            continue;
        }
        live.insert(r.get::<_, i64>(0));
        loaded.key_rates.insert(
            r.get(0),
            RateWindow {
                second: r.get(2),
                current: r.get(3),
                previous: r.get(4),
            },
        );
    }
    loaded.revoked_keys = wanted_keys
        .into_iter()
        .filter(|k| !live.contains(k))
        .collect();
    for r in recent_rows {
        loaded.recent.insert(r.get(0), r.get(1), r.get(2));
    }
    for r in template_rows {
        loaded
            .templates
            .insert(r.get(0), r.get(1), r.get(2), r.get(3));
    }
    for r in idempotency_rows {
        let accepted = Accepted {
            id: r.get(3),
            account_seq: r.get(4),
            sms_credits: r.get(5),
            phone_credits: r.get(6),
            fallback: None,
            leased_job: None,
        };
        loaded
            .idempotency
            .insert_stored(r.get(0), r.get(1), r.get(2), accepted, r.get(7));
    }
    Ok(loaded)
}

/// The latest sends to the numbers the per-number limits look at.
async fn recent_sends(
    tx: &Transaction<'_>,
    wanted: &[(AccountId, String, Micros)],
    limits: &SendLimits,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let accounts: Vec<i64> = wanted.iter().map(|w| w.0).collect();
    let numbers: Vec<&str> = wanted.iter().map(|w| w.1.as_str()).collect();
    let since: Vec<i64> = wanted.iter().map(|w| w.2).collect();
    tx.query_cached(
        "SELECT u.a, u.e, o.created_at \
         FROM UNNEST($1::int8[], $2::text[], $3::int8[]) AS u(a, e, since) \
         CROSS JOIN LATERAL (SELECT created_at FROM otps \
           WHERE account_id = u.a AND e164 = u.e AND created_at > u.since \
           ORDER BY created_at DESC LIMIT $4) o",
        &[&accounts, &numbers, &since, &limits.depth()],
    )
    .await
}

/// The idempotency records stored under the batch's keys.
async fn stored_idempotency(
    tx: &Transaction<'_>,
    keyed: &[(i64, &str)],
    otps: &[&NewOtp],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    if keyed.is_empty() {
        return Ok(Vec::new());
    }
    let accounts: Vec<i64> = keyed.iter().map(|k| k.0).collect();
    let names: Vec<&str> = keyed.iter().map(|k| k.1).collect();
    tx.query_cached(
        "SELECT i.account_id, i.idem_key, i.body_hash, i.otp_id, i.account_seq, \
         i.sms_credits, i.phone_credits, i.created_at FROM idempotency i \
         JOIN UNNEST($1::int8[], $2::text[]) AS u(a, k) \
         ON i.account_id = u.a AND i.idem_key = u.k WHERE i.created_at > $3",
        &[&accounts, &names, &IdempotencyRecords::since(otps)],
    )
    .await
}

/// Writes the plan's inserts and the rows it changed; returns the ids of the
/// new OTP rows and of their jobs where leased, one per insert, in the
/// plan's order.
async fn write(
    tx: &Transaction<'_>,
    sealed: &[SealedOtp],
    plan: &Plan,
) -> Result<(Vec<i64>, Vec<Option<i64>>), StoreError> {
    let inserts: Vec<(&SealedOtp, &admission::Insert)> = plan
        .inserts()
        .map(|(i, insert)| (&sealed[i], insert))
        .collect();
    if inserts.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let column = |f: &dyn Fn(&NewOtp) -> i64| -> Vec<i64> {
        inserts.iter().map(|(s, _)| f(&s.otp)).collect()
    };
    let text = |f: &dyn Fn(&NewOtp) -> String| -> Vec<String> {
        inserts.iter().map(|(s, _)| f(&s.otp)).collect()
    };
    let account_ids = column(&|o| o.account_id);
    let seqs: Vec<i64> = inserts.iter().map(|(_, t)| t.taken.account_seq).collect();
    let api_key_ids: Vec<Option<i64>> = inserts.iter().map(|(s, _)| s.otp.api_key_id).collect();
    let phones = text(&|o| o.number.display().to_owned());
    let e164s = text(&|o| o.number.e164().to_owned());
    let templates = text(&|o| o.template.as_str().to_owned());
    let messages: Vec<&str> = inserts
        .iter()
        .map(|(s, _)| s.masked_message.as_str())
        .collect();
    let salts: Vec<&[u8]> = inserts.iter().map(|(s, _)| &s.code.salt[..]).collect();
    let hashes: Vec<&[u8]> = inserts.iter().map(|(s, _)| &s.code.hash[..]).collect();
    let ciphers: Vec<&[u8]> = inserts
        .iter()
        .map(|(s, _)| s.code.cipher.as_slice())
        .collect();
    let key_ids: Vec<&str> = inserts
        .iter()
        .map(|(s, _)| s.code.key_id.as_str())
        .collect();
    let expires: Vec<i64> = inserts.iter().map(|(s, t)| t.expires_at(&s.otp)).collect();
    let resend_ofs: Vec<Option<i64>> = inserts.iter().map(|(_, t)| t.resend_of()).collect();
    let attempts: Vec<i64> = inserts.iter().map(|(_, t)| t.attempts()).collect();
    let options = text(&|o| o.otp_option.as_str().to_owned());
    let channels = text(&|o| o.channel.as_str().to_owned());
    let voices: Vec<Option<&str>> = inserts
        .iter()
        .map(|(s, _)| s.otp.voice.map(|v| v.as_str()))
        .collect();
    let factors: Vec<Option<f64>> = inserts.iter().map(|(s, _)| s.otp.length_factor).collect();
    let companies: Vec<Option<String>> = inserts
        .iter()
        .map(|(s, _)| s.otp.company_name.clone())
        .collect();
    let segments = column(&|o| i64::from(o.segments));
    let credits = column(&|o| o.cost.sms + o.cost.phone);
    let created = column(&|o| o.created_at);

    // The balances and windows the plan left, and the conversion counts:
    // these do not need the new ids, so they go out with the insert.
    let mut cols: [Vec<i64>; 9] = Default::default();
    for (id, b) in &plan.accounts {
        for (col, v) in cols.iter_mut().zip(std::iter::once(*id).chain(b.columns())) {
            col.push(v);
        }
    }
    let [ua, us, up, uc, rs, rc, rp, sd, st] = &cols;
    let mut kcols: [Vec<i64>; 4] = Default::default();
    for (id, w) in &plan.key_rates {
        for (col, v) in kcols.iter_mut().zip([*id, w.second, w.current, w.previous]) {
            col.push(v);
        }
    }
    let [ki, ks, kc, kp] = &kcols;
    let update_accounts = async {
        tx.execute_cached(
            "UPDATE accounts a SET sms_credits = u.s, phone_credits = u.p, otp_count = u.c, \
             rate_second = u.rs, rate_current = u.rc, rate_previous = u.rp, spend_day = u.sd, \
             spend_today = u.st \
             FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], \
             $7::int8[], $8::int8[], $9::int8[]) AS u(id, s, p, c, rs, rc, rp, sd, st) \
             WHERE a.id = u.id",
            &[ua, us, up, uc, rs, rc, rp, sd, st],
        )
        .await
        .map_err(pg_err)
    };
    let update_keys = async {
        if ki.is_empty() {
            return Ok(0);
        }
        tx.execute_cached(
            "UPDATE api_keys k SET rate_second = u.s, rate_current = u.c, rate_previous = u.p \
             FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[]) AS u(id, s, c, p) \
             WHERE k.id = u.id",
            &[ki, ks, kc, kp],
        )
        .await
        .map_err(pg_err)
    };
    let count = super::conversions::record(tx, inserts.iter().map(|(s, _)| &s.otp), &[]);

    let insert = async {
        tx.query_cached(
            "INSERT INTO otps (account_id, account_seq, api_key_id, phone_number, e164, template, \
             message, otp_options, channel, voice_input, length_factor, company_name, segments, \
             credits_used, status, status_at, created_at, code_salt, otp_hash, otp_cipher, key_id, \
             expires_at, resend_of, verify_attempts) \
             SELECT a, s, k, p, e, t, m, op, ch, v, lf, co, sg, cr, 'queued', ts, ts, sa, h, ci, ki, ex, \
             rs, va \
             FROM UNNEST(\
             $1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], \
             $8::text[], $9::text[], $10::text[], $11::float8[], $12::text[], \
             $13::int8[], $14::int8[], $15::int8[], $16::bytea[], $17::bytea[], $18::bytea[], \
             $19::text[], $20::int8[], $21::int8[], $22::int8[]) \
             AS u(a, s, k, p, e, t, m, op, ch, v, lf, co, sg, cr, ts, sa, h, ci, ki, ex, rs, va) \
             RETURNING id, account_id, account_seq",
            &[
                &account_ids,
                &seqs,
                &api_key_ids,
                &phones,
                &e164s,
                &templates,
                &messages,
                &options,
                &channels,
                &voices,
                &factors,
                &companies,
                &segments,
                &credits,
                &created,
                &salts,
                &hashes,
                &ciphers,
                &key_ids,
                &expires,
                &resend_ofs,
                &attempts,
            ],
        )
        .await
        .map_err(pg_err)
    };
    let (inserted, _, _, _) = tokio::try_join!(insert, update_accounts, update_keys, count)?;
    // RETURNING does not promise the input's order: (account, seq) is unique.
    let mut by_seq = HashMap::with_capacity(inserted.len());
    for r in &inserted {
        by_seq.insert((r.get::<_, i64>(1), r.get::<_, i64>(2)), r.get::<_, i64>(0));
    }
    let otp_ids: Vec<i64> = account_ids
        .iter()
        .zip(&seqs)
        .map(|(a, s)| by_seq.get(&(*a, *s)).copied().unwrap_or(0))
        .collect();
    if otp_ids.contains(&0) {
        return Err(StoreError::Internal("an inserted OTP went missing".into()));
    }
    // The rows that name the new OTPs, pipelined in one round trip.
    let (neg_sms, neg_phone): (Vec<i64>, Vec<i64>) = inserts
        .iter()
        .map(|(s, insert)| {
            let charge = insert.charge(&s.otp);
            (-charge.sms, -charge.phone)
        })
        .unzip();
    let (mut low_ids, mut low_credits, mut low_thresholds) = (Vec::new(), Vec::new(), Vec::new());
    let (mut low_sms, mut low_phone, mut low_at) = (Vec::new(), Vec::new(), Vec::new());
    for ((s, insert), id) in inserts.iter().zip(&otp_ids) {
        let t = &insert.taken;
        if let Some(low) = t.low_balance {
            low_ids.push(*id);
            low_credits.push(low.credits.as_str());
            low_thresholds.push(low.threshold);
            low_sms.push(t.sms_left);
            low_phone.push(t.phone_left);
            low_at.push(s.otp.created_at);
        }
    }
    let (mut ka, mut kn, mut kh, mut ko, mut ks, mut ksms, mut kph, mut kt) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for ((s, insert), id) in inserts.iter().zip(&otp_ids) {
        if let Some(k) = &s.idempotency {
            let t = &insert.taken;
            ka.push(s.otp.account_id);
            kn.push(k.key.as_str());
            kh.push(k.body_hash.as_slice());
            ko.push(*id);
            ks.push(t.account_seq);
            ksms.push(t.sms_left);
            kph.push(t.phone_left);
            kt.push(s.otp.created_at);
        }
    }
    // A leased job gets what a claim gives it (`claim_sql`).
    let owners: Vec<Option<&str>> = inserts
        .iter()
        .map(|(s, _)| s.lease.as_ref().map(|l| l.node.as_str()))
        .collect();
    let untils: Vec<Option<i64>> = inserts
        .iter()
        .map(|(s, _)| s.lease.as_ref().map(|l| l.until))
        .collect();
    let jobs = async {
        tx.query_cached(
            "INSERT INTO delivery_jobs (otp_id, channel, state, next_attempt_at, updated_at, \
                 lease_owner, attempts) \
             SELECT i, ch, 'queued', COALESCE(lu, ts), ts, lo, CASE WHEN lo IS NULL THEN 0 ELSE 1 END \
             FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::text[], $5::int8[]) \
                 AS u(i, ch, ts, lo, lu) \
             RETURNING otp_id, id",
            &[&otp_ids, &channels, &created, &owners, &untils],
        )
        .await
        .map_err(pg_err)
    };
    let ledger = async {
        tx.execute_cached(
            "INSERT INTO ledger (account_id, kind, sms_delta, phone_delta, otp_id, created_at) \
             SELECT a, 'debit', s, p, i, ts FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) \
             AS u(a, s, p, i, ts)",
            &[&account_ids, &neg_sms, &neg_phone, &otp_ids, &created],
        )
        .await
        .map_err(pg_err)
    };
    let (mut fb_ids, mut fb_voices, mut fb_due, mut fb_credits) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((_, insert), id) in inserts.iter().zip(&otp_ids) {
        if let Some(f) = insert.fallback {
            fb_ids.push(*id);
            fb_voices.push(f.voice.as_str());
            fb_due.push(f.due_at);
            fb_credits.push(f.phone_credits);
        }
    }
    let fallbacks = async {
        if fb_ids.is_empty() {
            return Ok(0);
        }
        tx.execute_cached(
            "UPDATE otps o SET fallback_channel = 'voice', fallback_voice = u.v, \
             fallback_due_at = u.d, fallback_credits = u.c, fallback_state = 'pending' \
             FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::int8[]) AS u(i, v, d, c) \
             WHERE o.id = u.i",
            &[&fb_ids, &fb_voices, &fb_due, &fb_credits],
        )
        .await
        .map_err(pg_err)
    };
    let low_balance = webhooks::enqueue_low_balance(
        tx,
        &low_ids,
        &low_credits,
        &low_thresholds,
        (&low_sms, &low_phone),
        &low_at,
    );
    let idempotency = async {
        if ka.is_empty() {
            return Ok(0);
        }
        // A row still there under the key has expired (a live one was replayed).
        tx.execute_cached(
            "INSERT INTO idempotency (account_id, idem_key, body_hash, otp_id, account_seq, \
             sms_credits, phone_credits, created_at) \
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::bytea[], $4::int8[], $5::int8[], \
             $6::int8[], $7::int8[], $8::int8[]) \
             ON CONFLICT (account_id, idem_key) DO UPDATE SET body_hash = excluded.body_hash, \
             otp_id = excluded.otp_id, account_seq = excluded.account_seq, \
             sms_credits = excluded.sms_credits, phone_credits = excluded.phone_credits, \
             created_at = excluded.created_at",
            &[&ka, &kn, &kh, &ko, &ks, &ksms, &kph, &kt],
        )
        .await
        .map_err(pg_err)
    };
    let (job_rows, _, _, _, _) =
        tokio::try_join!(jobs, ledger, fallbacks, low_balance, idempotency)?;
    let job_of: HashMap<i64, i64> = job_rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let leased = inserts
        .iter()
        .zip(&otp_ids)
        .map(|((s, _), id)| s.lease.as_ref().and(job_of.get(id).copied()))
        .collect();
    Ok((otp_ids, leased))
}
