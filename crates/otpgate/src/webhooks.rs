//! Webhooks: telling each account's own server what happened to its OTPs.
//!
//! The store records an event in its outbox in the same transaction as the
//! change it reports (see `otp_store::webhooks`), so nothing is lost when the
//! process dies. Here, a worker per node claims due deliveries
//! ([`WebhookDeliveries`]) under a lease, POSTs each one signed (see [`WebhookSender::attempt`]), and
//! records every attempt; a failed one is tried again after an exponential,
//! jittered wait until [`WebhookPolicy::max_age`] after the event, then given
//! up. [`sweep_loop`] records `expired` for codes whose expiry passed unverified.
//!
//! A request carries the event as JSON ([`event_body`]: the same bytes on
//! every attempt, never the code) and these headers:
//!
//! - `X-Otpgate-Event`: the event name;
//! - `X-Otpgate-Event-Id`: `evt_<n>`, the same on every attempt, for dedup;
//! - `X-Otpgate-Attempt`: 1 for the first attempt, then 2, 3 ...;
//! - `X-Otpgate-Timestamp`: Unix seconds when this attempt was signed;
//! - `X-Otpgate-Signature`: `v1=` and the hex HMAC-SHA256 of
//!   `"<timestamp>.<body>"` under the account's secret
//!   ([`otp_domain::webhook::sign`]).
//!
//! The shared [`Worker`](crate::outbox::Worker) runs them: its step is one
//! claim that starts attempts, its loop adds the waiting. The store
//! hands out at most [`WebhookPolicy::per_account`] deliveries of one account
//! at a time, so an account whose receiver hangs holds that many slots, not all.
//!
//! Unless `webhooks.allow_private_addresses` is set, a webhook reaches public
//! addresses only ([`address`]): a literal special-purpose address is refused
//! when the URL is set and before any attempt, and host names are resolved by
//! [`address::PublicResolver`], which refuses a name that resolves inward. No
//! proxy is used (the check must see the receiver's address, not a proxy's) and
//! no redirect is followed.

pub mod address;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use otp_domain::webhook::sign;
use otp_store::webhooks::{
    AttemptOutcome, AttemptResult, ClaimedDelivery, DeliveryClaim, ExpirySweep,
};
use otp_store::{Micros, SharedStore, StoreError, now_micros};

use crate::config::WebhooksConfig;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::times::rfc3339;

/// What an event id starts with (the delivery's number follows).
pub const EVENT_ID_PREFIX: &str = "evt_";
pub const EVENT_HEADER: &str = "x-otpgate-event";
pub const EVENT_ID_HEADER: &str = "x-otpgate-event-id";
pub const ATTEMPT_HEADER: &str = "x-otpgate-attempt";
pub const TIMESTAMP_HEADER: &str = "x-otpgate-timestamp";
pub const SIGNATURE_HEADER: &str = "x-otpgate-signature";

/// How long past the timeout a claimed delivery stays leased to its node, so
/// that no other node sends it while an attempt may still be running.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// Timing and limits of webhook delivery, from `[webhooks]`.
#[derive(Debug, Clone)]
pub struct WebhookPolicy {
    pub timeout: Duration,
    pub max_age: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub poll_interval: Duration,
    pub concurrency: usize,
    pub sweep_interval: Duration,
    pub expired_delay: Duration,
    /// Most deliveries of one account in flight at once (all nodes together).
    pub per_account: usize,
    /// Whether special-purpose addresses may be reached (see [`address`]).
    pub allow_private_addresses: bool,
}

fn micros(d: Duration) -> Micros {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl WebhookPolicy {
    pub fn from_config(c: &WebhooksConfig) -> WebhookPolicy {
        WebhookPolicy {
            timeout: Duration::from_millis(c.timeout_ms.max(1)),
            max_age: Duration::from_secs(c.max_age_seconds),
            backoff_base: Duration::from_millis(c.backoff_base_ms.max(1)),
            backoff_cap: Duration::from_millis(c.backoff_cap_ms.max(c.backoff_base_ms).max(1)),
            poll_interval: Duration::from_millis(c.poll_interval_ms.max(10)),
            concurrency: c.concurrency.max(1),
            sweep_interval: Duration::from_millis(c.sweep_interval_ms.max(10)),
            expired_delay: Duration::from_millis(c.expired_delay_ms),
            per_account: c.per_account_concurrency.max(1),
            allow_private_addresses: c.allow_private_addresses,
        }
    }

    /// How long a claimed delivery belongs to its node.
    pub fn lease(&self) -> Duration {
        self.timeout + LEASE_MARGIN
    }

    /// The wait after failed attempt number `attempt` (1 for the first):
    /// `backoff_base` doubled per earlier attempt, at most `backoff_cap`, drawn
    /// at random from the upper half of that, so that the deliveries held up by
    /// one outage do not all come back in the same instant.
    pub fn retry_delay(&self, attempt: i64) -> Duration {
        let doublings = attempt.clamp(1, 64) as u32 - 1;
        let ceiling = self
            .backoff_base
            .checked_mul(2u32.saturating_pow(doublings.min(31)))
            .unwrap_or(self.backoff_cap)
            .min(self.backoff_cap);
        let ceiling = micros(ceiling).max(2) as u64;
        Duration::from_micros(rand::rng().random_range(ceiling / 2..=ceiling))
    }

    /// What follows a failed attempt that ended at `now`: another one, unless
    /// it would come later than `max_age` after the event was recorded.
    pub fn after_failure(&self, d: &ClaimedDelivery, now: Micros) -> AttemptOutcome {
        let next = now.saturating_add(micros(self.retry_delay(d.attempt)));
        if next <= d.created_at.saturating_add(micros(self.max_age)) {
            AttemptOutcome::Retry {
                next_attempt_at: next,
            }
        } else {
            AttemptOutcome::GiveUp
        }
    }
}

/// An event as its receiver reads it.
#[derive(Serialize)]
struct Body<'a> {
    /// `evt_<n>`: the same on every attempt.
    event_id: String,
    event: &'static str,
    /// When it happened (for `expired`: when the code expired).
    occurred_at: String,
    /// The id a send returned.
    otp_id: i64,
    /// The OTP's number within its account (1, 2, 3 ...).
    account_seq: i64,
    number: &'a str,
    channel: &'a str,
    /// The OTP's status as the list showed it right after the event.
    status: &'a str,
    created_at: String,
    expires_at: String,
    /// The carrier's error code, when a receipt gave one.
    error_code: Option<&'a str>,
    /// `low_balance` only: `sms` or `phone`, the credits that fell below
    /// `threshold`, and both balances right after the send.
    #[serde(skip_serializing_if = "Option::is_none")]
    credits: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sms_credits: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone_credits: Option<i64>,
}

/// The JSON body of a delivery, times in `tz` as in API replies. It holds no
/// code: the claimed delivery does not carry one.
pub fn event_body(d: &ClaimedDelivery, tz: &chrono_tz::Tz) -> Vec<u8> {
    let body = Body {
        event_id: format!("{EVENT_ID_PREFIX}{}", d.id),
        event: d.event.as_str(),
        occurred_at: rfc3339(d.occurred_at, tz),
        otp_id: d.otp.id,
        account_seq: d.otp.account_seq,
        number: d.otp.number.display(),
        channel: d.otp.channel.as_str(),
        status: &d.otp_status,
        created_at: rfc3339(d.otp.created_at, tz),
        expires_at: rfc3339(d.otp.expires_at, tz),
        error_code: d.otp.error_code.as_deref(),
        credits: d.balance.map(|b| b.credits.as_str()),
        threshold: d.balance.map(|b| b.threshold),
        sms_credits: d.balance.map(|b| b.sms_credits),
        phone_credits: d.balance.map(|b| b.phone_credits),
    };
    serde_json::to_vec(&body).expect("a struct of strings and numbers serializes")
}

/// Makes one attempt at a delivery: an HTTP client that follows no redirects
/// (a receiver must answer 2xx itself), uses no proxy, reaches only public
/// addresses unless the policy allows more, and gives up after the timeout.
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    policy: WebhookPolicy,
    tz: chrono_tz::Tz,
}

impl WebhookSender {
    pub fn new(policy: WebhookPolicy, tz: chrono_tz::Tz) -> anyhow::Result<WebhookSender> {
        let mut builder = reqwest::Client::builder()
            .timeout(policy.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("otpgate-webhooks/", env!("CARGO_PKG_VERSION")));
        if !policy.allow_private_addresses {
            builder = builder.dns_resolver(Arc::new(address::PublicResolver));
        }
        let client = builder
            .build()
            .context("building the webhook HTTP client")?;
        Ok(WebhookSender { client, policy, tz })
    }

    pub fn policy(&self) -> &WebhookPolicy {
        &self.policy
    }

    /// POSTs the event, signed, and says what to record: delivered on a 2xx
    /// answer; otherwise the status or error, and when to try again. Nothing the
    /// receiver sends back is kept beyond its status code.
    pub async fn attempt(&self, d: &ClaimedDelivery) -> AttemptResult {
        let at = now_micros();
        let started = Instant::now();
        let (status_code, error) = match &d.secret {
            None => (
                None,
                Some(
                    "the signing secret cannot be read (the encryption key it was kept under \
                     is not configured); set a new secret"
                        .to_owned(),
                ),
            ),
            Some(secret) => self.post(d, secret, at).await,
        };
        let duration_us = micros(started.elapsed());
        let outcome = if error.is_none() {
            AttemptOutcome::Delivered
        } else {
            self.policy.after_failure(d, at.saturating_add(duration_us))
        };
        AttemptResult {
            delivery_id: d.id,
            attempt: d.attempt,
            at,
            duration_us,
            status_code,
            error,
            outcome,
        }
    }

    async fn post(
        &self,
        d: &ClaimedDelivery,
        secret: &str,
        at: Micros,
    ) -> (Option<u16>, Option<String>) {
        if !self.policy.allow_private_addresses {
            // A literal address never reaches the resolver: check it here (a
            // URL set before this check existed may still hold one).
            if let Some(refused) = reqwest::Url::parse(&d.url)
                .ok()
                .and_then(|u| address::refuse_literal(&u).err())
            {
                return (None, Some(format!("not sent: {refused}")));
            }
        }
        let body = event_body(d, &self.tz);
        let timestamp = at.div_euclid(1_000_000);
        let signature = sign(secret, timestamp, &body);
        let sent = self
            .client
            .post(&d.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, d.event.as_str())
            .header(EVENT_ID_HEADER, format!("{EVENT_ID_PREFIX}{}", d.id))
            .header(ATTEMPT_HEADER, d.attempt.to_string())
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
            Ok(r) => (
                Some(r.status().as_u16()),
                Some(format!("the receiver answered {}", r.status().as_u16())),
            ),
            Err(e) => (None, Some(describe(&e, self.policy.timeout))),
        }
    }
}

/// The longest webhook URL accepted.
pub const MAX_URL_CHARS: usize = 2048;

/// Why a URL cannot take events, if it cannot: its shape, or (unless
/// `allow_private_addresses`) a literal special-purpose address, which is
/// `Err` with the code `address_not_allowed` rather than `invalid`.
pub fn check_url(raw: &str, allow_private_addresses: bool) -> Result<(), (&'static str, String)> {
    let url = check_shape(raw).map_err(|why| ("invalid", why))?;
    if !allow_private_addresses {
        address::refuse_literal(&url)
            .map_err(|refused| ("address_not_allowed", format!("url: {refused}.")))?;
    }
    Ok(())
}

/// The URL, if it has the shape of a webhook URL.
fn check_shape(raw: &str) -> Result<reqwest::Url, String> {
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(format!("url must be at most {MAX_URL_CHARS} characters."));
    }
    let url = reqwest::Url::parse(raw)
        .map_err(|_| "url must be an absolute http or https URL.".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("url must be an absolute http or https URL.".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "url must not carry a user name or password: events are authenticated by their signature."
                .to_owned(),
        );
    }
    if url.fragment().is_some() {
        return Err("url must not have a #fragment (it is never sent).".to_owned());
    }
    Ok(url)
}

/// Why a request failed, without its URL (which may carry a token of the
/// receiver's in its query).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} ms", timeout.as_millis());
    }
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<address::AddressRefused>() {
            return format!("not sent: {refused}");
        }
        source = s.source();
    }
    let what = if e.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    // The innermost cause says why ("Connection refused (os error 111)").
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if std::ptr::addr_eq(cause, e as &dyn std::error::Error) {
        what.to_owned()
    } else {
        format!("{what}: {cause}")
    }
}

fn outcome_label(o: &AttemptOutcome) -> &'static str {
    match o {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::Retry { .. } => "retry",
        AttemptOutcome::GiveUp => "gave_up",
    }
}

fn observe(metrics: &Metrics, r: &AttemptResult) {
    metrics.inc(
        "otpgate_webhook_attempts_total",
        &[("outcome", outcome_label(&r.outcome))],
    );
    metrics.observe(
        "otpgate_webhook_attempt_duration_seconds",
        &[],
        r.duration_us as f64 / 1e6,
    );
}

/// The due webhook deliveries of every account, worked through by a
/// [`Worker`](crate::outbox::Worker): at most [`WebhookPolicy::concurrency`]
/// attempts in flight on this node, at most [`WebhookPolicy::per_account`] of
/// one account.
pub struct WebhookDeliveries {
    pub store: SharedStore,
    pub sender: WebhookSender,
    pub node: String,
    pub metrics: Arc<Metrics>,
}

#[async_trait::async_trait]
impl Outbox for WebhookDeliveries {
    type Job = ClaimedDelivery;
    type Done = AttemptResult;
    /// Webhook deliveries are always claimed: none is handed over.
    type Leased = std::convert::Infallible;
    const RECORD_BATCH: usize = 512;

    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn capacity(&self) -> usize {
        self.sender.policy.concurrency
    }

    fn claim_batch(&self) -> usize {
        self.sender.policy.concurrency
    }

    async fn adopt(
        &self,
        leased: Vec<std::convert::Infallible>,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        match leased.into_iter().next() {
            Some(never) => match never {},
            None => Ok(Vec::new()),
        }
    }

    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let now = now_micros();
        let policy = &self.sender.policy;
        self.store
            .claim_webhook_deliveries(DeliveryClaim {
                node: self.node.clone(),
                limit,
                now,
                lease_until: now.saturating_add(micros(policy.lease())),
                per_account: policy.per_account,
            })
            .await
    }

    async fn run(&self, d: ClaimedDelivery) -> AttemptResult {
        let result = self.sender.attempt(&d).await;
        observe(&self.metrics, &result);
        result
    }

    async fn record(&self, done: &[AttemptResult]) -> Result<(), StoreError> {
        self.store.finish_webhook_deliveries(done.to_vec()).await
    }
}

/// One expiry sweep as of `now`: records `expired` for codes that expired,
/// unverified, up to `expired_delay` before `now` (and not more than
/// `max_age` ago). Tests pass a `now` in the future to skip the wait for a
/// code's expiry.
pub async fn sweep_expired(
    store: &SharedStore,
    policy: &WebhookPolicy,
    now: Micros,
) -> Result<u64, StoreError> {
    store
        .sweep_expired(ExpirySweep {
            now,
            expired_until: now.saturating_sub(micros(policy.expired_delay)),
            longest_expiry: crate::codes::EXPIRY_RANGE.1 * 1_000_000,
            not_before: now.saturating_sub(micros(policy.max_age)),
        })
        .await
}

/// Sweeps every `sweep_interval` until `stop` is cancelled.
pub async fn sweep_loop(store: SharedStore, policy: WebhookPolicy, stop: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(policy.sweep_interval) => {}
        }
        match sweep_expired(&store, &policy, now_micros()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(events = n, "recorded expired webhook events"),
            Err(e) => tracing::warn!(error = %e, "the webhook expiry sweep failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otp_store::webhooks::{EventOtp, WebhookEvent};

    fn policy() -> WebhookPolicy {
        WebhookPolicy::from_config(&WebhooksConfig::default())
    }

    fn delivery(attempt: i64, created_at: Micros) -> ClaimedDelivery {
        ClaimedDelivery {
            id: 12,
            account_id: 1,
            event: WebhookEvent::Delivered,
            otp_status: "delivered".into(),
            occurred_at: 1_761_724_135_512_191,
            attempt,
            created_at,
            url: "http://127.0.0.1:9/".into(),
            secret: Some("whsec_x".into()),
            otp: EventOtp {
                id: 42,
                account_seq: 7,
                number: otp_domain::phone::E164::parse("+9779851023212").unwrap(),
                channel: otp_domain::channel::Channel::Text,
                created_at: 1_761_724_135_000_000,
                expires_at: 1_761_724_735_000_000,
                error_code: None,
            },
            balance: None,
        }
    }

    #[test]
    fn only_plain_absolute_http_urls_take_events() {
        assert!(check_url("https://app.example.com/hooks?token=abc", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
        let refused = check_url("http://127.0.0.1:8080/", false).unwrap_err();
        assert_eq!(refused.0, "address_not_allowed");
        assert!(
            refused
                .1
                .contains("127.0.0.1 is a special-purpose address (loopback)")
        );
        for bad in [
            "",
            "app.example.com/hooks",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://example.com/#x",
            "javascript:alert(1)",
        ] {
            assert_eq!(check_url(bad, true).unwrap_err().0, "invalid", "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(check_url(&long, false).is_err());
    }

    #[test]
    fn retry_waits_double_within_jitter_up_to_the_cap() {
        let p = policy();
        for (attempt, ceiling) in [(1, 5), (2, 10), (3, 20), (10, 2560), (11, 3600), (40, 3600)] {
            for _ in 0..50 {
                let d = p.retry_delay(attempt);
                let ceiling = Duration::from_secs(ceiling);
                assert!(d <= ceiling && d >= ceiling / 2, "{attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn a_failure_is_retried_until_the_event_is_a_day_old() {
        let p = policy();
        let day = 86_400 * 1_000_000;
        let created = 1_000 * day;
        let d = delivery(1, created);
        assert!(matches!(
            p.after_failure(&d, created + 1_000_000),
            AttemptOutcome::Retry { next_attempt_at } if next_attempt_at > created + 1_000_000
        ));
        assert_eq!(p.after_failure(&d, created + day), AttemptOutcome::GiveUp);
    }

    #[test]
    fn the_body_names_the_event_and_the_otp_in_the_configured_zone() {
        let tz: chrono_tz::Tz = "Asia/Kathmandu".parse().unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&event_body(&delivery(1, 0), &tz)).unwrap();
        assert_eq!(body["event_id"], "evt_12");
        assert_eq!(body["event"], "delivered");
        assert_eq!(body["otp_id"], 42);
        assert_eq!(body["account_seq"], 7);
        assert_eq!(body["number"], "9851023212");
        assert_eq!(body["occurred_at"], "2025-10-29T13:33:55.512191+05:45");
        assert!(body["error_code"].is_null());
        assert!(
            body.get("threshold").is_none(),
            "only low_balance has balances"
        );
    }

    #[test]
    fn a_low_balance_body_names_the_credits_the_threshold_and_the_balances() {
        let tz: chrono_tz::Tz = "Asia/Kathmandu".parse().unwrap();
        let mut d = delivery(1, 0);
        d.event = otp_store::webhooks::WebhookEvent::LowBalance;
        d.balance = Some(otp_store::webhooks::BalanceEvent {
            credits: otp_store::webhooks::Credits::Sms,
            threshold: 100,
            sms_credits: 99,
            phone_credits: 10,
        });
        let body: serde_json::Value = serde_json::from_slice(&event_body(&d, &tz)).unwrap();
        assert_eq!(body["event"], "low_balance");
        assert_eq!(body["credits"], "sms");
        assert_eq!(
            (
                &body["threshold"],
                &body["sms_credits"],
                &body["phone_credits"]
            ),
            (
                &serde_json::json!(100),
                &serde_json::json!(99),
                &serde_json::json!(10)
            )
        );
        assert_eq!(body["otp_id"], 42);
    }
}
