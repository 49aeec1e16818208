//! Per-account webhooks: the callback URL, the durable queue of event
//! deliveries and the attempts made.
//!
//! An event is recorded in the `webhook_deliveries` outbox by the same
//! transaction that makes the change it reports (a `sent` with the carrier's
//! acceptance, a `verified` with the verification, ...), and only when the
//! account has a webhook: a crash can lose neither the change nor its event.
//! A unique index on `(otp_id, event)` makes each event of an OTP happen once,
//! however many nodes or retries report it. The dispatcher then claims due
//! deliveries under a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`), and records
//! every attempt beside the delivery. A claim hands out no more than
//! [`DeliveryClaim::per_account`] deliveries of one account at a time, counting
//! those leased to any node (`CLAIM_SQL`), so one account whose receiver
//! hangs cannot take every slot.
//!
//! `low_balance` is recorded by the accept batch, for the send that takes an
//! account's SMS or phone credits from at least its threshold to below it
//! ([`LowBalanceThresholds`]: the configured ones in [`crate::SendLimits`],
//! the account's own on its webhook row), with the balances that send left.
//!
//! `expired` has no transaction of its own (time passing changes no row), so
//! [`WebhookStore::sweep_expired`] looks for codes whose expiry passed
//! unverified, per account from where its last sweep stopped.
//!
//! The signing secret is kept sealed by the store's
//! [`CodeVault`](otp_domain::vault::CodeVault), like a code.
//!
//! Implemented for both backends in `sqlite/webhooks.rs` and `postgres/webhooks.rs`,
//! which only run SQL: where an attempt leaves its delivery
//! (`AttemptResult::settlement`), when a delivery is next tried, how a
//! webhook's settings change (`set_webhook_sql`) and which codes a sweep
//! reports expired (`sweep_expired_sql`) are written here once.

use otp_domain::channel::Channel;
use otp_domain::phone::E164;
use otp_domain::vault::{Binding, CodeVault, SealedCode};

use crate::{AccountId, Micros, OtpStatus, StoreError, VerifyOutcome};

/// Something that happened to an OTP that its account's webhook is told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WebhookEvent {
    /// A carrier took the message (or the call was placed and played).
    Sent,
    /// The carrier's receipt says every part reached the handset.
    Delivered,
    /// It will not arrive: never handed over, or the carrier reported it
    /// undeliverable, rejected or expired.
    Failed,
    /// The code was verified.
    Verified,
    /// The code's expiry passed without it being verified.
    Expired,
    /// The last allowed wrong code was tried: the code is dead.
    MaxAttempts,
    /// A send took the account's SMS or phone credits below its threshold
    /// (the event's OTP is that send).
    LowBalance,
    /// The SMS was not verified in time (or came back failed): the call that
    /// reads the same code was started ([`crate::fallback`]).
    FallbackStarted,
    /// A test a user sends from the console to check the receiver: posted
    /// at once, never stored nor retried (so not in [`WebhookEvent::ALL`]).
    Test,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 8] = [
        WebhookEvent::Sent,
        WebhookEvent::Delivered,
        WebhookEvent::Failed,
        WebhookEvent::Verified,
        WebhookEvent::Expired,
        WebhookEvent::MaxAttempts,
        WebhookEvent::LowBalance,
        WebhookEvent::FallbackStarted,
    ];

    /// The name in the JSON body and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Sent => "sent",
            WebhookEvent::Delivered => "delivered",
            WebhookEvent::Failed => "failed",
            WebhookEvent::Verified => "verified",
            WebhookEvent::Expired => "expired",
            WebhookEvent::MaxAttempts => "max_attempts",
            WebhookEvent::LowBalance => "low_balance",
            WebhookEvent::FallbackStarted => "fallback_started",
            WebhookEvent::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        WebhookEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The event of a stored delivery (only this binary's names are written;
    /// an unknown one reads as `sent`).
    pub(crate) fn stored(s: &str) -> Self {
        WebhookEvent::parse(s).unwrap_or(WebhookEvent::Sent)
    }

    /// The event of a receipt that moved an OTP to `status`.
    pub(crate) fn for_receipt(status: OtpStatus) -> Option<Self> {
        match status {
            OtpStatus::Delivered => Some(WebhookEvent::Delivered),
            s if s.is_failure() => Some(WebhookEvent::Failed),
            _ => None,
        }
    }

    /// The event of a delivery job's outcome, as `finish_jobs` labels it.
    pub(crate) fn for_job(kind: &str) -> Option<Self> {
        match kind {
            "sent" => Some(WebhookEvent::Sent),
            "failed" => Some(WebhookEvent::Failed),
            _ => None,
        }
    }

    /// The event of a verification: a success, or the wrong code that used up
    /// the last attempt (later refusals are not events: nothing changed).
    pub(crate) fn for_verify(outcome: &VerifyOutcome) -> Option<Self> {
        match outcome {
            VerifyOutcome::Verified { .. } => Some(WebhookEvent::Verified),
            VerifyOutcome::WrongCode {
                attempts_remaining: 0,
                ..
            } => Some(WebhookEvent::MaxAttempts),
            _ => None,
        }
    }
}

/// Which credits a `low_balance` event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credits {
    Sms,
    Phone,
}

impl Credits {
    pub fn as_str(self) -> &'static str {
        match self {
            Credits::Sms => "sms",
            Credits::Phone => "phone",
        }
    }

    pub(crate) fn parse(s: &str) -> Credits {
        if s == "phone" {
            Credits::Phone
        } else {
            Credits::Sms
        }
    }
}

/// The balances below which a send records a `low_balance` event; 0: never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LowBalanceThresholds {
    pub sms: i64,
    pub phone: i64,
}

impl LowBalanceThresholds {
    /// The configured defaults under an account's own values, where it has any.
    pub fn with_overrides(self, sms: Option<i64>, phone: Option<i64>) -> Self {
        LowBalanceThresholds {
            sms: sms.unwrap_or(self.sms),
            phone: phone.unwrap_or(self.phone),
        }
    }

    /// Whether a send that moved the balances from `before` to `after`
    /// (sms, phone) took one of them from at least its threshold to below it
    /// (SMS first: one send spends one kind of credit).
    pub(crate) fn crossed(self, before: (i64, i64), after: (i64, i64)) -> Option<LowBalance> {
        let fell = |threshold: i64, before: i64, after: i64| {
            threshold > 0 && before >= threshold && after < threshold
        };
        if fell(self.sms, before.0, after.0) {
            Some(LowBalance {
                credits: Credits::Sms,
                threshold: self.sms,
            })
        } else if fell(self.phone, before.1, after.1) {
            Some(LowBalance {
                credits: Credits::Phone,
                threshold: self.phone,
            })
        } else {
            None
        }
    }
}

/// A balance that fell below its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowBalance {
    pub credits: Credits,
    pub threshold: i64,
}

/// What a `low_balance` event reports besides its OTP (the send that took
/// the balance below the threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceEvent {
    pub credits: Credits,
    pub threshold: i64,
    /// The balances right after that send.
    pub sms_credits: i64,
    pub phone_credits: i64,
}

/// An account's webhook, its secret opened.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    pub account_id: AccountId,
    pub url: String,
    /// The signing secret; `None` when it cannot be opened (the encryption key
    /// it was sealed under is no longer configured): set a new one.
    pub secret: Option<String>,
    /// The account's own `low_balance` thresholds (`None`: the configured one).
    pub low_balance_sms_credits: Option<i64>,
    pub low_balance_phone_credits: Option<i64>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("account_id", &self.account_id)
            .field("secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Sets an account's webhook URL. The account's secret is kept, unless it has
/// none yet or `rotate` asks for a new one: then it becomes `new_secret`.
#[derive(Clone)]
pub struct SetWebhook {
    pub account_id: AccountId,
    pub url: String,
    pub new_secret: String,
    pub rotate: bool,
    /// The account's own `low_balance` thresholds: `None` keeps what it has,
    /// `Some(None)` goes back to the configured one, `Some(Some(n))` sets `n`.
    pub low_balance_sms_credits: Option<Option<i64>>,
    pub low_balance_phone_credits: Option<Option<i64>>,
    pub now: Micros,
}

impl std::fmt::Debug for SetWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetWebhook")
            .field("account_id", &self.account_id)
            .field("new_secret", &"[redacted]")
            .field("rotate", &self.rotate)
            .finish_non_exhaustive()
    }
}

/// The columns of a webhook row, in the order the row readers expect.
pub(crate) const WEBHOOK_COLUMNS: &str = "account_id, url, secret_salt, secret_cipher, \
     secret_key_id, created_at, updated_at, low_balance_sms_credits, low_balance_phone_credits";

/// Creates or changes an account's webhook as [`SetWebhook`] says, and
/// returns its row; no row when the account does not exist. Both backends
/// bind `account_id`, `url`, the new secret's `salt`, `cipher`, `key_id`,
/// `now`, `rotate`, then for SMS and phone thresholds each whether it is
/// given and its value (SQLite reads `$n` as `?n`).
pub(crate) fn set_webhook_sql() -> String {
    format!(
        "INSERT INTO webhooks (account_id, url, secret_salt, secret_cipher, \
         secret_key_id, expired_swept_until, created_at, updated_at, \
         low_balance_sms_credits, low_balance_phone_credits) \
         SELECT id, $2, $3, $4, $5, $6, $6, $6, $9, $11 FROM accounts WHERE id = $1 \
         ON CONFLICT (account_id) DO UPDATE SET url = excluded.url, \
         updated_at = excluded.updated_at, \
         low_balance_sms_credits = CASE WHEN $8 THEN excluded.low_balance_sms_credits \
             ELSE webhooks.low_balance_sms_credits END, \
         low_balance_phone_credits = CASE WHEN $10 THEN excluded.low_balance_phone_credits \
             ELSE webhooks.low_balance_phone_credits END, \
         secret_salt = CASE WHEN $7 THEN excluded.secret_salt ELSE webhooks.secret_salt END, \
         secret_cipher = CASE WHEN $7 THEN excluded.secret_cipher ELSE webhooks.secret_cipher END, \
         secret_key_id = CASE WHEN $7 THEN excluded.secret_key_id ELSE webhooks.secret_key_id END \
         RETURNING {WEBHOOK_COLUMNS}"
    )
}

/// A request to claim due deliveries.
#[derive(Debug, Clone)]
pub struct DeliveryClaim {
    pub node: String,
    pub limit: usize,
    pub now: Micros,
    pub lease_until: Micros,
    /// Most deliveries of one account leased at once (to any node), the
    /// ones this claim hands out included.
    pub per_account: usize,
}

/// The ids a claim takes, oldest due first (SQL shared by both backends; `$1`
/// now, `$2` the claim's limit, `$3` the per-account bound; SQLite reads them as
/// `?1`..`?3`; PostgreSQL adds
/// `FOR UPDATE SKIP LOCKED` where `{lock}` stands). An account is skipped
/// while its leased deliveries (attempts in flight, on any node) fill its
/// bound; of the others, the oldest due deliveries are ranked per account so
/// that this claim does not overfill one either. The candidates are capped
/// (`$2 * $3`) to keep the ranking small: an account that fills its bound
/// within them is skipped outright by the next claim.
pub(crate) const CLAIM_SQL: &str = "WITH busy AS (\
         SELECT account_id, COUNT(*) AS n FROM webhook_deliveries \
         WHERE state = 'pending' AND lease_owner IS NOT NULL AND next_attempt_at > $1 \
         GROUP BY account_id), \
     cand AS (\
         SELECT d.id, d.account_id, d.next_attempt_at FROM webhook_deliveries d \
         WHERE d.state = 'pending' AND d.next_attempt_at <= $1 \
         AND d.account_id NOT IN (SELECT account_id FROM busy WHERE n >= $3) \
         ORDER BY d.next_attempt_at LIMIT $2 * $3 {lock}), \
     ranked AS (\
         SELECT c.id, c.next_attempt_at, COALESCE(b.n, 0) + ROW_NUMBER() OVER \
             (PARTITION BY c.account_id ORDER BY c.next_attempt_at, c.id) AS slot \
         FROM cand c LEFT JOIN busy b ON b.account_id = c.account_id) \
     SELECT id FROM ranked WHERE slot <= $3 ORDER BY next_attempt_at, id LIMIT $2";

/// The OTP an event is about, as a webhook body shows it (never its code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOtp {
    pub id: i64,
    pub account_seq: i64,
    /// Where it went; [`E164::display`] is the form the body shows.
    pub number: E164,
    pub channel: Channel,
    pub created_at: Micros,
    pub expires_at: Micros,
    /// The carrier's error code, when a receipt gave one.
    pub error_code: Option<String>,
}

/// A delivery claimed for one attempt, with where and how to send it.
#[derive(Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub account_id: AccountId,
    pub event: WebhookEvent,
    /// The OTP's status as the list showed it right after the event.
    pub otp_status: String,
    pub occurred_at: Micros,
    /// Attempts so far, this one included.
    pub attempt: i64,
    /// When the event was recorded; retries stop some time after it.
    pub created_at: Micros,
    pub url: String,
    /// `None`: the secret cannot be opened, so nothing can be signed.
    pub secret: Option<String>,
    pub otp: EventOtp,
    /// What a `low_balance` event reports; `None` for the other events.
    pub balance: Option<BalanceEvent>,
}

impl std::fmt::Debug for ClaimedDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedDelivery")
            .field("id", &self.id)
            .field("event", &self.event)
            .field("attempt", &self.attempt)
            .field("secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx: done.
    Delivered,
    /// Try again at this time.
    Retry { next_attempt_at: Micros },
    /// Stop trying (the delivery is `failed`).
    GiveUp,
}

/// One finished attempt.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub delivery_id: i64,
    /// Which attempt this was (1 for the first).
    pub attempt: i64,
    /// When it started.
    pub at: Micros,
    pub duration_us: i64,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    pub outcome: AttemptOutcome,
}

/// Where one attempt leaves its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settlement {
    pub state: DeliveryState,
    /// The next attempt's time; for a finished delivery, when it finished.
    pub next_attempt_at: Micros,
    pub finished_at: Option<Micros>,
}

impl AttemptResult {
    /// The one decision both backends write after an attempt: delivered or
    /// given up when the attempt ended, or pending until the retry's time.
    pub(crate) fn settlement(&self) -> Settlement {
        let end = self.at + self.duration_us;
        let (state, next_attempt_at, finished_at) = match self.outcome {
            AttemptOutcome::Delivered => (DeliveryState::Delivered, end, Some(end)),
            AttemptOutcome::Retry { next_attempt_at } => {
                (DeliveryState::Pending, next_attempt_at, None)
            }
            AttemptOutcome::GiveUp => (DeliveryState::Failed, end, Some(end)),
        };
        Settlement {
            state,
            next_attempt_at,
            finished_at,
        }
    }
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Given up on.
    Failed,
    /// The webhook was removed before it was delivered.
    Cancelled,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> DeliveryState {
        match s {
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            "cancelled" => DeliveryState::Cancelled,
            _ => DeliveryState::Pending,
        }
    }

    /// When a delivery in this state is next tried, from its stored
    /// `next_attempt_at`: only a pending one is.
    pub(crate) fn next_attempt(self, stored: Micros) -> Option<Micros> {
        (self == DeliveryState::Pending).then_some(stored)
    }
}

/// One attempt as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    pub attempt: i64,
    pub at: Micros,
    pub duration_us: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
}

/// One event delivery of an account, with its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub id: i64,
    pub otp_id: i64,
    pub event: WebhookEvent,
    pub otp_status: String,
    pub occurred_at: Micros,
    pub state: DeliveryState,
    pub next_attempt_at: Option<Micros>,
    pub created_at: Micros,
    pub finished_at: Option<Micros>,
    /// Oldest first.
    pub attempts: Vec<WebhookAttempt>,
}

/// A page of an account's deliveries, newest first.
#[derive(Debug, Clone)]
pub struct DeliveryQuery {
    pub account_id: AccountId,
    pub limit: u32,
    /// Only deliveries older than this one (the last id of the previous page).
    pub before_id: Option<i64>,
}

/// What [`WebhookStore::sweep_expired`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct ExpirySweep {
    /// Stamped on the `expired` deliveries it records (they are due at once).
    pub now: Micros,
    /// Codes that expired up to this time (a little before `now`, so that a
    /// verification in flight at the moment of expiry is not also reported
    /// expired).
    pub expired_until: Micros,
    /// The longest a code can live: it bounds the search by sending time,
    /// which is indexed.
    pub longest_expiry: Micros,
    /// Codes that expired before this are left alone (after a long outage,
    /// their events would be too old to deliver anyway).
    pub not_before: Micros,
}

/// What the webhook endpoints, the dispatcher and the expiry sweep need.
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// The account's webhook, if it has one.
    async fn webhook(&self, account: AccountId) -> Result<Option<Webhook>, StoreError>;
    /// Creates or changes the account's webhook (see [`SetWebhook`]);
    /// `NotFound` when the account does not exist.
    async fn set_webhook(&self, set: SetWebhook) -> Result<Webhook, StoreError>;
    /// Removes the account's webhook and cancels its pending deliveries;
    /// false when it had none.
    async fn delete_webhook(&self, account: AccountId, now: Micros) -> Result<bool, StoreError>;
    /// Claims up to `limit` due deliveries for `node` until `lease_until`.
    async fn claim_webhook_deliveries(
        &self,
        claim: DeliveryClaim,
    ) -> Result<Vec<ClaimedDelivery>, StoreError>;
    /// Records attempts and what follows from them.
    async fn finish_webhook_deliveries(
        &self,
        results: Vec<AttemptResult>,
    ) -> Result<(), StoreError>;
    /// One page of the account's deliveries, newest first, with their attempts.
    async fn webhook_deliveries(
        &self,
        query: DeliveryQuery,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Records `expired` for the codes of accounts with a webhook whose expiry
    /// passed unverified since the last sweep; returns how many. Safe to run
    /// on several nodes at once and to repeat.
    async fn sweep_expired(&self, sweep: ExpirySweep) -> Result<u64, StoreError>;
}

/// The value that binds a sealed secret to webhooks: never a phone number, so
/// neither a code nor a secret can be opened as the other.
const SECRET_BINDING: &str = "webhook-secret";

pub(crate) fn seal_secret(vault: &CodeVault, account: AccountId, secret: &str) -> SealedCode {
    vault.seal(account, SECRET_BINDING, secret)
}

pub(crate) fn open_secret(
    vault: &CodeVault,
    account: AccountId,
    salt: &[u8],
    cipher: &[u8],
    key_id: &str,
) -> Option<String> {
    let binding = Binding {
        account_id: account,
        e164: SECRET_BINDING,
        salt,
    };
    vault.open(&binding, cipher, key_id)
}

/// The OTP status a list showed right after an event, as stored with the
/// delivery: `expired` for a code still in flight or delivered when its
/// expiry passed.
const EXPIRED_STATUS_SQL: &str =
    "CASE WHEN o.status IN ('queued', 'sent', 'delivered') THEN 'expired' ELSE o.status END";

/// Records the `expired` events of a sweep (SQL, both backends): for each
/// webhook `webhooks` selects (a condition on `w`), the codes of its account
/// that expired unverified after where its last sweep stopped (or after
/// `$4`, [`ExpirySweep::not_before`], when later) and up to `$2`
/// ([`ExpirySweep::expired_until`]), due at `$1` ([`ExpirySweep::now`]).
/// The sending-time bound (`$3`, [`ExpirySweep::longest_expiry`]) lets the
/// `(account_id, created_at)` index find the rows. `greatest` is the
/// backend's two-argument maximum; SQLite reads `$n` as `?n`.
///
/// `CROSS JOIN` makes SQLite take the webhooks first (without statistics it
/// scanned every OTP of the store, then looked for its account's webhook: a
/// whole-table read on the writer at every sweep); PostgreSQL reads it as an
/// inner join and plans it as before.
pub(crate) fn sweep_expired_sql(greatest: &str, webhooks: &str) -> String {
    format!(
        "INSERT INTO webhook_deliveries (account_id, otp_id, event, otp_status, \
         occurred_at, state, next_attempt_at, created_at) \
         SELECT o.account_id, o.id, 'expired', {EXPIRED_STATUS_SQL}, o.expires_at, \
         'pending', $1, $1 \
         FROM webhooks w CROSS JOIN otps o \
         WHERE o.account_id = w.account_id AND {webhooks} \
         AND o.created_at > {greatest}(w.expired_swept_until, $4) - $3 AND o.created_at <= $2 \
         AND o.expires_at > {greatest}(w.expired_swept_until, $4) AND o.expires_at <= $2 \
         AND o.verified_at IS NULL \
         ON CONFLICT (otp_id, event) DO NOTHING"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip() {
        for e in WebhookEvent::ALL {
            assert_eq!(WebhookEvent::parse(e.as_str()), Some(e));
        }
        assert_eq!(WebhookEvent::parse("retry"), None);
    }

    #[test]
    fn only_the_attempt_that_kills_a_code_is_max_attempts() {
        let last = VerifyOutcome::WrongCode {
            id: 1,
            attempts_remaining: 0,
        };
        let earlier = VerifyOutcome::WrongCode {
            id: 1,
            attempts_remaining: 1,
        };
        assert_eq!(
            WebhookEvent::for_verify(&last),
            Some(WebhookEvent::MaxAttempts)
        );
        assert_eq!(WebhookEvent::for_verify(&earlier), None);
        assert_eq!(
            WebhookEvent::for_verify(&VerifyOutcome::TooManyAttempts { id: 1 }),
            None
        );
    }

    #[test]
    fn failed_receipts_are_failed_events() {
        for s in [
            OtpStatus::Undeliverable,
            OtpStatus::Rejected,
            OtpStatus::Expired,
        ] {
            assert_eq!(WebhookEvent::for_receipt(s), Some(WebhookEvent::Failed));
        }
        assert_eq!(
            WebhookEvent::for_receipt(OtpStatus::Delivered),
            Some(WebhookEvent::Delivered)
        );
        assert_eq!(WebhookEvent::for_receipt(OtpStatus::Sent), None);
    }

    fn attempt(outcome: AttemptOutcome) -> AttemptResult {
        AttemptResult {
            delivery_id: 1,
            attempt: 2,
            at: 1_000,
            duration_us: 250,
            status_code: None,
            error: None,
            outcome,
        }
    }

    #[test]
    fn an_attempt_finishes_its_delivery_when_it_ends_or_leaves_it_pending_until_the_retry() {
        let finished = |state| Settlement {
            state,
            next_attempt_at: 1_250,
            finished_at: Some(1_250),
        };
        assert_eq!(
            attempt(AttemptOutcome::Delivered).settlement(),
            finished(DeliveryState::Delivered)
        );
        assert_eq!(
            attempt(AttemptOutcome::GiveUp).settlement(),
            finished(DeliveryState::Failed)
        );
        assert_eq!(
            attempt(AttemptOutcome::Retry {
                next_attempt_at: 9_000
            })
            .settlement(),
            Settlement {
                state: DeliveryState::Pending,
                next_attempt_at: 9_000,
                finished_at: None
            }
        );
    }

    #[test]
    fn only_a_pending_delivery_has_a_next_attempt() {
        assert_eq!(DeliveryState::Pending.next_attempt(5), Some(5));
        for state in [
            DeliveryState::Delivered,
            DeliveryState::Failed,
            DeliveryState::Cancelled,
        ] {
            assert_eq!(state.next_attempt(5), None);
            assert_eq!(DeliveryState::parse(state.as_str()), state);
        }
    }

    #[test]
    fn a_stored_event_of_an_unknown_name_reads_as_sent() {
        assert_eq!(WebhookEvent::stored("verified"), WebhookEvent::Verified);
        assert_eq!(WebhookEvent::stored("retry"), WebhookEvent::Sent);
    }

    #[test]
    fn credit_kinds_round_trip() {
        for c in [Credits::Sms, Credits::Phone] {
            assert_eq!(Credits::parse(c.as_str()), c);
        }
    }

    #[test]
    fn account_thresholds_override_the_configured_ones_one_by_one() {
        let configured = LowBalanceThresholds {
            sms: 100,
            phone: 20,
        };
        assert_eq!(
            configured.with_overrides(Some(0), None),
            LowBalanceThresholds { sms: 0, phone: 20 }
        );
        assert_eq!(configured.with_overrides(None, None), configured);
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_account() {
        let vault = CodeVault::ephemeral();
        let sealed = seal_secret(&vault, 7, "whsec_abc");
        let open = |account| {
            open_secret(
                &vault,
                account,
                &sealed.salt,
                &sealed.cipher,
                &sealed.key_id,
            )
        };
        assert_eq!(open(7).as_deref(), Some("whsec_abc"));
        assert_eq!(open(8), None);
    }
}
