//! The credit decision for a batch of sends, shared by both backends.
//!
//! The writer loads the balances of the accounts a batch touches (inside the
//! batch's transaction, locked where the backend needs it), then asks
//! [`Balances::take`] for each send in arrival order. A send is accepted only if
//! its account can pay for it at that point, so 200 concurrent sends against 100
//! credits accept exactly 100 whichever batches they land in.

//!
//! Per-destination limits are decided the same way: [`Recent`] holds the newest
//! sends to each (account, number) the batch touches, loaded in the same
//! transaction after the account rows are locked, and each accepted send of the
//! batch is added to it, so later sends of the batch count it too.
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

use std::collections::HashMap;

use crate::webhooks::{LowBalance, LowBalanceThresholds};
use crate::{
    AcceptError, Accepted, AccountId, IdempotencyKey, LimitKind, Micros, NewOtp, SendLimits,
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
    /// it, and numbers it.
    pub fn take(&mut self, otp: &NewOtp, limits: &SendLimits) -> Result<Taken, AcceptError> {
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
        let cost = otp.cost.sms + otp.cost.phone;
        let spend = balance.spend.at(otp.spend_day);
        if cap > 0 && spend.spent + cost > cap {
            return Err(AcceptError::RateLimited {
                limit: LimitKind::DailySpend,
                retry_after_seconds: seconds_until(otp.created_at, otp.spend_day_ends),
            });
        }
        if balance.sms < otp.cost.sms || balance.phone < otp.cost.phone {
            return Err(AcceptError::InsufficientCredits {
                sms_credits: balance.sms,
                phone_credits: balance.phone,
            });
        }
        balance.sms -= otp.cost.sms;
        balance.phone -= otp.cost.phone;
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
                (balance.sms + otp.cost.sms, balance.phone + otp.cost.phone),
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
    /// The keys whose windows a batch must load (none when the limit is off).
    pub fn wanted(otps: &[&NewOtp], limits: &SendLimits) -> Vec<i64> {
        if limits.per_key_rps == 0 {
            return Vec::new();
        }
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
                .entry((otp.account_id, otp.e164.as_str()))
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
        let Some(times) = self.map.get(&(otp.account_id, otp.e164.clone())) else {
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
        self.insert(otp.account_id, &otp.e164, otp.created_at);
    }
}

/// An earlier send under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prior {
    /// Accepted by an earlier transaction, or earlier in this one with its id known.
    Stored(Accepted),
    /// Accepted earlier in this batch, at this index; its id comes later.
    InBatch(usize),
}

/// The idempotency keys of the sends a batch carries, and what they got.
#[derive(Debug, Default)]
pub struct Keys {
    map: HashMap<(AccountId, String), (Vec<u8>, Prior)>,
}

impl Keys {
    pub fn insert(&mut self, account: AccountId, key: &str, body_hash: Vec<u8>, prior: Prior) {
        self.map
            .insert((account, key.to_owned()), (body_hash, prior));
    }

    /// What an earlier send under the same key means for this one: nothing
    /// (`Ok(None)`), the answer to replay, or a refusal when the body differs.
    pub fn check(
        &self,
        account: AccountId,
        key: &IdempotencyKey,
    ) -> Result<Option<&Prior>, AcceptError> {
        match self.map.get(&(account, key.key.clone())) {
            None => Ok(None),
            Some((hash, prior)) if *hash == key.body_hash => Ok(Some(prior)),
            Some(_) => Err(AcceptError::IdempotencyKeyReused),
        }
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
    use otp_domain::channel::{Channel, OtpOption};
    use otp_domain::credits::Cost;

    fn send(account: AccountId, sms: i64, phone: i64) -> NewOtp {
        NewOtp {
            account_id: account,
            api_key_id: None,
            phone_number: "9851023212".into(),
            e164: "+9779851023212".into(),
            template: "{otp}".into(),
            otp: "123456".into(),
            otp_option: OtpOption::Generated,
            channel: Channel::Text,
            voice: None,
            length_factor: None,
            company_name: None,
            segments: 1,
            cost: Cost { sms, phone },
            created_at: 0,
            expires_at: 600_000_000,
            spend_day: 0,
            spend_day_ends: 86_400_000_000,
            resend_of: None,
        }
    }

    #[test]
    fn sends_are_accepted_in_order_until_credits_run_out() {
        let mut b = Balances::default();
        b.insert(1, 3, 0, 10);
        let results: Vec<_> = (0..5)
            .map(|_| b.take(&send(1, 1, 0), &SendLimits::default()).is_ok())
            .collect();
        assert_eq!(results, [true, true, true, false, false]);
        let (_, bal) = b.changed().next().unwrap();
        assert_eq!((bal.sms, bal.otp_count), (0, 13));
    }

    #[test]
    fn a_cheaper_send_can_pass_after_a_dearer_one_fails() {
        let mut b = Balances::default();
        b.insert(1, 2, 0, 0);
        assert!(b.take(&send(1, 3, 0), &SendLimits::default()).is_err());
        assert_eq!(
            b.take(&send(1, 2, 0), &SendLimits::default())
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
            b.take(&send(2, 1, 0), &SendLimits::default()),
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
        other_number.e164 = "+9779800000000".into();
        let mut other_account = at(101);
        other_account.account_id = 2;
        assert!(r.check(&other_number, &l).is_ok());
        assert!(r.check(&other_account, &l).is_ok());
        assert!(r.check(&at(101), &l).is_err());
        assert!(r.check(&at(101), &SendLimits::default()).is_ok());
        assert!(Recent::wanted(&[&at(101)], &SendLimits::default()).is_empty());
    }

    #[test]
    fn an_idempotency_key_replays_its_body_and_refuses_another() {
        let key = |hash: u8| IdempotencyKey {
            key: "k".into(),
            body_hash: vec![hash],
        };
        let mut keys = Keys::default();
        assert_eq!(keys.check(1, &key(1)).unwrap(), None);
        keys.insert(1, "k", vec![1], Prior::InBatch(0));
        assert_eq!(keys.check(1, &key(1)).unwrap(), Some(&Prior::InBatch(0)));
        assert!(matches!(
            keys.check(1, &key(2)),
            Err(AcceptError::IdempotencyKeyReused)
        ));
        assert_eq!(
            keys.check(2, &key(2)).unwrap(),
            None,
            "keys are per account"
        );
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
            assert!(b.take(&at_micros(10_000_000 + i), &l).is_ok());
        }
        match b.take(&at_micros(10_500_000), &l) {
            Err(AcceptError::RateLimited {
                limit: LimitKind::AccountRate,
                retry_after_seconds: 1,
            }) => {}
            other => panic!("{other:?}"),
        }
        // A quarter into second 11, the three of second 10 still weigh 2.25:
        // none fits.
        assert!(b.take(&at_micros(11_250_000), &l).is_err());
        // Past a third they weigh under 2: one fits, then none.
        assert!(b.take(&at_micros(11_400_000), &l).is_ok());
        assert!(b.take(&at_micros(11_400_001), &l).is_err());
        // Two seconds later the window is empty again.
        for i in 0..3 {
            assert!(b.take(&at_micros(13_000_000 + i), &l).is_ok());
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
            assert!(b.take(&at_micros(5_000_000 + i), &l).is_ok());
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
        assert!(b.take(&on(5, 2, 0), &l).is_ok());
        assert!(b.take(&on(5, 0, 1), &l).is_ok(), "phone credits count too");
        match b.take(&on(5, 1, 0), &l) {
            Err(AcceptError::RateLimited {
                limit: LimitKind::DailySpend,
                retry_after_seconds,
            }) => assert_eq!(retry_after_seconds, 400, "until the day ends"),
            other => panic!("{other:?}"),
        }
        assert!(b.take(&on(6, 3, 0), &l).is_ok(), "a new day");
        assert!(b.take(&on(6, 1, 0), &l).is_err());
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
        assert_eq!(KeyRates::wanted(&[&first, &other_key], &l), vec![7, 8]);
        assert!(KeyRates::wanted(&[&first], &SendLimits::default()).is_empty());
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
            .map(|_| b.take(&send(1, 1, 0), &l).unwrap().low_balance)
            .collect();
        // 12 -> 11, 11 -> 10 stay at or above 10; 10 -> 9 falls below; then no more.
        let sms = Some(LowBalance {
            credits: crate::webhooks::Credits::Sms,
            threshold: 10,
        });
        assert_eq!(marks, [None, None, sms, None, None]);
        // A top-up above the threshold, then a fall: marked again.
        b.map.get_mut(&1).unwrap().sms = 10;
        assert_eq!(b.take(&send(1, 2, 0), &l).unwrap().low_balance, sms);
        // A refused send marks nothing; phone credits have their own threshold.
        assert!(b.take(&send(1, 100, 0), &l).is_err());
        let phone = b.take(&send(1, 0, 1), &l).unwrap().low_balance;
        assert_eq!(
            phone.map(|m| (m.credits, m.threshold)),
            Some((crate::webhooks::Credits::Phone, 4))
        );
        // Zero never fires, even at the last credit; an unwatched account neither.
        b.watch_low_balance(1, LowBalanceThresholds { sms: 0, phone: 0 });
        assert_eq!(b.take(&send(1, 6, 0), &l).unwrap().low_balance, None);
        let mut unwatched = Balances::default();
        unwatched.insert(2, 1, 0, 0);
        assert_eq!(
            unwatched.take(&send(2, 1, 0), &l).unwrap().low_balance,
            None
        );
    }

    #[test]
    fn voice_spends_phone_credits_only() {
        let mut b = Balances::default();
        b.insert(1, 0, 1, 0);
        let t = b.take(&send(1, 0, 1), &SendLimits::default()).unwrap();
        assert_eq!((t.sms_left, t.phone_left), (0, 0));
        assert!(b.take(&send(1, 0, 1), &SendLimits::default()).is_err());
    }
}
