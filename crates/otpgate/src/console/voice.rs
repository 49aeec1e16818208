//! The console's voice page: type a message, pick one of the four voices and
//! a length factor, and listen to the prompt a voice OTP would play (with the
//! sample code), rendered by the preview endpoint's code
//! ([`crate::api::voice::validate`] and [`crate::api::voice::render_wav`]).
//!
//! - `GET /console/voice`: the form; with `message`, `voice_input` and
//!   `length_factor` in the query (the form's own GET: it changes nothing,
//!   so it needs no CSRF token), the fields are checked, each error shown
//!   next to its field with 400, and a valid request gets an audio player.
//! - `GET /console/voice/audio?...`: the WAV for the same fields (the
//!   player's source; `media-src 'self'` in the CSP).

use std::fmt::Write;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use otp_domain::channel::Voice;

use super::pages::{self, Page, esc, field_error};
use super::{field, require};
use crate::api::voice::{PreviewRequest, render_wav, validate};
use crate::state::AppState;

/// What the form starts with.
const DEFAULT_MESSAGE: &str = "तपाईंको कोड {otp} हो";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/voice", get(voice_page))
        .route("/console/voice/audio", get(audio))
}

/// The three fields, as typed.
struct Typed {
    message: String,
    voice: String,
    length_factor: String,
}

fn typed(params: &[(String, String)]) -> Option<Typed> {
    let message = field(params, "message")?;
    Some(Typed {
        message: message.to_owned(),
        voice: field(params, "voice_input").unwrap_or("").to_owned(),
        length_factor: field(params, "length_factor").unwrap_or("").to_owned(),
    })
}

fn request(t: &Typed) -> PreviewRequest {
    PreviewRequest::from_text(&t.message, &t.voice, &t.length_factor)
}

async fn voice_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let console = match require(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(t) = typed(&params) else {
        let blank = Typed {
            message: DEFAULT_MESSAGE.to_owned(),
            voice: Voice::ALL[0].as_str().to_owned(),
            length_factor: "1.0".to_owned(),
        };
        return form(&console.shell(), &blank, &[], None).into_response();
    };
    match validate(&request(&t)) {
        Ok(_) => {
            let src = format!(
                "/console/voice/audio?{}",
                serde_urlencoded::to_string([
                    ("message", t.message.as_str()),
                    ("voice_input", t.voice.as_str()),
                    ("length_factor", t.length_factor.as_str()),
                ])
                .unwrap_or_default()
            );
            form(&console.shell(), &t, &[], Some(&src)).into_response()
        }
        Err(errors) => {
            let errors: Vec<(String, String)> = errors
                .into_iter()
                .map(|e| (e.field.to_string(), e.message.to_string()))
                .collect();
            (
                StatusCode::BAD_REQUEST,
                form(&console.shell(), &t, &errors, None),
            )
                .into_response()
        }
    }
}

async fn audio(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = require(&state, &headers).await {
        return r;
    }
    let Some(t) = typed(&params) else {
        return Page::failure(StatusCode::NOT_FOUND).into_response();
    };
    let Ok(valid) = validate(&request(&t)) else {
        return Page::failure(StatusCode::NOT_FOUND).into_response();
    };
    match render_wav(&state, &valid).await {
        Ok(wav) => wav,
        Err(e) => Page::failure(e.status()).into_response(),
    }
}

fn form(
    shell: &pages::Shell,
    t: &Typed,
    errors: &[(String, String)],
    audio: Option<&str>,
) -> axum::response::Html<String> {
    let error = |name: &str| {
        errors
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, m)| m.clone())
    };
    let (message_attr, message_error) = field_error("message", &error("message"));
    let (voice_attr, voice_error) = field_error("voice_input", &error("voice_input"));
    let (factor_attr, factor_error) = field_error("length_factor", &error("length_factor"));
    let mut voices = String::new();
    for v in Voice::ALL {
        let selected = if v.as_str() == t.voice {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            voices,
            "<option value=\"{v}\"{selected}>{v}</option>",
            v = v.as_str()
        );
    }
    // A voice the list does not have stays visible, so its error makes sense.
    if !t.voice.is_empty() && Voice::parse(&t.voice).is_none() {
        let _ = write!(
            voices,
            "<option value=\"{v}\" selected>{v}</option>",
            v = esc(&t.voice)
        );
    }
    let mut main = format!(
        "<form method=\"get\" action=\"/console/voice\" class=\"card\">\
         <label for=\"message\">Message (<code>{{otp}}</code> is where the code is read out)</label>\
         <textarea id=\"message\" name=\"message\" rows=\"3\" maxlength=\"500\"{message_attr}>{message}</textarea>{message_error}\
         <label for=\"voice_input\">Voice</label>\
         <select id=\"voice_input\" name=\"voice_input\"{voice_attr}>{voices}</select>{voice_error}\
         <label for=\"length_factor\">Length factor (0.5 to 2.0; above 1 is slower)</label>\
         <input id=\"length_factor\" name=\"length_factor\" inputmode=\"decimal\" value=\"{factor}\"{factor_attr}>{factor_error}\
         <button type=\"submit\">Listen</button></form>",
        message = esc(&t.message),
        factor = esc(&t.length_factor),
    );
    if let Some(src) = audio {
        let _ = write!(
            main,
            "<section class=\"card\" aria-labelledby=\"listen-h\"><h2 id=\"listen-h\">The prompt</h2>\
             <p class=\"muted\">Read with the sample code 123456, as a call would play it.</p>\
             <audio id=\"prompt\" controls preload=\"auto\" src=\"{src}\">\
             <a href=\"{src}\">Download the prompt (WAV)</a></audio></section>",
            src = esc(src),
        );
    }
    pages::page(shell, "Voice", "Voice", &main)
}
