//! The console's conversion charts, webhook page and voice page: CSRF and
//! bad input over plain HTTP, and a walk through them in the system Chromium
//! (`peers/browser/account-pages.js`, playwright-core and axe-core) against a
//! local webhook receiver. Without chromium or `peers/browser`'s packages
//! the browser test fails, it never skips.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use reqwest::header::COOKIE;
use serde_json::Value;

use crate::console::{EMAIL, PASSWORD, client, console_login, csrf_in};
use crate::for_each_backend;
use crate::helpers::{Backend, spawn_app_with};
use crate::users::{add_user, configure};

fn with_local_webhooks(c: &mut otpgate::config::Config) {
    configure(c);
    // The receiver is on 127.0.0.1.
    c.webhooks.allow_private_addresses = true;
}

/// A webhook receiver on 127.0.0.1: its URL and the events it got.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let event = headers
                    .get("x-otpgate-event")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                seen.lock().unwrap().push(event);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

for_each_backend! {
    config: with_local_webhooks;

    async fn webhook_posts_without_the_sessions_token_change_nothing(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let session = console_login(&app).await;
        let c = client();
        for (path, form) in [
            ("/console/webhook", vec![("url", "https://example.com/hook")]),
            ("/console/webhook/rotate", vec![]),
            ("/console/webhook/test", vec![]),
        ] {
            let r = c.post(app.url(path)).header(COOKIE, &session).form(&form).send().await.unwrap();
            assert_eq!(r.status(), 403, "{path}");
        }
        assert!(app.store.webhook(app.account_id).await.unwrap().is_none());
    }

    async fn a_bad_webhook_url_is_shown_next_to_the_field_and_sets_nothing(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let session = console_login(&app).await;
        let c = client();
        let page = c.get(app.url("/console/webhook")).header(COOKIE, &session).send().await.unwrap();
        let csrf = csrf_in(&page.text().await.unwrap());
        for bad in ["", "not a url", "ftp://example.com/hook"] {
            let r = c.post(app.url("/console/webhook")).header(COOKIE, &session)
                .form(&[("csrf", csrf.as_str()), ("url", bad)]).send().await.unwrap();
            assert_eq!(r.status(), 400, "{bad:?}");
            let html = r.text().await.unwrap();
            assert!(html.contains("id=\"url-error\""), "{bad:?}: {html}");
            assert!(html.contains("aria-invalid=\"true\""));
        }
        assert!(app.store.webhook(app.account_id).await.unwrap().is_none());
        // Rotating with no webhook is refused too.
        let r = c.post(app.url("/console/webhook/rotate")).header(COOKIE, &session)
            .form(&[("csrf", csrf.as_str())]).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(app.store.webhook(app.account_id).await.unwrap().is_none());
    }

    async fn the_voice_page_refuses_a_bad_voice_and_plays_only_for_a_session(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let session = console_login(&app).await;
        let c = client();
        let r = c.get(app.url("/console/voice?message=Code%20%7Botp%7D&voice_input=np_nobody&length_factor=1"))
            .header(COOKIE, &session).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let html = r.text().await.unwrap();
        assert!(html.contains("id=\"voice_input-error\""), "{html}");
        assert!(!html.contains("<audio"));
        let r = c.get(app.url("/console/voice?message=&voice_input=np_rija&length_factor="))
            .header(COOKIE, &session).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("id=\"message-error\""));
        // Without a session the audio is not rendered: the login page instead.
        let r = c.get(app.url("/console/voice/audio?message=Code%20%7Botp%7D&voice_input=np_rija&length_factor=1"))
            .send().await.unwrap();
        assert_eq!(r.status(), 303);
    }
}

/// The overview's conversion charts, the webhook page (bad URL, set, rotate,
/// a test event to a local receiver, a send's deliveries with their
/// attempts) and the voice page (bad length factor, a prompt played) in
/// Chromium at 360 px, axe-core on every page, screenshots kept.
async fn a_user_sees_conversions_sets_a_webhook_and_listens_to_a_voice_in_a_real_browser(
    backend: Backend,
) {
    let app = spawn_app_with(backend, with_local_webhooks).await;
    add_user(&app, app.account_id, EMAIL, PASSWORD).await;
    let (hook_url, got) = receiver().await;

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let browser = root.join("peers/browser");
    assert!(
        browser.join("node_modules/playwright-core").exists(),
        "peers/browser is not installed: run scripts/install-test-deps.sh"
    );
    let shots = root.join(format!("target/console-screenshots/account-{backend:?}").to_lowercase());
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let key = app.key.clone();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(browser.join("account-pages.js"))
            .env("BASE", format!("http://127.0.0.1:{port}"))
            .env("EMAIL", EMAIL)
            .env("PASSWORD", PASSWORD)
            .env("API_KEY", key)
            .env("NUMBER", "+9779841234567")
            .env("RECEIVER", hook_url)
            .env("SHOTS", shots)
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

    // The charts come from the aggregates: two sends so far, both text.
    assert!(
        out["sends_chart_desc"]
            .as_str()
            .unwrap()
            .starts_with("2 text and 0 voice sends"),
        "{out}"
    );
    assert_eq!(out["sends_chart_lines"], 2, "{out}");
    let rows = out["channel_rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{out}");
    assert!(rows[0].as_str().unwrap().starts_with("text\t2\t"), "{out}");
    assert_eq!(
        out["rate_charts"],
        serde_json::json!(["Delivery rate by channel", "Verification rate by channel"])
    );

    assert_eq!(out["bad_url_status"], 400, "{out}");
    assert!(
        out["bad_url_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{out}"
    );
    assert_eq!(out["secret_after_bad_url"], 0, "a refused URL sets nothing");
    assert_eq!(
        (
            out["set_url_status"].as_u64(),
            out["rotate_status"].as_u64()
        ),
        (Some(200), Some(200)),
        "{out}"
    );
    assert_eq!(out["secret_rotated"], true, "{out}");
    let stored = app.store.webhook(app.account_id).await.unwrap().unwrap();
    assert_eq!(
        stored.secret.as_deref(),
        out["secret"].as_str(),
        "the page shows the stored secret"
    );
    assert_eq!(out["test_status"], 200);
    assert_eq!(
        out["test_notice"], "Test event sent: the receiver answered 200.",
        "{out}"
    );
    let events = got.lock().unwrap().clone();
    assert_eq!(
        events.first().map(String::as_str),
        Some("test"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e == "sent"),
        "the send's event arrived too: {events:?}"
    );
    let listed = out["delivery_rows"].as_array().unwrap();
    assert!(
        listed.iter().any(|r| r.as_str().unwrap().contains("sent")
            && r.as_str().unwrap().contains("answered 200")),
        "{out}"
    );

    assert_eq!(
        out["voices"],
        serde_json::json!(["np_rija", "np_prashanna", "np_shreegya", "np_binod"]),
        "{out}"
    );
    assert_eq!(out["bad_factor_status"], 400, "{out}");
    assert!(
        out["bad_factor_error"]
            .as_str()
            .unwrap()
            .contains("between 0.5 and 2.0"),
        "{out}"
    );
    assert_eq!(out["audio_after_bad_factor"], 0);
    assert_eq!(out["voice_status"], 200);
    assert_eq!(out["audio"]["status"], 200, "{out}");
    assert_eq!(out["audio"]["type"], "audio/wav");
    assert_eq!(out["audio"]["riff"], "RIFF");
    assert!(out["audio"]["size"].as_u64().unwrap() > 1000, "{out}");
    assert_eq!(
        out["audio_ready"], true,
        "the player loads the prompt under the CSP"
    );

    for (name, page) in out["pages"].as_object().unwrap() {
        assert_eq!(page["serious"], serde_json::json!([]), "{name}: {page}");
        assert_eq!(page["overflow"], false, "{name} is wider than 360 px");
    }
    assert_eq!(out["pages"].as_object().unwrap().len(), 8, "{out}");
    assert_eq!(out["csp_violations"], serde_json::json!([]), "{out}");
    assert_eq!(out["page_errors"], serde_json::json!([]), "{out}");
}

for_each_backend!(a_user_sees_conversions_sets_a_webhook_and_listens_to_a_voice_in_a_real_browser);
