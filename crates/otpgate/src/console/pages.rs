//! The console's HTML, written by hand: every value from the store or the
//! request goes through [`esc`]; no inline script or style (the CSP forbids
//! them), only classes that `app.css` styles. Charts are SVG drawn here.

use std::fmt::Write;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use otp_store::{Account, ApiKeyRecord, OtpEvent, OtpRecord, OtpStatus};

use super::Search;
use crate::times::rfc3339;

/// Text made safe for HTML content and quoted attributes.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What every page of a logged-in user shows around its content.
pub(super) struct Shell<'a> {
    pub email: &'a str,
    pub csrf: &'a str,
}

/// A whole HTML document.
pub(super) fn document(title: &str, nav: &str, main: &str) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · otpgate</title>\
         <link rel=\"stylesheet\" href=\"/console/app.css\">\
         <script src=\"/console/app.js\" defer></script></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a>{nav}\
         <main id=\"main\" tabindex=\"-1\">{main}</main></body></html>",
        title = esc(title),
    ))
}

/// The page of a logged-in user: the navigation (with `current` marked) and a
/// logout button.
pub(super) fn page(shell: &Shell, current: &str, title: &str, main: &str) -> Html<String> {
    let links = [
        ("/console/", "Overview"),
        ("/console/otps", "OTP log"),
        ("/console/keys", "API keys"),
        ("/console/webhook", "Webhook"),
        ("/console/voice", "Voice"),
    ];
    let top = Top {
        label: "Console",
        links: &links,
        logout: "/console/logout",
        csrf: shell.csrf,
        who: shell.email,
    };
    document(
        title,
        &top.render(current),
        &format!("<h1>{}</h1>{main}", esc(title)),
    )
}

/// A page's header: its navigation and the logout form.
pub(super) struct Top<'a> {
    /// The navigation's accessible name.
    pub label: &'a str,
    /// Each link's path and name.
    pub links: &'a [(&'a str, &'a str)],
    /// Where the logout form posts.
    pub logout: &'a str,
    pub csrf: &'a str,
    /// Who is logged in, as shown beside the button.
    pub who: &'a str,
}

impl Top<'_> {
    /// The header, the link named `current` marked as the page shown.
    pub(super) fn render(&self, current: &str) -> String {
        let mut nav = format!(
            "<header class=\"top\"><nav aria-label=\"{}\"><ul>",
            esc(self.label)
        );
        for (href, name) in self.links {
            let current = if *name == current {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(nav, "<li><a href=\"{href}\"{current}>{name}</a></li>");
        }
        let _ = write!(
            nav,
            "</ul></nav><form method=\"post\" action=\"{logout}\" class=\"logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <span class=\"who\">{who}</span> <button type=\"submit\">Log out</button></form></header>",
            logout = self.logout,
            csrf = esc(self.csrf),
            who = esc(self.who),
        );
        nav
    }
}

/// A page that says what went wrong, by status.
pub(super) struct Page(StatusCode);

impl Page {
    pub fn failure(status: StatusCode) -> Page {
        Page(status)
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let (title, text) = match self.0 {
            StatusCode::NOT_FOUND => (
                "Not found",
                "There is nothing here for your account. Check the address, or go back to the OTP log.",
            ),
            StatusCode::TOO_MANY_REQUESTS => (
                "Busy",
                "Too many searches of this account are running at once; try again in a second.",
            ),
            StatusCode::FORBIDDEN => (
                "Form expired",
                "This form was not sent from this session's page, so nothing was changed. Reload the page and try again.",
            ),
            _ => (
                "Temporarily unavailable",
                "The gateway could not answer this page right now; nothing was changed. Try again in a minute.",
            ),
        };
        let main = format!(
            "<h1>{title}</h1><p>{text}</p><p><a href=\"/console/\">Back to the console</a></p>"
        );
        (self.0, document(title, "", &main)).into_response()
    }
}

/// What the login form shows again after a refusal (never the password).
#[derive(Default)]
pub(super) struct LoginForm {
    pub email: String,
    pub email_error: Option<String>,
    pub password_error: Option<String>,
    pub error: Option<String>,
}

/// An input's error, tied to it by `aria-describedby`.
pub(super) fn field_error(id: &str, error: &Option<String>) -> (String, String) {
    match error {
        Some(e) => (
            format!(" aria-invalid=\"true\" aria-describedby=\"{id}-error\""),
            format!("<p class=\"field-error\" id=\"{id}-error\">{}</p>", esc(e)),
        ),
        None => (String::new(), String::new()),
    }
}

pub(super) fn login(form: &LoginForm, csrf: &str) -> Html<String> {
    let (email_attr, email_error) = field_error("email", &form.email_error);
    let (password_attr, password_error) = field_error("password", &form.password_error);
    let alert = form
        .error
        .as_ref()
        .map(|e| format!("<p class=\"alert\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let main = format!(
        "<h1>Log in to otpgate</h1>{alert}\
         <form method=\"post\" action=\"/console/login\" class=\"card narrow\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"email\">Email</label>\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required \
         maxlength=\"254\" value=\"{email}\"{email_attr}>{email_error}\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" \
         required{password_attr}>{password_error}\
         <button type=\"submit\">Log in</button></form>",
        csrf = esc(csrf),
        email = esc(&form.email),
    );
    document("Log in", "", &main)
}

/// A horizontal bar chart: each row a label, a value and a bar scaled to `max`.
pub(super) fn bar_chart(title: &str, rows: &[(&str, i64)], max: i64) -> String {
    let max = max.max(1);
    let height = 28 * rows.len() as i64 + 8;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 320 {height}\" role=\"img\" aria-labelledby=\"chart-{id}\">\
         <title id=\"chart-{id}\">{title}</title>",
        id = esc(&title.replace(' ', "-").to_lowercase()),
        title = esc(title),
    );
    for (i, (label, value)) in rows.iter().enumerate() {
        let y = 8 + 28 * i as i64;
        let width = (150 * (*value).clamp(0, max) / max).max(1);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{ty}\" class=\"chart-label\">{label}</text>\
             <rect x=\"110\" y=\"{y}\" width=\"{width}\" height=\"18\" class=\"bar bar-{i}\"></rect>\
             <text x=\"{tx}\" y=\"{ty}\" class=\"chart-value\">{value}</text>",
            ty = y + 14,
            tx = 110 + width + 4,
            label = esc(label),
        );
    }
    svg.push_str("</svg>");
    svg
}

pub(super) fn overview(
    shell: &Shell,
    account: &Account,
    spent_today: i64,
    cap: Option<i64>,
    conversions: &str,
) -> Html<String> {
    let credits = bar_chart(
        "Credits left",
        &[
            ("SMS", account.sms_credits),
            ("Phone", account.phone_credits),
        ],
        account.sms_credits.max(account.phone_credits),
    );
    let spend = match cap {
        Some(cap) => format!(
            "<p>{spent_today} of {cap} credits spent today.</p>{}",
            bar_chart(
                "Spent today against the daily cap",
                &[("Spent", spent_today), ("Daily cap", cap)],
                cap.max(spent_today)
            )
        ),
        None => format!(
            "<p>{spent_today} credits spent today. This account has no daily spend cap.</p>"
        ),
    };
    let main = format!(
        "<p class=\"muted\">Account {name}</p>\
         <section class=\"card\" aria-labelledby=\"credits-h\"><h2 id=\"credits-h\">Credits</h2>\
         <dl class=\"figures\"><div><dt>SMS credits</dt><dd>{sms}</dd></div>\
         <div><dt>Phone credits</dt><dd>{phone}</dd></div>\
         <div><dt>OTPs accepted, all time</dt><dd>{count}</dd></div></dl>{credits}</section>\
         <section class=\"card\" aria-labelledby=\"spend-h\"><h2 id=\"spend-h\">Spent today</h2>{spend}</section>\
         {conversions}",
        name = esc(&account.name),
        sms = account.sms_credits,
        phone = account.phone_credits,
        count = account.otp_count,
    );
    page(shell, "Overview", "Overview", &main)
}

pub(super) fn chip(status: &str) -> String {
    format!(
        "<span class=\"chip chip-{cls}\">{status}</span>",
        cls = esc(status),
        status = esc(status)
    )
}

pub(super) fn option(value: &str, selected: bool) -> String {
    let selected = if selected { " selected" } else { "" };
    format!("<option value=\"{value}\"{selected}>{value}</option>")
}

pub(super) fn otp_log(
    shell: &Shell,
    search: &Search,
    items: &[OtpRecord],
    tz: &chrono_tz::Tz,
) -> Html<String> {
    let (number_attr, number_error) = field_error("number", &search.number_error);
    let (status_attr, status_error) = field_error("status", &search.status_error);
    let (channel_attr, channel_error) = field_error("channel", &search.channel_error);
    let mut statuses = String::from("<option value=\"\">any</option>");
    for s in OtpStatus::ALL {
        statuses.push_str(&option(s.as_str(), search.status == Some(s)));
    }
    let mut channels = String::from("<option value=\"\">any</option>");
    for c in [
        otp_domain::channel::Channel::Text,
        otp_domain::channel::Channel::Voice,
    ] {
        channels.push_str(&option(c.as_str(), search.channel == Some(c)));
    }
    let mut main = format!(
        "<form method=\"get\" action=\"/console/otps\" class=\"card search\" role=\"search\">\
         <div><label for=\"number\">Number</label>\
         <input id=\"number\" name=\"number\" type=\"tel\" value=\"{number}\"{number_attr}>{number_error}</div>\
         <div><label for=\"status\">Status</label><select id=\"status\" name=\"status\"{status_attr}>{statuses}</select>{status_error}</div>\
         <div><label for=\"channel\">Channel</label><select id=\"channel\" name=\"channel\"{channel_attr}>{channels}</select>{channel_error}</div>\
         <div><button type=\"submit\">Search</button></div></form>",
        number = esc(&search.number),
    );
    if let Some(e) = &search.before_error {
        let _ = write!(main, "<p class=\"alert\" role=\"alert\">{}</p>", esc(e));
    }
    if items.is_empty() {
        main.push_str("<p>No OTPs match.</p>");
    } else {
        main.push_str(
            "<div class=\"table-wrap\"><table><caption>OTPs, newest first</caption><thead><tr>\
             <th scope=\"col\">#</th><th scope=\"col\">Number</th><th scope=\"col\">Channel</th>\
             <th scope=\"col\">Status</th><th scope=\"col\">Accepted</th></tr></thead><tbody>",
        );
        for otp in items {
            let _ = write!(
                main,
                "<tr><td><a href=\"/console/otps/{id}\">OTP {seq}</a></td><td>{number}</td>\
                 <td>{channel}</td><td>{chip}</td><td>{at}</td></tr>",
                id = otp.id,
                seq = otp.account_seq,
                number = esc(otp.number.display()),
                channel = otp.channel.as_str(),
                chip = chip(otp.status.as_str()),
                at = esc(&rfc3339(otp.created_at, tz)),
            );
        }
        main.push_str("</tbody></table></div>");
    }
    if items.len() as u32 == super::PAGE_SIZE {
        let last = items.last().map_or(0, |o| o.account_seq);
        let mut href = String::from("/console/otps?");
        let mut query = form_urlencoded(&[
            ("number", search.number.as_str()),
            ("status", search.status.map_or("", |s| s.as_str())),
            ("channel", search.channel.map_or("", |c| c.as_str())),
        ]);
        let _ = write!(query, "before={last}");
        href.push_str(&query);
        let _ = write!(
            main,
            "<p><a class=\"next\" href=\"{}\">Older OTPs</a></p>",
            esc(&href)
        );
    }
    if search.before.is_some() {
        main.push_str("<p><a href=\"/console/otps\">Back to the newest</a></p>");
    }
    page(shell, "OTP log", "OTP log", &main)
}

/// `name=value&` for each non-empty pair, encoded.
fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let mut out = serde_urlencoded::to_string(kept).unwrap_or_default();
    if !out.is_empty() {
        out.push('&');
    }
    out
}

pub(super) fn otp(
    shell: &Shell,
    otp: &OtpRecord,
    events: &[OtpEvent],
    carrier_ids: &[String],
    tz: &chrono_tz::Tz,
) -> Html<String> {
    let mut main = otp_details(otp, events, carrier_ids, tz);
    main.push_str("<p><a href=\"/console/otps\">Back to the OTP log</a></p>");
    page(shell, "OTP log", &format!("OTP {}", otp.account_seq), &main)
}

/// An OTP's figures and its status timeline (the account's page and the
/// operator's show the same).
pub(super) fn otp_details(
    otp: &OtpRecord,
    events: &[OtpEvent],
    carrier_ids: &[String],
    tz: &chrono_tz::Tz,
) -> String {
    let mut main = format!(
        "<dl class=\"figures\"><div><dt>Number</dt><dd>{number}</dd></div>\
         <div><dt>Channel</dt><dd>{channel}</dd></div>\
         <div><dt>Status</dt><dd>{chip}</dd></div>\
         <div><dt>Code</dt><dd>hidden</dd></div>\
         <div><dt>Credits</dt><dd>{credits}</dd></div>\
         <div><dt>Route</dt><dd>{route}</dd></div></dl>",
        number = esc(otp.number.display()),
        channel = otp.channel.as_str(),
        chip = chip(otp.status.as_str()),
        credits = otp.credits_used,
        route = esc(otp.route.as_deref().unwrap_or("none recorded")),
    );
    if !carrier_ids.is_empty() {
        main.push_str("<p>Carrier message ids: ");
        let ids: Vec<String> = carrier_ids
            .iter()
            .map(|i| format!("<code>{}</code>", esc(i)))
            .collect();
        main.push_str(&ids.join(", "));
        main.push_str("</p>");
    }
    // The history records what happened after acceptance; acceptance is the OTP row itself.
    let _ = write!(
        main,
        "<h2>Timeline</h2><ol class=\"timeline\"><li>{chip} <time>{at}</time> · {segments} part(s), {credits} credit(s)</li>",
        chip = chip("accepted"),
        at = esc(&rfc3339(otp.created_at, tz)),
        segments = otp.segments,
        credits = otp.credits_used,
    );
    for e in events {
        let mut extra = String::new();
        if let Some(route) = &e.route {
            let _ = write!(extra, " · route {}", esc(route));
        }
        if let Some(detail) = &e.detail {
            let _ = write!(extra, " · {}", esc(detail));
        }
        if let Some(code) = &e.error_code {
            let _ = write!(extra, " · error {}", esc(code));
        }
        let _ = write!(
            main,
            "<li>{chip} <time>{at}</time>{extra}</li>",
            chip = chip(&e.status),
            at = esc(&rfc3339(e.at, tz)),
        );
    }
    main.push_str("</ol>");
    main
}

/// The key form, its error, and a key just made (shown once).
#[derive(Default)]
pub(super) struct KeyForm {
    pub label: String,
    pub label_error: Option<String>,
    pub created: Option<String>,
}

pub(super) fn keys(
    shell: &Shell,
    keys: &[ApiKeyRecord],
    form: &KeyForm,
    tz: &chrono_tz::Tz,
) -> Html<String> {
    let mut main = String::new();
    if let Some(key) = &form.created {
        let _ = write!(
            main,
            "<section class=\"card created\" aria-labelledby=\"new-key-h\" role=\"status\">\
             <h2 id=\"new-key-h\">Your new key</h2><p>Copy it now: it is not shown again.</p>\
             <label for=\"new-key\">New API key</label>\
             <input id=\"new-key\" class=\"key\" readonly value=\"{key}\">\
             <button type=\"button\" class=\"copy\" data-copy=\"new-key\">Copy</button></section>",
            key = esc(key),
        );
    }
    let (label_attr, label_error) = field_error("label", &form.label_error);
    let _ = write!(
        main,
        "<form method=\"post\" action=\"/console/keys\" class=\"card\">\
         <h2>Create a key</h2><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"label\">Label (optional)</label>\
         <input id=\"label\" name=\"label\" value=\"{label}\"{label_attr}>{label_error}\
         <p class=\"muted\">New keys may send, verify and read.</p>\
         <button type=\"submit\">Create key</button></form>",
        csrf = esc(shell.csrf),
        label = esc(&form.label),
    );
    main.push_str(
        "<div class=\"table-wrap\"><table><caption>The account's keys</caption><thead><tr>\
         <th scope=\"col\">Key</th><th scope=\"col\">Label</th><th scope=\"col\">Scopes</th>\
         <th scope=\"col\">Created</th><th scope=\"col\">Last used</th><th scope=\"col\">State</th></tr></thead><tbody>",
    );
    for key in keys {
        let state = match key.revoked_at {
            Some(at) => format!("revoked {}", esc(&rfc3339(at, tz))),
            None => format!(
                "<form method=\"post\" action=\"/console/keys/{id}/revoke\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\" class=\"danger\" aria-label=\"Revoke key {id}\">Revoke</button></form>",
                id = esc(&key.key_id),
                csrf = esc(shell.csrf),
            ),
        };
        let _ = write!(
            main,
            "<tr><td><code>otpg_{id}_…</code></td><td>{label}</td><td>{scopes}</td><td>{created}</td>\
             <td>{used}</td><td>{state}</td></tr>",
            id = esc(&key.key_id),
            label = esc(key.label.as_deref().unwrap_or("")),
            scopes = esc(&key.scopes.to_string()),
            created = esc(&rfc3339(key.created_at, tz)),
            used = key
                .last_used
                .map_or_else(|| "never".to_owned(), |at| esc(&rfc3339(at, tz))),
        );
    }
    main.push_str("</tbody></table></div>");
    page(shell, "API keys", "API keys", &main)
}
