//! The operator pages' HTML (see [`super::operator`]), written as
//! [`super::pages`] writes the account pages: every value through [`esc`],
//! no inline script or style, charts as SVG drawn here.

use std::fmt::Write;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use otp_store::{
    Account, AccountLimits, ApiKeyRecord, LedgerEntry, OtpEvent, OtpRecord, OtpStatus, User,
};

use super::pages::{Top, chip, document, esc, field_error, option, otp_details};
use crate::accounts::Problem;
use crate::control::RouteView;
use crate::delivery::RouteHealth;
use crate::times::rfc3339;

/// What every operator page shows around its content.
pub(super) struct Shell<'a> {
    /// The operator's email, or "admin token".
    pub who: &'a str,
    pub csrf: &'a str,
}

fn page(shell: &Shell, current: &str, title: &str, main: &str) -> Html<String> {
    let who = format!("Operator: {}", shell.who);
    let top = Top {
        label: "Operator console",
        links: &[
            ("/console/ops/accounts", "Accounts"),
            ("/console/ops/routes", "Routes"),
            ("/console/ops/otps", "All OTPs"),
        ],
        logout: "/console/ops/logout",
        csrf: shell.csrf,
        who: &who,
    };
    document(
        title,
        &top.render(current),
        &format!("<h1>{}</h1>{main}", esc(title)),
    )
}

/// 403: an account user asked for an operator page.
pub(super) fn refused() -> Response {
    let main = "<h1>Operators only</h1><p>This page is for the gateway's operators; \
                your login opens your own account's pages.</p>\
                <p><a href=\"/console/\">Back to your console</a></p>";
    (StatusCode::FORBIDDEN, document("Operators only", "", main)).into_response()
}

/// The admin token's login form.
pub(super) fn login(enabled: bool, csrf: &str, error: Option<&str>) -> Html<String> {
    let (attr, error) = field_error("token", &error.map(str::to_owned));
    let body = if enabled {
        format!(
            "<form method=\"post\" action=\"/console/ops/login\" class=\"card narrow\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"token\">Admin token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required{attr}>{error}\
             <button type=\"submit\">Open the operator console</button></form>",
            csrf = esc(csrf),
        )
    } else {
        "<p>No <code>admin.token</code> is configured, so it cannot open a session.</p>".to_owned()
    };
    let main = format!(
        "<h1>Operator login</h1>\
         <p>Type the configured <code>admin.token</code>; the session lasts {mins} minutes and \
         the token is never stored in the browser. An operator user (made with \
         <code>otpgate users create --operator</code>) logs in on the \
         <a href=\"/console/login\">usual login page</a> instead.</p>{body}",
        mins = super::operator::TOKEN_SESSION_SECS / 60,
    );
    document("Operator login", "", &main)
}

/// A problem of `field`, as [`field_error`] shows it.
fn problem_of(problems: &[Problem], field: &str) -> Option<String> {
    problems
        .iter()
        .find(|p| p.field == field)
        .map(|p| p.message.clone())
}

/// The create-account form as typed, with its problems.
#[derive(Default)]
pub(super) struct AccountForm {
    pub name: String,
    pub sms: String,
    pub phone: String,
    pub problems: Vec<Problem>,
}

pub(super) fn accounts(shell: &Shell, list: &[Account], form: &AccountForm) -> Html<String> {
    let (name_attr, name_error) = field_error("name", &problem_of(&form.problems, "name"));
    let (sms_attr, sms_error) =
        field_error("sms_credits", &problem_of(&form.problems, "sms_credits"));
    let (phone_attr, phone_error) = field_error(
        "phone_credits",
        &problem_of(&form.problems, "phone_credits"),
    );
    let mut main = String::from(
        "<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Accounts\"><table><caption>Accounts</caption><thead><tr>\
         <th scope=\"col\">Account</th><th scope=\"col\">SMS credits</th>\
         <th scope=\"col\">Phone credits</th><th scope=\"col\">OTPs</th></tr></thead><tbody>",
    );
    for a in list {
        let _ = write!(
            main,
            "<tr><td><a href=\"/console/ops/accounts/{id}\">{name}</a>{off}</td><td>{sms}</td>\
             <td>{phone}</td><td>{otps}</td></tr>",
            id = a.id,
            name = esc(&a.name),
            off = if a.disabled_at.is_some() {
                " <span class=\"chip chip-failed\">disabled</span>"
            } else {
                ""
            },
            sms = a.sms_credits,
            phone = a.phone_credits,
            otps = a.otp_count,
        );
    }
    main.push_str("</tbody></table></div>");
    let _ = write!(
        main,
        "<form method=\"post\" action=\"/console/ops/accounts\" class=\"card\">\
         <h2>Create an account</h2><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"name\">Name</label>\
         <input id=\"name\" name=\"name\" required maxlength=\"100\" value=\"{name}\"{name_attr}>{name_error}\
         <label for=\"sms_credits\">Opening SMS credits</label>\
         <input id=\"sms_credits\" name=\"sms_credits\" inputmode=\"numeric\" value=\"{sms}\"{sms_attr}>{sms_error}\
         <label for=\"phone_credits\">Opening phone credits</label>\
         <input id=\"phone_credits\" name=\"phone_credits\" inputmode=\"numeric\" value=\"{phone}\"{phone_attr}>{phone_error}\
         <p class=\"muted\">The account gets a first API key (send, verify, read), shown once.</p>\
         <button type=\"submit\">Create account</button></form>",
        csrf = esc(shell.csrf),
        name = esc(&form.name),
        sms = esc(&form.sms),
        phone = esc(&form.phone),
    );
    page(shell, "Accounts", "Accounts", &main)
}

/// What a form of the account page just made, or refused.
#[derive(Default)]
pub(super) struct Made {
    /// A new API key, shown once.
    pub key: Option<String>,
    /// The form refused (`credits`, `limits`, `key`, `user`) and why.
    pub form: Option<&'static str>,
    pub problems: Vec<Problem>,
    /// The refused form's fields as typed (never a password), to type back.
    pub values: Vec<(String, String)>,
}

impl Made {
    /// What was typed into `field` when `form` was the one refused.
    fn value(&self, form: &str, field: &str) -> Option<&str> {
        (self.form == Some(form))
            .then(|| self.values.iter().find(|(n, _)| n == field))
            .flatten()
            .map(|(_, v)| v.as_str())
    }

    /// The error of `field` when `form` was the one refused.
    fn error(&self, form: &str, field: &str) -> Option<String> {
        (self.form == Some(form))
            .then(|| problem_of(&self.problems, field))
            .flatten()
    }
}

pub(super) struct AccountData<'a> {
    pub account: &'a Account,
    pub ledger: &'a [LedgerEntry],
    pub limits: Option<&'a AccountLimits>,
    pub keys: &'a [ApiKeyRecord],
    pub users: &'a [otp_store::User],
}

fn alert(error: Option<String>) -> String {
    error
        .map(|e| format!("<p class=\"alert\" role=\"alert\">{}</p>", esc(&e)))
        .unwrap_or_default()
}

pub(super) fn account(
    shell: &Shell,
    d: &AccountData,
    made: &Made,
    tz: &chrono_tz::Tz,
) -> Html<String> {
    let a = d.account;
    let mut main = format!(
        "<p><a href=\"/console/ops/accounts\">All accounts</a></p>\
         <dl class=\"figures\"><div><dt>SMS credits</dt><dd id=\"sms-balance\">{sms}</dd></div>\
         <div><dt>Phone credits</dt><dd id=\"phone-balance\">{phone}</dd></div>\
         <div><dt>OTPs accepted</dt><dd>{otps}</dd></div>\
         <div><dt>Account id</dt><dd>{id}</dd></div></dl>",
        sms = a.sms_credits,
        phone = a.phone_credits,
        otps = a.otp_count,
        id = a.id,
    );
    if let Some(key) = &made.key {
        let _ = write!(
            main,
            "<section class=\"card created\" aria-labelledby=\"new-key-h\" role=\"status\">\
             <h2 id=\"new-key-h\">The new key</h2><p>Copy it now: it is not shown again.</p>\
             <label for=\"new-key\">New API key</label>\
             <input id=\"new-key\" class=\"key\" readonly value=\"{key}\">\
             <button type=\"button\" class=\"copy\" data-copy=\"new-key\">Copy</button></section>",
            key = esc(key),
        );
    }
    // Disable, enable.
    let (state, action, button) = match a.disabled_at {
        Some(at) => (
            format!(
                "Disabled since {}: its API keys and users are refused and it sends nothing.",
                esc(&rfc3339(at, tz))
            ),
            "enable",
            "Enable account",
        ),
        None => ("Enabled.".to_owned(), "disable", "Disable account"),
    };
    let _ = write!(
        main,
        "<section class=\"card\" aria-labelledby=\"access-h\"><h2 id=\"access-h\">Access</h2>\
         <p id=\"account-state\">{state}</p>\
         <form method=\"post\" action=\"/console/ops/accounts/{id}/{action}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" id=\"account-access\">{button}</button></form></section>",
        id = a.id,
        csrf = esc(shell.csrf),
    );
    // Top-up and ledger.
    let (sms_attr, sms_error) = field_error("sms", &made.error("credits", "sms"));
    let (phone_attr, phone_error) = field_error("phone", &made.error("credits", "phone"));
    let (note_attr, note_error) = field_error("note", &made.error("credits", "note"));
    let _ = write!(
        main,
        "<section class=\"card\" aria-labelledby=\"credits-h\"><h2 id=\"credits-h\">Top up credits</h2>{alert}\
         <form method=\"post\" action=\"/console/ops/accounts/{id}/credits\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"sms\">SMS credits to add (negative removes)</label>\
         <input id=\"sms\" name=\"sms\" inputmode=\"numeric\" value=\"{sms}\"{sms_attr}>{sms_error}\
         <label for=\"phone\">Phone credits to add</label>\
         <input id=\"phone\" name=\"phone\" inputmode=\"numeric\" value=\"{phone}\"{phone_attr}>{phone_error}\
         <label for=\"note\">Ledger note (optional)</label>\
         <input id=\"note\" name=\"note\" maxlength=\"100\" value=\"{note}\"{note_attr}>{note_error}\
         <button type=\"submit\">Add credits</button></form>",
        alert = alert(made.error("credits", "non_field_errors")),
        id = a.id,
        csrf = esc(shell.csrf),
        sms = esc(made.value("credits", "sms").unwrap_or("")),
        phone = esc(made.value("credits", "phone").unwrap_or("")),
        note = esc(made.value("credits", "note").unwrap_or("")),
    );
    main.push_str(
        "<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Ledger\"><table id=\"ledger\"><caption>Ledger, newest first</caption><thead><tr>\
         <th scope=\"col\">When</th><th scope=\"col\">Kind</th><th scope=\"col\">SMS</th>\
         <th scope=\"col\">Phone</th><th scope=\"col\">Note</th></tr></thead><tbody>",
    );
    for e in d.ledger {
        let _ = write!(
            main,
            "<tr><td>{at}</td><td>{kind}</td><td>{sms:+}</td><td>{phone:+}</td><td>{note}</td></tr>",
            at = esc(&rfc3339(e.created_at, tz)),
            kind = esc(&e.kind),
            sms = e.sms_delta,
            phone = e.phone_delta,
            note = esc(e.note.as_deref().unwrap_or("")),
        );
    }
    main.push_str("</tbody></table></div></section>");

    // Limits.
    let show = |v: Option<i64>| v.map_or_else(String::new, |v| v.to_string());
    let (rps_attr, rps_error) = field_error("max_rps", &made.error("limits", "max_rps"));
    let (cap_attr, cap_error) =
        field_error("daily_spend_cap", &made.error("limits", "daily_spend_cap"));
    let spent = d.limits.map_or(0, |l| l.spent);
    let _ = write!(
        main,
        "<section class=\"card\" aria-labelledby=\"limits-h\"><h2 id=\"limits-h\">Limits</h2>\
         <p class=\"muted\">Blank: the configured default. 0: no limit. Credits spent on the \
         last day counted: {spent}.</p>\
         <form method=\"post\" action=\"/console/ops/accounts/{id}/limits\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"max_rps\">Sends per second</label>\
         <input id=\"max_rps\" name=\"max_rps\" inputmode=\"numeric\" value=\"{rps}\"{rps_attr}>{rps_error}\
         <label for=\"daily_spend_cap\">Daily spend cap (credits)</label>\
         <input id=\"daily_spend_cap\" name=\"daily_spend_cap\" inputmode=\"numeric\" value=\"{cap}\"{cap_attr}>{cap_error}\
         <button type=\"submit\">Set limits</button></form></section>",
        id = a.id,
        csrf = esc(shell.csrf),
        rps = made
            .value("limits", "max_rps")
            .map_or_else(|| show(d.limits.and_then(|l| l.max_rps)), esc),
        cap = made
            .value("limits", "daily_spend_cap")
            .map_or_else(|| show(d.limits.and_then(|l| l.daily_spend_cap)), esc),
    );

    // Keys.
    let (label_attr, label_error) = field_error("label", &made.error("key", "label"));
    let _ = write!(
        main,
        "<section class=\"card\" aria-labelledby=\"keys-h\"><h2 id=\"keys-h\">API keys</h2>\
         <form method=\"post\" action=\"/console/ops/accounts/{id}/keys\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"label\">New key's label (optional)</label>\
         <input id=\"label\" name=\"label\" maxlength=\"100\" value=\"{label}\"{label_attr}>{label_error}\
         <button type=\"submit\">Create key</button></form>\
         <div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Keys\"><table><caption>Keys</caption><thead><tr>\
         <th scope=\"col\">Key</th><th scope=\"col\">Label</th><th scope=\"col\">Last used</th>\
         <th scope=\"col\">State</th></tr></thead><tbody>",
        id = a.id,
        csrf = esc(shell.csrf),
        label = esc(made.value("key", "label").unwrap_or("")),
    );
    for k in d.keys {
        let _ = write!(
            main,
            "<tr><td><code>otpg_{id}_…</code></td><td>{label}</td><td>{used}</td><td>{state}</td></tr>",
            id = esc(&k.key_id),
            label = esc(k.label.as_deref().unwrap_or("")),
            used = k
                .last_used
                .map_or_else(|| "never".to_owned(), |at| esc(&rfc3339(at, tz))),
            state = if k.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            },
        );
    }
    main.push_str("</tbody></table></div></section>");

    // Users.
    let (email_attr, email_error) = field_error("email", &made.error("user", "email"));
    let (password_attr, password_error) = field_error("password", &made.error("user", "password"));
    let _ = write!(
        main,
        "<section class=\"card\" aria-labelledby=\"users-h\"><h2 id=\"users-h\">Users</h2>\
         <form method=\"post\" action=\"/console/ops/accounts/{id}/users\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"email\">Email</label>\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"off\" value=\"{email}\"{email_attr}>{email_error}\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\"{password_attr}>{password_error}\
         <button type=\"submit\">Create user</button></form><ul>",
        id = a.id,
        csrf = esc(shell.csrf),
        email = esc(made.value("user", "email").unwrap_or("")),
    );
    for u in d.users {
        let _ = write!(
            main,
            "<li>{email}{op}</li>",
            email = esc(&u.email),
            op = operator_mark(u),
        );
    }
    main.push_str("</ul></section>");
    page(shell, "Accounts", &format!("Account {}", a.name), &main)
}

fn operator_mark(u: &User) -> &'static str {
    if u.operator { " (operator)" } else { "" }
}

/// One route as the routes page shows it.
pub(super) struct RouteRow {
    pub route: RouteView,
    pub connections: Vec<RouteHealth>,
    pub submitted: u64,
    pub receipts: u64,
    pub unmatched: u64,
    /// (seconds before now, submits/s, receipts/s), oldest first.
    pub rates: Vec<(f64, f64, f64)>,
}

pub(super) struct RoutesData {
    pub routes: Vec<RouteRow>,
    /// Jobs waiting per channel; `None` when the store did not answer.
    pub depth: Option<Vec<(&'static str, i64)>>,
}

pub(super) fn routes(shell: &Shell, data: &RoutesData) -> Html<String> {
    let main = format!(
        "<p class=\"muted\">Refreshed every 5 seconds while this page is open; the rates \
         are measured between refreshes.</p>\
         <div id=\"live\" data-live=\"/console/ops/routes/live\">{}</div>",
        routes_live(shell, data)
    );
    page(shell, "Routes", "Routes", &main)
}

/// A line chart of submits and receipts per second.
fn rate_chart(name: &str, rates: &[(f64, f64, f64)]) -> String {
    if rates.len() < 2 {
        return "<p class=\"muted\">The rate chart needs two refreshes of this page.</p>"
            .to_owned();
    }
    let span = rates.first().map_or(1.0, |r| r.0).max(1.0);
    let top = rates.iter().map(|r| r.1.max(r.2)).fold(1.0f64, f64::max);
    let (w, h) = (300.0, 100.0);
    let line = |pick: fn(&(f64, f64, f64)) -> f64| -> String {
        rates
            .iter()
            .map(|r| {
                format!(
                    "{:.1},{:.1}",
                    20.0 + w * (1.0 - r.0 / span),
                    10.0 + h * (1.0 - pick(r) / top)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let last = rates.last().copied().unwrap_or_default();
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 330 140\" role=\"img\" aria-labelledby=\"rate-{id}\">\
         <title id=\"rate-{id}\">Submits and receipts per second on route {name}, last {span:.0} s: \
         now {s:.1} and {r:.1}</title>\
         <line x1=\"20\" y1=\"110\" x2=\"320\" y2=\"110\" class=\"axis\"></line>\
         <text x=\"0\" y=\"16\" class=\"chart-label\">{top:.1}/s</text>\
         <polyline points=\"{submits}\" class=\"line line-0\"></polyline>\
         <polyline points=\"{receipts}\" class=\"line line-1\"></polyline>\
         <text x=\"20\" y=\"132\" class=\"chart-label\">submits (solid)</text>\
         <text x=\"170\" y=\"132\" class=\"chart-label\">receipts (dashed)</text></svg>",
        id = esc(&name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
        name = esc(name),
        s = last.1,
        r = last.2,
        submits = line(|r| r.1),
        receipts = line(|r| r.2),
    )
}

/// The part of the routes page `app.js` fetches again.
pub(super) fn routes_live(shell: &Shell, data: &RoutesData) -> String {
    let mut out = String::new();
    match &data.depth {
        Some(depth) => {
            out.push_str("<dl class=\"figures\">");
            for (channel, n) in depth {
                let _ = write!(
                    out,
                    "<div><dt>Waiting, {channel}</dt><dd id=\"queue-{channel}\">{n}</dd></div>"
                );
            }
            out.push_str("</dl>");
        }
        None => {
            out.push_str("<p class=\"alert\">The queue depth could not be read from the store.</p>")
        }
    }
    if data.routes.is_empty() {
        out.push_str(
            "<p>No <code>[[routes]]</code> are configured: every message goes to the delivery log.</p>",
        );
    }
    for row in &data.routes {
        let r = &row.route;
        let action = if r.state == "active" {
            "pause"
        } else {
            "resume"
        };
        let _ = write!(
            out,
            "<section class=\"card route\" aria-labelledby=\"route-{id}\" data-route=\"{name}\">\
             <h2 id=\"route-{id}\">{name} <span class=\"muted\">{channel}, {driver}</span> \
             <span class=\"chip chip-{state}\">{state}</span></h2>\
             <dl class=\"figures\"><div><dt>In flight</dt><dd>{in_flight}</dd></div>\
             <div><dt>Submitted</dt><dd>{submitted}</dd></div>\
             <div><dt>Receipts</dt><dd>{receipts}</dd></div>\
             <div><dt>Unmatched receipts</dt><dd>{unmatched}</dd></div></dl>",
            id = esc(&r.name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
            name = esc(&r.name),
            channel = r.channel,
            driver = esc(&r.driver),
            state = r.state,
            in_flight = r.in_flight,
            submitted = row.submitted,
            receipts = row.receipts,
            unmatched = row.unmatched,
        );
        if row.connections.is_empty() {
            out.push_str("<p class=\"muted\">This driver keeps no standing connection.</p>");
        } else {
            let _ = write!(
                out,
                "<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Connections of {name}\">\
                 <table><caption>Connections</caption><thead><tr>\
                 <th scope=\"col\">Connection</th><th scope=\"col\">Status</th>\
                 <th scope=\"col\">Window in use</th><th scope=\"col\">Last error</th></tr></thead><tbody>",
                name = esc(&r.name),
            );
            for c in &row.connections {
                let up = matches!(c.status.as_str(), "bound" | "ready");
                let _ = write!(
                    out,
                    "<tr><td>{conn}</td><td><span class=\"chip chip-{cls}\" data-status=\"{status}\">{status}</span></td>\
                     <td>{window}</td><td>{detail}</td></tr>",
                    conn = esc(&c.connection),
                    cls = if up { "up" } else { "down" },
                    status = esc(&c.status),
                    window = c.in_flight,
                    detail = esc(c.detail.as_deref().unwrap_or("")),
                );
            }
            out.push_str("</tbody></table></div>");
        }
        out.push_str(&rate_chart(&r.name, &row.rates));
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/console/ops/routes/{path}/{action}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\">{label} {name}</button></form></section>",
            path = esc(&url_segment(&r.name)),
            csrf = esc(shell.csrf),
            label = if action == "pause" { "Pause" } else { "Resume" },
            name = esc(&r.name),
        );
    }
    out
}

/// A route name as one URL path segment.
fn url_segment(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The operator's log search, as parsed.
#[derive(Default)]
pub(super) struct AllSearch {
    pub number: String,
    pub id: String,
    pub status: Option<OtpStatus>,
    pub before: Option<i64>,
    pub number_error: Option<String>,
    pub id_error: Option<String>,
    pub status_error: Option<String>,
    pub before_error: Option<String>,
}

impl AllSearch {
    pub fn has_errors(&self) -> bool {
        self.number_error.is_some()
            || self.id_error.is_some()
            || self.status_error.is_some()
            || self.before_error.is_some()
    }
}

pub(super) fn otp_log(
    shell: &Shell,
    search: &AllSearch,
    items: &[OtpRecord],
    tz: &chrono_tz::Tz,
) -> Html<String> {
    let (number_attr, number_error) = field_error("number", &search.number_error);
    let (id_attr, id_error) = field_error("id", &search.id_error);
    let (status_attr, status_error) = field_error("status", &search.status_error);
    let mut statuses = String::from("<option value=\"\">any</option>");
    for s in OtpStatus::ALL {
        statuses.push_str(&option(s.as_str(), search.status == Some(s)));
    }
    let mut main = format!(
        "<form method=\"get\" action=\"/console/ops/otps\" class=\"card search\" role=\"search\">\
         <div><label for=\"number\">Number</label>\
         <input id=\"number\" name=\"number\" type=\"tel\" value=\"{number}\"{number_attr}>{number_error}</div>\
         <div><label for=\"id\">OTP id</label>\
         <input id=\"id\" name=\"id\" inputmode=\"numeric\" value=\"{id}\"{id_attr}>{id_error}</div>\
         <div><label for=\"status\">Status</label><select id=\"status\" name=\"status\"{status_attr}>{statuses}</select>{status_error}</div>\
         <div><button type=\"submit\">Search</button></div></form>",
        number = esc(&search.number),
        id = esc(&search.id),
    );
    main.push_str(&alert(search.before_error.clone()));
    if items.is_empty() {
        main.push_str("<p>No OTPs match.</p>");
    } else {
        main.push_str(
            "<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"OTPs\"><table><caption>OTPs of every account, newest first</caption><thead><tr>\
             <th scope=\"col\">Id</th><th scope=\"col\">Account</th><th scope=\"col\">Number</th>\
             <th scope=\"col\">Channel</th><th scope=\"col\">Status</th><th scope=\"col\">Accepted</th></tr></thead><tbody>",
        );
        for otp in items {
            let _ = write!(
                main,
                "<tr><td><a href=\"/console/ops/otps/{id}\">OTP {id}</a></td>\
                 <td><a href=\"/console/ops/accounts/{account}\">{account}</a></td><td>{number}</td>\
                 <td>{channel}</td><td>{chip}</td><td>{at}</td></tr>",
                id = otp.id,
                account = otp.account_id,
                number = esc(otp.number.display()),
                channel = otp.channel.as_str(),
                chip = chip(otp.status.as_str()),
                at = esc(&rfc3339(otp.created_at, tz)),
            );
        }
        main.push_str("</tbody></table></div>");
    }
    if items.len() as u32 == super::operator::PAGE_SIZE {
        let last = items.last().map_or(0, |o| o.id);
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if !search.number.is_empty() {
            pairs.push(("number", search.number.clone()));
        }
        if let Some(s) = search.status {
            pairs.push(("status", s.as_str().to_owned()));
        }
        pairs.push(("before", last.to_string()));
        let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
        let _ = write!(
            main,
            "<p><a class=\"next\" href=\"/console/ops/otps?{}\">Older OTPs</a></p>",
            esc(&query)
        );
    }
    if search.before.is_some() {
        main.push_str("<p><a href=\"/console/ops/otps\">Back to the newest</a></p>");
    }
    page(shell, "All OTPs", "All OTPs", &main)
}

pub(super) fn otp(
    shell: &Shell,
    otp: &OtpRecord,
    events: &[OtpEvent],
    carrier_ids: &[String],
    tz: &chrono_tz::Tz,
) -> Html<String> {
    let mut main = format!(
        "<p>Account <a href=\"/console/ops/accounts/{account}\">{account}</a>, its OTP {seq}.</p>",
        account = otp.account_id,
        seq = otp.account_seq,
    );
    main.push_str(&otp_details(otp, events, carrier_ids, tz));
    main.push_str("<p><a href=\"/console/ops/otps\">Back to all OTPs</a></p>");
    page(shell, "All OTPs", &format!("OTP {}", otp.id), &main)
}
