//! The records the store reads and writes.

use otp_domain::channel::{Channel, OtpOption, Voice};
use otp_domain::code::OtpCode;
use otp_domain::credits::Cost;
use otp_domain::message::MessageTemplate;
use otp_domain::phone::{E164, PhoneNumber};
use otp_domain::vault::{Binding, CodeVault, MASK};

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;
/// An account's id.
pub type AccountId = i64;

/// A tenant: its balances and how many OTPs it has sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub sms_credits: i64,
    pub phone_credits: i64,
    /// OTPs accepted so far; also the newest OTP's `account_seq`.
    pub otp_count: i64,
    pub created_at: Micros,
    /// When an operator disabled it; `None` while it is enabled. A disabled
    /// account's keys and users are refused and it accepts no send.
    pub disabled_at: Option<Micros>,
    /// The fallback call its text sends get when they do not say; `None`:
    /// no default.
    pub fallback: Option<crate::fallback::AccountFallback>,
}

/// One row of an account's ledger: every top-up, debit and refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub account_id: AccountId,
    /// "topup", "debit" or "refund".
    pub kind: String,
    pub sms_delta: i64,
    pub phone_delta: i64,
    pub otp_id: Option<i64>,
    pub note: Option<String>,
    pub created_at: Micros,
}

/// One thing an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Send OTPs.
    Send,
    /// Verify codes.
    Verify,
    /// List and read OTPs, voices and voice previews, webhook deliveries.
    Read,
    /// Manage the account: its API keys and its webhook.
    Account,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Send, Scope::Verify, Scope::Read, Scope::Account];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Verify => "verify",
            Scope::Read => "read",
            Scope::Account => "account",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Scope`]s, kept in the store as their names joined by commas
/// (`send,verify,read`).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// What a key gets unless asked otherwise: everything but `account`.
    pub const DEFAULT: Scopes = Scopes(0b0111);
    /// Every scope.
    pub const ALL: Scopes = Scopes(0b1111);

    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |bits, s| bits | s.bit()))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes of the set, in [`Scope::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// The first scope of `self` that `holder` lacks, if any.
    pub fn first_missing_from(self, holder: Scopes) -> Option<Scope> {
        self.iter().find(|s| !holder.contains(*s))
    }

    /// A list a person wrote: names separated by commas and/or spaces, at least
    /// one; the error names the first word that is not a scope.
    pub fn parse_list(text: &str) -> Result<Scopes, String> {
        let mut scopes = Scopes(0);
        for word in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            let scope = Scope::parse(word).ok_or_else(|| {
                format!(
                    "unknown scope {:?}; the scopes are send, verify, read and account",
                    word.chars().take(32).collect::<String>()
                )
            })?;
            scopes.0 |= scope.bit();
        }
        if scopes.is_empty() {
            return Err("give at least one scope (send, verify, read, account)".into());
        }
        Ok(scopes)
    }

    /// What the store kept; a name this version does not know (written by a
    /// newer one) grants nothing.
    pub fn from_stored(text: &str) -> Scopes {
        Scopes::of(
            &text
                .split(',')
                .filter_map(|w| Scope::parse(w.trim()))
                .collect::<Vec<_>>(),
        )
    }

    /// The names, in [`Scope::ALL`] order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Scope::as_str).collect()
    }
}

impl std::fmt::Display for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl std::fmt::Debug for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scopes({self})")
    }
}

/// A key to store: only the hash of its secret is kept.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub key_id: String,
    pub account_id: AccountId,
    pub secret_hash: [u8; 32],
    pub label: Option<String>,
    /// What the key may do.
    pub scopes: Scopes,
}

/// A stored API key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: i64,
    /// The public part of the key, printed in listings.
    pub key_id: String,
    pub account_id: AccountId,
    pub secret_hash: Vec<u8>,
    pub label: Option<String>,
    pub created_at: Micros,
    pub revoked_at: Option<Micros>,
    pub last_used: Option<Micros>,
    /// What the key may do.
    pub scopes: Scopes,
    /// Whether its account is disabled, read with the key: such a key is
    /// refused whatever its scopes.
    pub account_disabled: bool,
}

impl std::fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("id", &self.id)
            .field("key_id", &self.key_id)
            .field("account_id", &self.account_id)
            .field("secret_hash", &"[redacted]")
            .field("revoked_at", &self.revoked_at)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// A validated send, ready to be debited and written. The store keeps `otp`
/// only as a hash and a cipher (see [`otp_domain::vault`]), sealed before the
/// send is queued for the writer; the message is kept as its template.
#[derive(Clone)]
pub struct NewOtp {
    pub account_id: AccountId,
    pub api_key_id: Option<i64>,
    /// Stored both as shown in replies ([`PhoneNumber::display`]) and in E.164.
    pub number: PhoneNumber,
    pub template: MessageTemplate,
    /// The code, in plain.
    pub otp: OtpCode,
    pub otp_option: OtpOption,
    pub channel: Channel,
    pub voice: Option<Voice>,
    pub length_factor: Option<f64>,
    pub company_name: Option<String>,
    pub segments: u32,
    pub cost: Cost,
    pub created_at: Micros,
    /// When the code stops verifying.
    pub expires_at: Micros,
    /// The day the send counts against the daily spend cap (days since the
    /// epoch in the service's time zone), and when that day ends.
    pub spend_day: i64,
    pub spend_day_ends: Micros,
    /// A resend: the first record of the live code this send repeats (the
    /// caller found it with [`crate::Store::resend_head`] and put its code in
    /// `otp` and its expiry in `expires_at`). The store checks in the accepting
    /// transaction that it can still verify, and refuses the send with
    /// [`crate::AcceptError::ResendStale`] if not.
    pub resend_of: Option<ResendOf>,
    /// An SMS's fallback call ([`crate::fallback`]): its own, the account's
    /// default, or none. The call's phone credits are debited with the send
    /// ([`crate::fallback::charge`]).
    pub fallback: crate::fallback::SendFallback,
}

/// The live code a resend repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResendOf {
    /// The chain's first record.
    pub id: i64,
    /// Wrong codes after which the code is dead (`verify.max_attempts`).
    pub max_attempts: i64,
}

/// Which live code a generated-code send to a number would repeat: the newest
/// one of the account, sent under the same API key, that can still verify.
#[derive(Debug, Clone)]
pub struct ResendQuery {
    pub account_id: AccountId,
    pub api_key_id: i64,
    pub e164: String,
    pub max_attempts: i64,
    pub now: Micros,
    /// No record created at or before this can still be live (`now` less the
    /// longest expiry a send may have), so the lookup reads only that window
    /// of the number's history, however long it is.
    pub created_after: Micros,
}

/// A chain's first record as the accepting transaction reads it (locked in
/// PostgreSQL), to decide whether a resend may still repeat its code.
pub(crate) struct ChainHead {
    pub id: i64,
    pub account_id: AccountId,
    pub api_key_id: Option<i64>,
    pub e164: String,
    pub generated: bool,
    pub resend_of: Option<i64>,
    pub has_code: bool,
    pub expires_at: Micros,
    pub attempts: i64,
    pub verified_at: Option<Micros>,
}

impl ChainHead {
    /// Whether `otp` may join this chain: same account, key and number, a
    /// first record of a generated code that is neither verified, dead nor
    /// expired at the send's time.
    pub fn admits(&self, otp: &NewOtp, resend: &ResendOf) -> bool {
        self.id == resend.id
            && self.resend_of.is_none()
            && self.generated
            && otp.otp_option == OtpOption::Generated
            && self.account_id == otp.account_id
            && self.api_key_id.is_some()
            && self.api_key_id == otp.api_key_id
            && self.e164 == otp.number.e164()
            && self.has_code
            && self.verified_at.is_none()
            && self.attempts < resend.max_attempts
            && otp.created_at < self.expires_at
    }
}

impl std::fmt::Debug for NewOtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewOtp")
            .field("account_id", &self.account_id)
            .field("channel", &self.channel)
            .field("otp", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Limits on sends, checked in the transaction that accepts the send. A zero
/// turns a limit off; the default has all of them off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendLimits {
    /// Most sends to one number within `per_number_window`.
    pub per_number_max: u32,
    /// The sliding window `per_number_max` counts over.
    pub per_number_window: Micros,
    /// Least time between two sends to one number.
    pub per_number_cooldown: Micros,
    /// Most accepted sends per second of one account (an account may have its
    /// own, [`AccountLimits`]).
    pub per_account_rps: u32,
    /// Most accepted sends per second under one API key.
    pub per_key_rps: u32,
    /// Most credits (SMS and phone together) one account may spend in a day
    /// (an account may have its own).
    pub daily_spend_cap: i64,
    /// Not a limit: the SMS and phone balances below which a send records a
    /// `low_balance` webhook event (an account's webhook may set its own; see
    /// `crate::webhooks`).
    pub low_balance: crate::webhooks::LowBalanceThresholds,
}

/// An account's own limits and what it spent today. `None`: the configured
/// default applies; `Some(0)`: no limit for this account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountLimits {
    pub max_rps: Option<i64>,
    pub daily_spend_cap: Option<i64>,
    /// The day (days since the epoch in the service's time zone) of `spent`.
    pub spend_day: i64,
    /// Credits accepted sends took on `spend_day` (refunds are not subtracted).
    pub spent: i64,
}

impl SendLimits {
    pub(crate) fn window_enabled(&self) -> bool {
        self.per_number_max > 0 && self.per_number_window > 0
    }

    pub(crate) fn enabled(&self) -> bool {
        self.window_enabled() || self.per_number_cooldown > 0
    }

    /// How far back the sends that matter to a check can be.
    pub(crate) fn lookback(&self) -> Micros {
        let window = if self.window_enabled() {
            self.per_number_window
        } else {
            0
        };
        window.max(self.per_number_cooldown)
    }

    /// How many of the newest sends to one number a check needs.
    pub(crate) fn depth(&self) -> i64 {
        if self.window_enabled() {
            i64::from(self.per_number_max)
        } else {
            1
        }
    }
}

/// How long a send's `Idempotency-Key` answers for it.
pub const IDEMPOTENCY_TTL: Micros = 24 * 3600 * 1_000_000;

/// A send's `Idempotency-Key`: within [`IDEMPOTENCY_TTL`], a later send of the
/// account under the same key gets what the first accepted one got, if its body
/// hashes the same, and is refused otherwise.
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    /// A hash of the request body (and the account).
    pub body_hash: Vec<u8>,
}

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdempotencyKey([redacted])")
    }
}

/// Which limit refused a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `per_number_max` sends within the window.
    Window,
    /// The resend cooldown.
    Cooldown,
    /// The account's sends per second.
    AccountRate,
    /// The API key's sends per second.
    KeyRate,
    /// The account's daily spend cap; retry after the day ends.
    DailySpend,
}

/// What an accepted send got.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub id: i64,
    pub account_seq: i64,
    pub sms_credits: i64,
    pub phone_credits: i64,
    /// The fallback call the send wrote (its own or its account's default).
    /// `None` in what an idempotency key kept: a replay reads it from the OTP.
    pub fallback: Option<crate::fallback::NewFallback>,
    /// The send's delivery job, when it was leased as it was written
    /// ([`JobLease`]); `None` otherwise, and in a replay.
    pub leased_job: Option<LeasedJob>,
}

/// Where an OTP is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OtpStatus {
    /// Accepted and waiting for a driver.
    Queued,
    /// Handed to the carrier.
    Sent,
    /// The carrier's receipt says it reached the handset.
    Delivered,
    /// The carrier's receipt says it could not be delivered.
    Undeliverable,
    /// The carrier gave up before delivering (validity period passed).
    Expired,
    /// The carrier refused it after accepting the submission.
    Rejected,
    /// Never handed over: a permanent error or too many attempts.
    Failed,
    /// The recipient's code was verified (final: receipts no longer move it).
    Verified,
}

impl OtpStatus {
    pub const ALL: [OtpStatus; 8] = [
        OtpStatus::Queued,
        OtpStatus::Sent,
        OtpStatus::Delivered,
        OtpStatus::Undeliverable,
        OtpStatus::Expired,
        OtpStatus::Rejected,
        OtpStatus::Failed,
        OtpStatus::Verified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OtpStatus::Queued => "queued",
            OtpStatus::Sent => "sent",
            OtpStatus::Delivered => "delivered",
            OtpStatus::Undeliverable => "undeliverable",
            OtpStatus::Expired => "expired",
            OtpStatus::Rejected => "rejected",
            OtpStatus::Failed => "failed",
            OtpStatus::Verified => "verified",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        OtpStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The SQL condition that holds for every [`is_failure`](Self::is_failure)
    /// status, word for word the condition of SQLite's failure indexes
    /// (migration 27): a list searching for one of them adds it so the index
    /// serves it. PostgreSQL proves it against its own indexes' IN list
    /// (migration 21). Equalities joined by OR, not an IN list: SQLite builds a
    /// temporary B-tree for an IN list of more than two values, and the index
    /// condition is evaluated in every write of an OTP.
    pub(crate) const FAILURE_SQL: &'static str = "(status = 'undeliverable' OR status = 'expired' \
         OR status = 'rejected' OR status = 'failed')";

    /// A list filter on `status` (the column of `alias`, if any): the status
    /// bound as parameter `n`, and, for a failure status, [`Self::FAILURE_SQL`].
    pub(crate) fn filter_sql(self, alias: &str, n: String) -> String {
        if self.is_failure() {
            let failure = Self::FAILURE_SQL.replace("status", &format!("{alias}status"));
            format!(" AND {alias}status = {n} AND {failure}")
        } else {
            format!(" AND {alias}status = {n}")
        }
    }

    /// A final status that means the recipient did not get the code: its credits
    /// are refunded.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            OtpStatus::Undeliverable | OtpStatus::Expired | OtpStatus::Rejected | OtpStatus::Failed
        )
    }
}

/// A stored OTP.
///
/// `status` is as shown: `verified` once verified, `expired` once a code that
/// is queued, sent or delivered passes `expires_at` (the stored delivery status
/// keeps following receipts, so refunds stay right).
#[derive(Clone, PartialEq)]
pub struct OtpRecord {
    pub id: i64,
    pub account_id: AccountId,
    pub account_seq: i64,
    /// Where it went; [`E164::display`] is the form replies show.
    pub number: E164,
    pub template: MessageTemplate,
    /// The code, decrypted, or masked once it cannot be.
    pub code: RecordCode,
    pub otp_option: OtpOption,
    pub channel: Channel,
    pub voice: Option<Voice>,
    pub length_factor: Option<f64>,
    pub company_name: Option<String>,
    pub segments: u32,
    pub credits_used: i64,
    pub status: OtpStatus,
    pub status_at: Micros,
    pub error: Option<String>,
    pub provider_message_id: Option<String>,
    pub created_at: Micros,
    /// The route that took it, once sent.
    pub route: Option<String>,
    /// The carrier's error code from a failed receipt.
    pub error_code: Option<String>,
    pub delivered_at: Option<Micros>,
    /// Whether its credits went back to the account.
    pub refunded: bool,
    /// When the code stops verifying.
    pub expires_at: Micros,
    pub verified_at: Option<Micros>,
    /// Wrong codes tried so far (for a resend, the chain's shared count).
    pub verify_attempts: i64,
    /// A resend: the first record of the code it repeats.
    pub resend_of: Option<i64>,
    /// An SMS's fallback call, when the send asked for one.
    pub fallback: Option<crate::fallback::Fallback>,
}

impl std::fmt::Debug for OtpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpRecord")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("channel", &self.channel)
            .field("status", &self.status)
            .field("otp", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What is kept of a code, as read from a row.
#[derive(Default)]
pub(crate) struct StoredCode {
    pub salt: Option<Vec<u8>>,
    pub cipher: Option<Vec<u8>>,
    pub key_id: Option<String>,
}

impl StoredCode {
    /// The code, when `vault` can open it for the OTP of `account_id` to
    /// `e164`.
    pub(crate) fn open(
        &self,
        vault: &CodeVault,
        account_id: AccountId,
        e164: &str,
    ) -> Option<OtpCode> {
        let (Some(salt), Some(cipher), Some(key_id)) = (&self.salt, &self.cipher, &self.key_id)
        else {
            return None;
        };
        let binding = Binding {
            account_id,
            e164,
            salt,
        };
        vault
            .open(&binding, cipher, key_id)
            .map(OtpCode::from_stored)
    }
}

/// The first record of a live code that a resend repeats, as
/// [`crate::Store::resend_head`] finds it: only what the resend takes.
#[derive(Debug, Clone)]
pub struct ResendHead {
    pub id: i64,
    /// The code, read back.
    pub code: OtpCode,
    /// When it stops verifying; the resend keeps it.
    pub expires_at: Micros,
}

impl OtpRecord {
    /// Fills in the code from what is stored, and the status as shown at `now`.
    pub(crate) fn reveal(&mut self, vault: &CodeVault, code: &StoredCode, now: Micros) {
        self.code = code
            .open(vault, self.account_id, self.number.as_str())
            .map_or(RecordCode::Masked, RecordCode::Plain);
        self.status = shown_status(self.status, self.expires_at, now);
    }

    /// The message: the template with the code, or with the mask when the
    /// code is masked.
    pub fn message(&self) -> String {
        self.code.render(&self.template)
    }

    /// Whether the record holds the real code.
    pub fn code_is_known(&self) -> bool {
        self.code.plain().is_some()
    }
}

/// A stored OTP's code as a read gives it back. Only [`RecordCode::Plain`]
/// may be sent, spoken or repeated; a masked code is only ever shown as
/// [`MASK`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordCode {
    /// The code, decrypted.
    Plain(OtpCode),
    /// Not readable: purged after its expiry, dropped by the upgrade that
    /// started keeping codes sealed, or sealed under a key no longer
    /// configured.
    Masked,
}

impl RecordCode {
    /// The code, when it is known.
    pub fn plain(&self) -> Option<&OtpCode> {
        match self {
            RecordCode::Plain(code) => Some(code),
            RecordCode::Masked => None,
        }
    }

    /// What a reply or a list shows: the code, or [`MASK`].
    pub fn shown(&self) -> &str {
        self.plain().map_or(MASK, OtpCode::as_str)
    }

    /// `template` with this code, or masked.
    pub fn render(&self, template: &MessageTemplate) -> String {
        match self {
            RecordCode::Plain(code) => template.render(code),
            RecordCode::Masked => template.render_masked(),
        }
    }
}

/// A stored status as shown at `now`: in-flight and delivered codes past their
/// expiry show `expired`.
pub(crate) fn shown_status(stored: OtpStatus, expires_at: Micros, now: Micros) -> OtpStatus {
    match stored {
        OtpStatus::Queued | OtpStatus::Sent | OtpStatus::Delivered if now >= expires_at => {
            OtpStatus::Expired
        }
        other => other,
    }
}

/// A code to check against the newest pending OTP of a number, or a given OTP.
#[derive(Clone)]
pub struct VerifyRequest {
    pub account_id: AccountId,
    /// The number as stored (the display form: 10 digits for Nepal).
    pub phone_number: Option<String>,
    /// One OTP of the account; with `phone_number`, it must also be to that number.
    pub otp_id: Option<i64>,
    /// When verifying by number (no `otp_id`): only OTPs sent under this API key
    /// are considered, so another key of the account (a leaked send-only key)
    /// cannot plant the code a login checks. `None`: any OTP of the account.
    pub api_key_id: Option<i64>,
    /// What the user typed.
    pub code: String,
    /// Wrong codes after which a code is dead.
    pub max_attempts: i64,
    pub now: Micros,
}

impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("account_id", &self.account_id)
            .field("otp_id", &self.otp_id)
            .field("code", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// What a verification found. `Verified` and `WrongCode` add an `otp_events`
/// row each (at most `max_attempts` wrong ones per code). `TooManyAttempts` and
/// `Expired` add one the first time a code is refused that way; later refusals
/// only count up `otps.verify_refusals`, so a flood of guesses at a dead code
/// cannot grow its history. `NotFound` and `AlreadyVerified` write nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyOutcome {
    /// The code was right; the OTP is now verified (event `verified`).
    Verified { id: i64, verified_at: Micros },
    /// The code was wrong (event `verify_failed`); `attempts_remaining` may be 0,
    /// after which the code is dead.
    WrongCode { id: i64, attempts_remaining: i64 },
    /// The code had already used up its attempts (event `max_attempts`).
    TooManyAttempts { id: i64 },
    /// The code is past its expiry (event `expired`).
    Expired { id: i64 },
    /// The newest code of the number, or the given OTP, was verified before.
    AlreadyVerified { id: i64 },
    /// No OTP of this account matches.
    NotFound,
}

/// The verification state of one row, read inside the verifying transaction.
pub(crate) struct VerifyRow {
    pub id: i64,
    pub e164: String,
    pub salt: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
    pub expires_at: Micros,
    pub attempts: i64,
    pub verified_at: Option<Micros>,
    /// A resend: the first record, whose state the check uses.
    pub resend_of: Option<i64>,
}

/// What to do with a row that verification found.
pub(crate) enum VerifyStep {
    /// The code matched: mark it verified.
    Verify,
    /// The code did not match: count an attempt.
    Fail,
    /// The code can no longer verify (dead or expired): count the refusal in
    /// `verify_refusals`; only the first one goes into the history
    /// ([`first_refusal`]).
    Refuse(VerifyOutcome),
    /// The code was verified before: answered without a write.
    Done(VerifyOutcome),
}

/// Whether a refusal, counted to `refusals` in all, is the one the history
/// records; the others are only counted.
pub(crate) fn first_refusal(refusals: i64) -> bool {
    refusals == 1
}

impl VerifyRow {
    /// The chain's first record (this row's own id when it is one).
    pub fn head(&self) -> i64 {
        self.resend_of.unwrap_or(self.id)
    }

    /// This row checked against the state its chain shares: the first
    /// record's attempts, expiry and verification (read, in PostgreSQL,
    /// under the first record's lock), with this row's id and code.
    pub fn sharing(self, head: &VerifyRow) -> VerifyRow {
        VerifyRow {
            expires_at: head.expires_at,
            attempts: head.attempts,
            verified_at: head.verified_at,
            ..self
        }
    }

    /// Decides, comparing the code in constant time when the row can still verify.
    pub fn step(&self, req: &VerifyRequest, vault: &CodeVault) -> VerifyStep {
        if self.verified_at.is_some() {
            return VerifyStep::Done(VerifyOutcome::AlreadyVerified { id: self.id });
        }
        if self.attempts >= req.max_attempts {
            return VerifyStep::Refuse(VerifyOutcome::TooManyAttempts { id: self.id });
        }
        let (Some(salt), Some(hash)) = (&self.salt, &self.hash) else {
            // Purged, or sent before codes were kept: past its expiry either way.
            return VerifyStep::Refuse(VerifyOutcome::Expired { id: self.id });
        };
        if req.now >= self.expires_at {
            return VerifyStep::Refuse(VerifyOutcome::Expired { id: self.id });
        }
        let binding = Binding {
            account_id: req.account_id,
            e164: &self.e164,
            salt,
        };
        if vault.matches(&binding, &req.code, hash) {
            VerifyStep::Verify
        } else {
            VerifyStep::Fail
        }
    }
}

/// The event an outcome records, and its detail.
pub(crate) fn verify_event(
    outcome: &VerifyOutcome,
    max_attempts: i64,
) -> Option<(&'static str, String)> {
    match outcome {
        VerifyOutcome::Verified { .. } => Some(("verified", "the code was verified".into())),
        VerifyOutcome::WrongCode {
            attempts_remaining, ..
        } => Some((
            "verify_failed",
            format!(
                "wrong code; {} of {max_attempts} attempts used",
                max_attempts - attempts_remaining
            ),
        )),
        VerifyOutcome::TooManyAttempts { .. } => Some((
            "max_attempts",
            format!("refused: all {max_attempts} attempts were used"),
        )),
        VerifyOutcome::Expired { .. } => Some(("expired", "refused: the code has expired".into())),
        VerifyOutcome::AlreadyVerified { .. } | VerifyOutcome::NotFound => None,
    }
}

/// One change of an OTP's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpEvent {
    pub status: String,
    pub at: Micros,
    pub route: Option<String>,
    pub detail: Option<String>,
    pub error_code: Option<String>,
}

/// What a carrier's delivery receipt said about one message part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The route (carrier connection) the receipt came from.
    pub route: String,
    /// The carrier's message id and other spellings of it (an SMSC may give an
    /// id in hex in one place and in decimal in another), most likely first:
    /// the first one on record wins.
    pub message_ids: Vec<String>,
    /// `Delivered`, `Undeliverable`, `Expired` or `Rejected`; anything else is
    /// recorded in the history without changing the status.
    pub status: Option<OtpStatus>,
    /// The carrier's state word, for the history ("DELIVRD", "UNDELIV" ...).
    pub state: String,
    pub error_code: Option<String>,
    pub at: Micros,
}

/// Which OTPs to list and which page.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub account_id: AccountId,
    pub phone_number: Option<String>,
    pub channel: Option<Channel>,
    /// Only OTPs whose current status is this one.
    pub status: Option<OtpStatus>,
    /// Inclusive lower bound on `created_at`.
    pub created_from: Option<Micros>,
    /// Exclusive upper bound on `created_at`.
    pub created_before: Option<Micros>,
    pub limit: u32,
    pub offset: u64,
    /// The `account_seq` of the last item of the previous page, when the client
    /// followed a `next` link: the page then starts right after it whatever the
    /// offset, so a deep page costs what the first one does and no item is skipped
    /// or repeated when new OTPs arrive between pages.
    pub before_seq: Option<i64>,
    /// The filtered total the first page counted, carried in `next` links, so
    /// later pages of a filtered list skip the count (O(matching rows)).
    pub known_count: Option<u64>,
}

impl ListQuery {
    /// True when no filter narrows the list (the cheap, counter-backed path).
    pub fn is_unfiltered(&self) -> bool {
        self.phone_number.is_none()
            && self.channel.is_none()
            && self.status.is_none()
            && self.created_from.is_none()
            && self.created_before.is_none()
    }
}

/// A search of every account's OTPs, newest (highest id) first: the
/// operator's log. A number is found through each account's
/// `(account_id, phone_number)` index, so it costs the rows of that number;
/// a status alone walks the OTPs newest first until a page is full.
#[derive(Debug, Clone, Default)]
pub struct AllOtpsQuery {
    pub id: Option<i64>,
    /// As stored (`PhoneNumber::display`).
    pub phone_number: Option<String>,
    pub status: Option<OtpStatus>,
    /// The id of the last OTP of the previous page.
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// One page of OTPs and the total across pages.
#[derive(Debug, Clone)]
pub struct OtpPage {
    pub count: u64,
    pub items: Vec<OtpRecord>,
}

/// A request to claim due jobs.
#[derive(Debug, Clone)]
pub struct Claim {
    pub node: String,
    pub channel: Channel,
    pub limit: usize,
    pub now: Micros,
    pub lease_until: Micros,
}

/// A send's delivery job claimed as the send is written: in the accepting
/// transaction the job gets what a claim would give it (this node's lease
/// until `until`, its first attempt), so the node that accepted the send
/// starts it without claiming it ([`crate::Store::leased_jobs`]). Should that
/// node never get to it, the lease runs out and any node claims it then, as a
/// claimed job whose node died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLease {
    pub node: String,
    pub until: Micros,
}

/// A delivery job leased when its send was written ([`JobLease`]), with the
/// record its send wrote: what a claim of the job would read back at once,
/// the code in plain. The node that accepted the send starts the job from it
/// ([`crate::Store::leased_jobs`]) without reading the row again. It lives in
/// memory only, from the accept to the job's start.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedJob {
    pub job_id: i64,
    pub otp: Box<OtpRecord>,
}

/// A job claimed for delivery, with the OTP it carries.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job_id: i64,
    /// Attempts so far, this one included.
    pub attempts: i64,
    pub otp: OtpRecord,
    /// The sender IDs the OTP's account has on routes, read when the job was
    /// claimed.
    pub senders: Vec<crate::AccountSender>,
}

impl ClaimedJob {
    /// The account's own sender on `route`, if it has one.
    pub fn sender_for(&self, route: &str) -> Option<&otp_domain::sender::SenderId> {
        self.senders
            .iter()
            .find(|s| s.route == route)
            .map(|s| &s.sender)
    }
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The carrier took it: through `route`, as these message ids (one per part).
    Sent {
        route: Option<String>,
        message_ids: Vec<String>,
    },
    /// A transient failure: try again at `next_attempt_at`.
    Retry {
        next_attempt_at: Micros,
        error: String,
    },
    /// A permanent failure: stop.
    Failed { error: String },
}

/// One finished attempt.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub job_id: i64,
    pub otp_id: i64,
    pub outcome: JobOutcome,
    pub at: Micros,
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    #[test]
    fn scope_lists_parse_with_commas_or_spaces_and_print_in_a_fixed_order() {
        let s = Scopes::parse_list("read, send verify").unwrap();
        assert_eq!(s, Scopes::DEFAULT);
        assert_eq!(s.to_string(), "send,verify,read");
        assert_eq!(Scopes::parse_list("account").unwrap().names(), ["account"]);
        assert_eq!(Scopes::from_stored(&Scopes::ALL.to_string()), Scopes::ALL);
    }

    #[test]
    fn unknown_or_empty_scope_lists_are_refused_when_written_and_grant_nothing_when_stored() {
        assert!(
            Scopes::parse_list("send,admin")
                .unwrap_err()
                .contains("admin")
        );
        assert!(Scopes::parse_list(" , ").is_err());
        assert_eq!(
            Scopes::from_stored("send,admin"),
            Scopes::of(&[Scope::Send])
        );
        assert!(Scopes::from_stored("").is_empty());
    }

    #[test]
    fn the_first_missing_scope_is_named() {
        let wanted = Scopes::of(&[Scope::Send, Scope::Account]);
        assert_eq!(
            wanted.first_missing_from(Scopes::DEFAULT),
            Some(Scope::Account)
        );
        assert_eq!(wanted.first_missing_from(Scopes::ALL), None);
        assert!(!Scopes::DEFAULT.contains(Scope::Account));
    }
}

#[cfg(test)]
mod resend_tests {
    use super::*;

    fn head() -> ChainHead {
        ChainHead {
            id: 7,
            account_id: 1,
            api_key_id: Some(3),
            e164: "+9779851023212".into(),
            generated: true,
            resend_of: None,
            has_code: true,
            expires_at: 1_000,
            attempts: 4,
            verified_at: None,
        }
    }

    fn resend() -> NewOtp {
        NewOtp {
            api_key_id: Some(3),
            otp_option: OtpOption::Generated,
            created_at: 999,
            ..crate::test_support::sample_otp(1)
        }
    }

    const OF: ResendOf = ResendOf {
        id: 7,
        max_attempts: 5,
    };

    #[test]
    fn a_live_first_generated_code_of_the_same_account_key_and_number_takes_a_resend() {
        assert!(head().admits(&resend(), &OF));
    }

    #[test]
    fn anything_else_refuses_the_resend() {
        let refused: Vec<(&str, ChainHead, NewOtp)> = vec![
            (
                "verified",
                ChainHead {
                    verified_at: Some(5),
                    ..head()
                },
                resend(),
            ),
            (
                "dead",
                ChainHead {
                    attempts: 5,
                    ..head()
                },
                resend(),
            ),
            (
                "expired",
                head(),
                NewOtp {
                    created_at: 1_000,
                    ..resend()
                },
            ),
            (
                "purged",
                ChainHead {
                    has_code: false,
                    ..head()
                },
                resend(),
            ),
            (
                "personnel first",
                ChainHead {
                    generated: false,
                    ..head()
                },
                resend(),
            ),
            (
                "personnel resend",
                head(),
                NewOtp {
                    otp_option: OtpOption::Personnel,
                    ..resend()
                },
            ),
            (
                "a resend itself",
                ChainHead {
                    resend_of: Some(2),
                    ..head()
                },
                resend(),
            ),
            (
                "another key",
                head(),
                NewOtp {
                    api_key_id: Some(4),
                    ..resend()
                },
            ),
            (
                "no key",
                ChainHead {
                    api_key_id: None,
                    ..head()
                },
                NewOtp {
                    api_key_id: None,
                    ..resend()
                },
            ),
            (
                "another account",
                head(),
                NewOtp {
                    account_id: 2,
                    ..resend()
                },
            ),
            (
                "another number",
                head(),
                NewOtp {
                    number: PhoneNumber::parse("9800000000").unwrap(),
                    ..resend()
                },
            ),
            ("another record", ChainHead { id: 8, ..head() }, resend()),
        ];
        for (why, h, otp) in refused {
            assert!(!h.admits(&otp, &OF), "{why}");
        }
    }

    #[test]
    fn a_resend_is_checked_against_the_state_of_its_first_record() {
        let row = VerifyRow {
            id: 9,
            e164: "+9779851023212".into(),
            salt: Some(vec![1]),
            hash: Some(vec![2]),
            expires_at: 5_000,
            attempts: 0,
            verified_at: None,
            resend_of: Some(7),
        };
        assert_eq!(row.head(), 7);
        let first = VerifyRow {
            id: 7,
            salt: Some(vec![3]),
            hash: Some(vec![4]),
            expires_at: 1_000,
            attempts: 3,
            verified_at: Some(900),
            resend_of: None,
            e164: "+9779851023212".into(),
        };
        assert_eq!(first.head(), 7);
        let shared = row.sharing(&first);
        assert_eq!((shared.id, shared.hash.as_deref()), (9, Some(&[2u8][..])));
        assert_eq!(
            (shared.expires_at, shared.attempts, shared.verified_at),
            (1_000, 3, Some(900))
        );
    }
}
