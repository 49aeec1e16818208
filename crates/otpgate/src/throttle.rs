//! Per-node throttles on requests that cost the store without spending
//! credits: verifications per account and per number ([`VerifyLimiter`]), and
//! list queries running at once per account ([`ListSlots`]).
//!
//! They live in this process's memory, not in the store. Both guard the
//! database against floods rather than meter a budget, and a counter in the
//! store would cost a write per verification on rows the accept path locks.
//! With several nodes, an account may get up to the limit on each of them. What
//! stops guessing a code is its attempt limit (`verify.max_attempts`), which is
//! kept in the store and holds across nodes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use otp_store::admission::RateWindow;
use otp_store::{AccountId, Micros};

/// What a verification checks a code against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VerifyTarget {
    /// The number's newest code (the number as stored: its display form).
    Number(String),
    /// One OTP, by id.
    Id(i64),
}

/// The verify limits; a zero turns one off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyLimits {
    /// Most verifications of one target of an account within `per_number_window`.
    pub per_number_max: u32,
    pub per_number_window: Micros,
    /// Most verifications per second of one account.
    pub per_account_rps: u32,
}

/// Which verify limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyRefusal {
    /// The number (or OTP id) was verified `per_number_max` times within the
    /// window; the oldest of those leaves it after this many seconds.
    Number { retry_after_seconds: u64 },
    /// The account is verifying faster than `per_account_rps`; retry in a second.
    Account,
}

/// Counts verifications per account (a sliding one-second rate, as for sends)
/// and per account and target (the times of the last `per_number_max`).
/// Refused requests are not counted.
pub struct VerifyLimiter {
    limits: VerifyLimits,
    // std Mutex: a few map operations per request, never held across an await.
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    accounts: HashMap<AccountId, RateWindow>,
    targets: HashMap<(AccountId, VerifyTarget), VecDeque<Micros>>,
    /// `targets` is cleared of quiet entries when it grows to this size, so
    /// its memory follows the verifications of one window, not of all time.
    prune_at: usize,
}

const MIN_PRUNE_AT: usize = 1024;

impl VerifyLimiter {
    pub fn new(limits: VerifyLimits) -> Self {
        VerifyLimiter {
            limits,
            counts: Mutex::new(Counts {
                prune_at: MIN_PRUNE_AT,
                ..Counts::default()
            }),
        }
    }

    /// Admits one verification of `target` at `now` and counts it, or says
    /// which limit refuses it (and counts nothing).
    pub fn admit(
        &self,
        account: AccountId,
        target: VerifyTarget,
        now: Micros,
    ) -> Result<(), VerifyRefusal> {
        let max = self.limits.per_number_max as usize;
        let window = self.limits.per_number_window;
        let per_target = max > 0 && window > 0;
        let mut counts = self.counts.lock().expect("verify limiter poisoned");
        let key = (account, target);
        if per_target && let Some(times) = counts.targets.get_mut(&key) {
            while times.front().is_some_and(|t| *t <= now - window) {
                times.pop_front();
            }
            if let (true, Some(oldest)) = (times.len() >= max, times.front()) {
                let wait = (oldest + window - now).max(1) as u64;
                return Err(VerifyRefusal::Number {
                    retry_after_seconds: wait.div_ceil(1_000_000),
                });
            }
        }
        let rate = counts.accounts.entry(account).or_default();
        if !rate.admits(now, i64::from(self.limits.per_account_rps)) {
            return Err(VerifyRefusal::Account);
        }
        rate.record(now);
        if per_target {
            counts.prune(now - window);
            counts.targets.entry(key).or_default().push_back(now);
        }
        Ok(())
    }
}

impl Counts {
    fn prune(&mut self, quiet_since: Micros) {
        if self.targets.len() < self.prune_at {
            return;
        }
        self.targets
            .retain(|_, times| times.back().is_some_and(|t| *t > quiet_since));
        self.prune_at = (self.targets.len() * 2).max(MIN_PRUNE_AT);
    }
}

/// Slots for list queries, `per_account` per account: a list takes one for as
/// long as its query runs, so one account's lists cannot fill the store's list
/// connections. A list that finds none free waits up to `wait` for one.
pub struct ListSlots {
    per_account: usize,
    wait: Duration,
    // std Mutex: held only to find, add or drop an account's semaphore.
    accounts: Mutex<HashMap<AccountId, Arc<Semaphore>>>,
}

/// One running list's slot, given back when dropped.
pub struct ListSlot {
    slots: Arc<ListSlots>,
    account: AccountId,
    permit: Option<OwnedSemaphorePermit>,
}

impl ListSlots {
    /// `per_account` 0: no bound.
    pub fn new(per_account: usize, wait: Duration) -> Self {
        ListSlots {
            per_account,
            wait,
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// A slot of `account`'s, waiting up to the configured time for one to come
    /// free; `None` when none did.
    pub async fn acquire(self: &Arc<Self>, account: AccountId) -> Option<ListSlot> {
        let slot = |permit| ListSlot {
            slots: self.clone(),
            account,
            permit,
        };
        if self.per_account == 0 {
            return Some(slot(None));
        }
        let semaphore = self
            .accounts
            .lock()
            .expect("list slots poisoned")
            .entry(account)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_account)))
            .clone();
        // A timeout polls its future once before it looks at the clock, so a
        // free slot is taken even with no wait at all.
        let permit = tokio::time::timeout(self.wait, semaphore.acquire_owned()).await;
        match permit {
            Ok(Ok(permit)) => Some(slot(Some(permit))),
            _ => {
                self.forget_if_idle(account);
                None
            }
        }
    }

    /// Drops an account's semaphore once nobody holds or awaits it.
    fn forget_if_idle(&self, account: AccountId) {
        let mut accounts = self.accounts.lock().expect("list slots poisoned");
        // Clones are only made under this lock, so a count of one (the map's)
        // cannot grow while it is held.
        if accounts
            .get(&account)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            accounts.remove(&account);
        }
    }

    /// Accounts with a slot held or awaited (for tests).
    pub fn busy_accounts(&self) -> usize {
        self.accounts.lock().expect("list slots poisoned").len()
    }
}

impl Drop for ListSlot {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            self.slots.forget_if_idle(self.account);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;

    fn limiter(per_number_max: u32, window_seconds: i64, per_account_rps: u32) -> VerifyLimiter {
        VerifyLimiter::new(VerifyLimits {
            per_number_max,
            per_number_window: window_seconds * S,
            per_account_rps,
        })
    }

    fn number(n: &str) -> VerifyTarget {
        VerifyTarget::Number(n.to_owned())
    }

    #[test]
    fn a_number_gets_its_max_in_a_window_and_the_next_waits_for_the_oldest() {
        let l = limiter(3, 60, 0);
        let t0 = 1_000 * S;
        for i in 0..3 {
            assert_eq!(l.admit(1, number("9851023212"), t0 + i * S), Ok(()));
        }
        assert_eq!(
            l.admit(1, number("9851023212"), t0 + 10 * S),
            Err(VerifyRefusal::Number {
                retry_after_seconds: 50
            })
        );
        // Another number, another account's same number and an id are apart.
        assert_eq!(l.admit(1, number("9841000000"), t0 + 10 * S), Ok(()));
        assert_eq!(l.admit(2, number("9851023212"), t0 + 10 * S), Ok(()));
        assert_eq!(l.admit(1, VerifyTarget::Id(7), t0 + 10 * S), Ok(()));
        // Once the oldest leaves the window, one more passes.
        assert_eq!(l.admit(1, number("9851023212"), t0 + 60 * S + 1), Ok(()));
        assert!(l.admit(1, number("9851023212"), t0 + 60 * S + 2).is_err());
    }

    #[test]
    fn refused_verifications_are_not_counted() {
        let l = limiter(2, 60, 0);
        let t0 = 1_000 * S;
        l.admit(1, number("9851023212"), t0).unwrap();
        l.admit(1, number("9851023212"), t0 + 30 * S).unwrap();
        for i in 0..100 {
            assert!(l.admit(1, number("9851023212"), t0 + 31 * S + i).is_err());
        }
        // Had the refusals counted, the window would still be full.
        assert_eq!(l.admit(1, number("9851023212"), t0 + 61 * S), Ok(()));
    }

    #[test]
    fn an_account_gets_its_rate_per_second_across_numbers() {
        let l = limiter(0, 0, 5);
        let t0 = 1_000 * S;
        for i in 0..5 {
            assert_eq!(l.admit(1, number(&format!("98510232{i:02}")), t0), Ok(()));
        }
        assert_eq!(
            l.admit(1, number("9851023299"), t0),
            Err(VerifyRefusal::Account)
        );
        assert_eq!(l.admit(2, number("9851023299"), t0), Ok(()));
        // Two seconds on, the rate has room again.
        assert_eq!(l.admit(1, number("9851023299"), t0 + 2 * S), Ok(()));
    }

    #[test]
    fn zero_turns_both_limits_off() {
        let l = limiter(0, 60, 0);
        for i in 0..10_000 {
            assert_eq!(l.admit(1, number("9851023212"), 1_000 * S + i), Ok(()));
        }
    }

    #[test]
    fn quiet_numbers_are_forgotten_so_memory_follows_one_window() {
        let l = limiter(1, 60, 0);
        let t0 = 1_000 * S;
        for i in 0..5_000 {
            l.admit(1, VerifyTarget::Id(i), t0 + i).unwrap();
        }
        // A window later, new numbers push the old ones out.
        for i in 0..5_000 {
            l.admit(1, VerifyTarget::Id(10_000 + i), t0 + 61 * S + i)
                .unwrap();
        }
        let kept = l.counts.lock().unwrap().targets.len();
        assert!(kept <= 2 * 5_000, "{kept} entries kept");
        assert!(kept >= 5_000, "the live window is kept: {kept}");
    }

    #[tokio::test]
    async fn an_account_holds_at_most_its_slots_and_gets_one_back_when_a_list_ends() {
        let slots = Arc::new(ListSlots::new(2, Duration::ZERO));
        let a = slots.acquire(1).await.expect("first");
        let b = slots.acquire(1).await.expect("second");
        assert!(slots.acquire(1).await.is_none(), "a third is refused");
        let other = slots.acquire(2).await;
        assert!(other.is_some(), "another account has its own");
        drop(a);
        let c = slots.acquire(1).await;
        assert!(c.is_some(), "a slot came back");
        drop((b, c, other));
        assert_eq!(slots.busy_accounts(), 0, "idle accounts are forgotten");
    }

    #[tokio::test]
    async fn a_waiting_list_gets_the_slot_a_running_one_gives_back() {
        let slots = Arc::new(ListSlots::new(1, Duration::from_secs(3600)));
        let running = slots.acquire(1).await.unwrap();
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(1).await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(running);
        assert!(waiting.await.unwrap());
        assert_eq!(slots.busy_accounts(), 0);
    }

    #[tokio::test]
    async fn zero_slots_means_no_bound() {
        let slots = Arc::new(ListSlots::new(0, Duration::ZERO));
        let held: Vec<_> = futures_util::future::join_all((0..100).map(|_| slots.acquire(1)))
            .await
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert_eq!(held.len(), 100);
    }
}
