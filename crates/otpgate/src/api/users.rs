//! The user side of the TingTing auth surface:
//!
//! - `POST /api/v1/auths/login/` `{email, password}`: an access token (1 day)
//!   and a refresh token (7 days); see [`crate::users::tokens`].
//! - `POST /api/v1/auths/login/refresh/` `{refresh}`: a new access token.
//! - `GET /api/v1/auths/user-detail/`: the user and its account.
//! - `POST /api/v1/auths/generate-api-keys/`: a new API key for the user's
//!   account, shown once; the user's previous key is revoked in the same
//!   transaction.
//! - `GET /api/v1/auths/get-api-keys/`: the user's current key, masked, with
//!   `created_at` and `last_used`.
//!
//! The last three take `Authorization: Bearer <access token>` (`JWT <token>`
//! too); an API key or a refresh token there is a 401, as an access token is
//! on the OTP endpoints.
//!
//! A wrong password and an unknown email get the same 401 after the same work:
//! an unknown email is checked against a dummy hash. Each email (known or not)
//! gets `auth.login_max_attempts` attempts per `auth.login_window_seconds`,
//! counted in the store before the password is checked; more are refused with
//! 429 and `Retry-After` without checking anything. A successful login clears
//! the count.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, ToSchema};

use otp_store::{ApiKeyRecord, LoginGate, Scopes, User, now_micros};

use super::error::{ApiError, FieldError};
use super::extract::Fields;
use super::extract::OptionalFields;
use super::keys::scopes_field;
use super::list::rfc3339;
use super::send::required_text;
use crate::auth::{KEY_PREFIX, issue_key_with_scopes};
use crate::state::AppState;
use crate::users::hashing::HashError;
use crate::users::tokens::TokenKind;
use crate::users::{Email, MAX_EMAIL_LEN, MAX_PASSWORD_BYTES};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auths/login/", post(login))
        .route("/api/v1/auths/login", post(login))
        .route("/api/v1/auths/login/refresh/", post(refresh))
        .route("/api/v1/auths/login/refresh", post(refresh))
        .route("/api/v1/auths/user-detail/", get(user_detail))
        .route("/api/v1/auths/user-detail", get(user_detail))
        .route("/api/v1/auths/generate-api-keys/", post(generate_api_key))
        .route("/api/v1/auths/generate-api-keys", post(generate_api_key))
        .route("/api/v1/auths/get-api-keys/", get(get_api_key))
        .route("/api/v1/auths/get-api-keys", get(get_api_key))
}

/// The one reply to a wrong email or password (djangorestframework-simplejwt's words).
const WRONG_CREDENTIALS: &str = "No active account found with the given credentials";
/// The one reply to a token that is malformed, forged, expired, of the wrong
/// kind, or from before a password change.
const BAD_TOKEN: &str = "Token is invalid or expired.";
const NO_CREDENTIALS: &str = "Authentication credentials were not provided.";

/// A success reply: the envelope of every other endpoint around `data`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T: ToSchema> {
    pub status: u16,
    pub success: bool,
    pub message: String,
    pub errors: Vec<FieldError>,
    pub data: T,
}

impl<T: ToSchema> Envelope<T> {
    pub fn ok(message: &str, data: T) -> Envelope<T> {
        Envelope {
            status: 200,
            success: true,
            message: message.to_owned(),
            errors: Vec::new(),
            data,
        }
    }
}

/// The token of an `Authorization: <scheme> <token>` header whose scheme is
/// one of `schemes` (any case); `None` when there is no such header.
pub(super) fn bearer<'a>(parts: &'a Parts, schemes: &[&str]) -> Option<&'a str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
        .then(|| token.trim())
}

fn now_secs() -> i64 {
    now_micros() / 1_000_000
}

fn hash_failed(e: HashError) -> ApiError {
    match e {
        HashError::Unavailable => ApiError::unavailable(),
        HashError::Argon2(_) => ApiError::internal(e),
    }
}

/// A caller holding a valid access token, and its user.
pub struct UserCaller(pub User);

impl FromRequestParts<AppState> for UserCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts, &["bearer", "jwt"])
            .ok_or_else(|| ApiError::unauthenticated(NO_CREDENTIALS))?;
        let claims = state
            .users
            .tokens
            .check(token, TokenKind::Access, now_secs())
            .ok_or_else(|| ApiError::unauthenticated(BAD_TOKEN))?;
        let user = state
            .store
            .user(claims.user_id)
            .await?
            .filter(|u| u.session_version == claims.ver)
            .ok_or_else(|| ApiError::unauthenticated(BAD_TOKEN))?;
        Ok(UserCaller(user))
    }
}

/// The login body, for the OpenAPI document (JSON or form).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LoginRequest {
    /// Any case; at most 254 characters.
    #[schema(example = "ana@example.com")]
    email: String,
    /// As set, at most 1024 bytes.
    password: String,
}

/// What a login returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginTokens {
    /// For `Authorization: Bearer ...` on the user endpoints; lasts
    /// `auth.access_token_seconds` (1 day).
    pub access: String,
    /// For `login/refresh/`; lasts `auth.refresh_token_seconds` (7 days).
    pub refresh: String,
    /// RFC 3339 in the configured zone.
    pub access_expires_at: String,
    pub refresh_expires_at: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
}

/// The login reply: the envelope, with the two tokens also at the top level
/// (where djangorestframework-simplejwt clients look for them).
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    #[serde(flatten)]
    pub envelope: Envelope<LoginTokens>,
    pub access: String,
    pub refresh: String,
}

/// Log in with email and password.
#[utoipa::path(
    post,
    path = "/api/v1/auths/login/",
    tag = "users",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 400, description = "A field is missing or too long", body = super::error::ErrorEnvelope),
        (status = 401, description = "Wrong email or password (one reply for both)", body = super::error::ErrorEnvelope),
        (status = 429, description = "Too many attempts for this email in the window; `Retry-After` says when to try again", body = super::error::ErrorEnvelope),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    Fields(fields): Fields,
) -> Result<Json<LoginResponse>, ApiError> {
    let (email, password) = login_fields(&fields).map_err(ApiError::validation)?;
    let users = &state.users;
    if let LoginGate::Locked {
        retry_after_seconds,
    } = state
        .store
        .count_login_attempt(email.as_str(), users.login_policy())
        .await?
    {
        tracing::warn!("login refused: too many attempts for one email");
        let message =
            format!("Too many login attempts; try again in {retry_after_seconds} seconds.");
        return Err(ApiError::refusal(
            StatusCode::TOO_MANY_REQUESTS,
            FieldError::new("non_field_errors", "too_many_attempts", message),
            Some(json!({ "retry_after": retry_after_seconds })),
        )
        .with_retry_after(retry_after_seconds));
    }
    let user = state.store.user_by_email(email.as_str()).await?;
    let matched = users
        .passwords
        .verify(&password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await
        .map_err(hash_failed)?;
    let user = match user {
        Some(user) if matched => user,
        _ => {
            tracing::info!("login refused: wrong email or password");
            return Err(ApiError::unauthenticated(WRONG_CREDENTIALS));
        }
    };
    state.store.clear_login_attempts(email.as_str()).await?;
    let now = now_secs();
    let access = users.tokens.issue(TokenKind::Access, &user, now);
    let refresh = users.tokens.issue(TokenKind::Refresh, &user, now);
    tracing::info!(
        user_id = user.id,
        account_id = user.account_id,
        "user logged in"
    );
    let at = |secs: i64| rfc3339(secs.saturating_mul(1_000_000), &state.tz);
    Ok(Json(LoginResponse {
        access: access.token.clone(),
        refresh: refresh.token.clone(),
        envelope: Envelope::ok(
            "Login successful.",
            LoginTokens {
                access_expires_at: at(access.expires_at),
                refresh_expires_at: at(refresh.expires_at),
                access: access.token,
                refresh: refresh.token,
                token_type: "Bearer".into(),
            },
        ),
    }))
}

fn login_fields(fields: &Map<String, Value>) -> Result<(Email, String), Vec<FieldError>> {
    let mut errors = Vec::new();
    let email = required_text(fields, "email", &mut errors);
    let password = required_text(fields, "password", &mut errors);
    if email
        .as_ref()
        .is_some_and(|e| e.trim().len() > MAX_EMAIL_LEN)
    {
        errors.push(FieldError::new(
            "email",
            "too_long",
            format!("email may have at most {MAX_EMAIL_LEN} characters."),
        ));
    }
    if password
        .as_ref()
        .is_some_and(|p| p.len() > MAX_PASSWORD_BYTES)
    {
        errors.push(FieldError::new(
            "password",
            "too_long",
            format!("password may have at most {MAX_PASSWORD_BYTES} bytes."),
        ));
    }
    match (email, password) {
        (Some(email), Some(password)) if errors.is_empty() => {
            Ok((Email::normalise(&email), password))
        }
        _ => Err(errors),
    }
}

/// The refresh body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RefreshRequest {
    /// The refresh token a login returned.
    refresh: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessToken {
    pub access: String,
    /// RFC 3339 in the configured zone.
    pub access_expires_at: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
}

/// The refresh reply: the envelope, with the token also at the top level.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshResponse {
    #[serde(flatten)]
    pub envelope: Envelope<AccessToken>,
    pub access: String,
}

/// A new access token for a refresh token.
#[utoipa::path(
    post,
    path = "/api/v1/auths/login/refresh/",
    tag = "users",
    request_body(content = RefreshRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A new access token; the refresh token stays as it is", body = RefreshResponse),
        (status = 400, description = "`refresh` is missing", body = super::error::ErrorEnvelope),
        (status = 401, description = "Not a valid, unexpired refresh token (an access token is not one), or issued before the password changed", body = super::error::ErrorEnvelope),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    Fields(fields): Fields,
) -> Result<Json<RefreshResponse>, ApiError> {
    let mut errors = Vec::new();
    let token = required_text(&fields, "refresh", &mut errors);
    let Some(token) = token else {
        return Err(ApiError::validation(errors));
    };
    let now = now_secs();
    let claims = state
        .users
        .tokens
        .check(token.trim(), TokenKind::Refresh, now)
        .ok_or_else(|| ApiError::unauthenticated(BAD_TOKEN))?;
    let user = state
        .store
        .user(claims.user_id)
        .await?
        .filter(|u| u.session_version == claims.ver)
        .ok_or_else(|| ApiError::unauthenticated(BAD_TOKEN))?;
    let access = state.users.tokens.issue(TokenKind::Access, &user, now);
    Ok(Json(RefreshResponse {
        access: access.token.clone(),
        envelope: Envelope::ok(
            "Token refreshed.",
            AccessToken {
                access_expires_at: rfc3339(access.expires_at.saturating_mul(1_000_000), &state.tz),
                access: access.token,
                token_type: "Bearer".into(),
            },
        ),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountSummary {
    pub id: i64,
    pub name: String,
    pub sms_credits: i64,
    pub phone_credits: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserProfile {
    pub id: i64,
    pub email: String,
    pub account: AccountSummary,
    /// RFC 3339 in the configured zone.
    pub created_at: String,
    pub password_changed_at: String,
}

/// The logged-in user and its account.
#[utoipa::path(
    get,
    path = "/api/v1/auths/user-detail/",
    tag = "users",
    responses(
        (status = 200, description = "The user", body = Envelope<UserProfile>),
        (status = 401, description = "No valid access token", body = super::error::ErrorEnvelope),
    ),
    security(("access_token" = []))
)]
pub async fn user_detail(
    State(state): State<AppState>,
    UserCaller(user): UserCaller,
) -> Result<Json<Envelope<UserProfile>>, ApiError> {
    let account = state
        .store
        .account(user.account_id)
        .await?
        .ok_or_else(|| ApiError::internal("a user's account is missing"))?;
    Ok(Json(Envelope::ok(
        "User details.",
        UserProfile {
            id: user.id,
            email: user.email,
            account: AccountSummary {
                id: account.id,
                name: account.name,
                sms_credits: account.sms_credits,
                phone_credits: account.phone_credits,
            },
            created_at: rfc3339(user.created_at, &state.tz),
            password_changed_at: rfc3339(user.password_changed_at, &state.tz),
        },
    )))
}

/// A user's API key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// The whole key when it is generated (shown only then); masked
    /// (`otpg_<key_id>_********`) when read back.
    pub token: String,
    /// The key's public id.
    pub key_id: String,
    /// RFC 3339 in the configured zone.
    pub created_at: String,
    /// When the key last authenticated a request (written every few seconds,
    /// not per request); null if never.
    pub last_used: Option<String>,
}

/// The masked form of a key: its public part only.
pub fn masked(key_id: &str) -> String {
    format!("{KEY_PREFIX}{key_id}_********")
}

fn key_view(key: &ApiKeyRecord, token: String, state: &AppState) -> ApiKeyView {
    ApiKeyView {
        token,
        key_id: key.key_id.clone(),
        created_at: rfc3339(key.created_at, &state.tz),
        last_used: key.last_used.map(|at| rfc3339(at, &state.tz)),
    }
}

/// The optional body of `generate-api-keys`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct GenerateApiKeyRequest {
    /// Some of `send`, `verify`, `read`, `account`; default `send, verify, read`.
    #[schema(value_type = Option<Vec<String>>, example = json!(["send", "verify", "read"]))]
    scopes: Option<Vec<String>>,
}

/// Issue a new API key for the user's account; the user's previous key stops
/// working at once. The body may be left out; its optional `scopes` (a list,
/// or one string separated by commas) says what the key may do, by default
/// `send, verify, read` (`account` only when asked for).
#[utoipa::path(
    post,
    path = "/api/v1/auths/generate-api-keys/",
    tag = "users",
    request_body(content = GenerateApiKeyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The new key, shown only now", body = Envelope<ApiKeyView>),
        (status = 400, description = "Invalid scopes; nothing changed", body = super::error::ErrorEnvelope),
        (status = 401, description = "No valid access token", body = super::error::ErrorEnvelope),
    ),
    security(("access_token" = []))
)]
pub async fn generate_api_key(
    State(state): State<AppState>,
    UserCaller(user): UserCaller,
    OptionalFields(fields): OptionalFields,
) -> Result<Json<Envelope<ApiKeyView>>, ApiError> {
    let mut errors = Vec::new();
    let scopes = scopes_field(&fields, &mut errors).unwrap_or(Scopes::DEFAULT);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let issued = issue_key_with_scopes(
        user.account_id,
        Some("generated by its user".into()),
        scopes,
    );
    let key = state.store.replace_user_key(user.id, issued.record).await?;
    tracing::info!(
        user_id = user.id,
        key_id = %key.key_id,
        scopes = %key.scopes,
        "user generated an API key"
    );
    Ok(Json(Envelope::ok(
        "API key generated; the previous one is revoked.",
        key_view(&key, issued.plaintext, &state),
    )))
}

/// The user's current API key, masked.
#[utoipa::path(
    get,
    path = "/api/v1/auths/get-api-keys/",
    tag = "users",
    responses(
        (status = 200, description = "The key, masked", body = Envelope<ApiKeyView>),
        (status = 401, description = "No valid access token", body = super::error::ErrorEnvelope),
        (status = 404, description = "The user has no active key (`no_api_key`)", body = super::error::ErrorEnvelope),
    ),
    security(("access_token" = []))
)]
pub async fn get_api_key(
    State(state): State<AppState>,
    UserCaller(user): UserCaller,
) -> Result<Json<Envelope<ApiKeyView>>, ApiError> {
    let key = state.store.user_key(user.id).await?.ok_or_else(|| {
        ApiError::refusal(
            StatusCode::NOT_FOUND,
            FieldError::new(
                "non_field_errors",
                "no_api_key",
                "No active API key; generate one.",
            ),
            None,
        )
    })?;
    let token = masked(&key.key_id);
    Ok(Json(Envelope::ok(
        "API key.",
        key_view(&key, token, &state),
    )))
}

/// The `access_token` security scheme of the OpenAPI document.
pub struct AccessTokenAuth;

impl Modify for AccessTokenAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "access_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from `POST /api/v1/auths/login/`: `Authorization: Bearer eyJ...`",
                    ))
                    .build(),
            ),
        );
    }
}
