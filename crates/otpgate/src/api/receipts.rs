//! `GET /admin/v1/receipts/unmatched`: the delivery receipts of the last day
//! that matched no message (newest first, at most the last 300 per route),
//! with the id and text exactly as the SMSC sent them, so an operator sees a
//! spelling problem (say, an SMSC that answers `0000002a` and reports
//! `0000000042`, on a route set to `receipt_ids = "text"`) the day it starts.
//! Admin token, like the rest of `/admin/v1`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use otp_store::{UnmatchedReceipt, now_micros};

use super::admin::Admin;
use super::envelope::Envelope;
use super::error::{ApiError, FieldError};
use super::list::rfc3339;
use crate::state::AppState;

/// Most receipts one call returns, and the default.
const MAX_LIMIT: u32 = 500;
const DEFAULT_LIMIT: u32 = 100;
/// Longest route name taken as a filter (route names are the operator's).
const MAX_ROUTE_CHARS: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/receipts/unmatched", get(list_unmatched))
        .route("/admin/v1/receipts/unmatched/", get(list_unmatched))
}

/// A receipt that matched no message.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnmatchedReceiptView {
    /// The route it came in on.
    pub route: String,
    /// The id it names, as the SMSC wrote it.
    pub message_id: String,
    /// Its state word (`DELIVRD`, `UNDELIV`, ...).
    pub state: String,
    /// `no_match` (no message of the route fits the id, in any spelling the
    /// route's `receipt_ids` allows), `ambiguous` (more than one does) or
    /// `too_long` (an id over 64 characters).
    pub reason: String,
    /// The receipt's text as received (at most 300 characters).
    pub text: String,
    /// RFC 3339 in the configured zone.
    pub received_at: String,
}

fn view(r: UnmatchedReceipt, state: &AppState) -> UnmatchedReceiptView {
    UnmatchedReceiptView {
        received_at: rfc3339(r.received_at, &state.tz),
        route: r.route,
        message_id: r.message_id,
        state: r.state,
        reason: r.reason,
        text: r.text,
    }
}

/// Receipts of the last day that matched no message, newest first.
#[utoipa::path(
    get,
    path = "/admin/v1/receipts/unmatched",
    tag = "admin",
    params(
        ("route" = Option<String>, Query, description = "Only this route"),
        ("limit" = Option<u32>, Query, description = "At most this many (1-500, default 100)"),
    ),
    responses(
        (status = 200, description = "The unmatched receipts", body = Envelope<Vec<UnmatchedReceiptView>>),
        (status = 400, description = "`limit` not a whole number from 1 to 500 (`invalid`), or `route` over 100 characters (`too_long`)", body = super::error::ErrorEnvelope),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "The admin API is off (no `admin.token`)", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn list_unmatched(
    _: Admin,
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Envelope<Vec<UnmatchedReceiptView>>>, ApiError> {
    let mut errors = Vec::new();
    let limit = match params.get("limit").map(|l| l.trim().parse::<u32>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                "invalid",
                format!("limit must be a whole number from 1 to {MAX_LIMIT}."),
            ));
            DEFAULT_LIMIT
        }
    };
    let route = params.get("route").map(|r| r.trim().to_owned());
    if route
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_ROUTE_CHARS)
    {
        errors.push(FieldError::new(
            "route",
            "too_long",
            format!("route may have at most {MAX_ROUTE_CHARS} characters."),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let rows = state
        .store
        .unmatched_receipts(route, limit, now_micros())
        .await?;
    Ok(Json(Envelope::ok(
        "Unmatched delivery receipts.",
        rows.into_iter().map(|r| view(r, &state)).collect(),
    )))
}
