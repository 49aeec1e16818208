//! The guard's judging, without I/O or a clock of its own: every call says
//! what time it is, so the simulation (`examples/pumping.rs`) runs a day
//! in a second and the tests step time by hand.
//!
//! Each send is counted under six keys ([`keys_of`]): its country, operator
//! prefix and number block, each for its account and across accounts. A key
//! keeps the buckets of its recent window (attempts, accepted sends, sends
//! whose outcome can be judged, good outcomes) and a baseline: an
//! exponentially weighted average per bucket, fed by each bucket as it
//! leaves the window, so a burst is never its own baseline, and buckets in
//! which the key was held never feed it.
//!
//! A good outcome depends on the account: an account that verified a code
//! within `signal_memory` is judged on verifications (a send is judged when
//! it is accepted); one that never verifies (TingTing-style apps compare
//! codes themselves) but got a delivery receipt within that time, on
//! deliveries (a send is judged when its final receipt comes, delivered or
//! not, so receipts still on their way, or held up by an SMSC outage, are
//! not taken for failures). Sends of an account
//! with neither (new, or on a route without receipts) count as volume but
//! are not judged: the guard cannot tell pumping from silence there.
//!
//! A key trips ([`Judge::admit`]) when, over its window, attempts reach
//! `min_volume` and `surge_factor` times what the baseline expects, at
//! least half of `min_volume` sends can be judged, and their conversion is
//! at most `collapse_ratio` times the baseline's (`prior_conversion` until
//! the baseline has judged `min_volume` sends). Keys are tried narrowest
//! first and an account's before the keys across accounts, so a hold
//! covers as little as it can: within the key that tripped, the narrowest
//! one holding at least half its attempts. A hold lasts `hold`; a send it
//! refuses while the attempts still surge (at half of `min_volume` or more)
//! pushes its end on, so a burst that goes on stays held, and traffic back
//! at its baseline lets the hold end. A key an
//! operator released does not trip again for `hold`.
//!
//! A hold refuses new numbers, not returning users: [`decide`], which the
//! server runs for every send, asks the caller (the store, on that rare
//! path only) whether a number a hold would refuse is proven good for the
//! account, by a verified code or, for an account judged on deliveries, a
//! delivered one ([`Proof`]); such a send passes the hold
//! ([`Decision::Passed`]). A pumped number is a fresh one nobody verified,
//! so the burst stays held.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use otp_domain::phone::operator_prefix;
use otp_store::guard::{GuardHold, HoldScope};
use otp_store::{AccountId, Micros};

/// What the judging is tuned by (see `[guard]` in the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// One bucket covers this much time.
    pub bucket: Micros,
    /// Buckets in the recent window.
    pub window_buckets: i64,
    /// The baseline's time constant.
    pub baseline: Micros,
    pub min_volume: u32,
    pub surge_factor: f64,
    pub collapse_ratio: f64,
    pub prior_conversion: f64,
    pub hold: Micros,
    /// Most keys tracked; a send's keys beyond it are not judged.
    pub max_keys: usize,
    /// How long a verification or a receipt keeps deciding an account's signal.
    pub signal_memory: Micros,
    /// A send to a number proven good for the account passes a hold.
    pub pass_proven: bool,
}

/// What sends are counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub scope: HoldScope,
    /// The country code (`977`), prefix (`+977984`) or block (`+9779841234`).
    pub value: String,
    /// `None`: across accounts.
    pub account: Option<AccountId>,
}

impl Key {
    pub fn of_hold(h: &GuardHold) -> Key {
        Key {
            scope: h.scope,
            value: h.value.clone(),
            account: h.account_id,
        }
    }
}

/// The keys a send to `e164` by `account` is counted under, in the order
/// they are tried: narrowest first, the account's before those across
/// accounts. A number whose calling code is unknown has a block only.
pub fn keys_of(account: AccountId, e164: &str) -> Vec<Key> {
    let mut values = Vec::with_capacity(3);
    if e164.len() > 4 {
        values.push((HoldScope::Block, e164[..e164.len() - 3].to_owned()));
    }
    if let Some((code, prefix)) = operator_prefix(e164) {
        values.push((HoldScope::Prefix, prefix));
        values.push((HoldScope::Country, code.to_string()));
    }
    let mut keys = Vec::with_capacity(6);
    for across in [false, true] {
        for (scope, value) in &values {
            keys.push(Key {
                scope: *scope,
                value: value.clone(),
                account: (!across).then_some(account),
            });
        }
    }
    keys
}

/// The keys of one send of an account ([`keys_of`]), made once for its
/// admission ([`decide`]) and, once the store accepts it, its count
/// ([`Judge::accepted_keys`]).
#[derive(Debug, Clone)]
pub struct SendKeys {
    account: AccountId,
    keys: Vec<Key>,
}

impl SendKeys {
    pub fn of(account: AccountId, e164: &str) -> SendKeys {
        SendKeys {
            account,
            keys: keys_of(account, e164),
        }
    }
}

/// A number under `key`'s scope and value, for finding the keys wider
/// than it.
fn sample_number(key: &Key) -> String {
    match key.scope {
        HoldScope::Country => format!("+{}0000000", key.value),
        HoldScope::Prefix => format!("{}000000", key.value),
        HoldScope::Block => format!("{}000", key.value),
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    attempts: u32,
    sent: u32,
    judged: u32,
    good: u32,
    /// The key was held during this bucket: it does not feed the baseline.
    held: bool,
}

#[derive(Debug)]
struct KeyState {
    buckets: VecDeque<(i64, Tally)>,
    /// The last bucket the baseline took in.
    folded_to: i64,
    base_attempts: f64,
    base_judged: f64,
    base_good: f64,
    last_seen: Micros,
}

impl KeyState {
    fn new(bucket: i64) -> KeyState {
        KeyState {
            buckets: VecDeque::new(),
            folded_to: bucket - 1,
            base_attempts: 0.0,
            base_judged: 0.0,
            base_good: 0.0,
            last_seen: 0,
        }
    }

    /// Moves buckets that left the window into the baseline.
    fn advance(&mut self, now_bucket: i64, s: &Settings, alpha: f64) {
        let oldest_kept = now_bucket - s.window_buckets + 1;
        while let Some(&(idx, t)) = self.buckets.front() {
            if idx >= oldest_kept {
                break;
            }
            self.buckets.pop_front();
            self.decay(idx - self.folded_to - 1, alpha);
            if !t.held {
                self.base_attempts += alpha * (f64::from(t.attempts) - self.base_attempts);
                self.base_judged += alpha * (f64::from(t.judged) - self.base_judged);
                self.base_good += alpha * (f64::from(t.good) - self.base_good);
            }
            self.folded_to = idx;
        }
        if self.folded_to < oldest_kept - 1 && self.buckets.is_empty() {
            self.decay(oldest_kept - 1 - self.folded_to, alpha);
            self.folded_to = oldest_kept - 1;
        }
    }

    /// `empty` buckets with nothing in them.
    fn decay(&mut self, empty: i64, alpha: f64) {
        if empty > 0 {
            let keep = (1.0 - alpha).powi(empty.min(i64::from(i32::MAX)) as i32);
            self.base_attempts *= keep;
            self.base_judged *= keep;
            self.base_good *= keep;
        }
    }

    /// The bucket an event at `bucket` counts in: its own, or for an event
    /// older than the newest bucket (a verification reported late), the
    /// nearest kept one.
    fn current(&mut self, bucket: i64) -> &mut Tally {
        if self.buckets.back().is_none_or(|(idx, _)| *idx < bucket) {
            self.buckets.push_back((bucket, Tally::default()));
        }
        let at = self
            .buckets
            .iter()
            .rposition(|(idx, _)| *idx <= bucket)
            .unwrap_or(0);
        &mut self.buckets[at].1
    }

    /// Takes a held key's counts out of this wider key's buckets.
    fn subtract(&mut self, part: &[(i64, Tally)]) {
        for (idx, p) in part {
            if let Some((_, t)) = self.buckets.iter_mut().find(|(i, _)| i == idx) {
                t.attempts = t.attempts.saturating_sub(p.attempts);
                t.sent = t.sent.saturating_sub(p.sent);
                t.judged = t.judged.saturating_sub(p.judged);
                t.good = t.good.saturating_sub(p.good);
                t.held = true;
            }
        }
    }

    fn recent(&self) -> Tally {
        self.buckets
            .iter()
            .fold(Tally::default(), |mut sum, (_, t)| {
                sum.attempts += t.attempts;
                sum.sent += t.sent;
                sum.judged += t.judged;
                sum.good += t.good;
                sum
            })
    }
}

/// Why a key tripped.
#[derive(Debug, Clone, PartialEq)]
pub struct Trip {
    pub key: Key,
    /// Attempts in the window.
    pub volume: u32,
    /// What the baseline expected in a window.
    pub expected: f64,
    /// Conversion of the window's judged sends.
    pub conversion: f64,
    /// What it was compared with.
    pub baseline_conversion: f64,
    pub until: Micros,
}

/// A hold as this node knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalHold {
    /// The stored hold's id, once it is known.
    pub id: Option<i64>,
    pub until: Micros,
}

/// What [`Judge::admit`] (or [`decide`]) decided for one send.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Pass,
    /// A hold stands on `key` (or tripped on this send), but the number is
    /// proven good for the account: the send passes it. The other fields
    /// are [`Decision::Held`]'s.
    Passed {
        key: Key,
        hold: LocalHold,
        tripped: Option<Trip>,
        extended: bool,
    },
    Held {
        key: Key,
        hold: LocalHold,
        /// The key tripped now: the hold is new on this node.
        tripped: Option<Trip>,
        /// The hold's end was pushed on by this send.
        extended: bool,
    },
}

/// Which outcome an account's sends are judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Verify,
    Delivery,
    None,
}

/// What proves a number good for an account: what the account is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A code sent to it was verified (an account judged on
    /// verifications, or one not judged at all).
    Verified,
    /// A code sent to it was verified or delivered (an account judged on
    /// deliveries, which never verifies).
    Delivered,
}

#[derive(Debug, Clone, Copy, Default)]
struct AccountSignal {
    verified_at: Option<Micros>,
    receipt_at: Option<Micros>,
}

/// One node's counts and holds.
#[derive(Debug)]
pub struct Judge {
    s: Settings,
    alpha: f64,
    keys: HashMap<Key, KeyState>,
    accounts: HashMap<AccountId, AccountSignal>,
    holds: HashMap<Key, LocalHold>,
    /// Scopes and values that do not trip before the time given (for every
    /// account): what an operator released, and what is wider than it.
    quiet: HashMap<(HoldScope, String), Micros>,
    /// Released holds already taken in, and when they were released.
    released: HashMap<i64, Micros>,
    /// Keys not tracked because `max_keys` were.
    pub untracked: u64,
}

impl Judge {
    pub fn new(s: Settings) -> Judge {
        let alpha = 1.0 - (-(s.bucket as f64) / (s.baseline.max(1) as f64)).exp();
        Judge {
            s,
            alpha,
            keys: HashMap::new(),
            accounts: HashMap::new(),
            holds: HashMap::new(),
            quiet: HashMap::new(),
            released: HashMap::new(),
            untracked: 0,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    fn bucket(&self, at: Micros) -> i64 {
        at.div_euclid(self.s.bucket.max(1))
    }

    /// The signal `account`'s sends are judged on at `now`.
    pub fn signal(&self, account: AccountId, now: Micros) -> Signal {
        let fresh = |at: Option<Micros>| at.is_some_and(|t| now - t <= self.s.signal_memory);
        match self.accounts.get(&account) {
            Some(a) if fresh(a.verified_at) => Signal::Verify,
            Some(a) if fresh(a.receipt_at) => Signal::Delivery,
            _ => Signal::None,
        }
    }

    /// What proves a number good for `account` at `now`: a delivery for an
    /// account judged on deliveries, else a verification. A delivery does
    /// not prove a number for an account that verifies: pumping carriers
    /// may well report their numbers delivered.
    pub fn proof(&self, account: AccountId, now: Micros) -> Proof {
        match self.signal(account, now) {
            Signal::Delivery => Proof::Delivered,
            Signal::Verify | Signal::None => Proof::Verified,
        }
    }

    /// [`Judge::holding_keys`] of a send of `account` to `e164`.
    #[cfg(test)]
    pub fn holding(&self, account: AccountId, e164: &str, now: Micros) -> Option<Key> {
        self.holding_keys(&SendKeys::of(account, e164), now)
    }

    /// The key of a hold standing at `now` on one of `send`'s keys (the one
    /// [`Judge::admit_keys`] would refuse it under).
    pub fn holding_keys(&self, send: &SendKeys, now: Micros) -> Option<Key> {
        if self.holds.is_empty() {
            return None;
        }
        send.keys
            .iter()
            .find(|k| self.holds.get(*k).is_some_and(|h| h.until > now))
            .cloned()
    }

    /// [`Judge::admit_proven_keys`] of a send of `account` to `e164`.
    #[cfg(test)]
    pub fn admit_proven(&mut self, account: AccountId, e164: &str, now: Micros) -> Decision {
        self.admit_proven_keys(&SendKeys::of(account, e164), now)
    }

    /// Counts `send`, to a number proven good for its account: it passes
    /// every hold ([`Decision::Passed`] when one stands on its keys), is
    /// counted under each of its keys as any attempt is, and trips nothing
    /// and extends no hold (a returning user is not the burst).
    pub fn admit_proven_keys(&mut self, send: &SendKeys, now: Micros) -> Decision {
        let keys = &send.keys;
        self.each(keys, now, |_, state, bucket| {
            state.current(bucket).attempts += 1;
        });
        self.holds.retain(|_, h| h.until > now);
        match keys.iter().find_map(|k| self.holds.get(k).map(|h| (k, *h))) {
            Some((key, hold)) => Decision::Passed {
                key: key.clone(),
                hold,
                tripped: None,
                extended: false,
            },
            None => Decision::Pass,
        }
    }

    /// Applies `f` to the state of each of `keys` that is tracked (or can
    /// be), brought up to `now`.
    fn each(&mut self, keys: &[Key], now: Micros, mut f: impl FnMut(&Key, &mut KeyState, i64)) {
        let bucket = self.bucket(now);
        for key in keys {
            // A tracked key (most sends' keys) is found with one lookup.
            let state = if let Some(state) = self.keys.get_mut(key) {
                state
            } else if self.keys.len() >= self.s.max_keys {
                self.untracked += 1;
                continue;
            } else {
                self.keys
                    .entry(key.clone())
                    .or_insert_with(|| KeyState::new(bucket))
            };
            state.advance(bucket, &self.s, self.alpha);
            state.last_seen = now;
            f(key, state, bucket);
        }
    }

    /// [`Judge::admit_keys`] of a send of `account` to `e164`.
    #[cfg(test)]
    pub fn admit(&mut self, account: AccountId, e164: &str, now: Micros) -> Decision {
        self.admit_keys(&SendKeys::of(account, e164), now)
    }

    /// Counts the send attempt `send` and decides whether it is held: by a
    /// hold standing on one of its keys, or by one that trips now. A held
    /// attempt counts under its hold's key only (it keeps the burst visible
    /// there, and feeds no other key's window or baseline).
    /// When a key is held, the windows of the send's keys that contain it
    /// (wider ones, and those across accounts of a hold of one account)
    /// start over: the burst is held already, and must not hold the rest of
    /// the country, or everyone else's sends, too.
    pub fn admit_keys(&mut self, send: &SendKeys, now: Micros) -> Decision {
        let keys = &send.keys;
        let bucket = self.bucket(now);
        self.each(keys, now, |_, _, _| {});
        self.holds.retain(|_, h| h.until > now);
        if let Some(key) = keys.iter().find(|k| self.holds.contains_key(*k)) {
            if let Some(state) = self.keys.get_mut(key) {
                let t = state.current(bucket);
                t.attempts += 1;
                t.held = true;
            }
            let going_on = self.judgement(key, now).is_some_and(|j| j.going_on);
            let hold = self.holds.get_mut(key).expect("found above");
            let extended = going_on && hold.until - now < self.s.hold / 2;
            if extended {
                hold.until = now + self.s.hold;
            }
            return Decision::Held {
                key: key.clone(),
                hold: *hold,
                tripped: None,
                extended,
            };
        }
        self.each(keys, now, |_, state, bucket| {
            state.current(bucket).attempts += 1;
        });
        for tripped in keys {
            let Some(j) = self.judgement(tripped, now) else {
                continue;
            };
            if !j.trips {
                continue;
            }
            // Held where the burst is: the narrowest key within the one that
            // tripped (the account's before all accounts') that holds at
            // least half its attempts. A burst from one account's key to one
            // prefix that tripped the country across accounts holds that
            // account's prefix, not the country.
            let key = keys
                .iter()
                .find(|c| {
                    c.scope >= tripped.scope
                        && (tripped.account.is_none() || c.account == tripped.account)
                        && self
                            .keys
                            .get(*c)
                            .is_some_and(|s| s.recent().attempts * 2 >= j.volume)
                })
                .unwrap_or(tripped)
                .clone();
            // A second block (or prefix) of one parent held: the burst walks
            // the range, so the parent is held.
            let key = self.escalation(&key, keys).unwrap_or(key);
            let j = self.judgement(&key, now).unwrap_or(j);
            let hold = LocalHold {
                id: None,
                until: now + self.s.hold,
            };
            self.holds.insert(key.clone(), hold);
            let part: Vec<(i64, Tally)> = match self.keys.get_mut(&key) {
                Some(state) => {
                    state.current(bucket).held = true;
                    state.buckets.iter().copied().collect()
                }
                None => Vec::new(),
            };
            // The burst is held: the keys that contain the held one (wider
            // ones, and those across accounts of a hold of one account) no
            // longer count it, so it trips neither the rest of the country
            // nor everyone else's sends.
            for wider in keys
                .iter()
                .filter(|k| **k != key && (k.scope < key.scope || k.account != key.account))
                .filter(|k| key.account.is_some() || k.account.is_none())
            {
                if let Some(state) = self.keys.get_mut(wider) {
                    state.subtract(&part);
                }
            }
            return Decision::Held {
                key: key.clone(),
                hold,
                tripped: Some(Trip {
                    key: key.clone(),
                    volume: j.volume,
                    expected: j.expected,
                    conversion: j.conversion,
                    baseline_conversion: j.baseline_conversion,
                    until: hold.until,
                }),
                extended: false,
            };
        }
        Decision::Pass
    }

    /// The parent of `key` among the send's `keys` (its prefix, or its
    /// country, with the same account) when a sibling of `key` under that
    /// parent is held already.
    fn escalation(&self, key: &Key, keys: &[Key]) -> Option<Key> {
        let parent_of = |k: &Key| -> Option<Key> {
            let wider = match k.scope {
                HoldScope::Block => HoldScope::Prefix,
                HoldScope::Prefix => HoldScope::Country,
                HoldScope::Country => return None,
            };
            keys_of(0, &sample_number(k))
                .into_iter()
                .find(|p| p.scope == wider)
                .map(|p| Key {
                    account: k.account,
                    ..p
                })
        };
        let parent = parent_of(key)?;
        let sibling_held = self.holds.keys().any(|h| {
            h != key
                && h.scope == key.scope
                && h.account == key.account
                && parent_of(h).is_some_and(|p| p == parent)
        });
        (sibling_held && keys.contains(&parent)).then_some(parent)
    }

    /// How `key`'s window compares with its baseline at `now`.
    fn judgement(&self, key: &Key, now: Micros) -> Option<Judgement> {
        let state = self.keys.get(key)?;
        let s = &self.s;
        let recent = state.recent();
        let expected = state.base_attempts * s.window_buckets as f64;
        let over_baseline = f64::from(recent.attempts) >= s.surge_factor * expected.max(1.0);
        let surging = recent.attempts >= s.min_volume && over_baseline;
        // A held burst still goes on at half the volume that tripped it.
        let going_on = recent.attempts.saturating_mul(2) >= s.min_volume && over_baseline;
        let conversion = if recent.judged == 0 {
            1.0
        } else {
            (f64::from(recent.good) / f64::from(recent.judged)).min(1.0)
        };
        // The baseline's judged sends over its time constant.
        let history = state.base_judged / self.alpha;
        let baseline_conversion = if history >= f64::from(s.min_volume) && state.base_judged > 0.0 {
            (state.base_good / state.base_judged).min(1.0)
        } else {
            s.prior_conversion
        };
        let trips = surging
            && recent.judged.saturating_mul(2) >= s.min_volume
            && conversion <= s.collapse_ratio * baseline_conversion
            && self
                .quiet
                .get(&(key.scope, key.value.clone()))
                .is_none_or(|until| now >= *until);
        Some(Judgement {
            volume: recent.attempts,
            expected,
            conversion,
            baseline_conversion,
            going_on,
            trips,
        })
    }

    /// [`Judge::accepted_keys`] of a send of `account` to `e164`.
    #[cfg(test)]
    pub fn accepted(&mut self, account: AccountId, e164: &str, now: Micros) {
        self.accepted_keys(&SendKeys::of(account, e164), now);
    }

    /// Counts `send`, accepted.
    pub fn accepted_keys(&mut self, send: &SendKeys, now: Micros) {
        // A send of an account judged on deliveries is judged when its
        // receipt comes ([`Judge::receipt`]): counted at accept, a send whose
        // receipt is still on its way (an SMSC down or behind) would look
        // undelivered, and an outage would look like pumping.
        let judged = self.signal(send.account, now) == Signal::Verify;
        self.each(&send.keys, now, |_, state, bucket| {
            let t = state.current(bucket);
            t.sent += 1;
            t.judged += u32::from(judged);
        });
    }

    /// Counts a code of `account` sent to `e164` verified now; the account
    /// is judged on verifications from here on.
    pub fn verified(&mut self, account: AccountId, e164: &str, now: Micros) {
        self.accounts.entry(account).or_default().verified_at = Some(now);
        self.each(&keys_of(account, e164), now, |_, state, bucket| {
            state.current(bucket).good += 1;
        });
    }

    /// Counts a final receipt (delivered or not) of a send of `account` to
    /// `e164`; a delivery is a good outcome for an account judged on them.
    pub fn receipt(&mut self, account: AccountId, e164: &str, delivered: bool, now: Micros) {
        self.accounts.entry(account).or_default().receipt_at = Some(now);
        if self.signal(account, now) == Signal::Delivery {
            self.each(&keys_of(account, e164), now, |_, state, bucket| {
                let t = state.current(bucket);
                t.judged += 1;
                t.good += u32::from(delivered);
            });
        }
    }

    /// Takes in the stored holds (read back from the store at `now`): an
    /// active one stands here too, with its stored end; a released one is
    /// lifted and its key kept quiet for `hold` after the release.
    pub fn sync(&mut self, stored: &[GuardHold], now: Micros) {
        for h in stored {
            let key = Key::of_hold(h);
            if let Some(released) = h.released_at {
                if self.released.insert(h.id, released).is_none()
                    && self
                        .holds
                        .get(&key)
                        .is_none_or(|l| l.id.is_none_or(|id| id <= h.id))
                {
                    self.release(&key, released);
                }
            } else if h.is_active(now) && !self.released.contains_key(&h.id) {
                // A copy read before its release committed must not bring a
                // hold this node already let go back.
                let local = self.holds.entry(key).or_insert(LocalHold {
                    id: Some(h.id),
                    until: h.until,
                });
                local.id = Some(h.id);
                local.until = local.until.max(h.until);
            }
        }
        self.holds.retain(|_, h| h.until > now);
    }

    /// The hold a send was refused under now has this stored id.
    pub fn placed(&mut self, key: &Key, id: i64, until: Micros) {
        if let Some(h) = self.holds.get_mut(key) {
            h.id = Some(id);
            h.until = h.until.max(until);
        }
    }

    /// Lifts a hold an operator released at `at`: its scope and value, and
    /// every wider one, do not trip again for `hold`, for any account (an
    /// operator who let a prefix through does not want its country held
    /// the next minute in its place).
    pub fn release(&mut self, key: &Key, at: Micros) {
        self.holds.remove(key);
        let until = at + self.s.hold;
        for wider in keys_of(0, &sample_number(key))
            .into_iter()
            .filter(|k| k.account.is_none() && k.scope <= key.scope)
        {
            let quiet = self.quiet.entry((wider.scope, wider.value)).or_default();
            *quiet = (*quiet).max(until);
        }
        let quiet = self
            .quiet
            .entry((key.scope, key.value.clone()))
            .or_default();
        *quiet = (*quiet).max(until);
    }

    /// The holds standing here at `now`, per scope and whether across accounts.
    pub fn active_holds(&self, now: Micros) -> Vec<(&Key, LocalHold)> {
        self.holds
            .iter()
            .filter(|(_, h)| h.until > now)
            .map(|(k, h)| (k, *h))
            .collect()
    }

    /// Forgets keys not seen for four baselines and accounts whose signal
    /// is older than `signal_memory`.
    pub fn prune(&mut self, now: Micros) {
        let idle = 4 * self.s.baseline;
        let holds = &self.holds;
        self.keys
            .retain(|k, state| now - state.last_seen < idle || holds.contains_key(k));
        self.quiet.retain(|_, until| *until > now);
        let day = 24 * 3600 * 1_000_000;
        self.released.retain(|_, at| now - *at < day);
        let memory = self.s.signal_memory;
        self.accounts.retain(|_, a| {
            a.verified_at.is_some_and(|t| now - t <= memory)
                || a.receipt_at.is_some_and(|t| now - t <= memory)
        });
    }

    /// Keys tracked now.
    pub fn tracked(&self) -> usize {
        self.keys.len()
    }
}

/// Decides a send of `account` to `e164` at `now` as the server does:
/// [`Judge::admit`], except that a send a hold would refuse (one standing
/// on its keys, or one its own attempt trips) passes the hold when
/// `proven` says its number is proven good for the account
/// ([`Decision::Passed`]; with `pass_proven` off it is never asked).
/// `proven` gets what proves a number for this account ([`Judge::proof`]),
/// is asked at most once and only on that path, and is awaited with the
/// judge unlocked (std Mutex: never held across .await).
pub async fn decide<F, Fut>(
    judge: &Mutex<Judge>,
    send: &SendKeys,
    now: Micros,
    proven: F,
) -> Decision
where
    F: FnOnce(Proof) -> Fut,
    Fut: Future<Output = bool>,
{
    let lock = || judge.lock().expect("guard judge poisoned");
    // What to ask about a send a hold would refuse, if anything.
    let ask = |j: &Judge| j.s.pass_proven.then(|| j.proof(send.account, now));
    // Without a question to ask, the send is admitted under the same lock.
    let decision = {
        let mut j = lock();
        match j.holding_keys(send, now).and_then(|_| ask(&j)) {
            Some(proof) => Err(proof),
            None => Ok(j.admit_keys(send, now)),
        }
    };
    let decision = match decision {
        Ok(decision) => decision,
        Err(proof) => {
            return if proven(proof).await {
                lock().admit_proven_keys(send, now)
            } else {
                lock().admit_keys(send, now)
            };
        }
    };
    let Decision::Held {
        key,
        hold,
        tripped,
        extended,
    } = decision
    else {
        return decision;
    };
    // The hold tripped on this very send (or another send placed it in
    // between): the attempt is counted already, as the judge saw it.
    let proof = ask(&lock());
    match proof {
        Some(proof) if proven(proof).await => Decision::Passed {
            key,
            hold,
            tripped,
            extended,
        },
        _ => Decision::Held {
            key,
            hold,
            tripped,
            extended,
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Judgement {
    volume: u32,
    expected: f64,
    conversion: f64,
    baseline_conversion: f64,
    going_on: bool,
    trips: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Micros = 1_000_000;
    const MINUTE: Micros = 60 * SECOND;

    fn settings() -> Settings {
        Settings {
            bucket: MINUTE,
            window_buckets: 10,
            baseline: 6 * 60 * MINUTE,
            min_volume: 100,
            surge_factor: 4.0,
            collapse_ratio: 0.25,
            prior_conversion: 0.5,
            hold: 15 * MINUTE,
            max_keys: 10_000,
            signal_memory: 24 * 60 * MINUTE,
            pass_proven: true,
        }
    }

    /// `n` sends of `account` to numbers of block `+97798412` spread over
    /// `minutes` from `start`, each verified `verify` of the time.
    fn traffic(
        judge: &mut Judge,
        account: AccountId,
        block: &str,
        start: Micros,
        minutes: i64,
        n: i64,
        verify_every: Option<i64>,
    ) -> (i64, i64) {
        let mut held = 0;
        for i in 0..n {
            let now = start + i * minutes * MINUTE / n;
            let number = format!("{block}{:05}", i % 100_000);
            match judge.admit(account, &number, now) {
                Decision::Pass => {
                    judge.accepted(account, &number, now);
                    if verify_every.is_some_and(|k| i % k != 0) {
                        judge.verified(account, &number, now + 20 * SECOND);
                    }
                }
                // `admit` asks nothing: it passes or holds.
                Decision::Held { .. } | Decision::Passed { .. } => held += 1,
            }
        }
        (n - held, held)
    }

    #[test]
    fn the_keys_of_a_send_go_from_its_block_to_its_country_account_first() {
        let keys = keys_of(7, "+9779841234567");
        let shown: Vec<_> = keys
            .iter()
            .map(|k| (k.scope.as_str(), k.value.as_str(), k.account))
            .collect();
        assert_eq!(
            shown,
            [
                ("block", "+9779841234", Some(7)),
                ("prefix", "+977984", Some(7)),
                ("country", "977", Some(7)),
                ("block", "+9779841234", None),
                ("prefix", "+977984", None),
                ("country", "977", None),
            ]
        );
    }

    #[test]
    fn a_burst_that_is_never_verified_is_held_and_verified_traffic_is_not() {
        let mut judge = Judge::new(settings());
        // An hour of verified traffic makes the account one that verifies.
        let (passed, held) = traffic(&mut judge, 1, "+9779841", 0, 60, 600, Some(5));
        assert_eq!((passed, held), (600, 0));
        // A burst to another prefix, never verified.
        let (passed, held) = traffic(&mut judge, 1, "+9779801", 60 * MINUTE, 5, 1000, None);
        assert!(passed <= 110, "{passed} passed");
        assert_eq!(passed + held, 1000);
        // The first prefix still passes.
        assert_eq!(
            judge.admit(1, "+9779841000001", 66 * MINUTE),
            Decision::Pass
        );
    }

    #[test]
    fn a_verified_surge_is_not_held() {
        let mut judge = Judge::new(settings());
        traffic(&mut judge, 1, "+9779841", 0, 60, 600, Some(5));
        let (_, held) = traffic(&mut judge, 1, "+9779801", 60 * MINUTE, 5, 2000, Some(5));
        assert_eq!(held, 0);
    }

    #[test]
    fn an_account_that_never_verifies_is_judged_on_deliveries() {
        let mut judge = Judge::new(settings());
        let now = 0;
        judge.receipt(2, "+9779841000000", true, now);
        assert_eq!(judge.signal(2, now), Signal::Delivery);
        // Delivered traffic passes.
        for i in 0..300 {
            let number = format!("+97798410{i:05}");
            let at = now + i * SECOND;
            assert_eq!(judge.admit(2, &number, at), Decision::Pass);
            judge.accepted(2, &number, at);
            judge.receipt(2, &number, true, at + SECOND);
        }
        // Undelivered traffic to another prefix is held.
        let mut held = 0;
        for i in 0..300 {
            let number = format!("+97798010{i:05}");
            let at = now + 400 * SECOND + i * SECOND;
            match judge.admit(2, &number, at) {
                Decision::Pass => {
                    judge.accepted(2, &number, at);
                    judge.receipt(2, &number, false, at + SECOND);
                }
                Decision::Held { .. } | Decision::Passed { .. } => held += 1,
            }
        }
        assert!(held >= 190, "{held} held");
    }

    #[test]
    fn receipts_still_on_their_way_are_not_taken_for_failures() {
        let mut judge = Judge::new(settings());
        judge.receipt(2, "+9779841000000", true, 0);
        // The SMSC goes quiet: a burst is accepted and no receipt comes back
        // for ten minutes. Nothing is judged, so nothing is held.
        let mut accepted = Vec::new();
        for i in 0..600 {
            let number = format!("+97798410{i:05}");
            let at = SECOND + i * SECOND;
            assert_eq!(judge.admit(2, &number, at), Decision::Pass, "send {i}");
            judge.accepted(2, &number, at);
            accepted.push((number, at));
        }
        // Then its receipts come, delivered: still nothing held.
        for (number, at) in &accepted {
            judge.receipt(2, number, true, at + 600 * SECOND);
        }
        assert_eq!(
            judge.admit(2, "+977984100999", 1300 * SECOND),
            Decision::Pass
        );
    }

    #[test]
    fn an_account_without_a_signal_is_not_judged() {
        let mut judge = Judge::new(settings());
        let (_, held) = traffic(&mut judge, 3, "+9779801", 0, 5, 1000, None);
        assert_eq!(held, 0);
    }

    #[test]
    fn a_hold_lasts_while_the_burst_goes_on_and_ends_after_it() {
        let mut s = settings();
        s.hold = 4 * MINUTE;
        let mut judge = Judge::new(s);
        traffic(&mut judge, 1, "+9779841", 0, 60, 600, Some(5));
        // Twenty minutes of a burst, longer than the hold.
        let (passed, held) = traffic(&mut judge, 1, "+9779801", 60 * MINUTE, 20, 4000, None);
        // The burst walks four blocks of the prefix: the first is held
        // after `min_volume`, the second too, and then the prefix.
        assert!(
            passed <= 210 && held >= 3790,
            "{passed} passed, {held} held"
        );
        // Well after the burst, the prefix passes again.
        assert_eq!(
            judge.admit(1, "+9779801999999", 100 * MINUTE),
            Decision::Pass
        );
    }

    #[test]
    fn a_released_key_stays_quiet_for_a_hold() {
        let mut judge = Judge::new(settings());
        traffic(&mut judge, 1, "+9779841", 0, 60, 600, Some(5));
        traffic(&mut judge, 1, "+9779801", 60 * MINUTE, 2, 300, None);
        let now = 62 * MINUTE;
        let Decision::Held { key, .. } = judge.admit(1, "+977980100001", now) else {
            panic!("held");
        };
        assert_eq!(key.scope, HoldScope::Block);
        judge.release(&key, now);
        // Neither the block nor its prefix or country holds it again.
        let (_, held) = traffic(&mut judge, 1, "+9779801", now, 2, 200, None);
        assert_eq!(held, 0);
    }

    #[test]
    fn a_stale_copy_of_a_released_hold_does_not_bring_it_back() {
        let mut judge = Judge::new(settings());
        traffic(&mut judge, 1, "+9779841", 0, 60, 600, Some(5));
        traffic(&mut judge, 1, "+9779801", 60 * MINUTE, 2, 300, None);
        let now = 62 * MINUTE;
        let Decision::Held { key, hold, .. } = judge.admit(1, "+977980100001", now) else {
            panic!("held");
        };
        let stored = GuardHold {
            id: 7,
            scope: key.scope,
            value: key.value.clone(),
            account_id: key.account,
            reason: "burst".into(),
            volume: 300,
            conversion_ppm: 0,
            baseline_ppm: 800_000,
            created_at: now,
            until: hold.until,
            released_at: None,
            released_by: None,
        };
        judge.placed(&key, 7, hold.until);
        // Released here; then a refresh that read the holds before the
        // release committed hands the unreleased copy over.
        let released = GuardHold {
            released_at: Some(now + 1),
            released_by: Some("admin-api".into()),
            ..stored.clone()
        };
        judge.sync(std::slice::from_ref(&released), now + 1);
        judge.sync(std::slice::from_ref(&stored), now + 2);
        assert!(judge.active_holds(now + 2).is_empty());
        assert_eq!(judge.admit(1, "+977980100002", now + 3), Decision::Pass);
    }

    #[test]
    fn keys_beyond_the_bound_are_not_tracked() {
        let mut s = settings();
        s.max_keys = 6;
        let mut judge = Judge::new(s);
        judge.admit(1, "+9779841000001", 0);
        judge.admit(1, "+9779801000001", 0);
        assert_eq!(judge.tracked(), 6);
        assert!(judge.untracked > 0);
    }

    /// [`decide`] with a synchronous answer, as the simulation runs it.
    fn decide_now(
        judge: &Mutex<Judge>,
        account: AccountId,
        e164: &str,
        now: Micros,
        proven: impl FnOnce(Proof) -> bool,
    ) -> Decision {
        use futures_util::FutureExt;
        decide(judge, &SendKeys::of(account, e164), now, |proof| {
            std::future::ready(proven(proof))
        })
        .now_or_never()
        .expect("a ready answer leaves nothing to wait for")
    }

    /// Account 1 verifies, and a burst of it to block `+9779801` is held.
    fn held_burst(s: Settings) -> Mutex<Judge> {
        let mut judge = Judge::new(s);
        traffic(&mut judge, 1, "+9779841", 0, 60, 600, Some(5));
        let (_, held) = traffic(&mut judge, 1, "+9779801", 60 * MINUTE, 2, 300, None);
        assert!(held > 0);
        Mutex::new(judge)
    }

    #[test]
    fn a_hold_lets_a_number_proven_by_a_verification_through_and_holds_new_ones() {
        let judge = held_burst(settings());
        let now = 62 * MINUTE;
        let returning = "+977980100999";
        let asked = std::cell::RefCell::new(Vec::new());
        let proven = |number: &'static str| {
            let asked = &asked;
            move |proof| {
                asked.borrow_mut().push(proof);
                number == returning
            }
        };
        let passed = decide_now(&judge, 1, returning, now, proven(returning));
        let Decision::Passed { key, tripped, .. } = passed else {
            panic!("{passed:?}");
        };
        assert_eq!((key.scope, key.account), (HoldScope::Block, Some(1)));
        assert_eq!(tripped, None);
        let fresh = "+977980100998";
        let held = decide_now(&judge, 1, fresh, now, proven(fresh));
        assert!(matches!(held, Decision::Held { .. }), "{held:?}");
        // Asked once per held send, for a verification (account 1 verifies).
        assert_eq!(*asked.borrow(), [Proof::Verified, Proof::Verified]);
        // A send no hold refuses is not asked about.
        let elsewhere = decide_now(&judge, 1, "+9779841000001", now, |_| {
            panic!("asked about a send no hold refuses")
        });
        assert_eq!(elsewhere, Decision::Pass);
        // A returning user does not keep the hold going.
        let until = judge.lock().unwrap().holds[&key].until;
        for i in 0..50 {
            decide_now(&judge, 1, returning, now + i * SECOND, |_| true);
        }
        assert_eq!(judge.lock().unwrap().holds[&key].until, until);
    }

    #[test]
    fn with_pass_proven_off_a_hold_refuses_every_number() {
        let mut s = settings();
        s.pass_proven = false;
        let judge = held_burst(s);
        let held = decide_now(&judge, 1, "+977980100999", 62 * MINUTE, |_| {
            panic!("asked with pass_proven off")
        });
        assert!(matches!(held, Decision::Held { .. }), "{held:?}");
    }

    #[test]
    fn a_proven_send_whose_attempt_trips_a_hold_passes_and_the_hold_stands() {
        let mut judge = Judge::new(settings());
        traffic(&mut judge, 1, "+9779841", 0, 60, 600, Some(5));
        let judge = Mutex::new(judge);
        let mut decisions = Vec::new();
        for i in 0..300 {
            let number = format!("+9779801{:05}", i);
            let now = 60 * MINUTE + i * 2 * MINUTE / 300;
            let d = decide_now(&judge, 1, &number, now, |_| true);
            if !matches!(d, Decision::Held { .. }) {
                judge.lock().unwrap().accepted(1, &number, now);
            }
            decisions.push(d);
        }
        let first = decisions
            .iter()
            .position(|d| *d != Decision::Pass)
            .expect("the burst tripped a hold");
        assert!(
            matches!(
                &decisions[first],
                Decision::Passed {
                    tripped: Some(_),
                    ..
                }
            ),
            "{:?}",
            decisions[first]
        );
        assert!(
            decisions[first + 1..]
                .iter()
                .all(|d| matches!(d, Decision::Passed { tripped: None, .. })),
            "every later send passes the standing hold"
        );
    }

    #[test]
    fn an_account_judged_on_deliveries_proves_numbers_by_deliveries() {
        let mut judge = Judge::new(settings());
        assert_eq!(judge.proof(2, 0), Proof::Verified);
        judge.receipt(2, "+9779841000000", true, 0);
        assert_eq!(judge.proof(2, 0), Proof::Delivered);
        judge.verified(2, "+9779841000000", SECOND);
        assert_eq!(judge.proof(2, SECOND), Proof::Verified);
    }
}
