//! HTTP delivery drivers: SMS vendors and relays reached with one request per message.
//!
//! - [`sparrow`]: Sparrow SMS, `POST /v2/sms/` with a form.
//! - [`aakash`]: Aakash SMS, `POST /sms/v3/send` with a form.
//! - [`generic`]: any HTTP API, described in configuration by a URL, headers and a
//!   body template.
//! - [`tingting`]: another TingTing-compatible API (the hosted service, or another
//!   otpgate), reached with its own key.
//!
//! Each driver is built from its `...Config` (serde, unknown keys refused, every
//! field but the credentials defaulted) and holds one `reqwest::Client`, so
//! connections are pooled and reused across deliveries. What they share lives here:
//!
//! - **A total timeout per request** (`timeout_ms`, default 10 s), covering connect,
//!   request and reply.
//! - **No redirects.** Following one would send the credentials to another host and
//!   turn a POST into a GET; a 3xx is reported as a transient failure so the
//!   operator fixes the URL.
//! - **Replies read up to 64 KiB**; a vendor's reply is a few hundred bytes.
//! - **Transient means retry:** a connection failure, a timeout, 408, 429 and any
//!   5xx are [`DeliveryOutcome::Retry`]; the dispatcher backs off and gives up after
//!   its attempt limit. Delivery is at least once: when a request times out after
//!   the vendor took the message, the retry sends it again (none of these APIs
//!   takes an idempotency key).
//! - **What the operator can fix is retried too:** a refused token, an unknown
//!   sender id or an empty upstream balance is `Retry`, because the code is still
//!   useful for minutes and a top-up or a key change makes the next attempt work.
//!   Only what no configuration change can fix (the number itself is refused, the
//!   request is malformed) is [`DeliveryOutcome::Failed`], which stops retries and
//!   lets the OTP be refunded. Each module lists its own mapping.
//! - **No secrets in errors.** An outcome's error is stored with the OTP and shown
//!   to the account, so it never carries the vendor token, the code or the message
//!   text: transport errors are described without their URL (a GET template may
//!   carry the text or a key), and text copied from a vendor reply passes through
//!   [`scrub`] first.

pub mod aakash;
pub mod generic;
pub mod sparrow;
pub mod tingting;

use std::time::Duration;

use crate::delivery::DeliveryOutcome;

/// Default total time for one request, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default number of requests in flight per driver.
pub const DEFAULT_CAPACITY: usize = 32;
/// The most of a reply body that is read.
const MAX_REPLY_BYTES: usize = 64 * 1024;
/// The most characters of vendor text kept in an error.
const MAX_QUOTED_CHARS: usize = 160;

pub(crate) fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

pub(crate) fn default_capacity() -> usize {
    DEFAULT_CAPACITY
}

/// Why a driver could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A configuration field has a value the driver cannot use.
    #[error("{field}: {reason}")]
    Invalid {
        /// The configuration key at fault.
        field: &'static str,
        /// What is wrong with it (never the value itself, which may be a secret).
        reason: String,
    },
    /// The HTTP client could not be set up (TLS roots, resolver).
    #[error("building the HTTP client failed")]
    Client(#[source] reqwest::Error),
}

impl BuildError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        BuildError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// The connection settings every HTTP driver shares.
pub(crate) struct Upstream {
    pub client: reqwest::Client,
    pub timeout: Duration,
    pub capacity: usize,
}

impl Upstream {
    pub fn new(timeout_ms: u64, capacity: usize) -> Result<Self, BuildError> {
        if timeout_ms == 0 {
            return Err(BuildError::invalid("timeout_ms", "must be at least 1"));
        }
        if capacity == 0 {
            return Err(BuildError::invalid("capacity", "must be at least 1"));
        }
        let timeout = Duration::from_millis(timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(capacity)
            .user_agent(concat!("otpgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BuildError::Client)?;
        Ok(Upstream {
            client,
            timeout,
            capacity,
        })
    }

    /// Sends the request and reads the reply. A failure before a status arrived
    /// is the `Retry` to return; a body cut short (by the timeout or the size
    /// limit) is returned as far as it was read, and each vendor decides what an
    /// unreadable body means.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply, DeliveryOutcome> {
        let mut response = request.send().await.map_err(|e| DeliveryOutcome::Retry {
            error: describe_transport(&e, self.timeout),
        })?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = MAX_REPLY_BYTES - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() == MAX_REPLY_BYTES {
                break;
            }
        }
        Ok(Reply { status, body })
    }
}

/// What the upstream answered.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A transport failure in words, without the URL (which may carry the message
/// text or a key in a query string).
fn describe_transport(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!(
            "no reply from the upstream within {} ms",
            timeout.as_millis()
        );
    }
    // The innermost cause ("Connection refused (os error 111)"); reqwest's own
    // message is left out because it names the URL.
    let mut cause = None;
    let mut next = std::error::Error::source(e);
    while let Some(inner) = next {
        cause = Some(inner);
        next = inner.source();
    }
    let cause = cause.map_or_else(|| "unknown cause".to_owned(), ToString::to_string);
    if e.is_connect() {
        format!("could not connect to the upstream: {cause}")
    } else {
        format!("the request to the upstream failed: {cause}")
    }
}

/// True for the statuses that say "not now": 408, 429 and every 5xx.
pub fn is_transient(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// True for 2xx.
pub fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The outcome of a status the vendor's own codes did not explain: a malformed
/// request (400, 413, 414, 415, 422) will never succeed; anything else (an auth
/// failure, a wrong URL, a redirect, an outage) is something an operator or time
/// can fix.
pub fn unexplained_status(status: u16) -> DeliveryOutcome {
    match status {
        400 | 413 | 414 | 415 | 422 => DeliveryOutcome::Failed {
            error: format!("upstream rejected the request ({status})"),
        },
        _ => DeliveryOutcome::Retry {
            error: format!("upstream answered {status}"),
        },
    }
}

/// Makes vendor text safe to store in an error: every secret (token, code,
/// message text) replaced by `[redacted]`, control characters turned into spaces,
/// and the result cut to 160 characters.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    // The longest first, so a message is removed whole before the code inside it.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut clean = text.to_owned();
    for secret in secrets {
        clean = clean.replace(secret, "[redacted]");
    }
    let mut out: String = clean
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_QUOTED_CHARS)
        .collect();
    if clean.chars().count() > MAX_QUOTED_CHARS {
        out.push('…');
    }
    out.trim().to_owned()
}

/// `base` joined with `path`, whether or not `base` ends with a slash.
pub(crate) fn endpoint(base: &str, path: &str) -> Result<reqwest::Url, BuildError> {
    let url = format!("{}/{path}", base.trim_end_matches('/'));
    let url = reqwest::Url::parse(&url)
        .map_err(|e| BuildError::invalid("base_url", format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BuildError::invalid(
            "base_url",
            "must be http:// or https://",
        ));
    }
    Ok(url)
}

/// A JSON value used as an id: a string as is, a number as its decimal text.
pub(crate) fn id_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The 10-digit national number of a Nepali E.164 number, `None` for any other
/// country. The Nepali vendors take only these.
pub(crate) fn nepali_national(e164: &str) -> Option<&str> {
    e164.strip_prefix("+977")
        .filter(|n| n.len() == 10 && n.bytes().all(|b| b.is_ascii_digit()))
}
