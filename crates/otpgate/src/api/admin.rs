//! The admin API, `/admin/v1/...`: what the `otpgate accounts`, `credits`,
//! `keys` and `users` commands do, over HTTP.
//!
//! It takes one token, `admin.token` (`Authorization: Bearer <token>`),
//! compared in constant time (see [`crate::users::UserAuth::is_admin_token`]);
//! neither an API key nor a user's token opens it. With no `admin.token`
//! configured, every admin path answers 404, as a path that does not exist.
//! Bodies are JSON objects (or forms); replies use the envelope of the rest of
//! the API. Each change is logged with what it changed, never with a key or a
//! password.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/admin/v1/accounts/` | list accounts |
//! | POST | `/admin/v1/accounts/` | create one, with its first API key |
//! | GET | `/admin/v1/accounts/{id}/` | one account |
//! | POST | `/admin/v1/accounts/{id}/credits/` | add (or remove) credits |
//! | POST | `/admin/v1/accounts/{id}/disable/` | refuse its keys, users and sends |
//! | POST | `/admin/v1/accounts/{id}/enable/` | let it in again |
//! | GET, POST | `/admin/v1/accounts/{id}/keys/` | list keys; create one |
//! | POST | `/admin/v1/keys/{key_id}/revoke/` | revoke a key |
//! | GET, POST | `/admin/v1/accounts/{id}/users/` | list users; create one |
//! | POST | `/admin/v1/users/{id}/password/` | set a user's password |
//! | GET | `/admin/v1/routes/` | list carrier routes and their state |
//! | POST | `/admin/v1/routes/{name}/pause/` | stop a route taking messages |
//! | POST | `/admin/v1/routes/{name}/drain/` | finish what is in flight, then pause |
//! | POST | `/admin/v1/routes/{name}/resume/` | let a route take messages again |
//!
//! An account's approved templates and senders are in
//! [`super::account_rules`], its default fallback call in
//! [`super::account_fallback`].

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, ToSchema};

use otp_store::{Account, ApiKeyRecord, Scopes, User};

use super::account_fallback::AccountFallbackView;
use super::envelope::Envelope;
use super::error::{ApiError, FieldError};
use super::extract::Fields;
use super::fields::{Raw, integer, required_text, scopes_field, text};
use super::list::rfc3339;
use super::users::bearer;
use crate::accounts::{self, AccountName, CreditChange, Label, NewKey, Problem, Refusal};
use crate::control::RouteView;
use crate::delivery::router::RouteState;
use crate::state::AppState;
use crate::users::{Email, NewPassword, PasswordRules};

pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for (path, route) in [
        (
            "/admin/v1/accounts/",
            get(list_accounts).post(create_account),
        ),
        ("/admin/v1/accounts/{id}/", get(get_account)),
        ("/admin/v1/accounts/{id}/credits/", post(add_credits)),
        ("/admin/v1/accounts/{id}/disable/", post(disable_account)),
        ("/admin/v1/accounts/{id}/enable/", post(enable_account)),
        (
            "/admin/v1/accounts/{id}/keys/",
            get(list_keys).post(create_key),
        ),
        ("/admin/v1/keys/{key_id}/revoke/", post(revoke_key)),
        (
            "/admin/v1/accounts/{id}/users/",
            get(list_users).post(create_user),
        ),
        ("/admin/v1/users/{id}/password/", post(set_password)),
        ("/admin/v1/routes/", get(list_routes)),
        ("/admin/v1/routes/{name}/pause/", post(pause_route)),
        ("/admin/v1/routes/{name}/drain/", post(drain_route)),
        ("/admin/v1/routes/{name}/resume/", post(resume_route)),
    ] {
        router = router
            .route(path, route.clone())
            .route(path.trim_end_matches('/'), route);
    }
    router
}

/// A caller holding the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !state.users.admin_enabled() {
            return Err(ApiError::not_found());
        }
        let token = bearer(parts, &["bearer"]).ok_or_else(|| {
            ApiError::unauthenticated("Authentication credentials were not provided.")
        })?;
        if state.users.is_admin_token(token) {
            Ok(Admin)
        } else {
            tracing::warn!("admin API: wrong token");
            Err(ApiError::unauthenticated("Invalid admin token."))
        }
    }
}

impl From<Problem> for FieldError {
    fn from(p: Problem) -> Self {
        FieldError::new(p.field, p.code, p.message)
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Conflict(problem) => {
                ApiError::refusal(StatusCode::CONFLICT, problem.into(), None)
            }
            Refusal::NotFound => ApiError::not_found(),
            Refusal::Store(e) => e.into(),
        }
    }
}

/// The value of a parser of [`crate::accounts`], its refusal kept in `errors`.
fn checked<T>(parsed: Result<T, Problem>, errors: &mut Vec<FieldError>) -> Option<T> {
    parsed.map_err(|p| errors.push(p.into())).ok()
}

/// A path id; anything else is a 404, as a missing record.
fn path_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}

pub(super) async fn find_account(state: &AppState, raw_id: &str) -> Result<Account, ApiError> {
    let id = path_id(raw_id)?;
    state
        .store
        .account(id)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// An account as the admin API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: i64,
    pub name: String,
    pub sms_credits: i64,
    pub phone_credits: i64,
    /// OTPs accepted so far.
    pub otps: i64,
    /// RFC 3339 in the configured zone.
    pub created_at: String,
    /// When an operator disabled it (RFC 3339); `null` while enabled.
    pub disabled_at: Option<String>,
    /// Its default fallback call (`/admin/v1/accounts/{id}/fallback/`);
    /// absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<AccountFallbackView>,
}

fn account_view(a: Account, state: &AppState) -> AccountView {
    AccountView {
        created_at: rfc3339(a.created_at, &state.tz),
        disabled_at: a.disabled_at.map(|t| rfc3339(t, &state.tz)),
        id: a.id,
        name: a.name,
        sms_credits: a.sms_credits,
        phone_credits: a.phone_credits,
        otps: a.otp_count,
        fallback: a
            .fallback
            .as_ref()
            .map(|d| AccountFallbackView::of(Some(d))),
    }
}

/// A key, never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub key_id: String,
    pub account_id: i64,
    pub label: Option<String>,
    pub created_at: String,
    pub last_used: Option<String>,
    pub revoked_at: Option<String>,
    /// What the key may do: some of `send`, `verify`, `read`, `account`.
    #[schema(example = json!(["send", "verify", "read"]))]
    pub scopes: Vec<&'static str>,
}

pub(super) fn key_view(k: &ApiKeyRecord, state: &AppState) -> KeyView {
    let at = |t: i64| rfc3339(t, &state.tz);
    KeyView {
        key_id: k.key_id.clone(),
        account_id: k.account_id,
        label: k.label.clone(),
        created_at: at(k.created_at),
        last_used: k.last_used.map(at),
        revoked_at: k.revoked_at.map(at),
        scopes: k.scopes.names(),
    }
}

/// A new key: the whole key is shown only in this reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewKeyView {
    pub key_id: String,
    pub account_id: i64,
    pub api_key: String,
    /// What the key may do.
    #[schema(example = json!(["send", "verify", "read"]))]
    pub scopes: Vec<&'static str>,
}

/// A new account and its first key.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewAccountView {
    pub account: AccountView,
    pub key: NewKeyView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: i64,
    pub email: String,
    pub account_id: i64,
    pub created_at: String,
    pub password_changed_at: String,
}

fn user_view(u: User, state: &AppState) -> UserView {
    UserView {
        id: u.id,
        email: u.email,
        account_id: u.account_id,
        created_at: rfc3339(u.created_at, &state.tz),
        password_changed_at: rfc3339(u.password_changed_at, &state.tz),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedView {
    pub key_id: String,
    pub revoked: bool,
}

/// The body of `POST /admin/v1/accounts/`.
#[derive(Deserialize, ToSchema)]
pub struct CreateAccountRequest {
    /// Unique, 1-100 characters.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    name: Raw,
    /// Opening SMS credits, default 0.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    sms_credits: Raw,
    /// Opening phone credits, default 0.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    phone_credits: Raw,
    /// What the first key may do (as in `POST /admin/v1/accounts/{id}/keys/`);
    /// default `send, verify, read`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, example = json!(["send", "verify", "read"]))]
    scopes: Raw,
}

/// The body of `POST /admin/v1/accounts/{id}/credits/`.
#[derive(Deserialize, ToSchema)]
pub struct AddCreditsRequest {
    /// SMS credits to add; negative removes. Default 0.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    sms: Raw,
    /// Phone credits to add; negative removes. Default 0.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    phone: Raw,
    /// Kept in the ledger; at most 100 characters.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    note: Raw,
}

/// The body of `POST /admin/v1/accounts/{id}/keys/`.
#[derive(Deserialize, ToSchema)]
pub struct CreateKeyRequest {
    /// At most 100 characters.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    label: Raw,
    /// What the key may do: some of `send`, `verify`, `read`, `account` (a
    /// list, or one string separated by commas). Default `send, verify, read`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, example = json!(["send", "verify", "read", "account"]))]
    scopes: Raw,
}

/// The body of `POST /admin/v1/accounts/{id}/users/`.
#[derive(Deserialize, ToSchema)]
pub struct CreateUserRequest {
    /// Unique whatever its case.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    email: Raw,
    /// 8 characters or more, at most 1024 bytes.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    password: Raw,
}

/// The body of `POST /admin/v1/users/{id}/password/`.
#[derive(Deserialize, ToSchema)]
pub struct SetPasswordRequest {
    /// 8 characters or more, at most 1024 bytes.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    password: Raw,
}

/// An optional label or note field ([`Label`]).
fn label_field(value: &Raw, name: &'static str, errors: &mut Vec<FieldError>) -> Option<Label> {
    let value = text(value, name, errors)?;
    checked(Label::parse(name, value), errors)
}

/// The view of a key just made.
pub(super) fn new_key_view(key: NewKey) -> NewKeyView {
    NewKeyView {
        key_id: key.record.key_id,
        account_id: key.record.account_id,
        api_key: key.api_key,
        scopes: key.record.scopes.names(),
    }
}

/// All accounts, oldest first.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/",
    tag = "admin",
    responses(
        (status = 200, description = "The accounts", body = Envelope<Vec<AccountView>>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "The admin API is off (no `admin.token`)", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn list_accounts(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Envelope<Vec<AccountView>>>, ApiError> {
    let list = state.store.list_accounts().await?;
    Ok(Json(Envelope::ok(
        "Accounts.",
        list.into_iter().map(|a| account_view(a, &state)).collect(),
    )))
}

/// Create an account with opening credits and its first API key.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/",
    tag = "admin",
    request_body(content = CreateAccountRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The account and its key (shown only now)", body = Envelope<NewAccountView>),
        (status = 400, description = "Invalid fields", body = super::error::ErrorEnvelope),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "The admin API is off", body = super::error::ErrorEnvelope),
        (status = 409, description = "The name is taken (`name_taken`)", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn create_account(
    _: Admin,
    State(state): State<AppState>,
    Fields(req): Fields<CreateAccountRequest>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let name = required_text(&req.name, "name", &mut errors)
        .and_then(|n| checked(AccountName::parse(&n), &mut errors));
    let mut opening = |value: &Raw, field: &'static str| {
        let value = integer(value, field, &mut errors).unwrap_or(0);
        checked(accounts::opening_credits(field, value), &mut errors).unwrap_or(0)
    };
    let (sms, phone) = (
        opening(&req.sms_credits, "sms_credits"),
        opening(&req.phone_credits, "phone_credits"),
    );
    let scopes = scopes_field(&req.scopes, &mut errors).unwrap_or(Scopes::DEFAULT);
    let name = match name {
        Some(name) if errors.is_empty() => name,
        _ => return Err(ApiError::validation(errors)),
    };
    let (account, key) = accounts::create_account(&state.store, &name, sms, phone, scopes).await?;
    Ok(Envelope::created(
        "Account created.",
        NewAccountView {
            account: account_view(account, &state),
            key: new_key_view(key),
        },
    ))
}

/// One account.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account", body = Envelope<AccountView>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn get_account(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Envelope<AccountView>>, ApiError> {
    let account = find_account(&state, &id).await?;
    Ok(Json(Envelope::ok(
        "Account.",
        account_view(account, &state),
    )))
}

/// Add credits to an account (negative numbers remove them); recorded in its
/// ledger.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/credits/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    request_body(content = AddCreditsRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The account with its new balances", body = Envelope<AccountView>),
        (status = 400, description = "Invalid fields, or nothing to add", body = super::error::ErrorEnvelope),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
        (status = 409, description = "A balance would go below zero (`negative_balance`); nothing changed", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn add_credits(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Fields(req): Fields<AddCreditsRequest>,
) -> Result<Json<Envelope<AccountView>>, ApiError> {
    let account = find_account(&state, &id).await?;
    let mut errors = Vec::new();
    let sms = integer(&req.sms, "sms", &mut errors).unwrap_or(0);
    let phone = integer(&req.phone, "phone", &mut errors).unwrap_or(0);
    let note = label_field(&req.note, "note", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let change = CreditChange::new(sms, phone).map_err(|p| ApiError::validation(vec![p.into()]))?;
    let note = note.unwrap_or_else(|| Label::ours("added with the admin API"));
    let account = accounts::add_credits(&state.store, account.id, change, note).await?;
    Ok(Json(Envelope::ok(
        "Credits added.",
        account_view(account, &state),
    )))
}

/// Disable an account: its API keys and users are refused (403
/// `account_disabled`) and it accepts no send, on every node at once; what it
/// accepted before is still delivered. Disabling twice keeps the first time.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/disable/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account, with `disabled_at` set", body = Envelope<AccountView>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn disable_account(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Envelope<AccountView>>, ApiError> {
    let account = accounts::set_disabled(&state.store, path_id(&id)?, true).await?;
    Ok(Json(Envelope::ok(
        "Account disabled.",
        account_view(account, &state),
    )))
}

/// Enable an account an operator disabled.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/enable/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account, with `disabled_at` null", body = Envelope<AccountView>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn enable_account(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Envelope<AccountView>>, ApiError> {
    let account = accounts::set_disabled(&state.store, path_id(&id)?, false).await?;
    Ok(Json(Envelope::ok(
        "Account enabled.",
        account_view(account, &state),
    )))
}

/// An account's keys, without their secrets.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}/keys/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, description = "The keys, revoked ones included", body = Envelope<Vec<KeyView>>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn list_keys(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Envelope<Vec<KeyView>>>, ApiError> {
    let account = find_account(&state, &id).await?;
    let keys = state.store.list_keys(Some(account.id)).await?;
    Ok(Json(Envelope::ok(
        "Keys.",
        keys.iter().map(|k| key_view(k, &state)).collect(),
    )))
}

/// Issue a new API key for an account.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/keys/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    request_body(content = CreateKeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The key, shown only now", body = Envelope<NewKeyView>),
        (status = 400, description = "Invalid fields", body = super::error::ErrorEnvelope),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn create_key(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Fields(req): Fields<CreateKeyRequest>,
) -> Result<Response, ApiError> {
    let account = find_account(&state, &id).await?;
    let mut errors = Vec::new();
    let label = label_field(&req.label, "label", &mut errors);
    let scopes = scopes_field(&req.scopes, &mut errors).unwrap_or(Scopes::DEFAULT);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let key = accounts::create_key(&state.store, account.id, label, scopes).await?;
    Ok(Envelope::created("Key created.", new_key_view(key)))
}

/// Revoke a key by its public id (the part after `otpg_`); it stops working on
/// the next request, on every node.
#[utoipa::path(
    post,
    path = "/admin/v1/keys/{key_id}/revoke/",
    tag = "admin",
    params(("key_id" = String, Path, description = "The key's public id (never put a whole key in a URL)")),
    responses(
        (status = 200, description = "Revoked", body = Envelope<RevokedView>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No active key with this id, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn revoke_key(
    _: Admin,
    State(state): State<AppState>,
    Path(key_id): Path<String>,
) -> Result<Json<Envelope<RevokedView>>, ApiError> {
    accounts::revoke_key(&state.store, &key_id).await?;
    Ok(Json(Envelope::ok(
        "Key revoked.",
        RevokedView {
            key_id,
            revoked: true,
        },
    )))
}

/// An account's users.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}/users/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, description = "The users", body = Envelope<Vec<UserView>>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn list_users(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Envelope<Vec<UserView>>>, ApiError> {
    let account = find_account(&state, &id).await?;
    let users = state.store.list_users(Some(account.id)).await?;
    Ok(Json(Envelope::ok(
        "Users.",
        users.into_iter().map(|u| user_view(u, &state)).collect(),
    )))
}

/// The new password of a create-user or set-password body.
fn password_field(
    value: &Raw,
    rules: PasswordRules,
    errors: &mut Vec<FieldError>,
) -> Option<NewPassword> {
    if value.given().is_none() {
        errors.push(FieldError::new(
            "password",
            "required",
            "password is required.",
        ));
        return None;
    }
    let raw = text(value, "password", errors)?;
    match NewPassword::parse(raw, rules) {
        Ok(p) => Some(p),
        Err(refused) => {
            errors.push(FieldError::new(
                "password",
                refused.code(),
                refused.to_string(),
            ));
            None
        }
    }
}

/// Create a user of an account.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/users/",
    tag = "admin",
    params(("id" = i64, Path, description = "Account id")),
    request_body(content = CreateUserRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The user", body = Envelope<UserView>),
        (status = 400, description = "Invalid email or password (`password_too_short`: under 10 characters in production mode, 8 in development; `password_too_common`; `password_too_long`: over 1024 bytes)", body = super::error::ErrorEnvelope),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such account, or the admin API is off", body = super::error::ErrorEnvelope),
        (status = 409, description = "The email is taken, whatever its case (`email_taken`)", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn create_user(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Fields(req): Fields<CreateUserRequest>,
) -> Result<Response, ApiError> {
    let account = find_account(&state, &id).await?;
    let mut errors = Vec::new();
    let email = required_text(&req.email, "email", &mut errors).and_then(|raw| {
        Email::parse(&raw)
            .map_err(|m| errors.push(FieldError::new("email", "invalid", m)))
            .ok()
    });
    let password = password_field(&req.password, state.users.password_rules, &mut errors);
    let (Some(email), Some(password)) = (email, password) else {
        return Err(ApiError::validation(errors));
    };
    let password_hash = state
        .users
        .passwords
        .hash(&password)
        .await
        .map_err(ApiError::internal)?;
    let user = accounts::create_user(&state.store, account.id, &email, password_hash).await?;
    Ok(Envelope::created("User created.", user_view(user, &state)))
}

/// Set a user's password: its tokens stop working, its sessions (refresh
/// tokens) are revoked and its login attempts are forgotten.
#[utoipa::path(
    post,
    path = "/admin/v1/users/{id}/password/",
    tag = "admin",
    params(("id" = i64, Path, description = "User id")),
    request_body(content = SetPasswordRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed", body = Envelope<UserView>),
        (status = 400, description = "Invalid password (`password_too_short`, `password_too_common`, `password_too_long`)", body = super::error::ErrorEnvelope),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such user, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn set_password(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Fields(req): Fields<SetPasswordRequest>,
) -> Result<Json<Envelope<UserView>>, ApiError> {
    let id = path_id(&id)?;
    let mut errors = Vec::new();
    let Some(password) = password_field(&req.password, state.users.password_rules, &mut errors)
    else {
        return Err(ApiError::validation(errors));
    };
    if state.store.user(id).await?.is_none() {
        return Err(ApiError::not_found());
    }
    let hash = state
        .users
        .passwords
        .hash(&password)
        .await
        .map_err(ApiError::internal)?;
    let user = accounts::set_password(&state.store, id, &hash).await?;
    Ok(Json(Envelope::ok("Password set.", user_view(user, &state))))
}

/// The carrier routes of both channels, in configured order, with what an
/// operator set them to, their deliveries in flight, their weight and how they
/// deliver: the delivery rate and median receipt time over their newest
/// finished OTPs, and whether that demoted them to probes (as every node
/// reads it from the database; see the README's "Routing by delivery").
#[utoipa::path(
    get,
    path = "/admin/v1/routes/",
    tag = "admin",
    responses(
        (status = 200, description = "The routes", body = Envelope<Vec<RouteView>>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "The admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn list_routes(
    _: Admin,
    State(state): State<AppState>,
) -> Json<Envelope<Vec<RouteView>>> {
    Json(Envelope::ok("Routes.", state.runtime.routes()))
}

async fn set_route(
    state: &AppState,
    name: &str,
    to: RouteState,
    message: &str,
) -> Result<Json<Envelope<RouteView>>, ApiError> {
    let view = state
        .runtime
        .set_route_state(name, to, &state.new_jobs)
        .ok_or_else(ApiError::not_found)?;
    tracing::info!(route = %view.name, state = view.state, "admin API: route state set");
    Ok(Json(Envelope::ok(message, view)))
}

/// Pauses a route: it takes no new message; other routes serving the same
/// numbers take over, and messages only it serves wait (see the README).
#[utoipa::path(
    post,
    path = "/admin/v1/routes/{name}/pause/",
    tag = "admin",
    params(("name" = String, Path, description = "Route name")),
    responses(
        (status = 200, description = "Paused", body = Envelope<RouteView>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such route, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn pause_route(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Envelope<RouteView>>, ApiError> {
    set_route(&state, &name, RouteState::Paused, "Route paused.").await
}

/// Drains a route: it takes no new message, and becomes `paused` once the
/// deliveries it has in flight are done (`state` says which it is now).
#[utoipa::path(
    post,
    path = "/admin/v1/routes/{name}/drain/",
    tag = "admin",
    params(("name" = String, Path, description = "Route name")),
    responses(
        (status = 200, description = "Draining, or paused already", body = Envelope<RouteView>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such route, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn drain_route(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Envelope<RouteView>>, ApiError> {
    set_route(&state, &name, RouteState::Draining, "Route draining.").await
}

/// Resumes a paused or draining route; the messages that waited go out.
#[utoipa::path(
    post,
    path = "/admin/v1/routes/{name}/resume/",
    tag = "admin",
    params(("name" = String, Path, description = "Route name")),
    responses(
        (status = 200, description = "Active", body = Envelope<RouteView>),
        (status = 401, description = "No or wrong admin token", body = super::error::ErrorEnvelope),
        (status = 404, description = "No such route, or the admin API is off", body = super::error::ErrorEnvelope),
    ),
    security(("admin_token" = []))
)]
pub async fn resume_route(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Envelope<RouteView>>, ApiError> {
    set_route(&state, &name, RouteState::Active, "Route resumed.").await
}

/// The `admin_token` security scheme of the OpenAPI document.
pub struct AdminTokenAuth;

impl Modify for AdminTokenAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The configured `admin.token`: `Authorization: Bearer <admin token>`",
                    ))
                    .build(),
            ),
        );
    }
}
