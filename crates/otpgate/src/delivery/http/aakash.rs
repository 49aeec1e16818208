//! Aakash SMS: `POST {base_url}/sms/v3/send` with the form fields `auth_token`,
//! `to` (the 10-digit national number) and `text`.
//!
//! Aakash answers `{"error": false, "message": "...", "data": {"valid": [{"id",
//! "mobile", "text", "credit", "network", "status"}], "invalid": [...]}}`: a number
//! it took is listed in `valid` (its `id` becomes the provider id), one it refused
//! in `invalid`. A refusal of the whole request comes as `"error": true` with a
//! sentence in `message`, which is all there is to classify it by. Outcomes:
//!
//! | answer | outcome | why |
//! |---|---|---|
//! | the number in `valid` | `Sent` | |
//! | the number in `invalid` only | `Failed` | the number will never be accepted |
//! | `error: true`, message about the token or authorization | `Retry` | the operator fixes the token |
//! | `error: true`, message about credit or balance | `Retry` | a top-up makes the next attempt work |
//! | `error: true`, message about the number / mobile / receiver | `Failed` | as `invalid` |
//! | `error: true`, any other message | `Retry` | unknown; the attempt limit bounds it |
//! | a 2xx we cannot read, or listing the number nowhere | `Retry` | Aakash reports refusals inside a 200, so an unreadable 200 proves nothing |
//! | no readable body: 408, 429, 5xx, 401, 403, 404, 3xx ... | `Retry` | transient or fixable (see [`super::unexplained_status`]) |
//! | no readable body: 400, 413, 414, 415, 422 | `Failed` | a malformed request stays malformed |
//! | connection failure, timeout | `Retry` | transient |
//!
//! Aakash's message is quoted in the error after [`super::scrub`]. A number outside
//! Nepal is `Failed` without a request: Aakash serves Nepali numbers only.

use serde::Deserialize;
use serde_json::Value;

use otp_store::ClaimedJob;

use super::{BuildError, Upstream, default_capacity, default_timeout_ms};
use crate::delivery::{DeliveryOutcome, Driver};
use otp_domain::secret::Secret;

/// How to reach Aakash SMS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AakashConfig {
    /// Where the API lives; the driver appends `/sms/v3/send`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The account's token (sent as the form field `auth_token`).
    pub token: Secret<String>,
    /// Total time for one request, in milliseconds (default 10,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests in flight at once (default 32).
    #[serde(default = "default_capacity")]
    pub capacity: usize,
}

fn default_base_url() -> String {
    "https://sms.aakashsms.com".to_owned()
}

impl AakashConfig {
    /// The configuration with every default, for this token.
    pub fn new(token: impl Into<String>) -> Self {
        AakashConfig {
            base_url: default_base_url(),
            token: Secret::new(token.into()),
            timeout_ms: default_timeout_ms(),
            capacity: default_capacity(),
        }
    }
}

/// Delivers text OTPs through Aakash SMS.
pub struct AakashDriver {
    upstream: Upstream,
    endpoint: reqwest::Url,
    token: Secret<String>,
}

impl AakashDriver {
    pub fn new(config: AakashConfig) -> Result<Self, BuildError> {
        let endpoint = super::endpoint(&config.base_url, "sms/v3/send")?;
        if config.token.expose().is_empty() {
            return Err(BuildError::invalid("token", "may not be empty"));
        }
        Ok(AakashDriver {
            upstream: Upstream::new(config.timeout_ms, config.capacity)?,
            endpoint,
            token: config.token,
        })
    }
}

#[async_trait::async_trait]
impl Driver for AakashDriver {
    fn name(&self) -> &'static str {
        "aakash"
    }

    fn capacity(&self) -> usize {
        self.upstream.capacity
    }

    async fn deliver(&self, job: &ClaimedJob) -> DeliveryOutcome {
        let otp = &job.otp;
        let message = otp.message();
        let Some(to) = super::nepali_national(otp.number.as_str()) else {
            return DeliveryOutcome::Failed {
                error: "Aakash SMS delivers to Nepali numbers only".to_owned(),
            };
        };
        let form = [
            ("auth_token", self.token.expose().as_str()),
            ("to", to),
            ("text", message.as_str()),
        ];
        let request = self.upstream.client.post(self.endpoint.clone()).form(&form);
        match self.upstream.send(request).await {
            Ok(reply) => {
                let secrets = [self.token.expose().as_str(), &message, otp.code.shown()];
                outcome(reply.status, &reply.body, &secrets)
            }
            Err(outcome) => outcome,
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    error: bool,
    message: Option<Value>,
    data: Option<Lists>,
}

#[derive(Deserialize)]
struct Lists {
    #[serde(default)]
    valid: Vec<Value>,
    #[serde(default)]
    invalid: Vec<Value>,
}

/// Maps Aakash's answer (status and body) to an outcome; see the module table.
/// `secrets` (the token, the message, the code) are removed from any text quoted.
pub fn outcome(status: u16, body: &[u8], secrets: &[&str]) -> DeliveryOutcome {
    if super::is_transient(status) {
        return DeliveryOutcome::Retry {
            error: format!("upstream answered {status}"),
        };
    }
    let Ok(answer) = serde_json::from_slice::<Answer>(body) else {
        return if super::is_success(status) {
            DeliveryOutcome::Retry {
                error: format!("upstream answered {status} with a reply that could not be read"),
            }
        } else {
            super::unexplained_status(status)
        };
    };
    let said = match &answer.message {
        Some(Value::String(s)) => super::scrub(s, secrets),
        Some(other) => super::scrub(&other.to_string(), secrets),
        None => String::new(),
    };
    if answer.error {
        return refusal(status, &said);
    }
    match answer.data {
        Some(lists) if !lists.valid.is_empty() => DeliveryOutcome::Sent {
            provider_message_id: lists.valid[0].get("id").and_then(super::id_text),
        },
        Some(lists) if !lists.invalid.is_empty() => DeliveryOutcome::Failed {
            error: format!("upstream listed the number as invalid ({status})"),
        },
        _ if super::is_success(status) => DeliveryOutcome::Retry {
            error: format!(
                "upstream answered {status} but listed the number neither valid nor invalid"
            ),
        },
        _ => super::unexplained_status(status),
    }
}

/// An `"error": true` answer, classified by its message.
fn refusal(status: u16, said: &str) -> DeliveryOutcome {
    let lower = said.to_lowercase();
    let about = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let error = format!("upstream refused the message ({status}: {said})");
    // The account's problems first: "invalid auth token" is not about the number.
    let operator_can_fix = about(&["token", "auth", "unauthori", "api key", "credit", "balance"]);
    if !operator_can_fix && about(&["number", "mobile", "receiver", "recipient"]) {
        DeliveryOutcome::Failed { error }
    } else {
        DeliveryOutcome::Retry { error }
    }
}
