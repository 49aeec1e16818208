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

use std::collections::HashMap;

use crate::{
    AcceptError, Accepted, AccountId, IdempotencyKey, LimitKind, Micros, NewOtp, SendLimits,
};

/// An account's balance as the batch goes along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub sms: i64,
    pub phone: i64,
    pub otp_count: i64,
    /// Whether any send of this batch changed it (so it must be written back).
    pub dirty: bool,
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
}

impl Balances {
    pub fn insert(&mut self, account: AccountId, sms: i64, phone: i64, otp_count: i64) {
        self.map.insert(
            account,
            Balance {
                sms,
                phone,
                otp_count,
                dirty: false,
            },
        );
    }

    /// Debits the send's cost if the account can pay, and numbers it.
    pub fn take(&mut self, otp: &NewOtp) -> Result<Taken, AcceptError> {
        let balance = self
            .map
            .get_mut(&otp.account_id)
            .ok_or(AcceptError::AccountNotFound)?;
        if balance.sms < otp.cost.sms || balance.phone < otp.cost.phone {
            return Err(AcceptError::InsufficientCredits {
                sms_credits: balance.sms,
                phone_credits: balance.phone,
            });
        }
        balance.sms -= otp.cost.sms;
        balance.phone -= otp.cost.phone;
        balance.otp_count += 1;
        balance.dirty = true;
        Ok(Taken {
            account_seq: balance.otp_count,
            sms_left: balance.sms,
            phone_left: balance.phone,
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
        if limits.per_number_cooldown > 0 {
            if let Some(newest) = times.iter().max() {
                let until = newest + limits.per_number_cooldown;
                if until > now {
                    refusal = Some((LimitKind::Cooldown, until));
                }
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
        }
    }

    #[test]
    fn sends_are_accepted_in_order_until_credits_run_out() {
        let mut b = Balances::default();
        b.insert(1, 3, 0, 10);
        let results: Vec<_> = (0..5).map(|_| b.take(&send(1, 1, 0)).is_ok()).collect();
        assert_eq!(results, [true, true, true, false, false]);
        let (_, bal) = b.changed().next().unwrap();
        assert_eq!((bal.sms, bal.otp_count), (0, 13));
    }

    #[test]
    fn a_cheaper_send_can_pass_after_a_dearer_one_fails() {
        let mut b = Balances::default();
        b.insert(1, 2, 0, 0);
        assert!(b.take(&send(1, 3, 0)).is_err());
        assert_eq!(b.take(&send(1, 2, 0)).unwrap().account_seq, 1);
    }

    #[test]
    fn an_unknown_account_is_refused_and_nothing_changes() {
        let mut b = Balances::default();
        b.insert(1, 2, 2, 0);
        assert!(matches!(
            b.take(&send(2, 1, 0)),
            Err(AcceptError::AccountNotFound)
        ));
        assert_eq!(b.changed().count(), 0);
    }

    fn limits(max: u32, window_s: i64, cooldown_s: i64) -> SendLimits {
        SendLimits {
            per_number_max: max,
            per_number_window: window_s * 1_000_000,
            per_number_cooldown: cooldown_s * 1_000_000,
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

    #[test]
    fn voice_spends_phone_credits_only() {
        let mut b = Balances::default();
        b.insert(1, 0, 1, 0);
        let t = b.take(&send(1, 0, 1)).unwrap();
        assert_eq!((t.sms_left, t.phone_left), (0, 0));
        assert!(b.take(&send(1, 0, 1)).is_err());
    }
}
