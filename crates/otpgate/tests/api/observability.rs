//! What operators watch: the process and build metrics, verification outcomes,
//! the access log (what it holds and what it never does), plain logs on a pipe,
//! and the Prometheus alert rules in `deploy/prometheus/`, checked by promtool.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, database_url};

const NUMBER: &str = "9851023212";
const CODE: &str = "482193";
const VERIFY: &str = "/api/v1/auths/verify/otp/";

/// The value of the series `series` (name and labels as rendered) in a
/// `/metrics` text.
fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

async fn scrape(app: &TestApp) -> String {
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn metric(text: &str, series: &str) -> f64 {
    value_of(text, series).unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

/// An HTTP/1.1 connection that has had one answer and stays open.
async fn held_connection(address: &str) -> tokio::net::TcpStream {
    let host = address.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    s
}

/// This process's resident memory as the kernel reports it, in bytes.
fn own_rss() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024.0
}

for_each_backend! {
    async fn process_metrics_are_plausible_and_open_fds_follow_held_connections(app) {
        let text = scrape(&app).await;
        for family in [
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_open_fds gauge",
            "# TYPE process_max_fds gauge",
            "# TYPE process_start_time_seconds gauge",
            "# TYPE otpgate_build_info gauge",
        ] {
            assert!(text.contains(family), "{family} missing:\n{text}");
        }
        let version = env!("CARGO_PKG_VERSION");
        let build = text.lines().find(|l| l.starts_with("otpgate_build_info{")).expect("otpgate_build_info");
        assert!(build.contains(&format!("version=\"{version}\"")) && build.contains("commit=\"") && build.ends_with("} 1"), "{build}");

        // The app runs in this test's process: its numbers are this process's.
        let rss = metric(&text, "process_resident_memory_bytes");
        let kernel = own_rss();
        assert!(rss > kernel / 2.0 && rss < kernel * 2.0, "reported {rss}, the kernel says {kernel}");
        let cpu = metric(&text, "process_cpu_seconds_total");
        assert!(cpu >= 0.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = metric(&text, "process_start_time_seconds");
        assert!(started <= now + 1.0 && started > now - 86_400.0, "started {started}, now {now}");
        assert!(metric(&text, "process_threads") >= 2.0, "a runtime with two workers");
        let open = metric(&text, "process_open_fds");
        assert!(open >= 3.0 && metric(&text, "process_max_fds") >= open);

        // Each held connection is two descriptors here: the client's socket
        // and the server's.
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(held_connection(&app.address).await);
        }
        let text = scrape(&app).await;
        let holding = metric(&text, "process_open_fds");
        assert!(holding >= open + 36.0, "{open} open before, {holding} holding 20 connections");
        assert!(metric(&text, "process_cpu_seconds_total") >= cpu, "CPU time never goes back");

        drop(held);
        let mut now_open = holding;
        for _ in 0..200 {
            now_open = metric(&scrape(&app).await, "process_open_fds");
            if now_open <= holding - 36.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(now_open <= holding - 36.0, "{holding} holding, {now_open} after closing");
    }
}

/// A code chosen by the test (`otp_options: personnel`) sent to `number`; its id.
async fn send_code(app: &TestApp, number: &str) -> i64 {
    let reply = app
        .send_ok(&json!({
            "number": number,
            "message": "Your code is {otp}",
            "sms_send_options": "text",
            "otp_options": "personnel",
            "otp": CODE,
        }))
        .await;
    reply["data"]["details"]["id"].as_i64().unwrap()
}

for_each_backend! {
    config: |c| { c.verify.per_number_max = 3; c.verify.max_attempts = 1; };

    async fn each_verification_outcome_is_counted(app) {
        let verify = |number: &'static str, otp: &'static str| {
            let r = app.client.post(app.url(VERIFY)).bearer_auth(&app.key).json(&json!({ "number": number, "otp": otp })).send();
            async move { r.await.unwrap().status().as_u16() }
        };
        send_code(&app, NUMBER).await;
        assert_eq!(verify(NUMBER, CODE).await, 200);
        assert_eq!(verify(NUMBER, CODE).await, 404, "already verified");
        assert_eq!(verify(NUMBER, CODE).await, 404, "already verified");
        // The fourth of the number within the window (verify.per_number_max = 3).
        assert_eq!(verify(NUMBER, CODE).await, 429);

        // One wrong guess kills a code (verify.max_attempts = 1).
        send_code(&app, "9851023213").await;
        assert_eq!(verify("9851023213", "000000").await, 400);
        assert_eq!(verify("9851023213", CODE).await, 400, "too many attempts");

        let expired = send_code(&app, "9851023214").await;
        let past = otp_store::now_micros() - 1_000_000;
        crate::helpers::sql(&app, &format!("UPDATE otps SET expires_at = {past} WHERE id = {expired}")).await;
        assert_eq!(verify("9851023214", CODE).await, 410);

        assert_eq!(verify("9851000000", CODE).await, 404, "never sent to");
        assert_eq!(verify(NUMBER, "no!").await, 400, "not a code");
        // Without a valid key the request never reaches the check: not counted.
        let r = app.client.post(app.url(VERIFY)).bearer_auth("otpg_nope").json(&json!({ "number": NUMBER, "otp": CODE })).send().await.unwrap();
        assert_eq!(r.status(), 401);

        let text = scrape(&app).await;
        assert!(text.contains("# TYPE otpgate_verify_total counter"), "{text}");
        let expected = [
            ("verified", 1.0),
            ("already_verified", 2.0),
            ("rate_limited", 1.0),
            ("wrong_code", 1.0),
            ("max_attempts", 1.0),
            ("expired", 1.0),
            ("not_found", 1.0),
            ("invalid", 1.0),
        ];
        for (outcome, n) in expected {
            assert_eq!(metric(&text, &format!("otpgate_verify_total{{outcome=\"{outcome}\"}}")), n, "{outcome}");
        }
        let counted: f64 = text.lines().filter(|l| l.starts_with("otpgate_verify_total{")).filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok()).sum();
        assert_eq!(counted, 9.0, "the 401 is not a verification:\n{text}");
        // What the conversion alert divides by is there too.
        assert_eq!(metric(&text, "otpgate_sends_total{channel=\"text\",outcome=\"accepted\"}"), 3.0);
    }
}

/// `otpgate serve` with `env` on top of the test settings, its stdout and
/// stderr read to the end on threads (pipes, not a terminal).
struct LoggingServer {
    child: Child,
    address: String,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

impl LoggingServer {
    fn start(db: &str, dir: &Path, env: &[(&str, &str)]) -> LoggingServer {
        let mut child = crate::durability::otpgate()
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db])
            .env("OTPGATE_DEMO__CREATE_DEFAULT_ACCOUNT", "false")
            .env("OTPGATE_DELIVERY__LOG_PATH", dir.join("deliveries.jsonl"))
            .env("OTPGATE_SECRETS__FILE", dir.join("secrets.toml"))
            .env("OTPGATE_LOG__LEVEL", "info")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            // A terminal that has colours: what decides is where the output goes.
            .env("TERM", "xterm-256color")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting otpgate serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        let address = loop {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "otpgate exited before listening");
            seen.extend_from_slice(line.as_bytes());
            if let Some(a) = line.strip_prefix("otpgate listening on ") {
                break a.trim().to_owned();
            }
        };
        let stdout = std::thread::spawn(move || {
            stdout.read_to_end(&mut seen).unwrap();
            seen
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut all = Vec::new();
            err.read_to_end(&mut all).unwrap();
            all
        });
        LoggingServer {
            child,
            address,
            stdout,
            stderr,
        }
    }

    /// Stops the server; everything it wrote to stdout and to stderr.
    fn stop(mut self) -> (Vec<u8>, Vec<u8>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.stdout.join().unwrap(), self.stderr.join().unwrap())
    }
}

/// A request with the key in its header, a code and a number in its body; one
/// with all three in its query string; and one to a path no route knows.
async fn revealing_requests(base: &str, key: &str) -> Vec<u16> {
    let client = reqwest::Client::new();
    let verify = client
        .post(format!("{base}{VERIFY}"))
        .bearer_auth(key)
        .json(&json!({ "number": NUMBER, "otp": CODE }))
        .send()
        .await
        .unwrap();
    let list = client
        .get(format!(
            "{base}/api/v1/auths/list/send-otps/?phone_number={NUMBER}&otp={CODE}&api_key={key}"
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let unknown = client
        .get(format!("{base}/no/such/{CODE}/path?token={key}"))
        .send()
        .await
        .unwrap();
    vec![
        verify.status().as_u16(),
        list.status().as_u16(),
        unknown.status().as_u16(),
    ]
}

fn assert_reveals_nothing(log: &str, key: &str) {
    // `otpg_<id>_<secret>`, and the secret (base64url) may hold '_' itself.
    let (_, secret) = key
        .strip_prefix("otpg_")
        .and_then(|rest| rest.split_once('_'))
        .unwrap();
    for (what, needle) in [
        ("the key", key),
        ("the key's secret", secret),
        ("the code", CODE),
        ("the number", NUMBER),
        ("a query string", "api_key="),
        ("a query string", "phone_number="),
        ("an unmatched path", "/no/such"),
    ] {
        assert!(
            !log.contains(needle),
            "{what} ({needle}) is in the log:\n{log}"
        );
    }
}

async fn a_json_access_line_has_the_route_and_account_but_no_key_code_or_query(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    let (account_id, key) = crate::durability::create_account(&db, "shop", 5);
    let server = LoggingServer::start(&db, dir.path(), &[("OTPGATE_LOG__FORMAT", "json")]);
    let statuses = revealing_requests(&server.address, &key).await;
    assert_eq!(statuses, [404, 200, 404]);
    let (_, stderr) = server.stop();
    let log = String::from_utf8(stderr).unwrap();

    let access: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["target"] == "otpgate::access")
        .collect();
    assert_eq!(access.len(), 3, "one line per request:\n{log}");
    let expected = [
        ("POST", VERIFY, 404, Some(account_id)),
        (
            "GET",
            "/api/v1/auths/list/send-otps/",
            200,
            Some(account_id),
        ),
        ("GET", "unmatched", 404, None),
    ];
    for (line, (method, route, status, account)) in access.iter().zip(expected) {
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["route"], route, "{line}");
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["account_id"].as_i64(), account, "{line}");
        assert!(
            line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
            "{line}"
        );
        let id = line["request_id"].as_str().unwrap_or("");
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{line}"
        );
        // No request span: it would carry the path.
        assert!(
            line.get("span").is_none() && line.get("spans").is_none(),
            "{line}"
        );
    }
    assert_reveals_nothing(&log, &key);
}

/// Text lines on a pipe: no escape byte on stdout or stderr, whatever `TERM`
/// says; the access line reads `key=value`.
async fn logs_on_a_pipe_have_no_colour_codes_and_text_access_lines(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    let (account_id, key) = crate::durability::create_account(&db, "shop", 5);
    let server = LoggingServer::start(&db, dir.path(), &[("OTPGATE_LOG__FORMAT", "text")]);
    revealing_requests(&server.address, &key).await;
    let (stdout, stderr) = server.stop();
    assert!(
        !stdout.is_empty() && !stderr.is_empty(),
        "both streams had output"
    );
    for (name, bytes) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !bytes.contains(&0x1b),
            "an escape byte on {name}:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
    let log = String::from_utf8(stderr).unwrap();
    assert!(log.contains("otpgate is serving"), "{log}");
    let verify_line = log
        .lines()
        .find(|l| l.contains("otpgate::access") && l.contains("route=/api/v1/auths/verify/otp/"))
        .unwrap_or_else(|| panic!("no access line for the verify:\n{log}"));
    for field in [
        "method=POST",
        "status=404",
        &format!("account_id={account_id}"),
        "duration_ms=",
        "request_id=",
    ] {
        assert!(
            verify_line.contains(field),
            "{field} missing: {verify_line}"
        );
    }
    assert_reveals_nothing(&log, &key);
}

async fn access_lines_can_be_turned_off(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    let (_, key) = crate::durability::create_account(&db, "shop", 5);
    let server = LoggingServer::start(
        &db,
        dir.path(),
        &[
            ("OTPGATE_LOG__FORMAT", "json"),
            ("OTPGATE_LOG__ACCESS", "false"),
        ],
    );
    assert_eq!(
        revealing_requests(&server.address, &key).await,
        [404, 200, 404]
    );
    let (_, stderr) = server.stop();
    let log = String::from_utf8(stderr).unwrap();
    assert!(
        log.contains("otpgate is serving"),
        "the rest of the log stays: {log}"
    );
    assert!(!log.contains("otpgate::access"), "{log}");
}

crate::for_each_backend!(
    a_json_access_line_has_the_route_and_account_but_no_key_code_or_query,
    logs_on_a_pipe_have_no_colour_codes_and_text_access_lines,
    access_lines_can_be_turned_off,
);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn promtool(args: &[&str]) -> String {
    let dir = repo_root().join("deploy/prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool could not run ({e}): install it with scripts/install-test-deps.sh (Debian package prometheus)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "otpgate-alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "otpgate-alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The `otpgate_*` names in `text`, histogram suffixes removed.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("otpgate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end]
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        names.push(name.to_owned());
        rest = &tail[end..];
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_metric_the_alert_rules_use_is_one_the_server_has() {
    let rules =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/otpgate-alerts.yml")).unwrap();
    let used = metric_names(&rules);
    assert!(used.len() >= 6, "{used:?}");
    for name in used {
        assert!(
            otpgate::metrics::FAMILIES.iter().any(|f| f.name == name),
            "the rules use {name}, which the server does not have"
        );
    }
}

#[test]
fn every_metric_family_is_documented_in_the_readme() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for family in otpgate::metrics::FAMILIES {
        assert!(
            readme.contains(family.name),
            "README.md does not mention {}",
            family.name
        );
        assert!(!family.help.is_empty(), "{} has no help", family.name);
    }
}
