//! The HTTP API: one router per feature, merged here, plus what every route shares
//! (authentication, body parsing, the error envelope, metrics and request ids).

mod admin;
pub mod error;
mod extract;
mod keys;
pub(crate) mod list;
mod ops;
mod receipts;
mod send;
mod users;
mod verify;
mod voice;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

pub use error::{ApiError, FieldError};
pub use extract::MAX_BODY_BYTES;
pub use ops::ApiDoc;
pub use send::check_send_body;

use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API with its middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(send::router())
        .merge(verify::router())
        .merge(list::router())
        .merge(ops::router())
        .merge(voice::router())
        .merge(users::router())
        .merge(admin::router())
        .merge(webhooks::router())
        .merge(receipts::router())
        .merge(keys::router())
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                // The path only: query strings may carry phone numbers.
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::new()))
        .with_state(state)
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

async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let response = next.run(req).await;
    let status: StatusCode = response.status();
    state.metrics.inc(
        "otpgate_http_requests_total",
        &[
            ("route", &route),
            ("method", method.as_str()),
            ("status", status.as_str()),
        ],
    );
    state.metrics.observe(
        "otpgate_http_request_duration_seconds",
        &[("route", &route)],
        started.elapsed().as_secs_f64(),
    );
    response
}
