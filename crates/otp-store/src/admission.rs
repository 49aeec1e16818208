//! Which sends of a batch are accepted: one pure decision, run by both backends.
//!
//! A backend takes a batch of sends in arrival order, opens its transaction,
//! loads what the rules read into a [`Loaded`] (plain data: the balances and
//! limits of the accounts the batch touches, the rate windows of its API keys,
//! the recent sends to its numbers, the first records of the chains its
//! resends repeat and the stored results of its idempotency keys), then calls
//! [`decide`]. The [`Plan`] it gets back says, per send, whether it is
//! refused, replays an earlier result or is inserted (with its number in the
//! account, its chain, the balances it leaves and whether it takes a balance
//! below its low-balance threshold), and which account and key rows to write
//! back. The backend only runs the SQL the plan names, in the plan's order,
//! and turns the plan and the new row ids into the callers' answers with
//! [`Plan::results`]. This is the shape of `VerifyRow::step`: load, one pure
//! decision, write.
//!
//! Each send meets the rules in this order, and the first that refuses it
//! answers it:
//! 0. its API key must still be live ([`Loaded::revoked_keys`]): a key revoked
//!    (on any node) before the batch's transaction read it is refused
//!    ([`AcceptError::KeyRevoked`]), replays included, so callers may
//!    authenticate sends from a cache; and its account must not be disabled
//!    ([`Loaded::disabled_accounts`], [`AcceptError::AccountDisabled`]),
//!    read the same way;
//! 1. its idempotency key ([`IdempotencyRecords`]): a key the account used
//!    within [`IDEMPOTENCY_TTL`], stored or earlier in the same batch, replays
//!    what that send got if the body is the same and is refused
//!    ([`AcceptError::IdempotencyKeyReused`]) if not;
//! 2. an account restricted to approved templates sends only those
//!    ([`TemplateRules`], [`AcceptError::TemplateNotApproved`]); a replay
//!    answered by rule 1 is not checked again, as it sends nothing;
//! 3. a resend whose chain's first record can no longer verify is refused
//!    ([`AcceptError::ResendStale`]);
//! 4. the per-destination limits ([`Recent`]);
//! 5. the API key's rate ([`KeyRates`]);
//! 6. the account ([`Balances::take`]): it must exist, then its rate, its
//!    daily spend cap and its credits must allow the send, with the phone
//!    credits its fallback call reserves: its own call, or the account's
//!    default ([`Loaded::fallbacks`], read with the balances) when it asked
//!    for it ([`crate::fallback::SendFallback::resolve`]).
//!
//! A send is accepted only if its account can pay for it at that point, so 200
//! concurrent sends against 100 credits accept exactly 100 whichever batches
//! they land in. Each accepted send counts in what the later sends of the
//! batch are decided on: its balance, its rate windows, its number's recent
//! sends and its idempotency key.
//!
//! The per-account and per-key rates and the daily spend cap live on the account
//! and key rows themselves ([`RateWindow`], [`SpendDay`]): they are read with the
//! locked account row and written back with its new balance, so a batch costs
//! no extra statement per send and nodes sharing a database share the counts.
//!
//! A send that takes a balance from at least its low-balance threshold to
//! below it is marked ([`Taken::low_balance`]) for a `low_balance` webhook
//! event, recorded in the same transaction: once per fall, again only after a
//! top-up lifts the balance to the threshold and a send takes it below again.

use std::collections::{HashMap, HashSet};

use otp_domain::credits::Cost;

use crate::fallback::{AccountFallback, NewFallback};
use crate::model::ChainHead;
use crate::rules::TemplateRules;
use crate::webhooks::{LowBalance, LowBalanceThresholds};
use crate::{
    AcceptError, Accepted, AccountId, IDEMPOTENCY_TTL, IdempotencyKey, LeasedJob, LimitKind,
    Micros, NewOtp, OtpRecord, SendLimits, StoreError,
};

/// An account's balance as the batch goes along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub sms: i64,
    pub phone: i64,
    pub otp_count: i64,
    /// Its accepted sends per second, for the per-account rate.
    pub rate: RateWindow,
    /// What it spent today, for the daily cap.
    pub spend: SpendDay,
    /// The account's own limits (`None`: the configured default).
    pub overrides: AccountOverrides,
    /// Where a `low_balance` event fires; zero (no webhook) never does.
    pub low_balance: LowBalanceThresholds,
    /// Whether any send of this batch changed it (so it must be written back).
    pub dirty: bool,
}

impl Balance {
    /// What the batch writes back to the account row, in the order both stores'
    /// UPDATE statements name the columns: sms_credits, phone_credits,
    /// otp_count, rate_second, rate_current, rate_previous, spend_day,
    /// spend_today.
    pub fn columns(&self) -> [i64; 8] {
        [
            self.sms,
            self.phone,
            self.otp_count,
            self.rate.second,
            self.rate.current,
            self.rate.previous,
            self.spend.day,
            self.spend.spent,
        ]
    }
}

/// An account's own limits, where they differ from the configured defaults;
/// zero turns a limit off for that account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountOverrides {
    pub max_rps: Option<i64>,
    pub daily_spend_cap: Option<i64>,
}

const SECOND: Micros = 1_000_000;

/// Accepted sends in the current second and the one before it. The rate is
/// estimated over the last whole second: the sends of this second plus those of
/// the previous one weighted by how much of it that second still covers, which
/// smooths the burst a fixed window lets through at its edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateWindow {
    /// Seconds since the epoch of `current`.
    pub second: i64,
    pub current: i64,
    pub previous: i64,
}

impl RateWindow {
    /// The window moved on to `now` (a clock behind the stored second counts in
    /// the stored second, so nodes with skewed clocks cannot reset it).
    pub fn at(self, now: Micros) -> RateWindow {
        let second = now.div_euclid(SECOND);
        if second <= self.second {
            self
        } else if second == self.second + 1 {
            RateWindow {
                second,
                current: 0,
                previous: self.current,
            }
        } else {
            RateWindow {
                second,
                current: 0,
                previous: 0,
            }
        }
    }

    /// Whether one more send at `now` keeps the estimate within `limit` per
    /// second (zero: no limit).
    pub fn admits(self, now: Micros, limit: i64) -> bool {
        if limit <= 0 {
            return true;
        }
        let w = self.at(now);
        let elapsed = if now.div_euclid(SECOND) == w.second {
            now.rem_euclid(SECOND)
        } else {
            0
        };
        let estimate = i128::from(w.previous) * i128::from(SECOND - elapsed)
            + i128::from(w.current + 1) * i128::from(SECOND);
        estimate <= i128::from(limit) * i128::from(SECOND)
    }

    /// Counts a send at `now`.
    pub fn record(&mut self, now: Micros) {
        *self = self.at(now);
        self.current += 1;
    }
}

/// Credits an account spent on the day `day` (days since the epoch, in the
/// service's time zone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpendDay {
    pub day: i64,
    pub spent: i64,
}

impl SpendDay {
    fn at(self, day: i64) -> SpendDay {
        if day > self.day {
            SpendDay { day, spent: 0 }
        } else {
            self
        }
    }
}

/// Balances of the accounts one batch touches.
#[derive(Debug, Default)]
pub struct Balances {
    map: HashMap<AccountId, Balance>,
}

/// What one accepted send takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub account_seq: i64,
    pub sms_left: i64,
    pub phone_left: i64,
    /// This send took a balance below its threshold.
    pub low_balance: Option<LowBalance>,
}

impl Balances {
    pub fn insert(&mut self, account: AccountId, sms: i64, phone: i64, otp_count: i64) {
        self.insert_with(
            account,
            sms,
            phone,
            otp_count,
            RateWindow::default(),
            SpendDay::default(),
            AccountOverrides::default(),
        );
    }

    /// Whether the account is loaded already.
    pub fn contains(&self, account: AccountId) -> bool {
        self.map.contains_key(&account)
    }

    /// [`Balances::insert`] with the rate and spend state of the account row.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_with(
        &mut self,
        account: AccountId,
        sms: i64,
        phone: i64,
        otp_count: i64,
        rate: RateWindow,
        spend: SpendDay,
        overrides: AccountOverrides,
    ) {
        self.map.insert(
            account,
            Balance {
                sms,
                phone,
                otp_count,
                rate,
                spend,
                overrides,
                low_balance: LowBalanceThresholds::default(),
                dirty: false,
            },
        );
    }

    /// Sets where the account's `low_balance` events fire (only accounts
    /// with a webhook have any).
    pub fn watch_low_balance(&mut self, account: AccountId, thresholds: LowBalanceThresholds) {
        if let Some(b) = self.map.get_mut(&account) {
            b.low_balance = thresholds;
        }
    }

    /// Debits the send's cost if the account's rate, daily cap and credits allow
    /// it, and numbers it. `fallback` is the call the send writes, whose
    /// reserved phone credits are debited with it.
    pub fn take(
        &mut self,
        otp: &NewOtp,
        fallback: Option<&NewFallback>,
        limits: &SendLimits,
    ) -> Result<Taken, AcceptError> {
        let balance = self
            .map
            .get_mut(&otp.account_id)
            .ok_or(AcceptError::AccountNotFound)?;
        let max_rps = balance
            .overrides
            .max_rps
            .unwrap_or(i64::from(limits.per_account_rps));
        if !balance.rate.admits(otp.created_at, max_rps) {
            return Err(AcceptError::RateLimited {
                limit: LimitKind::AccountRate,
                retry_after_seconds: 1,
            });
        }
        let cap = balance
            .overrides
            .daily_spend_cap
            .unwrap_or(limits.daily_spend_cap);
        // The fallback call's reservation counts as spent until it goes back.
        let charge = crate::fallback::charge(otp.cost, fallback);
        let cost = charge.sms + charge.phone;
        let spend = balance.spend.at(otp.spend_day);
        if cap > 0 && spend.spent + cost > cap {
            return Err(AcceptError::RateLimited {
                limit: LimitKind::DailySpend,
                retry_after_seconds: seconds_until(otp.created_at, otp.spend_day_ends),
            });
        }
        if balance.sms < charge.sms || balance.phone < charge.phone {
            return Err(AcceptError::InsufficientCredits {
                sms_credits: balance.sms,
                phone_credits: balance.phone,
            });
        }
        balance.sms -= charge.sms;
        balance.phone -= charge.phone;
        balance.otp_count += 1;
        balance.rate.record(otp.created_at);
        balance.spend = SpendDay {
            day: spend.day,
            spent: spend.spent + cost,
        };
        balance.dirty = true;
        Ok(Taken {
            account_seq: balance.otp_count,
            sms_left: balance.sms,
            phone_left: balance.phone,
            low_balance: balance.low_balance.crossed(
                (balance.sms + charge.sms, balance.phone + charge.phone),
                (balance.sms, balance.phone),
            ),
        })
    }

    /// The accounts whose balance changed, to be written back once each.
    pub fn changed(&self) -> impl Iterator<Item = (AccountId, &Balance)> {
        self.map
            .iter()
            .filter(|(_, b)| b.dirty)
            .map(|(id, b)| (*id, b))
    }
}

/// The rate windows of the API keys a batch's sends came with.
#[derive(Debug, Default)]
pub struct KeyRates {
    map: HashMap<i64, (RateWindow, bool)>,
}

impl KeyRates {
    /// The keys a batch must load, in id order: every key it carries, for
    /// whether it is still live (rule 0), with its window.
    pub fn wanted(otps: &[&NewOtp]) -> Vec<i64> {
        let mut ids: Vec<i64> = otps.iter().filter_map(|o| o.api_key_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn insert(&mut self, key: i64, window: RateWindow) {
        self.map.insert(key, (window, false));
    }

    /// Refuses the send if its key is at its rate.
    pub fn check(&self, otp: &NewOtp, limits: &SendLimits) -> Result<(), AcceptError> {
        let Some(key) = otp.api_key_id else {
            return Ok(());
        };
        let window = self.map.get(&key).map(|(w, _)| *w).unwrap_or_default();
        if window.admits(otp.created_at, i64::from(limits.per_key_rps)) {
            Ok(())
        } else {
            Err(AcceptError::RateLimited {
                limit: LimitKind::KeyRate,
                retry_after_seconds: 1,
            })
        }
    }

    /// Counts an accepted send against its key (when keys are limited).
    pub fn record(&mut self, otp: &NewOtp, limits: &SendLimits) {
        if let (Some(key), true) = (otp.api_key_id, limits.per_key_rps > 0) {
            let entry = self.map.entry(key).or_default();
            entry.0.record(otp.created_at);
            entry.1 = true;
        }
    }

    /// The windows to write back.
    pub fn changed(&self) -> impl Iterator<Item = (i64, &RateWindow)> {
        self.map
            .iter()
            .filter(|(_, (_, dirty))| *dirty)
            .map(|(id, (w, _))| (*id, w))
    }
}

/// The newest sends to each destination a batch touches.
#[derive(Debug, Default)]
pub struct Recent {
    map: HashMap<(AccountId, String), Vec<Micros>>,
}

impl Recent {
    /// The (account, number, since) triples to load: every destination of the
    /// batch, with the earliest send time that can still matter to it. Empty when
    /// the limits are off.
    pub fn wanted(otps: &[&NewOtp], limits: &SendLimits) -> Vec<(AccountId, String, Micros)> {
        if !limits.enabled() {
            return Vec::new();
        }
        let mut since: HashMap<(AccountId, &str), Micros> = HashMap::new();
        for otp in otps {
            let from = otp.created_at - limits.lookback();
            since
                .entry((otp.account_id, otp.number.e164()))
                .and_modify(|s| *s = (*s).min(from))
                .or_insert(from);
        }
        since
            .into_iter()
            .map(|((a, e), s)| (a, e.to_owned(), s))
            .collect()
    }

    /// Records a send already in the database (or accepted in this batch).
    pub fn insert(&mut self, account: AccountId, e164: &str, at: Micros) {
        self.map
            .entry((account, e164.to_owned()))
            .or_default()
            .push(at);
    }

    /// Refuses the send if a limit is reached at its `created_at`; when both are,
    /// the one that lasts longer is named, so one wait is enough.
    pub fn check(&self, otp: &NewOtp, limits: &SendLimits) -> Result<(), AcceptError> {
        let Some(times) = self
            .map
            .get(&(otp.account_id, otp.number.e164().to_owned()))
        else {
            return Ok(());
        };
        let now = otp.created_at;
        let mut refusal: Option<(LimitKind, Micros)> = None;
        if limits.per_number_cooldown > 0
            && let Some(newest) = times.iter().max()
        {
            let until = newest + limits.per_number_cooldown;
            if until > now {
                refusal = Some((LimitKind::Cooldown, until));
            }
        }
        if limits.window_enabled() {
            let mut inside: Vec<Micros> = times
                .iter()
                .copied()
                .filter(|t| *t > now - limits.per_number_window)
                .collect();
            let max = limits.per_number_max as usize;
            if inside.len() >= max {
                // The send that must leave the window for one more to fit.
                inside.sort_unstable_by(|a, b| b.cmp(a));
                let until = inside[max - 1] + limits.per_number_window;
                if refusal.is_none_or(|(_, other)| until > other) {
                    refusal = Some((LimitKind::Window, until));
                }
            }
        }
        match refusal {
            None => Ok(()),
            Some((limit, until)) => Err(AcceptError::RateLimited {
                limit,
                retry_after_seconds: seconds_until(now, until),
            }),
        }
    }

    /// Counts an accepted send of the batch.
    pub fn record(&mut self, otp: &NewOtp) {
        self.insert(otp.account_id, otp.number.e164(), otp.created_at);
    }
}

/// What a backend loads for one batch, inside the batch's transaction, before
/// [`decide`] runs.
#[derive(Default)]
pub(crate) struct Loaded {
    /// The batch's API keys that are revoked or no longer exist.
    pub revoked_keys: HashSet<i64>,
    /// The batch's accounts an operator disabled.
    pub disabled_accounts: HashSet<AccountId>,
    pub balances: Balances,
    pub key_rates: KeyRates,
    pub recent: Recent,
    /// The first records of the chains the batch's resends repeat, by id.
    pub heads: HashMap<i64, ChainHead>,
    pub idempotency: IdempotencyRecords,
    /// The approved templates of the batch's accounts that its sends name.
    pub templates: TemplateRules,
    /// The default fallback calls of the batch's accounts that have one, as
    /// their rows were read with the balances.
    pub fallbacks: HashMap<AccountId, AccountFallback>,
}

/// What [`decide`] says of one send.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Nothing is written for it; it gets this error.
    Refuse(AcceptError),
    /// Nothing is written for it; it gets what an earlier send under its key got.
    Replay(Replay),
    /// It is written.
    Insert(Insert),
}

/// The earlier send a replay answers with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Replay {
    /// Accepted by an earlier transaction.
    Stored(Accepted),
    /// The plan's insert with this number (counting inserts only, from 0),
    /// earlier in the same batch; its id is known once it is written.
    Earlier(usize),
}

/// An accepted send, as it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insert {
    pub taken: Taken,
    /// The chain a resend joins (`None`: a send of its own).
    pub chain: Option<Chain>,
    /// Its fallback call: its own, or its account's default.
    pub fallback: Option<NewFallback>,
}

/// What a resend takes from its chain's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chain {
    pub head: i64,
    pub expires_at: Micros,
    pub attempts: i64,
}

impl Insert {
    /// The record's `expires_at`: a resend's is its chain's.
    pub fn expires_at(&self, otp: &NewOtp) -> Micros {
        self.chain.map_or(otp.expires_at, |c| c.expires_at)
    }

    /// The record's `resend_of`.
    pub fn resend_of(&self) -> Option<i64> {
        self.chain.map(|c| c.head)
    }

    /// The record's `verify_attempts`: a resend shares its chain's.
    pub fn attempts(&self) -> i64 {
        self.chain.map_or(0, |c| c.attempts)
    }

    /// What the send's ledger debit takes: its cost and its call's reservation.
    pub fn charge(&self, otp: &NewOtp) -> Cost {
        crate::fallback::charge(otp.cost, self.fallback.as_ref())
    }
}

/// What a batch writes: a decision per send, in arrival order, and the rows
/// whose counters changed.
#[derive(Debug)]
pub(crate) struct Plan {
    pub decisions: Vec<Decision>,
    /// The accounts to write back, in id order.
    pub accounts: Vec<(AccountId, Balance)>,
    /// The API keys' rate windows to write back, in id order.
    pub key_rates: Vec<(i64, RateWindow)>,
}

impl Plan {
    /// The sends to insert, in the order they must be written: (index of the
    /// send in the batch, what to write).
    pub fn inserts(&self) -> impl Iterator<Item = (usize, &Insert)> {
        self.decisions
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match d {
                Decision::Insert(insert) => Some((i, insert)),
                _ => None,
            })
    }

    /// The answer to each send of the batch, given the ids the inserts got
    /// and their delivery jobs when leased (one per insert, in
    /// [`Plan::inserts`] order). A leased job carries the record its insert
    /// wrote: `written(i, insert, id)` makes it of send `i` of the batch
    /// ([`crate::SealedOtp::written`]). A replay of a send of the same batch
    /// gets no job: only the send that wrote it hands it over.
    pub fn results(
        self,
        ids: &[i64],
        leased: &[Option<i64>],
        written: impl Fn(usize, &Insert, i64) -> Option<OtpRecord>,
    ) -> Result<Vec<Result<Accepted, AcceptError>>, StoreError> {
        if ids.len() != self.inserts().count() || leased.len() != ids.len() {
            return Err(StoreError::Internal(
                "the inserted sends do not match the plan".into(),
            ));
        }
        let mut accepted = Vec::with_capacity(ids.len());
        for ((i, insert), (id, job)) in self.inserts().zip(ids.iter().zip(leased)) {
            let leased_job = match job {
                None => None,
                Some(job_id) => Some(LeasedJob {
                    job_id: *job_id,
                    otp: Box::new(written(i, insert, *id).ok_or_else(|| {
                        StoreError::Internal("a leased send has no record to hand over".into())
                    })?),
                }),
            };
            accepted.push(Accepted {
                id: *id,
                account_seq: insert.taken.account_seq,
                sms_credits: insert.taken.sms_left,
                phone_credits: insert.taken.phone_left,
                fallback: insert.fallback,
                leased_job,
            });
        }
        // What a replay of insert `n` of the batch gets: its answer, no job.
        let replays: Vec<Accepted> = accepted
            .iter()
            .map(|a| Accepted {
                leased_job: None,
                ..*a
            })
            .collect();
        let mut inserted = accepted.into_iter();
        Ok(self
            .decisions
            .into_iter()
            .filter_map(|d| match d {
                Decision::Refuse(e) => Some(Err(e)),
                Decision::Replay(Replay::Stored(a)) => Some(Err(AcceptError::Replayed(a))),
                Decision::Replay(Replay::Earlier(n)) => replays
                    .get(n)
                    .cloned()
                    .map(|a| Err(AcceptError::Replayed(a))),
                Decision::Insert(_) => inserted.next().map(Ok),
            })
            .collect())
    }
}

/// Decides every send of a batch, in arrival order, against what was loaded.
pub(crate) fn decide<'a>(
    mut loaded: Loaded,
    sends: impl IntoIterator<Item = (&'a NewOtp, Option<&'a IdempotencyKey>)>,
    limits: &SendLimits,
) -> Plan {
    let mut decisions = Vec::new();
    let mut inserts = 0;
    for (otp, key) in sends {
        let decision = loaded.decide_one(otp, key, limits);
        if let Decision::Insert(_) = decision {
            if let Some(key) = key {
                loaded.idempotency.record(otp.account_id, key, inserts);
            }
            inserts += 1;
        }
        decisions.push(decision);
    }
    let mut accounts: Vec<(AccountId, Balance)> =
        loaded.balances.changed().map(|(id, b)| (id, *b)).collect();
    accounts.sort_unstable_by_key(|(id, _)| *id);
    let mut key_rates: Vec<(i64, RateWindow)> =
        loaded.key_rates.changed().map(|(id, w)| (id, *w)).collect();
    key_rates.sort_unstable_by_key(|(id, _)| *id);
    Plan {
        decisions,
        accounts,
        key_rates,
    }
}

impl Loaded {
    /// One send, in the order of the module doc; an accepted one is counted
    /// in the balances, windows and recent sends the next sends meet.
    fn decide_one(
        &mut self,
        otp: &NewOtp,
        key: Option<&IdempotencyKey>,
        limits: &SendLimits,
    ) -> Decision {
        if otp
            .api_key_id
            .is_some_and(|k| self.revoked_keys.contains(&k))
        {
            return Decision::Refuse(AcceptError::KeyRevoked);
        }
        if self.disabled_accounts.contains(&otp.account_id) {
            return Decision::Refuse(AcceptError::AccountDisabled);
        }
        if let Some(key) = key {
            match self.idempotency.check(otp, key) {
                Ok(None) => {}
                Ok(Some(replay)) => return Decision::Replay(replay),
                Err(e) => return Decision::Refuse(e),
            }
        }
        if let Err(e) = self.templates.check(otp) {
            return Decision::Refuse(e);
        }
        let chain = match &otp.resend_of {
            None => None,
            Some(resend) => match self.heads.get(&resend.id).filter(|h| h.admits(otp, resend)) {
                Some(head) => Some(Chain {
                    head: head.id,
                    expires_at: head.expires_at,
                    attempts: head.attempts,
                }),
                None => return Decision::Refuse(AcceptError::ResendStale),
            },
        };
        let fallback = otp
            .fallback
            .resolve(otp.created_at, self.fallbacks.get(&otp.account_id));
        let taken = match self
            .recent
            .check(otp, limits)
            .and_then(|()| self.key_rates.check(otp, limits))
            .and_then(|()| self.balances.take(otp, fallback.as_ref(), limits))
        {
            Ok(taken) => taken,
            Err(e) => return Decision::Refuse(e),
        };
        self.recent.record(otp);
        self.key_rates.record(otp, limits);
        Decision::Insert(Insert {
            taken,
            chain,
            fallback,
        })
    }
}

/// What an idempotency key was used for before.
#[derive(Debug, Clone, PartialEq)]
enum Prior {
    /// Stored by an earlier transaction at `at`; it counts until
    /// [`IDEMPOTENCY_TTL`] after that.
    Stored { accepted: Accepted, at: Micros },
    /// The plan's insert with this number, earlier in the batch.
    Earlier(usize),
}

/// The idempotency keys of the sends a batch carries, and what each was used
/// for: loaded from the store, then added to as the batch's sends are accepted.
#[derive(Debug, Default)]
pub(crate) struct IdempotencyRecords {
    map: HashMap<(AccountId, String), (Vec<u8>, Prior)>,
}

impl IdempotencyRecords {
    /// The oldest a stored key can be and still matter to one of `otps` (a
    /// backend may load from here; the decision drops what is too old for
    /// each send).
    pub fn since(otps: &[&NewOtp]) -> Micros {
        otps.iter().map(|o| o.created_at).min().unwrap_or(0) - IDEMPOTENCY_TTL
    }

    /// A key stored by an earlier transaction at `at`, and what its send got.
    pub fn insert_stored(
        &mut self,
        account: AccountId,
        key: &str,
        body_hash: Vec<u8>,
        accepted: Accepted,
        at: Micros,
    ) {
        self.map.insert(
            (account, key.to_owned()),
            (body_hash, Prior::Stored { accepted, at }),
        );
    }

    /// A key the batch's insert number `insert` took.
    fn record(&mut self, account: AccountId, key: &IdempotencyKey, insert: usize) {
        self.map.insert(
            (account, key.key.clone()),
            (key.body_hash.clone(), Prior::Earlier(insert)),
        );
    }

    /// What an earlier use of the key means for this send: nothing
    /// (`Ok(None)`: never used, or stored longer ago than [`IDEMPOTENCY_TTL`]),
    /// the answer to replay, or a refusal when the body differs.
    fn check(&self, otp: &NewOtp, key: &IdempotencyKey) -> Result<Option<Replay>, AcceptError> {
        let Some((hash, prior)) = self.map.get(&(otp.account_id, key.key.clone())) else {
            return Ok(None);
        };
        if let Prior::Stored { at, .. } = prior
            && *at <= otp.created_at - IDEMPOTENCY_TTL
        {
            return Ok(None);
        }
        if *hash != key.body_hash {
            return Err(AcceptError::IdempotencyKeyReused);
        }
        Ok(Some(match prior {
            Prior::Stored { accepted, .. } => Replay::Stored(accepted.clone()),
            Prior::Earlier(n) => Replay::Earlier(*n),
        }))
    }
}

/// Whole seconds from `now` to `until`, rounded up, at least 1.
fn seconds_until(now: Micros, until: Micros) -> u64 {
    let micros = (until - now).max(1) as u64;
    micros.div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use otp_domain::channel::OtpOption;
    use otp_domain::credits::Cost;
    use otp_domain::phone::PhoneNumber;

    fn send(account: AccountId, sms: i64, phone: i64) -> NewOtp {
        NewOtp {
            otp_option: OtpOption::Generated,
            cost: Cost { sms, phone },
            created_at: 0,
            expires_at: 600_000_000,
            spend_day_ends: 86_400_000_000,
            ..crate::test_support::sample_otp(account)
        }
    }

    #[test]
    fn sends_are_accepted_in_order_until_credits_run_out() {
        let mut b = Balances::default();
        b.insert(1, 3, 0, 10);
        let results: Vec<_> = (0..5)
            .map(|_| b.take(&send(1, 1, 0), None, &SendLimits::default()).is_ok())
            .collect();
        assert_eq!(results, [true, true, true, false, false]);
        let (_, bal) = b.changed().next().unwrap();
        assert_eq!((bal.sms, bal.otp_count), (0, 13));
    }

    #[test]
    fn a_cheaper_send_can_pass_after_a_dearer_one_fails() {
        let mut b = Balances::default();
        b.insert(1, 2, 0, 0);
        assert!(
            b.take(&send(1, 3, 0), None, &SendLimits::default())
                .is_err()
        );
        assert_eq!(
            b.take(&send(1, 2, 0), None, &SendLimits::default())
                .unwrap()
                .account_seq,
            1
        );
    }

    #[test]
    fn an_unknown_account_is_refused_and_nothing_changes() {
        let mut b = Balances::default();
        b.insert(1, 2, 2, 0);
        assert!(matches!(
            b.take(&send(2, 1, 0), None, &SendLimits::default()),
            Err(AcceptError::AccountNotFound)
        ));
        assert_eq!(b.changed().count(), 0);
    }

    fn limits(max: u32, window_s: i64, cooldown_s: i64) -> SendLimits {
        SendLimits {
            per_number_max: max,
            per_number_window: window_s * 1_000_000,
            per_number_cooldown: cooldown_s * 1_000_000,
            ..SendLimits::default()
        }
    }

    fn at(seconds: i64) -> NewOtp {
        NewOtp {
            created_at: seconds * 1_000_000,
            ..send(1, 1, 0)
        }
    }

    #[test]
    fn the_send_over_the_window_limit_waits_for_the_oldest_counted_one() {
        let l = limits(3, 600, 0);
        let mut r = Recent::default();
        for s in [100, 200, 300] {
            assert!(r.check(&at(s), &l).is_ok());
            r.record(&at(s));
        }
        match r.check(&at(400), &l) {
            Err(AcceptError::RateLimited {
                limit: LimitKind::Window,
                retry_after_seconds,
            }) => assert_eq!(retry_after_seconds, 300),
            other => panic!("{other:?}"),
        }
        assert!(r.check(&at(701), &l).is_ok(), "the first left the window");
    }

    #[test]
    fn the_cooldown_counts_from_the_newest_send_and_rounds_up() {
        let l = limits(0, 600, 30);
        let mut r = Recent::default();
        r.record(&at(100));
        let mut early = at(110);
        early.created_at += 500_000;
        match r.check(&early, &l) {
            Err(AcceptError::RateLimited {
                limit: LimitKind::Cooldown,
                retry_after_seconds,
            }) => assert_eq!(retry_after_seconds, 20),
            other => panic!("{other:?}"),
        }
        assert!(r.check(&at(130), &l).is_ok());
    }

    #[test]
    fn other_numbers_and_accounts_are_counted_apart_and_zero_turns_limits_off() {
        let l = limits(1, 600, 30);
        let mut r = Recent::default();
        r.record(&at(100));
        let mut other_number = at(101);
        other_number.number = PhoneNumber::parse("9800000000").unwrap();
        let mut other_account = at(101);
        other_account.account_id = 2;
        assert!(r.check(&other_number, &l).is_ok());
        assert!(r.check(&other_account, &l).is_ok());
        assert!(r.check(&at(101), &l).is_err());
        assert!(r.check(&at(101), &SendLimits::default()).is_ok());
        assert!(Recent::wanted(&[&at(101)], &SendLimits::default()).is_empty());
    }

    fn at_micros(micros: i64) -> NewOtp {
        NewOtp {
            created_at: micros,
            api_key_id: Some(7),
            ..send(1, 1, 0)
        }
    }

    fn rated(rps: u32, key_rps: u32, cap: i64) -> SendLimits {
        SendLimits {
            per_account_rps: rps,
            per_key_rps: key_rps,
            daily_spend_cap: cap,
            ..SendLimits::default()
        }
    }

    #[test]
    fn an_account_gets_its_rate_per_second_and_the_previous_second_fades_out() {
        let l = rated(3, 0, 0);
        let mut b = Balances::default();
        b.insert(1, 100, 0, 0);
        // Three at the start of second 10, the fourth refused with Retry-After 1.
        for i in 0..3 {
            assert!(b.take(&at_micros(10_000_000 + i), None, &l).is_ok());
        }
        match b.take(&at_micros(10_500_000), None, &l) {
            Err(AcceptError::RateLimited {
                limit: LimitKind::AccountRate,
                retry_after_seconds: 1,
            }) => {}
            other => panic!("{other:?}"),
        }
        // A quarter into second 11, the three of second 10 still weigh 2.25:
        // none fits.
        assert!(b.take(&at_micros(11_250_000), None, &l).is_err());
        // Past a third they weigh under 2: one fits, then none.
        assert!(b.take(&at_micros(11_400_000), None, &l).is_ok());
        assert!(b.take(&at_micros(11_400_001), None, &l).is_err());
        // Two seconds later the window is empty again.
        for i in 0..3 {
            assert!(b.take(&at_micros(13_000_000 + i), None, &l).is_ok());
        }
        let (_, bal) = b.changed().next().unwrap();
        assert_eq!(
            bal.rate,
            RateWindow {
                second: 13,
                current: 3,
                previous: 0
            }
        );
        assert_eq!(bal.sms, 100 - 7, "refused sends cost nothing");
    }

    #[test]
    fn a_clock_behind_the_stored_second_cannot_reset_the_window() {
        let w = RateWindow {
            second: 20,
            current: 2,
            previous: 0,
        };
        assert!(!w.admits(19_999_999, 2));
        assert!(w.admits(19_999_999, 3));
        assert!(
            !w.admits(21_000_000, 2),
            "the previous second still weighs 2"
        );
        assert!(w.admits(21_500_000, 2), "half of it is left");
        assert!(w.admits(0, 0), "zero: no limit");
    }

    #[test]
    fn an_account_override_beats_the_default_and_zero_means_unlimited() {
        let l = rated(1, 0, 0);
        let mut b = Balances::default();
        b.insert_with(
            1,
            100,
            0,
            0,
            RateWindow::default(),
            SpendDay::default(),
            AccountOverrides {
                max_rps: Some(0),
                daily_spend_cap: None,
            },
        );
        for i in 0..50 {
            assert!(b.take(&at_micros(5_000_000 + i), None, &l).is_ok());
        }
    }

    #[test]
    fn the_daily_cap_counts_credits_until_the_day_changes() {
        let l = rated(0, 0, 3);
        let mut b = Balances::default();
        b.insert(1, 100, 100, 0);
        let on = |day: i64, sms: i64, phone: i64| NewOtp {
            spend_day: day,
            spend_day_ends: (day + 1) * 86_400_000_000,
            created_at: day * 86_400_000_000 + 86_000_000_000,
            ..send(1, sms, phone)
        };
        assert!(b.take(&on(5, 2, 0), None, &l).is_ok());
        assert!(
            b.take(&on(5, 0, 1), None, &l).is_ok(),
            "phone credits count too"
        );
        match b.take(&on(5, 1, 0), None, &l) {
            Err(AcceptError::RateLimited {
                limit: LimitKind::DailySpend,
                retry_after_seconds,
            }) => assert_eq!(retry_after_seconds, 400, "until the day ends"),
            other => panic!("{other:?}"),
        }
        assert!(b.take(&on(6, 3, 0), None, &l).is_ok(), "a new day");
        assert!(b.take(&on(6, 1, 0), None, &l).is_err());
        let (_, bal) = b.changed().next().unwrap();
        assert_eq!(bal.spend, SpendDay { day: 6, spent: 3 });
        assert_eq!((bal.sms, bal.phone), (95, 99));
    }

    #[test]
    fn each_key_has_its_own_rate_and_only_accepted_sends_count() {
        let l = rated(0, 2, 0);
        let mut keys = KeyRates::default();
        let first = at_micros(1_000_000);
        let mut other_key = at_micros(1_000_001);
        other_key.api_key_id = Some(8);
        assert_eq!(KeyRates::wanted(&[&other_key, &first, &first]), vec![7, 8]);
        for _ in 0..2 {
            assert!(keys.check(&first, &l).is_ok());
            keys.record(&first, &l);
        }
        assert!(matches!(
            keys.check(&first, &l),
            Err(AcceptError::RateLimited {
                limit: LimitKind::KeyRate,
                ..
            })
        ));
        assert!(keys.check(&other_key, &l).is_ok());
        assert_eq!(keys.changed().count(), 1);
    }

    #[test]
    fn a_low_balance_is_marked_once_per_fall_below_the_threshold() {
        let mut b = Balances::default();
        b.insert(1, 12, 4, 0);
        b.watch_low_balance(1, LowBalanceThresholds { sms: 10, phone: 4 });
        let l = SendLimits::default();
        let marks: Vec<_> = (0..5)
            .map(|_| b.take(&send(1, 1, 0), None, &l).unwrap().low_balance)
            .collect();
        // 12 -> 11, 11 -> 10 stay at or above 10; 10 -> 9 falls below; then no more.
        let sms = Some(LowBalance {
            credits: crate::webhooks::Credits::Sms,
            threshold: 10,
        });
        assert_eq!(marks, [None, None, sms, None, None]);
        // A top-up above the threshold, then a fall: marked again.
        b.map.get_mut(&1).unwrap().sms = 10;
        assert_eq!(b.take(&send(1, 2, 0), None, &l).unwrap().low_balance, sms);
        // A refused send marks nothing; phone credits have their own threshold.
        assert!(b.take(&send(1, 100, 0), None, &l).is_err());
        let phone = b.take(&send(1, 0, 1), None, &l).unwrap().low_balance;
        assert_eq!(
            phone.map(|m| (m.credits, m.threshold)),
            Some((crate::webhooks::Credits::Phone, 4))
        );
        // Zero never fires, even at the last credit; an unwatched account neither.
        b.watch_low_balance(1, LowBalanceThresholds { sms: 0, phone: 0 });
        assert_eq!(b.take(&send(1, 6, 0), None, &l).unwrap().low_balance, None);
        let mut unwatched = Balances::default();
        unwatched.insert(2, 1, 0, 0);
        assert_eq!(
            unwatched
                .take(&send(2, 1, 0), None, &l)
                .unwrap()
                .low_balance,
            None
        );
    }

    #[test]
    fn voice_spends_phone_credits_only() {
        let mut b = Balances::default();
        b.insert(1, 0, 1, 0);
        let t = b
            .take(&send(1, 0, 1), None, &SendLimits::default())
            .unwrap();
        assert_eq!((t.sms_left, t.phone_left), (0, 0));
        assert!(
            b.take(&send(1, 0, 1), None, &SendLimits::default())
                .is_err()
        );
    }

    fn key(hash: u8) -> IdempotencyKey {
        IdempotencyKey {
            key: "k".into(),
            body_hash: vec![hash],
        }
    }

    fn account(sms: i64) -> Loaded {
        let mut loaded = Loaded::default();
        loaded.balances.insert(1, sms, 0, 0);
        loaded
    }

    fn stored() -> Accepted {
        Accepted {
            id: 77,
            account_seq: 3,
            sms_credits: 9,
            phone_credits: 0,
            fallback: None,
            leased_job: None,
        }
    }

    /// What each send got, as a short word (refusals by their limit).
    fn outcome(d: &Decision) -> String {
        match d {
            Decision::Insert(i) => format!("insert {}", i.taken.account_seq),
            Decision::Replay(Replay::Stored(a)) => format!("replay stored {}", a.id),
            Decision::Replay(Replay::Earlier(n)) => format!("replay insert {n}"),
            Decision::Refuse(AcceptError::RateLimited { limit, .. }) => format!("{limit:?}"),
            Decision::Refuse(e) => format!("{e}"),
        }
    }

    fn outcomes(plan: &Plan) -> Vec<String> {
        plan.decisions.iter().map(outcome).collect()
    }

    #[test]
    fn a_key_repeated_in_one_batch_replays_the_first_and_another_body_is_refused() {
        let sends = [send(1, 1, 0), send(1, 1, 0), send(1, 1, 0)];
        let (same, other) = (key(1), key(2));
        let plan = decide(
            account(10),
            [
                (&sends[0], Some(&same)),
                (&sends[1], Some(&same)),
                (&sends[2], Some(&other)),
            ],
            &SendLimits::default(),
        );
        assert_eq!(
            outcomes(&plan),
            [
                "insert 1",
                "replay insert 0",
                "idempotency key reused with another body"
            ]
        );
        assert_eq!(plan.accounts[0].1.sms, 9, "one debit");
        let vault = otp_domain::vault::CodeVault::ephemeral();
        let lease = crate::JobLease {
            node: "node-a".into(),
            until: 30_000_000,
        };
        let sealed: Vec<crate::SealedOtp> = sends
            .iter()
            .map(|s| crate::SealedOtp::new(s.clone(), &vault, Some(lease.clone())))
            .collect();
        let results = plan
            .results(&[42], &[Some(7)], |i, insert, id| {
                sealed[i].written(insert, id)
            })
            .unwrap();
        let first = results[0].as_ref().unwrap();
        assert_eq!(first.id, 42);
        let job = first
            .leased_job
            .as_ref()
            .expect("the send hands its job over");
        assert_eq!((job.job_id, job.otp.id, job.otp.account_seq), (7, 42, 1));
        assert_eq!(
            job.otp.code.plain().map(|c| c.as_str()),
            Some(crate::test_support::SAMPLE_CODE),
            "the job carries the code in plain"
        );
        match &results[1] {
            Err(AcceptError::Replayed(a)) => {
                assert_eq!((a.id, a.sms_credits), (42, 9));
                assert_eq!(
                    a.leased_job, None,
                    "only the send that wrote it hands its job over"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(results[2], Err(AcceptError::IdempotencyKeyReused)));
    }

    #[test]
    fn a_stored_key_replays_within_its_ttl_and_counts_as_new_after_it() {
        let mut loaded = account(10);
        loaded
            .idempotency
            .insert_stored(1, "k", vec![1], stored(), 1_000);
        let within = NewOtp {
            created_at: 1_000 + IDEMPOTENCY_TTL - 1,
            ..send(1, 1, 0)
        };
        let after = NewOtp {
            created_at: 1_000 + IDEMPOTENCY_TTL,
            ..send(1, 1, 0)
        };
        let (same, other) = (key(1), key(2));
        let plan = decide(
            loaded,
            [
                (&within, Some(&other)),
                (&within, Some(&same)),
                (&after, Some(&other)),
            ],
            &SendLimits::default(),
        );
        assert_eq!(
            outcomes(&plan),
            [
                "idempotency key reused with another body",
                "replay stored 77",
                "insert 1"
            ]
        );
    }

    #[test]
    fn a_key_whose_send_was_refused_stays_free_for_the_next_one() {
        let (dear, cheap) = (send(1, 5, 0), send(1, 1, 0));
        let plan = decide(
            account(2),
            [(&dear, Some(&key(1))), (&cheap, Some(&key(1)))],
            &SendLimits::default(),
        );
        assert_eq!(outcomes(&plan), ["insufficient credits", "insert 1"]);
    }

    #[test]
    fn keys_are_per_account() {
        let mut loaded = account(10);
        loaded.balances.insert(2, 10, 0, 0);
        loaded
            .idempotency
            .insert_stored(1, "k", vec![1], stored(), 0);
        let plan = decide(
            loaded,
            [(&send(2, 1, 0), Some(&key(2)))],
            &SendLimits::default(),
        );
        assert_eq!(outcomes(&plan), ["insert 1"]);
    }

    fn head(id: i64) -> ChainHead {
        ChainHead {
            id,
            account_id: 1,
            api_key_id: Some(7),
            e164: "+9779851023212".into(),
            generated: true,
            resend_of: None,
            has_code: true,
            expires_at: 900_000_000,
            attempts: 2,
            verified_at: None,
        }
    }

    fn resend(of: i64) -> NewOtp {
        NewOtp {
            api_key_id: Some(7),
            otp_option: otp_domain::channel::OtpOption::Generated,
            resend_of: Some(crate::ResendOf {
                id: of,
                max_attempts: 5,
            }),
            ..send(1, 1, 0)
        }
    }

    #[test]
    fn a_resend_joins_its_chain_and_a_dead_chain_refuses_it() {
        let mut loaded = account(10);
        loaded.heads.insert(5, head(5));
        loaded.heads.insert(
            6,
            ChainHead {
                verified_at: Some(1),
                ..head(6)
            },
        );
        let (live, verified, missing) = (resend(5), resend(6), resend(8));
        let plan = decide(
            loaded,
            [(&live, None), (&verified, None), (&missing, None)],
            &SendLimits::default(),
        );
        let stale = "the code a resend repeats can no longer verify";
        assert_eq!(outcomes(&plan), ["insert 1", stale, stale]);
        let (_, insert) = plan.inserts().next().unwrap();
        assert_eq!(insert.resend_of(), Some(5));
        assert_eq!(insert.expires_at(&live), 900_000_000, "the chain's expiry");
        assert_eq!(insert.attempts(), 2, "the chain's attempts");
        let own = send(1, 1, 0);
        let plain = decide(account(1), [(&own, None)], &SendLimits::default());
        let (_, insert) = plain.inserts().next().unwrap();
        assert_eq!(
            (
                insert.resend_of(),
                insert.expires_at(&own),
                insert.attempts()
            ),
            (None, own.expires_at, 0)
        );
    }

    /// One send that every rule would refuse, and the limits that make them.
    fn refused_by_everything() -> (Loaded, NewOtp, SendLimits) {
        let mut loaded = Loaded::default();
        loaded.balances.insert_with(
            1,
            0,
            0,
            0,
            RateWindow {
                second: 0,
                current: 1,
                previous: 0,
            },
            SpendDay { day: 0, spent: 5 },
            AccountOverrides::default(),
        );
        loaded.key_rates.insert(
            7,
            RateWindow {
                second: 0,
                current: 1,
                previous: 0,
            },
        );
        loaded.recent.insert(1, "+9779851023212", 0);
        loaded
            .idempotency
            .insert_stored(1, "k", vec![1], stored(), 0);
        let otp = NewOtp {
            created_at: 1,
            ..resend(9)
        };
        let limits = SendLimits {
            per_number_cooldown: 60_000_000,
            per_key_rps: 1,
            per_account_rps: 1,
            daily_spend_cap: 5,
            ..SendLimits::default()
        };
        (loaded, otp, limits)
    }

    #[test]
    fn the_rules_apply_in_order_and_the_first_that_refuses_answers() {
        let run = |key: Option<IdempotencyKey>, edit: &dyn Fn(&mut NewOtp, &mut SendLimits)| {
            let (loaded, mut otp, mut limits) = refused_by_everything();
            edit(&mut otp, &mut limits);
            outcomes(&decide(loaded, [(&otp, key.as_ref())], &limits)).remove(0)
        };
        let none = |_: &mut NewOtp, _: &mut SendLimits| {};
        let no_resend = |o: &mut NewOtp, _: &mut SendLimits| o.resend_of = None;
        let no_cooldown = |o: &mut NewOtp, l: &mut SendLimits| {
            no_resend(o, l);
            l.per_number_cooldown = 0;
        };
        let no_key_rate = |o: &mut NewOtp, l: &mut SendLimits| {
            no_cooldown(o, l);
            l.per_key_rps = 0;
        };
        let no_account_rate = |o: &mut NewOtp, l: &mut SendLimits| {
            no_key_rate(o, l);
            l.per_account_rps = 0;
        };
        let no_cap = |o: &mut NewOtp, l: &mut SendLimits| {
            no_account_rate(o, l);
            l.daily_spend_cap = 0;
        };
        let other_account = |o: &mut NewOtp, l: &mut SendLimits| {
            no_key_rate(o, l);
            o.account_id = 2;
        };
        assert_eq!(
            run(Some(key(2)), &none),
            "idempotency key reused with another body"
        );
        assert_eq!(run(Some(key(1)), &none), "replay stored 77");
        assert_eq!(
            run(None, &none),
            "the code a resend repeats can no longer verify"
        );
        assert_eq!(run(None, &no_resend), "Cooldown");
        assert_eq!(run(None, &no_cooldown), "KeyRate");
        assert_eq!(run(None, &no_key_rate), "AccountRate");
        assert_eq!(run(None, &no_account_rate), "DailySpend");
        assert_eq!(run(None, &no_cap), "insufficient credits");
        assert_eq!(run(None, &other_account), "account not found");
    }

    #[test]
    fn a_revoked_key_is_refused_before_every_other_rule_and_replays_nothing() {
        let (mut loaded, otp, limits) = refused_by_everything();
        loaded.revoked_keys.insert(7);
        let plan = decide(loaded, [(&otp, Some(&key(1)))], &limits);
        assert_eq!(outcomes(&plan), ["the API key is revoked"]);
        assert!(plan.accounts.is_empty() && plan.key_rates.is_empty());
        let mut loaded = account(1);
        loaded.revoked_keys.insert(7);
        let (revoked, live) = (
            NewOtp {
                api_key_id: Some(7),
                ..send(1, 1, 0)
            },
            NewOtp {
                api_key_id: Some(8),
                ..send(1, 1, 0)
            },
        );
        let plan = decide(
            loaded,
            [(&revoked, None), (&live, None)],
            &SendLimits::default(),
        );
        assert_eq!(outcomes(&plan), ["the API key is revoked", "insert 1"]);
    }

    #[test]
    fn each_accepted_send_counts_for_the_later_sends_of_the_batch() {
        let limits = SendLimits {
            per_number_cooldown: 60_000_000,
            per_key_rps: 2,
            ..SendLimits::default()
        };
        let mut loaded = account(12);
        loaded
            .balances
            .watch_low_balance(1, LowBalanceThresholds { sms: 10, phone: 0 });
        let to = |n: char, created_at: Micros| NewOtp {
            number: PhoneNumber::parse(&format!("985102321{n}")).unwrap(),
            api_key_id: Some(7),
            created_at,
            ..send(1, 1, 0)
        };
        let sends = [
            to('1', 10),
            to('1', 11),
            to('2', 12),
            to('3', 13),
            to('4', 2_000_000),
        ];
        let plan = decide(loaded, sends.iter().map(|s| (s, None)), &limits);
        assert_eq!(
            outcomes(&plan),
            ["insert 1", "Cooldown", "insert 2", "KeyRate", "insert 3"]
        );
        let marks: Vec<_> = plan.inserts().map(|(_, i)| i.taken.low_balance).collect();
        assert_eq!(marks[..2], [None, None]);
        assert!(
            marks[2].is_some(),
            "11 -> 10 -> 9: the third falls below 10"
        );
        assert_eq!(plan.accounts.len(), 1);
        assert_eq!(
            (plan.accounts[0].1.sms, plan.accounts[0].1.otp_count),
            (9, 3)
        );
        assert_eq!(
            plan.key_rates,
            [(
                7,
                RateWindow {
                    second: 2,
                    current: 1,
                    previous: 0
                }
            )]
        );
    }

    #[test]
    fn a_batch_with_nothing_accepted_writes_no_row() {
        let plan = decide(account(0), [(&send(1, 1, 0), None)], &SendLimits::default());
        assert_eq!(plan.inserts().count(), 0);
        assert!(plan.accounts.is_empty() && plan.key_rates.is_empty());
        assert!(matches!(
            plan.results(&[], &[], |_, _, _| None).unwrap()[..],
            [Err(AcceptError::InsufficientCredits { .. })]
        ));
    }

    #[test]
    fn a_leased_job_without_its_record_is_an_error_and_an_unleased_send_keeps_no_code() {
        let sends = [send(1, 1, 0)];
        let plan = decide(account(5), [(&sends[0], None)], &SendLimits::default());
        let unleased = crate::SealedOtp::new(
            sends[0].clone(),
            &otp_domain::vault::CodeVault::ephemeral(),
            None,
        );
        let (_, insert) = plan.inserts().next().expect("the send is accepted");
        assert!(
            unleased.written(insert, 42).is_none(),
            "a send whose job is claimed later forgets its plain code"
        );
        assert!(matches!(
            plan.results(&[42], &[Some(7)], |_, insert, id| unleased
                .written(insert, id)),
            Err(StoreError::Internal(_))
        ));
    }

    #[test]
    fn results_refuse_ids_that_do_not_match_the_inserts() {
        let plan = decide(account(5), [(&send(1, 1, 0), None)], &SendLimits::default());
        assert!(matches!(
            plan.results(&[], &[], |_, _, _| None),
            Err(StoreError::Internal(_))
        ));
    }
}
