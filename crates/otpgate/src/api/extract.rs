//! Extractors: who is calling, and the request body as a map of fields.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::auth::{self, AuthFailure, Caller};
use crate::state::AppState;

/// The largest request body accepted: 64 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        match auth::authenticate(&state.store, header).await {
            Ok(caller) => {
                state
                    .last_used
                    .record(caller.key_row, otp_store::now_micros());
                Ok(caller)
            }
            Err(AuthFailure::Missing) => Err(ApiError::unauthenticated(
                "Authentication credentials were not provided.",
            )),
            Err(AuthFailure::Invalid) => Err(ApiError::unauthenticated("Invalid token.")),
            Err(AuthFailure::Store(e)) => Err(e.into()),
        }
    }
}

/// A JSON object or a form body, as a map of fields.
pub struct Fields(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        read_fields(req).await.map(|(fields, _)| Fields(fields))
    }
}

/// [`Fields`] and the body's bytes as they came (an `Idempotency-Key` is
/// bound to them).
pub struct FieldsAndBody {
    pub fields: Map<String, Value>,
    pub body: bytes::Bytes,
}

impl<S: Send + Sync> FromRequest<S> for FieldsAndBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        read_fields(req)
            .await
            .map(|(fields, body)| FieldsAndBody { fields, body })
    }
}

async fn read_fields(req: Request) -> Result<(Map<String, Value>, bytes::Bytes), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        drain(req.into_body().into_data_stream()).await;
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
    }
    let kind = body_kind(&content_type)?;
    let mut body = req.into_body().into_data_stream();
    let mut bytes = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::malformed("The request body could not be read."))?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            drain(body).await;
            return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
        }
        bytes.extend_from_slice(&chunk);
    }
    let bytes = bytes.freeze();
    Ok((decode_fields(kind, &bytes)?, bytes))
}

/// The two body types the API reads.
#[derive(Clone, Copy)]
enum BodyKind {
    Json,
    Form,
}

/// JSON (`application/json`, `application/*+json`) or a form, from the
/// `Content-Type` header; 415 for anything else.
fn body_kind(content_type: &str) -> Result<BodyKind, ApiError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(BodyKind::Json)
    } else if mime == "application/x-www-form-urlencoded" {
        Ok(BodyKind::Form)
    } else {
        let shown = if mime.is_empty() {
            "none"
        } else {
            mime.as_str()
        };
        Err(ApiError::unsupported_media_type(shown))
    }
}

/// A whole body as a map of fields: a JSON object, or form pairs as strings.
fn decode_fields(kind: BodyKind, bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match kind {
        BodyKind::Json => {
            let value: Value = serde_json::from_slice(bytes).map_err(|e| {
                ApiError::malformed(format!("JSON parse error: {}.", json_error_summary(&e)))
            })?;
            match value {
                Value::Object(map) => Ok(map),
                _ => Err(ApiError::malformed("The JSON body must be an object.")),
            }
        }
        BodyKind::Form => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)
                .map_err(|_| ApiError::malformed("The form body could not be decoded."))?;
            Ok(pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect())
        }
    }
}

/// What the extractors make of a body already in memory, checks in the same
/// order (size, then type, then content); for [`super::send::check_send_body`].
pub(super) fn fields_from_body(
    content_type: &str,
    body: &[u8],
) -> Result<Map<String, Value>, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
    }
    decode_fields(body_kind(content_type)?, body)
}

/// Reads and drops what is left of a refused body (at most 1 MiB, for at most two
/// seconds), so a client still sending it gets to read our 413 instead of a reset
/// connection; a larger or slower body is cut off.
async fn drain(mut stream: axum::body::BodyDataStream) {
    const MOST: usize = 1024 * 1024;
    let mut seen = 0;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > MOST {
                break;
            }
        }
    })
    .await;
}

/// serde_json's message without echoing the input.
fn json_error_summary(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "the body could not be read",
        Category::Syntax => "invalid JSON syntax",
        Category::Data => "unexpected data",
        Category::Eof => "the body ended too early",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}
