//! The console's operator pages (`/console/ops/`): who may open them, the
//! account forms (through the same operations as the CLI and the admin API),
//! the routes page's pause and resume, the OTP log over every account, the
//! admin listener, and a walk in the system Chromium
//! (`peers/browser/operator.js`) that tops up an account and watches a route
//! go down and come back with the node-smpp SMSC.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use reqwest::header::{COOKIE, LOCATION};
use serde_json::Value;

use crate::console::{
    EMAIL, PASSWORD, client, console_login, console_login_as, csrf_in, set_cookie,
};
use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, spawn_app_with, text_send};
use crate::smsc::{Smsc, smpp_route, wait_until};
use crate::users::{ADMIN_TOKEN, add_user, configure};

/// Logs `EMAIL` in as an operator; the session cookie.
async fn operator_login(app: &TestApp) -> String {
    let id = add_user(app, app.account_id, EMAIL, PASSWORD).await;
    app.store.set_operator(id, true).await.unwrap().unwrap();
    console_login(app).await
}

async fn get(app: &TestApp, session: &str, path: &str) -> (u16, String) {
    let r = client()
        .get(app.url(path))
        .header(COOKIE, session)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Posts a form with the CSRF token of `page`'s HTML.
async fn post(
    app: &TestApp,
    session: &str,
    path: &str,
    page: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let csrf = csrf_in(page);
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    let r = client()
        .post(app.url(path))
        .header(COOKIE, session)
        .form(&form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

for_each_backend! {
    config: configure;

    async fn an_account_user_is_refused_every_operator_page_and_changes_nothing(app) {
        add_user(&app, app.account_id, EMAIL, PASSWORD).await;
        let session = console_login(&app).await;
        let (other, _) = app.new_account("other", 10, 0).await;
        for path in [
            "/console/ops/accounts".to_owned(),
            format!("/console/ops/accounts/{other}"),
            "/console/ops/routes".to_owned(),
            "/console/ops/routes/live".to_owned(),
            "/console/ops/otps".to_owned(),
        ] {
            let (status, html) = get(&app, &session, &path).await;
            assert_eq!(status, 403, "{path}");
            assert!(html.contains("Operators only"), "{path}: {html}");
        }
        // Its own page's CSRF token does not open an operator form either.
        let (_, keys) = get(&app, &session, "/console/keys").await;
        let (status, _) =
            post(&app, &session, &format!("/console/ops/accounts/{other}/credits"), &keys, &[("sms", "500")]).await;
        assert_eq!(status, 403);
        assert_eq!(app.store.account(other).await.unwrap().unwrap().sms_credits, 10);
        // And its own pages still show its own account only.
        let (status, _) = get(&app, &session, "/console/otps").await;
        assert_eq!(status, 200);
    }

    async fn a_user_made_with_the_operator_flag_opens_the_operator_pages(app) {
        use std::process::Stdio;
        let mut child = crate::durability::otpgate()
            .args(["users", "create", &app.account_id.to_string(), EMAIL, "--operator", "--json"])
            .args(["--database-url", &app.database_url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let made: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(made["operator"], true, "{made}");
        let session = console_login(&app).await;
        let (status, html) = get(&app, &session, "/console/ops/accounts").await;
        assert_eq!(status, 200, "{html}");
        assert!(html.contains("Operator: ana@example.com"), "{html}");
    }

    async fn an_operator_tops_up_an_account_and_its_ledger_shows_it(app) {
        let session = operator_login(&app).await;
        let (other, _) = app.new_account("other", 10, 0).await;
        let (status, list) = get(&app, &session, "/console/ops/accounts").await;
        assert_eq!(status, 200);
        assert!(list.contains(&format!("href=\"/console/ops/accounts/{other}\">other</a>")), "{list}");
        let path = format!("/console/ops/accounts/{other}");
        let (_, page) = get(&app, &session, &path).await;
        let (status, _) = post(
            &app,
            &session,
            &format!("{path}/credits"),
            &page,
            &[("sms", "25"), ("phone", "3"), ("note", "march invoice")],
        )
        .await;
        assert_eq!(status, 303);
        let account = app.store.account(other).await.unwrap().unwrap();
        assert_eq!((account.sms_credits, account.phone_credits), (35, 3));
        let (_, page) = get(&app, &session, &path).await;
        assert!(page.contains("<dd id=\"sms-balance\">35</dd>"), "{page}");
        assert!(page.contains("<td>+25</td><td>+3</td><td>march invoice</td>"), "{page}");

        // Limits, a key (shown once) and a user, each through the shared operations.
        let (status, _) = post(&app, &session, &format!("{path}/limits"), &page, &[("max_rps", "7"), ("daily_spend_cap", "")]).await;
        assert_eq!(status, 303);
        let limits = app.store.account_limits(other).await.unwrap().unwrap();
        assert_eq!((limits.max_rps, limits.daily_spend_cap), (Some(7), None));
        let (status, made) = post(&app, &session, &format!("{path}/keys"), &page, &[("label", "billing")]).await;
        assert_eq!(status, 201);
        let key = made.split("id=\"new-key\" class=\"key\" readonly value=\"").nth(1).unwrap();
        let key = key.split('"').next().unwrap();
        assert_eq!(app.list_as(key, "").await.0, 200, "the new key works");
        let (status, _) = post(
            &app,
            &session,
            &format!("{path}/users"),
            &page,
            &[("email", "Bo@Example.com"), ("password", "another long password")],
        )
        .await;
        assert_eq!(status, 303);
        let users = app.store.list_users(Some(other)).await.unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].email, "bo@example.com");
        assert!(!users[0].operator, "a user made in the console is an account user");
    }

    async fn bad_input_in_an_operator_form_is_shown_next_to_its_field_and_changes_nothing(app) {
        let session = operator_login(&app).await;
        let (other, _) = app.new_account("other", 10, 0).await;
        let path = format!("/console/ops/accounts/{other}");
        let (_, page) = get(&app, &session, &path).await;
        let ledger = app.store.ledger(other).await.unwrap();
        let long = "n".repeat(101);
        for (form, fields, status, marker) in [
            ("credits", vec![("sms", "lots")], 400, "id=\"sms-error\""),
            ("credits", vec![("sms", "5"), ("note", long.as_str())], 400, "id=\"note-error\""),
            ("credits", vec![("sms", "0"), ("phone", "")], 400, "role=\"alert\""),
            ("credits", vec![("sms", "-11")], 409, "A balance cannot go below zero"),
            ("limits", vec![("max_rps", "-1")], 400, "id=\"max_rps-error\""),
            ("limits", vec![("daily_spend_cap", "1.5")], 400, "id=\"daily_spend_cap-error\""),
            ("keys", vec![("label", long.as_str())], 400, "id=\"label-error\""),
            ("users", vec![("email", "not an email"), ("password", "another long password")], 400, "id=\"email-error\""),
            ("users", vec![("email", "cy@example.com"), ("password", "short")], 400, "id=\"password-error\""),
        ] {
            let (got, html) = post(&app, &session, &format!("{path}/{form}"), &page, &fields).await;
            assert_eq!(got, status, "{form} {fields:?}: {html}");
            assert!(html.contains(marker), "{form} {fields:?}: {html}");
            assert!(html.contains("aria-invalid=\"true\"") || marker.contains("alert") || marker.contains("balance"), "{html}");
        }
        // What was typed comes back in its field, escaped; a password never does.
        for (form, fields, typed) in [
            ("credits", vec![("sms", "lots<b>"), ("note", "invoice \"7\"")], vec!["value=\"lots&lt;b&gt;\"", "value=\"invoice &quot;7&quot;\""]),
            ("limits", vec![("max_rps", "-1")], vec!["value=\"-1\""]),
            ("keys", vec![("label", long.as_str())], vec![&format!("value=\"{long}\"")[..]]),
            ("users", vec![("email", "not an email"), ("password", "another long password")], vec!["value=\"not an email\""]),
        ] {
            let (got, html) = post(&app, &session, &format!("{path}/{form}"), &page, &fields).await;
            assert_eq!(got, 400, "{form} {fields:?}: {html}");
            for t in typed {
                assert!(html.contains(t), "{form}: {t} not typed back in {html}");
            }
            assert!(!html.contains("lots<b>") && !html.contains("another long password"), "{html}");
        }
        let account = app.store.account(other).await.unwrap().unwrap();
        assert_eq!((account.sms_credits, account.phone_credits), (10, 0));
        assert_eq!(app.store.ledger(other).await.unwrap(), ledger);
        assert_eq!(app.store.account_limits(other).await.unwrap().unwrap().max_rps, None);
        assert_eq!(app.store.list_keys(Some(other)).await.unwrap().len(), 1);
        assert!(app.store.list_users(Some(other)).await.unwrap().is_empty());
        // A blank account name, and a taken one, create nothing.
        let (_, list) = get(&app, &session, "/console/ops/accounts").await;
        let before = app.store.list_accounts().await.unwrap().len();
        let (status, html) = post(&app, &session, "/console/ops/accounts", &list, &[("name", "  ")]).await;
        assert_eq!(status, 400);
        assert!(html.contains("id=\"name-error\""), "{html}");
        let (status, html) = post(&app, &session, "/console/ops/accounts", &list, &[("name", "other")]).await;
        assert_eq!(status, 409);
        assert!(html.contains("id=\"name-error\""), "{html}");
        let (status, html) = post(&app, &session, "/console/ops/accounts", &list, &[("name", "new"), ("sms_credits", "-4")]).await;
        assert_eq!(status, 400);
        assert!(html.contains("id=\"sms_credits-error\""), "{html}");
        assert_eq!(app.store.list_accounts().await.unwrap().len(), before);
        // A good one is made, with its first key shown once.
        let (status, html) = post(&app, &session, "/console/ops/accounts", &list, &[("name", "new"), ("sms_credits", "4")]).await;
        assert_eq!(status, 201);
        assert!(html.contains("id=\"new-key\""), "{html}");
        let made = app.store.account_by_name("new").await.unwrap().unwrap();
        assert_eq!(made.sms_credits, 4);
    }

    async fn an_operator_disables_and_enables_an_account_from_its_page(app) {
        let session = operator_login(&app).await;
        let (other, key) = app.new_account("other", 10, 0).await;
        add_user(&app, other, "bo@example.com", PASSWORD).await;
        let (status, user_session) = console_login_as(&app, "bo@example.com").await;
        assert_eq!(status, 303);
        assert_eq!(get(&app, &user_session, "/console/").await.0, 200);
        let path = format!("/console/ops/accounts/{other}");
        let (_, page) = get(&app, &session, &path).await;
        assert!(page.contains("id=\"account-state\">Enabled."), "{page}");
        let (status, _) = post(&app, &session, &format!("{path}/disable"), &page, &[]).await;
        assert_eq!(status, 303);
        assert!(app.store.account(other).await.unwrap().unwrap().disabled_at.is_some());
        let r = app.send_as(&key, &text_send("9851023212")).await;
        assert_eq!(r.status(), 403, "the account's key is refused");
        let (_, page) = get(&app, &session, &path).await;
        assert!(page.contains("Disabled since") && page.contains("Enable account"), "{page}");
        let (_, list) = get(&app, &session, "/console/ops/accounts").await;
        assert!(list.contains(">disabled</span>"), "{list}");
        // The account's user is out: its session no longer opens a page, and
        // logging in again is refused with the reason.
        let r = client().get(app.url("/console/")).header(COOKIE, &user_session).send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert!(r.headers()[LOCATION].to_str().unwrap().contains("/console/login"));
        let (status, html) = console_login_as(&app, "bo@example.com").await;
        assert_eq!(status, 403, "{html}");
        assert!(html.contains("disabled"), "{html}");
        // Without the CSRF token nothing changes.
        let r = client().post(app.url(&format!("{path}/enable"))).header(COOKIE, &session).form(&[("csrf", "forged")]).send().await.unwrap();
        assert_ne!(r.status().as_u16(), 303);
        assert!(app.store.account(other).await.unwrap().unwrap().disabled_at.is_some());
        let (status, _) = post(&app, &session, &format!("{path}/enable"), &page, &[]).await;
        assert_eq!(status, 303);
        assert_eq!(app.send_as(&key, &text_send("9851023212")).await.status(), 200);
        // An unknown account is a 404 and changes nothing.
        let (status, _) = post(&app, &session, "/console/ops/accounts/999999/disable", &page, &[]).await;
        assert_eq!(status, 404);
    }

    async fn the_admin_token_opens_an_operator_session_that_logout_ends_on_the_server(app) {
        let c = client();
        let form = c.get(app.url("/console/ops/login")).send().await.unwrap();
        let (login_cookie, _) = set_cookie(&form, "otpgate_console_login").unwrap();
        let csrf = csrf_in(&form.text().await.unwrap());
        let try_token = |token: &'static str| {
            c.post(app.url("/console/ops/login"))
                .header(COOKIE, &login_cookie)
                .form(&[("csrf", csrf.as_str()), ("token", token)])
                .send()
        };
        let r = try_token("not-the-admin-token").await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(set_cookie(&r, "otpgate_operator").is_none());
        let r = try_token(ADMIN_TOKEN).await.unwrap();
        assert_eq!(r.status(), 303);
        let (session, whole) = set_cookie(&r, "otpgate_operator").unwrap();
        assert!(whole.contains("HttpOnly") && whole.contains("SameSite=Strict"), "{whole}");
        assert!(!whole.contains(ADMIN_TOKEN), "the token itself is never the cookie");
        let (status, page) = get(&app, &session, "/console/ops/accounts").await;
        assert_eq!(status, 200);
        assert!(page.contains("Operator: admin token"), "{page}");
        // Without the form's token, logout is refused; with it, the session ends.
        let r = c.post(app.url("/console/ops/logout")).header(COOKIE, &session).form(&[("csrf", "x")]).send().await.unwrap();
        assert_eq!(r.status(), 403);
        let (status, _) = post(&app, &session, "/console/ops/logout", &page, &[]).await;
        assert_eq!(status, 303);
        let r = c.get(app.url("/console/ops/accounts")).header(COOKIE, &session).send().await.unwrap();
        assert_eq!(r.status(), 303, "the old cookie opens nothing");
        assert_eq!(r.headers()[LOCATION], "/console/ops/login");
    }

    async fn the_operators_log_shows_every_accounts_otps_newest_first(app) {
        let session = operator_login(&app).await;
        let (_, other_key) = app.new_account("other", 10, 0).await;
        let id = |v: Value| v["data"]["details"]["id"].as_i64().unwrap();
        let ours = id(app.send_ok(&text_send("9851023212")).await);
        let theirs: Value = app.send_as(&other_key, &text_send("9851023213")).await.json().await.unwrap();
        let theirs = id(theirs);
        let links = |html: &str| -> Vec<i64> {
            html.split("href=\"/console/ops/otps/")
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
                .collect()
        };
        for (query, expected) in [
            (String::new(), vec![theirs, ours]),
            ("?number=9851023212".to_owned(), vec![ours]),
            (format!("?id={theirs}"), vec![theirs]),
            ("?status=verified".to_owned(), vec![]),
            (format!("?before={theirs}"), vec![ours]),
        ] {
            let (status, html) = get(&app, &session, &format!("/console/ops/otps{query}")).await;
            assert_eq!(status, 200, "{query}");
            assert_eq!(links(&html), expected, "{query}");
        }
        for (query, marker) in [("number=abc", "id=\"number-error\""), ("id=-1", "id=\"id-error\""), ("status=lost", "id=\"status-error\"")] {
            let (status, html) = get(&app, &session, &format!("/console/ops/otps?{query}")).await;
            assert_eq!(status, 400, "{query}");
            assert!(html.contains(marker) && links(&html).is_empty(), "{query}: {html}");
        }
        let (status, html) = get(&app, &session, &format!("/console/ops/otps/{theirs}")).await;
        assert_eq!(status, 200);
        assert!(html.contains("Timeline") && !html.contains("Your code is"), "{html}");
        let (status, _) = get(&app, &session, "/console/ops/otps/999999").await;
        assert_eq!(status, 404);
    }
}

for_each_backend!(
    a_route_is_paused_and_resumed_from_the_routes_page,
    operator_pages_are_served_on_the_admin_listener_only,
    an_operator_walks_the_operator_pages_in_a_real_browser,
);

async fn a_route_is_paused_and_resumed_from_the_routes_page(backend: Backend) {
    let smsc = Smsc::start(&[]);
    let route = smpp_route(smsc.port, "secret");
    let app = spawn_app_with(backend, move |c| {
        configure(c);
        c.routes = vec![route];
    })
    .await;
    wait_until("the bind", || smsc.events("bind").len() == 1).await;
    let session = operator_login(&app).await;
    let (status, page) = get(&app, &session, "/console/ops/routes").await;
    assert_eq!(status, 200);
    assert!(page.contains("data-route=\"smsc\""), "{page}");
    assert!(page.contains("data-status=\"bound\""), "{page}");
    assert!(
        page.contains("data-live=\"/console/ops/routes/live\""),
        "{page}"
    );
    let (status, _) = post(&app, &session, "/console/ops/routes/smsc/pause", &page, &[]).await;
    assert_eq!(status, 303);
    assert_eq!(app.state.runtime.routes()[0].state, "paused");
    let (_, live) = get(&app, &session, "/console/ops/routes/live").await;
    assert!(
        live.contains("chip-paused") && live.contains("/console/ops/routes/smsc/resume"),
        "{live}"
    );
    assert!(!live.contains("<html"), "the live part is a fragment");
    let (status, _) = post(
        &app,
        &session,
        "/console/ops/routes/nosuch/pause",
        &page,
        &[],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &app,
        &session,
        "/console/ops/routes/smsc/resume",
        &page,
        &[],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(app.state.runtime.routes()[0].state, "active");
    // A message goes out, and the page counts it.
    app.send_ok(&text_send("9851023212")).await;
    smsc.accepted_at_least(1).await;
    let (_, live) = get(&app, &session, "/console/ops/routes/live").await;
    assert!(live.contains("<dt>Submitted</dt><dd>1</dd>"), "{live}");
    app.stop().await;
}

async fn operator_pages_are_served_on_the_admin_listener_only(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(backend, &dir).await;
    let mut config = crate::helpers::test_config(&url, &dir);
    configure(&mut config);
    config.admin_listen = Some("127.0.0.1:0".into());
    let app = otpgate::startup::Application::build(config).await.unwrap();
    let public = format!("http://{}", app.local_addr());
    let admin = format!("http://{}", app.admin_addr().expect("an admin listener"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let c = client();
    for path in [
        "/console/ops/login",
        "/console/ops/accounts",
        "/console/ops/routes",
    ] {
        let r = c.get(format!("{public}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} on the public listener");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["success"], false, "{body}");
    }
    let r = c
        .get(format!("{admin}/console/ops/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Admin token"));
    // The account pages stay on the public listener.
    let r = c
        .get(format!("{public}/console/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = tx.send(());
    running.await.unwrap().unwrap();
}

/// In Chromium: an account user is refused an operator page; the operator
/// tops up an account and sees the balance move (and a bad amount shown next
/// to its field), sees the route go down when the SMSC stops and come back
/// when it restarts; axe-core on each page at 360 px wide.
async fn an_operator_walks_the_operator_pages_in_a_real_browser(backend: Backend) {
    let mut smsc = Smsc::start(&[]);
    let port = smsc.port;
    let route = smpp_route(port, "secret");
    let app = spawn_app_with(backend, move |c| {
        configure(c);
        c.routes = vec![route];
    })
    .await;
    wait_until("the bind", || smsc.events("bind").len() == 1).await;
    let operator = add_user(&app, app.account_id, "op@example.com", PASSWORD).await;
    app.store.set_operator(operator, true).await.unwrap();
    let (other, other_key) = app.new_account("other", 10, 0).await;
    add_user(&app, other, EMAIL, PASSWORD).await;
    app.send_as(&other_key, &text_send("9851023212")).await;

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let browser = root.join("peers/browser");
    assert!(
        browser.join("node_modules/playwright-core").exists(),
        "peers/browser is not installed: run scripts/install-test-deps.sh"
    );
    let shots =
        root.join(format!("target/console-screenshots/operator-{backend:?}").to_lowercase());
    let base = app.address.clone();
    let shots_dir = shots.clone();
    let run = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("node")
            .arg(browser.join("operator.js"))
            .env("BASE", base)
            .env("OPERATOR_EMAIL", "op@example.com")
            .env("ACCOUNT_EMAIL", EMAIL)
            .env("PASSWORD", PASSWORD)
            .env("ACCOUNT_ID", other.to_string())
            .env("ROUTE", "smsc")
            .env("SHOTS", shots_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node is not installed: run scripts/install-test-deps.sh");
        let mut stdin = child.stdin.take().unwrap();
        let mut last = String::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            match line.as_str() {
                "stop-smsc" => smsc.kill(),
                "start-smsc" => smsc = Smsc::start_on(port, &[]),
                _ => {
                    last = line;
                    continue;
                }
            }
            writeln!(stdin, "done").unwrap();
        }
        let output = child.wait_with_output().unwrap();
        (
            output.status,
            last,
            String::from_utf8_lossy(&output.stderr).into_owned(),
            smsc,
        )
    })
    .await
    .unwrap();
    let (status, last, stderr, _smsc) = run;
    assert!(status.success(), "the browser script failed: {stderr}");
    let out: Value = serde_json::from_str(&last).expect("the script prints JSON");

    assert_eq!(out["account_user_status"], 403, "{out}");
    // 10 credits less the one OTP the account sent.
    assert_eq!(out["balance_before"], 9, "{out}");
    assert!(
        !out["bad_top_up_error"].as_str().unwrap().is_empty(),
        "{out}"
    );
    assert_eq!(out["balance_after_bad"], 9, "{out}");
    assert_eq!(out["balance_after"], 34, "{out}");
    assert!(
        out["ledger_first_row"]
            .as_str()
            .unwrap()
            .contains("browser top-up"),
        "{out}"
    );
    assert_eq!(
        app.store.account(other).await.unwrap().unwrap().sms_credits,
        34
    );
    let all = |key: &str, want: &str| {
        let seen = out[key].as_array().unwrap();
        !seen.is_empty() && seen.iter().all(|s| s == want)
    };
    assert!(all("route_before", "bound"), "{out}");
    assert!(
        out["route_stopped"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s != "bound")
            && !out["route_stopped"].as_array().unwrap().is_empty(),
        "{out}"
    );
    assert!(all("route_restarted", "bound"), "{out}");
    assert_eq!(out["rate_chart"], true, "{out}");
    assert!(
        !out["all_otp_links"].as_array().unwrap().is_empty(),
        "{out}"
    );
    assert_eq!(
        out["anonymous_redirected_to"], "/console/ops/login",
        "{out}"
    );
    for name in [
        "ops-login",
        "ops-refused",
        "ops-accounts",
        "ops-account",
        "ops-account-bad-top-up",
        "ops-routes",
        "ops-otps",
        "ops-otp",
    ] {
        let page = &out["pages"][name];
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
