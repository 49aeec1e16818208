//! An account's default fallback call (see `otp_store::fallback`), with the
//! admin token, and the three fallback fields as a send and the default both
//! read them ([`fallback_fields`]).
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/admin/v1/accounts/{id}/fallback/` | the default |
//! | PUT | `/admin/v1/accounts/{id}/fallback/` | set it, or clear it with `{"fallback_channel": "none"}` |
//!
//! A text send that does not give `fallback_channel` gets the default, as
//! the accepting transaction reads it from the account row (so a change made
//! through one node is used by the next send on every node); `"none"` opts
//! out, and `"voice"` uses the send's own fields only. A voice send, and a
//! send whose personnel code is not all digits (a call cannot read it out),
//! never get it.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use otp_domain::channel::{Channel, Voice};
use otp_store::AccountFallback;
use otp_store::fallback::{AFTER_SECONDS_RANGE, DEFAULT_AFTER_SECONDS};

use super::admin::{Admin, find_account};
use super::envelope::Envelope;
use super::error::{ApiError, FieldError};
use super::extract::Fields;
use super::fields::{Raw, integer, text};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    let path = "/admin/v1/accounts/{id}/fallback/";
    let route = get(get_fallback).put(set_fallback);
    Router::new()
        .route(path, route.clone())
        .route(path.trim_end_matches('/'), route)
}

/// What the fallback fields of a body say, once they are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FallbackChoice {
    /// `fallback_channel` not given (nor the other two): for a send, the
    /// account's default.
    NotGiven,
    /// `fallback_channel: "none"`.
    Off,
    /// `fallback_channel: "voice"`, with its voice and wait.
    Voice(AccountFallback),
}

/// The fields `fallback_channel` (`voice` or `none`),
/// `fallback_after_seconds` (10-3600, default 60) and `fallback_voice_input`
/// (required with `voice`), which only a voice fallback takes. `None` when
/// a problem was pushed to `errors`.
pub(super) fn fallback_fields(
    channel: &Raw,
    after: &Raw,
    voice: &Raw,
    errors: &mut Vec<FieldError>,
) -> Option<FallbackChoice> {
    let wanted = match text(channel, "fallback_channel", errors)
        .as_deref()
        .map(str::trim)
    {
        None if channel.given().is_some() => return None,
        None => None,
        Some("none") => Some(false),
        Some("voice") => Some(true),
        Some(_) => {
            errors.push(FieldError::new(
                "fallback_channel",
                "invalid_choice",
                "fallback_channel must be \"voice\" or \"none\".",
            ));
            return None;
        }
    };
    let before = errors.len();
    let after = integer(after, "fallback_after_seconds", errors);
    let voice_field = text(voice, "fallback_voice_input", errors);
    let Some(true) = wanted else {
        for (given, name) in [
            (after.is_some(), "fallback_after_seconds"),
            (voice_field.is_some(), "fallback_voice_input"),
        ] {
            if given {
                errors.push(FieldError::new(
                    name,
                    "not_allowed",
                    format!("{name} is only accepted with fallback_channel \"voice\"."),
                ));
            }
        }
        return (errors.len() == before).then_some(match wanted {
            None => FallbackChoice::NotGiven,
            Some(_) => FallbackChoice::Off,
        });
    };
    let (min, max) = AFTER_SECONDS_RANGE;
    let after = match after {
        None => Some(DEFAULT_AFTER_SECONDS),
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(_) => {
            errors.push(FieldError::new(
                "fallback_after_seconds",
                "out_of_range",
                format!("fallback_after_seconds must be between {min} and {max}."),
            ));
            None
        }
    };
    let voice = match voice_field {
        None => {
            errors.push(FieldError::new(
                "fallback_voice_input",
                "required",
                "fallback_voice_input is required with fallback_channel \"voice\".",
            ));
            None
        }
        Some(v) => Voice::parse(v.trim()).or_else(|| {
            errors.push(FieldError::new(
                "fallback_voice_input",
                "invalid_choice",
                "fallback_voice_input must be one of np_rija, np_prashanna, np_shreegya, np_binod.",
            ));
            None
        }),
    };
    let (voice, after_seconds) = voice.zip(after).filter(|_| errors.len() == before)?;
    // The wait was checked against `AFTER_SECONDS_RANGE` above.
    Some(FallbackChoice::Voice(AccountFallback {
        voice,
        after_seconds,
    }))
}

/// An account's default fallback call, as the admin API shows it: the
/// fields a send would give for it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountFallbackView {
    /// `voice`, or `none` when the account has no default.
    #[schema(example = "voice")]
    pub fallback_channel: &'static str,
    /// Seconds after the send that the call is due; absent with `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 45)]
    pub fallback_after_seconds: Option<i64>,
    /// The voice that reads the code; absent with `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "np_rija")]
    pub fallback_voice_input: Option<&'static str>,
}

impl AccountFallbackView {
    pub fn of(default: Option<&AccountFallback>) -> AccountFallbackView {
        match default {
            Some(d) => AccountFallbackView {
                fallback_channel: Channel::Voice.as_str(),
                fallback_after_seconds: Some(d.after_seconds),
                fallback_voice_input: Some(d.voice.as_str()),
            },
            None => AccountFallbackView {
                fallback_channel: "none",
                fallback_after_seconds: None,
                fallback_voice_input: None,
            },
        }
    }
}

/// The body of `PUT /admin/v1/accounts/{id}/fallback/`: the fields a send
/// gives for its own fallback call, checked the same way.
#[derive(Deserialize, ToSchema)]
pub struct SetFallbackRequest {
    /// `voice` to call the number and read the code out when the account's
    /// text sends are not verified in time; `none` for no default.
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "voice")]
    fallback_channel: Raw,
    /// With `voice`: seconds to wait for the verification before calling,
    /// 10-3600, default 60.
    #[serde(default)]
    #[schema(value_type = Option<u32>, example = 45)]
    fallback_after_seconds: Raw,
    /// Required with `voice`: `np_rija`, `np_prashanna`, `np_shreegya` or
    /// `np_binod`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "np_rija")]
    fallback_voice_input: Raw,
}

/// An account's default fallback call: what its text sends that do not give
/// `fallback_channel` get.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}/fallback/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, description = "The default (`fallback_channel: \"none\"`: none)", body = Envelope<AccountFallbackView>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn get_fallback(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Envelope<AccountFallbackView>>, ApiError> {
    let account = find_account(&state, &id).await?;
    Ok(Json(Envelope::ok(
        "Default fallback.",
        AccountFallbackView::of(account.fallback.as_ref()),
    )))
}

/// Set the account's default fallback call, or clear it with
/// `{"fallback_channel": "none"}`. From the next send on, on every node, a
/// text send of the account that does not give `fallback_channel` gets a
/// call reading its code when the SMS is not verified within
/// `fallback_after_seconds` (or comes back failed sooner), its phone credits
/// reserved at accept as for a send's own fallback. A send's
/// `fallback_channel` wins: `none` opts out, `voice` uses the send's own
/// fields only. Voice sends, and sends whose personnel code is not all
/// digits, never get it.
#[utoipa::path(
    put,
    path = "/admin/v1/accounts/{id}/fallback/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    request_body(content = SetFallbackRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The default now", body = Envelope<AccountFallbackView>),
        (status = 400, description = "A field a send's fallback would refuse, named with the same code (`required`, `invalid_choice`, `out_of_range`, `invalid_type`, `not_allowed`); nothing changed", body = super::error::ErrorEnvelope),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn set_fallback(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Fields(req): Fields<SetFallbackRequest>,
) -> Result<Json<Envelope<AccountFallbackView>>, ApiError> {
    let account = find_account(&state, &id).await?;
    let mut errors = Vec::new();
    let choice = fallback_fields(
        &req.fallback_channel,
        &req.fallback_after_seconds,
        &req.fallback_voice_input,
        &mut errors,
    );
    if req.fallback_channel.given().is_none() {
        errors.push(FieldError::new(
            "fallback_channel",
            "required",
            "fallback_channel is required (\"none\" clears the default).",
        ));
    }
    let default = match choice {
        Some(FallbackChoice::Voice(d)) if errors.is_empty() => Some(d),
        Some(FallbackChoice::Off) if errors.is_empty() => None,
        _ => return Err(ApiError::validation(errors)),
    };
    let account = state
        .store
        .set_account_fallback(account.id, default)
        .await?
        .ok_or_else(ApiError::not_found)?;
    tracing::info!(
        account_id = account.id,
        fallback = account.fallback.is_some(),
        "admin API: default fallback set"
    );
    Ok(Json(Envelope::ok(
        match account.fallback {
            Some(_) => "Default fallback set.",
            None => "Default fallback cleared.",
        },
        AccountFallbackView::of(account.fallback.as_ref()),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn read(body: Value) -> (Option<FallbackChoice>, Vec<(String, String)>) {
        let raw = |name: &str| -> Raw { serde_json::from_value(body[name].clone()).unwrap() };
        let absent = |name: &str| body.get(name).is_none();
        let field = |name: &str| {
            if absent(name) {
                Raw::default()
            } else {
                raw(name)
            }
        };
        let mut errors = Vec::new();
        let choice = fallback_fields(
            &field("fallback_channel"),
            &field("fallback_after_seconds"),
            &field("fallback_voice_input"),
            &mut errors,
        );
        let named = errors.into_iter().map(|e| (e.field, e.code)).collect();
        (choice, named)
    }

    #[test]
    fn the_fallback_fields_say_nothing_none_or_a_call() {
        assert_eq!(read(json!({})).0, Some(FallbackChoice::NotGiven));
        assert_eq!(
            read(json!({"fallback_channel": "none"})).0,
            Some(FallbackChoice::Off)
        );
        let call = AccountFallback::new(Voice::NpRija, 60).unwrap();
        assert_eq!(
            read(json!({"fallback_channel": "voice", "fallback_voice_input": "np_rija"})).0,
            Some(FallbackChoice::Voice(call))
        );
        let (choice, errors) = read(json!({"fallback_channel": true}));
        assert_eq!(choice, None);
        assert_eq!(errors, [("fallback_channel".into(), "invalid_type".into())]);
        let (choice, errors) = read(json!({"fallback_channel": "voice",
            "fallback_after_seconds": "soon"}));
        assert_eq!(choice, None);
        assert_eq!(
            errors,
            [
                ("fallback_after_seconds".into(), "invalid_type".into()),
                ("fallback_voice_input".into(), "required".into())
            ]
        );
    }
}
