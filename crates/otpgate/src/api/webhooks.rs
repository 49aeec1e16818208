//! The account's webhook, with its API key:
//!
//! - `GET /api/v1/auths/webhook/`: the URL and the signing secret;
//! - `PUT /api/v1/auths/webhook/` with `{url, rotate_secret,
//!   low_balance_sms_credits, low_balance_phone_credits}`: sets the URL. The
//!   first time, the server makes the account's secret; later it is kept
//!   unless `rotate_secret` is true. The thresholds of `low_balance` events
//!   are kept when not given, back to the configured ones when null;
//! - `DELETE /api/v1/auths/webhook/`: no more events; pending ones are cancelled;
//! - `GET /api/v1/auths/webhook/deliveries/`: the account's events, newest
//!   first, with every attempt (time, status code or error, duration).
//!
//! The secret can be read again by whoever holds one of the account's keys:
//! a key can already send OTPs in the account's name, and a receiver being
//! set up needs the secret more than once. Everything here is the caller's
//! account only.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use otp_store::now_micros;
use otp_store::webhooks::{DeliveryQuery, SetWebhook, Webhook, WebhookDelivery};

use super::envelope::{Envelope, NoData};
use super::error::{ApiError, FieldError};
use super::extract::Fields;
use super::fields::{Raw, required_text};
use super::list::rfc3339;
use crate::auth::Caller;
use crate::state::AppState;
use crate::webhooks::{EVENT_ID_PREFIX, check_url};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/auths/webhook/",
            get(get_webhook).put(set_webhook).delete(delete_webhook),
        )
        .route(
            "/api/v1/auths/webhook",
            get(get_webhook).put(set_webhook).delete(delete_webhook),
        )
        .route("/api/v1/auths/webhook/deliveries/", get(list_deliveries))
        .route("/api/v1/auths/webhook/deliveries", get(list_deliveries))
}

/// The request body of `PUT` (JSON or form).
#[derive(Deserialize, ToSchema)]
pub struct SetWebhookRequest {
    /// Where events are POSTed: an absolute `http` or `https` URL, at most
    /// 2048 characters, without a user name, password or `#fragment`.
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "https://app.example.com/otpgate/events")]
    url: Raw,
    /// Make a new signing secret (the old one stops working at once).
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    rotate_secret: Raw,
    /// A `low_balance` event is sent when a send takes the SMS credits below
    /// this (0: never; null: the configured `webhooks.low_balance_sms_credits`;
    /// not given: unchanged). 0 to 1000000000.
    #[serde(default)]
    #[schema(value_type = Option<i64>, example = 500)]
    low_balance_sms_credits: Raw,
    /// The same for phone credits (`webhooks.low_balance_phone_credits`).
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    low_balance_phone_credits: Raw,
}

/// The largest `low_balance` threshold accepted.
const MAX_THRESHOLD: i64 = 1_000_000_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookData {
    pub url: String,
    /// The signing secret (`whsec_...`); null when it cannot be read because
    /// the encryption key it was kept under is no longer configured: rotate it.
    pub secret: Option<String>,
    /// The SMS balance below which a send causes a `low_balance` event: the
    /// account's own or the configured one (0: never).
    pub low_balance_sms_credits: i64,
    /// The same for phone credits.
    pub low_balance_phone_credits: i64,
    /// RFC 3339 in the configured zone.
    pub created_at: String,
    pub updated_at: String,
}

/// One attempt at a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptItem {
    /// 1 for the first attempt.
    pub attempt: i64,
    /// When it started.
    pub at: String,
    pub duration_ms: f64,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<i64>,
    /// What went wrong, when something did (`the receiver answered 500`,
    /// `could not connect: ...`, `no answer within 10000 ms`).
    pub error: Option<String>,
}

/// One event for the account's webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryItem {
    /// `evt_<n>`, as in the `X-Otpgate-Event-Id` header and the body.
    pub event_id: String,
    /// `sent`, `delivered`, `failed`, `verified`, `expired`, `max_attempts`,
    /// `low_balance` or `fallback_started`.
    pub event: String,
    pub otp_id: i64,
    /// The OTP's status right after the event.
    pub status: String,
    pub occurred_at: String,
    /// `pending` (a next attempt is due at `next_attempt_at`), `delivered`,
    /// `failed` (given up) or `cancelled` (the webhook was removed).
    pub state: String,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// Oldest first.
    pub attempts: Vec<AttemptItem>,
}

/// A page of deliveries: the envelope, and where the next page starts.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveriesResponse {
    #[serde(flatten)]
    pub envelope: Envelope<Vec<DeliveryItem>>,
    /// The `before` value for the next (older) page; null on the last page.
    pub next_before: Option<String>,
}

fn no_webhook() -> ApiError {
    ApiError::refusal(
        StatusCode::NOT_FOUND,
        FieldError::new("url", "not_set", "No webhook URL is set for this account."),
        None,
    )
}

fn reply(w: Webhook, message: &str, state: &AppState) -> Json<Envelope<WebhookData>> {
    let thresholds = state
        .config
        .webhooks
        .low_balance_thresholds()
        .with_overrides(w.low_balance_sms_credits, w.low_balance_phone_credits);
    Json(Envelope::ok(
        message,
        WebhookData {
            url: w.url,
            secret: w.secret,
            low_balance_sms_credits: thresholds.sms,
            low_balance_phone_credits: thresholds.phone,
            created_at: rfc3339(w.created_at, &state.tz),
            updated_at: rfc3339(w.updated_at, &state.tz),
        },
    ))
}

/// The account's webhook and signing secret.
#[utoipa::path(
    get,
    path = "/api/v1/auths/webhook/",
    tag = "webhooks",
    responses(
        (status = 200, description = "The webhook", body = Envelope<WebhookData>),
        (status = 401, description = "Missing, invalid or revoked key", body = super::error::ErrorEnvelope),
        (status = 404, description = "No webhook is set (`not_set`)", body = super::error::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Envelope<WebhookData>>, ApiError> {
    let w = state
        .store
        .webhook(caller.account_id)
        .await?
        .ok_or_else(no_webhook)?;
    Ok(reply(w, "Webhook.", &state))
}

/// Set the account's webhook URL (and make or rotate its signing secret).
#[utoipa::path(
    put,
    path = "/api/v1/auths/webhook/",
    tag = "webhooks",
    request_body(content = SetWebhookRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Set; `data.secret` signs every event", body = Envelope<WebhookData>),
        (status = 400, description = "Invalid request; nothing changed (`url`: `required`, `blank`, `invalid_type`, `invalid`, or `address_not_allowed` for a special-purpose address such as 10.0.0.1 or [::1] unless `webhooks.allow_private_addresses`; `low_balance_*_credits`: `invalid`)", body = super::error::ErrorEnvelope),
        (status = 401, description = "Missing, invalid or revoked key", body = super::error::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn set_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Fields(req): Fields<SetWebhookRequest>,
) -> Result<Json<Envelope<WebhookData>>, ApiError> {
    let set = validate(&req, state.config.webhooks.allow_private_addresses)
        .map_err(ApiError::validation)?;
    let w = state
        .store
        .set_webhook(SetWebhook {
            account_id: caller.account_id,
            url: set.url,
            new_secret: otp_domain::webhook::generate_secret(),
            rotate: set.rotate,
            low_balance_sms_credits: set.low_balance_sms,
            low_balance_phone_credits: set.low_balance_phone,
            now: now_micros(),
        })
        .await?;
    Ok(reply(w, "Webhook set.", &state))
}

/// Remove the account's webhook; events not yet delivered are cancelled.
#[utoipa::path(
    delete,
    path = "/api/v1/auths/webhook/",
    tag = "webhooks",
    responses(
        (status = 200, description = "Removed", body = Envelope<NoData>),
        (status = 401, description = "Missing, invalid or revoked key", body = super::error::ErrorEnvelope),
        (status = 404, description = "No webhook was set (`not_set`)", body = super::error::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Envelope<NoData>>, ApiError> {
    if !state
        .store
        .delete_webhook(caller.account_id, now_micros())
        .await?
    {
        return Err(no_webhook());
    }
    Ok(Json(Envelope::ok(
        "Webhook removed; pending events were cancelled.",
        NoData,
    )))
}

/// The account's webhook events, newest first, with their attempts.
#[utoipa::path(
    get,
    path = "/api/v1/auths/webhook/deliveries/",
    tag = "webhooks",
    params(
        ("limit" = Option<u32>, Query, description = "Items per page (default 20, at most `api.max_page_size`)"),
        ("before" = Option<String>, Query, description = "Only events older than this event id (`next_before` of the previous page)"),
    ),
    responses(
        (status = 200, description = "A page", body = DeliveriesResponse),
        (status = 400, description = "Invalid query", body = super::error::ErrorEnvelope),
        (status = 401, description = "Missing, invalid or revoked key", body = super::error::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<DeliveriesResponse>, ApiError> {
    let max = state.config.api.max_page_size.max(1);
    let mut errors = Vec::new();
    let limit = match params.get("limit").map(|s| s.trim()) {
        None | Some("") => state.config.api.default_page_size.clamp(1, max),
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    "invalid",
                    format!("limit must be a whole number from 1 to {max}."),
                ));
                1
            }
        },
    };
    let before_id = match params.get("before").map(|s| s.trim()) {
        None | Some("") => None,
        Some(raw) => match event_number(raw) {
            Some(n) => Some(n),
            None => {
                errors.push(FieldError::new(
                    "before",
                    "invalid",
                    "before must be an event id (evt_<number>).",
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let list = state
        .store
        .webhook_deliveries(DeliveryQuery {
            account_id: caller.account_id,
            limit,
            before_id,
        })
        .await?;
    let next_before = (list.len() as u32 == limit)
        .then(|| list.last().map(|d| format!("{EVENT_ID_PREFIX}{}", d.id)))
        .flatten();
    Ok(Json(DeliveriesResponse {
        envelope: Envelope::data(list.into_iter().map(|d| item(d, &state)).collect()),
        next_before,
    }))
}

/// The number in `evt_<n>` (a bare number is taken too).
fn event_number(raw: &str) -> Option<i64> {
    raw.strip_prefix(EVENT_ID_PREFIX)
        .unwrap_or(raw)
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
}

fn item(d: WebhookDelivery, state: &AppState) -> DeliveryItem {
    let tz = &state.tz;
    DeliveryItem {
        event_id: format!("{EVENT_ID_PREFIX}{}", d.id),
        event: d.event.as_str().to_owned(),
        otp_id: d.otp_id,
        status: d.otp_status,
        occurred_at: rfc3339(d.occurred_at, tz),
        state: d.state.as_str().to_owned(),
        next_attempt_at: d.next_attempt_at.map(|t| rfc3339(t, tz)),
        created_at: rfc3339(d.created_at, tz),
        finished_at: d.finished_at.map(|t| rfc3339(t, tz)),
        attempts: d
            .attempts
            .into_iter()
            .map(|a| AttemptItem {
                attempt: a.attempt,
                at: rfc3339(a.at, tz),
                duration_ms: a.duration_us as f64 / 1000.0,
                status_code: a.status_code,
                error: a.error,
            })
            .collect(),
    }
}

/// A valid `PUT` body.
struct Valid {
    url: String,
    rotate: bool,
    low_balance_sms: Option<Option<i64>>,
    low_balance_phone: Option<Option<i64>>,
}

/// A `low_balance` threshold: `None` when not given (kept), `Some(None)` when
/// null (the configured one), else the number.
fn threshold(value: &Raw, name: &str, errors: &mut Vec<FieldError>) -> Option<Option<i64>> {
    let value = value.sent()?;
    let n = match value {
        Value::Null => return Some(None),
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n.filter(|n| (0..=MAX_THRESHOLD).contains(n)) {
        Some(n) => Some(Some(n)),
        None => {
            errors.push(FieldError::new(
                name,
                "invalid",
                format!(
                    "{name} must be a whole number from 0 to {MAX_THRESHOLD} (0: never), \
                     or null for the configured default."
                ),
            ));
            None
        }
    }
}

fn validate(
    req: &SetWebhookRequest,
    allow_private_addresses: bool,
) -> Result<Valid, Vec<FieldError>> {
    let mut errors = Vec::new();
    let url = required_text(&req.url, "url", &mut errors).and_then(|raw| {
        let raw = raw.trim();
        match check_url(raw, allow_private_addresses) {
            Ok(()) => Some(raw.to_owned()),
            Err((code, why)) => {
                errors.push(FieldError::new("url", code, why));
                None
            }
        }
    });
    let rotate = match req.rotate_secret.given() {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
        Some(_) => {
            errors.push(FieldError::new(
                "rotate_secret",
                "invalid_type",
                "rotate_secret must be true or false.",
            ));
            false
        }
    };
    let low_balance_sms = threshold(
        &req.low_balance_sms_credits,
        "low_balance_sms_credits",
        &mut errors,
    );
    let low_balance_phone = threshold(
        &req.low_balance_phone_credits,
        "low_balance_phone_credits",
        &mut errors,
    );
    match url {
        Some(url) if errors.is_empty() => Ok(Valid {
            url,
            rotate,
            low_balance_sms,
            low_balance_phone,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_read_back() {
        assert_eq!(event_number("evt_12"), Some(12));
        assert_eq!(event_number("12"), Some(12));
        assert_eq!(event_number("evt_0"), None);
        assert_eq!(event_number("evt_x"), None);
    }
}
