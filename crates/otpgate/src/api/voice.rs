//! `GET /api/v1/auths/voices/` and `POST /api/v1/auths/voice/preview/`.
//!
//! The preview renders through the same [`Prompter`](crate::delivery::voice::Prompter)
//! as calls, so its WAV is exactly what a call would play. It charges nothing and
//! writes nothing.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use otp_domain::channel::{Channel, Voice};
use otp_domain::code::OtpCode;
use otp_domain::message::MessageTemplate;

use super::envelope::Envelope;
use super::error::{ApiError, ErrorEnvelope, FieldError};
use super::extract::Fields;
use super::fields::{Raw, nonempty_text, number_field, required_nonempty};
use crate::auth::Caller;
use crate::delivery::voice::{Prompt, gender};
use crate::state::AppState;

/// The code a preview reads out when the request names none.
pub const SAMPLE_CODE: &str = "123456";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auths/voices/", get(list_voices))
        .route("/api/v1/auths/voices", get(list_voices))
        .route("/api/v1/auths/voice/preview/", post(preview))
        .route("/api/v1/auths/voice/preview", post(preview))
}

/// One voice of the API and how it is produced.
#[derive(Debug, Serialize, ToSchema)]
pub struct VoiceItem {
    /// The value of `voice_input`.
    #[schema(example = "np_rija")]
    pub name: String,
    /// `female` or `male`.
    pub gender: String,
    /// espeak-ng voice (language and variant).
    #[schema(example = "ne+f3")]
    pub espeak_voice: String,
    /// espeak-ng pitch, 0-99.
    pub pitch: u8,
    /// Speaking rate at `length_factor` 1.0, words per minute.
    pub rate_wpm: u16,
}

/// The preview request (JSON or form); each field is checked by [`validate`],
/// which reports every problem at once.
#[derive(Deserialize, ToSchema)]
pub struct PreviewRequest {
    /// The text, with `{otp}` where the code is read out.
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "तपाईंको कोड {otp} हो")]
    message: Raw,
    /// `np_rija`, `np_prashanna`, `np_shreegya` or `np_binod`.
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "np_rija")]
    voice_input: Raw,
    /// 4-10 digits; default `123456`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    otp: Raw,
    /// 0.5-2.0, default 1.0; above 1 is slower.
    #[serde(default)]
    #[schema(value_type = Option<f64>)]
    length_factor: Raw,
}

/// The voices a voice OTP can use.
#[utoipa::path(
    get,
    path = "/api/v1/auths/voices/",
    tag = "voice",
    responses(
        (status = 200, description = "The four voices", body = Envelope<Vec<VoiceItem>>),
        (status = 401, description = "Missing, invalid or revoked key", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn list_voices(
    State(state): State<AppState>,
    _caller: Caller,
) -> Json<Envelope<Vec<VoiceItem>>> {
    let data = Voice::ALL
        .into_iter()
        .filter_map(|voice| {
            let p = state.voice.profile(voice)?;
            Some(VoiceItem {
                name: voice.as_str().to_owned(),
                gender: gender(voice).to_owned(),
                espeak_voice: p.espeak_voice.clone(),
                pitch: p.pitch,
                rate_wpm: p.rate_wpm,
            })
        })
        .collect();
    Json(Envelope::data(data))
}

/// The WAV a voice OTP with this message, voice and code would play.
#[utoipa::path(
    post,
    path = "/api/v1/auths/voice/preview/",
    tag = "voice",
    request_body(content = PreviewRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "8 kHz mono 16-bit WAV", content_type = "audio/wav", body = Vec<u8>),
        (status = 400, description = "Invalid request", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or revoked key", body = ErrorEnvelope),
        (status = 503, description = "Speech synthesis is not available on this server", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn preview(
    State(state): State<AppState>,
    _caller: Caller,
    Fields(req): Fields<PreviewRequest>,
) -> Result<Response, ApiError> {
    let valid = validate(&req).map_err(ApiError::validation)?;
    render_wav(&state, &valid).await
}

/// The WAV of a checked preview (the console's voice page plays it too).
pub(crate) async fn render_wav(
    state: &AppState,
    valid: &ValidPreview,
) -> Result<Response, ApiError> {
    let prompt = Prompt {
        voice: valid.voice,
        template: &valid.template,
        code: &valid.code,
        length_factor: valid.length_factor,
    };
    match state.voice.render(&prompt).await {
        Ok(audio) => Ok((
            [
                (header::CONTENT_TYPE, "audio/wav"),
                // It carries a code, even if a sample one.
                (header::CACHE_CONTROL, "no-store"),
            ],
            audio.to_wav_bytes(),
        )
            .into_response()),
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "voice preview could not be rendered");
            let message = if e.is_engine_missing() {
                "Speech synthesis is not available on this server (espeak-ng is not installed)."
            } else {
                "Speech synthesis failed; try again."
            };
            Err(ApiError::refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                FieldError::new("non_field_errors", "unavailable", message),
                None,
            ))
        }
        // Validation above admits only what the renderer can speak.
        Err(e) => Err(ApiError::internal(e)),
    }
}

pub(crate) struct ValidPreview {
    template: MessageTemplate,
    voice: Voice,
    code: OtpCode,
    length_factor: f64,
}

pub(crate) fn validate(req: &PreviewRequest) -> Result<ValidPreview, Vec<FieldError>> {
    let mut errors = Vec::new();
    let template = required_nonempty(&req.message, "message", &mut errors).and_then(|s| {
        MessageTemplate::parse(&s)
            .map_err(|e| errors.push(FieldError::new("message", "invalid", e.to_string())))
            .ok()
    });
    let voice = required_nonempty(&req.voice_input, "voice_input", &mut errors).and_then(|s| {
        let parsed = Voice::parse(s.trim());
        if parsed.is_none() {
            errors.push(FieldError::new(
                "voice_input",
                "invalid_choice",
                "voice_input must be one of np_rija, np_prashanna, np_shreegya, np_binod.",
            ));
        }
        parsed
    });
    let code = match nonempty_text(&req.otp, "otp", &mut errors) {
        None => Some(OtpCode::personnel(SAMPLE_CODE, Channel::Voice).expect("a valid sample")),
        Some(s) => OtpCode::personnel(&s, Channel::Voice)
            .map_err(|e| errors.push(FieldError::new("otp", "invalid", e.to_string())))
            .ok(),
    };
    let length_factor = match number_field(&req.length_factor, "length_factor", &mut errors) {
        None if errors.iter().any(|e| e.field == "length_factor") => None,
        None => Some(1.0),
        Some(f) if (0.5..=2.0).contains(&f) => Some(f),
        Some(_) => {
            errors.push(FieldError::new(
                "length_factor",
                "out_of_range",
                "length_factor must be between 0.5 and 2.0.",
            ));
            None
        }
    };
    match (template, voice, code, length_factor) {
        (Some(template), Some(voice), Some(code), Some(length_factor)) if errors.is_empty() => {
            Ok(ValidPreview {
                template,
                voice,
                code,
                length_factor,
            })
        }
        _ => Err(errors),
    }
}

impl PreviewRequest {
    /// A request from text fields as a form gives them (the console's voice
    /// page); an empty `length_factor` is the default.
    pub(crate) fn from_text(message: &str, voice_input: &str, length_factor: &str) -> Self {
        let text = |v: &str| -> Raw {
            serde_json::from_value(serde_json::Value::String(v.to_owned())).unwrap_or_default()
        };
        PreviewRequest {
            message: text(message),
            voice_input: text(voice_input),
            otp: Raw::default(),
            length_factor: if length_factor.trim().is_empty() {
                Raw::default()
            } else {
                text(length_factor)
            },
        }
    }
}
