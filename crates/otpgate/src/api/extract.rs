//! Extractors: who is calling, and the request body as a map of fields.
//!
//! [`Caller`] also checks the key's scope against the one the matched route
//! needs ([`required_scope`]), so every route that takes an API key is checked
//! in one place, before its body is read.

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use futures_util::StreamExt;
use otp_store::Scope;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::{ApiError, FieldError};
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
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or("", MatchedPath::as_str);
        let needed = required_scope(route);
        let checked = if store_rechecks_key(route) {
            auth::authenticate_cached(&state.store, &state.key_cache, header).await
        } else {
            auth::authenticate(&state.store, header).await
        };
        match checked {
            Ok(caller) => {
                super::RequestAccount::record(&parts.extensions, caller.account_id);
                state
                    .last_used
                    .record(caller.key_row, otp_store::now_micros());
                if caller.may(needed) {
                    Ok(caller)
                } else {
                    Err(insufficient_scope(needed))
                }
            }
            Err(AuthFailure::Missing) => Err(ApiError::unauthenticated(
                "Authentication credentials were not provided.",
            )),
            Err(AuthFailure::Invalid) => Err(ApiError::unauthenticated("Invalid token.")),
            Err(AuthFailure::AccountDisabled) => Err(ApiError::account_disabled()),
            Err(AuthFailure::Store(e)) => Err(e.into()),
        }
    }
}

/// The scope an API key needs for a route, by the route's template (a trailing
/// `/` ignored). A route that takes an API key and is not listed needs
/// `account`, the strongest scope: a forgotten entry refuses too much, never
/// too little.
pub(crate) fn required_scope(route: &str) -> Scope {
    match route.trim_end_matches('/') {
        "/api/v1/auths/send/otp" => Scope::Send,
        "/api/v1/auths/verify/otp" => Scope::Verify,
        "/api/v1/auths/list/send-otps"
        | "/api/v1/auths/otps/{id}"
        | "/api/v1/auths/voices"
        | "/api/v1/auths/voice/preview"
        | "/api/v1/auths/webhook/deliveries"
        | "/api/v1/auths/stats"
        | "/api/v1/auths/user-profile"
        | "/api/v1/auths/user-detail"
        | "/api/v1/auths/get-api-keys" => Scope::Read,
        // Named for the reader; the default would say the same.
        "/api/v1/auths/webhook"
        | "/api/v1/auths/api-keys"
        | "/api/v1/auths/api-keys/{key_id}/revoke"
        | "/api/v1/auths/generate-api-keys" => Scope::Account,
        _ => Scope::Account,
    }
}

/// Whether the store refuses a revoked key inside the transaction behind
/// every effect of the route, so that its key check may come from the cache
/// (`auth::authenticate_cached`): only the send, whose accepting transaction
/// reads the key's row. A revoked key's send on a node with a stale cache is
/// refused there with the same 401, and nothing is written; what it can
/// still get first is the answer to a malformed body (400), which reveals
/// nothing stored.
pub(crate) fn store_rechecks_key(route: &str) -> bool {
    route.trim_end_matches('/') == "/api/v1/auths/send/otp"
}

/// 403: the key is valid but may not do this.
pub(crate) fn insufficient_scope(needed: Scope) -> ApiError {
    let name = needed.as_str();
    ApiError::refusal(
        StatusCode::FORBIDDEN,
        FieldError::new(
            "authorization",
            "insufficient_scope",
            format!("This API key does not have the \"{name}\" scope this request needs."),
        ),
        Some(serde_json::json!({ "required_scope": name })),
    )
}

/// A JSON object or a form body, read into the request struct `R` (see
/// [`super::fields`]).
pub struct Fields<R>(pub R);

impl<S: Send + Sync, R: DeserializeOwned> FromRequest<S> for Fields<R> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let (fields, _) = read_fields(req).await?;
        super::fields::read(fields).map(Fields)
    }
}

/// [`Fields`] and the body's bytes as they came (an `Idempotency-Key` is
/// bound to them).
pub struct FieldsAndBody<R> {
    pub fields: R,
    pub body: bytes::Bytes,
}

impl<S: Send + Sync, R: DeserializeOwned> FromRequest<S> for FieldsAndBody<R> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let (fields, body) = read_fields(req).await?;
        let fields = super::fields::read(fields)?;
        Ok(FieldsAndBody { fields, body })
    }
}

/// [`Fields`] for a body that may be left out: no body at all (whatever the
/// `Content-Type`) is no fields; a body is read as [`Fields`] reads it. For
/// POSTs whose every field is optional, which clients send without a body.
pub struct OptionalFields<R>(pub R);

impl<S: Send + Sync, R: DeserializeOwned> FromRequest<S> for OptionalFields<R> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let content_type = content_type(&req);
        let bytes = read_body(req).await?;
        let fields = if bytes.is_empty() {
            Map::new()
        } else {
            decode_fields(body_kind(&content_type)?, &bytes)?
        };
        super::fields::read(fields).map(OptionalFields)
    }
}

fn content_type(req: &Request) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Refuses a body declared larger than [`MAX_BODY_BYTES`] (after draining it).
async fn refuse_declared_oversize(req: Request) -> Result<Request, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        drain(req.into_body().into_data_stream()).await;
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
    }
    Ok(req)
}

/// The whole body, at most [`MAX_BODY_BYTES`].
async fn read_body(req: Request) -> Result<bytes::Bytes, ApiError> {
    let req = refuse_declared_oversize(req).await?;
    collect_body(req.into_body().into_data_stream()).await
}

async fn read_fields(req: Request) -> Result<(Map<String, Value>, bytes::Bytes), ApiError> {
    let content_type = content_type(&req);
    let req = refuse_declared_oversize(req).await?;
    let kind = body_kind(&content_type)?;
    let bytes = collect_body(req.into_body().into_data_stream()).await?;
    Ok((decode_fields(kind, &bytes)?, bytes))
}

async fn collect_body(mut body: axum::body::BodyDataStream) -> Result<bytes::Bytes, ApiError> {
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
    Ok(bytes.freeze())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_key_route_needs_its_scope_and_unknown_routes_need_account() {
        for (route, scope) in [
            ("/api/v1/auths/send/otp/", Scope::Send),
            ("/api/v1/auths/send/otp", Scope::Send),
            ("/api/v1/auths/verify/otp/", Scope::Verify),
            ("/api/v1/auths/list/send-otps/", Scope::Read),
            ("/api/v1/auths/otps/{id}", Scope::Read),
            ("/api/v1/auths/voices/", Scope::Read),
            ("/api/v1/auths/voice/preview/", Scope::Read),
            ("/api/v1/auths/webhook/deliveries/", Scope::Read),
            ("/api/v1/auths/stats/", Scope::Read),
            ("/api/v1/auths/user-profile/", Scope::Read),
            ("/api/v1/auths/user-detail/", Scope::Read),
            ("/api/v1/auths/get-api-keys/", Scope::Read),
            ("/api/v1/auths/generate-api-keys/", Scope::Account),
            ("/api/v1/auths/webhook/", Scope::Account),
            ("/api/v1/auths/api-keys/", Scope::Account),
            ("/api/v1/auths/some-new-route/", Scope::Account),
            ("", Scope::Account),
        ] {
            assert_eq!(required_scope(route), scope, "{route}");
        }
    }

    #[test]
    fn only_the_send_route_authenticates_from_the_key_cache() {
        assert!(store_rechecks_key("/api/v1/auths/send/otp/"));
        assert!(store_rechecks_key("/api/v1/auths/send/otp"));
        for route in [
            "/api/v1/auths/verify/otp/",
            "/api/v1/auths/list/send-otps/",
            "/api/v1/auths/api-keys/{key_id}/revoke/",
            "",
        ] {
            assert!(!store_rechecks_key(route), "{route}");
        }
    }
}
