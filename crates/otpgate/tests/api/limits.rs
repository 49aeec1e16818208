//! Abuse protection: per-number send limits, on both stores and across two nodes
//! sharing one PostgreSQL database, the destination rules and `Idempotency-Key`.

use otpgate::config::{Config, LimitsConfig};
use otpgate::startup::Application;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::for_each_backend;
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
    // With a cooldown on, a retry is answered before the limits are checked.
    let limits = LimitsConfig {
        per_number_cooldown_seconds: 30,
        ..LimitsConfig::default()
    };
    let (app, _) = app_with(backend, limits).await;
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

fn rates(account_rps: u32, key_rps: u32, daily_spend_cap: i64) -> LimitsConfig {
    LimitsConfig {
        per_account_rps: account_rps,
        per_key_rps: key_rps,
        daily_spend_cap: Some(daily_spend_cap),
        ..LimitsConfig::off()
    }
}

/// A distinct valid Nepal number for each `i`, so per-number limits never play.
fn number(i: usize) -> String {
    format!("98{:08}", 10_000_000 + i)
}

/// `count` sends at once, each to its own number, spread over `urls`; the
/// replies.
/// Sends `count` requests at once, round-robin over `urls`, and again (up to
/// three rounds, to new numbers) while none was refused: on a loaded machine
/// one round may spread over more seconds than the rate allows for. The rate
/// itself is then checked from the stored times ([`assert_rate_held`]), not
/// from how fast the requests went.
async fn burst(
    client: &reqwest::Client,
    urls: &[String],
    key: &str,
    count: usize,
) -> Vec<(u16, Option<u64>, Value)> {
    let mut replies = Vec::new();
    for round in 0..3 {
        let sends: Vec<_> = (round * count..(round + 1) * count)
            .map(|i| {
                let request = client
                    .post(&urls[i % urls.len()])
                    .bearer_auth(key)
                    .json(&text_send(&number(i)));
                tokio::spawn(async move { reply(request.send().await.unwrap()).await })
            })
            .collect();
        for s in sends {
            replies.push(s.await.unwrap());
        }
        if replies.iter().any(|r| r.0 != 200) {
            break;
        }
    }
    replies
}

/// Checks the sends a rate limit let through against the limit itself: in
/// every second at most `rps` were accepted, and with the previous second
/// weighted by how much of it the last second still covers, no accepted send
/// made the estimate pass `rps`.
async fn assert_rate_held(app: &TestApp, account: i64, key_row: Option<i64>, rps: i64) {
    let mut times = created_times(app, account, key_row).await;
    times.sort_unstable();
    for (i, t) in times.iter().enumerate() {
        let second = t.div_euclid(1_000_000);
        let elapsed = t.rem_euclid(1_000_000);
        let current = times[..=i]
            .iter()
            .filter(|u| u.div_euclid(1_000_000) == second)
            .count() as i128;
        let previous = times
            .iter()
            .filter(|u| u.div_euclid(1_000_000) == second - 1)
            .count() as i128;
        let estimate = previous * i128::from(1_000_000 - elapsed) + current * 1_000_000;
        assert!(
            estimate <= i128::from(rps) * 1_000_000,
            "send {i} at {t} found {current} this second and {previous} the second before"
        );
    }
}

/// The `created_at` of the account's OTPs (those sent with one key, if named),
/// read from the database itself.
async fn created_times(app: &TestApp, account: i64, key_row: Option<i64>) -> Vec<i64> {
    let key = key_row.unwrap_or(-1);
    let query = format!(
        "SELECT created_at FROM otps WHERE account_id = {account} \
         AND ({key} = -1 OR api_key_id = {key})"
    );
    crate::helpers::sql_i64s(app, &query).await
}

fn accepted(replies: &[(u16, Option<u64>, Value)]) -> usize {
    replies.iter().filter(|r| r.0 == 200).count()
}

/// Every refusal of a burst is the rate limit named `code`, with Retry-After 1.
fn assert_refusals(replies: &[(u16, Option<u64>, Value)], code: &str) {
    let refused: Vec<_> = replies.iter().filter(|r| r.0 != 200).collect();
    assert!(!refused.is_empty(), "a burst over the rate must meet it");
    for (status, retry_after, body) in refused {
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["errors"][0]["code"], code, "{body}");
        assert_eq!(*retry_after, Some(1), "{body}");
        assert_eq!(body["data"]["retry_after"], 1, "{body}");
    }
}

async fn an_account_over_its_sends_per_second_gets_429_and_pays_nothing(backend: Backend) {
    let (app, _) = app_with(backend, rates(3, 0, 0)).await;
    let url = app.url("/api/v1/auths/send/otp/");
    let replies = burst(&app.client, &[url], &app.key, 40).await;
    assert_refusals(&replies, "account_rate_limited");
    let n = accepted(&replies);
    assert!(n >= 3, "{n}");
    assert_eq!(app.otp_count().await, n as i64);
    assert_eq!(app.balance().await, (100 - n as i64, 10));
    assert_rate_held(&app, app.account_id, None, 3).await;
    // Another account is not slowed by the first.
    let (_, other_key) = app.new_account("other", 10, 0).await;
    assert_eq!(send_as(&app, &other_key, &number(99)).await.0, 200);
    app.stop().await;
}

async fn each_api_key_has_its_own_sends_per_second(backend: Backend) {
    let (app, _) = app_with(backend, rates(0, 2, 0)).await;
    let second = otpgate::auth::issue_key(app.account_id, Some("second".into()));
    let second_row = app.store.create_key(second.record).await.unwrap();
    let url = app.url("/api/v1/auths/send/otp/");
    let replies = burst(&app.client, &[url], &app.key, 30).await;
    assert_refusals(&replies, "key_rate_limited");
    // The other key of the same account still sends.
    assert_eq!(send_as(&app, &second.plaintext, &number(99)).await.0, 200);
    let first_row = app
        .store
        .find_key(otpgate::auth::key_id_of(&app.key).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_rate_held(&app, app.account_id, Some(first_row.id), 2).await;
    assert_rate_held(&app, app.account_id, Some(second_row.id), 2).await;
    assert_eq!(app.otp_count().await, accepted(&replies) as i64 + 1);
    app.stop().await;
}

async fn the_daily_spend_cap_refuses_sends_until_the_day_ends(backend: Backend) {
    let (app, _) = app_with(backend, rates(0, 0, 3)).await;
    for i in 0..3 {
        assert_eq!(send_as(&app, &app.key, &number(i)).await.0, 200);
    }
    let (status, retry_after, body) = send_as(&app, &app.key, &number(3)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errors"][0]["code"], "daily_spend_cap", "{body}");
    let retry_after = retry_after.expect("a Retry-After header");
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    assert_eq!(
        app.balance().await,
        (97, 10),
        "the refused send cost nothing"
    );
    assert_eq!(app.otp_count().await, 3);
    let limits = app
        .store
        .account_limits(app.account_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(limits.spent, 3);

    // The account's own cap beats the configured one; 0 lifts it.
    app.store
        .set_account_limits(app.account_id, None, Some(5))
        .await
        .unwrap();
    assert_eq!(send_as(&app, &app.key, &number(4)).await.0, 200);
    assert_eq!(send_as(&app, &app.key, &number(5)).await.0, 200);
    assert_eq!(send_as(&app, &app.key, &number(6)).await.0, 429);
    app.store
        .set_account_limits(app.account_id, None, Some(0))
        .await
        .unwrap();
    assert_eq!(send_as(&app, &app.key, &number(7)).await.0, 200);
    assert!(
        app.store
            .set_account_limits(app.account_id, Some(-1), None)
            .await
            .is_err(),
        "a negative limit is refused"
    );
    app.stop().await;
}

async fn account_limits_are_set_and_shown_from_the_command_line(backend: Backend) {
    let (app, _) = app_with(backend, rates(0, 0, 0)).await;
    let run = |args: &[&str]| {
        let out = crate::durability::otpgate()
            .args(args)
            .args(["--database-url", &app.database_url])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&[
        "accounts",
        "limits",
        "acme",
        "--max-rps",
        "7",
        "--daily-spend-cap",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (shown["max_rps"].as_i64(), shown["daily_spend_cap"].as_i64()),
        (Some(7), Some(1))
    );
    assert_eq!(send_as(&app, &app.key, &number(0)).await.0, 200);
    let (status, _, body) = send_as(&app, &app.key, &number(1)).await;
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (429, Some("daily_spend_cap"))
    );

    let (ok, out, _) = run(&["accounts", "limits", "acme", "--daily-spend-cap", "default"]);
    assert!(ok);
    assert!(out.contains("max_rps 7, daily_spend_cap default"), "{out}");
    assert_eq!(send_as(&app, &app.key, &number(1)).await.0, 200);
    let (ok, _, err) = run(&["accounts", "limits", "acme", "--max-rps", "-3"]);
    assert!(!ok && err.contains("at least 0"), "{err}");
    let limits = app
        .store
        .account_limits(app.account_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((limits.max_rps, limits.daily_spend_cap), (Some(7), None));
    app.stop().await;
}

for_each_backend!(
    the_sixth_send_within_the_window_is_429_with_retry_after_and_nothing_charged,
    a_second_send_within_the_cooldown_is_429_until_it_ends,
    other_numbers_and_other_accounts_are_limited_apart,
    twenty_simultaneous_sends_to_one_number_with_a_limit_of_five_accept_five,
    numbers_outside_the_allowed_countries_or_under_a_denied_prefix_are_refused,
    an_empty_country_list_allows_every_country,
    a_retry_with_the_same_idempotency_key_gets_the_first_reply_and_sends_nothing,
    simultaneous_requests_under_one_idempotency_key_send_one_otp,
    an_account_over_its_sends_per_second_gets_429_and_pays_nothing,
    each_api_key_has_its_own_sends_per_second,
    the_daily_spend_cap_refuses_sends_until_the_day_ends,
    account_limits_are_set_and_shown_from_the_command_line,
);

/// A second node: its own process state and store, the same database, keys
/// and limits as the test's app.
struct SecondNode {
    send_url: String,
    stop: oneshot::Sender<()>,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl SecondNode {
    async fn start(config: Config) -> SecondNode {
        let node = Application::build(config)
            .await
            .expect("building the second node");
        let send_url = format!("http://{}/api/v1/auths/send/otp/", node.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(node.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        SecondNode {
            send_url,
            stop,
            running,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.running.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_database_share_one_limit() {
    let (app, config) = app_with(Backend::Postgres, window_only(5)).await;
    let second = SecondNode::start(config).await;
    let urls = [app.url("/api/v1/auths/send/otp/"), second.send_url.clone()];
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

    second.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_database_share_one_account_rate_and_spend_cap() {
    let (app, config) = app_with(Backend::Postgres, rates(4, 0, 30)).await;
    let second = SecondNode::start(config).await;
    let urls = [app.url("/api/v1/auths/send/otp/"), second.send_url.clone()];
    let replies = burst(&app.client, &urls, &app.key, 40).await;
    assert_refusals(&replies, "account_rate_limited");
    assert_rate_held(&app, app.account_id, None, 4).await;
    let n = accepted(&replies) as i64;
    assert_eq!(app.otp_count().await, n);
    assert_eq!(app.balance().await, (100 - n, 10));
    // Keep sending one at a time through both nodes until the shared cap of
    // 30 credits refuses; it must refuse at exactly 30 whichever node serves.
    let mut i = 100;
    loop {
        let r = app
            .client
            .post(&urls[i % 2])
            .bearer_auth(&app.key)
            .json(&text_send(&number(i)))
            .send()
            .await
            .unwrap();
        let (status, _, body) = reply(r).await;
        i += 1;
        match body["errors"][0]["code"].as_str() {
            _ if status == 200 => {}
            Some("account_rate_limited") => tokio::task::yield_now().await,
            Some("daily_spend_cap") => break,
            other => panic!("{status} {other:?} {body}"),
        }
        assert!(i < 10_000, "the cap never refused");
    }
    assert_eq!(app.otp_count().await, 30);
    assert_eq!(app.balance().await, (70, 10));
    second.stop().await;
    app.stop().await;
}
