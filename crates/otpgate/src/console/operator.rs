//! The console's operator pages, under `/console/ops/` (issue 17):
//!
//! - `GET /console/ops/accounts`, `POST` to create one: every account.
//! - `GET /console/ops/accounts/{id}`: one account's balances, recent ledger,
//!   limits, keys and users; `POST .../credits`, `.../limits`, `.../keys`,
//!   `.../users` change them through [`crate::accounts`], the module the
//!   command line and the admin API share, so a form gets the same answer
//!   they do. A refused form comes back with the field's error next to it
//!   (400, or 409 for what only the store refuses) and nothing changed.
//! - `GET /console/ops/routes`: each route's binds or trunk, window in use,
//!   submits and receipts per second (an SVG chart), unmatched receipts,
//!   queue depth per channel and the last error of each connection; the part
//!   under `GET /console/ops/routes/live` is fetched again every 5 s by
//!   `app.js`. `POST .../{name}/pause` and `.../{name}/resume` do what the
//!   admin API's do ([`crate::control::Runtime::set_route_state`]).
//! - `GET /console/ops/otps`, `GET /console/ops/otps/{id}`: the OTP log over
//!   every account, searched by number, id and status, newest first, paged by
//!   the last id seen.
//!
//! Who is an operator: a user made with `otpgate users create --operator`
//! (logged in at `/console/login` as any user), or whoever types the
//! configured `admin.token` into `/console/ops/login`. The token is never
//! kept in a cookie: it is exchanged for a random session id held in this
//! process's memory ([`OperatorSessions`]) for [`TOKEN_SESSION_SECS`], ended
//! on the server by logging out, and lost when the process restarts (on
//! several nodes, a token session opens the node that made it only). An
//! account user gets 403 on every operator page.
//!
//! When `admin_listen` is configured these pages are served on the admin
//! listener only (see `startup.rs`); the public listener answers them 404.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::map_response;
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

use otp_domain::phone::PhoneNumber;
use otp_store::{AllOtpsQuery, OtpStatus, Scopes, now_micros};

use super::operator_pages as view;
use super::pages::Page;
use super::{
    Console, LOGIN_COOKIE, console_session, cookie, csrf_matches, csrf_of, csrf_refused, field,
    form, security_headers, set_cookie, store_failed,
};
use crate::accounts::{self, AccountName, CreditChange, Label, Problem, Refusal};
use crate::delivery::router::RouteState;
use crate::state::AppState;
use crate::users::{Email, NewPassword};

/// The cookie of a session made from the admin token.
const OPERATOR_COOKIE: &str = "otpgate_operator";
/// How long a session made from the admin token lasts.
pub(super) const TOKEN_SESSION_SECS: i64 = 3600;
/// Token sessions held at once; the oldest goes when a new one would pass it.
const MAX_TOKEN_SESSIONS: usize = 64;
/// OTPs on one page of the operator's log.
pub(super) const PAGE_SIZE: u32 = 50;
/// Ledger entries on an account's page.
const LEDGER_ROWS: u32 = 20;
/// Rate samples kept per route (one per refresh, at least 2 s apart).
const SAMPLES: usize = 120;

/// The operator pages, with their own session table and rate samples.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console/ops",
            get(|| async { Redirect::to("/console/ops/accounts") }),
        )
        .route(
            "/console/ops/",
            get(|| async { Redirect::to("/console/ops/accounts") }),
        )
        .route("/console/ops/login", get(login_form).post(login))
        .route("/console/ops/logout", post(logout))
        .route(
            "/console/ops/accounts",
            get(accounts_page).post(create_account),
        )
        .route("/console/ops/accounts/{id}", get(account_page))
        .route("/console/ops/accounts/{id}/credits", post(add_credits))
        .route("/console/ops/accounts/{id}/limits", post(set_limits))
        .route("/console/ops/accounts/{id}/keys", post(create_key))
        .route("/console/ops/accounts/{id}/users", post(create_user))
        .route("/console/ops/accounts/{id}/disable", post(disable_account))
        .route("/console/ops/accounts/{id}/enable", post(enable_account))
        .route("/console/ops/routes", get(routes_page))
        .route("/console/ops/routes/live", get(routes_live))
        .route("/console/ops/routes/{name}/pause", post(pause_route))
        .route("/console/ops/routes/{name}/resume", post(resume_route))
        .route("/console/ops/otps", get(otp_log))
        .route("/console/ops/otps/{id}", get(otp_page))
        .layer(Extension(Arc::new(Live::default())))
        .layer(map_response(security_headers))
}

/// What the operator pages keep in memory: sessions made from the admin
/// token (by the SHA-256 of their id, with their expiry in seconds) and each
/// route's counter samples for the rate chart.
#[derive(Default)]
pub(super) struct Live {
    // std Mutex: held for a map operation, never across an await.
    sessions: Mutex<HashMap<[u8; 32], i64>>,
    samples: Mutex<HashMap<String, VecDeque<Sample>>>,
}

/// A route's counters at one moment.
#[derive(Clone, Copy)]
pub(super) struct Sample {
    at: Instant,
    submitted: u64,
    receipts: u64,
}

fn session_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Live {
    fn open(&self, now: i64) -> String {
        let mut bytes = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system's random source failed");
        let id = URL_SAFE_NO_PAD.encode(bytes);
        let mut sessions = self.sessions.lock().expect("sessions poisoned");
        sessions.retain(|_, expires| *expires > now);
        if sessions.len() >= MAX_TOKEN_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(session_key(&id), now + TOKEN_SESSION_SECS);
        id
    }

    fn holds(&self, id: &str, now: i64) -> bool {
        self.sessions
            .lock()
            .expect("sessions poisoned")
            .get(&session_key(id))
            .is_some_and(|expires| *expires > now)
    }

    fn close(&self, id: &str) {
        self.sessions
            .lock()
            .expect("sessions poisoned")
            .remove(&session_key(id));
    }

    /// Records a sample of `route` (at most one per 2 s) and returns the
    /// samples kept, oldest first.
    fn sample(&self, route: &str, submitted: u64, receipts: u64) -> Vec<Sample> {
        let now = Instant::now();
        let mut all = self.samples.lock().expect("samples poisoned");
        let kept = all.entry(route.to_owned()).or_default();
        if kept
            .back()
            .is_none_or(|last| now.duration_since(last.at).as_secs() >= 2)
        {
            kept.push_back(Sample {
                at: now,
                submitted,
                receipts,
            });
            if kept.len() > SAMPLES {
                kept.pop_front();
            }
        }
        kept.iter().copied().collect()
    }
}

/// Per-second rates between consecutive samples: (seconds before the last
/// sample, submits/s, receipts/s).
pub(super) fn rates(samples: &[Sample]) -> Vec<(f64, f64, f64)> {
    let Some(last) = samples.last() else {
        return Vec::new();
    };
    samples
        .windows(2)
        .map(|w| {
            let dt = w[1].at.duration_since(w[0].at).as_secs_f64().max(0.001);
            (
                last.at.duration_since(w[1].at).as_secs_f64(),
                w[1].submitted.saturating_sub(w[0].submitted) as f64 / dt,
                w[1].receipts.saturating_sub(w[0].receipts) as f64 / dt,
            )
        })
        .collect()
}

/// Who is on an operator page.
pub(super) enum Operator {
    /// A user made with `--operator`.
    User(Console),
    /// A session made from the admin token.
    Token { csrf: String },
}

impl Operator {
    pub(super) fn shell(&self) -> view::Shell<'_> {
        match self {
            Operator::User(c) => view::Shell {
                who: &c.user.email,
                csrf: &c.csrf,
            },
            Operator::Token { csrf } => view::Shell {
                who: "admin token",
                csrf,
            },
        }
    }

    fn csrf(&self) -> &str {
        match self {
            Operator::User(c) => &c.csrf,
            Operator::Token { csrf } => csrf,
        }
    }

    fn log_id(&self) -> i64 {
        match self {
            Operator::User(c) => c.user.id,
            Operator::Token { .. } => 0,
        }
    }
}

fn now_secs() -> i64 {
    now_micros() / 1_000_000
}

/// The operator of the request, a redirect to the operator login, or 403
/// for an account user.
async fn require(state: &AppState, live: &Live, headers: &HeaderMap) -> Result<Operator, Response> {
    if let Some(id) = cookie(headers, OPERATOR_COOKIE)
        && live.holds(id, now_secs())
    {
        return Ok(Operator::Token {
            csrf: csrf_of("operator", id),
        });
    }
    match console_session(state, headers).await {
        Ok(Some(console)) if console.user.operator => Ok(Operator::User(console)),
        Ok(Some(console)) => {
            tracing::warn!(
                user_id = console.user.id,
                "console: an account user asked for an operator page"
            );
            Err(view::refused().into_response())
        }
        Ok(None) => Err(Redirect::to("/console/ops/login").into_response()),
        Err(page) => Err(page.into_response()),
    }
}

/// The operator and the form of a POST whose CSRF token is this session's.
async fn require_post(
    state: &AppState,
    live: &Live,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Operator, Vec<(String, String)>), Response> {
    let operator = require(state, live, headers).await?;
    let fields = form(body).unwrap_or_default();
    if !csrf_matches(operator.csrf(), field(&fields, "csrf")) {
        return Err(csrf_refused());
    }
    Ok((operator, fields))
}

// ---- the admin token's login ----

async fn login_form(
    State(state): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
    headers: HeaderMap,
) -> Response {
    if require(&state, &live, &headers).await.is_ok() {
        return Redirect::to("/console/ops/accounts").into_response();
    }
    login_page(&state, &headers, StatusCode::OK, None)
}

fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let (secret, fresh) = match cookie(headers, LOGIN_COOKIE) {
        Some(s) if s.len() == 43 => (s.to_owned(), false),
        _ => {
            let mut bytes = [0u8; 32];
            OsRng
                .try_fill_bytes(&mut bytes)
                .expect("the operating system's random source failed");
            (URL_SAFE_NO_PAD.encode(bytes), true)
        }
    };
    let page = view::login(
        state.users.admin_enabled(),
        &csrf_of("ops-login", &secret),
        error,
    );
    let mut response = (status, page).into_response();
    if fresh {
        let (name, value) = set_cookie(state, LOGIN_COOKIE, &secret, 3600);
        response.headers_mut().append(
            name,
            HeaderValue::from_str(&value).expect("cookie is ASCII"),
        );
    }
    response
}

async fn login(
    State(state): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form(&body).unwrap_or_default();
    let expected = cookie(&headers, LOGIN_COOKIE).map(|s| csrf_of("ops-login", s));
    if !expected.is_some_and(|e| csrf_matches(&e, field(&fields, "csrf"))) {
        return csrf_refused();
    }
    let token = field(&fields, "token").unwrap_or("").trim();
    if token.is_empty() {
        return login_page(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            Some("Enter the admin token."),
        );
    }
    if !state.users.admin_enabled() || !state.users.is_admin_token(token) {
        tracing::warn!("console: wrong admin token");
        return login_page(
            &state,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("This is not the admin token."),
        );
    }
    let id = live.open(now_secs());
    tracing::info!("console: operator session opened with the admin token");
    (
        AppendHeaders([
            set_cookie(&state, OPERATOR_COOKIE, &id, TOKEN_SESSION_SECS),
            set_cookie(&state, LOGIN_COOKIE, "", 0),
        ]),
        Redirect::to("/console/ops/accounts"),
    )
        .into_response()
}

/// Ends a token session here, or an operator user's session in the store.
async fn logout(
    State(state): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (operator, _) = match require_post(&state, &live, &headers, &body).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    match operator {
        Operator::Token { .. } => {
            if let Some(id) = cookie(&headers, OPERATOR_COOKIE) {
                live.close(id);
            }
            tracing::info!("console: operator token session ended");
        }
        Operator::User(console) => {
            if let Err(e) = state
                .store
                .revoke_sessions(console.user.id, Some(console.session.id), now_micros())
                .await
            {
                return store_failed(e);
            }
            tracing::info!(user_id = console.user.id, "console logout");
        }
    }
    (
        AppendHeaders([
            set_cookie(&state, OPERATOR_COOKIE, "", 0),
            set_cookie(&state, super::SESSION_COOKIE, "", 0),
        ]),
        Redirect::to("/console/ops/login"),
    )
        .into_response()
}

// ---- accounts ----

async fn accounts_page(
    State(state): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
    headers: HeaderMap,
) -> Response {
    let operator = match require(&state, &live, &headers).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    accounts_list(
        &state,
        &operator,
        StatusCode::OK,
        &view::AccountForm::default(),
    )
    .await
}

async fn accounts_list(
    state: &AppState,
    operator: &Operator,
    status: StatusCode,
    form: &view::AccountForm,
) -> Response {
    match state.store.list_accounts().await {
        Ok(list) => (status, view::accounts(&operator.shell(), &list, form)).into_response(),
        Err(e) => store_failed(e),
    }
}

/// A whole number in a form field; blank is `blank`.
fn number(
    fields: &[(String, String)],
    name: &'static str,
    blank: Option<i64>,
) -> Result<Option<i64>, Problem> {
    match field(fields, name).map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(blank),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| Problem {
            field: name,
            code: "invalid",
            message: "Enter a whole number.".to_owned(),
        }),
    }
}

async fn create_account(
    State(state): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (operator, fields) = match require_post(&state, &live, &headers, &body).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let mut form = view::AccountForm {
        name: field(&fields, "name").unwrap_or("").to_owned(),
        sms: field(&fields, "sms_credits").unwrap_or("").to_owned(),
        phone: field(&fields, "phone_credits").unwrap_or("").to_owned(),
        ..Default::default()
    };
    let name = AccountName::parse(&form.name)
        .map_err(|p| form.problems.push(p))
        .ok();
    let mut opening = |name: &'static str| {
        number(&fields, name, Some(0))
            .and_then(|n| accounts::opening_credits(name, n.unwrap_or(0)))
            .map_err(|p| form.problems.push(p))
            .ok()
    };
    let (sms, phone) = (opening("sms_credits"), opening("phone_credits"));
    let (Some(name), Some(sms), Some(phone)) = (name, sms, phone) else {
        return accounts_list(&state, &operator, StatusCode::BAD_REQUEST, &form).await;
    };
    match accounts::create_account(&state.store, &name, sms, phone, Scopes::DEFAULT).await {
        Ok((account, key)) => {
            tracing::info!(
                account_id = account.id,
                by_user = operator.log_id(),
                "console: account created"
            );
            let made = view::Made {
                key: Some(key.api_key),
                ..Default::default()
            };
            account_view(&state, &operator, account.id, StatusCode::CREATED, &made).await
        }
        Err(Refusal::Conflict(p)) => {
            form.problems.push(p);
            accounts_list(&state, &operator, StatusCode::CONFLICT, &form).await
        }
        Err(Refusal::NotFound) => Page::failure(StatusCode::NOT_FOUND).into_response(),
        Err(Refusal::Store(e)) => store_failed(e),
    }
}

async fn account_page(
    State(state): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let operator = match require(&state, &live, &headers).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Ok(id) = id.parse::<i64>() else {
        return Page::failure(StatusCode::NOT_FOUND).into_response();
    };
    account_view(
        &state,
        &operator,
        id,
        StatusCode::OK,
        &view::Made::default(),
    )
    .await
}

/// One account's page, with what a form just did or refused.
async fn account_view(
    state: &AppState,
    operator: &Operator,
    id: i64,
    status: StatusCode,
    made: &view::Made,
) -> Response {
    let account = match state.store.account(id).await {
        Ok(Some(a)) => a,
        Ok(None) => return Page::failure(StatusCode::NOT_FOUND).into_response(),
        Err(e) => return store_failed(e),
    };
    let loaded = async {
        Ok::<_, otp_store::StoreError>((
            state.store.recent_ledger(id, LEDGER_ROWS).await?,
            state.store.account_limits(id).await?,
            state.store.list_keys(Some(id)).await?,
            state.store.list_users(Some(id)).await?,
        ))
    };
    match loaded.await {
        Ok((ledger, limits, mut keys, users)) => {
            keys.sort_by_key(|k| (k.revoked_at.is_some(), std::cmp::Reverse(k.created_at)));
            let data = view::AccountData {
                account: &account,
                ledger: &ledger,
                limits: limits.as_ref(),
                keys: &keys,
                users: &users,
            };
            (
                status,
                view::account(&operator.shell(), &data, made, &state.tz),
            )
                .into_response()
        }
        Err(e) => store_failed(e),
    }
}

/// A POST to one account's page: the operator (its session's CSRF token
/// checked), the form's fields and the account of the path (which exists).
/// Refused with the login redirect, 403, or the 404 page.
struct AccountForm {
    operator: Operator,
    fields: Vec<(String, String)>,
    id: i64,
}

impl FromRequest<AppState> for AccountForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Extension(live) = Extension::<Arc<Live>>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Path(id) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let (operator, fields) = require_post(state, &live, &headers, &body).await?;
        let id = path_account(state, &id).await?;
        Ok(AccountForm {
            operator,
            fields,
            id,
        })
    }
}

/// The account of a form's path, or the 404 page.
async fn path_account(state: &AppState, id: &str) -> Result<i64, Response> {
    let Ok(id) = id.parse::<i64>() else {
        return Err(Page::failure(StatusCode::NOT_FOUND).into_response());
    };
    match state.store.account(id).await {
        Ok(Some(a)) => Ok(a.id),
        Ok(None) => Err(Page::failure(StatusCode::NOT_FOUND).into_response()),
        Err(e) => Err(store_failed(e)),
    }
}

/// A refusal of a form on the account's page: shown next to its field, with
/// what was typed.
async fn refused(
    state: &AppState,
    AccountForm {
        operator,
        fields,
        id,
    }: &AccountForm,
    form: &'static str,
    problems: Vec<Problem>,
    status: StatusCode,
) -> Response {
    let made = view::Made {
        form: Some(form),
        problems,
        // What was typed goes back into the form; the CSRF token and a
        // password never do.
        values: fields
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "csrf" | "password"))
            .cloned()
            .collect(),
        ..Default::default()
    };
    account_view(state, operator, *id, status, &made).await
}

/// The page after a form that changed something.
fn done(id: i64) -> Response {
    Redirect::to(&format!("/console/ops/accounts/{id}")).into_response()
}

async fn add_credits(State(state): State<AppState>, form: AccountForm) -> Response {
    let (operator, fields, id) = (&form.operator, &form.fields, form.id);
    let mut problems = Vec::new();
    let sms = number(fields, "sms", Some(0))
        .map_err(|p| problems.push(p))
        .ok()
        .flatten();
    let phone = number(fields, "phone", Some(0))
        .map_err(|p| problems.push(p))
        .ok()
        .flatten();
    let note = field(fields, "note")
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let note = match note {
        Some(n) => Label::parse("note", n.to_owned())
            .map_err(|p| problems.push(p))
            .ok(),
        None => Some(Label::ours("added in the console")),
    };
    let (Some(sms), Some(phone), Some(note)) = (sms, phone, note) else {
        return refused(&state, &form, "credits", problems, StatusCode::BAD_REQUEST).await;
    };
    let change = match CreditChange::new(sms, phone) {
        Ok(c) => c,
        Err(p) => {
            return refused(&state, &form, "credits", vec![p], StatusCode::BAD_REQUEST).await;
        }
    };
    match accounts::add_credits(&state.store, id, change, note).await {
        Ok(_) => {
            tracing::info!(
                account_id = id,
                by_user = operator.log_id(),
                "console: credits added"
            );
            done(id)
        }
        Err(Refusal::Conflict(p)) => {
            refused(&state, &form, "credits", vec![p], StatusCode::CONFLICT).await
        }
        Err(Refusal::NotFound) => Page::failure(StatusCode::NOT_FOUND).into_response(),
        Err(Refusal::Store(e)) => store_failed(e),
    }
}

/// A limit field: blank is the configured default, 0 no limit, else a
/// positive whole number.
fn limit(fields: &[(String, String)], name: &'static str) -> Result<Option<i64>, Problem> {
    let value = number(fields, name, None)?;
    if value.is_some_and(|v| v < 0) {
        return Err(Problem {
            field: name,
            code: "out_of_range",
            message: "A limit cannot be negative (0: no limit; blank: the configured default)."
                .to_owned(),
        });
    }
    Ok(value)
}

async fn set_limits(State(state): State<AppState>, form: AccountForm) -> Response {
    let (operator, fields, id) = (&form.operator, &form.fields, form.id);
    let mut problems = Vec::new();
    let rps = limit(fields, "max_rps").map_err(|p| problems.push(p)).ok();
    let cap = limit(fields, "daily_spend_cap")
        .map_err(|p| problems.push(p))
        .ok();
    let (Some(rps), Some(cap)) = (rps, cap) else {
        return refused(&state, &form, "limits", problems, StatusCode::BAD_REQUEST).await;
    };
    match accounts::set_limits(&state.store, id, Some(rps), Some(cap)).await {
        Ok(_) => {
            tracing::info!(
                account_id = id,
                by_user = operator.log_id(),
                "console: limits set"
            );
            done(id)
        }
        Err(Refusal::NotFound) => Page::failure(StatusCode::NOT_FOUND).into_response(),
        Err(Refusal::Conflict(p)) => {
            refused(&state, &form, "limits", vec![p], StatusCode::CONFLICT).await
        }
        Err(Refusal::Store(e)) => store_failed(e),
    }
}

async fn create_key(State(state): State<AppState>, form: AccountForm) -> Response {
    let (operator, fields, id) = (&form.operator, &form.fields, form.id);
    let label = field(fields, "label").map(str::trim).unwrap_or("");
    let label = match label {
        "" => None,
        l => match Label::parse("label", l.to_owned()) {
            Ok(l) => Some(l),
            Err(p) => {
                return refused(&state, &form, "key", vec![p], StatusCode::BAD_REQUEST).await;
            }
        },
    };
    match accounts::create_key(&state.store, id, label, Scopes::DEFAULT).await {
        Ok(key) => {
            let made = view::Made {
                key: Some(key.api_key),
                ..Default::default()
            };
            account_view(&state, operator, id, StatusCode::CREATED, &made).await
        }
        Err(Refusal::Store(e)) => store_failed(e),
        Err(_) => Page::failure(StatusCode::NOT_FOUND).into_response(),
    }
}

async fn create_user(State(state): State<AppState>, form: AccountForm) -> Response {
    let (operator, fields, id) = (&form.operator, &form.fields, form.id);
    let mut problems = Vec::new();
    let email = Email::parse(field(fields, "email").unwrap_or(""))
        .map_err(|m| {
            problems.push(Problem {
                field: "email",
                code: "invalid",
                message: m.to_string(),
            })
        })
        .ok();
    let password = NewPassword::parse(
        field(fields, "password").unwrap_or("").to_owned(),
        state.users.password_rules,
    )
    .map_err(|refused| {
        problems.push(Problem {
            field: "password",
            code: refused.code(),
            message: refused.to_string(),
        })
    })
    .ok();
    let (Some(email), Some(password)) = (email, password) else {
        return refused(&state, &form, "user", problems, StatusCode::BAD_REQUEST).await;
    };
    let hash = match state.users.passwords.hash(&password).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "console: hashing a new user's password");
            return Page::failure(StatusCode::SERVICE_UNAVAILABLE).into_response();
        }
    };
    match accounts::create_user(&state.store, id, &email, hash).await {
        Ok(user) => {
            tracing::info!(
                user_id = user.id,
                account_id = id,
                by_user = operator.log_id(),
                "console: user created"
            );
            done(id)
        }
        Err(Refusal::Conflict(p)) => {
            refused(&state, &form, "user", vec![p], StatusCode::CONFLICT).await
        }
        Err(Refusal::NotFound) => Page::failure(StatusCode::NOT_FOUND).into_response(),
        Err(Refusal::Store(e)) => store_failed(e),
    }
}

async fn disable_account(State(state): State<AppState>, form: AccountForm) -> Response {
    set_disabled(&state, form, true).await
}

async fn enable_account(State(state): State<AppState>, form: AccountForm) -> Response {
    set_disabled(&state, form, false).await
}

async fn set_disabled(state: &AppState, form: AccountForm, disabled: bool) -> Response {
    let id = form.id;
    match accounts::set_disabled(&state.store, id, disabled).await {
        Ok(_) => {
            tracing::info!(
                account_id = id,
                by_user = form.operator.log_id(),
                disabled,
                "console: account access set"
            );
            done(id)
        }
        Err(Refusal::Store(e)) => store_failed(e),
        Err(_) => Page::failure(StatusCode::NOT_FOUND).into_response(),
    }
}

// ---- routes ----

/// Everything the routes page shows.
async fn routes_data(state: &AppState, live: &Live) -> view::RoutesData {
    let mut depth = vec![("text", 0i64), ("voice", 0i64)];
    let depth_known = match state.store.queue_depth().await {
        Ok(rows) => {
            for (channel, n) in rows {
                if let Some(slot) = depth.iter_mut().find(|(c, _)| *c == channel) {
                    slot.1 = n;
                }
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: reading the queue depth");
            false
        }
    };
    let health: Vec<_> = state.drivers.iter().flat_map(|(_, d)| d.health()).collect();
    let routes = state
        .runtime
        .routes()
        .into_iter()
        .map(|route| {
            let by_route = [("route", route.name.as_str())];
            let m = &state.metrics;
            let submitted =
                m.counter_sum("otpgate_smpp_total", &by_route, &[("event", "submitted")]);
            let all_receipts = m.counter_sum("otpgate_smpp_receipts_total", &by_route, &[]);
            let unmatched = m.counter_sum(
                "otpgate_smpp_receipts_total",
                &by_route,
                &[("state", "unmatched")],
            );
            let repeated = m.counter_sum(
                "otpgate_smpp_receipts_total",
                &by_route,
                &[("state", "repeated")],
            );
            let receipts = all_receipts.saturating_sub(unmatched + repeated);
            let samples = live.sample(&route.name, submitted, receipts);
            let connections = health
                .iter()
                .filter(|h| h.route == route.name)
                .cloned()
                .collect();
            view::RouteRow {
                rates: rates(&samples),
                route,
                connections,
                submitted,
                receipts,
                unmatched,
            }
        })
        .collect();
    view::RoutesData {
        routes,
        depth: depth_known.then_some(depth),
    }
}

async fn routes_page(
    State(state): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
    headers: HeaderMap,
) -> Response {
    let operator = match require(&state, &live, &headers).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let data = routes_data(&state, &live).await;
    view::routes(&operator.shell(), &data).into_response()
}

/// The live part of the routes page alone, for `app.js` to swap in.
async fn routes_live(
    State(state): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
    headers: HeaderMap,
) -> Response {
    let operator = match require(&state, &live, &headers).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let data = routes_data(&state, &live).await;
    axum::response::Html(view::routes_live(&operator.shell(), &data)).into_response()
}

async fn set_route(
    state: AppState,
    live: &Live,
    headers: HeaderMap,
    name: String,
    body: Bytes,
    to: RouteState,
) -> Response {
    let (operator, _) = match require_post(&state, live, &headers, &body).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    match state.runtime.set_route_state(&name, to, &state.new_jobs) {
        Some(view) => {
            tracing::info!(route = %view.name, state = view.state, by_user = operator.log_id(), "console: route state set");
            Redirect::to("/console/ops/routes").into_response()
        }
        None => Page::failure(StatusCode::NOT_FOUND).into_response(),
    }
}

async fn pause_route(
    State(state): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    set_route(state, &live, headers, name, body, RouteState::Paused).await
}

async fn resume_route(
    State(state): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    set_route(state, &live, headers, name, body, RouteState::Active).await
}

// ---- every account's OTPs ----

async fn otp_log(
    State(state): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let operator = match require(&state, &live, &headers).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let get = |name: &str| {
        field(&params, name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let mut search = view::AllSearch {
        number: get("number").unwrap_or("").to_owned(),
        id: get("id").unwrap_or("").to_owned(),
        ..Default::default()
    };
    let mut query = AllOtpsQuery {
        limit: PAGE_SIZE,
        ..Default::default()
    };
    if !search.number.is_empty() {
        match PhoneNumber::parse(&search.number) {
            Ok(n) => query.phone_number = Some(n.display().to_owned()),
            Err(e) => search.number_error = Some(e.to_string()),
        }
    }
    if !search.id.is_empty() {
        match search.id.parse::<i64>() {
            Ok(id) if id > 0 => query.id = Some(id),
            _ => search.id_error = Some("An OTP id is a positive whole number.".to_owned()),
        }
    }
    if let Some(s) = get("status") {
        match OtpStatus::parse(s) {
            Some(s) => query.status = Some(s),
            None => search.status_error = Some("Choose one of the listed statuses.".to_owned()),
        }
    }
    search.status = query.status;
    if let Some(b) = get("before") {
        match b.parse::<i64>() {
            Ok(b) if b > 0 => query.before_id = Some(b),
            _ => {
                search.before_error =
                    Some("This page link is broken: start again from the newest OTPs.".to_owned())
            }
        }
    }
    search.before = query.before_id;
    if search.has_errors() {
        return (
            StatusCode::BAD_REQUEST,
            view::otp_log(&operator.shell(), &search, &[], &state.tz),
        )
            .into_response();
    }
    match state.store.list_all_otps(&query).await {
        Ok(items) => view::otp_log(&operator.shell(), &search, &items, &state.tz).into_response(),
        Err(e) => store_failed(e),
    }
}

async fn otp_page(
    State(state): State<AppState>,
    Extension(live): Extension<Arc<Live>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let operator = match require(&state, &live, &headers).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Ok(id) = id.parse::<i64>() else {
        return Page::failure(StatusCode::NOT_FOUND).into_response();
    };
    let query = AllOtpsQuery {
        id: Some(id),
        limit: 1,
        ..Default::default()
    };
    let otp = match state.store.list_all_otps(&query).await {
        Ok(mut found) => match found.pop() {
            Some(otp) => otp,
            None => return Page::failure(StatusCode::NOT_FOUND).into_response(),
        },
        Err(e) => return store_failed(e),
    };
    match state.store.otp_history(otp.id).await {
        Ok((events, carrier_ids)) => {
            view::otp(&operator.shell(), &otp, &events, &carrier_ids, &state.tz).into_response()
        }
        Err(e) => store_failed(e),
    }
}
