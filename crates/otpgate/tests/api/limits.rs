//! Abuse protection: per-number send limits, on both stores and across two nodes
//! sharing one PostgreSQL database, the destination rules and `Idempotency-Key`.

use otpgate::config::{Config, LimitsConfig};
use otpgate::startup::Application;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::helpers::{Backend, TestApp, spawn_app_with, text_send};

const NUMBER: &str = "9851023212";

/// An app whose per-number limits are `limits`, and the configuration it runs with.
async fn app_with(backend: Backend, limits: LimitsConfig) -> (TestApp, Config) {
    let mut seen = None;
    let app = spawn_app_with(backend, |c| {
        c.limits = limits;
        seen = Some(c.clone());
    })
    .await;
    (app, seen.expect("the tweak ran"))
}

fn window_only(max: u32) -> LimitsConfig {
    LimitsConfig {
        per_number_max: max,
        per_number_window_seconds: 600,
        per_number_cooldown_seconds: 0,
        ..LimitsConfig::default()
    }
}

/// The status, the `Retry-After` header and the body of a send.
async fn send_as(app: &TestApp, key: &str, number: &str) -> (u16, Option<u64>, Value) {
    reply(app.send_as(key, &text_send(number)).await).await
}

async fn reply(r: reqwest::Response) -> (u16, Option<u64>, Value) {
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    (status, retry_after, r.json().await.unwrap())
}

/// `count` sends to one number at once, spread over `urls`; the statuses.
async fn simultaneous(
    client: &reqwest::Client,
    urls: &[String],
    key: &str,
    count: usize,
) -> Vec<u16> {
    let sends: Vec<_> = (0..count)
        .map(|i| {
            let request = client
                .post(&urls[i % urls.len()])
                .bearer_auth(key)
                .json(&text_send(NUMBER));
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for s in sends {
        statuses.push(s.await.unwrap());
    }
    statuses
}

async fn the_sixth_send_within_the_window_is_429_with_retry_after_and_nothing_charged(
    backend: Backend,
) {
    let (app, _) = app_with(backend, window_only(5)).await;
    for _ in 0..5 {
        app.send_ok(&text_send(NUMBER)).await;
    }
    let (status, retry_after, body) = send_as(&app, &app.key, NUMBER).await;
    assert_eq!(status, 429, "{body}");
    let retry_after = retry_after.expect("a Retry-After header");
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    assert_eq!(body["success"], false);
    assert_eq!(body["errors"][0]["code"], "rate_limited", "{body}");
    assert_eq!(body["errors"][0]["field"], "number");
    assert_eq!(body["data"]["retry_after"], retry_after);
    assert_eq!(
        app.balance().await,
        (95, 10),
        "the refused send cost nothing"
    );
    assert_eq!(app.otp_count().await, 5, "nothing was written");
    app.stop().await;
}

async fn a_second_send_within_the_cooldown_is_429_until_it_ends(backend: Backend) {
    let limits = LimitsConfig {
        per_number_max: 0,
        per_number_window_seconds: 600,
        per_number_cooldown_seconds: 30,
        ..LimitsConfig::default()
    };
    let (app, _) = app_with(backend, limits).await;
    app.send_ok(&text_send(NUMBER)).await;
    let (status, retry_after, body) = send_as(&app, &app.key, NUMBER).await;
    assert_eq!(status, 429, "{body}");
    assert!((1..=30).contains(&retry_after.unwrap()), "{retry_after:?}");
    assert_eq!(body["errors"][0]["code"], "cooldown", "{body}");
    assert_eq!(app.balance().await, (99, 10));
    assert_eq!(app.otp_count().await, 1);
    app.stop().await;
}

async fn other_numbers_and_other_accounts_are_limited_apart(backend: Backend) {
    let (app, _) = app_with(backend, window_only(1)).await;
    let (other_account, other_key) = app.new_account("other", 10, 0).await;
    app.send_ok(&text_send(NUMBER)).await;
    assert_eq!(send_as(&app, &app.key, NUMBER).await.0, 429);
    assert_eq!(send_as(&app, &app.key, "9801234567").await.0, 200);
    assert_eq!(send_as(&app, &other_key, NUMBER).await.0, 200);
    assert_eq!(send_as(&app, &other_key, NUMBER).await.0, 429);
    let other = app.store.account(other_account).await.unwrap().unwrap();
    assert_eq!((other.sms_credits, other.otp_count), (9, 1));
    app.stop().await;
}

async fn twenty_simultaneous_sends_to_one_number_with_a_limit_of_five_accept_five(
    backend: Backend,
) {
    let (app, _) = app_with(backend, window_only(5)).await;
    let url = app.url("/api/v1/auths/send/otp/");
    let statuses = simultaneous(&app.client, &[url], &app.key, 20).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?}"
    );
    assert_eq!(app.otp_count().await, 5);
    assert_eq!(app.balance().await, (95, 10));
    app.stop().await;
}

async fn numbers_outside_the_allowed_countries_or_under_a_denied_prefix_are_refused(
    backend: Backend,
) {
    let limits = LimitsConfig {
        denied_prefixes: vec!["+977980".into()],
        ..LimitsConfig::off()
    };
    let (app, _) = app_with(backend, limits).await;
    let (status, _, body) = send_as(&app, &app.key, "+14155552671").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "number");
    assert_eq!(body["errors"][0]["code"], "country_not_allowed", "{body}");
    let (status, _, body) = send_as(&app, &app.key, "9801234567").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["code"], "prefix_denied", "{body}");
    assert_eq!(app.otp_count().await, 0, "nothing was written");
    assert_eq!(app.balance().await, (100, 10));
    assert_eq!(send_as(&app, &app.key, NUMBER).await.0, 200);
    app.stop().await;
}

async fn an_empty_country_list_allows_every_country(backend: Backend) {
    let limits = LimitsConfig {
        allowed_countries: Vec::new(),
        ..LimitsConfig::off()
    };
    let (app, _) = app_with(backend, limits).await;
    let body = app.send_ok(&text_send("+14155552671")).await;
    assert_eq!(body["data"]["details"]["number"], "+14155552671");
    app.stop().await;
}

async fn send_with_key(app: &TestApp, key: &str, body: &Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/api/v1/auths/send/otp/"))
        .bearer_auth(&app.key)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn a_retry_with_the_same_idempotency_key_gets_the_first_reply_and_sends_nothing(
    backend: Backend,
) {
    // The cooldown is on: a retry is answered before the limits are checked.
    let (app, _) = app_with(backend, LimitsConfig::default()).await;
    let (status, first) = send_with_key(&app, "order-17", &text_send(NUMBER)).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = send_with_key(&app, "order-17", &text_send(NUMBER)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first, "the same reply, code included");
    assert_eq!(app.otp_count().await, 1);
    assert_eq!(app.balance().await, (99, 10));

    let mut other = text_send(NUMBER);
    other["message"] = "Another {otp}".into();
    let (status, body) = send_with_key(&app, "order-17", &other).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["errors"][0]["code"], "idempotency_key_reused",
        "{body}"
    );
    assert_eq!(app.otp_count().await, 1, "nothing was written");
    app.stop().await;
}

async fn simultaneous_requests_under_one_idempotency_key_send_one_otp(backend: Backend) {
    let (app, _) = app_with(backend, LimitsConfig::off()).await;
    let sends: Vec<_> = (0..10)
        .map(|_| {
            let request = app
                .client
                .post(app.url("/api/v1/auths/send/otp/"))
                .bearer_auth(&app.key)
                .header("Idempotency-Key", "one-and-only")
                .json(&text_send(NUMBER));
            tokio::spawn(async move {
                let r = request.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut ids = Vec::new();
    for s in sends {
        let (status, body) = s.await.unwrap();
        assert_eq!(status, 200, "{body}");
        ids.push(body["data"]["details"]["id"].as_i64().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every reply names the one OTP");
    assert_eq!(app.otp_count().await, 1);
    assert_eq!(app.balance().await, (99, 10));
    app.stop().await;
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use crate::helpers::Backend;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(Backend::Postgres).await;
                }
            }
        )*
    };
}

on_both_backends!(
    the_sixth_send_within_the_window_is_429_with_retry_after_and_nothing_charged,
    a_second_send_within_the_cooldown_is_429_until_it_ends,
    other_numbers_and_other_accounts_are_limited_apart,
    twenty_simultaneous_sends_to_one_number_with_a_limit_of_five_accept_five,
    numbers_outside_the_allowed_countries_or_under_a_denied_prefix_are_refused,
    an_empty_country_list_allows_every_country,
    a_retry_with_the_same_idempotency_key_gets_the_first_reply_and_sends_nothing,
    simultaneous_requests_under_one_idempotency_key_send_one_otp,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_database_share_one_limit() {
    let (app, config) = app_with(Backend::Postgres, window_only(5)).await;
    // A second node: its own process state and store, the same database, keys
    // and limits.
    let second = Application::build(config)
        .await
        .expect("building the second node");
    let second_url = format!("http://{}/api/v1/auths/send/otp/", second.local_addr());
    let (stop_second, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(second.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let urls = [app.url("/api/v1/auths/send/otp/"), second_url];
    let statuses = simultaneous(&app.client, &urls, &app.key, 20).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?}"
    );
    // And one after the other, on either node.
    for url in &urls {
        let r = app
            .client
            .post(url)
            .bearer_auth(&app.key)
            .json(&text_send(NUMBER))
            .send()
            .await
            .unwrap();
        assert_eq!(reply(r).await.0, 429);
    }
    assert_eq!(app.otp_count().await, 5);

    let _ = stop_second.send(());
    running.await.unwrap().unwrap();
    app.stop().await;
}
