//! The HTTP API: one router per feature, merged here, plus what every route shares
//! (authentication, body parsing, the error envelope, metrics and request ids).

mod account_fallback;
mod account_rules;
mod admin;
mod envelope;
pub mod error;
mod extract;
mod fields;
mod guard;
mod keys;
pub(crate) mod list;
mod ops;
mod receipts;
mod send;
pub(crate) mod stats;
pub(crate) mod users;
mod verify;
pub(crate) mod voice;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::util::MapRequestLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

pub(crate) use crate::accounts::MAX_NAME_CHARS;
pub use error::{ApiError, FieldError};
pub use extract::MAX_BODY_BYTES;
pub use ops::ApiDoc;
pub use send::check_send_body;
pub(crate) use send::local_day;

use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API on one listener, with its middleware: development's default,
/// when no `admin_listen` is set. `pages` (the console) is served beside the
/// API behind the same middleware; the API itself knows nothing of it.
pub fn router(pages: Router<AppState>, state: AppState) -> Router {
    with_middleware(public_routes().merge(pages).merge(operator_routes()), state)
}

/// The public listener's routes when the operator's have a listener of their
/// own ([`admin_router`]): the API and `/healthz`.
pub fn public_router(pages: Router<AppState>, state: AppState) -> Router {
    with_middleware(
        public_routes().merge(pages).merge(ops::health_router()),
        state,
    )
}

/// The admin listener's routes: `/healthz`, `/readyz`, `/metrics`, `/docs`,
/// `/openapi.json`, the admin API, and `pages` (the console with its operator
/// pages).
pub fn admin_router(pages: Router<AppState>, state: AppState) -> Router {
    with_middleware(operator_routes().merge(pages), state)
}

/// What clients with an API key or a login use.
fn public_routes() -> Router<AppState> {
    Router::new()
        .merge(send::router())
        .merge(verify::router())
        .merge(list::router())
        .merge(stats::router())
        .merge(voice::router())
        .merge(users::router())
        .merge(webhooks::router())
        .merge(keys::router())
}

/// What the operator uses: health, readiness, metrics, the API's documents and
/// the admin API.
fn operator_routes() -> Router<AppState> {
    Router::new()
        .merge(ops::router())
        .merge(admin::router())
        .merge(account_rules::router())
        .merge(account_fallback::router())
        .merge(guard::router())
        .merge(receipts::router())
}

fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // Checked by `drop_unsafe_request_id`: a safe charset, 64 bytes at most.
            let id = req
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            // The method as its metric label (a client may send any token),
            // the path escaped, and never the query: it may carry phone numbers.
            tracing::info_span!(
                "request",
                method = crate::metrics::method_label(req.method()),
                path = ?req.uri().path(),
                request_id = %id
            )
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::new()))
        .layer(MapRequestLayer::new(drop_unsafe_request_id))
        // Outermost: it sees the status a panic became and the request id
        // that was kept or made, and its log line is in no request span
        // (whose path it must not carry).
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The longest client-sent request id kept.
const MAX_REQUEST_ID: usize = 64;

/// A client's `X-Request-Id` is kept (logged and echoed) only when it is one
/// header of 1 to 64 bytes of `[A-Za-z0-9._:-]`; anything else, which could
/// forge or garble a log line, is dropped and a generated id takes its place.
fn drop_unsafe_request_id(mut req: Request) -> Request {
    let mut ids = req.headers().get_all(&REQUEST_ID).iter();
    let safe = match (ids.next(), ids.next()) {
        (Some(id), None) => is_safe_request_id(id.as_bytes()),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !safe {
        req.headers_mut().remove(&REQUEST_ID);
    }
    req
}

fn is_safe_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Request ids for requests that come without one: 32 hex digits, a random
/// half drawn once per process (so two nodes do not collide) and a counter.
/// Unique within a process and cheap: no `getrandom` call per request, which a
/// random UUID costs.
#[derive(Clone)]
struct RequestIds {
    process: u64,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        RequestIds {
            process: rand::random(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}{n:016x}", self.process);
        axum::http::HeaderValue::from_str(&id)
            .ok()
            .map(RequestId::new)
    }
}

/// The account a request acted for, once its API key or access token was
/// checked: the extractors that check them fill it in, the access log reads it.
#[derive(Clone, Default)]
pub(crate) struct RequestAccount(Arc<AtomicI64>);

impl RequestAccount {
    /// Records `account_id` on the request in `extensions`, if it is observed.
    pub(crate) fn record(extensions: &axum::http::Extensions, account_id: i64) {
        if let Some(slot) = extensions.get::<RequestAccount>() {
            slot.0.store(account_id, Ordering::Relaxed);
        }
    }

    fn get(&self) -> Option<i64> {
        // Account ids start at 1: 0 is "none recorded".
        Some(self.0.load(Ordering::Relaxed)).filter(|id| *id > 0)
    }
}

/// Counts and times every request in the metrics and, with `log.access`, logs
/// one line for it (target `otpgate::access`, level `info`). The line holds
/// only what the server chose or checked: the method as its metric label, the
/// route template (`unmatched` for any other path), the status, the time taken,
/// the account the key or token belongs to, and the request id. Never the path
/// as sent, the query string, a header or the body, so no key, code or number
/// reaches it.
async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    // The route's template, or one value for every path no route knows.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = crate::metrics::method_label(req.method());
    let account = RequestAccount::default();
    req.extensions_mut().insert(account.clone());
    let response = next.run(req).await;
    let elapsed = started.elapsed();
    let status: StatusCode = response.status();
    state.metrics.inc(
        "otpgate_http_requests_total",
        &[
            ("route", &route),
            ("method", method),
            ("status", status.as_str()),
        ],
    );
    state.metrics.observe(
        "otpgate_http_request_duration_seconds",
        &[("route", &route)],
        elapsed.as_secs_f64(),
    );
    if state.config.log.access {
        // Set by `SetRequestIdLayer` after `drop_unsafe_request_id`: a safe
        // client id or a generated one.
        let request_id = response
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
        tracing::info!(
            target: "otpgate::access",
            method = %method,
            route = %route,
            status = status.as_u16(),
            duration_ms,
            account_id = account.get(),
            request_id = %request_id,
            "request"
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_safe_request_id;

    #[test]
    fn request_ids_are_kept_only_in_a_safe_charset_and_length() {
        assert!(is_safe_request_id(b"abc-123"));
        assert!(is_safe_request_id(b"2f1c.node-a:7_x"));
        assert!(is_safe_request_id("a".repeat(64).as_bytes()));
        assert!(!is_safe_request_id("a".repeat(65).as_bytes()));
        assert!(!is_safe_request_id(b""));
        for bad in [
            &b"a b"[..],
            b"x\n",
            b"a\"b",
            b"id=1 level=error",
            "\u{e9}t\u{e9}".as_bytes(),
        ] {
            assert!(!is_safe_request_id(bad), "{bad:?}");
        }
    }
}
