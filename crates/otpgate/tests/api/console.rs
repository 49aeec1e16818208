//! The console (`/console/`): plain HTTP tests of its sessions, cookies and CSRF
//! refusals, and a walk through it in the system Chromium
//! (`peers/browser/console.js`, playwright-core and axe-core). The browser test
//! needs `chromium` and `peers/browser`'s npm packages
//! (scripts/install-test-deps.sh); without them it fails, it never skips.

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use otpgate::config::Secret;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::Value;

use crate::for_each_backend;
use crate::helpers::{TestApp, spawn_app_with, text_send};
use crate::smsc::{Smsc, smpp_route, wait_until};
use crate::users::{add_user, configure};

pub(crate) const EMAIL: &str = "ana@example.com";
pub(crate) const PASSWORD: &str = "a long console password";

/// A client that shows redirects instead of following them.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The `name=value` of a `Set-Cookie` of the response, and the whole header.
pub(crate) fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_owned(), v.to_owned()))
}

/// The value of `<input ... name="csrf" value="...">` in a page.
pub(crate) fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// Logs in through the form; the session cookie (`name=value`).
pub(crate) async fn console_login(app: &TestApp) -> String {
    let (status, session) = console_login_as(app, EMAIL).await;
    assert_eq!(status, 303, "{session}");
    session
}

/// A console login as `email`: its status, and the session cookie when it
/// succeeded (else the page's HTML).
pub(crate) async fn console_login_as(app: &TestApp, email: &str) -> (u16, String) {
    let c = client();
    let form = c.get(app.url("/console/login")).send().await.unwrap();
    let (login_cookie, _) = set_cookie(&form, "otpgate_console_login").unwrap();
    let csrf = csrf_in(&form.text().await.unwrap());
    let r = c
        .post(app.url("/console/login"))
        .header(COOKIE, &login_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    match set_cookie(&r, "otpgate_console") {
        Some((session, _)) if status == 303 => (status, session),
        _ => (status, r.text().await.unwrap()),
    }
}

for_each_backend! {
    config: configure;

    async fn the_session_cookie_is_http_only_strict_and_scoped_to_the_console(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let c = client();
        let form = c.get(app.url("/console/login")).send().await.unwrap();
        let csp = form.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(!csp.contains("unsafe-inline") && csp.contains("script-src 'self'"), "{csp}");
        let (login_cookie, whole) = set_cookie(&form, "otpgate_console_login").unwrap();
        assert!(whole.contains("HttpOnly") && whole.contains("SameSite=Strict"), "{whole}");
        let csrf = csrf_in(&form.text().await.unwrap());
        let r = c
            .post(app.url("/console/login"))
            .header(COOKIE, &login_cookie)
            .form(&[("csrf", csrf.as_str()), ("email", EMAIL), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()[LOCATION], "/console/");
        let (_, whole) = set_cookie(&r, "otpgate_console").unwrap();
        for part in ["HttpOnly", "SameSite=Strict", "Path=/console/"] {
            assert!(whole.contains(part), "{part} missing from {whole}");
        }
        // Development mode serves plain http: no Secure, or the browser would drop it.
        assert!(!whole.contains("Secure"), "{whole}");
    }

    async fn a_login_without_the_forms_token_is_refused_and_counts_no_attempt(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let c = client();
        let form = c.get(app.url("/console/login")).send().await.unwrap();
        let (login_cookie, _) = set_cookie(&form, "otpgate_console_login").unwrap();
        for csrf in ["", "forged"] {
            let r = c
                .post(app.url("/console/login"))
                .header(COOKIE, &login_cookie)
                .form(&[("csrf", csrf), ("email", EMAIL), ("password", PASSWORD)])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403);
            assert!(set_cookie(&r, "otpgate_console").is_none());
        }
        // No login cookie at all (another site's form): refused too.
        let r = c
            .post(app.url("/console/login"))
            .form(&[("csrf", "x"), ("email", EMAIL), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }

    async fn posts_without_the_sessions_token_change_nothing(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let session = console_login(&app).await;
        let c = client();
        let keys_before = app.store.list_keys(Some(app.account_id)).await.unwrap();
        let key_id = keys_before[0].key_id.clone();
        for (path, body) in [
            ("/console/keys".to_owned(), vec![("label", "x")]),
            (format!("/console/keys/{key_id}/revoke"), vec![]),
            ("/console/logout".to_owned(), vec![]),
        ] {
            let mut with_bad = body.clone();
            with_bad.push(("csrf", "forged"));
            for form in [body, with_bad] {
                let r = c
                    .post(app.url(&path))
                    .header(COOKIE, &session)
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 403, "{path}");
            }
        }
        assert_eq!(app.store.list_keys(Some(app.account_id)).await.unwrap(), keys_before);
        // The session still works: logout was refused too.
        let r = c.get(app.url("/console/keys")).header(COOKIE, &session).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn another_accounts_otp_and_key_are_not_found_in_the_console(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let (_, other_key) = app.new_account("other", 10, 0).await;
        let sent = app.send_as(&other_key, &text_send("+9779801234567")).await;
        let sent: Value = sent.json().await.unwrap();
        let other_otp = sent["data"]["details"]["id"].as_i64().unwrap();
        let session = console_login(&app).await;
        let c = client();
        let page = c.get(app.url(&format!("/console/otps/{other_otp}"))).header(COOKIE, &session).send().await.unwrap();
        assert_eq!(page.status(), 404);
        let keys = c.get(app.url("/console/keys")).header(COOKIE, &session).send().await.unwrap();
        let csrf = csrf_in(&keys.text().await.unwrap());
        let other_key_id = other_key.split('_').nth(1).unwrap();
        let r = c
            .post(app.url(&format!("/console/keys/{other_key_id}/revoke")))
            .header(COOKIE, &session)
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(app.list_as(&other_key, "").await.0, 200, "the other account's key still works");
    }

    async fn the_log_is_searched_by_number_status_and_channel(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let personnel = |number: &str| {
            serde_json::json!({
                "number": number, "message": "Your code is {otp}", "sms_send_options": "text",
                "otp_options": "personnel", "otp": "482193",
            })
        };
        let verified = app.send_ok(&personnel("9851023212")).await["data"]["details"]["id"].as_i64().unwrap();
        let other = app.send_ok(&personnel("9851023213")).await["data"]["details"]["id"].as_i64().unwrap();
        let r = app
            .client
            .post(app.url("/api/v1/auths/verify/otp/"))
            .bearer_auth(&app.key)
            .json(&serde_json::json!({"number": "9851023212", "otp": "482193"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let session = console_login(&app).await;
        let c = client();
        let links = |html: &str| -> Vec<i64> {
            html.split("href=\"/console/otps/")
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
                .collect()
        };
        for (query, expected) in [
            ("", vec![other, verified]),
            ("?status=verified", vec![verified]),
            ("?number=%2B977+9851023213", vec![other]),
            ("?channel=text&status=verified&number=9851023212", vec![verified]),
            ("?channel=voice", vec![]),
        ] {
            let r = c.get(app.url(&format!("/console/otps{query}"))).header(COOKIE, &session).send().await.unwrap();
            assert_eq!(r.status(), 200, "{query}");
            assert_eq!(links(&r.text().await.unwrap()), expected, "{query}");
        }
        // A bad search shows the field's error next to it and lists nothing.
        for (query, error) in [
            ("number=abc", "id=\"number-error\""),
            ("status=lost", "id=\"status-error\""),
            ("channel=fax", "id=\"channel-error\""),
            ("before=-3", "role=\"alert\""),
        ] {
            let r = c.get(app.url(&format!("/console/otps?{query}"))).header(COOKIE, &session).send().await.unwrap();
            assert_eq!(r.status(), 400, "{query}");
            let html = r.text().await.unwrap();
            assert!(html.contains(error), "{query}: {html}");
            assert!(links(&html).is_empty(), "{query}");
        }
    }

    async fn the_log_pages_by_the_last_otp_seen_newest_first(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let mut ids = Vec::new();
        for _ in 0..52 {
            ids.push(app.send_ok(&text_send("9851023212")).await["data"]["details"]["id"].as_i64().unwrap());
        }
        ids.reverse();
        let session = console_login(&app).await;
        let c = client();
        let page = |path: String| {
            let c = c.clone();
            let session = session.clone();
            let url = app.url(&path);
            async move { c.get(url).header(COOKIE, session).send().await.unwrap().text().await.unwrap() }
        };
        let first = page("/console/otps?number=9851023212".into()).await;
        let links = |html: &str| -> Vec<i64> {
            html.split("href=\"/console/otps/")
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
                .collect()
        };
        assert_eq!(links(&first), ids[..50]);
        let next = first.split("class=\"next\" href=\"").nth(1).expect("a next link");
        let next = next.split('"').next().unwrap().replace("&amp;", "&");
        assert!(next.contains("number=9851023212") && next.contains("before="), "{next}");
        // An OTP arriving between pages neither shifts nor repeats the next page.
        app.send_ok(&text_send("9851023212")).await;
        let second = page(next).await;
        assert_eq!(links(&second), ids[50..]);
        assert!(!second.contains("class=\"next\""));
    }

    async fn the_overview_shows_credits_and_todays_spend_against_the_cap(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        app.store.set_account_limits(app.account_id, None, Some(5)).await.unwrap();
        app.send_ok(&text_send("9851023212")).await;
        app.send_ok(&text_send("9851023212")).await;
        let session = console_login(&app).await;
        let r = client().get(app.url("/console/")).header(COOKIE, &session).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        assert!(html.contains("<dt>SMS credits</dt><dd>98</dd>"), "{html}");
        assert!(html.contains("<dt>OTPs accepted, all time</dt><dd>2</dd>"), "{html}");
        assert!(html.contains("2 of 5 credits spent today."), "{html}");
        assert!(html.contains("<svg class=\"chart\""), "{html}");
        // The other account's spend is not this one's.
        let (_, other_key) = app.new_account("other", 10, 0).await;
        app.send_as(&other_key, &text_send("9851023212")).await;
        let html = client().get(app.url("/console/")).header(COOKIE, &session).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("2 of 5 credits spent today."), "{html}");
    }

    async fn a_bad_key_label_is_shown_next_to_the_field_and_creates_nothing(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let session = console_login(&app).await;
        let c = client();
        let keys = c.get(app.url("/console/keys")).header(COOKIE, &session).send().await.unwrap();
        let csrf = csrf_in(&keys.text().await.unwrap());
        let before = app.store.list_keys(Some(app.account_id)).await.unwrap().len();
        let long = "x".repeat(101);
        let r = c
            .post(app.url("/console/keys"))
            .header(COOKIE, &session)
            .form(&[("csrf", csrf.as_str()), ("label", long.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let html = r.text().await.unwrap();
        assert!(html.contains("id=\"label-error\"") && html.contains("aria-invalid=\"true\""), "{html}");
        assert_eq!(app.store.list_keys(Some(app.account_id)).await.unwrap().len(), before);
    }
}

for_each_backend!(
    a_user_walks_the_console_in_a_real_browser,
    in_production_mode_the_console_cookies_are_secure,
    console_logins_count_against_the_apis_login_limits,
);

/// The console's login is the API's: wrong passwords in either count against
/// the same per-email limit, and once it is reached the right password is
/// refused too, with the wait shown in the form.
async fn console_logins_count_against_the_apis_login_limits(backend: crate::helpers::Backend) {
    let app = spawn_app_with(backend, |c| {
        configure(c);
        c.auth.login_max_attempts = 3;
    })
    .await;
    add_user(&app, app.account_id, EMAIL, PASSWORD).await;
    let (status, _, _) = crate::users::login(&app, EMAIL, "wrong password 1").await;
    assert_eq!(status, 401);
    let c = client();
    let form = c.get(app.url("/console/login")).send().await.unwrap();
    let (login_cookie, _) = set_cookie(&form, "otpgate_console_login").unwrap();
    let csrf = csrf_in(&form.text().await.unwrap());
    let post = |password: &'static str| {
        c.post(app.url("/console/login"))
            .header(COOKIE, &login_cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("email", EMAIL),
                ("password", password),
            ])
            .send()
    };
    let r = post("wrong password 2").await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("Wrong email or password."));
    let r = post("wrong password 3").await.unwrap();
    assert_eq!(r.status(), 401);
    let r = post(PASSWORD).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(set_cookie(&r, "otpgate_console").is_none());
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Too many login attempts; try again in"),
        "{html}"
    );
    assert!(!html.contains(PASSWORD), "the password is never echoed");
    // And the API sees the same count.
    let (status, _, _) = crate::users::login(&app, EMAIL, PASSWORD).await;
    assert_eq!(status, 429);
    app.stop().await;
}

/// Production mode is served over https (behind TLS): its cookies say `Secure`.
async fn in_production_mode_the_console_cookies_are_secure(backend: crate::helpers::Backend) {
    let app = spawn_app_with(backend, |c| {
        configure(c);
        c.mode = otpgate::config::Mode::Production;
        c.secrets.hmac_key = Some(Secret::new(BASE64.encode([1u8; 32])));
        c.secrets.encryption_keys =
            [("k1".to_owned(), Secret::new(BASE64.encode([2u8; 32])))].into();
        c.secrets.current_key_id = "k1".into();
    })
    .await;
    add_user(&app, app.account_id, EMAIL, PASSWORD).await;
    let c = client();
    let form = c.get(app.url("/console/login")).send().await.unwrap();
    let (login_cookie, whole) = set_cookie(&form, "otpgate_console_login").unwrap();
    assert!(whole.ends_with("; Secure"), "{whole}");
    let csrf = csrf_in(&form.text().await.unwrap());
    let r = c
        .post(app.url("/console/login"))
        .header(COOKIE, &login_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", EMAIL),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (_, whole) = set_cookie(&r, "otpgate_console").unwrap();
    assert!(
        whole.contains("HttpOnly") && whole.ends_with("; Secure"),
        "{whole}"
    );
    app.stop().await;
}

/// The whole first slice in Chromium: log in with the keyboard, an OTP sent
/// through the API appears in the log and turns `delivered` when the node-smpp
/// SMSC's receipt comes back, its timeline, a key made and revoked, another
/// account's OTP not found, logout ending the session; axe-core on every page,
/// every page at 360 px wide.
async fn a_user_walks_the_console_in_a_real_browser(backend: crate::helpers::Backend) {
    let smsc = Smsc::start(&["--receipts", "delivered"]);
    let route = smpp_route(smsc.port, "secret");
    let app = spawn_app_with(backend, move |c| {
        configure(c);
        c.routes = vec![route];
    })
    .await;
    wait_until("the bind", || smsc.events("bind").len() == 1).await;
    add_user(&app, app.account_id, EMAIL, PASSWORD).await;
    let (_, other_key) = app.new_account("other", 10, 0).await;
    let other: Value = app
        .send_as(&other_key, &text_send("+9779801234568"))
        .await
        .json()
        .await
        .unwrap();
    let other_otp = other["data"]["details"]["id"].as_i64().unwrap();

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let browser = root.join("peers/browser");
    assert!(
        browser.join("node_modules/playwright-core").exists(),
        "peers/browser is not installed: run scripts/install-test-deps.sh"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "chromium is not installed: run scripts/install-test-deps.sh"
    );
    let shots = root.join(format!("target/console-screenshots/{backend:?}").to_lowercase());
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let key = app.key.clone();
    let shots_dir = shots.clone();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(browser.join("console.js"))
            .env("BASE", format!("http://127.0.0.1:{port}"))
            .env("EMAIL", EMAIL)
            .env("PASSWORD", PASSWORD)
            .env("API_KEY", key)
            .env("NUMBER", "+9779801234567")
            .env("OTHER_OTP_ID", other_otp.to_string())
            .env("SHOTS", shots_dir)
            .output()
            .expect("node is not installed: run scripts/install-test-deps.sh")
    })
    .await
    .unwrap();
    assert!(
        run.status.success(),
        "the browser script failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out: Value = serde_json::from_slice(&run.stdout).expect("the script prints JSON");

    assert_eq!(out["redirected_to_login"], true, "{out}");
    assert_eq!(
        out["tab_login"],
        serde_json::json!(["Skip to content", "email", "password", "Log in"]),
        "{out}"
    );
    assert_eq!(
        out["wrong_password_alert"], "Wrong email or password.",
        "{out}"
    );
    assert_eq!(out["logged_in"], true);
    assert_eq!(out["session_cookie"]["httpOnly"], true, "{out}");
    assert_eq!(out["session_cookie"]["sameSite"], "Strict", "{out}");
    assert!(
        out["overview_text"]
            .as_str()
            .unwrap()
            .contains("SMS credits"),
        "{out}"
    );

    let sent_id = out["sent_id"].as_i64().unwrap();
    let links: Vec<&str> = out["log_links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        links,
        [format!("/console/otps/{sent_id}")],
        "only this account's OTP: {out}"
    );
    assert_eq!(
        out["tab_log"],
        serde_json::json!([
            "Skip to content",
            "Overview",
            "OTP log",
            "API keys",
            "Webhook",
            "Voice",
            "Log out",
            "number",
            "status",
            "channel",
            "Search",
            "OTP 1"
        ]),
        "{out}"
    );
    assert_eq!(out["search_failed_rows"], 0, "{out}");
    assert!(
        out["bad_number_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{out}"
    );
    let timeline: Vec<&str> = out["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(timeline.first(), Some(&"accepted"), "{out}");
    assert!(timeline.contains(&"sent"), "the SMSC took it: {out}");
    assert!(
        timeline.contains(&"delivered"),
        "the SMSC's receipt came back: {out}"
    );
    assert_eq!(
        out["log_status"], "delivered",
        "the log's chip turned delivered: {out}"
    );
    assert!(
        smsc.events("submit_sm").len() >= 2,
        "both sends reached the SMSC"
    );
    let text = out["otp_page_text"].as_str().unwrap();
    assert!(text.contains("hidden"), "{out}");
    assert!(
        !text.contains("Your code is"),
        "the message holds the code: {out}"
    );

    assert_eq!(out["other_otp_status"], 404, "{out}");
    assert_eq!(out["new_key_status"], 200, "{out}");
    assert_eq!(out["revoked_key_status"], 401, "{out}");
    assert!(
        out["key_row_after_revoke"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{out}"
    );
    assert_eq!(out["after_logout_status"], 303, "{out}");
    assert_eq!(out["after_logout_location"], "/console/login", "{out}");

    let pages = out["pages"].as_object().unwrap();
    for name in [
        "login",
        "login-refused",
        "overview",
        "otp-log",
        "otp-log-bad-number",
        "otp",
        "not-found",
        "keys",
        "key-created",
    ] {
        let page = &pages[name];
        assert_eq!(
            page["serious"],
            serde_json::json!([]),
            "axe on {name}: {out}"
        );
        assert_eq!(
            page["overflow"], false,
            "{name} is wider than 360 px: {out}"
        );
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "{name}'s screenshot"
        );
    }
    assert_eq!(out["csp_violations"], serde_json::json!([]), "{out}");
    assert_eq!(out["page_errors"], serde_json::json!([]), "{out}");
    app.stop().await;
}
