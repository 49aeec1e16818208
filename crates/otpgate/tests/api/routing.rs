//! Routes chosen by how well they deliver: weights share the messages, a
//! route whose receipts turn `UNDELIV` is demoted to probes within a bounded
//! number of messages and promoted again once its probes deliver, and two
//! nodes on one PostgreSQL database see the same demotion. Real node-smpp
//! SMSCs (`peers/smsc/smsc.js --commands`), switched while the test runs.

use std::collections::HashMap;
use std::time::Duration;

use otpgate::config::{Config, RouteConfig, RoutingConfig};
use otpgate::startup::Application;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, spawn_app_with, text_send};
use crate::smsc::{Smsc, id_of, smpp_route};
use crate::users::ADMIN_TOKEN;

/// Windows small enough for a test: 20 results, judged from 10, probes at
/// 20%, measured every 100 ms.
fn quick() -> RoutingConfig {
    RoutingConfig {
        window: 20,
        min_results: 10,
        probe_percent: 20,
        refresh_ms: 100,
        ..RoutingConfig::default()
    }
}

fn route(name: &str, smsc: &Smsc, weight: u32) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        weight: Some(weight),
        ..smpp_route(smsc.port, "secret")
    }
}

/// The app with `routes` and `routing`, the admin API on; and its
/// configuration, for a second node.
async fn app_with(
    backend: Backend,
    routes: Vec<RouteConfig>,
    routing: RoutingConfig,
) -> (TestApp, Config) {
    let mut seen = None;
    let app = spawn_app_with(backend, |c| {
        crate::users::configure(c);
        c.routes = routes;
        c.routing = routing;
        seen = Some(c.clone());
    })
    .await;
    // Room for a few hundred sends.
    app.store
        .add_credits(app.account_id, 1000, 0, "routing tests")
        .await
        .unwrap();
    (app, seen.expect("the tweak ran"))
}

/// `GET /admin/v1/routes/` at `base`: each route's view by name.
async fn routes_at(client: &reqwest::Client, base: &str) -> HashMap<String, Value> {
    let body: Value = client
        .get(format!("{base}/admin/v1/routes/"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"]
        .as_array()
        .expect("a list of routes")
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

/// Polls the routes view at `base` until `ready` holds of it.
async fn until_routes(
    client: &reqwest::Client,
    base: &str,
    what: &str,
    ready: impl Fn(&HashMap<String, Value>) -> bool,
) -> HashMap<String, Value> {
    for _ in 0..400 {
        let routes = routes_at(client, base).await;
        if ready(&routes) {
            return routes;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "timed out waiting for {what}: {:?}",
        routes_at(client, base).await
    );
}

/// Waits until every SMPP bind of the app is up, so that no route is passed
/// over for being down.
async fn until_bound(app: &TestApp, binds: usize) {
    crate::smsc::wait_until("every route bound", || {
        let health: Vec<_> = app
            .state
            .drivers
            .iter()
            .flat_map(|(_, d)| d.health())
            .collect();
        health.len() == binds && health.iter().all(|h| h.status == "bound")
    })
    .await;
}

/// What the routes did with the OTPs sent so far.
#[derive(Default)]
struct Tally {
    /// Each finished OTP's route, oldest first.
    routes: Vec<String>,
    /// OTPs sent.
    sent: usize,
}

impl Tally {
    /// Sends `n` OTPs one after the other and waits until each has its
    /// receipt; the routes that took them, in order.
    async fn send(&mut self, app: &TestApp, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..n {
            // A number each, so no send is a resend: on PostgreSQL a resend
            // locks its first record before the account, and a batch of
            // receipts that refunds one OTP, then reaches that record, can
            // deadlock with it (a store issue this test is not about).
            let number = format!("98510{:05}", self.sent);
            self.sent += 1;
            ids.push(id_of(&app.send_ok(&text_send(&number)).await));
        }
        let mut taken = Vec::new();
        for id in ids {
            let otp = app
                .wait_for_any_status(id, &["delivered", "undeliverable"])
                .await;
            taken.push(otp.route.expect("a finished OTP has its route"));
        }
        self.routes.extend(taken.iter().cloned());
        taken
    }

    /// How many of `route`'s finished OTPs its window of `window` holds.
    fn measured(&self, route: &str, window: usize) -> u64 {
        self.routes
            .iter()
            .filter(|r| *r == route)
            .count()
            .min(window) as u64
    }

    /// Waits until the view at `base` has measured everything sent so far.
    async fn until_measured(&self, client: &reqwest::Client, base: &str) -> HashMap<String, Value> {
        until_routes(client, base, "the windows to take the sends in", |v| {
            ["primary", "backup"]
                .iter()
                .all(|r| v[*r]["measured"].as_u64() == Some(self.measured(r, 20)))
        })
        .await
    }
}

fn count(routes: &[String], name: &str) -> usize {
    routes.iter().filter(|r| *r == name).count()
}

async fn weights_three_to_one_send_three_messages_to_the_first_route_for_each_to_the_second(
    backend: Backend,
) {
    let heavy = Smsc::start(&["--receipts", "delivered"]);
    let light = Smsc::start(&["--receipts", "delivered"]);
    let routes = vec![route("primary", &heavy, 3), route("backup", &light, 1)];
    let (app, _) = app_with(backend, routes, RoutingConfig::default()).await;
    until_bound(&app, 2).await;
    let taken = Tally::default().send(&app, 40).await;
    assert_eq!(
        (count(&taken, "primary"), count(&taken, "backup")),
        (30, 10)
    );
    assert_eq!(heavy.accepted_at_least(30).await.len(), 30);
    assert_eq!(light.accepted_at_least(10).await.len(), 10);
    let view = routes_at(&app.client, &app.address).await;
    assert_eq!(view["primary"]["weight"], 3);
    assert_eq!(view["backup"]["weight"], 1);
    assert_eq!(view["primary"]["demoted"], false);
    let openapi: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fields = &openapi["components"]["schemas"]["RouteView"]["properties"];
    for field in [
        "weight",
        "demoted",
        "delivery_rate",
        "measured",
        "median_receipt_seconds",
    ] {
        assert!(fields.get(field).is_some(), "{field} missing from {fields}");
    }
}

async fn traffic_leaves_a_route_answering_undeliv_and_comes_back_when_it_recovers(
    backend: Backend,
) {
    let mut failing = Smsc::start(&["--receipts", "delivered", "--commands"]);
    let healthy = Smsc::start(&["--receipts", "delivered"]);
    let routes = vec![route("primary", &failing, 1), route("backup", &healthy, 1)];
    let (app, _) = app_with(backend, routes, quick()).await;
    let base = app.address.clone();
    until_bound(&app, 2).await;
    let mut tally = Tally::default();

    // Both deliver: they share the messages evenly.
    let taken = tally.send(&app, 10).await;
    assert_eq!(count(&taken, "primary"), 5);
    let view = tally.until_measured(&app.client, &base).await;
    assert_eq!(view["primary"]["delivery_rate"], 1.0);
    assert_eq!(view["primary"]["demoted"], false);

    // The primary's receipts turn UNDELIV: demoted within 40 messages (it
    // needs 10 results in its window, half of the messages, and then a rate
    // under half the backup's).
    failing.set_receipts("undeliverable").await;
    let mut sent = 0;
    let view = loop {
        assert!(sent < 40, "still not demoted after {sent} messages");
        tally.send(&app, 5).await;
        sent += 5;
        let view = tally.until_measured(&app.client, &base).await;
        if view["primary"]["demoted"] == true {
            break view;
        }
    };
    assert!(view["primary"]["delivery_rate"].as_f64().unwrap() < 0.5);
    assert_eq!(view["backup"]["demoted"], false);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("otpgate_route_demoted{route=\"primary\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("otpgate_route_demoted{route=\"backup\"} 0"));
    assert!(metrics.contains("otpgate_route_delivery_rate{route=\"backup\"} 1"));

    // Demoted, it takes only its probes: one message in five.
    let taken = tally.send(&app, 20).await;
    assert_eq!(count(&taken, "primary"), 4, "{taken:?}");
    let view = tally.until_measured(&app.client, &base).await;
    assert_eq!(view["primary"]["demoted"], true);

    // It recovers: its probes deliver, and within 100 messages (10 good
    // probes bring its window of 20 to half) it is promoted.
    failing.set_receipts("delivered").await;
    let mut sent = 0;
    loop {
        assert!(sent < 100, "still demoted after {sent} messages");
        tally.send(&app, 10).await;
        sent += 10;
        let view = tally.until_measured(&app.client, &base).await;
        if view["primary"]["demoted"] == false {
            break;
        }
    }
    // Promoted, it takes its share again.
    let taken = tally.send(&app, 20).await;
    let primary = count(&taken, "primary");
    assert!((9..=11).contains(&primary), "{taken:?}");
}

for_each_backend!(
    weights_three_to_one_send_three_messages_to_the_first_route_for_each_to_the_second,
    traffic_leaves_a_route_answering_undeliv_and_comes_back_when_it_recovers
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_database_see_the_same_demotion() {
    let mut failing = Smsc::start(&["--receipts", "delivered", "--commands"]);
    let healthy = Smsc::start(&["--receipts", "delivered"]);
    let routes = vec![route("primary", &failing, 1), route("backup", &healthy, 1)];
    let (app, config) = app_with(Backend::Postgres, routes, quick()).await;
    // The second node: its own process state, binds and balancer, the same
    // database and routes.
    let node = Application::build(config)
        .await
        .expect("building the second node");
    let second = format!("http://{}", node.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(node.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    until_bound(&app, 2).await;

    failing.set_receipts("undeliverable").await;
    let mut tally = Tally::default();
    let mut sent = 0;
    loop {
        assert!(sent < 60, "still not demoted after {sent} messages");
        tally.send(&app, 10).await;
        sent += 10;
        let view = tally.until_measured(&app.client, &app.address).await;
        if view["primary"]["demoted"] == true {
            break;
        }
    }
    // The second node measured the same windows from the database, though
    // the first took the sends.
    let there = tally.until_measured(&app.client, &second).await;
    assert_eq!(there["primary"]["demoted"], true);
    assert_eq!(there["backup"]["demoted"], false);
    let here = routes_at(&app.client, &app.address).await;
    assert_eq!(
        there["primary"]["delivery_rate"],
        here["primary"]["delivery_rate"]
    );

    // Whichever node delivers, the demoted route takes its probes only:
    // each node's one in five.
    let taken = tally.send(&app, 20).await;
    assert!(count(&taken, "primary") <= 4, "{taken:?}");

    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// `[routing]` changes with a reload (what `SIGHUP` applies): a route that
/// delivers nothing stays in the rotation while `demote_below` is 0, and is
/// demoted once a reload puts the default rule (half the best rate) in force,
/// without a restart and with its bind kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_new_routing_settings_in_force() {
    let failing = Smsc::start(&["--receipts", "undeliverable"]);
    let healthy = Smsc::start(&["--receipts", "delivered"]);
    let routes = vec![route("primary", &failing, 1), route("backup", &healthy, 1)];
    let never = RoutingConfig {
        demote_below: 0.0,
        ..quick()
    };
    let (app, mut config) = app_with(Backend::Sqlite, routes, never).await;
    let base = app.address.clone();
    until_bound(&app, 2).await;
    let mut tally = Tally::default();
    let taken = tally.send(&app, 20).await;
    assert_eq!(count(&taken, "primary"), 10, "{taken:?}");
    let view = tally.until_measured(&app.client, &base).await;
    assert_eq!(view["primary"]["delivery_rate"], 0.0);
    assert_eq!(view["primary"]["demoted"], false, "never demoted at 0");

    config.routing = quick();
    let (kept, started, stopped) = app
        .state
        .runtime
        .apply(&config, &app.state.new_jobs, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((kept, started, stopped), (2, 0, 0));
    until_routes(&app.client, &base, "the primary demoted", |v| {
        v["primary"]["demoted"] == true
    })
    .await;
    // Demoted, it takes only its probes: one message in five.
    let taken = tally.send(&app, 20).await;
    assert_eq!(count(&taken, "primary"), 4, "{taken:?}");
    assert_eq!(failing.events("bind").len(), 1, "the route was kept");
}
