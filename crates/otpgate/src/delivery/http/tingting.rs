//! The `tingting` relay: hands each OTP to an upstream TingTing-compatible API
//! (the hosted service, or another otpgate) with the upstream's own key, so this
//! gateway can front it.
//!
//! `POST {base_url}/auths/send/otp/` with `Authorization: Bearer {token}` and a JSON
//! body. The message here is already rendered and the upstream insists on a
//! template with `{otp}` in it, so the relay sends the stored template and the code
//! as a `personnel` code: the upstream renders exactly the text this gateway
//! rendered and charged for. A voice OTP goes as `sms_send_options: "voice"` with its
//! `voice_input` and `length_factor`. The upstream shows every relayed OTP as
//! `personnel`, whoever chose the code here; `company_name` is not forwarded.
//!
//! | answer | outcome | why |
//! |---|---|---|
//! | 200 | `Sent`, with `data.details.id` as the provider id | the upstream committed it |
//! | 401, 403 | `Retry` | the operator fixes the key |
//! | 402 | `Retry` | a top-up upstream makes the next attempt work |
//! | 400 | `Failed`, naming the fields the upstream refused | the same request will be refused again (an invalid number, most often) |
//! | 408, 429, 5xx | `Retry` | transient |
//! | other statuses | as [`super::unexplained_status`] | |
//! | connection failure, timeout | `Retry` | transient; a timeout after the upstream committed sends the code twice |

use serde::Deserialize;
use serde_json::{Value, json};

use otp_domain::channel::Channel;
use otp_store::ClaimedJob;

use super::{BuildError, Upstream, default_capacity, default_timeout_ms};
use crate::delivery::{DeliveryOutcome, Driver};
use otp_domain::secret::Secret;

/// How to reach the upstream TingTing-compatible API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TingTingConfig {
    /// The API root, up to and including `/api/v1` (default
    /// `https://app.tingting.io/api/v1`); the driver appends `/auths/send/otp/`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The upstream account's API key, sent as a bearer token.
    pub token: Secret<String>,
    /// Total time for one request, in milliseconds (default 10,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests in flight at once (default 32).
    #[serde(default = "default_capacity")]
    pub capacity: usize,
}

fn default_base_url() -> String {
    "https://app.tingting.io/api/v1".to_owned()
}

impl TingTingConfig {
    /// The configuration with every default, for this key.
    pub fn new(token: impl Into<String>) -> Self {
        TingTingConfig {
            base_url: default_base_url(),
            token: Secret::new(token.into()),
            timeout_ms: default_timeout_ms(),
            capacity: default_capacity(),
        }
    }
}

/// Relays OTPs of either channel to an upstream TingTing-compatible API.
pub struct TingTingDriver {
    upstream: Upstream,
    endpoint: reqwest::Url,
    token: Secret<String>,
}

impl TingTingDriver {
    pub fn new(config: TingTingConfig) -> Result<Self, BuildError> {
        let endpoint = super::endpoint(&config.base_url, "auths/send/otp/")?;
        if config.token.expose().is_empty() {
            return Err(BuildError::invalid("token", "may not be empty"));
        }
        Ok(TingTingDriver {
            upstream: Upstream::new(config.timeout_ms, config.capacity)?,
            endpoint,
            token: config.token,
        })
    }
}

/// The send request that makes the upstream deliver `job` as it is.
pub fn request_body(job: &ClaimedJob) -> Value {
    let otp = &job.otp;
    let mut body = json!({
        "number": otp.number.display(),
        "message": otp.template.as_str(),
        "sms_send_options": otp.channel.as_str(),
        "otp_options": "personnel",
        "otp": otp.code.shown(),
    });
    if otp.channel == Channel::Voice {
        if let Some(voice) = otp.voice {
            body["voice_input"] = json!(voice.as_str());
        }
        body["length_factor"] = json!(otp.length_factor.unwrap_or(1.0));
    }
    body
}

#[async_trait::async_trait]
impl Driver for TingTingDriver {
    fn name(&self) -> &'static str {
        "tingting"
    }

    fn capacity(&self) -> usize {
        self.upstream.capacity
    }

    async fn deliver(&self, job: &ClaimedJob) -> DeliveryOutcome {
        let request = self
            .upstream
            .client
            .post(self.endpoint.clone())
            .bearer_auth(self.token.expose())
            .json(&request_body(job));
        let reply = match self.upstream.send(request).await {
            Ok(reply) => reply,
            Err(outcome) => return outcome,
        };
        let message = job.otp.message();
        if super::is_success(reply.status) {
            let rendered = serde_json::from_slice::<Value>(&reply.body)
                .ok()
                .and_then(|v| v.pointer("/data/details/message").cloned());
            if rendered
                .as_ref()
                .and_then(Value::as_str)
                .is_some_and(|m| m != message)
            {
                // The recipient gets a text that differs from the one charged for
                // here; worth a look, though the code itself did go out.
                tracing::warn!(
                    otp_id = job.otp.id,
                    "the upstream rendered a different message"
                );
            }
        }
        outcome(
            reply.status,
            &reply.body,
            &[self.token.expose(), &message, job.otp.code.shown()],
        )
    }
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    errors: Vec<FieldError>,
}

#[derive(Deserialize)]
struct FieldError {
    field: Option<String>,
    code: Option<String>,
}

/// Maps the upstream's answer to an outcome; see the module table. `secrets`
/// (the key, the message, the code) are removed from any text quoted.
pub fn outcome(status: u16, body: &[u8], secrets: &[&str]) -> DeliveryOutcome {
    match status {
        s if super::is_success(s) => DeliveryOutcome::Sent {
            provider_message_id: serde_json::from_slice::<Value>(body)
                .ok()
                .as_ref()
                .and_then(|v| v.pointer("/data/details/id"))
                .and_then(super::id_text),
        },
        401 | 403 => DeliveryOutcome::Retry {
            error: format!("upstream refused the API key ({status})"),
        },
        402 => DeliveryOutcome::Retry {
            error: "upstream account has insufficient credits (402)".to_owned(),
        },
        400 => {
            // Field names and codes only: the upstream's sentences are for people
            // and could quote what was sent.
            let fields: Vec<String> = serde_json::from_slice::<Refusal>(body)
                .map(|r| r.errors)
                .unwrap_or_default()
                .into_iter()
                .map(|e| {
                    let field = e.field.unwrap_or_else(|| "request".to_owned());
                    match e.code {
                        Some(code) => format!("{field} {code}"),
                        None => field,
                    }
                })
                .map(|s| super::scrub(&s, secrets))
                .collect();
            let error = if fields.is_empty() {
                "upstream rejected the OTP (400)".to_owned()
            } else {
                format!("upstream rejected the OTP (400: {})", fields.join(", "))
            };
            DeliveryOutcome::Failed { error }
        }
        s if super::is_transient(s) => DeliveryOutcome::Retry {
            error: format!("upstream answered {s}"),
        },
        s => super::unexplained_status(s),
    }
}
