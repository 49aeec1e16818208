//! The otpgate store: one [`Store`] trait, two implementations.
//!
//! - [`sqlite::SqliteStore`] is the embedded default. Every write goes through one
//!   writer thread that drains whatever is queued and commits it as one transaction
//!   (group commit): a send's reply waits for the commit of its batch, so a 200 means
//!   the record is on disk (WAL, `synchronous = FULL`), while many sends share one
//!   fsync. Reads use a small pool of read-only connections, and lists a pool
//!   of their own whose queries stop at a time budget.
//! - [`postgres::PgStore`] lets several nodes share one database. Sends are batched
//!   per node the same way; each batch locks the accounts it touches
//!   (`SELECT ... FOR UPDATE`, in id order), so balances are exact across nodes, and
//!   delivery jobs are claimed with `FOR UPDATE SKIP LOCKED`. Lists run on a
//!   pool of their own with a `statement_timeout`.
//!
//! Both run the same decision for a batch of sends ([`admission`]): requests are taken
//! in arrival order, each is accepted if its account still has the credits, and
//! each account's new balance is written once. Accepting a send writes the OTP row,
//! its delivery job and its ledger debit in that same transaction, or nothing.
//! The same pass first answers a repeated `Idempotency-Key` with what the first
//! send got ([`Store::accept_once`]) and then checks the per-destination limits
//! ([`SendLimits`]) against the recent sends to the number, so neither a retry nor
//! a burst split across nodes gets past them. The per-account and per-key rates
//! and the daily spend cap are kept on the locked account and key rows and
//! decided in the same pass.
//!
//! The other store rules have the same shape, load then one pure decision
//! then write, so each backend only runs SQL around it: finishing a delivery
//! job and refunding (`jobs`), applying a delivery receipt ([`receipts`]),
//! verifying a code (`VerifyRow::step`). Both read rows through one mapping
//! (`rows`), which refuses a stored word it cannot read (a channel, a status,
//! a number, a template) instead of guessing, and gives an OTP back typed
//! ([`OtpRecord`]): its number an [`E164`](otp_domain::phone::E164), its
//! template a [`MessageTemplate`](otp_domain::message::MessageTemplate), its
//! code a [`RecordCode`], plain or masked, so only a known code can be sent,
//! spoken or repeated.
//!
//! Tests of this crate and of the service share their fixtures (the sample
//! send, a fresh PostgreSQL database) through `test_support`, built for
//! tests only (feature `test-support`).
//!
//! An account's approved templates and senders ([`rules`],
//! [`AccountRulesStore`]) are read by the same pass: a send of an account
//! restricted to approved templates whose text is not one of them is
//! refused there, and a claimed job carries its account's senders.
//!
//! The transactions that move a status (accepting, finishing jobs, applying
//! receipts, verifying) also count what they moved into per-minute
//! [`conversions`] aggregates, one upsert per key per transaction, so
//! rates and medians never scan OTPs ([`ConversionStore`]).
//!
//! How each carrier route delivered its newest messages ([`routing`]) is
//! read from the OTPs on demand ([`RoutingStore`]), so every node sharing
//! a database measures the same windows.
//! The SMS-pumping guard's holds live in one table every node reads
//! ([`GuardStore`], [`guard`]); its judging stays in each node's memory.
//!
//! Times are microseconds since the Unix epoch (UTC) in both backends. Migrations
//! are embedded and applied on open.
//!
//! Codes are never stored in plain. [`Store::accept`] seals each code with the
//! [`CodeVault`] of [`StoreOptions`] on the caller's task, before the send joins a
//! batch, so the writer only copies bytes; reads decrypt on the reading task.
//! [`Store::verify`] checks a code and counts the attempt in one transaction
//! (SQLite: in the writer; PostgreSQL: under a row lock), so concurrent
//! verifications of one code are counted exactly and at most one succeeds.
//! [`Store::purge_codes`] drops the ciphers of long-expired codes, and
//! [`RetentionStore::purge_expired_rows`] whole OTPs and other rows past their
//! retention ([`retention`]).
//!
//! A resend repeats a live generated code: the caller finds the chain's first
//! record ([`Store::resend_head`]) and sends its code with
//! [`NewOtp::resend_of`]; the accepting transaction checks that the first
//! record can still verify (PostgreSQL: under its row lock, taken before the
//! account rows) and writes the new record with the first's expiry and
//! attempt count and `resend_of` pointing to it. The first record holds the
//! state the chain shares: [`Store::verify`] of any record of the chain decides
//! on the first's attempts, expiry and verification (PostgreSQL: under the
//! first's lock), and writes the outcome to every record of the chain, so
//! each one shows it and the lookups by number need no join.

/// Statement text formatted once (from constants, such as a shared list of
/// columns) and kept for the process's life, as a `&'static str`:
/// `sql_once!("SELECT {OTP_COLUMNS} FROM otps WHERE id = $1")`. Formatting a
/// local value does not compile, so the text cannot vary. Both backends use it
/// for statements prepared and cached by their text on hot paths, where a
/// `format!` per call allocated the same text again.
macro_rules! sql_once {
    ($($format:tt)*) => {{
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!($($format)*));
        SQL.as_str()
    }};
}

pub mod admission;
pub mod conversions;
pub mod fallback;
pub mod guard;
mod jobs;
mod migrate;
mod model;
pub mod postgres;
pub mod receipts;
pub mod retention;
pub mod routing;
mod rows;
pub mod rules;
pub mod sqlite;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

pub use conversions::ConversionStore;
pub use fallback::{
    AccountFallback, Fallback, FallbackScan, FallbackState, NewFallback, SendFallback,
};
pub use guard::GuardStore;
pub use migrate::BINARY_VERSION;
pub use model::*;
use otp_domain::vault::CodeVault;
pub use receipts::{ReceiptStore, UnmatchedReceipt};
pub use retention::{PurgeReport, RetentionRules, RetentionStore};
pub use routing::RoutingStore;
pub use rules::{AccountRulesStore, AccountSender, ApprovedTemplate};
pub use users::{
    KeyCopy, LoginGate, LoginPolicy, LoginScope, NewUser, Session, User, UserKey, UserStore,
};
pub use webhooks::WebhookStore;

/// What can go wrong in the store, as the service needs to tell it apart.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached (PostgreSQL down, pool exhausted, SQLite busy
    /// past its timeout). The service answers 503 and callers may retry.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The disk or database is full; nothing was written.
    #[error("the database is full")]
    Full,
    /// A list query ran past its time budget ([`StoreOptions::list_timeout`])
    /// and was stopped; nothing was written. The service answers 503 and
    /// callers may retry later, or narrow the query.
    #[error("the query ran past its time budget")]
    TimedOut,
    /// A uniqueness rule was broken (for example an account name already taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Anything else the database reported.
    #[error("database error: {0}")]
    Internal(String),
    /// The database does not fit this binary: an applied migration was changed,
    /// or a newer release migrated it past what this binary supports. Raised on
    /// open, before anything is written; the message says which and what to run.
    #[error("{0}")]
    Incompatible(String),
}

/// Why a send was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The account lacks the credits this send costs; nothing was written.
    #[error("insufficient credits")]
    InsufficientCredits {
        /// SMS credits left on the account.
        sms_credits: i64,
        /// Phone credits left on the account.
        phone_credits: i64,
    },
    /// The account does not exist (deleted between authentication and acceptance).
    #[error("account not found")]
    AccountNotFound,
    /// The send's API key ([`NewOtp::api_key_id`]) is revoked or gone, read
    /// inside the accepting transaction: a caller that authenticated the key
    /// from a cache learns here, on every node, that it no longer may send.
    /// Nothing was written.
    #[error("the API key is revoked")]
    KeyRevoked,
    /// The account is disabled (read inside the accepting transaction, so a
    /// disable holds on every node at once). Nothing was written.
    #[error("the account is disabled")]
    AccountDisabled,
    /// A limit ([`SendLimits`], [`AccountLimits`]) refused the send; nothing was
    /// written or charged.
    #[error("rate limited")]
    RateLimited {
        /// Which limit.
        limit: LimitKind,
        /// Whole seconds (at least 1) until a send to the number can pass.
        retry_after_seconds: u64,
    },
    /// A send under the same idempotency key and body was accepted before;
    /// nothing new was written, and this is what that send got.
    #[error("already accepted under this idempotency key")]
    Replayed(Accepted),
    /// The idempotency key was used before with another body; nothing written.
    #[error("idempotency key reused with another body")]
    IdempotencyKeyReused,
    /// A resend's code ([`NewOtp::resend_of`]) was verified, used up its
    /// attempts or expired since the caller found it; nothing written. The
    /// caller sends again with a new code.
    #[error("the code a resend repeats can no longer verify")]
    ResendStale,
    /// The account has approved templates ([`AccountRulesStore`]) and the
    /// send's template, normalized, is none of them; nothing was written or
    /// charged.
    #[error("the message is not one of the account's approved templates")]
    TemplateNotApproved,
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The persistence the service needs. Implementations must be safe to share across
/// tasks and, for PostgreSQL, across processes.
#[async_trait::async_trait]
pub trait Store:
    UserStore
    + WebhookStore
    + ReceiptStore
    + RetentionStore
    + ConversionStore
    + AccountRulesStore
    + RoutingStore
    + GuardStore
    + Send
    + Sync
    + 'static
{
    /// Which backend this is ("sqlite" or "postgres"), for logs and metrics.
    fn backend(&self) -> &'static str;
    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Replaces the per-destination limits sends are accepted under (a
    /// configuration reload); batches already being committed keep theirs.
    fn set_send_limits(&self, limits: SendLimits);

    /// Creates an account with opening balances (recorded as a ledger top-up).
    async fn create_account(&self, name: &str, sms: i64, phone: i64)
    -> Result<Account, StoreError>;
    /// All accounts, oldest first.
    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// One account by id.
    async fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError>;
    /// One account by name.
    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError>;
    /// Adds (or, with negative numbers, removes) credits, recorded in the ledger.
    /// A change that would make a balance negative is refused with `Conflict`.
    async fn add_credits(
        &self,
        id: AccountId,
        sms: i64,
        phone: i64,
        note: &str,
    ) -> Result<Account, StoreError>;
    /// Disables the account from `at` (`Some`), or enables it again (`None`);
    /// disabling one already disabled keeps its first time. `None`: no such
    /// account. Every node sees the change at once: keys are read with it, and
    /// the accepting transaction reads it again.
    async fn set_account_disabled(
        &self,
        id: AccountId,
        at: Option<Micros>,
    ) -> Result<Option<Account>, StoreError>;
    /// Sets the account's default fallback call (`None`: no default).
    /// `None` back: no such account. The accepting transaction reads it with
    /// the account's balances, so every node's next send uses it.
    async fn set_account_fallback(
        &self,
        id: AccountId,
        default: Option<AccountFallback>,
    ) -> Result<Option<Account>, StoreError>;
    /// The account's own rate and spend limits, and what it spent today.
    async fn account_limits(&self, id: AccountId) -> Result<Option<AccountLimits>, StoreError>;
    /// Sets the account's own limits (`None`: back to the configured default;
    /// `Some(0)`: no limit). Negative values are refused with `Conflict`.
    async fn set_account_limits(
        &self,
        id: AccountId,
        max_rps: Option<i64>,
        daily_spend_cap: Option<i64>,
    ) -> Result<AccountLimits, StoreError>;
    /// The account's ledger, oldest first.
    async fn ledger(&self, id: AccountId) -> Result<Vec<LedgerEntry>, StoreError>;
    /// The account's newest `limit` ledger entries, newest first.
    async fn recent_ledger(
        &self,
        id: AccountId,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError>;

    /// Stores a new API key (only its hash).
    async fn create_key(&self, key: NewApiKey) -> Result<ApiKeyRecord, StoreError>;
    /// Looks a key up by its public id.
    async fn find_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Keys, of one account or of all.
    async fn list_keys(&self, account: Option<AccountId>) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Revokes a key; returns false when no such unrevoked key exists.
    async fn revoke_key(&self, key_id: &str) -> Result<bool, StoreError>;
    /// Records when keys were last used (flushed in bulk, not per request).
    async fn touch_keys(&self, used: Vec<(i64, Micros)>) -> Result<(), StoreError>;

    /// Debits the account, writes the OTP and its delivery job, atomically and
    /// durably, or writes nothing.
    async fn accept(&self, otp: NewOtp) -> Result<Accepted, AcceptError> {
        self.accept_once(otp, None).await
    }
    /// [`Store::accept`] under an idempotency key: the key is checked and
    /// recorded in the same transaction, so of concurrent sends under one key at
    /// most one is accepted; the others get [`AcceptError::Replayed`].
    async fn accept_once(
        &self,
        otp: NewOtp,
        key: Option<IdempotencyKey>,
    ) -> Result<Accepted, AcceptError> {
        self.accept_leased(otp, key, None).await
    }
    /// [`Store::accept_once`], its delivery job leased as it is written when
    /// `lease` is given ([`JobLease`]; [`Accepted::leased_job`] names it).
    async fn accept_leased(
        &self,
        otp: NewOtp,
        key: Option<IdempotencyKey>,
        lease: Option<JobLease>,
    ) -> Result<Accepted, AcceptError>;
    /// One page of an account's OTPs, newest first.
    async fn list_otps(&self, query: &ListQuery) -> Result<OtpPage, StoreError>;
    /// One OTP of an account.
    async fn otp(&self, account: AccountId, id: i64) -> Result<Option<OtpRecord>, StoreError>;
    /// Whether OTP `id` of `account` is verified (`None`: the account has no
    /// such OTP). One column read, the code left sealed: a fallback call reads
    /// it twice a second while it rings.
    async fn otp_verified(&self, account: AccountId, id: i64) -> Result<Option<bool>, StoreError>;
    /// OTPs of every account, newest (highest id) first: the operator's log.
    async fn list_all_otps(&self, query: &AllOtpsQuery) -> Result<Vec<OtpRecord>, StoreError>;
    /// The first record of the live generated code a send to the number
    /// would repeat ([`ResendQuery`]), with its code read back; `None` when no
    /// code can be repeated (none live, or its code cannot be read back).
    async fn resend_head(&self, query: ResendQuery) -> Result<Option<ResendHead>, StoreError>;

    /// Claims up to `limit` due jobs of a channel for `node` until `lease_until`.
    async fn claim_jobs(&self, claim: Claim) -> Result<Vec<ClaimedJob>, StoreError>;
    /// The jobs leased to this node as their sends were written
    /// ([`JobLease`]), as [`Store::claim_jobs`] gives them: each with the
    /// record its accept wrote ([`LeasedJob`]), its account's senders read
    /// now. Nothing is claimed, and no OTP row is read: the record is the
    /// row as written. What may change the row in the moment before the job
    /// starts (a verification, a wrong guess) is not what sending reads: a
    /// fresh send goes on its own channel, its fallback call (if any) still
    /// pending.
    async fn leased_jobs(&self, jobs: Vec<LeasedJob>) -> Result<Vec<ClaimedJob>, StoreError>;
    /// Records what happened to claimed jobs.
    async fn finish_jobs(&self, results: Vec<JobResult>) -> Result<(), StoreError>;
    /// Applies delivery receipts; for each, the OTP it matched (None: no such
    /// message id yet — the caller may retry, the submission may not be
    /// recorded — or its part already has a final state). A part takes one
    /// final receipt: a second one is a repeat, or the receipt of a newer
    /// submission to which an SMSC gave the same id again and which is not
    /// recorded yet (recording it takes the id over and clears the state), so
    /// it never lands on the older message.
    async fn record_receipts(&self, receipts: Vec<Receipt>)
    -> Result<Vec<Option<i64>>, StoreError>;
    /// An OTP's status changes after it was queued, oldest first, and the message
    /// ids its carrier gave.
    async fn otp_history(&self, otp_id: i64) -> Result<(Vec<OtpEvent>, Vec<String>), StoreError>;
    /// Jobs waiting to be delivered, per channel (for metrics).
    async fn queue_depth(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Checks a code against the newest unexpired, unverified OTP of the number
    /// (or the given OTP), counting a wrong code, in one transaction.
    async fn verify(&self, request: VerifyRequest) -> Result<VerifyOutcome, StoreError>;
    /// Starts the fallback calls that are due at `now` (at most `limit`), or
    /// gives their reserved credits back when the code was verified or
    /// expired first ([`fallback`]).
    async fn start_fallbacks(&self, now: Micros, limit: usize) -> Result<FallbackScan, StoreError>;
    /// Drops the ciphers (and hashes) of codes that expired before
    /// `expired_before`; returns how many. The list then shows them masked.
    async fn purge_codes(&self, expired_before: Micros) -> Result<u64, StoreError>;
}

/// A store shared by the service's tasks.
pub type SharedStore = Arc<dyn Store>;

/// The send limits a store checks now, shared with the tasks that commit
/// sends; [`Store::set_send_limits`] replaces them.
#[derive(Debug, Clone, Default)]
pub(crate) struct LiveLimits(Arc<std::sync::RwLock<SendLimits>>);

impl LiveLimits {
    pub(crate) fn new(limits: SendLimits) -> Self {
        LiveLimits(Arc::new(std::sync::RwLock::new(limits)))
    }

    /// A copy of the limits now in force (std lock: held for a copy only).
    pub(crate) fn get(&self) -> SendLimits {
        *self.0.read().expect("send limits poisoned")
    }

    pub(crate) fn set(&self, limits: SendLimits) {
        *self.0.write().expect("send limits poisoned") = limits;
    }
}

/// The migrations this build has that the database at `url` has not applied
/// (their `version_name`), read without changing anything: a SQLite file
/// that does not exist is an error, not a new database. A database this build
/// would refuse to open (a changed migration, one past what it supports) is
/// [`StoreError::Incompatible`], with the message a start would give.
pub async fn missing_migrations(url: &str) -> Result<Vec<String>, StoreError> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || sqlite::missing_migrations(std::path::Path::new(&path)))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres::missing_migrations(url).await
    } else {
        Err(StoreError::Internal(
            "the database URL must start with sqlite:// or postgres://".into(),
        ))
    }
}

/// The PostgreSQL server's clock at `url`, in microseconds since the epoch
/// (`otpgate doctor` compares it with this node's).
pub async fn database_now_micros(url: &str) -> Result<Micros, StoreError> {
    postgres::now_micros_at(url).await
}

/// The names of the migrations a plan would apply.
fn not_applied(plan: &migrate::Plan<'_>) -> Vec<String> {
    plan.apply
        .iter()
        .map(|m| format!("{:04}_{}", m.version, m.name))
        .collect()
}

/// Opens the store a URL names: `sqlite://PATH` (`sqlite::memory:` is refused: a
/// gateway must not lose what it accepted) or `postgres://...`.
pub async fn open(url: &str, options: &StoreOptions) -> Result<SharedStore, StoreError> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() || path.starts_with(":memory:") {
            return Err(StoreError::Internal(
                "an in-memory SQLite database would lose accepted OTPs; give a file path".into(),
            ));
        }
        let store = sqlite::SqliteStore::open(path, options).await?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PgStore::open(url, options).await?;
        Ok(Arc::new(store))
    } else {
        Err(StoreError::Internal(
            "the database URL must start with sqlite:// or postgres://".into(),
        ))
    }
}

/// Tuning and keys shared by both backends.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most sends committed in one transaction.
    pub max_batch: usize,
    /// Read connections (SQLite) or pool size (PostgreSQL) for everything but
    /// lists: key checks, accepting sends (PostgreSQL), verifications, details.
    pub connections: usize,
    /// Connections that serve only [`Store::list_otps`], a pool of their own so
    /// that heavy lists cannot take the connections key checks and sends need.
    pub list_connections: usize,
    /// The longest one list query may run before it is stopped with
    /// [`StoreError::TimedOut`] (PostgreSQL: `statement_timeout` on the list
    /// pool; SQLite: a progress handler). `None`: no limit.
    pub list_timeout: Option<std::time::Duration>,
    /// Seals codes on the way in and opens them on the way out.
    pub vault: Arc<CodeVault>,
    /// Per-destination limits checked when sends are accepted.
    pub limits: SendLimits,
}

impl Default for StoreOptions {
    /// The default vault has fresh random keys: fit for tests and for commands
    /// that never read a code back; a server passes its configured keys.
    fn default() -> Self {
        StoreOptions {
            max_batch: 512,
            connections: 8,
            list_connections: 4,
            list_timeout: Some(std::time::Duration::from_secs(5)),
            vault: Arc::new(CodeVault::ephemeral()),
            limits: SendLimits::default(),
        }
    }
}

/// Refuses negative account limits (zero means "no limit").
pub(crate) fn check_limit_values(
    max_rps: Option<i64>,
    daily_spend_cap: Option<i64>,
) -> Result<(), StoreError> {
    if max_rps.is_some_and(|v| v < 0) || daily_spend_cap.is_some_and(|v| v < 0) {
        return Err(StoreError::Conflict(
            "a limit cannot be negative (0 turns it off)".into(),
        ));
    }
    Ok(())
}

/// Rows of at most this many codes are purged per statement.
pub(crate) const PURGE_CHUNK: i64 = 5000;

/// A send with its code sealed, ready for the writer.
pub(crate) struct SealedOtp {
    pub otp: NewOtp,
    pub code: otp_domain::vault::SealedCode,
    /// The rendered message with the code masked.
    pub masked_message: String,
    pub idempotency: Option<IdempotencyKey>,
    /// Its delivery job's lease, when it is handed over as it is written.
    pub lease: Option<JobLease>,
    /// The plain code, kept for a leased send only: its job starts from the
    /// record the accept wrote ([`SealedOtp::written`]).
    plain: Option<otp_domain::code::OtpCode>,
}

impl SealedOtp {
    /// Seals the code. The plain copy is forgotten, unless the send's job is
    /// leased as it is written: that job is handed the code in memory.
    pub fn new(mut otp: NewOtp, vault: &CodeVault, lease: Option<JobLease>) -> SealedOtp {
        let code = vault.seal(otp.account_id, otp.number.e164(), otp.otp.as_str());
        // The plain code goes with the value replaced; an empty code is what a
        // sealed send carries from here on.
        let plain = std::mem::replace(
            &mut otp.otp,
            otp_domain::code::OtpCode::from_stored(String::new()),
        );
        let masked_message = otp.template.render_masked();
        SealedOtp {
            otp,
            code,
            masked_message,
            idempotency: None,
            plain: lease.is_some().then_some(plain),
            lease,
        }
    }

    /// The record `insert` wrote of this send under `id`, field for field
    /// what reading the row back gives at once, the code in plain; `None`
    /// for a send whose job is not leased (its plain code is gone).
    pub fn written(&self, insert: &admission::Insert, id: i64) -> Option<OtpRecord> {
        let plain = self.plain.clone()?;
        let otp = &self.otp;
        Some(OtpRecord {
            id,
            account_id: otp.account_id,
            account_seq: insert.taken.account_seq,
            number: otp.number.as_e164().clone(),
            template: otp.template.clone(),
            code: RecordCode::Plain(plain),
            otp_option: otp.otp_option,
            channel: otp.channel,
            voice: otp.voice,
            length_factor: otp.length_factor,
            company_name: otp.company_name.clone(),
            segments: otp.segments,
            credits_used: otp.cost.sms + otp.cost.phone,
            status: OtpStatus::Queued,
            status_at: otp.created_at,
            error: None,
            provider_message_id: None,
            created_at: otp.created_at,
            route: None,
            error_code: None,
            delivered_at: None,
            refunded: false,
            expires_at: insert.expires_at(otp),
            verified_at: None,
            verify_attempts: insert.attempts(),
            resend_of: insert.resend_of(),
            fallback: insert.fallback.map(|f| fallback::Fallback {
                channel: otp_domain::channel::Channel::Voice,
                voice: f.voice,
                due_at: f.due_at,
                credits: f.phone_credits,
                state: FallbackState::Pending,
                at: None,
            }),
        })
    }
}

/// The jobs handed over as their sends were written, on their first attempt:
/// each with the record its accept wrote, its status as shown at `now`, and
/// its account's senders; in job order, as a claim gives them.
pub(crate) fn handed_jobs(
    jobs: Vec<LeasedJob>,
    senders: &std::collections::HashMap<AccountId, Vec<AccountSender>>,
    now: Micros,
) -> Vec<ClaimedJob> {
    let mut handed: Vec<ClaimedJob> = jobs
        .into_iter()
        .map(|job| {
            let mut otp = *job.otp;
            otp.status = model::shown_status(otp.status, otp.expires_at, now);
            ClaimedJob {
                job_id: job.job_id,
                attempts: 1,
                senders: senders.get(&otp.account_id).cloned().unwrap_or_default(),
                otp: otp.into_delivered_form(),
            }
        })
        .collect();
    handed.sort_by_key(|j| j.job_id);
    handed
}

/// Each of `accounts` once, in id order.
pub(crate) fn distinct_accounts(accounts: impl IntoIterator<Item = AccountId>) -> Vec<AccountId> {
    let mut accounts: Vec<AccountId> = accounts.into_iter().collect();
    accounts.sort_unstable();
    accounts.dedup();
    accounts
}

/// The jobs of claimed rows, `(job id, attempts, its OTP with the
/// code opened at `now`)`, each with its account's senders. A job whose code
/// cannot be read back (its key was removed, or it was sent before codes were
/// kept and dropped by the upgrade) must not be delivered masked: it is
/// finished failed on `store` and left out.
pub(crate) async fn open_claimed<S: Store + ?Sized>(
    store: &S,
    rows: Vec<(i64, i64, OtpRecord)>,
    senders: &std::collections::HashMap<AccountId, Vec<AccountSender>>,
    now: Micros,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let mut failed = Vec::new();
    let mut ok = Vec::with_capacity(rows.len());
    for (job_id, attempts, otp) in rows {
        if otp.code_is_known() {
            ok.push(ClaimedJob {
                job_id,
                attempts,
                senders: senders.get(&otp.account_id).cloned().unwrap_or_default(),
                otp: otp.into_delivered_form(),
            });
        } else {
            failed.push(JobResult {
                job_id,
                otp_id: otp.id,
                outcome: JobOutcome::Failed {
                    error: "the code cannot be read back (its key is not configured, or it was not kept)".into(),
                },
                at: now,
            });
        }
    }
    if !failed.is_empty() {
        store.finish_jobs(failed).await?;
    }
    Ok(ok)
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> Micros {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_micros() as Micros
}
