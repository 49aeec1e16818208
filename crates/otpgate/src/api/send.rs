//! `POST /api/v1/auths/send/otp/`: validate, debit, record, queue, reply.
//!
//! Validation collects every problem before answering, and nothing is written
//! until the request is fully valid. The store then debits the account, writes the
//! OTP and its delivery job in one transaction; the reply is sent only after that
//! transaction is durable.
//!
//! The reply carries the code (`otp`, and inside `message`) unless
//! `api.code_in_send_reply` is off; then both show `******`. An
//! `Idempotency-Key` belongs to the API key that used it: its hash binds the
//! account, the key, whether the reply shows the code and the body's bytes, so
//! a replay carries exactly what the first reply did, and another key of the
//! account (or the same key after the setting changed) reusing it gets 422.
//!
//! With `verify.resend_same_code` (the default), a generated-code send to a
//! number that has a live generated code sent under the same API key is a
//! resend ([`resend_plan`]): it carries that code and its expiry, `resend_of`
//! names the first send, and the store counts the attempts of the chain as
//! one. If the code stops verifying between the lookup and the accepting
//! transaction, the send goes out once more as a first send with a new code.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use otp_domain::channel::{Channel, OtpOption, Voice};
use otp_domain::code::{OtpCode, OtpLength};
use otp_domain::credits::{self, Cost};
use otp_domain::message::MessageTemplate;
use otp_domain::phone::{E164, NumberType, PhoneNumber};
use otp_domain::segments::{self, MAX_SEGMENTS, SmsEncoding};
use otp_domain::vault::MASK;
use otp_store::{
    AcceptError, Accepted, IdempotencyKey, LimitKind, NewOtp, RecordCode, ResendOf, ResendQuery,
    SendFallback, now_micros,
};
use sha2::{Digest, Sha256};

use super::account_fallback::{FallbackChoice, fallback_fields};
use super::envelope::Envelope;
use super::error::{ApiError, FieldError};
use super::extract::FieldsAndBody;
use super::fields::{Raw, field_str, integer, number_field, required_text, text};
use crate::auth::Caller;
use crate::state::AppState;

/// Longest `company_name` stored.
pub const MAX_COMPANY_NAME_CHARS: usize = 100;
/// The range `length_factor` may take on voice sends.
pub const LENGTH_FACTOR_RANGE: (f64, f64) = (0.5, 2.0);
/// Longest `Idempotency-Key` header accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auths/send/otp/", post(send_otp))
        .route("/api/v1/auths/send/otp", post(send_otp))
}

/// The request body (JSON or form), as read and as documented; each field is
/// checked by [`validate`], which reports every problem at once.
#[derive(Deserialize, ToSchema)]
pub struct SendOtpRequest {
    /// Recipient: 10 Nepali digits (`98XXXXXXXX`), or `+977...`, or another
    /// country's number in `+` international form, if `limits.allowed_countries`
    /// lets it through (default: Nepal only) and no `limits.denied_prefixes`
    /// entry matches. Text goes to mobiles only, voice to mobiles and fixed
    /// lines; premium-rate, shared-cost, satellite and other service numbers
    /// are refused.
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "9851023212")]
    number: Raw,
    /// The text, with `{otp}` where the code goes (at most 1,000 characters; the
    /// rendered text at most 10 SMS segments).
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "Hi your OTP is {otp}")]
    message: Raw,
    /// `text` or `voice`.
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "text")]
    sms_send_options: Raw,
    /// `generated` (default) or `personnel`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    otp_options: Raw,
    /// Your own code, required with `personnel`: 4-10 ASCII letters or digits
    /// (digits only for voice).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    otp: Raw,
    /// Length of a generated code, 4-10, default 6.
    #[serde(default)]
    #[schema(value_type = Option<u32>)]
    otp_length: Raw,
    /// Required for voice: `np_rija`, `np_prashanna`, `np_shreegya` or `np_binod`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    voice_input: Raw,
    /// Voice only: speech length factor, 0.5-2.0, default 1.0.
    #[serde(default)]
    #[schema(value_type = Option<f64>)]
    length_factor: Raw,
    /// Stored and returned; at most 100 characters.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    company_name: Raw,
    /// How long the code can be verified, 60-3600 seconds, default 600.
    #[serde(default)]
    #[schema(value_type = Option<u32>)]
    expiry_seconds: Raw,
    /// Text only: `voice` to call the number and read the same code out when
    /// the SMS is not verified within `fallback_after_seconds`, or comes back
    /// undeliverable, rejected, expired or failed sooner; `none` for no call.
    /// Left out: the account's default fallback call if an operator set one
    /// (`/admin/v1/accounts/{id}/fallback/`), else none; a personnel code
    /// that is not all digits gets no default (a call cannot read it). Given,
    /// it wins: `none` opts out of the default, and `voice` uses this send's
    /// own `fallback_after_seconds` and `fallback_voice_input` only. The
    /// call's phone credit is reserved when the send is accepted and given
    /// back if no call is made or the call reaches no one.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "voice")]
    fallback_channel: Raw,
    /// With `fallback_channel: "voice"`: seconds to wait for the
    /// verification before calling, 10-3600, default 60.
    #[serde(default)]
    #[schema(value_type = Option<u32>)]
    fallback_after_seconds: Raw,
    /// Required with `fallback_channel: "voice"`: the voice that reads the
    /// code, as `voice_input`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    fallback_voice_input: Raw,
}

/// `data.details` of a successful send.
#[derive(Debug, Serialize, ToSchema)]
pub struct SendDetails {
    pub number: String,
    pub otp_options: String,
    /// The rendered text; the code shows as `******` with
    /// `api.code_in_send_reply = false`.
    pub message: String,
    /// The code; `******` with `api.code_in_send_reply = false`.
    pub otp: String,
    pub sms_send_options: String,
    pub credits_used: i64,
    pub remaining_sms_credits: i64,
    pub remaining_phone_credits: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice_input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length_factor: Option<f64>,
    /// Our additions: the record's id, its delivery status and SMS segments.
    pub id: i64,
    pub status: String,
    pub segments: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    /// When the code stops verifying (RFC 3339 in the configured zone); a
    /// resend's is its first send's.
    pub expires_at: String,
    /// A resend (the number had a live generated code of this API key, sent
    /// again here, `verify.resend_same_code`): the `id` of the first send of
    /// that code; `null` for a first send.
    pub resend_of: Option<i64>,
    /// The fallback call the send got (its own, or its account's default);
    /// absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackDetails>,
}

/// An SMS's fallback call, as a send reply and an OTP's detail show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FallbackDetails {
    /// `voice`.
    pub channel: String,
    pub voice_input: String,
    /// When the call is due if the SMS is not verified by then (RFC 3339).
    pub due_at: String,
    /// Phone credits reserved for the call (included in
    /// `remaining_phone_credits`; given back if no call is made).
    pub reserved_phone_credits: i64,
    /// `pending`, `started`, `sent`, `failed`, `refunded` or `cancelled`.
    pub state: String,
}

impl FallbackDetails {
    pub fn of(f: &otp_store::Fallback, tz: &chrono_tz::Tz) -> FallbackDetails {
        FallbackDetails {
            channel: f.channel.as_str().to_owned(),
            voice_input: f.voice.as_str().to_owned(),
            due_at: super::list::rfc3339(f.due_at, tz),
            reserved_phone_credits: f.credits,
            state: f.state.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SendData {
    pub details: SendDetails,
}

/// A send that passed validation.
struct ValidSend {
    number: PhoneNumber,
    template: MessageTemplate,
    channel: Channel,
    option: OtpOption,
    code: OtpCode,
    voice: Option<Voice>,
    length_factor: Option<f64>,
    company_name: Option<String>,
    /// Seconds the code stays verifiable; `None`: the configured default.
    expiry_seconds: Option<i64>,
    /// The fallback call: its own, none, or (`NotGiven`) the account's
    /// default, which the accepting transaction reads.
    fallback: FallbackChoice,
}

/// What a send carries: its code, when that code stops verifying, and the
/// chain it joins when it is a resend.
#[derive(Clone)]
struct Plan {
    code: OtpCode,
    expires_at: otp_store::Micros,
    resend_of: Option<ResendOf>,
}

/// A resend: with `verify.resend_same_code`, a generated-code send to a number
/// that has a live generated code sent under the same API key repeats that
/// code, on any channel (a call after an SMS is the usual "call me instead"),
/// with its expiry; the store counts the attempts of both as one.
async fn resend_plan(
    state: &AppState,
    caller: &Caller,
    valid: &ValidSend,
    now: otp_store::Micros,
) -> Result<Option<Plan>, ApiError> {
    let verify = &state.config.verify;
    if !verify.resend_same_code || valid.option != OtpOption::Generated {
        return Ok(None);
    }
    let head = state
        .store
        .resend_head(ResendQuery {
            account_id: caller.account_id,
            api_key_id: caller.key_row,
            e164: valid.number.e164().to_owned(),
            max_attempts: verify.max_attempts,
            now,
            created_after: now - crate::codes::EXPIRY_RANGE.1 * 1_000_000,
        })
        .await?;
    // The store gives only a head whose code it could read back.
    Ok(head.map(|head| Plan {
        resend_of: Some(ResendOf {
            id: head.id,
            max_attempts: verify.max_attempts,
        }),
        expires_at: head.expires_at,
        code: head.code,
    }))
}

/// Send an OTP by SMS or voice call.
#[utoipa::path(
    post,
    path = "/api/v1/auths/send/otp/",
    tag = "otp",
    request_body(content = SendOtpRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Accepted and queued for delivery. A generated-code send to a number with a live generated code of the same API key is a resend (`verify.resend_same_code`): it carries that code and expiry, and `resend_of` names the first send", body = Envelope<SendData>),
        (status = 400, description = "Invalid request; nothing written. A number no OTP may go to by this channel is `number_type_not_allowed` (premium-rate, shared-cost, satellite and other service numbers) or `not_mobile` (a fixed line asked for SMS). An account restricted to approved templates whose `message`, whitespace aside, is none of them gets `template_not_approved` on `message` (nothing charged)", body = super::error::ErrorEnvelope),
        (status = 401, description = "Missing, invalid or revoked key", body = super::error::ErrorEnvelope),
        (status = 402, description = "Insufficient credits, the phone credits of the fallback call (its own or the account's default) included; nothing written", body = super::error::ErrorEnvelope),
        (status = 413, description = "Body over 64 KiB", body = super::error::ErrorEnvelope),
        (status = 415, description = "Not JSON or form", body = super::error::ErrorEnvelope),
        (status = 422, description = "The `Idempotency-Key` was used before with another body; nothing written", body = super::error::ErrorEnvelope),
        (status = 429, description = "Too many sends to this number (`rate_limited`) or within its cooldown (`cooldown`), or sends to its country, operator prefix or number block held by the SMS-pumping guard (`pumping_hold`: a burst there is rarely verified; a number whose code for the account was verified before, or for an account judged on receipts delivered, passes the hold; a retry under the idempotency key of a send accepted before gets that send's answer); `Retry-After` says when to try again; nothing written or charged", body = super::error::ErrorEnvelope),
        (status = 503, description = "Store unavailable; nothing written", body = super::error::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn send_otp(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    FieldsAndBody { fields: req, body }: FieldsAndBody<SendOtpRequest>,
) -> Result<Json<Envelope<SendData>>, ApiError> {
    let shows_code = state.config.api.code_in_send_reply;
    let idempotency = idempotency_key(&headers, &caller, shows_code, &body)?;
    let valid = validate(&req, &state.limits()).map_err(|errors| {
        let channel = field_str(&req.sms_send_options)
            .and_then(Channel::parse)
            .map_or("unknown", Channel::as_str);
        count_send(&state, channel, "invalid");
        ApiError::validation(errors)
    })?;
    let channel = valid.channel.as_str();
    let admitted = match state
        .guard
        .admit(caller.account_id, valid.number.e164())
        .await
    {
        Ok(admitted) => admitted,
        Err(held) => {
            return held_send(&state, &caller, held, idempotency, channel, shows_code).await;
        }
    };
    let (attempt, valid) = accept_to_the_end(&state, caller, valid, idempotency, admitted).await?;
    let attempt = attempt?;
    match attempt.result {
        Ok(accepted) => {
            let sent = Sent {
                id: accepted.id,
                number: valid.number.as_e164().clone(),
                option: valid.option,
                channel: valid.channel,
                voice: valid.voice,
                length_factor: valid.length_factor,
                template: valid.template,
                code: RecordCode::Plain(attempt.plan.code),
                credits_used: attempt.cost.sms + attempt.cost.phone,
                segments: attempt.segments,
                encoding: attempt.encoding,
                company_name: valid.company_name,
                expires_at: attempt.plan.expires_at,
                resend_of: attempt.plan.resend_of.map(|r| r.id),
                fallback: accepted.fallback.map(|f| otp_store::Fallback {
                    channel: Channel::Voice,
                    voice: f.voice,
                    due_at: f.due_at,
                    credits: f.phone_credits,
                    state: otp_store::FallbackState::Pending,
                    at: None,
                }),
            };
            Ok(Json(send_reply(&state, sent, &accepted, shows_code)))
        }
        Err(AcceptError::Replayed(first)) => {
            count_send(&state, channel, "replayed");
            replay(&state, caller.account_id, &first, shows_code).await
        }
        Err(refused) => {
            if matches!(refused, AcceptError::KeyRevoked) {
                state.key_cache.forget(caller.key_row);
            }
            // A text send short of phone credits was short of them for its
            // call, its own or the account's default.
            let charge = Cost {
                phone: attempt.cost.phone + attempt.fallback.phone_credits(),
                ..attempt.cost
            };
            let (outcome, error) = refusal(refused, charge, &state.limits());
            if let Some(outcome) = outcome {
                count_send(&state, channel, outcome);
            }
            Err(error)
        }
    }
}

/// The answer to a send the pumping guard holds: 429 `pumping_hold` with
/// `Retry-After`, nothing written or charged. A retry of a send accepted
/// before the hold, under its idempotency key and with the same body, gets
/// that send's answer; another body under the key gets the usual 422.
async fn held_send(
    state: &AppState,
    caller: &Caller,
    held: crate::guard::HeldSend,
    idempotency: Option<IdempotencyKey>,
    channel: &str,
    shows_code: bool,
) -> Result<Json<Envelope<SendData>>, ApiError> {
    if let Some(key) = idempotency {
        let since = now_micros() - otp_store::IDEMPOTENCY_TTL;
        if let Some((hash, first)) = state
            .store
            .idempotent_send(caller.account_id, key.key, since)
            .await?
        {
            if hash == key.body_hash {
                count_send(state, channel, "replayed");
                return replay(state, caller.account_id, &first, shows_code).await;
            }
            count_send(state, channel, "idempotency_conflict");
            return Err(refusal(
                AcceptError::IdempotencyKeyReused,
                Cost { sms: 0, phone: 0 },
                &state.limits(),
            )
            .1);
        }
    }
    count_send(state, channel, "held");
    let what = match held.scope {
        otp_store::guard::HoldScope::Country => "this country",
        otp_store::guard::HoldScope::Prefix => "this operator prefix",
        otp_store::guard::HoldScope::Block => "this number block",
    };
    Err(ApiError::rate_limited(
        "pumping_hold",
        format!(
            "Sends to {what} are held: a burst of sends there is rarely verified (SMS pumping); \
             try again in {} seconds.",
            held.retry_after_seconds
        ),
        held.retry_after_seconds,
    ))
}

fn count_send(state: &AppState, channel: &str, outcome: &str) {
    state.metrics.inc(
        "otpgate_sends_total",
        &[("channel", channel), ("outcome", outcome)],
    );
}

/// [`accept`], and what follows a send the store accepted (its count, the
/// pumping guard's tally, waking the delivery worker), on a task of its own.
/// A client that hangs up while its send is being accepted drops the handler
/// at whatever it awaits; the store may commit the send all the same, and that
/// send must still be counted, and delivered at once rather than at the
/// worker's next poll (`delivery.poll_interval_ms`). The send comes back with
/// the store's answer, for the reply.
async fn accept_to_the_end(
    state: &AppState,
    caller: Caller,
    valid: ValidSend,
    idempotency: Option<IdempotencyKey>,
    admitted: crate::guard::Admitted,
) -> Result<(Result<Attempt, ApiError>, ValidSend), ApiError> {
    let state = state.clone();
    tokio::spawn(async move {
        let attempt = accept(&state, &caller, &valid, idempotency).await;
        if let Ok(Attempt {
            result: Ok(_),
            handed,
            ..
        }) = &attempt
        {
            count_send(&state, valid.channel.as_str(), "accepted");
            state.guard.accepted(&admitted);
            // A job handed over is started already; any other waits for a claim.
            if !handed {
                state.new_jobs.for_channel(valid.channel).notify_one();
            }
        }
        (attempt, valid)
    })
    .await
    .map_err(ApiError::internal)
}

/// A send as the store answered it: the code and expiry it carried, its
/// rendered text, cost and segments, and the store's answer.
struct Attempt {
    plan: Plan,
    cost: Cost,
    /// The fallback call it asked for (the store says in `Accepted` which
    /// one it wrote).
    fallback: SendFallback,
    segments: u32,
    /// The rendered text's encoding, for the reply.
    encoding: SmsEncoding,
    result: Result<Accepted, AcceptError>,
    /// Its job went to this node's worker as it was written
    /// ([`crate::delivery::Handover`]).
    handed: bool,
}

/// Debits, records and queues a valid send in the store. A resend whose code
/// stopped verifying since it was found is sent once more as a first send,
/// with a new code; so the store is asked at most twice.
async fn accept(
    state: &AppState,
    caller: &Caller,
    valid: &ValidSend,
    idempotency: Option<IdempotencyKey>,
) -> Result<Attempt, ApiError> {
    let created_at = now_micros();
    let expiry = valid
        .expiry_seconds
        .unwrap_or(state.config.verify.default_expiry_seconds);
    let fresh = Plan {
        code: valid.code.clone(),
        expires_at: created_at + expiry * 1_000_000,
        resend_of: None,
    };
    let mut plan = match resend_plan(state, caller, valid, created_at).await? {
        Some(resend) => resend,
        None => fresh.clone(),
    };
    let (spend_day, spend_day_ends) = local_day(state.tz, created_at);
    let mut handover = state.new_jobs.reserve(valid.channel);
    loop {
        let message = valid.template.render(&plan.code);
        let seg = segments::analyze(&message);
        if valid.channel == Channel::Text && seg.segments > MAX_SEGMENTS {
            count_send(state, valid.channel.as_str(), "invalid");
            return Err(ApiError::validation(vec![FieldError::new(
                "message",
                "too_long",
                format!(
                    "The rendered message needs {} SMS segments; at most {MAX_SEGMENTS} are allowed.",
                    seg.segments
                ),
            )]));
        }
        let cost = credits::cost(valid.channel, &seg);
        let segments = match valid.channel {
            Channel::Text => seg.segments,
            Channel::Voice => 0,
        };
        let call_credits = credits::cost(Channel::Voice, &seg).phone;
        let fallback = match valid.fallback {
            FallbackChoice::Voice(call) => SendFallback::Call(call.call(created_at, call_credits)),
            FallbackChoice::NotGiven => SendFallback::AccountDefault {
                phone_credits: call_credits,
            },
            FallbackChoice::Off => SendFallback::None,
        };
        let new = NewOtp {
            account_id: caller.account_id,
            api_key_id: Some(caller.key_row),
            number: valid.number.clone(),
            template: valid.template.clone(),
            otp: plan.code.clone(),
            otp_option: valid.option,
            channel: valid.channel,
            voice: valid.voice,
            length_factor: valid.length_factor,
            company_name: valid.company_name.clone(),
            segments,
            cost,
            created_at,
            expires_at: plan.expires_at,
            spend_day,
            spend_day_ends,
            resend_of: plan.resend_of,
            fallback,
        };
        let started = Instant::now();
        let lease = handover.as_ref().map(|(_, lease)| lease.clone());
        let result = state
            .store
            .accept_leased(new, idempotency.clone(), lease)
            .await;
        state.metrics.observe(
            "otpgate_accept_duration_seconds",
            &[],
            started.elapsed().as_secs_f64(),
        );
        match result {
            Err(AcceptError::ResendStale) if plan.resend_of.is_some() => plan = fresh.clone(),
            mut result => {
                // The job (and the plain code in its record) goes to the
                // worker; the reply keeps the rest.
                let handed = match (&mut result, handover.take()) {
                    (Ok(accepted), Some((slot, _))) => {
                        accepted.leased_job.take().is_some_and(|job| slot.hand(job))
                    }
                    _ => false,
                };
                return Ok(Attempt {
                    plan,
                    cost,
                    fallback,
                    segments,
                    encoding: seg.encoding,
                    result,
                    handed,
                });
            }
        }
    }
}

/// The API's answer to the store's refusal of a send that debits `charge`
/// (its cost and its fallback call's reservation), and the outcome it is
/// counted as (`None`: not counted). A replay is no refusal: it is answered
/// with the first reply.
fn refusal(
    refused: AcceptError,
    charge: Cost,
    limits: &crate::config::LimitsConfig,
) -> (Option<&'static str>, ApiError) {
    match refused {
        AcceptError::InsufficientCredits {
            sms_credits,
            phone_credits,
        } => (
            Some("insufficient_credits"),
            if sms_credits < charge.sms {
                ApiError::insufficient_credits("SMS", charge.sms, sms_credits)
            } else {
                ApiError::insufficient_credits("phone", charge.phone, phone_credits)
            },
        ),
        AcceptError::AccountNotFound | AcceptError::KeyRevoked => {
            (None, ApiError::unauthenticated("Invalid token."))
        }
        AcceptError::AccountDisabled => (None, ApiError::account_disabled()),
        AcceptError::IdempotencyKeyReused => (
            Some("idempotency_conflict"),
            ApiError::refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                FieldError::new(
                    "idempotency_key",
                    "idempotency_key_reused",
                    "This Idempotency-Key was used with another request body or by another API key.",
                ),
                None,
            ),
        ),
        AcceptError::RateLimited {
            limit,
            retry_after_seconds,
        } => (
            Some("rate_limited"),
            rate_limited(limit, retry_after_seconds, limits),
        ),
        AcceptError::TemplateNotApproved => (
            Some("template_not_approved"),
            ApiError::validation(vec![FieldError::new(
                "message",
                "template_not_approved",
                "This message is not one of the account's approved templates.",
            )]),
        ),
        AcceptError::Store(e) => (Some("error"), e.into()),
        AcceptError::ResendStale => (
            None,
            ApiError::internal("a first send was refused as a resend"),
        ),
        AcceptError::Replayed(_) => (None, ApiError::internal("a replay was taken for a refusal")),
    }
}

/// 429 for a send a limit refused, naming the limit.
fn rate_limited(
    limit: LimitKind,
    retry_after_seconds: u64,
    limits: &crate::config::LimitsConfig,
) -> ApiError {
    let (code, message) = match limit {
        LimitKind::Window => (
            "rate_limited",
            format!(
                "At most {} OTPs may be sent to this number in {} seconds; \
                 try again in {retry_after_seconds} seconds.",
                limits.per_number_max, limits.per_number_window_seconds
            ),
        ),
        LimitKind::Cooldown => (
            "cooldown",
            format!(
                "An OTP was sent to this number less than {} seconds ago; \
                 try again in {retry_after_seconds} seconds.",
                limits.per_number_cooldown_seconds
            ),
        ),
        LimitKind::AccountRate => (
            "account_rate_limited",
            format!(
                "This account is sending faster than it may; \
                 try again in {retry_after_seconds} seconds."
            ),
        ),
        LimitKind::KeyRate => (
            "key_rate_limited",
            format!(
                "This API key is sending faster than it may; \
                 try again in {retry_after_seconds} seconds."
            ),
        ),
        LimitKind::DailySpend => (
            "daily_spend_cap",
            format!(
                "This account has reached its daily spend cap; \
                 try again in {retry_after_seconds} seconds, when the day ends."
            ),
        ),
    };
    ApiError::rate_limited(code, message, retry_after_seconds)
}

/// What a send wrote, as its reply describes it: from the send itself, or
/// read back from the store for a replay.
struct Sent {
    id: i64,
    number: E164,
    option: OtpOption,
    channel: Channel,
    voice: Option<Voice>,
    length_factor: Option<f64>,
    template: MessageTemplate,
    /// The code it sent; masked when a replay finds it purged.
    code: RecordCode,
    credits_used: i64,
    segments: u32,
    /// The encoding of its text as sent (`segments::analyze`).
    encoding: SmsEncoding,
    company_name: Option<String>,
    expires_at: otp_store::Micros,
    resend_of: Option<i64>,
    fallback: Option<otp_store::Fallback>,
}

/// The reply to a send, first or replayed: `balances` are what the accepting
/// transaction left; with `shows_code` off the code shows as `******`.
fn send_reply(
    state: &AppState,
    sent: Sent,
    balances: &Accepted,
    shows_code: bool,
) -> Envelope<SendData> {
    let (reply_message, voice_input, length_factor, encoding) = match sent.channel {
        Channel::Text => (
            "OTP Sent Successfully.",
            None,
            None,
            Some(match sent.encoding {
                SmsEncoding::Gsm7 => "gsm7",
                SmsEncoding::Ucs2 => "ucs2",
            }),
        ),
        Channel::Voice => (
            "OTP Call Initiated Successfully.",
            sent.voice.map(|v| v.as_str().to_owned()),
            Some(sent.length_factor.unwrap_or(1.0)),
            None,
        ),
    };
    let (message, otp) = if shows_code {
        (
            sent.code.render(&sent.template),
            sent.code.shown().to_owned(),
        )
    } else {
        (sent.template.render_masked(), MASK.to_owned())
    };
    Envelope::ok(
        reply_message,
        SendData {
            details: SendDetails {
                number: sent.number.display().to_owned(),
                otp_options: sent.option.as_str().to_owned(),
                message,
                otp,
                sms_send_options: sent.channel.as_str().to_owned(),
                credits_used: sent.credits_used,
                remaining_sms_credits: balances.sms_credits,
                remaining_phone_credits: balances.phone_credits,
                voice_input,
                length_factor,
                id: sent.id,
                status: "queued".to_owned(),
                segments: sent.segments,
                encoding: encoding.map(str::to_owned),
                company_name: sent.company_name,
                expires_at: super::list::rfc3339(sent.expires_at, &state.tz),
                resend_of: sent.resend_of,
                fallback: sent.fallback.map(|f| FallbackDetails::of(&f, &state.tz)),
            },
        },
    )
}

/// The `Idempotency-Key` header, bound to the account, the API key, whether
/// the reply shows the code, and the exact body bytes.
fn idempotency_key(
    headers: &HeaderMap,
    caller: &Caller,
    shows_code: bool,
    body: &[u8],
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().ok().filter(|k| {
        !k.is_empty()
            && k.len() <= MAX_IDEMPOTENCY_KEY_CHARS
            && k.bytes().all(|b| b.is_ascii_graphic())
    });
    let Some(key) = key else {
        return Err(ApiError::validation(vec![FieldError::new(
            "idempotency_key",
            "invalid",
            format!(
                "The Idempotency-Key header must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters."
            ),
        )]));
    };
    let mut hash = Sha256::new();
    hash.update(caller.account_id.to_be_bytes());
    hash.update(caller.key_row.to_be_bytes());
    hash.update([u8::from(shows_code)]);
    hash.update(body);
    Ok(Some(IdempotencyKey {
        key: key.to_owned(),
        body_hash: hash.finalize().to_vec(),
    }))
}

/// The first reply to a send under an idempotency key, again: rebuilt from the
/// OTP it wrote (the code is read back from its cipher) and the balances it left.
/// `shows_code` is what the first reply did (the key's hash binds it).
async fn replay(
    state: &AppState,
    account: otp_store::AccountId,
    first: &Accepted,
    shows_code: bool,
) -> Result<Json<Envelope<SendData>>, ApiError> {
    let otp = state
        .store
        .otp(account, first.id)
        .await?
        .ok_or_else(|| ApiError::internal("the OTP of an idempotency key is missing"))?;
    let encoding = segments::analyze(&otp.code.render(&otp.template)).encoding;
    let sent = Sent {
        id: otp.id,
        number: otp.number,
        option: otp.otp_option,
        channel: otp.channel,
        voice: otp.voice,
        length_factor: otp.length_factor,
        template: otp.template,
        code: otp.code,
        credits_used: otp.credits_used,
        segments: otp.segments,
        encoding,
        company_name: otp.company_name,
        expires_at: otp.expires_at,
        resend_of: otp.resend_of,
        fallback: otp.fallback,
    };
    Ok(Json(send_reply(state, sent, first, shows_code)))
}

/// Why `number` may not get an OTP over `channel`, if it may not: only
/// mobiles (and numbers of regions that do not tell mobiles apart) get SMS, and
/// fixed lines calls too, whatever `limits.allowed_countries` says. A fixed line
/// asked for SMS keeps its older code `not_mobile`; every other type
/// (premium-rate, shared-cost, satellite, ...) is `number_type_not_allowed`.
/// With no valid channel the number is held to what a call may reach.
fn refuse_number_type(
    number: &PhoneNumber,
    channel: Option<Channel>,
) -> Option<(&'static str, String)> {
    let channel = channel.unwrap_or(Channel::Voice);
    if number.accepts(channel) {
        return None;
    }
    if number.number_type() == NumberType::FixedLine {
        return Some((
            "not_mobile",
            "This number cannot receive SMS; give a mobile number.".to_owned(),
        ));
    }
    Some((
        "number_type_not_allowed",
        format!(
            "OTPs are not sent to {} numbers; give a mobile number{}.",
            number.number_type(),
            match channel {
                Channel::Text => "",
                Channel::Voice => " or a fixed line",
            }
        ),
    ))
}

/// What [`send_otp`] makes of a body before it touches the store, without I/O:
/// the body decoded as `content_type` says (the extractor's size, type and
/// syntax checks), validated, and the message rendered with its code, which is
/// returned. Public for the fuzz target in `crates/otpgate/fuzz`.
pub fn check_send_body(
    content_type: &str,
    body: &[u8],
    limits: &crate::config::LimitsConfig,
) -> Result<String, ApiError> {
    let req = super::fields::read(super::extract::fields_from_body(content_type, body)?)?;
    let valid = validate(&req, limits).map_err(ApiError::validation)?;
    Ok(valid.template.render(&valid.code))
}

fn validate(
    req: &SendOtpRequest,
    limits: &crate::config::LimitsConfig,
) -> Result<ValidSend, Vec<FieldError>> {
    let mut errors = Vec::new();

    let channel =
        required_text(&req.sms_send_options, "sms_send_options", &mut errors).and_then(|s| {
            let parsed = Channel::parse(s.trim());
            if parsed.is_none() {
                errors.push(FieldError::new(
                    "sms_send_options",
                    "invalid_choice",
                    "sms_send_options must be \"text\" or \"voice\".",
                ));
            }
            parsed
        });

    let number = required_text(&req.number, "number", &mut errors).and_then(|s| {
        match PhoneNumber::parse(&s) {
            Ok(n) => {
                match refuse_number_type(&n, channel).or_else(|| limits.refuse_destination(&n)) {
                    Some((code, message)) => {
                        errors.push(FieldError::new("number", code, message));
                        None
                    }
                    None => Some(n),
                }
            }
            Err(e) => {
                errors.push(FieldError::new("number", "invalid", e.to_string()));
                None
            }
        }
    });

    let template = required_text(&req.message, "message", &mut errors).and_then(|s| {
        MessageTemplate::parse(&s)
            .map_err(|e| errors.push(FieldError::new("message", "invalid", e.to_string())))
            .ok()
    });

    let option = match text(&req.otp_options, "otp_options", &mut errors) {
        None => Some(OtpOption::Generated),
        Some(s) => {
            let parsed = OtpOption::parse(s.trim());
            if parsed.is_none() {
                errors.push(FieldError::new(
                    "otp_options",
                    "invalid_choice",
                    "otp_options must be \"generated\" or \"personnel\".",
                ));
            }
            parsed
        }
    };

    let own_code = text(&req.otp, "otp", &mut errors).filter(|s| !s.is_empty());
    let length = integer(&req.otp_length, "otp_length", &mut errors);
    let code = match (option, channel) {
        (Some(OtpOption::Personnel), Some(ch)) => match own_code {
            Some(c) => OtpCode::personnel(&c, ch)
                .map_err(|e| errors.push(FieldError::new("otp", "invalid", e.to_string())))
                .ok(),
            None => {
                errors.push(FieldError::new(
                    "otp",
                    "required",
                    "otp is required when otp_options is \"personnel\".",
                ));
                None
            }
        },
        (Some(OtpOption::Generated), _) => {
            if own_code.is_some() {
                errors.push(FieldError::new(
                    "otp",
                    "not_allowed",
                    "otp is only accepted when otp_options is \"personnel\".",
                ));
            }
            let len = match length {
                None => Some(OtpLength::default()),
                Some(n) => u32::try_from(n)
                    .ok()
                    .and_then(|n| OtpLength::new(n).ok())
                    .or_else(|| {
                        errors.push(FieldError::new(
                            "otp_length",
                            "out_of_range",
                            format!(
                                "otp_length must be between {} and {}.",
                                OtpLength::MIN,
                                OtpLength::MAX
                            ),
                        ));
                        None
                    }),
            };
            len.map(OtpCode::generate)
        }
        _ => None,
    };

    let mut voice = None;
    let mut length_factor = None;
    if channel == Some(Channel::Voice) {
        voice = match required_text(&req.voice_input, "voice_input", &mut errors) {
            Some(v) => {
                let parsed = Voice::parse(v.trim());
                if parsed.is_none() {
                    errors.push(FieldError::new(
                        "voice_input",
                        "invalid_choice",
                        "voice_input must be one of np_rija, np_prashanna, np_shreegya, np_binod.",
                    ));
                }
                parsed
            }
            None => None,
        };
        length_factor = match number_field(&req.length_factor, "length_factor", &mut errors) {
            None => Some(1.0),
            Some(f) if (LENGTH_FACTOR_RANGE.0..=LENGTH_FACTOR_RANGE.1).contains(&f) => Some(f),
            Some(_) => {
                errors.push(FieldError::new(
                    "length_factor",
                    "out_of_range",
                    "length_factor must be between 0.5 and 2.0.",
                ));
                None
            }
        };
    }

    let company_name = text(&req.company_name, "company_name", &mut errors).and_then(|s| {
        if s.chars().count() > MAX_COMPANY_NAME_CHARS {
            errors.push(FieldError::new(
                "company_name",
                "too_long",
                format!("company_name may have at most {MAX_COMPANY_NAME_CHARS} characters."),
            ));
            None
        } else if s.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "company_name",
                "invalid",
                "company_name may not contain control characters.",
            ));
            None
        } else {
            Some(s)
        }
    });

    let expiry_seconds =
        integer(&req.expiry_seconds, "expiry_seconds", &mut errors).and_then(|n| {
            let (min, max) = crate::codes::EXPIRY_RANGE;
            if (min..=max).contains(&n) {
                Some(n)
            } else {
                errors.push(FieldError::new(
                    "expiry_seconds",
                    "out_of_range",
                    format!("expiry_seconds must be between {min} and {max}."),
                ));
                None
            }
        });

    let fallback = validate_fallback(req, channel, option, code.as_ref(), &mut errors);

    match (number, template, channel, option, code) {
        (Some(number), Some(template), Some(channel), Some(option), Some(code))
            if errors.is_empty() =>
        {
            Ok(ValidSend {
                number,
                template,
                channel,
                option,
                code,
                voice,
                length_factor,
                company_name,
                expiry_seconds,
                fallback,
            })
        }
        _ => Err(errors),
    }
}

/// The fallback call a send asks for: `fallback_channel` (`voice` or
/// `none`, text sends only), `fallback_after_seconds` and
/// `fallback_voice_input` ([`fallback_fields`]). A voice fallback reads the
/// code, so a personnel code must be digits; a text send that does not say
/// takes its account's default, unless its code is not all digits (then it
/// gets none, without an error: it did not ask for a call).
fn validate_fallback(
    req: &SendOtpRequest,
    channel: Option<Channel>,
    option: Option<OtpOption>,
    code: Option<&OtpCode>,
    errors: &mut Vec<FieldError>,
) -> FallbackChoice {
    if channel == Some(Channel::Voice)
        && field_str(&req.fallback_channel).map(str::trim) == Some("voice")
    {
        errors.push(FieldError::new(
            "fallback_channel",
            "not_allowed",
            "A fallback call is only for sms_send_options \"text\".",
        ));
        return FallbackChoice::Off;
    }
    let readable = code.is_some_and(|c| c.as_str().bytes().all(|b| b.is_ascii_digit()));
    match fallback_fields(
        &req.fallback_channel,
        &req.fallback_after_seconds,
        &req.fallback_voice_input,
        errors,
    ) {
        Some(FallbackChoice::NotGiven) if channel == Some(Channel::Text) && readable => {
            FallbackChoice::NotGiven
        }
        Some(FallbackChoice::Voice(call)) => {
            if option == Some(OtpOption::Personnel) && code.is_some() && !readable {
                errors.push(FieldError::new(
                    "otp",
                    "invalid",
                    "A voice fallback reads the code out: a personnel code must be digits only.",
                ));
            }
            FallbackChoice::Voice(call)
        }
        _ => FallbackChoice::Off,
    }
}

/// The day `at` falls on in `tz` (days since 1970-01-01) and when it ends, for
/// the daily spend cap.
pub(crate) fn local_day(tz: chrono_tz::Tz, at: i64) -> (i64, i64) {
    use chrono::{NaiveDate, TimeZone};
    let fallback = (at.div_euclid(86_400_000_000), at + 86_400_000_000);
    let Some(utc) = chrono::DateTime::from_timestamp_micros(at) else {
        return fallback;
    };
    let date = utc.with_timezone(&tz).date_naive();
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
    let day = (date - epoch).num_days();
    let ends = date
        .succ_opt()
        .and_then(|next| next.and_hms_opt(0, 0, 0))
        .and_then(|midnight| tz.from_local_datetime(&midnight).earliest())
        .map(|t| t.timestamp_micros());
    match ends {
        Some(ends) => (day, ends),
        None => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::local_day;

    #[test]
    fn the_spend_day_turns_at_local_midnight() {
        let tz: chrono_tz::Tz = "Asia/Kathmandu".parse().unwrap();
        // 2026-11-26T18:14:59Z is 23:59:59 in Kathmandu (+05:45); a second later
        // the next local day starts, and it ends 24 hours after that.
        let before = 1_795_716_899_000_000;
        let (day, ends) = local_day(tz, before);
        assert_eq!(ends, before + 1_000_000);
        let (next, next_ends) = local_day(tz, ends);
        assert_eq!(next, day + 1);
        assert_eq!(next_ends, ends + 86_400_000_000);
        let utc: chrono_tz::Tz = "UTC".parse().unwrap();
        assert_eq!(local_day(utc, 0), (0, 86_400_000_000));
    }
}
