//! The console's webhook page: the account's webhook URL and signing secret,
//! set the URL, rotate the secret, send a test event, and the recent
//! deliveries with each attempt's status and error. The same store calls as
//! the webhook API (`api/webhooks.rs`) and the same URL rule
//! ([`crate::webhooks::check_url`]).
//!
//! - `GET /console/webhook`: the page.
//! - `POST /console/webhook`: sets the URL (a secret is made the first time).
//! - `POST /console/webhook/rotate`: a new secret, the URL kept.
//! - `POST /console/webhook/test`: posts a signed `test` event to the URL now,
//!   with the sender the delivery worker uses, and shows what the receiver
//!   answered; a test is not stored and not retried.
//!
//! Every POST carries the session's CSRF token (403 and nothing changed
//! without it); a bad URL is shown next to its field with 400, nothing changed.

use std::fmt::Write;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use otp_domain::{Channel, phone::E164};
use otp_store::now_micros;
use otp_store::webhooks::{
    ClaimedDelivery, DeliveryQuery, EventOtp, SetWebhook, Webhook, WebhookEvent,
};

use super::pages::{self, esc, field_error};
use super::{Console, csrf_matches, csrf_refused, field, form, require, store_failed};
use crate::state::AppState;
use crate::times::rfc3339;
use crate::webhooks::{EVENT_ID_PREFIX, WebhookPolicy, WebhookSender, check_url};

/// Deliveries the page lists.
const RECENT: u32 = 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/webhook", get(show).post(set_url))
        .route("/console/webhook/rotate", post(rotate))
        .route("/console/webhook/test", post(test_event))
}

/// What the page shows besides the stored state.
#[derive(Default)]
struct Shown {
    url: Option<String>,
    url_error: Option<String>,
    notice: Option<String>,
}

async fn show(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let console = match require(&state, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    render(&state, &console, StatusCode::OK, Shown::default()).await
}

/// The session and the POST's form, or the response that refuses it.
async fn posted(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Console, Vec<(String, String)>), Response> {
    let console = require(state, headers).await?;
    let fields = form(body).unwrap_or_default();
    if !csrf_matches(&console.csrf, field(&fields, "csrf")) {
        return Err(csrf_refused());
    }
    Ok((console, fields))
}

async fn set_url(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (console, fields) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let url = field(&fields, "url").unwrap_or("").trim().to_owned();
    let refused = if url.is_empty() {
        Some("Enter the URL events are posted to.".to_owned())
    } else {
        check_url(&url, state.config.webhooks.allow_private_addresses)
            .err()
            .map(|(_, why)| why)
    };
    if let Some(why) = refused {
        let shown = Shown {
            url: Some(url),
            url_error: Some(why),
            notice: None,
        };
        return render(&state, &console, StatusCode::BAD_REQUEST, shown).await;
    }
    store_set(&state, &console, url, false).await
}

async fn rotate(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (console, _) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match state.store.webhook(console.user.account_id).await {
        Ok(Some(w)) => store_set(&state, &console, w.url, true).await,
        Ok(None) => no_webhook(&state, &console).await,
        Err(e) => store_failed(e),
    }
}

async fn no_webhook(state: &AppState, console: &Console) -> Response {
    let shown = Shown {
        url_error: Some("Set a URL first.".to_owned()),
        ..Shown::default()
    };
    render(state, console, StatusCode::BAD_REQUEST, shown).await
}

async fn store_set(state: &AppState, console: &Console, url: String, rotate: bool) -> Response {
    let set = SetWebhook {
        account_id: console.user.account_id,
        url,
        new_secret: otp_domain::webhook::generate_secret(),
        rotate,
        low_balance_sms_credits: None,
        low_balance_phone_credits: None,
        now: now_micros(),
    };
    match state.store.set_webhook(set).await {
        Ok(_) => {
            tracing::info!(
                account_id = console.user.account_id,
                user_id = console.user.id,
                rotated = rotate,
                "webhook set in the console"
            );
            Redirect::to("/console/webhook").into_response()
        }
        Err(e) => store_failed(e),
    }
}

async fn test_event(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (console, _) = match posted(&state, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let hook = match state.store.webhook(console.user.account_id).await {
        Ok(Some(w)) => w,
        Ok(None) => return no_webhook(&state, &console).await,
        Err(e) => return store_failed(e),
    };
    let sender =
        match WebhookSender::new(WebhookPolicy::from_config(&state.config.webhooks), state.tz) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "console: building the webhook sender");
                return pages::Page::failure(StatusCode::INTERNAL_SERVER_ERROR).into_response();
            }
        };
    let result = sender.attempt(&test_delivery(&hook)).await;
    let notice = match (&result.error, result.status_code) {
        (None, Some(code)) => format!("Test event sent: the receiver answered {code}."),
        (None, None) => "Test event sent.".to_owned(),
        (Some(e), _) => format!("The test event was not delivered: {e}."),
    };
    let shown = Shown {
        notice: Some(notice),
        ..Shown::default()
    };
    render(&state, &console, StatusCode::OK, shown).await
}

/// The number a test event names.
const TEST_EVENT_NUMBER: &str = "+9990000000";

/// A `test` event about no OTP (`otp_id` 0), as a delivery to attempt once.
fn test_delivery(hook: &Webhook) -> ClaimedDelivery {
    let now = now_micros();
    ClaimedDelivery {
        id: 0,
        account_id: hook.account_id,
        event: WebhookEvent::Test,
        otp_status: "test".into(),
        occurred_at: now,
        attempt: 1,
        created_at: now,
        url: hook.url.clone(),
        secret: hook.secret.clone(),
        otp: EventOtp {
            id: 0,
            account_seq: 0,
            // About no phone: a number in country code 999, which no
            // country has (ITU reserves it).
            number: E164::parse(TEST_EVENT_NUMBER).expect("an E.164 shape"),
            channel: Channel::Text,
            created_at: now,
            expires_at: now,
            error_code: None,
        },
        balance: None,
    }
}

async fn render(state: &AppState, console: &Console, status: StatusCode, shown: Shown) -> Response {
    let account = console.user.account_id;
    let hook = match state.store.webhook(account).await {
        Ok(h) => h,
        Err(e) => return store_failed(e),
    };
    let deliveries = match state
        .store
        .webhook_deliveries(DeliveryQuery {
            account_id: account,
            limit: RECENT,
            before_id: None,
        })
        .await
    {
        Ok(d) => d,
        Err(e) => return store_failed(e),
    };
    let shell = console.shell();
    let tz = &state.tz;
    let mut main = String::new();
    if let Some(n) = &shown.notice {
        let _ = write!(main, "<p class=\"notice\" role=\"status\">{}</p>", esc(n));
    }
    let url = shown
        .url
        .clone()
        .or_else(|| hook.as_ref().map(|h| h.url.clone()))
        .unwrap_or_default();
    let (url_attr, url_error) = field_error("url", &shown.url_error);
    let _ = write!(
        main,
        "<form method=\"post\" action=\"/console/webhook\" class=\"card\" novalidate>\
         <h2>Where events go</h2><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"url\">Webhook URL</label>\
         <input id=\"url\" name=\"url\" type=\"url\" inputmode=\"url\" value=\"{url}\"{url_attr}>{url_error}\
         <button type=\"submit\">Save URL</button></form>",
        csrf = esc(shell.csrf),
        url = esc(&url),
    );
    match &hook {
        None => main.push_str(
            "<p class=\"card\">No webhook is set: save a URL and a signing secret is made for it.</p>",
        ),
        Some(h) => {
            let secret = h.secret.as_deref().map_or_else(
                || "cannot be read (its key is not configured): rotate it".to_owned(),
                str::to_owned,
            );
            let _ = write!(
                main,
                "<section class=\"card\" aria-labelledby=\"secret-h\"><h2 id=\"secret-h\">Signing secret</h2>\
                 <label for=\"secret\">Secret</label><input id=\"secret\" class=\"key\" readonly value=\"{secret}\">\
                 <p class=\"muted\">Updated {updated}.</p>\
                 <form method=\"post\" action=\"/console/webhook/rotate\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\" class=\"danger\">Rotate secret</button></form>\
                 <form method=\"post\" action=\"/console/webhook/test\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\">Send a test event</button></form></section>",
                secret = esc(&secret),
                updated = esc(&rfc3339(h.updated_at, tz)),
                csrf = esc(shell.csrf),
            );
        }
    }
    main.push_str(
        "<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Recent deliveries\"><table><caption>Recent deliveries, newest first</caption><thead><tr>\
         <th scope=\"col\">Event</th><th scope=\"col\">OTP</th><th scope=\"col\">State</th>\
         <th scope=\"col\">Attempts</th></tr></thead><tbody>",
    );
    if deliveries.is_empty() {
        main.push_str("<tr><td colspan=\"4\">No events yet.</td></tr>");
    }
    for d in &deliveries {
        let mut attempts = String::from("<ol class=\"attempts\">");
        for a in &d.attempts {
            let outcome = match (&a.error, a.status_code) {
                (None, Some(code)) => format!("answered {code}"),
                (None, None) => "delivered".to_owned(),
                (Some(e), Some(code)) => format!("{code}: {}", esc(e)),
                (Some(e), None) => esc(e),
            };
            let _ = write!(
                attempts,
                "<li><time>{at}</time> · {outcome}</li>",
                at = esc(&rfc3339(a.at, tz)),
            );
        }
        if d.attempts.is_empty() {
            attempts.push_str("<li>none yet</li>");
        }
        attempts.push_str("</ol>");
        let _ = write!(
            main,
            "<tr><td><code>{prefix}{id}</code> {event}</td><td><a href=\"/console/otps/{otp}\">{otp}</a></td>\
             <td>{state}</td><td>{attempts}</td></tr>",
            prefix = EVENT_ID_PREFIX,
            id = d.id,
            event = d.event.as_str(),
            otp = d.otp_id,
            state = d.state.as_str(),
        );
    }
    main.push_str("</tbody></table></div>");
    (status, pages::page(&shell, "Webhook", "Webhook", &main)).into_response()
}
