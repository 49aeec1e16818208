//! `GET /api/v1/auths/list/send-otps/` and `GET /api/v1/auths/otps/{id}/`.
//!
//! Pagination is Django REST Framework's limit/offset (or page/page_size), with
//! absolute `next`/`previous` links in the style the client used. `next` also
//! carries `cursor`, the position of the page's last item, so a client following
//! links gets every page by an index seek (as fast at the millionth record as at
//! the first) and never sees an item twice when new OTPs arrive meanwhile. For a
//! filtered list the link also carries `total`, the count the first page made,
//! so later pages skip counting. An unfiltered list is counted from a per-account
//! counter and any offset is an index seek; a filtered list reached by a raw deep
//! offset (not a link) costs a scan of the matching rows.
//! A caller only ever sees its own account's records.
//!
//! `otp` is the code, decrypted, until its cipher is purged (`retention.code_seconds`
//! after it expires); then, or always with `api.hide_codes` (by default in
//! production mode), it is `******` and the message shows `******` in its place.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{NaiveDate, TimeZone};
use serde::Serialize;
use std::collections::HashMap;
use utoipa::ToSchema;

use otp_domain::channel::Channel;
use otp_domain::phone::PhoneNumber;
use otp_domain::vault::MASK;
use otp_store::{FallbackState, ListQuery, Micros, OtpRecord};

use super::envelope::Envelope;
use super::error::{ApiError, FieldError};
use crate::auth::Caller;
use crate::peer::Origin;
use crate::state::AppState;
pub use crate::times::rfc3339;

const LIST_PATH: &str = "/api/v1/auths/list/send-otps/";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(LIST_PATH, get(list_otps))
        .route("/api/v1/auths/list/send-otps", get(list_otps))
        .route("/api/v1/auths/otps/{id}/", get(get_otp))
        .route("/api/v1/auths/otps/{id}", get(get_otp))
}

/// One OTP as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct OtpItem {
    pub id: i64,
    pub phone_number: String,
    /// The rendered text (the code masked when `otp` is).
    pub message: String,
    /// The code; `******` once purged or with `api.hide_codes` (by default in
    /// production mode).
    pub otp: String,
    pub otp_options: String,
    pub sms_send_options: String,
    /// RFC 3339 in the configured zone (default Asia/Kathmandu, +05:45).
    pub created_at: String,
    /// Ours: `queued`, `sent`, `delivered`, `undeliverable`, `rejected` or
    /// `failed` as the carrier reports; `verified` once the code was verified;
    /// `expired` once an unverified code is past `expires_at` (or the carrier
    /// let it expire).
    pub status: String,
    pub status_updated_at: String,
    pub credits_used: i64,
    pub segments: u32,
    pub voice_input: Option<String>,
    pub company_name: Option<String>,
    pub error: Option<String>,
    /// The carrier's error code from a failed receipt.
    pub error_code: Option<String>,
    pub provider_message_id: Option<String>,
    /// The route that carried it.
    pub route: Option<String>,
    pub delivered_at: Option<String>,
    /// Whether its credits were given back (never handed over, or not delivered).
    pub refunded: bool,
    /// When the code stops verifying.
    pub expires_at: String,
    pub verified_at: Option<String>,
    /// Wrong codes tried so far (a resend and its first send share one count).
    pub verify_attempts: i64,
    /// A resend (`verify.resend_same_code`): the `id` of the first send of the
    /// same code; `null` for a first send.
    pub resend_of: Option<i64>,
    /// The fallback call the send asked for (`fallback_channel`); absent
    /// when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<super::send::FallbackDetails>,
}

/// One delivery attempt of an OTP: its SMS (or call), then the fallback call
/// once started.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryAttempt {
    /// `text` or `voice`.
    pub channel: String,
    /// The first attempt: the OTP's status. The fallback call: `started`
    /// (queued or ringing), `sent` (answered, the code read out), `failed`
    /// or `cancelled` (not placed: the code was verified after it was queued).
    pub status: String,
    pub at: String,
}

/// One change of status.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventItem {
    pub status: String,
    pub at: String,
    pub route: Option<String>,
    pub detail: Option<String>,
    pub error_code: Option<String>,
}

/// One OTP with its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct OtpDetail {
    #[serde(flatten)]
    pub otp: OtpItem,
    /// Every status change after it was queued, oldest first.
    pub history: Vec<EventItem>,
    /// The delivery attempts, oldest first: the send's own, then its
    /// fallback call once started.
    pub attempts: Vec<DeliveryAttempt>,
    /// The carrier's id of each SMS part.
    pub provider_message_ids: Vec<String>,
}

/// The list reply, in the hosted service's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse {
    pub count: u64,
    pub total_pages: u64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Envelope<Vec<OtpItem>>,
}

/// List the caller's OTPs, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/auths/list/send-otps/",
    tag = "otp",
    params(
        ("limit" = Option<u32>, Query, description = "Items per page (default 20, at most 100)"),
        ("offset" = Option<u64>, Query, description = "Items to skip"),
        ("page" = Option<u64>, Query, description = "1-based page number, with page_size"),
        ("page_size" = Option<u32>, Query, description = "Items per page, with page"),
        ("cursor" = Option<i64>, Query, description = "Set by next links: continue after this position"),
        ("total" = Option<u64>, Query, description = "Set by next links of filtered lists: the count already made"),
        ("phone_number" = Option<String>, Query, description = "Only this number"),
        ("sms_send_options" = Option<String>, Query, description = "text or voice"),
        ("created_at_after" = Option<String>, Query, description = "From this date (YYYY-MM-DD, in the configured zone) or RFC 3339 time, inclusive"),
        ("created_at_before" = Option<String>, Query, description = "Up to this date (whole day, inclusive) or RFC 3339 time (exclusive)"),
    ),
    responses(
        (status = 200, description = "A page", body = ListResponse),
        (status = 400, description = "Invalid query", body = super::error::ErrorEnvelope),
        (status = 401, description = "Missing, invalid or revoked key", body = super::error::ErrorEnvelope),
        (status = 429, description = "The account already has `api.max_concurrent_lists` lists running and none finished within `api.list_wait_ms` (`too_many_concurrent_lists`); `Retry-After: 1`", body = super::error::ErrorEnvelope),
        (status = 503, description = "The query ran past `store.list_timeout_ms` and was stopped (`query_timeout`, `Retry-After: 5`), or the store is unavailable", body = super::error::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn list_otps(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ListResponse>, ApiError> {
    let plan = parse_query(&params, &state)?;
    let mut query = plan.query.clone();
    query.account_id = caller.account_id;
    // Held while the query runs: one account's lists cannot fill the store's
    // list connections. The query runs on a task of its own that holds the
    // slot, so a client that hangs up (or a request timeout) does not give the
    // slot back while the database is still working on its query.
    let slot = state
        .list_slots
        .acquire(caller.account_id)
        .await
        .ok_or_else(too_many_lists)?;
    let store = state.store.clone();
    let running = query.clone();
    let page = tokio::spawn(async move {
        let _slot = slot;
        store.list_otps(&running).await
    })
    .await
    .map_err(ApiError::internal)??;

    let limit = u64::from(query.limit);
    let count = page.count;
    let total_pages = count.div_ceil(limit).max(1);
    let base = base_url(&state, &origin);
    let next_offset = query.offset.saturating_add(limit);
    let next = (next_offset < count && page.items.len() as u64 == limit).then(|| {
        let cursor = page.items.last().map(|i| i.account_seq);
        plan.link(&base, next_offset, cursor, count)
    });
    let previous = (query.offset > 0)
        .then(|| plan.link(&base, query.offset.saturating_sub(limit), None, count));
    Ok(Json(ListResponse {
        count,
        total_pages,
        next,
        previous,
        results: Envelope::data(page.items.iter().map(|o| item(o, &state)).collect()),
    }))
}

/// One of the caller's OTPs.
#[utoipa::path(
    get,
    path = "/api/v1/auths/otps/{id}/",
    tag = "otp",
    params(("id" = i64, Path, description = "The id a send returned")),
    responses(
        (status = 200, description = "The OTP", body = Envelope<OtpDetail>),
        (status = 401, description = "Missing, invalid or revoked key", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such OTP in this account", body = super::error::ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn get_otp(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Envelope<OtpDetail>>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::not_found())?;
    let otp = state
        .store
        .otp(caller.account_id, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let (events, provider_message_ids) = state.store.otp_history(otp.id).await?;
    let history = events
        .into_iter()
        .map(|e| EventItem {
            status: e.status,
            at: rfc3339(e.at, &state.tz),
            route: e.route,
            detail: e.detail,
            error_code: e.error_code,
        })
        .collect();
    let mut attempts = vec![DeliveryAttempt {
        channel: otp.channel.as_str().to_owned(),
        status: otp.status.as_str().to_owned(),
        at: rfc3339(otp.status_at, &state.tz),
    }];
    if let Some(f) = otp.fallback
        && let Some(at) = f.at
        && !matches!(f.state, FallbackState::Pending | FallbackState::Refunded)
    {
        attempts.push(DeliveryAttempt {
            channel: f.channel.as_str().to_owned(),
            status: f.state.as_str().to_owned(),
            at: rfc3339(at, &state.tz),
        });
    }
    Ok(Json(Envelope::data(OtpDetail {
        otp: item(&otp, &state),
        history,
        attempts,
        provider_message_ids,
    })))
}

/// 429: the account's concurrent lists are at `api.max_concurrent_lists`.
fn too_many_lists() -> ApiError {
    ApiError::refusal(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        FieldError::new(
            "non_field_errors",
            "too_many_concurrent_lists",
            "This account has too many lists running at once; try again in 1 second.",
        ),
        Some(serde_json::json!({ "retry_after": 1 })),
    )
    .with_retry_after(1)
}

/// A parsed list request and how to write links back in the client's style.
struct Plan {
    query: ListQuery,
    page_style: bool,
    /// Filter parameters to repeat in links, already validated.
    filters: Vec<(&'static str, String)>,
}

impl Plan {
    fn link(&self, base: &str, offset: u64, cursor: Option<i64>, count: u64) -> String {
        let limit = self.query.limit;
        let mut pairs: Vec<(&str, String)> = if self.page_style {
            vec![
                ("page", (offset / u64::from(limit) + 1).to_string()),
                ("page_size", limit.to_string()),
            ]
        } else {
            vec![("limit", limit.to_string()), ("offset", offset.to_string())]
        };
        if let Some(c) = cursor {
            pairs.push(("cursor", c.to_string()));
            if !self.query.is_unfiltered() {
                pairs.push(("total", count.to_string()));
            }
        }
        pairs.extend(self.filters.iter().map(|(k, v)| (*k, v.clone())));
        let qs = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        format!("{base}{LIST_PATH}?{qs}")
    }
}

fn parse_query(params: &HashMap<String, String>, state: &AppState) -> Result<Plan, ApiError> {
    let mut errors = Vec::new();
    let max = state.config.api.max_page_size;
    let mut num = |name: &str, min: u64, max: u64| -> Option<u64> {
        let raw = params.get(name)?;
        match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                errors.push(FieldError::new(
                    name,
                    "invalid",
                    format!("{name} must be a whole number from {min} to {max}."),
                ));
                None
            }
        }
    };
    let limit = num("limit", 1, u64::from(max));
    let offset = num("offset", 0, i64::MAX as u64);
    let page = num("page", 1, i64::MAX as u64);
    let page_size = num("page_size", 1, u64::from(max));
    let cursor = num("cursor", 1, i64::MAX as u64);
    let total = num("total", 0, i64::MAX as u64);
    let page_style = page.is_some() || page_size.is_some();
    let limit = limit
        .or(page_size)
        .unwrap_or(u64::from(state.config.api.default_page_size.clamp(1, max)))
        as u32;
    let offset = match page {
        // As far as a raw offset may go: the next link adds a page to it.
        Some(p) => (p - 1)
            .saturating_mul(u64::from(limit))
            .min(i64::MAX as u64),
        None => offset.unwrap_or(0),
    };

    let mut query = ListQuery {
        limit,
        offset,
        before_seq: cursor.map(|c| c as i64),
        // Only trusted alongside a cursor, i.e. from a next link we wrote.
        known_count: total.filter(|_| cursor.is_some()),
        ..ListQuery::default()
    };
    let mut filters = Vec::new();
    if let Some(p) = params.get("phone_number").filter(|p| !p.trim().is_empty()) {
        match PhoneNumber::parse(p) {
            Ok(n) => {
                query.phone_number = Some(n.display().to_owned());
                filters.push(("phone_number", p.clone()));
            }
            Err(e) => errors.push(FieldError::new("phone_number", "invalid", e.to_string())),
        }
    }
    if let Some(c) = params
        .get("sms_send_options")
        .filter(|c| !c.trim().is_empty())
    {
        match Channel::parse(c.trim()) {
            Some(ch) => {
                query.channel = Some(ch);
                filters.push(("sms_send_options", c.clone()));
            }
            None => errors.push(FieldError::new(
                "sms_send_options",
                "invalid_choice",
                "sms_send_options must be \"text\" or \"voice\".",
            )),
        }
    }
    for (name, is_end) in [("created_at_after", false), ("created_at_before", true)] {
        if let Some(raw) = params.get(name).filter(|r| !r.trim().is_empty()) {
            match parse_bound(raw.trim(), is_end, &state.tz) {
                Some(t) => {
                    if is_end {
                        query.created_before = Some(t);
                    } else {
                        query.created_from = Some(t);
                    }
                    filters.push((name, raw.clone()));
                }
                None => errors.push(FieldError::new(
                    name,
                    "invalid",
                    format!("{name} must be a date (YYYY-MM-DD) or an RFC 3339 time."),
                )),
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(Plan {
        query,
        page_style,
        filters,
    })
}

/// A date means its whole day in the configured zone: `after` from its start,
/// `before` up to its end. A full RFC 3339 time is taken as is.
fn parse_bound(raw: &str, is_end: bool, tz: &chrono_tz::Tz) -> Option<Micros> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Some(t.timestamp_micros());
    }
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()?;
    let day = if is_end { date.succ_opt()? } else { date };
    let start = tz
        .from_local_datetime(&day.and_hms_opt(0, 0, 0)?)
        .earliest()?;
    Some(start.timestamp_micros())
}

/// `public_url`, or else how the client reached us (see [`Origin`]: forwarded
/// scheme and host only from trusted proxies, a `Host` header only when it is a
/// valid `host[:port]`, else the listener's address).
fn base_url(state: &AppState, origin: &Origin) -> String {
    if !state.config.public_url.is_empty() {
        return state.config.public_url.trim_end_matches('/').to_owned();
    }
    origin.to_string()
}

fn item(o: &OtpRecord, state: &AppState) -> OtpItem {
    let tz = &state.tz;
    let (message, otp) = if state.config.hide_codes() {
        (o.template.render_masked(), MASK.to_owned())
    } else {
        (o.message(), o.code.shown().to_owned())
    };
    OtpItem {
        id: o.id,
        phone_number: o.number.display().to_owned(),
        message,
        otp,
        otp_options: o.otp_option.as_str().to_owned(),
        sms_send_options: o.channel.as_str().to_owned(),
        created_at: rfc3339(o.created_at, tz),
        status: o.status.as_str().to_owned(),
        status_updated_at: rfc3339(o.status_at, tz),
        credits_used: o.credits_used,
        segments: o.segments,
        voice_input: o.voice.map(|v| v.as_str().to_owned()),
        company_name: o.company_name.clone(),
        error: o.error.clone(),
        error_code: o.error_code.clone(),
        provider_message_id: o.provider_message_id.clone(),
        route: o.route.clone(),
        delivered_at: o.delivered_at.map(|t| rfc3339(t, tz)),
        refunded: o.refunded,
        expires_at: rfc3339(o.expires_at, tz),
        verified_at: o.verified_at.map(|t| rfc3339(t, tz)),
        verify_attempts: o.verify_attempts,
        resend_of: o.resend_of,
        fallback: o.fallback.map(|f| super::send::FallbackDetails::of(&f, tz)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_carry_the_nepal_offset() {
        let tz: chrono_tz::Tz = "Asia/Kathmandu".parse().unwrap();
        // 2025-10-29T07:48:55.512191Z
        let micros = 1_761_724_135_512_191;
        assert_eq!(rfc3339(micros, &tz), "2025-10-29T13:33:55.512191+05:45");
    }

    #[test]
    fn a_date_bound_covers_the_whole_local_day() {
        let tz: chrono_tz::Tz = "Asia/Kathmandu".parse().unwrap();
        let from = parse_bound("2025-10-29", false, &tz).unwrap();
        let to = parse_bound("2025-10-29", true, &tz).unwrap();
        assert_eq!(to - from, 86_400_000_000);
        assert_eq!(rfc3339(from, &tz), "2025-10-29T00:00:00.000000+05:45");
        assert!(parse_bound("29/10/2025", false, &tz).is_none());
    }
}
