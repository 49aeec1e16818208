//! Layered, typed configuration: built-in defaults, then a TOML file, then
//! `OTPGATE_*` environment variables (nested keys joined with `__`, for example
//! `OTPGATE_DELIVERY__LOG_PATH`), then command-line flags. Every key is listed in
//! the README. Secrets live in [`Secret`], whose `Debug` prints `[redacted]`.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

pub use crate::delivery::balance::RoutingConfig;
pub use crate::delivery::settings::{DriverConfig, RouteConfig, RouteError};
pub use crate::delivery::voice::settings::{VoiceConfig, VoiceOverride};
pub use otp_domain::secret::Secret;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Address of the operator's listener: `/metrics`, `/readyz`, `/docs`,
    /// `/openapi.json` and the admin API move there (`/healthz` is on both).
    /// Unset: `127.0.0.1:9091` in production mode, the public listener in
    /// development mode; empty (`""`): the public listener in either mode.
    pub admin_listen: Option<String>,
    /// `sqlite://PATH` (default `sqlite://otpgate.db`) or `postgres://...`.
    pub database_url: Secret<String>,
    /// Base of the absolute `next`/`previous` links, e.g. `https://otp.example.com`.
    /// Empty: taken from the request's `Host` header over plain HTTP.
    pub public_url: String,
    /// IANA zone used for timestamps in replies and for date filters.
    pub timezone: String,
    /// Name of this node in job leases; empty: hostname and process id.
    pub node_id: String,
    pub log: LogConfig,
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    pub demo: DemoConfig,
    /// Speech for voice OTPs and the defaults of `sip` routes.
    pub voice: VoiceConfig,
    /// `development` (default: missing code keys are generated into a local
    /// file) or `production` (the server refuses to start without them).
    pub mode: Mode,
    /// Keys for codes at rest.
    pub secrets: SecretsConfig,
    /// Checking codes.
    pub verify: VerifyConfig,
    /// How long OTPs and other rows are kept before the purge removes them.
    pub retention: RetentionConfig,
    /// Abuse protection on sends.
    pub limits: LimitsConfig,
    /// Users' logins and the tokens they get.
    pub auth: AuthConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// Account webhooks: how events reach each account's URL.
    pub webhooks: WebhooksConfig,
    /// The SMS-pumping guard (see `crate::guard`).
    pub guard: GuardConfig,
    /// Where operator alerts go.
    pub alerts: AlertsConfig,
    /// How routes serving the same destinations share messages: measured
    /// delivery, demotion and probes.
    pub routing: RoutingConfig,
    /// Carrier routes, in order of preference per channel. None configured: the
    /// `log` driver takes both channels. (Last: the packaging test reads every
    /// setting before the routes' check refuses its made-up route.)
    pub routes: Vec<RouteConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            admin_listen: None,
            database_url: Secret::new("sqlite://otpgate.db".into()),
            public_url: String::new(),
            timezone: "Asia/Kathmandu".into(),
            node_id: String::new(),
            log: LogConfig::default(),
            api: ApiConfig::default(),
            store: StoreConfig::default(),
            delivery: DeliveryConfig::default(),
            demo: DemoConfig::default(),
            voice: VoiceConfig::default(),
            mode: Mode::default(),
            secrets: SecretsConfig::default(),
            verify: VerifyConfig::default(),
            retention: RetentionConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            admin: AdminConfig::default(),
            webhooks: WebhooksConfig::default(),
            guard: GuardConfig::default(),
            alerts: AlertsConfig::default(),
            routes: Vec::new(),
            routing: RoutingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `otpgate=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
    /// One line per HTTP request (target `otpgate::access`, level `info`):
    /// method, route template, status, duration, account id, request id.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
            access: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Items per list page when the client names no `limit`.
    pub default_page_size: u32,
    /// The largest `limit` a client may ask for.
    pub max_page_size: u32,
    /// Show codes masked (`******`) in list and detail replies, always.
    /// Unset: masked in `production` mode, shown in `development` (see
    /// [`Config::hide_codes`]).
    pub hide_codes: Option<bool>,
    /// Whether `get-api-keys` shows a user's whole key (from its encrypted
    /// copy), as TingTing's does. Unset: shown in `development`, masked
    /// (`otpg_<id>_********`) in `production` (see [`Config::reveal_keys`]).
    pub reveal_keys: Option<bool>,
    /// Whether a send's reply (and its `Idempotency-Key` replay) carries the
    /// code in `otp` and `message`. TingTing-style apps compare the code
    /// themselves and need it; apps that use the verify endpoint should turn it
    /// off, so a leaked reply or key reveals no code.
    pub code_in_send_reply: bool,
    /// Seconds a client has to send a request's line and headers (and the most a
    /// kept-alive connection may sit idle); then the connection is closed.
    pub header_read_timeout_seconds: u64,
    /// Most bytes of request line and headers (at least 8192); more is a 431.
    pub max_header_bytes: usize,
    /// Most list queries one account may have running at once on this node
    /// (0: no bound), so one account's lists cannot take every list connection.
    pub max_concurrent_lists: usize,
    /// How long a list beyond `max_concurrent_lists` waits for one of them to
    /// finish before it is refused with 429 `too_many_concurrent_lists`.
    pub list_wait_ms: u64,
    /// Seconds a client has to send a whole request, headers and body, from its
    /// first byte; a body still incomplete then is a 408 and the connection is
    /// closed. A handler working after the body arrived is not cut.
    pub request_timeout_seconds: u64,
    /// Most connections open at once on the public listener; the server takes
    /// less when its open-file limit leaves less room (logged at start).
    pub max_connections: usize,
    /// Most connections open at once from one client address (an IPv6 client
    /// counts by its /64); more are a 429. Behind a trusted proxy, the forwarded
    /// client's requests in flight. 0: no cap.
    pub max_connections_per_client: usize,
    /// Reverse proxies (CIDR blocks or addresses) whose `X-Forwarded-For`,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` are believed, and whose own
    /// connections are not capped per address. Empty: no proxy is trusted.
    pub trusted_proxies: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            default_page_size: 20,
            max_page_size: 100,
            hide_codes: None,
            reveal_keys: None,
            code_in_send_reply: true,
            header_read_timeout_seconds: 30,
            max_header_bytes: 32 * 1024,
            max_concurrent_lists: 2,
            list_wait_ms: 1_000,
            request_timeout_seconds: 30,
            max_connections: 10_000,
            max_connections_per_client: 256,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Most sends committed in one transaction.
    pub max_batch: usize,
    /// Read connections (SQLite) or pool size (PostgreSQL) for everything but
    /// lists: key checks, sends, verifications, details.
    pub connections: usize,
    /// Connections only list queries use (a pool of their own on both stores).
    pub list_connections: usize,
    /// The longest one list query may run; then it is stopped and the list
    /// answers 503 `query_timeout`. 0: no limit.
    pub list_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_batch: 512,
            connections: 8,
            list_connections: 4,
            list_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Where the `log` driver appends one JSON line per delivery (`-` = stdout).
    pub log_path: String,
    /// How often idle workers look for due jobs (new sends wake them at once).
    pub poll_interval_ms: u64,
    /// How long a claimed job stays with this node before another may take it.
    pub lease_seconds: u64,
    /// Transient failures are retried (backoff 1 s, 2 s, 4 s ... 30 s) until this
    /// long after the send was accepted, then the OTP fails and is refunded.
    pub give_up_after_seconds: u64,
    /// Most deliveries in flight per channel on this node.
    pub concurrency: usize,
    /// Most jobs claimed in one query.
    pub claim_batch: usize,
    /// Where the `log` driver writes the rendered prompt of each voice OTP
    /// (`<id>.wav`), so a developer can listen to what a call would play.
    pub voice_dir: String,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            log_path: "otpgate-deliveries.jsonl".into(),
            poll_interval_ms: 250,
            lease_seconds: 60,
            give_up_after_seconds: 600,
            concurrency: 256,
            claim_batch: 256,
            voice_dir: "otpgate-voice".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Create a `default` account (and print its key once) when the store is
    /// empty. Unset: only in development mode ([`Config::creates_demo_account`]);
    /// a production server starts with no account and no key on its console.
    pub create_default_account: Option<bool>,
    pub sms_credits: i64,
    pub phone_credits: i64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            create_default_account: None,
            sms_credits: 100,
            phone_credits: 10,
        }
    }
}

/// How strict the server is about its secrets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Missing code keys are generated and kept in `secrets.file`, with a warning.
    #[default]
    Development,
    /// Every code key must be configured; the server refuses to start otherwise.
    Production,
}

/// `[secrets]`: the keys codes are kept under (see `crate::secrets`). Keys are
/// 32 random bytes in standard base64 (`openssl rand -base64 32`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// Key of the HMAC-SHA256 that codes are verified by.
    pub hmac_key: Option<Secret<String>>,
    /// AES-256-GCM keys by id; old ids stay listed to read codes they encrypted.
    pub encryption_keys: std::collections::BTreeMap<String, Secret<String>>,
    /// The id of the key new codes are encrypted with.
    pub current_key_id: String,
    /// Development mode: where generated keys are kept. Empty: next to the
    /// SQLite database (`<database>.secrets.toml`), or `otpgate-secrets.toml`
    /// in the working directory for PostgreSQL.
    pub file: String,
}

/// `[verify]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifyConfig {
    /// Wrong codes after which a code is dead.
    pub max_attempts: i64,
    /// How long codes stay verifiable when a send names no `expiry_seconds`.
    pub default_expiry_seconds: i64,
    /// The old name of `retention.code_seconds`, still read.
    pub retention_seconds: Option<i64>,
    /// The old name of `retention.interval_seconds`, still read.
    pub purge_interval_seconds: Option<u64>,
    /// Most verifications of one number (or one OTP `id`) per account within
    /// `per_number_window_seconds`, on this node; 0 turns it off. Over it: 429
    /// `verify_rate_limited`, nothing counted against the code.
    pub per_number_max: u32,
    /// The sliding window `per_number_max` counts over.
    pub per_number_window_seconds: u64,
    /// Most verifications per second of one account, on this node; 0 turns it
    /// off. Over it: 429 `verify_account_rate_limited`.
    pub per_account_rps: u32,
    /// Which OTPs a verification by number looks at: `key` (only those sent
    /// under the calling API key, so another key of the account cannot plant
    /// the code a login checks) or `account` (any of the account's). A
    /// verification by `id` may name any OTP of the account either way.
    pub number_scope: NumberScope,
    /// A generated-code send to a number that has a live (unexpired,
    /// unverified, not dead) generated code sent under the same API key is a
    /// resend: it sends that code again, with its expiry, and the two share one
    /// attempt counter, so whichever message arrives first verifies. False:
    /// every send gets a new code and verification by number checks the
    /// newest.
    pub resend_same_code: bool,
}

/// Which OTPs a verification by number considers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberScope {
    /// Only OTPs sent under the API key that verifies.
    #[default]
    Key,
    /// Any OTP of the account.
    Account,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            max_attempts: 5,
            default_expiry_seconds: 600,
            retention_seconds: None,
            purge_interval_seconds: None,
            per_number_max: 10,
            per_number_window_seconds: 60,
            per_account_rps: 100,
            number_scope: NumberScope::Key,
            resend_same_code: true,
        }
    }
}

impl VerifyConfig {
    /// The verify rate limits, as the limiter counts them.
    pub fn limits(&self) -> crate::throttle::VerifyLimits {
        crate::throttle::VerifyLimits {
            per_number_max: self.per_number_max,
            per_number_window: i64::try_from(
                self.per_number_window_seconds.saturating_mul(1_000_000),
            )
            .unwrap_or(i64::MAX),
            per_account_rps: self.per_account_rps,
        }
    }
}

/// `[retention]`: how long rows are kept (see `crate::retention`). Every node
/// runs the purge; on PostgreSQL they share the work without repeating it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long an OTP is kept after its last status change, with its delivery
    /// job, status history, carrier message ids, webhook deliveries and
    /// idempotency record; 0 keeps OTPs for ever. Live OTPs stay whatever
    /// their age. The ledger is never purged.
    pub otp_seconds: u64,
    /// How long after expiry the encrypted code is kept (the list shows it)
    /// before it is purged (the list shows it masked). Unset:
    /// `verify.retention_seconds`, else 86,400.
    pub code_seconds: Option<i64>,
    /// How long an `Idempotency-Key` record is kept: at least the 24 hours a
    /// key answers for, at most `otp_seconds` (a replay needs its OTP).
    pub idempotency_seconds: u64,
    /// How often each node runs the purge. Unset:
    /// `verify.purge_interval_seconds`, else 60.
    pub interval_seconds: Option<u64>,
    /// Most rows removed per transaction, so that a large purge never holds
    /// sends up for long.
    pub chunk: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            otp_seconds: 90 * 86_400,
            code_seconds: None,
            idempotency_seconds: 86_400,
            interval_seconds: None,
            chunk: 500,
        }
    }
}

/// `[limits]`: abuse protection on sends. The per-number, per-account, per-key
/// and daily spend limits are checked in the transaction that accepts a send,
/// so they hold across nodes sharing one PostgreSQL database. A zero turns a
/// limit off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most sends per account to one number within `per_number_window_seconds`.
    pub per_number_max: u32,
    /// The sliding window `per_number_max` counts over.
    pub per_number_window_seconds: u64,
    /// Least time between two sends of an account to one number; 0 (the
    /// default): none, so a user who asks for a second code at once gets it
    /// (TingTing clients offer "resend" at once). `per_number_max` still bounds
    /// the sends to one number (5 per 10 minutes).
    pub per_number_cooldown_seconds: u64,
    /// Most accepted sends per second of one account (an account may have its
    /// own, set with `otpgate accounts limits`).
    pub per_account_rps: u32,
    /// Most accepted sends per second under one API key.
    pub per_key_rps: u32,
    /// Most credits (SMS and phone together) one account may spend per day in
    /// `timezone`; 0: no cap (an account may have its own). Unset: no cap in
    /// development mode, [`PRODUCTION_DAILY_SPEND_CAP`] in production
    /// ([`LimitsConfig::daily_spend_cap`]).
    pub daily_spend_cap: Option<i64>,
    /// ISO 3166 regions sends may go to (`NP`); empty: every region.
    pub allowed_countries: Vec<String>,
    /// E.164 prefixes no send may go to (`+97798000`), whatever the region.
    pub denied_prefixes: Vec<String>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            per_number_max: 5,
            per_number_window_seconds: 600,
            per_number_cooldown_seconds: 0,
            per_account_rps: 100,
            per_key_rps: 50,
            daily_spend_cap: None,
            allowed_countries: vec!["NP".into()],
            denied_prefixes: Vec::new(),
        }
    }
}

/// The daily spend cap of every account in production mode when
/// `limits.daily_spend_cap` is not set: a leaked key or a bug in a client can
/// burn at most this many credits a day (10,000 SMS are about a day's logins of
/// a large app); an account that needs more gets its own cap with
/// `otpgate accounts limits ACCOUNT --daily-spend-cap N`.
pub const PRODUCTION_DAILY_SPEND_CAP: i64 = 10_000;

impl LimitsConfig {
    /// The daily spend cap accounts without their own get: the configured one,
    /// else none in development mode and [`PRODUCTION_DAILY_SPEND_CAP`] in
    /// production. 0 is no cap.
    pub fn daily_spend_cap(&self, mode: Mode) -> i64 {
        match (self.daily_spend_cap, mode) {
            (Some(cap), _) => cap.max(0),
            (None, Mode::Development) => 0,
            (None, Mode::Production) => PRODUCTION_DAILY_SPEND_CAP,
        }
    }

    /// The per-number limits, as the store checks them.
    pub fn send_limits(&self, mode: Mode) -> otp_store::SendLimits {
        let micros = |s: u64| i64::try_from(s.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        otp_store::SendLimits {
            per_number_max: self.per_number_max,
            per_number_window: micros(self.per_number_window_seconds),
            per_number_cooldown: micros(self.per_number_cooldown_seconds),
            per_account_rps: self.per_account_rps,
            per_key_rps: self.per_key_rps,
            daily_spend_cap: self.daily_spend_cap(mode),
            // From `[webhooks]`: `startup::open_store_with` sets them.
            low_balance: Default::default(),
        }
    }

    /// No per-number, rate or spend limit (for tests that send many OTPs to one
    /// number); the destination rules stay the defaults.
    pub fn off() -> Self {
        LimitsConfig {
            per_number_max: 0,
            per_number_window_seconds: 0,
            per_number_cooldown_seconds: 0,
            per_account_rps: 0,
            per_key_rps: 0,
            daily_spend_cap: Some(0),
            ..LimitsConfig::default()
        }
    }

    /// Why a destination is refused (`country_not_allowed` or `prefix_denied`,
    /// with a sentence), if it is.
    pub fn refuse_destination(
        &self,
        number: &otp_domain::phone::PhoneNumber,
    ) -> Option<(&'static str, String)> {
        if let Some(prefix) = self
            .denied_prefixes
            .iter()
            .find(|p| !p.is_empty() && number.e164().starts_with(p.as_str()))
        {
            return Some((
                "prefix_denied",
                format!("Sending to numbers starting with {prefix} is not allowed."),
            ));
        }
        let allowed = self.allowed_countries.is_empty()
            || number.region().is_some_and(|region| {
                self.allowed_countries
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(region))
            });
        if allowed {
            None
        } else {
            Some((
                "country_not_allowed",
                format!(
                    "Sending to this country is not allowed; allowed: {}.",
                    self.allowed_countries.join(", ")
                ),
            ))
        }
    }
}

/// `[webhooks]`: delivery of account webhooks (see `crate::webhooks`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// How long one POST may take, connecting included, before it counts as
    /// failed. A claimed delivery is leased for this plus 30 s.
    pub timeout_ms: u64,
    /// Failed deliveries are retried until this long after the event was
    /// recorded, then given up.
    pub max_age_seconds: u64,
    /// The first retry waits about this long; each later one twice as long as
    /// the one before, up to `backoff_cap_ms`. Each wait is drawn at random
    /// from its upper half, so receivers coming back are not hit all at once.
    pub backoff_base_ms: u64,
    /// The longest wait between two attempts.
    pub backoff_cap_ms: u64,
    /// How often an idle dispatcher looks for due deliveries.
    pub poll_interval_ms: u64,
    /// Most deliveries in flight on this node.
    pub concurrency: usize,
    /// How often codes that expired unverified are looked for (`expired` events).
    pub sweep_interval_ms: u64,
    /// How long after a code's expiry its `expired` event is recorded, so that
    /// a verification already under way at that moment is not also reported
    /// expired.
    pub expired_delay_ms: u64,
    /// Let webhooks reach special-purpose addresses (loopback, private,
    /// link-local, ...; see `crate::webhooks::address`). Off: such an address is
    /// refused when a URL is set, and at every connection after resolving the
    /// host name, so accounts cannot probe the network the gateway runs in.
    pub allow_private_addresses: bool,
    /// Most deliveries of one account in flight at once, across all nodes, so
    /// that one account whose receiver hangs cannot hold every slot.
    pub per_account_concurrency: usize,
    /// A `low_balance` event is recorded when a send takes an account's SMS
    /// credits from at least this many to fewer (0: never). An account may set
    /// its own with its webhook.
    pub low_balance_sms_credits: i64,
    /// The same for phone (voice) credits.
    pub low_balance_phone_credits: i64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout_ms: 10_000,
            max_age_seconds: 86_400,
            backoff_base_ms: 5_000,
            backoff_cap_ms: 3_600_000,
            poll_interval_ms: 1_000,
            concurrency: 32,
            sweep_interval_ms: 5_000,
            expired_delay_ms: 5_000,
            allow_private_addresses: false,
            per_account_concurrency: 4,
            low_balance_sms_credits: 100,
            low_balance_phone_credits: 20,
        }
    }
}

impl WebhooksConfig {
    /// Where `low_balance` events fire unless an account sets its own.
    pub fn low_balance_thresholds(&self) -> otp_store::webhooks::LowBalanceThresholds {
        otp_store::webhooks::LowBalanceThresholds {
            sms: self.low_balance_sms_credits.max(0),
            phone: self.low_balance_phone_credits.max(0),
        }
    }
}

/// `[guard]`: the SMS-pumping guard (see `crate::guard`). A key (a
/// country, operator prefix or number block, for one account or across
/// accounts) is held when, over `window_seconds`, its send attempts reach
/// `min_volume` and `surge_factor` times what its baseline expects, while
/// the share of its sends verified (or delivered, for accounts that never
/// verify) is at most `collapse_ratio` times the baseline's.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// Judge sends and hold bursts.
    pub enabled: bool,
    /// One bucket of counts covers this long.
    pub bucket_seconds: u64,
    /// The recent window judged against the baseline.
    pub window_seconds: u64,
    /// The baseline's time constant: it follows traffic over about this
    /// long (a daily rhythm moves it slowly).
    pub baseline_seconds: u64,
    /// Fewest attempts in the window before a key can be held.
    pub min_volume: u32,
    /// How many times the baseline's volume counts as a surge.
    pub surge_factor: f64,
    /// Conversion at most this share of the baseline's counts as collapsed.
    pub collapse_ratio: f64,
    /// The conversion assumed until a key's baseline has judged
    /// `min_volume` sends.
    pub prior_conversion: f64,
    /// How long a hold lasts; a burst that goes on while held extends it.
    pub hold_seconds: u64,
    /// Most keys one node tracks (memory stays bounded).
    pub max_keys: usize,
    /// How often a node reads the holds other nodes placed or released.
    pub refresh_ms: u64,
    /// An account that verified a code (or got a receipt) within this long
    /// is judged on verifications (or deliveries).
    pub signal_memory_seconds: u64,
    /// A send to a number proven good for the account (a code to it was
    /// verified, or for an account judged on deliveries delivered, while
    /// its OTPs are kept) passes a hold: a returning user is not pumping.
    pub pass_proven_numbers: bool,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            enabled: true,
            bucket_seconds: 60,
            window_seconds: 600,
            baseline_seconds: 6 * 3600,
            min_volume: 100,
            surge_factor: 4.0,
            collapse_ratio: 0.25,
            prior_conversion: 0.5,
            hold_seconds: 900,
            max_keys: 200_000,
            refresh_ms: 2_000,
            signal_memory_seconds: 86_400,
            pass_proven_numbers: true,
        }
    }
}

impl GuardConfig {
    /// Every problem of the settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.bucket_seconds == 0 || self.window_seconds < self.bucket_seconds {
            out.push(
                "guard.window_seconds must be at least guard.bucket_seconds, which must be above 0"
                    .to_owned(),
            );
        }
        if self.baseline_seconds < self.window_seconds {
            out.push("guard.baseline_seconds must be at least guard.window_seconds".to_owned());
        }
        if self.min_volume == 0 {
            out.push("guard.min_volume must be above 0".to_owned());
        }
        if !(self.surge_factor >= 1.0 && self.surge_factor.is_finite()) {
            out.push("guard.surge_factor must be at least 1".to_owned());
        }
        for (name, v) in [
            ("collapse_ratio", self.collapse_ratio),
            ("prior_conversion", self.prior_conversion),
        ] {
            if !(0.0..=1.0).contains(&v) {
                out.push(format!("guard.{name} must be between 0 and 1"));
            }
        }
        if self.hold_seconds == 0 {
            out.push("guard.hold_seconds must be above 0".to_owned());
        }
        out
    }
}

/// `[alerts]`: where the operator hears of what needs a look.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// A URL that gets a JSON POST for each pumping hold (event
    /// `pumping_hold`); empty: none.
    pub webhook_url: String,
}

/// `[auth]`: users' logins (see `crate::users`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The HMAC-SHA256 key access and refresh tokens are signed with: at least
    /// 32 random bytes in standard base64 (`openssl rand -base64 32`). Required
    /// in production mode; in development mode a missing one is generated at
    /// each start (tokens then end with the process).
    pub token_secret: Option<Secret<String>>,
    /// How long an access token lasts.
    pub access_token_seconds: u64,
    /// How long a refresh token lasts.
    pub refresh_token_seconds: u64,
    /// Login attempts one email gets per window; more are refused with 429.
    pub login_max_attempts: u32,
    /// The window those attempts are counted over.
    pub login_window_seconds: u64,
    /// Password hashes computed at once on this node (each takes 19 MiB);
    /// 0: one per CPU.
    pub max_concurrent_hashes: usize,
    /// Login attempts one client address gets per `login_window_seconds`
    /// (every attempt counts, successful or not; IPv6 addresses are counted
    /// per /64); more are refused with 429. 0: no per-address limit.
    pub login_max_attempts_per_address: u32,
    /// Login attempts the whole gateway (all nodes together) takes per
    /// `login_window_seconds`; more are refused with 429. 0: no global limit.
    pub login_max_attempts_global: u32,
    /// Logins whose password check is running or waiting on this node at
    /// once; more are shed with 429 `login_busy` and `Retry-After`. 0: eight
    /// per hash that may run at once (`max_concurrent_hashes`).
    pub max_pending_hashes: usize,
    /// Sessions (logins with a valid refresh token) one user may have; a new
    /// login beyond that revokes the user's oldest. 0: no limit.
    pub max_sessions_per_user: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_secret: None,
            access_token_seconds: 86_400,
            refresh_token_seconds: 7 * 86_400,
            login_max_attempts: 5,
            login_window_seconds: 900,
            max_concurrent_hashes: 0,
            login_max_attempts_per_address: 100,
            login_max_attempts_global: 2_000,
            max_pending_hashes: 0,
            max_sessions_per_user: 20,
        }
    }
}

/// `[admin]`: the admin API (`/admin/v1/...`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The Bearer token the admin API takes, at least 32 characters
    /// (`openssl rand -base64 32`). Unset: the admin API is off (404).
    pub token: Option<Secret<String>>,
}

impl Config {
    /// Defaults, then the file (if given), then `OTPGATE_*` variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("configuration file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        // OTPGATE_CONFIG names the file (read by the command line) and
        // OTPGATE_TEST_PG_URL belongs to the test suite: neither is a setting.
        figment = figment.merge(
            Env::prefixed("OTPGATE_")
                .ignore(&["config", "test_pg_url"])
                .split("__"),
        );
        let config: Config = figment
            .extract()
            .map_err(|e| match route_of(&figment, &e) {
                Some(name) if !e.to_string().starts_with(&format!("route {name}: ")) => {
                    anyhow::anyhow!("invalid configuration: route {name}: {e}")
                }
                _ => anyhow::anyhow!("invalid configuration: {e}"),
            })?;
        config.timezone()?;
        if let Some(problem) = config.routing.problem() {
            anyhow::bail!("invalid configuration: {problem}");
        }
        Ok(config)
    }

    /// Whether list and detail replies mask codes: `api.hide_codes` if set,
    /// else in production mode only.
    pub fn hide_codes(&self) -> bool {
        self.api.hide_codes.unwrap_or(self.mode == Mode::Production)
    }

    /// Whether `get-api-keys` shows the whole key: `api.reveal_keys` if set,
    /// else in development mode only.
    pub fn reveal_keys(&self) -> bool {
        self.api
            .reveal_keys
            .unwrap_or(self.mode == Mode::Development)
    }

    /// The configured zone, parsed.
    pub fn timezone(&self) -> anyhow::Result<chrono_tz::Tz> {
        self.timezone
            .parse()
            .map_err(|_| anyhow::anyhow!("unknown timezone {:?}", self.timezone))
    }

    /// Whether an empty store gets the demo account and its key printed:
    /// `demo.create_default_account` when set, else in development mode only.
    pub fn creates_demo_account(&self) -> bool {
        self.demo
            .create_default_account
            .unwrap_or(self.mode == Mode::Development)
    }

    /// The database URL with any password replaced, safe to log.
    pub fn database_for_logs(&self) -> String {
        redact_url(self.database_url.expose())
    }

    /// This node's name in job leases.
    pub fn node_name(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into());
        format!("{host}-{}", std::process::id())
    }
}

/// The name of the `[[routes]]` entry a reading error is in, if it is in one.
fn route_of(figment: &Figment, e: &figment::Error) -> Option<String> {
    let [routes, index, ..] = e.path.as_slice() else {
        return None;
    };
    if routes != "routes" {
        return None;
    }
    let list = figment.find_value("routes").ok()?;
    let route = list.as_array()?.get(index.parse::<usize>().ok()?)?;
    Some(route.find_ref("name")?.as_str()?.to_owned())
}

/// Replaces the password part of `scheme://user:password@host/...`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:[redacted]@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let c = Config {
            database_url: Secret::new("postgres://u:hunter2@db/otp".into()),
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(c.database_for_logs(), "postgres://u:[redacted]@db/otp");
    }

    #[test]
    fn receipt_ids_is_set_per_smpp_route_and_defaults_to_auto() {
        let toml = r#"
            [[routes]]
            name = "ntc"
            channel = "text"
            driver = "smpp"
            [routes.smpp]
            system_id = "acme"
            receipt_ids = "decimal"
            receipt_hold_seconds = 30
            [[routes]]
            name = "ncell"
            channel = "text"
            driver = "smpp"
            [routes.smpp]
            system_id = "acme"
        "#;
        let config: Config = Figment::new().merge(Toml::string(toml)).extract().unwrap();
        let smpp = |i: usize| match &config.routes[i].driver {
            DriverConfig::Smpp(smpp) => smpp.clone(),
            other => panic!("an smpp route read as {other:?}"),
        };
        assert_eq!(
            (smpp(0).receipt_ids.as_str(), smpp(0).receipt_hold_seconds),
            ("decimal", 30)
        );
        assert_eq!(
            (smpp(1).receipt_ids.as_str(), smpp(1).receipt_hold_seconds),
            ("auto", 120)
        );
    }

    #[test]
    fn routes_come_from_the_toml_file() {
        let toml = r#"
            listen = "0.0.0.0:9000"
            [delivery]
            give_up_after_seconds = 300
            [[routes]]
            name = "ntc"
            channel = "text"
            prefixes = ["+977984", "+977985"]
            driver = "smpp"
            [routes.smpp]
            host = "10.0.0.1"
            system_id = "acme"
            password = "s3cret"
            window = 20
            [[routes]]
            name = "relay"
            channel = "voice"
            driver = "tingting"
            [routes.tingting]
            token = "upstream-key"
        "#;
        let config: Config = Figment::new().merge(Toml::string(toml)).extract().unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.delivery.give_up_after_seconds, 300);
        assert_eq!(config.routes.len(), 2);
        let DriverConfig::Smpp(smpp) = &config.routes[0].driver else {
            panic!("the first route is an smpp route");
        };
        assert_eq!(
            (smpp.window, smpp.port, smpp.password.expose().as_str()),
            (20, 2775, "s3cret")
        );
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!format!("{config:?}").contains("upstream-key"));
        let bad = Figment::new()
            .merge(Toml::string("lisen = \"x\""))
            .extract::<Config>();
        assert!(bad.is_err(), "unknown keys are refused");
    }

    #[test]
    fn production_mode_makes_no_demo_account_and_caps_daily_spend_unless_configured() {
        let load =
            |toml: &str| -> Config { Figment::new().merge(Toml::string(toml)).extract().unwrap() };
        let development = load("");
        assert!(development.creates_demo_account());
        assert_eq!(development.limits.daily_spend_cap(development.mode), 0);
        assert_eq!(
            development
                .limits
                .send_limits(development.mode)
                .daily_spend_cap,
            0
        );

        let production = load(r#"mode = "production""#);
        assert!(!production.creates_demo_account());
        assert_eq!(
            production
                .limits
                .send_limits(production.mode)
                .daily_spend_cap,
            PRODUCTION_DAILY_SPEND_CAP
        );

        let chosen = load(
            r#"
            mode = "production"
            [demo]
            create_default_account = true
            [limits]
            daily_spend_cap = 0
            "#,
        );
        assert!(chosen.creates_demo_account());
        assert_eq!(
            chosen.limits.daily_spend_cap(chosen.mode),
            0,
            "0 turns the cap off"
        );
        let chosen =
            load("[demo]\ncreate_default_account = false\n[limits]\ndaily_spend_cap = 500");
        assert!(!chosen.creates_demo_account());
        assert_eq!(chosen.limits.daily_spend_cap(Mode::Development), 500);
        assert_eq!(chosen.limits.daily_spend_cap(Mode::Production), 500);
    }

    #[test]
    fn codes_are_hidden_in_lists_by_default_only_in_production() {
        let mut c = Config::default();
        assert!(!c.hide_codes());
        c.mode = Mode::Production;
        assert!(c.hide_codes());
        c.api.hide_codes = Some(false);
        assert!(!c.hide_codes(), "an explicit setting wins");
        assert!(c.api.code_in_send_reply);
    }

    #[test]
    fn the_verify_number_scope_is_key_unless_set_to_account() {
        assert_eq!(Config::default().verify.number_scope, NumberScope::Key);
        let config: Config = Figment::new()
            .merge(Toml::string("[verify]\nnumber_scope = \"account\""))
            .extract()
            .unwrap();
        assert_eq!(config.verify.number_scope, NumberScope::Account);
        let bad = Figment::new()
            .merge(Toml::string("[verify]\nnumber_scope = \"everyone\""))
            .extract::<Config>();
        assert!(bad.is_err(), "an unknown scope is refused");
    }

    #[test]
    fn resends_repeat_the_live_code_unless_turned_off() {
        assert!(Config::default().verify.resend_same_code);
        let config: Config = Figment::new()
            .merge(Toml::string("[verify]\nresend_same_code = false"))
            .extract()
            .unwrap();
        assert!(!config.verify.resend_same_code);
    }

    #[test]
    fn urls_without_passwords_are_left_alone() {
        assert_eq!(redact_url("sqlite://otpgate.db"), "sqlite://otpgate.db");
    }
}
