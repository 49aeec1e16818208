//! An account's API keys, managed with an API key that has the `account` scope:
//!
//! - `GET /api/v1/auths/api-keys/`: the account's keys, never their secrets.
//! - `POST /api/v1/auths/api-keys/` `{label?, scopes?}`: a new key, shown once.
//!   It gets `send, verify, read` unless `scopes` names others, and never a
//!   scope the calling key lacks (403 `insufficient_scope`, naming it).
//! - `POST /api/v1/auths/api-keys/{key_id}/revoke/`: revokes one of the
//!   account's keys (the calling one included); another account's key is a 404.
//!
//! The admin API (`/admin/v1/accounts/{id}/keys/`), the CLI and a user's
//! `generate-api-keys` mint keys too; [`super::fields::scopes_field`] reads the `scopes` field
//! for all of them.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, ToSchema};

use otp_store::Scopes;

use super::admin::{KeyView, NewKeyView, key_view, new_key_view};
use super::envelope::Envelope;
use super::error::ApiError;
use super::extract::{OptionalFields, insufficient_scope, required_scope};
use super::fields::{Raw, scopes_field, text};
use crate::accounts::{self, Label};
use crate::auth::Caller;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auths/api-keys/", get(list_keys).post(create_key))
        .route("/api/v1/auths/api-keys", get(list_keys).post(create_key))
        .route("/api/v1/auths/api-keys/{key_id}/revoke/", post(revoke_key))
        .route("/api/v1/auths/api-keys/{key_id}/revoke", post(revoke_key))
}

/// The body of `POST /api/v1/auths/api-keys/` (JSON or form; may be left out).
#[derive(Deserialize, ToSchema)]
pub struct CreateOwnKeyRequest {
    /// At most 100 characters.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    label: Raw,
    /// What the key may do: some of `send`, `verify`, `read`, `account`
    /// (a list, or one string separated by commas). Default `send, verify,
    /// read`. Each must be a scope of the calling key.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, example = json!(["send", "verify"]))]
    scopes: Raw,
}

/// The account's API keys.
#[utoipa::path(
    get,
    path = "/api/v1/auths/api-keys/",
    tag = "keys",
    responses(
        (status = 200, description = "The keys, revoked ones included, without secrets", body = Envelope<Vec<KeyView>>),
        (status = 401, description = "Missing, invalid or revoked key", body = super::error::ErrorEnvelope),
    ),
    security(("bearer" = ["account"]))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Envelope<Vec<KeyView>>>, ApiError> {
    let keys = state.store.list_keys(Some(caller.account_id)).await?;
    Ok(Json(Envelope::ok(
        "Keys.",
        keys.iter().map(|k| key_view(k, &state)).collect(),
    )))
}

/// Issue a new API key for the caller's account.
#[utoipa::path(
    post,
    path = "/api/v1/auths/api-keys/",
    tag = "keys",
    request_body(content = CreateOwnKeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The key, shown only now", body = Envelope<NewKeyView>),
        (status = 400, description = "Invalid label or scopes; nothing written", body = super::error::ErrorEnvelope),
        (status = 401, description = "Missing, invalid or revoked key", body = super::error::ErrorEnvelope),
        (status = 403, description = "The calling key lacks a scope the new key would have, or `account` (`insufficient_scope`, `data.required_scope` names it); nothing written", body = super::error::ErrorEnvelope),
    ),
    security(("bearer" = ["account"]))
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    OptionalFields(req): OptionalFields<CreateOwnKeyRequest>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let label = text(&req.label, "label", &mut errors).and_then(|l| {
        Label::parse("label", l)
            .map_err(|p| errors.push(p.into()))
            .ok()
    });
    let scopes = scopes_field(&req.scopes, &mut errors).unwrap_or(Scopes::DEFAULT);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    if let Some(missing) = scopes.first_missing_from(caller.scopes) {
        return Err(insufficient_scope(missing));
    }
    let key = accounts::create_key(&state.store, caller.account_id, label, scopes).await?;
    tracing::info!(
        key_id = %key.record.key_id,
        by_key = caller.key_row,
        "the key was created with an API key"
    );
    Ok(Envelope::created("Key created.", new_key_view(key)))
}

/// Revoke one of the account's keys by its public id; it stops working on the
/// next request, on every node.
#[utoipa::path(
    post,
    path = "/api/v1/auths/api-keys/{key_id}/revoke/",
    tag = "keys",
    params(("key_id" = String, Path, description = "The key's public id (never put a whole key in a URL)")),
    responses(
        (status = 200, description = "Revoked", body = Envelope<super::admin::RevokedView>),
        (status = 401, description = "Missing, invalid or revoked key", body = super::error::ErrorEnvelope),
        (status = 404, description = "No active key with this id in the account", body = super::error::ErrorEnvelope),
    ),
    security(("bearer" = ["account"]))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<Json<Envelope<super::admin::RevokedView>>, ApiError> {
    let ours = state
        .store
        .find_key(&key_id)
        .await?
        .is_some_and(|k| k.account_id == caller.account_id && k.revoked_at.is_none());
    if !ours {
        return Err(ApiError::not_found());
    }
    accounts::revoke_key(&state.store, &key_id).await?;
    tracing::info!(
        account_id = caller.account_id,
        key_id = %key_id,
        by_key = caller.key_row,
        "the key was revoked with an API key"
    );
    Ok(Json(Envelope::ok(
        "Key revoked.",
        super::admin::RevokedView {
            key_id,
            revoked: true,
        },
    )))
}

/// The OpenAPI document's side of scopes: every operation that takes an API
/// key lists the scope it needs (from the same table the server checks,
/// [`super::extract::required_scope`]) and its 403, and the `bearer` scheme
/// says what the scopes are.
pub struct ScopesDoc;

impl Modify for ScopesDoc {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::SecurityRequirement;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let unscoped = SecurityRequirement::new("bearer", Vec::<String>::new());
        for (path, item) in openapi.paths.paths.iter_mut() {
            let scope = required_scope(path).as_str();
            let scoped = SecurityRequirement::new("bearer", [scope]);
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let Some(security) = operation.security.as_mut() else {
                    continue;
                };
                let mut takes_key = false;
                for requirement in security.iter_mut() {
                    if *requirement == unscoped || *requirement == scoped {
                        *requirement = scoped.clone();
                        takes_key = true;
                    }
                }
                if !takes_key {
                    continue;
                }
                let forbidden = ResponseBuilder::new()
                    .description(format!(
                        "The key lacks the `{scope}` scope (`insufficient_scope`, \
                         `data.required_scope`); nothing done"
                    ))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                            .build(),
                    )
                    .build();
                operation
                    .responses
                    .responses
                    .entry("403".to_owned())
                    .or_insert_with(|| forbidden.into());
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key: `Authorization: Bearer otpg_...`. Each key has scopes: \
                         `send` (send OTPs), `verify` (verify codes), `read` (list and read \
                         OTPs, voices, voice previews, webhook deliveries) and `account` \
                         (manage the account's API keys and webhook). Each operation names \
                         the scope it needs; without it the answer is 403 \
                         `insufficient_scope`.",
                    ))
                    .build(),
            ),
        );
    }
}
