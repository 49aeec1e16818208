//! The HTTP edge against hostile clients: metric labels that no request can
//! multiply, request ids that cannot forge a log line, connection caps (global
//! and per client address), the whole-request timeout, trusted proxies, the
//! admin listener and the base of `next` links. Raw TCP where reqwest would not
//! send the abuse, and client sockets bound to other loopback addresses
//! (127.0.0.2, ...) to act as other clients.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, text_send};

/// How long a test waits for an answer the server should give: generous, a
/// loaded 2-core machine runs other builds; the timeouts under test are 1-2 s.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

fn server_addr(app: &TestApp) -> SocketAddr {
    app.address.trim_start_matches("http://").parse().unwrap()
}

/// A connection to `to` from the loopback address `from` (all of 127.0.0.0/8
/// is loopback on Linux): another client, as far as the server can tell.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes the connection (a reset counts as a close).
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    let read = tokio::time::timeout(ANSWER_WITHIN, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    reply
}

/// A raw reply: its status code, its head (lowercased) and its body as JSON.
fn parse_reply(reply: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(reply);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, head.to_ascii_lowercase(), body)
}

/// `GET path` with `headers` on a fresh connection from `from`; the reply.
async fn get_from(from: &str, to: SocketAddr, path: &str, headers: &str) -> (u16, String, Value) {
    let mut stream = connect_from(from, to).await;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n{headers}\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    parse_reply(&read_to_close(&mut stream).await)
}

/// The error envelope with this status and code.
fn assert_refusal(reply: &(u16, String, Value), status: u16, code: &str) {
    let (got, head, body) = reply;
    assert_eq!(*got, status, "{head}{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Asks for `/healthz` from `from` until it answers 200 (a closed connection
/// is noticed by the server a moment after the client closes it).
async fn healthz_passes_again(from: &str, to: SocketAddr) {
    for _ in 0..200 {
        if get_from(from, to, "/healthz", "").await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{from} never got /healthz again");
}

/// Nothing was written or charged.
async fn nothing_written(app: &TestApp) {
    assert_eq!(app.otp_count().await, 0);
    assert_eq!(app.balance().await, (100, 10));
}

/// The series in a `/metrics` scrape: every line but comments, by name and labels.
async fn metric_series(app: &TestApp) -> BTreeMap<String, f64> {
    let text = app.metrics_text().await;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn random_token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| (b'A' + rng.random_range(0..26u8)) as char)
        .collect()
}

for_each_backend! {
    async fn junk_methods_and_random_paths_add_no_metric_series(app) {
        let request = |method: &str, path: &str| {
            app.client
                .request(Method::from_bytes(method.as_bytes()).unwrap(), app.url(path))
                .send()
        };
        // Every kind of request below once, so each series it touches exists.
        request("JUNK", "/healthz").await.unwrap();
        request("JUNK", "/nowhere").await.unwrap();
        request("GET", "/nowhere").await.unwrap();
        request("GET", "/api/v1/auths/otps/1/").await.unwrap();
        metric_series(&app).await;
        let before = metric_series(&app).await;

        let n = 200;
        for i in 0..n {
            // Up to 15 KB: a method token is bounded only by the header limit.
            let method = random_token(1 + (i * 7919) % 15_000);
            assert_eq!(request(&method, "/healthz").await.unwrap().status(), 405);
            let path = format!("/{}/{}", random_token(12), random_token(40));
            assert_eq!(request("GET", &path).await.unwrap().status(), 404);
            let path = format!("/api/v1/auths/otps/{}/", random_token(8));
            assert_eq!(request("GET", &path).await.unwrap().status(), 401);
        }
        let after = metric_series(&app).await;

        let names = |m: &BTreeMap<String, f64>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&before), names(&after), "the set of series changed");
        let other = "otpgate_http_requests_total{route=\"/healthz\",method=\"other\",status=\"405\"}";
        assert_eq!(after[other] - before[other], n as f64, "junk methods are counted as other");
        let unmatched = "otpgate_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}";
        assert_eq!(after[unmatched] - before[unmatched], n as f64);
        let template = "otpgate_http_requests_total{route=\"/api/v1/auths/otps/{id}/\",method=\"GET\",status=\"401\"}";
        assert_eq!(after[template] - before[template], n as f64);
    }

    async fn an_unsafe_request_id_is_replaced_by_a_generated_one(app) {
        let kept = app.client.get(app.url("/healthz")).header("x-request-id", "node-7:req_42.a").send().await.unwrap();
        assert_eq!(kept.headers()["x-request-id"], "node-7:req_42.a");
        let longest = "a".repeat(64);
        let kept = app.client.get(app.url("/healthz")).header("x-request-id", &longest).send().await.unwrap();
        assert_eq!(kept.headers()["x-request-id"], longest.as_str());

        let forged = [
            "x\" level=ERROR msg=\"key accepted".to_owned(),
            "a b".to_owned(),
            "b".repeat(65),
            "id;drop".to_owned(),
        ];
        for id in &forged {
            let r = app.client.get(app.url("/healthz")).header("x-request-id", id).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let got = r.headers()["x-request-id"].to_str().unwrap();
            assert!(got.len() == 32 && got.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?} -> {got:?}");
        }
        let two = app.client.get(app.url("/healthz"))
            .header("x-request-id", "one")
            .header("x-request-id", "two")
            .send().await.unwrap();
        let got: Vec<_> = two.headers().get_all("x-request-id").iter().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 32, "{got:?}");
    }
}

fn small_per_client_cap(config: &mut otpgate::config::Config) {
    config.api.max_connections_per_client = 4;
}

fn small_global_cap(config: &mut otpgate::config::Config) {
    config.api.max_connections = 3;
}

fn short_request_timeout(config: &mut otpgate::config::Config) {
    config.api.request_timeout_seconds = 2;
}

fn behind_a_proxy(config: &mut otpgate::config::Config) {
    config.api.trusted_proxies = vec!["127.0.0.1/32".into()];
    config.api.max_connections_per_client = 1;
}

/// Headers and the start of a send body that promises far more than is sent.
fn unfinished_send(app: &TestApp, extra_headers: &str) -> String {
    format!(
        "POST /api/v1/auths/send/otp/ HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000\r\n{extra_headers}\r\n{{\"number\": ",
        server_addr(app),
        app.key
    )
}

for_each_backend! {
    config: small_per_client_cap;
    async fn one_address_at_its_cap_does_not_lock_out_another(app) {
        let server = server_addr(&app);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(connect_from("127.0.0.1", server).await);
        }
        let refused = get_from("127.0.0.1", server, "/healthz", "").await;
        assert_refusal(&refused, 429, "client_connection_limit");
        assert!(refused.1.contains("retry-after: 1"), "{}", refused.1);
        // Another address is served, and so is a spoofed X-Forwarded-For from
        // the capped one: no proxy is trusted.
        assert_eq!(get_from("127.0.0.2", server, "/healthz", "").await.0, 200);
        let spoofed = get_from("127.0.0.1", server, "/healthz", "X-Forwarded-For: 198.51.100.9\r\n").await;
        assert_refusal(&spoofed, 429, "client_connection_limit");
        // A connection closed frees its place.
        drop(held.pop());
        healthz_passes_again("127.0.0.1", server).await;
        // The scrape below connects from 127.0.0.1 too: free the rest first
        // (the server notices a close a moment after it happens).
        drop(held);
        healthz_passes_again("127.0.0.1", server).await;
        let text = app.metrics_text().await;
        assert!(text.contains("otpgate_http_refused_total{reason=\"client_connection_limit\"}"), "{text}");
    }
}

for_each_backend! {
    config: small_global_cap;
    async fn the_connection_cap_holds_for_every_address(app) {
        let server = server_addr(&app);
        let mut held = Vec::new();
        for from in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
            held.push(connect_from(from, server).await);
        }
        for from in ["127.0.0.4", "127.0.0.5"] {
            let refused = get_from(from, server, "/healthz", "").await;
            assert_refusal(&refused, 503, "connection_limit");
            assert!(refused.1.contains("retry-after: 1"), "{}", refused.1);
        }
        drop(held.pop());
        healthz_passes_again("127.0.0.4", server).await;
    }
}

for_each_backend! {
    config: short_request_timeout;
    async fn a_body_trickled_slower_than_the_request_timeout_is_cut_with_a_408(app) {
        let mut stream = connect_from("127.0.0.1", server_addr(&app)).await;
        stream.write_all(unfinished_send(&app, "").as_bytes()).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        // One byte every 200 ms: the promised 10,000 would take half an hour.
        let trickle = tokio::spawn(async move {
            for _ in 0..10_000 {
                if writer.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let mut reply = Vec::new();
        let read = tokio::time::timeout(ANSWER_WITHIN, reader.read_to_end(&mut reply)).await;
        assert!(read.is_ok(), "the server neither answered nor closed");
        trickle.abort();
        let reply = parse_reply(&reply);
        assert_refusal(&reply, 408, "request_timeout");
        assert!(reply.1.contains("connection: close"), "{}", reply.1);
        nothing_written(&app).await;
        // A request that arrives in time is served as before.
        app.send_ok(&text_send("9851023212")).await;
    }
}

for_each_backend! {
    config: |c: &mut otpgate::config::Config| c.api.request_timeout_seconds = 1;
    async fn a_send_whose_body_arrived_is_not_cut_while_the_store_holds_it(app) {
        let lock = StoreLock::take(&app).await;
        let sending = {
            let client = app.client.clone();
            let url = app.url("/api/v1/auths/send/otp/");
            let key = app.key.clone();
            tokio::spawn(async move {
                client.post(url).bearer_auth(key).json(&text_send("9851023212")).send().await.unwrap()
            })
        };
        // Well past the request timeout, the send is still waiting for the store.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!sending.is_finished(), "the send did not wait for the store lock");
        lock.release().await;
        let r = sending.await.unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
}

/// A write lock on the test's store, held by another connection.
enum StoreLock {
    Sqlite(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>),
    Postgres(tokio_postgres::Client),
}

impl StoreLock {
    async fn take(app: &TestApp) -> StoreLock {
        match app.backend {
            Backend::Sqlite => {
                let path = app.database_url.trim_start_matches("sqlite://").to_owned();
                let (locked_tx, locked_rx) = std::sync::mpsc::channel();
                let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
                let holder = std::thread::spawn(move || {
                    let c = rusqlite::Connection::open(path).unwrap();
                    c.execute_batch("BEGIN IMMEDIATE").unwrap();
                    locked_tx.send(()).unwrap();
                    let _ = release_rx.recv();
                    c.execute_batch("COMMIT").unwrap();
                });
                locked_rx.recv().unwrap();
                StoreLock::Sqlite(release_tx, holder)
            }
            Backend::Postgres => {
                let (client, conn) =
                    tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                tokio::spawn(conn);
                // Reads go on; every write to accounts waits.
                client
                    .batch_execute("BEGIN; LOCK TABLE accounts IN EXCLUSIVE MODE")
                    .await
                    .unwrap();
                StoreLock::Postgres(client)
            }
        }
    }

    async fn release(self) {
        match self {
            StoreLock::Sqlite(release, holder) => {
                release.send(()).unwrap();
                tokio::task::spawn_blocking(move || holder.join().unwrap())
                    .await
                    .unwrap();
            }
            StoreLock::Postgres(client) => client.batch_execute("COMMIT").await.unwrap(),
        }
    }
}

for_each_backend! {
    config: behind_a_proxy;
    async fn a_trusted_proxys_forwarded_address_is_what_is_counted(app) {
        let server = server_addr(&app);
        // Through the proxy, 203.0.113.7 has a send in flight (its body is
        // still coming): its one place is taken.
        let start_send = || async {
            let mut stream = connect_from("127.0.0.1", server).await;
            stream
                .write_all(unfinished_send(&app, "X-Forwarded-For: 203.0.113.7\r\n").as_bytes())
                .await
                .unwrap();
            stream
        };
        let mut in_flight = start_send().await;
        let mut refused = None;
        for _ in 0..200 {
            let reply = get_from("127.0.0.1", server, "/healthz", "X-Forwarded-For: 203.0.113.7\r\n").await;
            if reply.0 != 200 {
                refused = Some(reply);
                break;
            }
            // The server may have taken this probe before the send: then the
            // probe held the address's one place and the send was refused
            // (rightly). Start the send again.
            let mut early = [0u8; 1];
            if tokio::time::timeout(Duration::from_millis(1), in_flight.read(&mut early))
                .await
                .is_ok()
            {
                in_flight = start_send().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let refused = refused.expect("the forwarded address was never counted");
        assert_refusal(&refused, 429, "client_connection_limit");
        // The proxy itself holds three connections with a cap of one, and its
        // other clients are served; the rightmost untrusted address counts.
        let _idle = connect_from("127.0.0.1", server).await;
        assert_eq!(get_from("127.0.0.1", server, "/healthz", "X-Forwarded-For: 203.0.113.8\r\n").await.0, 200);
        assert_eq!(get_from("127.0.0.1", server, "/healthz", "X-Forwarded-For: 203.0.113.7, 203.0.113.8\r\n").await.0, 200);
        // Once its request is over, the address has its place back.
        drop(in_flight);
        let mut served = false;
        for _ in 0..200 {
            if get_from("127.0.0.1", server, "/healthz", "X-Forwarded-For: 203.0.113.7\r\n").await.0 == 200 {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(served, "203.0.113.7 never got its place back");
        nothing_written(&app).await;
    }
}

/// The `next` link of a one-item page, asked for with this `Host` and other
/// headers on a raw connection.
async fn next_link(app: &TestApp, host: &str, headers: &str) -> String {
    let server = server_addr(app);
    let mut stream = connect_from("127.0.0.1", server).await;
    let request = format!(
        "GET /api/v1/auths/list/send-otps/?limit=1 HTTP/1.1\r\nHost: {host}\r\n\
         Authorization: Bearer {}\r\nConnection: close\r\n{headers}\r\n",
        app.key
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let (status, head, body) = parse_reply(&read_to_close(&mut stream).await);
    assert_eq!(status, 200, "{head}{body}");
    body["next"]
        .as_str()
        .unwrap_or_else(|| panic!("no next link in {body}"))
        .to_owned()
}

fn trusting_this_host(config: &mut otpgate::config::Config) {
    config.api.trusted_proxies = vec!["127.0.0.0/8".into()];
}

for_each_backend! {
    async fn next_links_take_a_host_header_only_when_it_is_a_host_and_port(app) {
        app.send_ok(&text_send("9851023212")).await;
        app.send_ok(&text_send("9851023213")).await;
        let listener = format!("http://{}/api/v1/auths/list/send-otps/?", server_addr(&app));
        let next = next_link(&app, "otp.example.com:8443", "").await;
        assert!(next.starts_with("http://otp.example.com:8443/api/v1/auths/list/send-otps/?"), "{next}");
        for forged in ["evil.com/phish?x=", "evil.com\"><script>", "a b", "x@evil.com", "host:99999"] {
            let next = next_link(&app, forged, "").await;
            assert!(next.starts_with(&listener), "{forged:?} -> {next}");
        }
        // No proxy is trusted: what a client says it forwarded is ignored.
        let next = next_link(&app, "otp.example.com", "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.com\r\n").await;
        assert!(next.starts_with("http://otp.example.com/"), "{next}");
    }
}

for_each_backend! {
    config: trusting_this_host;
    async fn next_links_follow_the_scheme_and_host_a_trusted_proxy_forwards(app) {
        app.send_ok(&text_send("9851023212")).await;
        app.send_ok(&text_send("9851023213")).await;
        let forwarded = "X-Forwarded-Proto: https\r\nX-Forwarded-Host: otp.example.com\r\nX-Forwarded-For: 198.51.100.4\r\n";
        let next = next_link(&app, "10.0.0.5:8080", forwarded).await;
        assert!(next.starts_with("https://otp.example.com/api/v1/auths/list/send-otps/?"), "{next}");
        // A forwarded host that is not a host[:port], or a scheme that is not
        // http(s), is ignored.
        let odd = "X-Forwarded-Proto: javascript\r\nX-Forwarded-Host: evil.com/phish?\r\n";
        let next = next_link(&app, "10.0.0.5:8080", odd).await;
        assert!(next.starts_with("http://10.0.0.5:8080/"), "{next}");
    }
}

const ADMIN_TOKEN: &str = "an-admin-token-of-at-least-32-characters";

/// The real application with `admin_listen` set: its public and admin
/// addresses, and how to stop it.
async fn spawn_with_admin_listener(
    backend: Backend,
) -> (
    String,
    String,
    impl std::future::Future<Output = ()>,
    tempfile::TempDir,
) {
    use otpgate::config::Secret;
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(backend, &dir).await;
    let mut config = crate::helpers::test_config(&url, &dir);
    config.admin_listen = Some("127.0.0.1:0".into());
    config.admin.token = Some(Secret::new(ADMIN_TOKEN.into()));
    let app = otpgate::startup::Application::build(config).await.unwrap();
    let public = format!("http://{}", app.local_addr());
    let admin = format!("http://{}", app.admin_addr().expect("an admin listener"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let stop = async move {
        let _ = tx.send(());
        running.await.unwrap().unwrap();
    };
    (public, admin, stop, dir)
}

async fn operator_endpoints_are_served_on_the_admin_listener_only(backend: Backend) {
    let (public, admin, stop, _dir) = spawn_with_admin_listener(backend).await;
    assert_ne!(public, admin);
    let client = reqwest::Client::new();
    let get = |base: &str, path: &str| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    for path in [
        "/metrics",
        "/readyz",
        "/docs",
        "/openapi.json",
        "/admin/v1/accounts/",
    ] {
        let r = get(&public, path).await.unwrap();
        assert_eq!(r.status(), 404, "{path} on the public listener");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["success"], false, "{body}");
        assert_eq!(
            get(&admin, path).await.unwrap().status(),
            200,
            "{path} on the admin listener"
        );
    }
    for base in [&public, &admin] {
        assert_eq!(
            get(base, "/healthz").await.unwrap().status(),
            200,
            "/healthz on {base}"
        );
    }
    // The API itself is not on the admin listener.
    assert_eq!(
        get(&admin, "/api/v1/auths/list/send-otps/")
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        get(&public, "/api/v1/auths/list/send-otps/")
            .await
            .unwrap()
            .status(),
        401
    );
    // Requests on both listeners are counted in the one registry.
    let text = get(&admin, "/metrics").await.unwrap().text().await.unwrap();
    assert!(
        text.contains("route=\"unmatched\",method=\"GET\",status=\"404\""),
        "{text}"
    );
    stop.await;
}

mod operator_endpoints_are_served_on_the_admin_listener_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        operator_endpoints_are_served_on_the_admin_listener_only(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        operator_endpoints_are_served_on_the_admin_listener_only(Backend::Postgres).await;
    }
}

#[test]
fn production_serves_the_operator_endpoints_on_loopback_unless_told_otherwise() {
    use otpgate::config::{Config, Mode};
    use otpgate::startup::admin_address;
    let development = Config::default();
    assert_eq!(
        admin_address(&development),
        None,
        "development: one listener"
    );
    let mut production = Config {
        mode: Mode::Production,
        ..Config::default()
    };
    assert_eq!(
        admin_address(&production).as_deref(),
        Some("127.0.0.1:9091")
    );
    production.admin_listen = Some("10.0.0.2:9100".into());
    assert_eq!(admin_address(&production).as_deref(), Some("10.0.0.2:9100"));
    production.admin_listen = Some(String::new());
    assert_eq!(
        admin_address(&production),
        None,
        "empty: the public listener, on purpose"
    );
}

/// `otpgate serve` under `prlimit --nofile=120`: with the default settings it
/// keeps 110 descriptors for the rest of the server (8 store connections, 4
/// list connections and 2, 32 webhook deliveries, 64 spare), so it may hold 10
/// connections. It says
/// so at start, and the eleventh connection is refused.
async fn the_connection_cap_follows_the_open_file_limit(backend: Backend) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let db = crate::helpers::database_url(backend, &dir).await;
    let mut child = Command::new("prlimit")
        .arg("--nofile=120:120")
        .arg(env!("CARGO_BIN_EXE_otpgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db])
        .env("OTPGATE_DEMO__CREATE_DEFAULT_ACCOUNT", "false")
        .env(
            "OTPGATE_DELIVERY__LOG_PATH",
            dir.path().join("deliveries.jsonl"),
        )
        .env("OTPGATE_SECRETS__FILE", dir.path().join("secrets.toml"))
        .env("OTPGATE_LOG__FORMAT", "json")
        .env("OTPGATE_LOG__LEVEL", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting otpgate serve under prlimit");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let _server = KilledOnDrop(child);
    let (serving_tx, serving_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && event["message"] == "otpgate is serving"
            {
                let _ = serving_tx.send(event);
            }
        }
    });
    let mut lines = stdout.lines();
    let address = loop {
        let line = lines
            .next()
            .expect("otpgate exited before listening")
            .unwrap();
        if let Some(a) = line.strip_prefix("otpgate listening on http://") {
            break a.trim().parse::<SocketAddr>().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let serving = serving_rx
        .recv_timeout(ANSWER_WITHIN)
        .expect("no 'otpgate is serving' line");
    assert_eq!(serving["max_connections"], 10, "{serving}");

    let mut held = Vec::new();
    for i in 1..=10 {
        held.push(connect_from(&format!("127.0.0.{i}"), address).await);
    }
    let refused = get_from("127.0.0.11", address, "/healthz", "").await;
    assert_refusal(&refused, 503, "connection_limit");
    drop(held.pop());
    healthz_passes_again("127.0.0.11", address).await;
}

/// A server process that ends with the test, passed or not.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

mod the_connection_cap_follows_the_open_file_limit {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        the_connection_cap_follows_the_open_file_limit(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        the_connection_cap_follows_the_open_file_limit(Backend::Postgres).await;
    }
}

for_each_backend! {
    async fn every_operation_documents_the_edges_refusals(app) {
        let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let documented = operation["responses"].as_object().unwrap();
                for status in ["429", "503"] {
                    assert!(documented.contains_key(status), "{method} {path} lacks {status}");
                }
                if operation.get("requestBody").is_some() {
                    assert!(documented.contains_key("408"), "{method} {path} lacks 408");
                }
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} operations");
    }
}

fn three_second_request_timeout(config: &mut otpgate::config::Config) {
    config.api.request_timeout_seconds = 3;
}

/// Reads from `stream` until what was read contains `needle`.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut reply = Vec::new();
    let read = tokio::time::timeout(ANSWER_WITHIN, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&reply).contains(needle) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no {needle:?} from the server");
    String::from_utf8_lossy(&reply).into_owned()
}

for_each_backend! {
    config: three_second_request_timeout;
    async fn the_request_timeout_counts_from_each_requests_first_byte_on_a_kept_alive_connection(app) {
        let server = server_addr(&app);
        let mut stream = connect_from("127.0.0.1", server).await;
        let health = format!("GET /healthz HTTP/1.1\r\nHost: {server}\r\n\r\n");
        stream.write_all(health.as_bytes()).await.unwrap();
        let first = read_until(&mut stream, "\"ok\"").await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        // Idle for 2 s, then a send whose body takes 1.2 s: 3.2 s after the
        // connection's first request, 1.2 s after this one's first byte.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let body = serde_json::to_string(&text_send("9851023212")).unwrap();
        let (head, rest) = body.split_at(10);
        let request = format!(
            "POST /api/v1/auths/send/otp/ HTTP/1.1\r\nHost: {server}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
            app.key,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        stream.write_all(rest.as_bytes()).await.unwrap();
        let (status, head, reply) = parse_reply(&read_to_close(&mut stream).await);
        assert_eq!(status, 200, "{head}{reply}");
        assert_eq!(app.otp_count().await, 1);
    }
}
