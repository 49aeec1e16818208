//! Run-time control: a `SIGHUP` reload of the real binary against real SMSC
//! peers, pause/resume/drain through the admin API and the command line,
//! `otpgate check-config` and `otpgate doctor`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, database_url, spawn_app_with, text_send};
use crate::smsc::{Smsc, id_of, smpp_route, wait_until};
use crate::users::{ADMIN_TOKEN, configure};

fn otpgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_otpgate"))
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

const SIGHUP: i32 = 1;
const SIGTERM: i32 = 15;

/// `otpgate serve --config FILE` as a child process, its log lines collected.
struct Server {
    child: Child,
    base: String,
    key: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(config: &Path) -> Server {
        let mut child = otpgate()
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut key = None;
        let mut base = None;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(k) = line.trim().strip_prefix("otpg_") {
                key = Some(format!("otpg_{k}"));
            }
            if let Some(a) = line.strip_prefix("otpgate listening on ") {
                base = Some(a.to_owned());
                break;
            }
        }
        Server {
            child,
            base: base.expect("the server prints its address"),
            key: key.expect("the first start prints the demo key"),
            logs,
        }
    }

    fn signal(&self, sig: i32) {
        assert_eq!(unsafe { libc_kill(self.child.id() as i32, sig) }, 0);
    }

    fn log_lines(&self, containing: &str) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(containing))
            .cloned()
            .collect()
    }

    /// Sends SIGHUP and waits for the `n`th line saying how it went.
    async fn reload(&self, expect: &str) -> String {
        let before = self.log_lines(expect).len();
        self.signal(SIGHUP);
        wait_until(&format!("a log line {expect:?}"), || {
            self.log_lines(expect).len() > before
        })
        .await;
        self.log_lines(expect).pop().unwrap()
    }

    async fn send(&self, number: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/api/v1/auths/send/otp/", self.base))
            .bearer_auth(&self.key)
            .json(&text_send(number))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn stop(mut self) {
        self.signal(SIGTERM);
        assert!(
            self.child.wait().unwrap().success(),
            "a SIGTERM stops it cleanly"
        );
    }
}

impl Drop for Server {
    /// A failed test leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `[[routes]]` table to an SMSC peer (system id `otpgate`, password
/// `secret`), PDU tracing on so that a `debug` level shows the PDUs.
fn smpp_table(name: &str, port: u16, prefix: Option<&str>) -> String {
    let prefixes = prefix.map_or(String::new(), |p| format!("prefixes = [\"{p}\"]\n"));
    format!(
        "[[routes]]\nname = \"{name}\"\nchannel = \"text\"\ndriver = \"smpp\"\n{prefixes}\
         [routes.smpp]\nport = {port}\nsystem_id = \"otpgate\"\npassword = \"secret\"\n\
         reconnect_max_seconds = 1\npdu_trace = true\n"
    )
}

fn config_file(db: &str, dir: &Path, per_number_max: u32, level: &str, routes: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"\"\ndatabase_url = \"{db}\"\n\
         [log]\nlevel = \"{level}\"\n\
         [delivery]\nlog_path = \"{log}\"\npoll_interval_ms = 50\n\
         [secrets]\nfile = \"{secrets}\"\n\
         [limits]\nper_number_max = {per_number_max}\nper_account_rps = 0\nper_key_rps = 0\n\
         {routes}",
        log = dir.join("deliveries.jsonl").display(),
        secrets = dir.join("secrets.toml").display(),
    )
}

async fn a_sighup_applies_limits_log_level_and_routes_and_refuses_a_bad_file(backend: Backend) {
    let first = Smsc::start(&[]);
    let second = Smsc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    let file = dir.path().join("otpgate.toml");
    let one_route = smpp_table("first", first.port, None);
    std::fs::write(&file, config_file(&db, dir.path(), 5, "info", &one_route)).unwrap();
    let server = Server::start(&file);
    wait_until("the first SMSC's bind", || first.events("bind").len() == 1).await;

    assert_eq!(server.send("9851023001").await, 200);
    assert_eq!(server.send("9851023001").await, 200, "5 sends a number");
    first.accepted_at_least(2).await;
    assert!(
        server.log_lines("smpp::pdu").is_empty(),
        "at info, PDU traces stay out of the log"
    );

    // New: one send a number, PDU traces shown, a second SMSC for +977984.
    let two_routes = format!(
        "{}{}",
        smpp_table("second", second.port, Some("+977984")),
        one_route
    );
    std::fs::write(
        &file,
        config_file(&db, dir.path(), 1, "info,smpp::pdu=debug", &two_routes),
    )
    .unwrap();
    let done = server.reload("configuration reloaded").await;
    assert!(
        done.contains("1 kept, 1 started, 0 stopping"),
        "the unchanged route is kept: {done}"
    );
    wait_until("the second SMSC's bind", || {
        second.events("bind").len() == 1
    })
    .await;

    assert_eq!(server.send("9851023002").await, 200);
    assert_eq!(
        server.send("9851023002").await,
        429,
        "the new per-number limit holds at once"
    );
    assert_eq!(server.send("9841023003").await, 200);
    let at_second = second.accepted_at_least(1).await;
    assert!(
        at_second[0]["destination"]
            .as_str()
            .unwrap()
            .ends_with("9841023003"),
        "the new route took its prefix: {at_second:?}"
    );
    first.accepted_at_least(3).await;
    wait_until("a PDU trace in the log", || {
        !server.log_lines("smpp::pdu").is_empty()
    })
    .await;
    assert_eq!(
        first.events("bind").len(),
        1,
        "the unchanged route's bind stayed up: the SMSC saw no new bind"
    );

    // A bad file: refused with a log line, the running configuration kept.
    std::fs::write(
        &file,
        format!(
            "{}[[routes]]\nname = \"broken\"\nchannel = \"fax\"\ndriver = \"log\"\n",
            config_file(&db, dir.path(), 5, "info", &one_route)
        ),
    )
    .unwrap();
    let refused = server
        .reload("configuration reload refused; the running configuration is kept")
        .await;
    assert!(
        refused.contains("channel must be text or voice"),
        "{refused}"
    );
    assert_eq!(server.send("9851023004").await, 200);
    assert_eq!(
        server.send("9851023004").await,
        429,
        "the limit of the running configuration still holds"
    );
    assert_eq!(server.send("9841023005").await, 200);
    second.accepted_at_least(2).await;
    assert_eq!(first.events("bind").len(), 1);
    assert_eq!(second.events("bind").len(), 1);

    // A route removed: unbound once idle; its numbers go to the route left.
    std::fs::write(&file, config_file(&db, dir.path(), 1, "info", &one_route)).unwrap();
    let done = server.reload("configuration reloaded").await;
    assert!(done.contains("1 kept, 0 started, 1 stopping"), "{done}");
    wait_until("the removed route's unbind", || {
        !second.events("unbind").is_empty()
    })
    .await;
    assert_eq!(server.send("9841023006").await, 200);
    let at_first = first.accepted_at_least(5).await;
    assert!(
        at_first
            .iter()
            .any(|e| e["destination"].as_str().unwrap().ends_with("9841023006")),
        "{at_first:?}"
    );
    assert_eq!(first.events("bind").len(), 1);
    server.stop();
}

for_each_backend!(a_sighup_applies_limits_log_level_and_routes_and_refuses_a_bad_file);

async fn admin(app: &TestApp, method: &str, path: &str) -> (u16, Value) {
    let request = match method {
        "GET" => app.client.get(app.url(path)),
        _ => app.client.post(app.url(path)),
    };
    let r = request.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn readyz_state(app: &TestApp) -> String {
    let body: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["routes"][0]["state"].as_str().unwrap_or("").to_owned()
}

/// `otpgate routes ACTION smsc` against the running app's admin API.
fn cli_routes(app: &TestApp, args: &[&str]) -> String {
    let out = otpgate()
        .arg("routes")
        .args(args)
        .args(["--admin-url", &app.address])
        .env("OTPGATE_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("OTPGATE_DATABASE_URL", &app.database_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "otpgate routes {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn attempts_of(app: &TestApp, id: i64) -> i64 {
    crate::helpers::sql_i64s(
        app,
        &format!("SELECT attempts FROM delivery_jobs WHERE otp_id = {id}"),
    )
    .await[0]
}

async fn a_paused_route_keeps_sends_queued_until_it_is_resumed(backend: Backend) {
    let smsc = Smsc::start(&[]);
    let route = smpp_route(smsc.port, "secret");
    let app = spawn_app_with(backend, move |c| {
        configure(c);
        c.routes = vec![route];
    })
    .await;
    wait_until("the bind", || smsc.events("bind").len() == 1).await;

    let (status, paused) = admin(&app, "POST", "/admin/v1/routes/smsc/pause/").await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["data"]["state"], "paused");
    assert_eq!(readyz_state(&app).await, "paused");
    let (status, _) = admin(&app, "POST", "/admin/v1/routes/nosuch/pause/").await;
    assert_eq!(status, 404, "an unknown route is a 404");

    let mut ids = Vec::new();
    for n in 0..3 {
        let r = app.send_ok(&text_send(&format!("985102310{n}"))).await;
        ids.push(id_of(&r));
    }
    // The dispatcher polls every 50 ms: many polls pass while paused.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(smsc.accepted().is_empty(), "a paused route sends nothing");
    for id in &ids {
        assert_eq!(attempts_of(&app, *id).await, 0, "no attempt is spent");
    }

    let (status, resumed) = admin(&app, "POST", "/admin/v1/routes/smsc/resume/").await;
    assert_eq!(
        (status, &resumed["data"]["state"]),
        (200, &Value::from("active"))
    );
    smsc.accepted_at_least(3).await;
    for id in &ids {
        app.wait_for_status(*id, "sent").await;
    }

    // A drain with nothing in flight is a pause at once.
    let (_, drained) = admin(&app, "POST", "/admin/v1/routes/smsc/drain/").await;
    assert_eq!(drained["data"]["state"], "paused");
    let (_, listed) = admin(&app, "GET", "/admin/v1/routes/").await;
    assert_eq!(listed["data"][0]["name"], "smsc");
    assert_eq!(listed["data"][0]["state"], "paused");
    admin(&app, "POST", "/admin/v1/routes/smsc/resume/").await;

    // The same through the command line.
    assert!(cli_routes(&app, &["pause", "smsc"]).contains("smsc (text, smpp): paused"));
    let queued = id_of(&app.send_ok(&text_send("9851023110")).await);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(smsc.accepted().len(), 3, "paused from the command line");
    assert!(cli_routes(&app, &["list"]).contains("smsc (text, smpp): paused, 0 in flight"));
    assert!(cli_routes(&app, &["resume", "smsc"]).contains("smsc (text, smpp): active"));
    app.wait_for_status(queued, "sent").await;
    smsc.accepted_at_least(4).await;
    assert!(cli_routes(&app, &["drain", "smsc"]).contains("paused"));
    assert_eq!(readyz_state(&app).await, "paused");
    app.stop().await;
}

for_each_backend!(a_paused_route_keeps_sends_queued_until_it_is_resumed);

fn run_with_status(args: &[&str], config: Option<&Path>) -> (i32, String) {
    let mut command = otpgate();
    if let Some(c) = config {
        command.arg("--config").arg(c);
    }
    let out = command.args(args).env_remove("RUST_LOG").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_config_reports_every_problem_of_a_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
timezone = "Mars/Olympus"
lisen = "127.0.0.1:8080"
[limits]
per_number_max = "five"
denied_prefixes = ["977"]
[log]
level = "not a [filter"
[[routes]]
name = "ntc"
channel = "text"
driver = "smpp"
[routes.smpp]
system_id = "a-system-id-far-too-long"
[[routes]]
name = "fax"
channel = "fax"
driver = "log"
[[routes]]
name = "typo"
channel = "text"
driver = "log"
prefixs = ["+977"]
"#,
    )
    .unwrap();
    let (code, out) = run_with_status(&["check-config", bad.to_str().unwrap()], None);
    assert_eq!(code, 1, "{out}");
    for expected in [
        "unknown timezone \"Mars/Olympus\"",
        "unknown setting \"lisen\"",
        "limits.per_number_max",
        "limits.denied_prefixes: \"977\"",
        "log.level",
        "route ntc: smpp.system_id",
        "route fax: channel must be text or voice",
        "routes[2] (\"typo\"): prefixs: unknown field",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert_eq!(out.matches("problem: ").count(), 8, "{out}");
    assert!(out.contains("8 problems"), "{out}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "listen = \"127.0.0.1:0\"\n[[routes]]\nname = \"log\"\nchannel = \"text\"\ndriver = \"log\"\n").unwrap();
    let (code, out) = run_with_status(&["check-config", good.to_str().unwrap()], None);
    assert_eq!((code, out.contains("no problems")), (0, true), "{out}");
}

async fn doctor_checks_the_store_each_smsc_and_the_clock_one_line_each(backend: Backend) {
    let smsc = Smsc::start(&[]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    let file = dir.path().join("otpgate.toml");
    let live_only = smpp_table("live", smsc.port, None);
    std::fs::write(&file, config_file(&db, dir.path(), 5, "info", &live_only)).unwrap();

    // Before `migrate`: the store check fails (SQLite: no file; PostgreSQL: no tables).
    let (code, out) = run_with_status(&["doctor"], Some(&file));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL store:"), "{out}");

    let (code, out) = run_with_status(&["migrate"], Some(&file));
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_with_status(&["doctor"], Some(&file));
    assert_eq!(code, 0, "every check passes: {out}");
    for line in [
        "ok   config:",
        "ok   store:",
        "ok   secrets:",
        "ok   smsc live:",
        "ok   clock:",
    ] {
        assert_eq!(out.matches(line).count(), 1, "one {line:?} line in:\n{out}");
    }
    assert!(out.contains("accepted the bind"), "{out}");

    let with_dead = format!("{live_only}{}", smpp_table("dead", dead_port, None));
    std::fs::write(&file, config_file(&db, dir.path(), 5, "info", &with_dead)).unwrap();
    let (code, out) = run_with_status(&["doctor"], Some(&file));
    assert_eq!(code, 1, "a dead SMSC fails the doctor: {out}");
    assert!(out.contains("ok   smsc live:"), "{out}");
    assert!(
        out.contains(&format!("FAIL smsc dead: 127.0.0.1:{dead_port}")),
        "{out}"
    );
    assert!(out.contains("1 of 6 checks failed"), "{out}");
}

for_each_backend!(doctor_checks_the_store_each_smsc_and_the_clock_one_line_each);

async fn routes_view(app: &TestApp) -> Value {
    admin(app, "GET", "/admin/v1/routes/").await.1["data"].clone()
}

async fn a_drain_finishes_in_flight_then_pauses_and_another_route_takes_over(backend: Backend) {
    // The first SMSC answers each submit_sm 1.5 s late: a delivery stays in flight.
    let slow = Smsc::start(&["--resp-delay-ms", "1500"]);
    let other = Smsc::start(&[]);
    let mut first = smpp_route(slow.port, "secret");
    first.name = "slow".into();
    first.prefixes = vec!["+977985".into()];
    let mut second = smpp_route(other.port, "secret");
    second.name = "other".into();
    let app = spawn_app_with(backend, move |c| {
        configure(c);
        c.routes = vec![first, second];
    })
    .await;
    wait_until("both binds", || {
        slow.events("bind").len() == 1 && other.events("bind").len() == 1
    })
    .await;

    let in_flight = id_of(&app.send_ok(&text_send("9851023201")).await);
    wait_until("the submit_sm at the slow SMSC", || {
        !slow.events("submit_sm").is_empty()
    })
    .await;
    let (_, drained) = admin(&app, "POST", "/admin/v1/routes/slow/drain/").await;
    assert_eq!(drained["data"]["state"], "draining", "{drained}");
    assert_eq!(drained["data"]["in_flight"], 1);
    assert_eq!(readyz_state(&app).await, "draining");

    // Meanwhile a number both routes serve goes through the other one.
    let rerouted = id_of(&app.send_ok(&text_send("9851023202")).await);
    let record = app.wait_for_status(rerouted, "sent").await;
    assert_eq!(record.route.as_deref(), Some("other"));

    // The delivery in flight finishes on the slow route, which is then paused.
    let record = app.wait_for_status(in_flight, "sent").await;
    assert_eq!(record.route.as_deref(), Some("slow"));
    let mut state = String::new();
    for _ in 0..200 {
        state = routes_view(&app).await[0]["state"]
            .as_str()
            .unwrap()
            .to_owned();
        if state == "paused" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(state, "paused", "a drained route ends paused");
    assert_eq!(slow.events("submit_sm").len(), 1);
    app.stop().await;
}

for_each_backend!(a_drain_finishes_in_flight_then_pauses_and_another_route_takes_over);

#[test]
fn doctor_fails_on_missing_production_secrets_and_a_missing_espeak_ng_for_a_voice_route() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("otpgate.toml");
    let write = |espeak: &str| {
        std::fs::write(
            &file,
            format!(
                "mode = \"production\"\nadmin_listen = \"\"\n\
                 database_url = \"sqlite://{db}\"\n\
                 [delivery]\nlease_seconds = 600\n\
                 [voice]\nespeak_program = \"{espeak}\"\n\
                 [[routes]]\nname = \"trunk\"\nchannel = \"voice\"\ndriver = \"sip\"\n\
                 [routes.sip]\nproxy = \"127.0.0.1:5060\"\nlocal_ip = \"127.0.0.1\"\n\
                 domain = \"example.com\"\n",
                db = dir.path().join("otpgate.db").display(),
            ),
        )
        .unwrap();
    };
    write("/nonexistent/espeak-ng");
    let (code, out) = run_with_status(&["doctor"], Some(&file));
    assert_eq!(code, 1, "{out}");
    for line in [
        "ok   config:",
        "FAIL store:",
        "FAIL secrets:",
        "FAIL espeak-ng:",
        "ok   clock:",
    ] {
        assert_eq!(out.matches(line).count(), 1, "one {line:?} line in:\n{out}");
    }
    let secrets = out
        .lines()
        .find(|l| l.starts_with("FAIL secrets:"))
        .unwrap();
    assert!(
        secrets.contains("secrets.hmac_key") && secrets.contains("auth.token_secret"),
        "{secrets}"
    );

    write("espeak-ng");
    let (code, out) = run_with_status(&["doctor"], Some(&file));
    assert_eq!(code, 1, "the secrets are still missing: {out}");
    assert_eq!(
        out.matches("ok   espeak-ng:").count(),
        1,
        "espeak-ng is installed (scripts/install-test-deps.sh): {out}"
    );
}
