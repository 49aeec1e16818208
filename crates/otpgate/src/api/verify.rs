//! `POST /api/v1/auths/verify/otp/`: checks a code a user typed.
//!
//! The code is checked against the newest unexpired, unverified OTP sent to
//! `number` under the calling API key (`verify.number_scope = "account"`: under
//! any key of the account), or against the OTP `id`, which must be the
//! account's. Scoping to the key means a leaked key of the account cannot send
//! a code of its choosing (`otp_options: personnel`) to a victim's number and
//! have the victim's login verify it. The store recomputes the code's HMAC and compares it in constant
//! time, and counts a wrong code, in one transaction, so concurrent checks of one
//! code are counted exactly and at most one succeeds. Outcomes:
//!
//! | outcome | HTTP | `errors[0].code` | `data` |
//! |---|---|---|---|
//! | verified | 200 | - | `id`, `verified_at` |
//! | wrong code | 400 | `invalid_otp` | `attempts_remaining` (0: the code is now dead) |
//! | too many attempts | 400 | `max_attempts` | `attempts_remaining: 0` |
//! | expired | 410 | `expired` | - |
//! | nothing to verify | 404 | `not_found`, or `already_verified` | - |
//! | too many verifications of the number (or id) | 429 | `verify_rate_limited` | `retry_after` |
//! | the account verifies too fast | 429 | `verify_account_rate_limited` | `retry_after` |
//!
//! The rate limits ([`crate::throttle::VerifyLimiter`]) are checked before the
//! store is asked, so a refused request counts nothing against the code. Guesses
//! at a dead or expired code are recorded in its history once and then only
//! counted, so a flood cannot grow the store.
//!
//! Each verification is counted in `otpgate_verify_total` by its outcome (see
//! `check`); over accepted sends, the verified ones are the conversion rate,
//! whose fall is the first sign of SMS pumping.
//!
//! A resend (`verify.resend_same_code`, see [`super::send`]) repeats its
//! chain's first code: any record of the chain, by number or by `id`, checks
//! that code against the attempts, expiry and verification the chain shares,
//! and a success verifies them all.
//!
//! Too many attempts is a 400, not a 429: waiting does not help (the code is dead
//! for good), and 429 with `Retry-After` is kept for rate limits. Another
//! account's OTPs are invisible: they answer exactly as a number never sent to.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use otp_domain::code::OtpLength;
use otp_domain::phone::PhoneNumber;
use otp_store::{VerifyOutcome, VerifyRequest, now_micros};

use super::envelope::Envelope;
use super::error::{ApiError, FieldError};
use super::extract::Fields;
use super::fields::{Raw, integer, text};
use crate::auth::Caller;
use crate::config::NumberScope;
use crate::state::AppState;
use crate::throttle::{VerifyRefusal, VerifyTarget};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auths/verify/otp/", post(verify_otp))
        .route("/api/v1/auths/verify/otp", post(verify_otp))
}

/// The request body (JSON or form).
#[derive(Deserialize, ToSchema)]
pub struct VerifyOtpRequest {
    /// The number the code was sent to, in any accepted spelling. Required
    /// unless `id` is given.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "9851023212")]
    number: Raw,
    /// The code the user typed: 4-10 ASCII letters or digits (surrounding
    /// spaces are ignored).
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "482193")]
    otp: Raw,
    /// The id a send returned: check this OTP rather than the number's newest.
    /// For a resend, any id of its chain checks the same code and attempts.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    id: Raw,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyData {
    /// The OTP that was verified.
    pub id: i64,
    /// RFC 3339 in the configured zone.
    pub verified_at: String,
}

/// Verify a code the user typed.
#[utoipa::path(
    post,
    path = "/api/v1/auths/verify/otp/",
    tag = "otp",
    request_body(content = VerifyOtpRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Verified; the code cannot be used again", body = Envelope<VerifyData>),
        (status = 400, description = "Invalid request (nothing counted); or a wrong code (`invalid_otp`, with `data.attempts_remaining`); or a code whose attempts are used up (`max_attempts`)", body = super::error::ErrorEnvelope),
        (status = 401, description = "Missing, invalid or revoked key", body = super::error::ErrorEnvelope),
        (status = 404, description = "Nothing to verify for this number or id in this account (`not_found`, `already_verified`)", body = super::error::ErrorEnvelope),
        (status = 410, description = "The code has expired (`expired`)", body = super::error::ErrorEnvelope),
        (status = 429, description = "Too many verifications of this number or id (`verify_rate_limited`, `verify.per_number_max`) or of this account (`verify_account_rate_limited`, `verify.per_account_rps`); nothing counted against the code. `Retry-After` and `data.retry_after` give the seconds to wait", body = super::error::ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds until a verification can pass"))),
        (status = 503, description = "Store unavailable; nothing counted", body = super::error::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn verify_otp(
    State(state): State<AppState>,
    caller: Caller,
    Fields(req): Fields<VerifyOtpRequest>,
) -> Result<Json<Envelope<VerifyData>>, ApiError> {
    let (outcome, reply) = check(&state, caller, &req).await;
    state
        .metrics
        .inc("otpgate_verify_total", &[("outcome", outcome)]);
    reply
}

/// The verification and the `outcome` label it is counted under in
/// `otpgate_verify_total`: `verified`, `wrong_code`, `max_attempts`, `expired`,
/// `already_verified`, `not_found`, `rate_limited`, `invalid` (the request
/// itself) or `error` (the store failed). A request without a valid key never
/// gets here and is not counted.
async fn check(
    state: &AppState,
    caller: Caller,
    req: &VerifyOtpRequest,
) -> (&'static str, Result<Json<Envelope<VerifyData>>, ApiError>) {
    let (phone_number, otp_id, code) = match validate(req) {
        Ok(valid) => valid,
        Err(errors) => return ("invalid", Err(ApiError::validation(errors))),
    };
    let now = now_micros();
    let target = match (otp_id, &phone_number) {
        (Some(id), _) => VerifyTarget::Id(id),
        (None, Some(number)) => VerifyTarget::Number(number.clone()),
        (None, None) => {
            return (
                "error",
                Err(ApiError::internal("a verification without a target")),
            );
        }
    };
    if let Err(refusal) = state.verify_limits.admit(caller.account_id, target, now) {
        return ("rate_limited", Err(refused(refusal)));
    }
    let api_key_id = match state.config.verify.number_scope {
        NumberScope::Key => Some(caller.key_row),
        NumberScope::Account => None,
    };
    let outcome = state
        .store
        .verify(VerifyRequest {
            account_id: caller.account_id,
            phone_number,
            otp_id,
            api_key_id,
            code,
            max_attempts: state.config.verify.max_attempts,
            now,
        })
        .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return ("error", Err(e.into())),
    };
    let refuse = |label, status, code: &str, message: String, data| {
        (
            label,
            Err(ApiError::refusal(
                status,
                FieldError::new("otp", code, message),
                data,
            )),
        )
    };
    if let VerifyOutcome::Verified { id, .. } = outcome {
        state.guard.verified(caller.account_id, id);
    }
    match outcome {
        VerifyOutcome::Verified { id, verified_at } => (
            "verified",
            Ok(Json(Envelope::ok(
                "OTP Verified Successfully.",
                VerifyData {
                    id,
                    verified_at: super::list::rfc3339(verified_at, &state.tz),
                },
            ))),
        ),
        VerifyOutcome::WrongCode {
            attempts_remaining, ..
        } => refuse(
            "wrong_code",
            StatusCode::BAD_REQUEST,
            "invalid_otp",
            match attempts_remaining {
                0 => "The OTP is incorrect. No attempts remain: send a new OTP.".to_owned(),
                1 => "The OTP is incorrect. 1 attempt remains.".to_owned(),
                n => format!("The OTP is incorrect. {n} attempts remain."),
            },
            Some(json!({ "attempts_remaining": attempts_remaining })),
        ),
        VerifyOutcome::TooManyAttempts { .. } => refuse(
            "max_attempts",
            StatusCode::BAD_REQUEST,
            "max_attempts",
            "Too many wrong attempts: this OTP can no longer be verified. Send a new OTP."
                .to_owned(),
            Some(json!({ "attempts_remaining": 0 })),
        ),
        VerifyOutcome::Expired { .. } => refuse(
            "expired",
            StatusCode::GONE,
            "expired",
            "The OTP has expired. Send a new OTP.".to_owned(),
            None,
        ),
        VerifyOutcome::AlreadyVerified { .. } => refuse(
            "already_verified",
            StatusCode::NOT_FOUND,
            "already_verified",
            "No OTP is waiting to be verified: it was verified already.".to_owned(),
            None,
        ),
        _ => refuse(
            "not_found",
            StatusCode::NOT_FOUND,
            "not_found",
            "No OTP is waiting to be verified for this number.".to_owned(),
            None,
        ),
    }
}

/// A verification a limit refused, as a 429 with `Retry-After`.
fn refused(refusal: VerifyRefusal) -> ApiError {
    match refusal {
        VerifyRefusal::Number {
            retry_after_seconds,
        } => ApiError::rate_limited(
            "verify_rate_limited",
            format!(
                "Too many verifications of this number; try again in {retry_after_seconds} seconds."
            ),
            retry_after_seconds,
        ),
        VerifyRefusal::Account => ApiError::rate_limited(
            "verify_account_rate_limited",
            "This account is verifying faster than it may; try again in 1 second.",
            1,
        ),
    }
}

type Target = (Option<String>, Option<i64>, String);

fn validate(req: &VerifyOtpRequest) -> Result<Target, Vec<FieldError>> {
    let mut errors = Vec::new();
    let id = integer(&req.id, "id", &mut errors).and_then(|n| {
        if n < 1 {
            errors.push(FieldError::new(
                "id",
                "invalid",
                "id must be a positive integer.",
            ));
            return None;
        }
        Some(n)
    });
    let number = match text(&req.number, "number", &mut errors) {
        Some(s) if !s.trim().is_empty() => match PhoneNumber::parse(&s) {
            Ok(n) => Some(n.display().to_owned()),
            Err(e) => {
                errors.push(FieldError::new("number", "invalid", e.to_string()));
                None
            }
        },
        _ => {
            if id.is_none()
                && !errors
                    .iter()
                    .any(|e| e.field == "number" || e.field == "id")
            {
                errors.push(FieldError::new("number", "required", "number is required."));
            }
            None
        }
    };
    let code = match text(&req.otp, "otp", &mut errors) {
        Some(s) => {
            let s = s.trim();
            let len = s.chars().count();
            if s.is_empty() {
                errors.push(FieldError::new("otp", "blank", "otp may not be blank."));
                None
            } else if !(OtpLength::MIN as usize..=OtpLength::MAX as usize).contains(&len)
                || !s.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                errors.push(FieldError::new(
                    "otp",
                    "invalid",
                    format!(
                        "otp must be {} to {} letters or digits.",
                        OtpLength::MIN,
                        OtpLength::MAX
                    ),
                ));
                None
            } else {
                Some(s.to_owned())
            }
        }
        None => {
            if req.otp.given().is_none() {
                errors.push(FieldError::new("otp", "required", "otp is required."));
            }
            None
        }
    };
    match code {
        Some(code) if errors.is_empty() => Ok((number, id, code)),
        _ => Err(errors),
    }
}
