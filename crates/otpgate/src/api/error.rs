//! The one error envelope, and the one place an error becomes a response.
//!
//! Every failure leaves as `{status, success: false, message, errors, data: null}`
//! with the matching HTTP status; 401s also carry DRF's `detail`. Internal causes
//! are logged here and never sent to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// One thing wrong with a request.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// The request field at fault, or `non_field_errors`.
    pub field: String,
    /// A stable machine-readable reason, e.g. `required`, `invalid`, `out_of_range`.
    pub code: String,
    /// A sentence for a person.
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, code: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_owned(),
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub status: u16,
    pub success: bool,
    pub message: String,
    pub errors: Vec<FieldError>,
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    /// Present on 401, as Django REST Framework clients expect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An error on its way to becoming a response (boxed: handlers return it often
/// and it should cost a pointer in their `Result`).
#[derive(Debug)]
pub struct ApiError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    status: StatusCode,
    message: String,
    errors: Vec<FieldError>,
    detail: Option<String>,
    data: Option<serde_json::Value>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError::from_inner(Inner {
            status,
            message: message.into(),
            errors: Vec::new(),
            detail: None,
            data: None,
            retry_after: None,
        })
    }

    fn from_inner(inner: Inner) -> Self {
        ApiError(Box::new(inner))
    }

    fn inner(self) -> Inner {
        *self.0
    }

    /// 400 with the list of what is wrong.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let message = match errors.as_slice() {
            [one] => one.message.clone(),
            _ => "The request has invalid fields.".to_owned(),
        };
        ApiError::from_inner(Inner {
            errors,
            ..ApiError::new(StatusCode::BAD_REQUEST, message).inner()
        })
    }

    /// 400 for a body that could not be read as the declared type.
    pub fn malformed(message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::from_inner(Inner {
            errors: vec![FieldError::new(
                "non_field_errors",
                "parse_error",
                message.clone(),
            )],
            ..ApiError::new(StatusCode::BAD_REQUEST, message).inner()
        })
    }

    pub fn unauthenticated(detail: &str) -> Self {
        ApiError::from_inner(Inner {
            detail: Some(detail.to_owned()),
            errors: vec![FieldError::new(
                "authorization",
                "not_authenticated",
                detail,
            )],
            ..ApiError::new(StatusCode::UNAUTHORIZED, detail).inner()
        })
    }

    /// 403: the caller's account is disabled by an operator; nothing was done.
    pub fn account_disabled() -> Self {
        let message = "This account is disabled; ask the gateway's operator.";
        ApiError::from_inner(Inner {
            errors: vec![FieldError::new(
                "authorization",
                "account_disabled",
                message,
            )],
            ..ApiError::new(StatusCode::FORBIDDEN, message).inner()
        })
    }

    pub fn insufficient_credits(kind: &str, needed: i64, left: i64) -> Self {
        let message = format!(
            "Insufficient {kind} credits: this OTP needs {needed}, the account has {left}."
        );
        ApiError::from_inner(Inner {
            errors: vec![FieldError::new(
                "credits",
                "insufficient_credits",
                message.clone(),
            )],
            data: Some(serde_json::json!({ "credits_needed": needed, "credits_remaining": left })),
            ..ApiError::new(StatusCode::PAYMENT_REQUIRED, message).inner()
        })
    }

    /// 429: a limit on sends to the number refused this one; `Retry-After` says
    /// when one can pass.
    pub fn rate_limited(code: &str, message: impl Into<String>, retry_after: u64) -> Self {
        let message = message.into();
        ApiError::from_inner(Inner {
            errors: vec![FieldError::new("number", code, message.clone())],
            data: Some(serde_json::json!({ "retry_after": retry_after })),
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).inner()
        })
    }

    pub fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "Not found.")
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is larger than {} KiB.", limit / 1024),
        )
    }

    pub fn unsupported_media_type(got: &str) -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Unsupported media type \"{got}\": send application/json or application/x-www-form-urlencoded."
            ),
        )
    }

    /// 503: the store cannot be reached; the client may retry.
    pub fn unavailable() -> Self {
        ApiError::from_inner(Inner {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is temporarily unavailable; nothing was sent or charged. Try again.",
            )
            .inner()
        })
    }

    /// A refusal with its own status, one reason (`errors[0]`, whose `message`
    /// is also the envelope's) and optional `data`; used for outcomes such as a
    /// wrong or expired code.
    pub fn refusal(
        status: StatusCode,
        reason: FieldError,
        data: Option<serde_json::Value>,
    ) -> Self {
        ApiError::from_inner(Inner {
            data,
            errors: vec![reason.clone()],
            ..ApiError::new(status, reason.message).inner()
        })
    }

    /// The same error with a `Retry-After` header, in seconds.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.0.retry_after = Some(seconds);
        self
    }

    /// 500 whose cause is logged, not told.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error.")
    }

    /// The message the envelope carries (never an internal cause).
    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }
}

/// While the database is down or full every request fails the same way: one
/// line a second says so instead of one per request, which on a full disk
/// would only make it fuller.
static STORE_LOG: LogThrottle = LogThrottle::new();

/// Lets one log line a second through (also for floods of refusals elsewhere).
pub(crate) struct LogThrottle(std::sync::atomic::AtomicU64);

impl LogThrottle {
    pub(crate) const fn new() -> Self {
        LogThrottle(std::sync::atomic::AtomicU64::new(0))
    }

    /// True at most once per wall-clock second.
    pub(crate) fn allow(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.allow_at(now)
    }

    fn allow_at(&self, now: u64) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.0.load(Ordering::Relaxed);
        now > last
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl From<otp_store::StoreError> for ApiError {
    fn from(e: otp_store::StoreError) -> Self {
        match e {
            otp_store::StoreError::Unavailable(cause) => {
                if STORE_LOG.allow() {
                    tracing::warn!(error = %cause, "store unavailable (logged at most once a second)");
                }
                ApiError::unavailable()
            }
            otp_store::StoreError::Full => {
                if STORE_LOG.allow() {
                    tracing::error!("store full: refusing writes (logged at most once a second)");
                }
                ApiError::refusal(
                    StatusCode::INSUFFICIENT_STORAGE,
                    FieldError::new(
                        "non_field_errors",
                        "storage_full",
                        "The gateway's storage is full; nothing was sent or charged.",
                    ),
                    None,
                )
            }
            otp_store::StoreError::TimedOut => {
                if STORE_LOG.allow() {
                    tracing::warn!(
                        "a list query ran past store.list_timeout_ms and was stopped (logged at most once a second)"
                    );
                }
                ApiError::refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    FieldError::new(
                        "non_field_errors",
                        "query_timeout",
                        "The query took too long and was stopped; nothing changed. \
                         Try again later, or narrow the filters.",
                    ),
                    None,
                )
                .with_retry_after(QUERY_TIMEOUT_RETRY_SECONDS)
            }
            other => ApiError::internal(other),
        }
    }
}

/// `Retry-After` of a query stopped at its time budget: a query that heavy
/// is likely to be stopped again if tried at once.
pub const QUERY_TIMEOUT_RETRY_SECONDS: u64 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let this = self.inner();
        let body = ErrorEnvelope {
            status: this.status.as_u16(),
            success: false,
            message: this.message,
            errors: this.errors,
            data: this.data,
            detail: this.detail,
        };
        let mut response = (this.status, Json(body)).into_response();
        if this.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"api\""),
            );
        }
        if let Some(secs) = this.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod store_error_tests {
    use super::*;

    #[tokio::test]
    async fn a_full_store_is_507_storage_full_and_an_outage_503() {
        let full = ApiError::from(otp_store::StoreError::Full).into_response();
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        let body = axum::body::to_bytes(full.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["success"], false);
        assert_eq!(body["errors"][0]["code"], "storage_full");
        let down = ApiError::from(otp_store::StoreError::Unavailable("gone".into()));
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_stopped_query_is_503_query_timeout_with_retry_after() {
        let r = ApiError::from(otp_store::StoreError::TimedOut).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errors"][0]["code"], "query_timeout");
        assert_eq!(body["status"], 503);
    }

    #[test]
    fn the_store_log_throttle_lets_one_line_a_second_through() {
        let throttle = LogThrottle::new();
        assert!(throttle.allow_at(100));
        assert!(!throttle.allow_at(100), "a second line in the same second");
        assert!(!throttle.allow_at(99), "a clock that went back");
        assert!(throttle.allow_at(101));
    }
}
