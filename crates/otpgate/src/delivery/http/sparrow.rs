//! Sparrow SMS: `POST {base_url}/v2/sms/` with the form fields `token`, `from`,
//! `to` and `text`, `to` being the 10-digit national number.
//!
//! Sparrow answers `200 {"count", "response_code": 200, "response", ...}` when it
//! queued the message (a `message_id`, when present, becomes the provider id) and
//! `403 {"response_code": N, "response": "..."}` when it refused it. Outcomes:
//!
//! | answer | outcome | why |
//! |---|---|---|
//! | 200 (code 200, or a body we cannot read) | `Sent` | 200 is Sparrow's "queued"; retrying an unreadable 200 would send the code twice |
//! | code 1002, invalid token | `Retry` | the operator fixes the token; the code is still useful |
//! | code 1007, invalid receiver | `Failed` | the number will never be accepted |
//! | code 1008, invalid sender | `Retry` | the sender id is configuration the operator fixes |
//! | code 1011, no valid receiver | `Failed` | as 1007 |
//! | code 1012 / 1013, no or insufficient credits | `Retry` | a top-up makes the next attempt work |
//! | any other code | `Retry` | undocumented: likely about the account; the attempt limit bounds it |
//! | no code: 408, 429, 5xx, 401, 403, 404, 3xx ... | `Retry` | transient or fixable (see [`super::unexplained_status`]) |
//! | no code: 400, 413, 414, 415, 422 | `Failed` | a malformed request stays malformed |
//! | connection failure, timeout | `Retry` | transient |
//!
//! A number outside Nepal is `Failed` without a request: Sparrow serves Nepali
//! numbers only.

use serde::Deserialize;
use serde_json::Value;

use otp_domain::sender::SenderId;
use otp_store::ClaimedJob;

use super::{BuildError, Upstream, default_capacity, default_timeout_ms};
use crate::delivery::{DeliveryOutcome, Driver};
use otp_domain::secret::Secret;

/// How to reach Sparrow SMS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparrowConfig {
    /// Where the API lives; the driver appends `/v2/sms/`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The account's API token (sent as the form field `token`).
    pub token: Secret<String>,
    /// The sender identity Sparrow assigned to the account (the form field `from`).
    pub sender: String,
    /// Total time for one request, in milliseconds (default 10,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests in flight at once (default 32).
    #[serde(default = "default_capacity")]
    pub capacity: usize,
}

fn default_base_url() -> String {
    "https://api.sparrowsms.com".to_owned()
}

impl SparrowConfig {
    /// The configuration with every default, for this token and sender.
    pub fn new(token: impl Into<String>, sender: impl Into<String>) -> Self {
        SparrowConfig {
            base_url: default_base_url(),
            token: Secret::new(token.into()),
            sender: sender.into(),
            timeout_ms: default_timeout_ms(),
            capacity: default_capacity(),
        }
    }
}

/// Delivers text OTPs through Sparrow SMS.
pub struct SparrowDriver {
    upstream: Upstream,
    endpoint: reqwest::Url,
    token: Secret<String>,
    sender: String,
}

impl SparrowDriver {
    pub fn new(config: SparrowConfig) -> Result<Self, BuildError> {
        let endpoint = super::endpoint(&config.base_url, "v2/sms/")?;
        if config.token.expose().is_empty() {
            return Err(BuildError::invalid("token", "may not be empty"));
        }
        if config.sender.trim().is_empty() {
            return Err(BuildError::invalid("sender", "may not be empty"));
        }
        Ok(SparrowDriver {
            upstream: Upstream::new(config.timeout_ms, config.capacity)?,
            endpoint,
            token: config.token,
            sender: config.sender,
        })
    }
}

#[async_trait::async_trait]
impl Driver for SparrowDriver {
    fn name(&self) -> &'static str {
        "sparrow"
    }

    fn capacity(&self) -> usize {
        self.upstream.capacity
    }

    fn takes_sender(&self) -> bool {
        true
    }

    async fn deliver(&self, job: &ClaimedJob) -> DeliveryOutcome {
        self.deliver_as(job, None).await
    }

    async fn deliver_as(&self, job: &ClaimedJob, sender: Option<&SenderId>) -> DeliveryOutcome {
        let otp = &job.otp;
        let message = otp.message();
        let Some(to) = super::nepali_national(otp.number.as_str()) else {
            return DeliveryOutcome::Failed {
                error: "Sparrow SMS delivers to Nepali numbers only".to_owned(),
            };
        };
        let form = [
            ("token", self.token.expose().as_str()),
            (
                "from",
                sender.map_or(self.sender.as_str(), SenderId::as_str),
            ),
            ("to", to),
            ("text", message.as_str()),
        ];
        let request = self.upstream.client.post(self.endpoint.clone()).form(&form);
        match self.upstream.send(request).await {
            Ok(reply) => outcome(reply.status, &reply.body),
            Err(outcome) => outcome,
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    response_code: Option<Value>,
    message_id: Option<Value>,
}

/// Maps Sparrow's answer (status and body) to an outcome; see the module table.
pub fn outcome(status: u16, body: &[u8]) -> DeliveryOutcome {
    if super::is_transient(status) {
        return DeliveryOutcome::Retry {
            error: format!("upstream answered {status}"),
        };
    }
    let answer = serde_json::from_slice::<Answer>(body).ok();
    let code = answer
        .as_ref()
        .and_then(|a| a.response_code.as_ref())
        .and_then(|c| match c {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
    match (super::is_success(status), code) {
        (true, None | Some(200)) => DeliveryOutcome::Sent {
            provider_message_id: answer
                .and_then(|a| a.message_id)
                .as_ref()
                .and_then(super::id_text),
        },
        (_, Some(code)) => refusal(status, code),
        (false, None) => super::unexplained_status(status),
    }
}

fn refusal(status: u16, code: u64) -> DeliveryOutcome {
    let (permanent, what) = match code {
        1002 => (false, "invalid token"),
        1007 => (true, "invalid receiver"),
        1008 => (false, "invalid sender"),
        1011 => (true, "no valid receiver"),
        1012 => (false, "no credits"),
        1013 => (false, "insufficient credits"),
        _ => (false, "undocumented refusal"),
    };
    let error = format!("upstream answered {status} (code {code}: {what})");
    if permanent {
        DeliveryOutcome::Failed { error }
    } else {
        DeliveryOutcome::Retry { error }
    }
}
