//! The user side of the TingTing auth surface:
//!
//! - `POST /api/v1/auths/login/` `{email, password}`: an access token (1 day)
//!   and a refresh token (7 days); see [`crate::users::tokens`].
//! - `POST /api/v1/auths/login/refresh/` `{refresh}`: a new access token.
//! - `GET /api/v1/auths/user-profile/` (and its older name `user-detail/`):
//!   the user and its account, in TingTing's profile shape at the top level
//!   and in our envelope.
//! - `POST /api/v1/auths/generate-api-keys/`: a new API key for the user's
//!   account; the user's previous key is revoked in the same transaction, and
//!   a sealed copy of the new one is kept (bound to the account, like a
//!   webhook secret).
//! - `GET /api/v1/auths/get-api-keys/`: the user's current key with
//!   `created_at` and `last_used`: whole (opened from its copy) with
//!   `api.reveal_keys`, else masked.
//!
//! Those three also take an API key of the account, as TingTing's clients
//! call them with one ([`DashboardCaller`]): with the `read` scope
//! `user-profile` and `get-api-keys` (which then describes the calling key),
//! with `account` `generate-api-keys`. The user is then the key's user (the
//! one that generated it), else the account's oldest user.
//!
//! - `GET /api/v1/auths/sessions/`: the user's logins whose refresh token is
//!   still valid.
//! - `POST /api/v1/auths/logout/`: revokes a refresh token (`{refresh}`), the
//!   caller's session, one of its sessions (`{session_id}`) or all of them
//!   (`{all: true}`).
//!
//! The user endpoints take `Authorization: Bearer <access token>` (`JWT
//! <token>` too); a refresh token there is a 401, as an access token is on the
//! OTP endpoints. A login also sets the tokens as `HttpOnly` cookies (for
//! clients written to TingTing's cookie-based docs), but no API endpoint reads a
//! cookie: authentication is the `Authorization` header only, so a browser
//! cannot be made to send an authenticated request by another site. (The
//! console, [`crate::console`], has a cookie of its own, with CSRF tokens.) Every token carries its login's session id:
//! once the session is revoked (logout, password reset) or expired, its
//! refresh token and its access tokens are refused.
//!
//! A wrong password and an unknown email get the same 401 after the same work:
//! an unknown email is checked against a dummy hash. Logins are limited per
//! email (`auth.login_max_attempts`), per client address
//! (`auth.login_max_attempts_per_address`) and over the whole gateway
//! (`auth.login_max_attempts_global`) per `auth.login_window_seconds`, counted
//! in the store before the password is checked; more are refused with 429 and
//! `Retry-After` without checking anything. A successful login clears the
//! email's count (not the address's or the gateway's). Before any of that a
//! login takes a place among the password checks running or waiting on this
//! node (`auth.max_pending_hashes`); with none free it is shed at once with 429
//! `login_busy`, counted nowhere. Refused logins are logged with the client's
//! address and the email's log id ([`crate::users::UserAuth::email_log_id`]),
//! never the email or the password.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, OptionalFromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::AppendHeaders;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, ToSchema};

use otp_store::{ApiKeyRecord, KeyCopy, LoginGate, LoginScope, Scopes, Session, User, now_micros};

use super::envelope::Envelope;
use super::error::{ApiError, FieldError, LogThrottle};
use super::extract::Fields;
use super::extract::OptionalFields;
use super::fields::{Raw, required_text, scopes_field};
use super::list::rfc3339;
use crate::auth::{Caller, KEY_PREFIX, issue_key_with_scopes, key_id_of};
use crate::peer::ClientIp;
use crate::state::AppState;
use crate::users::hashing::HashError;
use crate::users::tokens::{Claims, TokenKind};
use crate::users::{Email, MAX_EMAIL_LEN, MAX_PASSWORD_BYTES, address_key};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auths/login/", post(login))
        .route("/api/v1/auths/login", post(login))
        .route("/api/v1/auths/login/refresh/", post(refresh))
        .route("/api/v1/auths/login/refresh", post(refresh))
        .route("/api/v1/auths/user-profile/", get(user_detail))
        .route("/api/v1/auths/user-profile", get(user_detail))
        .route("/api/v1/auths/user-detail/", get(user_detail))
        .route("/api/v1/auths/user-detail", get(user_detail))
        .route("/api/v1/auths/generate-api-keys/", post(generate_api_key))
        .route("/api/v1/auths/generate-api-keys", post(generate_api_key))
        .route("/api/v1/auths/get-api-keys/", get(get_api_key))
        .route("/api/v1/auths/get-api-keys", get(get_api_key))
        .route("/api/v1/auths/sessions/", get(list_sessions))
        .route("/api/v1/auths/sessions", get(list_sessions))
        .route("/api/v1/auths/logout/", post(logout))
        .route("/api/v1/auths/logout", post(logout))
}

/// The one reply to a wrong email or password (djangorestframework-simplejwt's words).
const WRONG_CREDENTIALS: &str = "No active account found with the given credentials";
/// The one reply to a token that is malformed, forged, expired, of the wrong
/// kind, or from before a password change.
const BAD_TOKEN: &str = "Token is invalid or expired.";
const NO_CREDENTIALS: &str = "Authentication credentials were not provided.";

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

/// The session and user of a token whose signature, kind and expiry checked:
/// the session must be active and the token's user and session version must
/// still be its.
pub(crate) async fn token_session(
    state: &AppState,
    claims: &Claims,
) -> Result<(Session, User), ApiError> {
    let (session, user) = state
        .store
        .active_session(claims.sid, now_micros())
        .await?
        .filter(|(session, user)| {
            session.user_id == claims.user_id
                && user.id == claims.user_id
                && user.session_version == claims.ver
        })
        .ok_or_else(|| ApiError::unauthenticated(BAD_TOKEN))?;
    refuse_disabled(state, &user).await?;
    Ok((session, user))
}

/// A user of a disabled account is refused (403 `account_disabled`) at login
/// and on every request its tokens make, on every node (the account is read
/// each time). Operators are not: their pages serve every account, and an
/// operator must be able to enable the account again.
async fn refuse_disabled(state: &AppState, user: &User) -> Result<(), ApiError> {
    if user.operator {
        return Ok(());
    }
    match state.store.account(user.account_id).await? {
        Some(account) if account.disabled_at.is_some() => Err(ApiError::account_disabled()),
        _ => Ok(()),
    }
}

/// A caller holding a valid access token: its user and the session (login)
/// the token belongs to.
pub struct SessionCaller {
    pub user: User,
    pub session: Session,
}

impl FromRequestParts<AppState> for SessionCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts, &["bearer", "jwt"])
            .ok_or_else(|| ApiError::unauthenticated(NO_CREDENTIALS))?;
        let claims = state
            .users
            .tokens
            .check(token, TokenKind::Access, now_secs())
            .ok_or_else(|| ApiError::unauthenticated(BAD_TOKEN))?;
        let (session, user) = token_session(state, &claims).await?;
        super::RequestAccount::record(&parts.extensions, user.account_id);
        Ok(SessionCaller { user, session })
    }
}

/// No `Authorization` header: `None`; one that does not hold a valid access
/// token: the same 401 as without the `Option`.
impl OptionalFromRequestParts<AppState> for SessionCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        <SessionCaller as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

/// A caller holding a valid access token, and its user.
pub struct UserCaller(pub User);

impl FromRequestParts<AppState> for UserCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        <SessionCaller as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(|caller| UserCaller(caller.user))
    }
}

/// A caller of `user-profile`, `get-api-keys` and `generate-api-keys`: a
/// login's access token, or an API key of the account (whose scope is checked
/// by [`Caller`] against `required_scope`).
pub enum DashboardCaller {
    Session(User),
    Key {
        /// The key's user, else the account's oldest.
        user: User,
        caller: Caller,
        /// The key as presented.
        token: String,
    },
}

impl DashboardCaller {
    fn user(&self) -> &User {
        match self {
            DashboardCaller::Session(user) | DashboardCaller::Key { user, .. } => user,
        }
    }
}

impl FromRequestParts<AppState> for DashboardCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts, &["bearer", "token"])
            .filter(|t| key_id_of(t).is_some())
            .map(str::to_owned);
        let Some(token) = key else {
            return <UserCaller as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .map(|UserCaller(user)| DashboardCaller::Session(user));
        };
        let caller =
            <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        let user = key_user(state, &caller).await?;
        Ok(DashboardCaller::Key {
            user,
            caller,
            token,
        })
    }
}

/// The user an API key acts for: the user whose generated key it is, else the
/// account's oldest user (keys made by the command line or the key API belong
/// to no user). An account has few users, so looking at each one's key is cheap.
async fn key_user(state: &AppState, caller: &Caller) -> Result<User, ApiError> {
    let mut users = state.store.list_users(Some(caller.account_id)).await?;
    users.sort_by_key(|u| (u.created_at, u.id));
    for user in &users {
        if let Some(key) = state.store.user_key(user.id).await?
            && key.record.id == caller.key_row
        {
            return Ok(user.clone());
        }
    }
    users.into_iter().next().ok_or_else(|| {
        ApiError::refusal(
            StatusCode::NOT_FOUND,
            FieldError::new(
                "non_field_errors",
                "no_user",
                "This account has no user; create one with `otpgate users create`.",
            ),
            None,
        )
    })
}

/// The client's address, as logs show it.
fn client_for_log(client: Option<IpAddr>) -> String {
    client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// Refusals that cost a client nothing (a shed login, a login over a limit)
/// come in floods: they are logged at most once a second each, so a flood
/// cannot fill the disk with log lines. Failed password checks are bounded by
/// the limits and are all logged.
static SHED_LOG: LogThrottle = LogThrottle::new();
static LIMITED_LOG: LogThrottle = LogThrottle::new();

/// 429 for a login shed because the password checks are full.
fn login_busy() -> ApiError {
    ApiError::refusal(
        StatusCode::TOO_MANY_REQUESTS,
        FieldError::new(
            "non_field_errors",
            "login_busy",
            "Too many logins are being checked right now; try again in a second.",
        ),
        Some(json!({ "retry_after": 1 })),
    )
    .with_retry_after(1)
}

/// 429 for a login refused by one of the attempt limits.
fn too_many_attempts(scope: LoginScope, retry_after_seconds: u64) -> ApiError {
    let (code, what) = match scope {
        LoginScope::Email => ("too_many_attempts", "Too many login attempts"),
        LoginScope::Address => (
            "too_many_attempts_from_address",
            "Too many login attempts from your address",
        ),
        LoginScope::Global => ("too_many_logins", "Too many login attempts on this gateway"),
    };
    let message = format!("{what}; try again in {retry_after_seconds} seconds.");
    ApiError::refusal(
        StatusCode::TOO_MANY_REQUESTS,
        FieldError::new("non_field_errors", code, message),
        Some(json!({ "retry_after": retry_after_seconds })),
    )
    .with_retry_after(retry_after_seconds)
}

/// A scope as logs name it.
fn scope_name(scope: LoginScope) -> &'static str {
    match scope {
        LoginScope::Email => "email",
        LoginScope::Address => "address",
        LoginScope::Global => "global",
    }
}

/// The login body (JSON or form).
#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    /// Any case; at most 254 characters.
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "ana@example.com")]
    email: Raw,
    /// As set, at most 1024 bytes.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    password: Raw,
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
    /// The two tokens again, where TingTing's older docs put them
    /// (`data.token.access`, `data.token.refresh`).
    pub token: TokenPair,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    pub access: String,
    pub refresh: String,
}

/// The login reply: the envelope, with the two tokens also at the top level
/// (where djangorestframework-simplejwt clients look for them) and
/// `has_logged_in` (TingTing's current docs). The tokens also come as
/// `HttpOnly` cookies `access` and `refresh`, never read back.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    #[serde(flatten)]
    pub envelope: Envelope<LoginTokens>,
    pub access: String,
    pub refresh: String,
    pub has_logged_in: bool,
}

/// A `Set-Cookie` value for a token: `HttpOnly` (no script reads it),
/// `SameSite=Strict`, `Secure` in production mode, for as long as the token lasts.
fn token_cookie(name: &str, token: &str, lifetime_seconds: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={token}; Path=/; Max-Age={lifetime_seconds}; HttpOnly; SameSite=Strict{secure}")
}

/// The login check every login goes through (the API's and the console's):
/// the node's password-check places, the attempt limits, the password, then a
/// new session. Refusals are the API's errors (429 with `Retry-After`, 401).
pub(crate) async fn authenticate(
    state: &AppState,
    client: Option<IpAddr>,
    email: &Email,
    password: &str,
) -> Result<(User, Session), ApiError> {
    let users = &state.users;
    // Shed before counting: a shed attempt checks nothing, so it costs the
    // email and the address no attempt.
    let Some(admission) = users.passwords.admit() else {
        if SHED_LOG.allow() {
            tracing::warn!(
                client = %client_for_log(client),
                "login shed: too many password checks running or waiting (logged at most once a second)"
            );
        }
        return Err(login_busy());
    };
    let address = client.map(address_key);
    if let LoginGate::Locked {
        scope,
        retry_after_seconds,
    } = state
        .store
        .count_login_attempt(email.as_str(), address.as_deref(), users.login_policy())
        .await?
    {
        if LIMITED_LOG.allow() {
            tracing::warn!(
                client = %client_for_log(client),
                email_id = %users.email_log_id(email),
                limit = scope_name(scope),
                "login refused: too many attempts (logged at most once a second)"
            );
        }
        return Err(too_many_attempts(scope, retry_after_seconds));
    }
    let user = state.store.user_by_email(email.as_str()).await?;
    let matched = users
        .passwords
        .verify(
            admission,
            password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await
        .map_err(hash_failed)?;
    let user = match user {
        Some(user) if matched => user,
        _ => {
            tracing::warn!(
                client = %client_for_log(client),
                email_id = %users.email_log_id(email),
                "login refused: wrong email or password"
            );
            return Err(ApiError::unauthenticated(WRONG_CREDENTIALS));
        }
    };
    state.store.clear_login_attempts(email.as_str()).await?;
    refuse_disabled(state, &user).await?;
    let now = now_secs();
    let session = state
        .store
        .create_session(
            user.id,
            client.map(|ip| ip.to_string()),
            now.saturating_add(users.tokens.lifetime(TokenKind::Refresh))
                .saturating_mul(1_000_000),
            users.max_sessions_per_user,
        )
        .await?;
    Ok((user, session))
}

/// Log in with email and password.
#[utoipa::path(
    post,
    path = "/api/v1/auths/login/",
    tag = "users",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Logged in; the tokens are also set as `HttpOnly` cookies `access` and `refresh` (never accepted as authentication)", body = LoginResponse),
        (status = 400, description = "A field is missing or too long", body = super::error::ErrorEnvelope),
        (status = 401, description = "Wrong email or password (one reply for both)", body = super::error::ErrorEnvelope),
        (status = 429, description = "Refused without checking the password: too many attempts in the window for this email (`too_many_attempts`), from this client address (`too_many_attempts_from_address`) or on the whole gateway (`too_many_logins`), or too many password checks running on this node (`login_busy`); `Retry-After` says when to try again", body = super::error::ErrorEnvelope),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    client: Option<Extension<ClientIp>>,
    Fields(req): Fields<LoginRequest>,
) -> Result<
    (
        AppendHeaders<[(header::HeaderName, String); 2]>,
        Json<LoginResponse>,
    ),
    ApiError,
> {
    let (email, password) = login_fields(&req).map_err(ApiError::validation)?;
    let users = &state.users;
    let client = client.map(|Extension(ClientIp(ip))| ip);
    let (user, session) = authenticate(&state, client, &email, &password).await?;
    let now = now_secs();
    let access = users
        .tokens
        .issue(TokenKind::Access, &user, session.id, now);
    let refresh = users
        .tokens
        .issue(TokenKind::Refresh, &user, session.id, now);
    tracing::info!(
        user_id = user.id,
        account_id = user.account_id,
        session_id = session.id,
        client = %client_for_log(client),
        "user logged in"
    );
    let at = |secs: i64| rfc3339(secs.saturating_mul(1_000_000), &state.tz);
    let secure = state.config.mode == crate::config::Mode::Production;
    let cookies = AppendHeaders([
        (
            header::SET_COOKIE,
            token_cookie("access", &access.token, access.expires_at - now, secure),
        ),
        (
            header::SET_COOKIE,
            token_cookie("refresh", &refresh.token, refresh.expires_at - now, secure),
        ),
    ]);
    Ok((
        cookies,
        Json(LoginResponse {
            access: access.token.clone(),
            refresh: refresh.token.clone(),
            has_logged_in: true,
            envelope: Envelope::ok(
                "Login successful.",
                LoginTokens {
                    access_expires_at: at(access.expires_at),
                    refresh_expires_at: at(refresh.expires_at),
                    token: TokenPair {
                        access: access.token.clone(),
                        refresh: refresh.token.clone(),
                    },
                    access: access.token,
                    refresh: refresh.token,
                    token_type: "Bearer".into(),
                },
            ),
        }),
    ))
}

fn login_fields(req: &LoginRequest) -> Result<(Email, String), Vec<FieldError>> {
    let mut errors = Vec::new();
    let email = required_text(&req.email, "email", &mut errors);
    let password = required_text(&req.password, "password", &mut errors);
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
#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// The refresh token a login returned.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    refresh: Raw,
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
        (status = 401, description = "Not a valid, unexpired refresh token (an access token is not one), revoked (logout), or issued before the password changed", body = super::error::ErrorEnvelope),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    Fields(req): Fields<RefreshRequest>,
) -> Result<Json<RefreshResponse>, ApiError> {
    let mut errors = Vec::new();
    let token = required_text(&req.refresh, "refresh", &mut errors);
    let Some(token) = token else {
        return Err(ApiError::validation(errors));
    };
    let now = now_secs();
    let claims = state
        .users
        .tokens
        .check(token.trim(), TokenKind::Refresh, now)
        .ok_or_else(|| ApiError::unauthenticated(BAD_TOKEN))?;
    let (session, user) = token_session(&state, &claims).await?;
    state.store.touch_session(session.id, now_micros()).await?;
    let access = state
        .users
        .tokens
        .issue(TokenKind::Access, &user, session.id, now);
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

/// TingTing's `user` object. otpgate keeps no names: they are null, and
/// `username` is the email.
#[derive(Debug, Serialize, ToSchema)]
pub struct TingTingUser {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: String,
    pub email: String,
}

/// The profile reply: TingTing's fields at the top level (those otpgate does
/// not keep are null) beside our envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileResponse {
    #[serde(flatten)]
    pub envelope: Envelope<UserProfile>,
    /// The user's id.
    pub id: i64,
    pub user: TingTingUser,
    pub profile_picture: Option<String>,
    pub contact_no: Option<String>,
    pub address: Option<String>,
    pub is_verified_contact: Option<bool>,
}

/// The user and its account (`user-detail/` is the same endpoint under its
/// older name). With an API key (scope `read`): the key's user, else the
/// account's oldest user.
#[utoipa::path(
    get,
    path = "/api/v1/auths/user-profile/",
    tag = "users",
    responses(
        (status = 200, description = "The user", body = ProfileResponse),
        (status = 401, description = "No valid access token or API key", body = super::error::ErrorEnvelope),
        (status = 403, description = "The API key lacks the `read` scope (`insufficient_scope`)", body = super::error::ErrorEnvelope),
        (status = 404, description = "Called with an API key of an account that has no user (`no_user`)", body = super::error::ErrorEnvelope),
    ),
    security(("access_token" = []), ("bearer" = []))
)]
pub async fn user_detail(
    State(state): State<AppState>,
    caller: DashboardCaller,
) -> Result<Json<ProfileResponse>, ApiError> {
    let user = caller.user().clone();
    let account = state
        .store
        .account(user.account_id)
        .await?
        .ok_or_else(|| ApiError::internal("a user's account is missing"))?;
    Ok(Json(ProfileResponse {
        id: user.id,
        user: TingTingUser {
            first_name: None,
            last_name: None,
            username: user.email.clone(),
            email: user.email.clone(),
        },
        profile_picture: None,
        contact_no: None,
        address: None,
        is_verified_contact: None,
        envelope: Envelope::ok(
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
        ),
    }))
}

/// A user's API key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// The whole key when it is generated; when read back, the whole key
    /// with `api.reveal_keys` (if a copy of it is kept), else masked
    /// (`otpg_<key_id>_********`).
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

/// A key reply: the envelope, with `token`, `last_used` and `created_at` also
/// at the top level, as TingTing's clients read them (`message` is the
/// envelope's).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyResponse {
    #[serde(flatten)]
    pub envelope: Envelope<ApiKeyView>,
    pub token: String,
    pub last_used: Option<String>,
    pub created_at: String,
}

fn key_reply(message: &str, key: &ApiKeyRecord, token: String, state: &AppState) -> KeyResponse {
    let view = ApiKeyView {
        token,
        key_id: key.key_id.clone(),
        created_at: rfc3339(key.created_at, &state.tz),
        last_used: key.last_used.map(|at| rfc3339(at, &state.tz)),
    };
    KeyResponse {
        token: view.token.clone(),
        last_used: view.last_used.clone(),
        created_at: view.created_at.clone(),
        envelope: Envelope::ok(message, view),
    }
}

/// The optional body of `generate-api-keys`.
#[derive(Deserialize, ToSchema)]
pub struct GenerateApiKeyRequest {
    /// Some of `send`, `verify`, `read`, `account`; default `send, verify, read`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, example = json!(["send", "verify", "read"]))]
    scopes: Raw,
}

/// Issue a new API key for the user's account; the user's previous key (the
/// one this endpoint issued it before) stops working at once, other keys of
/// the account go on. The body may be left out; its optional `scopes` (a list,
/// or one string separated by commas) says what the key may do, by default
/// `send, verify, read` (`account` only when asked for). With an API key
/// (scope `account`): for the key's user, else the account's oldest user; a
/// key never gives a scope it lacks itself.
#[utoipa::path(
    post,
    path = "/api/v1/auths/generate-api-keys/",
    tag = "users",
    request_body(content = GenerateApiKeyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The new key", body = KeyResponse),
        (status = 400, description = "Invalid scopes; nothing changed", body = super::error::ErrorEnvelope),
        (status = 401, description = "No valid access token or API key", body = super::error::ErrorEnvelope),
        (status = 403, description = "The API key lacks the `account` scope, or a scope it asks to give (`insufficient_scope`)", body = super::error::ErrorEnvelope),
        (status = 404, description = "Called with an API key of an account that has no user (`no_user`)", body = super::error::ErrorEnvelope),
    ),
    security(("access_token" = []), ("bearer" = []))
)]
pub async fn generate_api_key(
    State(state): State<AppState>,
    caller: DashboardCaller,
    OptionalFields(req): OptionalFields<GenerateApiKeyRequest>,
) -> Result<Json<KeyResponse>, ApiError> {
    let mut errors = Vec::new();
    let scopes = scopes_field(&req.scopes, &mut errors).unwrap_or(Scopes::DEFAULT);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    if let DashboardCaller::Key { caller, .. } = &caller
        && let Some(missing) = scopes.first_missing_from(caller.scopes)
    {
        return Err(super::extract::insufficient_scope(missing));
    }
    let user = caller.user();
    let issued = issue_key_with_scopes(
        user.account_id,
        Some("generated by its user".into()),
        scopes,
    );
    let key = state
        .store
        .replace_user_key(user.id, issued.record, issued.plaintext.clone())
        .await?;
    tracing::info!(
        user_id = user.id,
        key_id = %key.key_id,
        scopes = %key.scopes,
        "user generated an API key"
    );
    Ok(Json(key_reply(
        "API key generated; the previous one is revoked.",
        &key,
        issued.plaintext,
        &state,
    )))
}

/// The user's current API key: whole with `api.reveal_keys` (from its sealed
/// copy), else masked. With an API key (scope `read`): that key itself.
#[utoipa::path(
    get,
    path = "/api/v1/auths/get-api-keys/",
    tag = "users",
    responses(
        (status = 200, description = "The key; `message` says why it is masked when it is", body = KeyResponse),
        (status = 401, description = "No valid access token or API key", body = super::error::ErrorEnvelope),
        (status = 403, description = "The API key lacks the `read` scope (`insufficient_scope`)", body = super::error::ErrorEnvelope),
        (status = 404, description = "The user has no active key (`no_api_key`), or the API key's account has no user (`no_user`)", body = super::error::ErrorEnvelope),
    ),
    security(("access_token" = []), ("bearer" = []))
)]
pub async fn get_api_key(
    State(state): State<AppState>,
    caller: DashboardCaller,
) -> Result<Json<KeyResponse>, ApiError> {
    let reveal = state.config.reveal_keys();
    if let DashboardCaller::Key { caller, token, .. } = &caller {
        let key_id = key_id_of(token).unwrap_or_default();
        let key = state
            .store
            .find_key(key_id)
            .await?
            .filter(|k| k.id == caller.key_row)
            .ok_or_else(|| ApiError::unauthenticated("Invalid token."))?;
        let (token, message) = if reveal {
            (token.clone(), "API key.")
        } else {
            (masked(&key.key_id), MASKED_BY_SETTING)
        };
        return Ok(Json(key_reply(message, &key, token, &state)));
    }
    let key = state
        .store
        .user_key(caller.user().id)
        .await?
        .ok_or_else(|| {
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
    let shown = masked(&key.record.key_id);
    let (token, message) = match key.copy {
        KeyCopy::Plain(whole) if reveal => (whole, "API key."),
        KeyCopy::Plain(_) => (shown, MASKED_BY_SETTING),
        KeyCopy::Missing => (
            shown,
            "API key, masked: it was generated before otpgate kept a copy of keys, so it cannot be shown again; generate a new one to read it here.",
        ),
        KeyCopy::Unreadable => (
            shown,
            "API key, masked: its copy was sealed under an encryption key that is no longer configured; generate a new one to read it here.",
        ),
    };
    Ok(Json(key_reply(message, &key.record, token, &state)))
}

const MASKED_BY_SETTING: &str =
    "API key, masked: this server does not show keys (api.reveal_keys).";

/// One login of the user whose refresh token is still valid.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// For `logout/` `{"session_id": ...}`.
    pub id: i64,
    /// When the user logged in (RFC 3339 in the configured zone).
    pub created_at: String,
    /// When its refresh token expires.
    pub expires_at: String,
    /// Its refresh token's last use; null if never.
    pub last_used_at: Option<String>,
    /// The client address the login came from, if known.
    pub client: Option<String>,
    /// Whether the access token of this request belongs to it.
    pub current: bool,
}

/// The user's logins whose refresh token is still valid (neither revoked nor
/// expired), newest first.
#[utoipa::path(
    get,
    path = "/api/v1/auths/sessions/",
    tag = "users",
    responses(
        (status = 200, description = "The active sessions", body = Envelope<Vec<SessionView>>),
        (status = 401, description = "No valid access token", body = super::error::ErrorEnvelope),
    ),
    security(("access_token" = []))
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: SessionCaller,
) -> Result<Json<Envelope<Vec<SessionView>>>, ApiError> {
    let sessions = state
        .store
        .list_sessions(caller.user.id, now_micros())
        .await?;
    let views = sessions
        .into_iter()
        .map(|s| SessionView {
            id: s.id,
            created_at: rfc3339(s.created_at, &state.tz),
            expires_at: rfc3339(s.expires_at, &state.tz),
            last_used_at: s.last_used_at.map(|at| rfc3339(at, &state.tz)),
            client: s.client,
            current: s.id == caller.session.id,
        })
        .collect();
    Ok(Json(Envelope::ok("Sessions.", views)))
}

/// The logout body: all fields optional.
#[derive(Deserialize, ToSchema)]
pub struct LogoutRequest {
    /// A refresh token: its session is revoked (no `Authorization` needed).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    refresh: Raw,
    /// With an access token: revoke this session of the user's (from
    /// `sessions/`).
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    session_id: Raw,
    /// `true`: revoke every session of the user (of the access token, or of
    /// `refresh`).
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    all: Raw,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogoutResult {
    /// Sessions revoked by this call (0 when the refresh token's session was
    /// already revoked).
    pub revoked: u64,
}

/// Revoke refresh tokens: the one in `refresh`; or, with an access token and
/// no `refresh`, the token's own session, the session `session_id`, or with
/// `all: true` every session of the user. A revoked session's refresh token is
/// refused at `login/refresh/` and its access tokens everywhere.
#[utoipa::path(
    post,
    path = "/api/v1/auths/logout/",
    tag = "users",
    request_body(content = LogoutRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Revoked", body = Envelope<LogoutResult>),
        (status = 400, description = "A field has the wrong type, or neither `refresh` nor an access token was given (`required` on `refresh`)", body = super::error::ErrorEnvelope),
        (status = 401, description = "`refresh` is not a valid refresh token, or the `Authorization` header holds no valid access token", body = super::error::ErrorEnvelope),
        (status = 404, description = "`session_id` is not an active session of the user (`session_not_found`)", body = super::error::ErrorEnvelope),
    ),
    security((), ("access_token" = []))
)]
pub async fn logout(
    State(state): State<AppState>,
    caller: Option<SessionCaller>,
    Fields(req): Fields<LogoutRequest>,
) -> Result<Json<Envelope<LogoutResult>>, ApiError> {
    let mut errors = Vec::new();
    let refresh = match req.refresh.given() {
        None => None,
        Some(Value::String(token)) => Some(token.trim().to_owned()),
        Some(_) => {
            errors.push(FieldError::new(
                "refresh",
                "invalid_type",
                "refresh must be a string.",
            ));
            None
        }
    };
    let all = match req.all.given() {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
        Some(_) => {
            errors.push(FieldError::new(
                "all",
                "invalid_type",
                "all must be true or false.",
            ));
            false
        }
    };
    let session_id = match req.session_id.given() {
        None => None,
        Some(v) => match v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        {
            Some(id) if id > 0 => Some(id),
            _ => {
                errors.push(FieldError::new(
                    "session_id",
                    "invalid",
                    "session_id must be a positive integer.",
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let now = now_micros();
    let revoked = if let Some(token) = refresh {
        let claims = state
            .users
            .tokens
            .check(&token, TokenKind::Refresh, now_secs())
            .ok_or_else(|| ApiError::unauthenticated(BAD_TOKEN))?;
        // Logging a session out again changes nothing and says so (revoked
        // 0); but only a live session's token may end *all* of its user's
        // sessions: one that a logout or a password reset already ended must
        // not end the sessions made after it.
        if all {
            token_session(&state, &claims).await?;
        }
        let only = (!all).then_some(claims.sid);
        let revoked = state
            .store
            .revoke_sessions(claims.user_id, only, now)
            .await?;
        tracing::info!(
            user_id = claims.user_id,
            session_id = claims.sid,
            all,
            revoked,
            "user logged out with a refresh token"
        );
        revoked
    } else if let Some(caller) = caller {
        let only = match (all, session_id) {
            (true, _) => None,
            (false, Some(id)) => Some(id),
            (false, None) => Some(caller.session.id),
        };
        let revoked = state
            .store
            .revoke_sessions(caller.user.id, only, now)
            .await?;
        if revoked == 0 && session_id.is_some() && !all {
            return Err(ApiError::refusal(
                StatusCode::NOT_FOUND,
                FieldError::new(
                    "session_id",
                    "session_not_found",
                    "No active session of yours has this id.",
                ),
                None,
            ));
        }
        tracing::info!(
            user_id = caller.user.id,
            session_id = caller.session.id,
            all,
            revoked,
            "user logged out"
        );
        revoked
    } else {
        return Err(ApiError::validation(vec![FieldError::new(
            "refresh",
            "required",
            "refresh is required (or log out with an access token in Authorization).",
        )]));
    };
    Ok(Json(Envelope::ok("Logged out.", LogoutResult { revoked })))
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
