//! The console: web pages for an account's users, served under `/console/`
//! by the same binary (issue 17). The operator pages, under `/console/ops/`,
//! are in [`operator`]; [`operator_router`] serves them.
//!
//! - `GET/POST /console/login`: email and password, checked by the API's login
//!   ([`crate::api::users::authenticate`]): the same attempt limits, the same
//!   password-check places, the same session rows.
//! - `GET /console/`: the overview (credits, spent today against the daily cap).
//! - `GET /console/otps`: the OTP log, newest first, searched by number, status
//!   and channel, paged by the last `account_seq` seen (`before=`), so a deep
//!   page costs what the first one does.
//! - `GET /console/otps/{id}`: one OTP and its status timeline (`otp_history`).
//! - `GET/POST /console/keys`, `POST /console/keys/{key_id}/revoke`: the
//!   account's API keys; a new key is shown once.
//! - `GET /console/webhook` and its POSTs ([`webhook`]): the account's webhook.
//! - `GET /console/voice` ([`voice`]): listen to a voice prompt.
//! - `POST /console/logout`: ends the session in the store.
//!
//! The overview's conversion charts ([`charts`]) read the store's per-minute
//! aggregates, never OTP rows.
//!
//! Sessions: a login's access token in the cookie `otpgate_console`
//! (`Path=/console/`, `HttpOnly`, `SameSite=Strict`, `Secure` in production
//! mode), read by these routes only. Every POST carries a CSRF token: for a
//! session, a hash of its cookie; before login, a hash of the random
//! `otpgate_console_login` cookie. A POST whose token does not match gets 403
//! and changes nothing. Every response has a Content-Security-Policy allowing
//! only this origin's `/console/app.css`, `/console/app.js` and media (no inline
//! script or style), `no-store` caching and no referrer.
//!
//! An account's user sees its own account only: every store read is scoped by
//! the session user's account, and another account's OTP or key is a 404.
//! Codes are never shown (nor the message, which holds the code).

mod charts;
mod operator;
mod operator_pages;
mod pages;
mod voice;
mod webhook;

use std::net::IpAddr;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::map_response;
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use otp_domain::channel::Channel;
use otp_domain::phone::PhoneNumber;
use otp_store::{ListQuery, OtpStatus, Session, User, now_micros};

use crate::api::users::{authenticate, token_session};
use crate::auth::issue_key_with_scopes;
use crate::config::Mode;
use crate::peer::ClientIp;
use crate::state::AppState;
use crate::users::tokens::TokenKind;
use crate::users::{Email, MAX_EMAIL_LEN, MAX_PASSWORD_BYTES};
use pages::Page;

/// The session cookie.
const SESSION_COOKIE: &str = "otpgate_console";
/// The pre-login cookie the login form's CSRF token is drawn from.
const LOGIN_COOKIE: &str = "otpgate_console_login";
/// OTPs on one page of the log.
const PAGE_SIZE: u32 = 50;
/// The longest key label (as the key API allows).
const MAX_LABEL_CHARS: usize = crate::api::MAX_NAME_CHARS;

// `connect-src 'self'`: the routes page's live part is fetched by app.js.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; media-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(overview))
        .route("/console/app.css", get(css))
        .route("/console/app.js", get(js))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/otps", get(otp_log))
        .route("/console/otps/{id}", get(otp_page))
        .route("/console/keys", get(keys).post(create_key))
        .route("/console/keys/{key_id}/revoke", post(revoke_key))
        .merge(webhook::router())
        .merge(voice::router())
        .layer(map_response(security_headers))
}

/// The operator pages (`/console/ops/...`): on the admin listener when there
/// is one, else beside [`router`].
pub fn operator_router() -> Router<AppState> {
    operator::router()
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("app.css"))
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("app.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A logged-in console user.
pub(crate) struct Console {
    user: User,
    session: Session,
    /// The token every form of this session carries.
    csrf: String,
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The CSRF token derived from a cookie's secret value: a page can only hold
/// it when it was served to the browser holding the cookie.
fn csrf_of(purpose: &str, secret: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"otpgate console csrf\0");
    hash.update(purpose.as_bytes());
    hash.update(b"\0");
    hash.update(secret.as_bytes());
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

fn csrf_matches(expected: &str, given: Option<&str>) -> bool {
    given.is_some_and(|g| bool::from(expected.as_bytes().ct_eq(g.as_bytes())))
}

/// The session of the request's cookie, when it is a valid access token of
/// an active session.
async fn console_session(state: &AppState, headers: &HeaderMap) -> Result<Option<Console>, Page> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let now = now_micros() / 1_000_000;
    let Some(claims) = state.users.tokens.check(token, TokenKind::Access, now) else {
        return Ok(None);
    };
    match token_session(state, &claims).await {
        Ok((session, user)) => Ok(Some(Console {
            csrf: csrf_of("session", token),
            user,
            session,
        })),
        // A disabled account's user is sent to the login page, which says why.
        Err(e) if matches!(e.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
            Ok(None)
        }
        Err(e) => Err(Page::failure(e.status())),
    }
}

/// The session, or the response that sends the browser to the login page.
async fn require(state: &AppState, headers: &HeaderMap) -> Result<Console, Response> {
    match console_session(state, headers).await {
        Ok(Some(console)) => Ok(console),
        Ok(None) => Err(Redirect::to("/console/login").into_response()),
        Err(page) => Err(page.into_response()),
    }
}

fn secure(state: &AppState) -> &'static str {
    if state.config.mode == Mode::Production {
        "; Secure"
    } else {
        ""
    }
}

fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    max_age: i64,
) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        format!(
            "{name}={value}; Path=/console/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
            secure(state)
        ),
    )
}

/// A form body as name/value pairs; `None` when it is not a form.
fn form(body: &Bytes) -> Option<Vec<(String, String)>> {
    serde_urlencoded::from_bytes(body).ok()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// 403 for a POST without this session's (or this login form's) token.
fn csrf_refused() -> Response {
    Page::failure(StatusCode::FORBIDDEN).into_response()
}

// ---- login and logout ----

async fn login_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = console_session(&state, &headers).await {
        return Redirect::to("/console/").into_response();
    }
    login_page(
        &state,
        &headers,
        StatusCode::OK,
        &pages::LoginForm::default(),
    )
}

/// The login page, with a fresh pre-login cookie when the browser has none.
fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    form: &pages::LoginForm,
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
    let page = pages::login(form, &csrf_of("login", &secret));
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
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form(&body).unwrap_or_default();
    let expected = cookie(&headers, LOGIN_COOKIE).map(|s| csrf_of("login", s));
    if !expected.is_some_and(|e| csrf_matches(&e, field(&fields, "csrf"))) {
        return csrf_refused();
    }
    let email = field(&fields, "email").unwrap_or("").trim().to_owned();
    let password = field(&fields, "password").unwrap_or("");
    let mut form = pages::LoginForm {
        email: email.clone(),
        ..Default::default()
    };
    if email.is_empty() {
        form.email_error = Some("Enter your email.".into());
    } else if email.len() > MAX_EMAIL_LEN {
        form.email_error = Some(format!("An email has at most {MAX_EMAIL_LEN} characters."));
    }
    if password.is_empty() {
        form.password_error = Some("Enter your password.".into());
    } else if password.len() > MAX_PASSWORD_BYTES {
        form.password_error = Some(format!(
            "A password has at most {MAX_PASSWORD_BYTES} bytes."
        ));
    }
    if form.email_error.is_some() || form.password_error.is_some() {
        return login_page(&state, &headers, StatusCode::BAD_REQUEST, &form);
    }
    let client: Option<IpAddr> = client.map(|Extension(ClientIp(ip))| ip);
    let (user, session) =
        match authenticate(&state, client, &Email::normalise(&email), password).await {
            Ok(found) => found,
            Err(e) => {
                form.error = Some(match e.status() {
                    StatusCode::UNAUTHORIZED => "Wrong email or password.".to_owned(),
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::FORBIDDEN => e.message().to_owned(),
                    _ => "Logins cannot be checked right now; try again in a minute.".to_owned(),
                });
                return login_page(&state, &headers, e.status(), &form);
            }
        };
    let now = now_micros() / 1_000_000;
    let access = state
        .users
        .tokens
        .issue(TokenKind::Access, &user, session.id, now);
    tracing::info!(
        user_id = user.id,
        account_id = user.account_id,
        session_id = session.id,
        "console login"
    );
    (
        AppendHeaders([
            set_cookie(
                &state,
                SESSION_COOKIE,
                &access.token,
                access.expires_at - now,
            ),
            set_cookie(&state, LOGIN_COOKIE, "", 0),
        ]),
        Redirect::to("/console/"),
    )
        .into_response()
}

async fn logout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let console = match require(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let fields = form(&body).unwrap_or_default();
    if !csrf_matches(&console.csrf, field(&fields, "csrf")) {
        return csrf_refused();
    }
    if let Err(e) = state
        .store
        .revoke_sessions(console.user.id, Some(console.session.id), now_micros())
        .await
    {
        tracing::error!(error = %e, "console logout: revoking the session");
        return Page::failure(StatusCode::SERVICE_UNAVAILABLE).into_response();
    }
    tracing::info!(
        user_id = console.user.id,
        session_id = console.session.id,
        "console logout"
    );
    (
        [set_cookie(&state, SESSION_COOKIE, "", 0)],
        Redirect::to("/console/login"),
    )
        .into_response()
}

// ---- pages ----

/// A store failure as a page: logged here, never shown.
fn store_failed(e: otp_store::StoreError) -> Response {
    let e = crate::api::ApiError::from(e);
    Page::failure(e.status()).into_response()
}

async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let console = match require(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id = console.user.account_id;
    let account = match state.store.account(id).await {
        Ok(Some(a)) => a,
        Ok(None) => return Page::failure(StatusCode::NOT_FOUND).into_response(),
        Err(e) => return store_failed(e),
    };
    let limits = match state.store.account_limits(id).await {
        Ok(l) => l,
        Err(e) => return store_failed(e),
    };
    let (today, _) = crate::api::local_day(state.tz, now_micros());
    let spent_today = limits
        .as_ref()
        .filter(|l| l.spend_day == today)
        .map_or(0, |l| l.spent);
    let cap = limits.and_then(|l| l.daily_spend_cap);
    let now = now_micros();
    let end_minute = otp_store::conversions::minute_of(now) + 1;
    let end = end_minute * otp_store::conversions::BUCKET_MICROS;
    let minutes = state
        .store
        .sends_per_minute(
            id,
            end - charts::CHART_MINUTES * otp_store::conversions::BUCKET_MICROS,
            end,
        )
        .await;
    let by_channel = state
        .store
        .conversion_stats(otp_store::conversions::StatsQuery {
            account_id: id,
            from: now - 24 * 3_600_000_000,
            to: now,
            group_by: otp_store::conversions::Dimension::Channel,
        })
        .await;
    let conversions = match (minutes, by_channel) {
        (Ok(minutes), Ok(by_channel)) => charts::section(&charts::Conversions {
            minutes,
            end_minute,
            by_channel,
        }),
        (Err(e), _) | (_, Err(e)) => return store_failed(e),
    };
    pages::overview(&console.shell(), &account, spent_today, cap, &conversions).into_response()
}

/// The log's search, as parsed from the query string.
#[derive(Default)]
pub(crate) struct Search {
    number: String,
    status: Option<OtpStatus>,
    channel: Option<Channel>,
    before: Option<i64>,
    number_error: Option<String>,
    status_error: Option<String>,
    channel_error: Option<String>,
    /// A `before` that is not a positive whole number (only a hand-typed URL has one).
    before_error: Option<String>,
}

async fn otp_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let console = match require(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let get = |name: &str| {
        field(&params, name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let status = get("status").map(|v| OtpStatus::parse(v).ok_or(v));
    let channel = get("channel").map(|v| Channel::parse(v).ok_or(v));
    let before = get("before").map(|v| v.parse::<i64>().ok().filter(|b| *b > 0).ok_or(v));
    let mut search = Search {
        number: get("number").unwrap_or("").to_owned(),
        status: status.and_then(Result::ok),
        channel: channel.and_then(Result::ok),
        before: before.and_then(Result::ok),
        number_error: None,
        status_error: status
            .and_then(Result::err)
            .map(|_| "Choose one of the listed statuses.".to_owned()),
        channel_error: channel
            .and_then(Result::err)
            .map(|_| "Choose text or voice.".to_owned()),
        before_error: before
            .and_then(Result::err)
            .map(|_| "This page link is broken: start again from the newest OTPs.".to_owned()),
    };
    let mut query = ListQuery {
        account_id: console.user.account_id,
        channel: search.channel,
        status: search.status,
        limit: PAGE_SIZE,
        before_seq: search.before,
        // The console shows no total: a filtered count would cost O(matching rows).
        known_count: Some(0),
        ..ListQuery::default()
    };
    if !search.number.is_empty() {
        match PhoneNumber::parse(&search.number) {
            Ok(n) => query.phone_number = Some(n.display().to_owned()),
            Err(e) => search.number_error = Some(e.to_string()),
        }
    }
    if search.number_error.is_some()
        || search.status_error.is_some()
        || search.channel_error.is_some()
        || search.before_error.is_some()
    {
        return (
            StatusCode::BAD_REQUEST,
            pages::otp_log(&console.shell(), &search, &[], &state.tz),
        )
            .into_response();
    }
    // The API's list slots: the console's searches share the account's bound
    // (`api.max_concurrent_lists`), and the query keeps its slot while it runs
    // even if the browser goes away.
    let Some(slot) = state.list_slots.acquire(console.user.account_id).await else {
        return Page::failure(StatusCode::TOO_MANY_REQUESTS).into_response();
    };
    let store = state.store.clone();
    let listed = tokio::spawn(async move {
        let _slot = slot;
        store.list_otps(&query).await
    })
    .await;
    match listed {
        Ok(Ok(page)) => {
            pages::otp_log(&console.shell(), &search, &page.items, &state.tz).into_response()
        }
        Ok(Err(e)) => store_failed(e),
        Err(e) => {
            tracing::error!(error = %e, "console: the list task failed");
            Page::failure(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }
    }
}

async fn otp_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let console = match require(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(id) = id.parse::<i64>() else {
        return Page::failure(StatusCode::NOT_FOUND).into_response();
    };
    let otp = match state.store.otp(console.user.account_id, id).await {
        Ok(Some(otp)) => otp,
        Ok(None) => return Page::failure(StatusCode::NOT_FOUND).into_response(),
        Err(e) => return store_failed(e),
    };
    match state.store.otp_history(otp.id).await {
        Ok((events, carrier_ids)) => {
            pages::otp(&console.shell(), &otp, &events, &carrier_ids, &state.tz).into_response()
        }
        Err(e) => store_failed(e),
    }
}

async fn keys(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let console = match require(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    keys_page(&state, &console, StatusCode::OK, &pages::KeyForm::default()).await
}

async fn keys_page(
    state: &AppState,
    console: &Console,
    status: StatusCode,
    form: &pages::KeyForm,
) -> Response {
    match state.store.list_keys(Some(console.user.account_id)).await {
        Ok(mut keys) => {
            keys.sort_by_key(|k| (k.revoked_at.is_some(), std::cmp::Reverse(k.created_at)));
            (
                status,
                pages::keys(&console.shell(), &keys, form, &state.tz),
            )
                .into_response()
        }
        Err(e) => store_failed(e),
    }
}

async fn create_key(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let console = match require(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let fields = form(&body).unwrap_or_default();
    if !csrf_matches(&console.csrf, field(&fields, "csrf")) {
        return csrf_refused();
    }
    let label = field(&fields, "label").unwrap_or("").trim().to_owned();
    if label.chars().count() > MAX_LABEL_CHARS {
        let form = pages::KeyForm {
            label,
            label_error: Some(format!("A label has at most {MAX_LABEL_CHARS} characters.")),
            created: None,
        };
        return keys_page(&state, &console, StatusCode::BAD_REQUEST, &form).await;
    }
    let issued = issue_key_with_scopes(
        console.user.account_id,
        (!label.is_empty()).then_some(label),
        otp_store::Scopes::DEFAULT,
    );
    let key = match state.store.create_key(issued.record).await {
        Ok(k) => k,
        Err(e) => return store_failed(e),
    };
    tracing::info!(
        account_id = key.account_id,
        key_id = %key.key_id,
        user_id = console.user.id,
        "API key created in the console"
    );
    let form = pages::KeyForm {
        created: Some(issued.plaintext),
        ..Default::default()
    };
    keys_page(&state, &console, StatusCode::CREATED, &form).await
}

async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key_id): Path<String>,
    body: Bytes,
) -> Response {
    let console = match require(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let fields = form(&body).unwrap_or_default();
    if !csrf_matches(&console.csrf, field(&fields, "csrf")) {
        return csrf_refused();
    }
    let ours = match state.store.find_key(&key_id).await {
        Ok(k) => {
            k.is_some_and(|k| k.account_id == console.user.account_id && k.revoked_at.is_none())
        }
        Err(e) => return store_failed(e),
    };
    match ours {
        true => match state.store.revoke_key(&key_id).await {
            Ok(true) => {}
            Ok(false) => return Page::failure(StatusCode::NOT_FOUND).into_response(),
            Err(e) => return store_failed(e),
        },
        false => return Page::failure(StatusCode::NOT_FOUND).into_response(),
    }
    tracing::info!(
        account_id = console.user.account_id,
        key_id = %key_id,
        user_id = console.user.id,
        "API key revoked in the console"
    );
    Redirect::to("/console/keys").into_response()
}

impl Console {
    fn shell(&self) -> pages::Shell<'_> {
        pages::Shell {
            email: &self.user.email,
            csrf: &self.csrf,
        }
    }
}
