//! `GET /api/v1/auths/stats/`: the caller's conversion aggregates over the
//! last hour, day or week, grouped by channel, route, country or operator
//! prefix. Read from the store's per-minute aggregates
//! ([`otp_store::conversions`]), never from OTP rows, so its cost does not
//! grow with the account's history.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use otp_store::conversions::{Counts, Dimension, StatsGroup, StatsQuery};
use otp_store::{Micros, now_micros};

use super::envelope::Envelope;
use super::error::{ApiError, FieldError};
use super::list::rfc3339;
use crate::auth::Caller;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auths/stats/", get(stats))
        .route("/api/v1/auths/stats", get(stats))
}

/// A window the stats cover, ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    Week,
}

impl Window {
    pub const ALL: [Window; 3] = [Window::Hour, Window::Day, Window::Week];

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Week => "week",
        }
    }

    pub fn parse(s: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == s)
    }

    pub fn micros(self) -> Micros {
        const HOUR: Micros = 3_600_000_000;
        match self {
            Window::Hour => HOUR,
            Window::Day => 24 * HOUR,
            Window::Week => 7 * 24 * HOUR,
        }
    }
}

/// One group's counts, rates and medians.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsItem {
    /// The group: `text` or `voice`; a route's name (`null`: before any
    /// carrier took the message); a country calling code (`977`); an
    /// operator prefix, the calling code and three national digits
    /// (`+977984`). `null` also for a number with no known calling code.
    #[schema(example = "+977984")]
    pub key: Option<String>,
    /// Sends accepted (no route yet: under `group_by=route` they are the
    /// `null` group).
    pub sent: i64,
    /// Messages a carrier took.
    pub submitted: i64,
    /// Messages the carrier's receipt reported delivered.
    pub delivered: i64,
    /// Never handed to a carrier, or reported undeliverable, expired or rejected.
    pub failed: i64,
    /// Codes verified.
    pub verified: i64,
    /// `delivered / submitted`; `null` when nothing was submitted.
    pub delivery_rate: Option<f64>,
    /// `verified / sent`, or `verified / submitted` under `group_by=route`
    /// (a send has no route until a carrier takes it); `null` when zero.
    pub verification_rate: Option<f64>,
    /// Median time from acceptance to the delivery receipt, in
    /// milliseconds, estimated from a histogram (buckets at 1, 2, 5, 10,
    /// 30, 60, 120, 300 and 900 s); `null` when nothing was delivered.
    pub median_delivery_ms: Option<i64>,
    /// Median time from acceptance to verification, as above.
    pub median_verify_ms: Option<i64>,
}

impl StatsItem {
    /// The item of one group of a query grouped `by`.
    pub fn of(group: &StatsGroup, by: Dimension) -> StatsItem {
        let c: &Counts = &group.counts;
        let ratio = |n: i64, d: i64| (d > 0).then(|| n as f64 / d as f64);
        let base = if by == Dimension::Route {
            c.submitted
        } else {
            c.sent
        };
        StatsItem {
            key: (!group.group.is_empty()).then(|| group.group.clone()),
            sent: c.sent,
            submitted: c.submitted,
            delivered: c.delivered,
            failed: c.failed,
            verified: c.verified,
            delivery_rate: ratio(c.delivered, c.submitted),
            verification_rate: ratio(c.verified, base),
            median_delivery_ms: c.delivery.median_ms(),
            median_verify_ms: c.verify.median_ms(),
        }
    }
}

/// The stats reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsReply {
    /// `hour`, `day` or `week`.
    pub window: String,
    /// `channel`, `route`, `country` or `prefix`.
    pub group_by: String,
    /// The window's start and end (RFC 3339, configured zone); whole minutes
    /// are counted, so a window starts at most a minute earlier.
    pub from: String,
    pub to: String,
    /// One item per group that had anything in the window.
    pub groups: Vec<StatsItem>,
}

/// The caller's conversion aggregates.
#[utoipa::path(
    get,
    path = "/api/v1/auths/stats/",
    tag = "otp",
    params(
        ("window" = Option<String>, Query, description = "hour, day (default) or week, ending now"),
        ("group_by" = Option<String>, Query, description = "channel (default), route, country or prefix"),
    ),
    responses(
        (status = 200, description = "The window's groups", body = Envelope<StatsReply>),
        (status = 400, description = "Invalid query", body = super::error::ErrorEnvelope),
        (status = 401, description = "Missing, invalid or revoked key", body = super::error::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Envelope<StatsReply>>, ApiError> {
    let mut errors = Vec::new();
    let window = match params.get("window").map(|s| s.trim()) {
        None | Some("") => Some(Window::Day),
        Some(w) => Window::parse(w).or_else(|| {
            errors.push(FieldError::new(
                "window",
                "invalid_choice",
                "window must be one of hour, day, week.",
            ));
            None
        }),
    };
    let group_by = match params.get("group_by").map(|s| s.trim()) {
        None | Some("") => Some(Dimension::Channel),
        Some(g) => Dimension::parse(g).or_else(|| {
            errors.push(FieldError::new(
                "group_by",
                "invalid_choice",
                "group_by must be one of channel, route, country, prefix.",
            ));
            None
        }),
    };
    let (Some(window), Some(group_by)) = (window, group_by) else {
        return Err(ApiError::validation(errors));
    };
    let to = now_micros();
    let from = to - window.micros();
    let groups = state
        .store
        .conversion_stats(StatsQuery {
            account_id: caller.account_id,
            from,
            to,
            group_by,
        })
        .await?;
    Ok(Json(Envelope::data(StatsReply {
        window: window.as_str().to_owned(),
        group_by: group_by.as_str().to_owned(),
        from: rfc3339(from, &state.tz),
        to: rfc3339(to, &state.tz),
        groups: groups.iter().map(|g| StatsItem::of(g, group_by)).collect(),
    })))
}
