//! Accepting a batch of sends in the writer's transaction: load what the
//! admission rules read, run [`admission::decide`], write what its plan
//! says. Every statement is prepared once and cached on the writer's
//! connection.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{map_err, webhooks};
use crate::admission::{
    self, AccountOverrides, IdempotencyRecords, KeyRates, Loaded, Plan, RateWindow, Recent,
    SpendDay,
};
use crate::model::ChainHead;
use crate::rules::TemplateRules;
use crate::*;

/// Loads, decides and writes a batch of sends inside `tx`. The outer error
/// means the transaction must not commit; inner errors are per send.
pub(super) fn accept_batch(
    tx: &Transaction<'_>,
    otps: &[&SealedOtp],
    limits: &SendLimits,
) -> Result<Vec<Result<Accepted, AcceptError>>, StoreError> {
    if otps.is_empty() {
        return Ok(Vec::new());
    }
    let loaded = load(tx, otps, limits)?;
    let plan = admission::decide(
        loaded,
        otps.iter().map(|s| (&s.otp, s.idempotency.as_ref())),
        limits,
    );
    let (ids, jobs) = write(tx, otps, &plan)?;
    super::conversions::record(tx, plan.inserts().map(|(i, _)| &otps[i].otp), &[])?;
    plan.results(&ids, &jobs, |i, insert, id| otps[i].written(insert, id))
}

fn load(
    tx: &Transaction<'_>,
    otps: &[&SealedOtp],
    limits: &SendLimits,
) -> Result<Loaded, StoreError> {
    let plain: Vec<&NewOtp> = otps.iter().map(|s| &s.otp).collect();
    let mut loaded = Loaded::default();
    let mut stmt = tx
        .prepare_cached(
            "SELECT sms_credits, phone_credits, otp_count, rate_second, rate_current, \
             rate_previous, spend_day, spend_today, max_rps, daily_spend_cap, \
             disabled_at IS NOT NULL, fallback_channel, fallback_after_seconds, fallback_voice \
             FROM accounts WHERE id = ?1",
        )
        .map_err(map_err)?;
    for otp in &plain {
        if loaded.balances.contains(otp.account_id) {
            continue;
        }
        let found = stmt
            .query_row([otp.account_id], |r| {
                Ok((
                    (
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ),
                    RateWindow {
                        second: r.get(3)?,
                        current: r.get(4)?,
                        previous: r.get(5)?,
                    },
                    SpendDay {
                        day: r.get(6)?,
                        spent: r.get(7)?,
                    },
                    AccountOverrides {
                        max_rps: r.get(8)?,
                        daily_spend_cap: r.get(9)?,
                    },
                    r.get::<_, bool>(10)?,
                    (r.get(11)?, r.get(12)?, r.get(13)?),
                ))
            })
            .optional()
            .map_err(map_err)?;
        if let Some(((sms, phone, count), rate, spend, overrides, disabled, fallback)) = found {
            if disabled {
                loaded.disabled_accounts.insert(otp.account_id);
            }
            let (channel, after, voice) = fallback;
            if let Some(default) = crate::rows::account_fallback(channel, after, voice)? {
                loaded.fallbacks.insert(otp.account_id, default);
            }
            loaded
                .balances
                .insert_with(otp.account_id, sms, phone, count, rate, spend, overrides);
            if let Some(thresholds) =
                webhooks::low_balance_thresholds(tx, otp.account_id, limits.low_balance)?
            {
                loaded
                    .balances
                    .watch_low_balance(otp.account_id, thresholds);
            }
        }
    }

    // Every key of the batch: whether it is still live, and its window.
    let mut stmt = tx
        .prepare_cached(
            "SELECT revoked_at IS NOT NULL, rate_second, rate_current, rate_previous \
             FROM api_keys WHERE id = ?1",
        )
        .map_err(map_err)?;
    for key in KeyRates::wanted(&plain) {
        let found = stmt
            .query_row([key], |r| {
                Ok((
                    r.get::<_, bool>(0)?,
                    RateWindow {
                        second: r.get(1)?,
                        current: r.get(2)?,
                        previous: r.get(3)?,
                    },
                ))
            })
            .optional()
            .map_err(map_err)?;
        match found {
            Some((false, window)) => loaded.key_rates.insert(key, window),
            Some((true, _)) | None => {
                loaded.revoked_keys.insert(key);
            }
        }
    }

    let mut stmt = tx
        .prepare_cached(
            "SELECT created_at FROM otps WHERE account_id = ?1 AND e164 = ?2 \
             AND created_at > ?3 ORDER BY created_at DESC LIMIT ?4",
        )
        .map_err(map_err)?;
    for (account, e164, since) in Recent::wanted(&plain, limits) {
        let times = stmt
            .query_map(params![account, e164, since, limits.depth()], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(map_err)?;
        for at in times {
            loaded.recent.insert(account, &e164, at.map_err(map_err)?);
        }
    }

    let mut stmt = tx
        .prepare_cached(
            "SELECT id, account_id, api_key_id, e164, otp_options, resend_of, \
             otp_hash IS NOT NULL, expires_at, verify_attempts, verified_at \
             FROM otps WHERE id = ?1",
        )
        .map_err(map_err)?;
    for resend in plain.iter().filter_map(|o| o.resend_of) {
        if loaded.heads.contains_key(&resend.id) {
            continue;
        }
        let found = stmt
            .query_row([resend.id], |r| {
                Ok(ChainHead {
                    id: r.get(0)?,
                    account_id: r.get(1)?,
                    api_key_id: r.get(2)?,
                    e164: r.get(3)?,
                    generated: r.get::<_, String>(4)? == "generated",
                    resend_of: r.get(5)?,
                    has_code: r.get(6)?,
                    expires_at: r.get(7)?,
                    attempts: r.get(8)?,
                    verified_at: r.get(9)?,
                })
            })
            .optional()
            .map_err(map_err)?;
        if let Some(head) = found {
            loaded.heads.insert(head.id, head);
        }
    }

    let mut stmt = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM account_templates WHERE account_id = ?1), \
             EXISTS (SELECT 1 FROM account_templates WHERE account_id = ?1 AND text_hash = ?2)",
        )
        .map_err(map_err)?;
    for (account, key) in TemplateRules::wanted(&plain) {
        let (restricted, approved) = stmt
            .query_row(params![account, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(map_err)?;
        loaded.templates.insert(account, key, restricted, approved);
    }

    let mut stmt = tx
        .prepare_cached(
            "SELECT body_hash, otp_id, account_seq, sms_credits, phone_credits, created_at \
             FROM idempotency WHERE account_id = ?1 AND idem_key = ?2 AND created_at > ?3",
        )
        .map_err(map_err)?;
    let since = IdempotencyRecords::since(&plain);
    for s in otps {
        let Some(k) = &s.idempotency else { continue };
        let found = stmt
            .query_row(params![s.otp.account_id, k.key, since], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    Accepted {
                        id: r.get(1)?,
                        account_seq: r.get(2)?,
                        sms_credits: r.get(3)?,
                        phone_credits: r.get(4)?,
                        fallback: None,
                        leased_job: None,
                    },
                    r.get::<_, i64>(5)?,
                ))
            })
            .optional()
            .map_err(map_err)?;
        if let Some((hash, accepted, at)) = found {
            loaded
                .idempotency
                .insert_stored(s.otp.account_id, &k.key, hash, accepted, at);
        }
    }
    Ok(loaded)
}

/// Writes the plan's inserts in its order and the rows it changed; returns
/// the ids of the new OTP rows and of their jobs where leased, one per insert.
fn write(
    tx: &Transaction<'_>,
    otps: &[&SealedOtp],
    plan: &Plan,
) -> Result<(Vec<i64>, Vec<Option<i64>>), StoreError> {
    let mut insert_otp = tx
        .prepare_cached(
            "INSERT INTO otps (account_id, account_seq, api_key_id, phone_number, e164, template, \
             message, otp_options, channel, voice_input, length_factor, company_name, \
             segments, credits_used, status, status_at, created_at, code_salt, otp_hash, otp_cipher, \
             key_id, expires_at, resend_of, verify_attempts) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'queued', ?15, ?15, \
             ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
        )
        .map_err(map_err)?;
    let mut insert_job = tx
        .prepare_cached(
            "INSERT INTO delivery_jobs (otp_id, channel, state, next_attempt_at, updated_at, \
             lease_owner, attempts) VALUES (?1, ?2, 'queued', COALESCE(?5, ?3), ?3, ?4, ?6)",
        )
        .map_err(map_err)?;
    let mut insert_ledger = tx
        .prepare_cached(
            "INSERT INTO ledger (account_id, kind, sms_delta, phone_delta, otp_id, created_at) \
             VALUES (?1, 'debit', ?2, ?3, ?4, ?5)",
        )
        .map_err(map_err)?;
    // A row still there under the key has expired (a live one was replayed).
    let mut insert_key = tx
        .prepare_cached(
            "INSERT INTO idempotency (account_id, idem_key, body_hash, otp_id, account_seq, \
             sms_credits, phone_credits, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (account_id, idem_key) DO UPDATE SET body_hash = excluded.body_hash, \
             otp_id = excluded.otp_id, account_seq = excluded.account_seq, \
             sms_credits = excluded.sms_credits, phone_credits = excluded.phone_credits, \
             created_at = excluded.created_at",
        )
        .map_err(map_err)?;
    let (mut ids, mut jobs) = (Vec::new(), Vec::new());
    for (i, insert) in plan.inserts() {
        let SealedOtp {
            otp,
            code,
            masked_message,
            idempotency,
            lease,
            ..
        } = otps[i];
        let taken = &insert.taken;
        insert_otp
            .execute(params![
                otp.account_id,
                taken.account_seq,
                otp.api_key_id,
                otp.number.display(),
                otp.number.e164(),
                otp.template.as_str(),
                masked_message,
                otp.otp_option.as_str(),
                otp.channel.as_str(),
                otp.voice.map(|v| v.as_str()),
                otp.length_factor,
                otp.company_name,
                otp.segments,
                otp.cost.sms + otp.cost.phone,
                otp.created_at,
                &code.salt[..],
                &code.hash[..],
                code.cipher,
                code.key_id,
                insert.expires_at(otp),
                insert.resend_of(),
                insert.attempts(),
            ])
            .map_err(map_err)?;
        let id = tx.last_insert_rowid();
        // A leased job gets what a claim gives it (`claim_jobs`).
        insert_job
            .execute(params![
                id,
                otp.channel.as_str(),
                otp.created_at,
                lease.as_ref().map(|l| l.node.as_str()),
                lease.as_ref().map(|l| l.until),
                i64::from(lease.is_some())
            ])
            .map_err(map_err)?;
        jobs.push(lease.is_some().then(|| tx.last_insert_rowid()));
        let charge = insert.charge(otp);
        insert_ledger
            .execute(params![
                otp.account_id,
                -charge.sms,
                -charge.phone,
                id,
                otp.created_at
            ])
            .map_err(map_err)?;
        if let Some(f) = insert.fallback {
            tx.prepare_cached(
                "UPDATE otps SET fallback_channel = 'voice', fallback_voice = ?2, \
                 fallback_due_at = ?3, fallback_credits = ?4, fallback_state = 'pending' \
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, f.voice.as_str(), f.due_at, f.phone_credits]))
            .map_err(map_err)?;
        }
        if let Some(low) = taken.low_balance {
            webhooks::enqueue_low_balance(
                tx,
                id,
                low,
                (taken.sms_left, taken.phone_left),
                otp.created_at,
            )?;
        }
        if let Some(k) = idempotency {
            insert_key
                .execute(params![
                    otp.account_id,
                    k.key,
                    k.body_hash,
                    id,
                    taken.account_seq,
                    taken.sms_left,
                    taken.phone_left,
                    otp.created_at
                ])
                .map_err(map_err)?;
        }
        ids.push(id);
    }
    let mut update = tx
        .prepare_cached(
            "UPDATE accounts SET sms_credits = ?2, phone_credits = ?3, otp_count = ?4, \
             rate_second = ?5, rate_current = ?6, rate_previous = ?7, spend_day = ?8, \
             spend_today = ?9 WHERE id = ?1",
        )
        .map_err(map_err)?;
    for (id, b) in &plan.accounts {
        update
            .execute(rusqlite::params_from_iter(
                std::iter::once(*id).chain(b.columns()),
            ))
            .map_err(map_err)?;
    }
    let mut update_key = tx
        .prepare_cached(
            "UPDATE api_keys SET rate_second = ?2, rate_current = ?3, rate_previous = ?4 \
             WHERE id = ?1",
        )
        .map_err(map_err)?;
    for (id, w) in &plan.key_rates {
        update_key
            .execute(params![id, w.second, w.current, w.previous])
            .map_err(map_err)?;
    }
    Ok((ids, jobs))
}
