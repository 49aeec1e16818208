//! An account's approved templates and senders: set with the admin API or
//! the command line, checked when a send is accepted (both stores, two nodes
//! on one PostgreSQL database), and the sender on the wire at a real SMSC.

use serde_json::{Value, json};
use tokio::sync::oneshot;

use otp_domain::channel::Channel;
use otpgate::config::{Config, DriverConfig, RouteConfig};
use otpgate::delivery::http::sparrow::SparrowConfig;
use otpgate::startup::Application;

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::smsc::{Smsc, id_of, smpp_route};
use crate::users::{ADMIN_TOKEN, configure};

const APPROVED: &str = "Your ACME code is {otp}. Do not share it.";

/// Status and body of an admin call (`body` only for PUT).
async fn admin(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = app.url(path);
    let request = match method {
        "GET" => app.client.get(url),
        "DELETE" => app.client.delete(url),
        _ => app.client.put(url).json(&body.unwrap_or(json!({}))),
    };
    let r = request.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn saying(message: &str) -> Value {
    json!({"number": "9851023212", "message": message, "sms_send_options": "text"})
}

/// Status and body of a send of `message` with `key`.
async fn send(app: &TestApp, key: &str, message: &str) -> (u16, Value) {
    let r = app.send_as(key, &saying(message)).await;
    (r.status().as_u16(), r.json().await.unwrap())
}

fn texts(body: &Value) -> Vec<&str> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect()
}

/// The 400 a send outside the approved templates gets, and that it changed
/// nothing: no OTP, no credit.
async fn assert_refused(app: &TestApp, key: &str, message: &str) {
    let (account, otps) = {
        let a = app.store.account(app.account_id).await.unwrap().unwrap();
        (a.sms_credits, a.otp_count)
    };
    let (status, body) = send(app, key, message).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["errors"][0]["field"], "message", "{body}");
    assert_eq!(body["errors"][0]["code"], "template_not_approved", "{body}");
    let a = app.store.account(app.account_id).await.unwrap().unwrap();
    assert_eq!(
        (a.sms_credits, a.otp_count),
        (account, otps),
        "nothing charged or written"
    );
}

for_each_backend! {
    config: configure;

    async fn an_account_with_approved_templates_sends_only_those_texts_whitespace_aside(app) {
        let path = format!("/admin/v1/accounts/{}/templates/", app.account_id);
        let (status, body) = admin(&app, "GET", &path, None).await;
        assert_eq!((status, texts(&body).len()), (200, 0), "{body}");
        let (status, body) = send(&app, &app.key, "Anything goes: {otp}").await;
        assert_eq!(status, 200, "no templates: any text: {body}");

        let (status, body) = admin(&app, "PUT", &path,
            Some(json!({"templates": ["Your  ACME code is {otp}.\nDo not share it. ", APPROVED]}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(texts(&body), [APPROVED], "kept normalized, repeats once");

        let (status, body) = admin(&app, "PUT", &path,
            Some(json!({"templates": [APPROVED, "Call us, no code"]}))).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["field"], "templates[1]", "{body}");
        let (_, body) = admin(&app, "GET", &path, None).await;
        assert_eq!(texts(&body), [APPROVED], "a refused change changes nothing");

        let (status, body) = send(&app, &app.key, "  Your ACME code is\t{otp}.\r\n\r\nDo not  share it.").await;
        assert_eq!(status, 200, "approved text with other whitespace: {body}");
        assert_refused(&app, &app.key, "Your bank needs this to unlock your card: {otp}").await;
        assert_refused(&app, &app.key, "your ACME code is {otp}. Do not share it.").await;
        assert!(app.metrics_text().await.contains("outcome=\"template_not_approved\""));

        let (_, other_key) = app.new_account("other", 10, 0).await;
        let (status, body) = send(&app, &other_key, "Anything goes: {otp}").await;
        assert_eq!(status, 200, "another account is not restricted: {body}");

        let (status, body) = admin(&app, "DELETE", &path, None).await;
        assert_eq!((status, texts(&body).len()), (200, 0), "{body}");
        let (status, body) = send(&app, &app.key, "Anything goes: {otp}").await;
        assert_eq!(status, 200, "no templates: any text again: {body}");
        let (status, _) = admin(&app, "GET", "/admin/v1/accounts/999999/templates/", None).await;
        assert_eq!(status, 404);
    }
}

for_each_backend! {
    config: configure;

    async fn simultaneous_sends_are_each_checked_against_the_templates_and_only_approved_ones_pay(app) {
        let path = format!("/admin/v1/accounts/{}/templates/", app.account_id);
        admin(&app, "PUT", &path, Some(json!({"templates": [APPROVED]}))).await;
        let before = app.balance().await.0;
        let sends = (0..20).map(|i| {
            let message = if i % 2 == 0 { APPROVED } else { "Unlock your card: {otp}" };
            let request = app.client.post(app.url("/api/v1/auths/send/otp/"))
                .bearer_auth(&app.key)
                .json(&saying(message));
            async move { (message, request.send().await.unwrap().status().as_u16()) }
        });
        let results = futures_util::future::join_all(sends).await;
        for (message, status) in &results {
            let expected = if *message == APPROVED { 200 } else { 400 };
            assert_eq!(*status, expected, "{message}: {results:?}");
        }
        assert_eq!(app.balance().await.0, before - 10, "only the approved sends were charged");
        assert_eq!(app.otp_count().await, 10);
    }
}

/// A `sparrow` route (it takes a sender; nothing is connected at start) and
/// a `log` route (it takes none).
fn routes(c: &mut Config) {
    configure(c);
    c.routes = vec![
        RouteConfig {
            name: "sparrow".into(),
            channel: Channel::Text,
            prefixes: vec!["+1".into()],
            driver: DriverConfig::Sparrow(SparrowConfig::new("token", "OTPGATE")),
            weight: None,
        },
        RouteConfig {
            name: "logged".into(),
            channel: Channel::Text,
            prefixes: Vec::new(),
            driver: DriverConfig::Log { log_path: None },
            weight: None,
        },
    ];
}

for_each_backend! {
    config: routes;

    async fn a_sender_is_set_only_on_a_configured_route_that_takes_one(app) {
        let path = |route: &str| format!("/admin/v1/accounts/{}/senders/{route}/", app.account_id);
        let (status, body) = admin(&app, "PUT", &path("nowhere"), Some(json!({"sender": "ACME"}))).await;
        assert_eq!((status, body["success"].clone()), (404, json!(false)), "{body}");
        let (status, body) = admin(&app, "PUT", &path("logged"), Some(json!({"sender": "ACME"}))).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["code"], "sender_not_supported");
        for bad in ["ACME-BANK", "ABCDEFGHIJKL", "9779841234567890", "", "AC ME"] {
            let (status, body) = admin(&app, "PUT", &path("sparrow"), Some(json!({"sender": bad}))).await;
            assert_eq!(status, 400, "{bad:?}: {body}");
            assert_eq!(body["errors"][0]["field"], "sender", "{bad:?}: {body}");
        }
        let listed = format!("/admin/v1/accounts/{}/senders/", app.account_id);
        let (_, body) = admin(&app, "GET", &listed, None).await;
        assert_eq!(body["data"], json!([]), "nothing was stored for the refusals");

        let (status, body) = admin(&app, "PUT", &path("sparrow"), Some(json!({"sender": "ACME"}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["data"]["route"].as_str(), body["data"]["sender"].as_str()), (Some("sparrow"), Some("ACME")));
        let (_, body) = admin(&app, "GET", &listed, None).await;
        assert_eq!(body["data"][0]["sender"], "ACME");
        let (status, body) = admin(&app, "DELETE", &path("sparrow"), None).await;
        assert_eq!((status, body["data"].clone()), (200, json!([])), "{body}");
        let (status, _) = admin(&app, "DELETE", &path("sparrow"), None).await;
        assert_eq!(status, 404, "no sender left to remove");
    }
}

async fn the_accounts_sender_is_the_source_addr_the_smsc_receives(backend: Backend) {
    let smsc = Smsc::start(&["--receipts", "delivered"]);
    let route = smpp_route(smsc.port, "secret");
    let app = spawn_app_with(backend, move |c| {
        configure(c);
        c.routes = vec![route];
    })
    .await;
    let path = format!("/admin/v1/accounts/{}/senders/smsc/", app.account_id);
    let (status, body) = admin(&app, "PUT", &path, Some(json!({"sender": "ACME"}))).await;
    assert_eq!(status, 200, "{body}");
    let (_, other_key) = app.new_account("other", 10, 0).await;

    let (_, mine) = send(&app, &app.key, "ACME code {otp}").await;
    app.wait_for_status(id_of(&mine), "delivered").await;
    let submits = smsc.accepted_at_least(1).await;
    assert_eq!(submits[0]["source"], "ACME", "{:?}", submits[0]);
    assert_eq!(
        (
            submits[0]["source_ton"].as_u64(),
            submits[0]["source_npi"].as_u64()
        ),
        (Some(5), Some(0)),
        "an alphanumeric sender"
    );

    let (status, body) = send(&app, &other_key, "Other code {otp}").await;
    assert_eq!(status, 200, "{body}");
    let submits = smsc.accepted_at_least(2).await;
    assert_eq!(
        submits[1]["source"], "otpgate",
        "the route's own sender for the other account"
    );
}

mod the_accounts_sender_is_the_source_addr_the_smsc_receives {
    crate::for_each_backend!(@pair sqlite, postgres, |backend| {
        super::the_accounts_sender_is_the_source_addr_the_smsc_receives(backend).await
    });
}

/// A second node on the test app's database: its send URL, and how to stop it.
async fn second_node(config: Config) -> (String, oneshot::Sender<()>) {
    let node = Application::build(config)
        .await
        .expect("building the second node");
    let url = format!("http://{}/api/v1/auths/send/otp/", node.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(node.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_set_on_one_node_bind_sends_on_another_at_once() {
    let mut seen = None;
    let app = spawn_app_with(Backend::Postgres, |c| {
        configure(c);
        seen = Some(c.clone());
    })
    .await;
    let (other_url, stop) = second_node(seen.expect("the tweak ran")).await;
    let send_b = |message: &'static str| {
        let request = app
            .client
            .post(&other_url)
            .bearer_auth(&app.key)
            .json(&saying(message));
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let path = format!("/admin/v1/accounts/{}/templates/", app.account_id);
    let (status, _) = admin(&app, "PUT", &path, Some(json!({"templates": [APPROVED]}))).await;
    assert_eq!(status, 200);
    let (status, body) = send_b("Phishing text {otp}").await;
    assert_eq!(status, 400, "the other node refuses at once: {body}");
    assert_eq!(body["errors"][0]["code"], "template_not_approved");
    let (status, body) = send_b(APPROVED).await;
    assert_eq!(status, 200, "{body}");
    admin(&app, "DELETE", &path, None).await;
    let (status, body) = send_b("Phishing text {otp}").await;
    assert_eq!(status, 200, "a removal is seen at once too: {body}");
    assert_eq!(app.otp_count().await, 2);
    let _ = stop.send(());
}

/// `otpgate ARGS --database-url DB` (and `--config CONFIG`): its stdout when
/// it succeeds, its stderr as the error when it does not.
fn cli(args: &[&str], db: &str, config: Option<&std::path::Path>) -> Result<String, String> {
    let mut command = crate::durability::otpgate();
    command.args(args).args(["--database-url", db]);
    if let Some(c) = config {
        command.arg("--config").arg(c);
    }
    let out = command.output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const ROUTES_TOML: &str = r#"
[[routes]]
name = "sparrow"
channel = "text"
prefixes = ["+1"]
driver = "sparrow"
[routes.sparrow]
token = "token"
sender = "OTPGATE"

[[routes]]
name = "logged"
channel = "text"
driver = "log"
"#;

async fn templates_and_senders_from_the_command_line(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::helpers::database_url(backend, &dir).await;
    cli(&["migrate"], &db, None).unwrap();
    let (_, key) = crate::durability::create_account(&db, "shop", 5);
    let out = cli(
        &["templates", "add", "shop", "Shop  code:\n{otp}"],
        &db,
        None,
    )
    .unwrap();
    assert!(out.contains("Shop code: {otp}"), "{out}");
    let refused = cli(&["templates", "add", "shop", "no code here"], &db, None).unwrap_err();
    assert!(refused.contains("{otp}"), "{refused}");
    let list: Value =
        serde_json::from_str(&cli(&["templates", "list", "shop", "--json"], &db, None).unwrap())
            .unwrap();
    assert_eq!(list["templates"], json!(["Shop code: {otp}"]));

    let (mut server, base) = crate::durability::start_server(&db, dir.path());
    let client = reqwest::Client::new();
    let send = |message: &'static str| {
        let request = client
            .post(format!("{base}/api/v1/auths/send/otp/"))
            .bearer_auth(&key)
            .json(&saying(message));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send("Your bank: {otp}").await, 400);
    assert_eq!(send(" Shop code: {otp}").await, 200);
    cli(
        &["templates", "remove", "shop", "Shop code:  {otp}"],
        &db,
        None,
    )
    .unwrap();
    assert_eq!(send("Your bank: {otp}").await, 200, "removed: any text");
    server.kill().unwrap();

    let config = dir.path().join("otpgate.toml");
    std::fs::write(&config, ROUTES_TOML).unwrap();
    let config = Some(config.as_path());
    let set = cli(&["senders", "set", "shop", "sparrow", "SHOP"], &db, config).unwrap();
    assert!(set.contains("SHOP"), "{set}");
    for (route, sender) in [
        ("logged", "SHOP"),
        ("nowhere", "SHOP"),
        ("sparrow", "SHOP-1"),
    ] {
        let refused = cli(&["senders", "set", "shop", route, sender], &db, config);
        assert!(refused.is_err(), "{route} {sender}: {refused:?}");
    }
    let list: Value =
        serde_json::from_str(&cli(&["senders", "list", "shop", "--json"], &db, None).unwrap())
            .unwrap();
    assert_eq!(
        list["senders"],
        json!([{"route": "sparrow", "sender": "SHOP"}])
    );
    cli(&["senders", "remove", "shop", "sparrow"], &db, None).unwrap();
    assert!(cli(&["senders", "remove", "shop", "sparrow"], &db, None).is_err());
}

mod templates_and_senders_from_the_command_line {
    crate::for_each_backend!(@pair sqlite, postgres, |backend| {
        super::templates_and_senders_from_the_command_line(backend).await
    });
}
