//! The SMS-pumping guard's shared state: holds on a country, operator
//! prefix or number block, for one account or across accounts
//! ([`GuardStore`]).
//!
//! The judging happens in each node's memory (the service's `guard`
//! module); what must be the same on every node is which sends are held.
//! A node that judges a burst places a hold ([`GuardStore::place_hold`]):
//! one key has at most one open hold (a unique index over open holds), so
//! of two nodes placing the same hold at once one creates it and the other
//! gets it back, and only the first raises the alerts. Every node reads the
//! holds back ([`GuardStore::guard_holds`]) on a short period, and an
//! operator releases one ([`GuardStore::release_hold`]) from any node.
//!
//! Three reads serve the guard's edges: where the OTPs a batch of receipts
//! matched were sent ([`GuardStore::otp_destinations`]); what a send under
//! an idempotency key got ([`GuardStore::idempotent_send`]), so a retry of
//! a send accepted before a hold is answered as the first time; and
//! whether a number a hold would refuse is proven good for the account
//! ([`GuardStore::proven_number`]), so a returning user passes the hold.

use crate::{Accepted, AccountId, Micros, StoreError};

/// What a hold covers, narrowest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HoldScope {
    /// A calling code: `977`.
    Country,
    /// A calling code and three national digits: `+977984`.
    Prefix,
    /// The E.164 number without its last three digits: `+9779841234`.
    Block,
}

impl HoldScope {
    pub const ALL: [HoldScope; 3] = [HoldScope::Country, HoldScope::Prefix, HoldScope::Block];

    pub fn as_str(self) -> &'static str {
        match self {
            HoldScope::Country => "country",
            HoldScope::Prefix => "prefix",
            HoldScope::Block => "block",
        }
    }

    pub fn parse(s: &str) -> Option<HoldScope> {
        HoldScope::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A hold as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardHold {
    pub id: i64,
    pub scope: HoldScope,
    /// The country code, prefix or block held (digits and `+` only).
    pub value: String,
    /// The account whose sends are held; `None`: every account's.
    pub account_id: Option<AccountId>,
    /// Why, in words the guard chose.
    pub reason: String,
    /// Send attempts in the window when the hold was placed.
    pub volume: i64,
    /// The window's conversion then, in parts per million.
    pub conversion_ppm: i64,
    /// The baseline conversion it was compared with, in parts per million.
    pub baseline_ppm: i64,
    pub created_at: Micros,
    /// Sends are held until this time (a burst that goes on pushes it on).
    pub until: Micros,
    /// When an operator released it.
    pub released_at: Option<Micros>,
    /// Who released it (`admin-api`, `cli`).
    pub released_by: Option<String>,
}

impl GuardHold {
    /// Whether sends are held by it at `now`.
    pub fn is_active(&self, now: Micros) -> bool {
        self.released_at.is_none() && self.until > now
    }
}

/// A hold a node judged necessary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHold {
    pub scope: HoldScope,
    pub value: String,
    pub account_id: Option<AccountId>,
    pub reason: String,
    pub volume: i64,
    pub conversion_ppm: i64,
    pub baseline_ppm: i64,
    pub at: Micros,
    pub until: Micros,
}

/// The stored `account_id` of a hold across accounts.
pub(crate) const ACROSS_ACCOUNTS: AccountId = 0;

/// The columns of a hold, in the order [`hold_from_row`] reads them.
pub(crate) const HOLD_COLUMNS: &str = "id, scope, value, account_id, reason, volume, \
     conversion_ppm, baseline_ppm, created_at, until_at, released_at, released_by";

pub(crate) fn hold_from_row(r: &impl crate::rows::Columns) -> Result<GuardHold, StoreError> {
    let account = r.int(3)?;
    Ok(GuardHold {
        id: r.int(0)?,
        scope: crate::rows::parsed("guard_holds.scope", &r.text(1)?, HoldScope::parse)?,
        value: r.text(2)?,
        account_id: (account != ACROSS_ACCOUNTS).then_some(account),
        reason: r.text(4)?,
        volume: r.int(5)?,
        conversion_ppm: r.int(6)?,
        baseline_ppm: r.int(7)?,
        created_at: r.int(8)?,
        until: r.int(9)?,
        released_at: r.opt_int(10)?,
        released_by: r.opt_text(11)?,
    })
}

/// Most holds [`GuardStore::guard_holds`] returns.
pub const MAX_HOLDS_LISTED: i64 = 1000;

/// The SQL both backends run, with `$n` placeholders (SQLite reads them as
/// `?n`).
pub(crate) mod sql {
    /// Closes the open hold of a key that ended: $1 scope, $2 value, $3
    /// account, $4 now.
    pub const CLOSE_ENDED: &str = "UPDATE guard_holds SET open = 0 WHERE scope = $1 \
         AND value = $2 AND account_id = $3 AND open = 1 AND until_at <= $4";
    pub fn insert() -> String {
        format!(
            "INSERT INTO guard_holds (scope, value, account_id, reason, volume, conversion_ppm, \
             baseline_ppm, created_at, until_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT DO NOTHING RETURNING {}",
            super::HOLD_COLUMNS
        )
    }
    pub fn open_of_key() -> String {
        format!(
            "SELECT {} FROM guard_holds WHERE scope = $1 AND value = $2 AND account_id = $3 \
             AND open = 1",
            super::HOLD_COLUMNS
        )
    }
    /// $1 id, $2 new end.
    pub const EXTEND: &str =
        "UPDATE guard_holds SET until_at = $2 WHERE id = $1 AND open = 1 AND until_at < $2";
    /// $1 since, $2 limit.
    pub fn listed() -> String {
        format!(
            "SELECT {} FROM guard_holds WHERE open = 1 OR until_at >= $1 OR released_at >= $1 \
             ORDER BY id DESC LIMIT $2",
            super::HOLD_COLUMNS
        )
    }
    /// $1 id, $2 now, $3 by.
    pub fn release() -> String {
        format!(
            "UPDATE guard_holds SET open = 0, released_at = $2, released_by = $3 \
             WHERE id = $1 AND open = 1 AND until_at > $2 RETURNING {}",
            super::HOLD_COLUMNS
        )
    }
    /// $1 account, $2 number, $3 the status that proves it besides a
    /// verification (`delivered`; `verified` adds nothing). Reads the
    /// `(account_id, e164, created_at)` index of the per-number limits.
    pub const PROVEN: &str = "SELECT 1 FROM otps WHERE account_id = $1 AND e164 = $2 \
         AND (verified_at IS NOT NULL OR status = $3) LIMIT 1";
    /// $1 account, $2 key, $3 since.
    pub const IDEMPOTENT: &str = "SELECT body_hash, otp_id, account_seq, sms_credits, \
         phone_credits FROM idempotency WHERE account_id = $1 AND idem_key = $2 \
         AND created_at > $3";
}

/// The holds, shared by every node of a database.
#[async_trait::async_trait]
pub trait GuardStore: Send + Sync + 'static {
    /// Places a hold unless its key (scope, value, account) has an open one
    /// that has not ended; returns the hold that now stands and whether this
    /// call created it.
    async fn place_hold(&self, hold: NewHold) -> Result<(GuardHold, bool), StoreError>;
    /// Moves an open hold's end to `until`, if that is later.
    async fn extend_hold(&self, id: i64, until: Micros) -> Result<(), StoreError>;
    /// Holds that are open, or ended or were released at or after `since`,
    /// newest first, at most [`MAX_HOLDS_LISTED`].
    async fn guard_holds(&self, since: Micros) -> Result<Vec<GuardHold>, StoreError>;
    /// Releases a hold that is active at `now`; `None` when there is no such
    /// hold (unknown, ended or released before).
    async fn release_hold(
        &self,
        id: i64,
        by: &str,
        now: Micros,
    ) -> Result<Option<GuardHold>, StoreError>;
    /// The account and E.164 number of each of these OTPs that exists.
    async fn otp_destinations(
        &self,
        ids: Vec<i64>,
    ) -> Result<Vec<(i64, AccountId, String)>, StoreError>;
    /// Whether `account` has an OTP to `e164` whose code was verified, or
    /// (with `delivered`) that a receipt said was delivered: a number that
    /// reached a real user of the account before (as long as its OTPs are
    /// kept). An indexed read of that account's OTPs to that number.
    async fn proven_number(
        &self,
        account: AccountId,
        e164: String,
        delivered: bool,
    ) -> Result<bool, StoreError>;
    /// What a send under idempotency key `key` of the account got, if one
    /// was accepted after `since`: its body hash and answer.
    async fn idempotent_send(
        &self,
        account: AccountId,
        key: String,
        since: Micros,
    ) -> Result<Option<(Vec<u8>, Accepted)>, StoreError>;
}

/// The status [`sql::PROVEN`] takes as proof besides a verification.
pub(crate) fn proving_status(delivered: bool) -> &'static str {
    if delivered { "delivered" } else { "verified" }
}

/// The stored account of a hold's key.
pub(crate) fn stored_account(account: Option<AccountId>) -> AccountId {
    account.unwrap_or(ACROSS_ACCOUNTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip() {
        for s in HoldScope::ALL {
            assert_eq!(HoldScope::parse(s.as_str()), Some(s));
        }
        assert_eq!(HoldScope::parse("planet"), None);
    }
}
