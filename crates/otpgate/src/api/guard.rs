//! The pumping guard's holds in the admin API (the `admin.token`, as the
//! rest of `/admin/v1/`):
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/admin/v1/guard/holds/` | holds standing, and those ended or released within a hold's time |
//! | POST | `/admin/v1/guard/holds/{id}/release/` | release a standing hold |
//!
//! A release is stored, lifted on this node at once and on the others at
//! their next refresh (`guard.refresh_ms`); the released scope and value,
//! and every wider one, are not held again for `guard.hold_seconds`.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};

use otp_store::now_micros;

use super::admin::Admin;
use super::envelope::Envelope;
use super::error::ApiError;
use crate::guard::HoldView;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for (path, route) in [
        ("/admin/v1/guard/holds/", get(list_holds)),
        ("/admin/v1/guard/holds/{id}/release/", post(release_hold)),
    ] {
        router = router
            .route(path, route.clone())
            .route(path.trim_end_matches('/'), route);
    }
    router
}

/// The pumping holds: those standing, and those that ended or were
/// released within the last `guard.hold_seconds`, newest first.
#[utoipa::path(
    get,
    path = "/admin/v1/guard/holds/",
    tag = "admin",
    responses(
        (status = 200, description = "The holds", body = Envelope<Vec<HoldView>>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "The admin API is off", body = super::error::ErrorEnvelope),
        (status = 503, description = "Store unavailable", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn list_holds(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Envelope<Vec<HoldView>>>, ApiError> {
    let now = now_micros();
    let since = now - state.config.guard.settings().hold;
    let holds = state.store.guard_holds(since).await?;
    Ok(Json(Envelope::ok(
        "Pumping holds.",
        holds
            .iter()
            .map(|h| HoldView::new(h, now, &state.tz))
            .collect(),
    )))
}

/// Releases a standing pumping hold: its sends pass again (on other nodes
/// within `guard.refresh_ms`), and its scope and value, and every wider
/// one, are not held again for `guard.hold_seconds`.
#[utoipa::path(
    post,
    path = "/admin/v1/guard/holds/{id}/release/",
    tag = "admin",
    params(("id" = i64, Path, description = "Hold id")),
    responses(
        (status = 200, description = "Released", body = Envelope<HoldView>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No standing hold of this id (unknown, ended or released), or the admin API is off", body = super::error::ErrorEnvelope),
        (status = 503, description = "Store unavailable", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn release_hold(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Envelope<HoldView>>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::not_found())?;
    let released = state
        .guard
        .release(id, "admin-api")
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(Envelope::ok(
        "Hold released.",
        HoldView::new(&released, now_micros(), &state.tz),
    )))
}
