//! The SMPP settings operators tune (validity, addresses, service_type,
//! priority, data_coding, bind mode, the PDU trace) and SMPP over TLS, each
//! checked on the wire by the node-smpp peer (`peers/smsc`), and behind
//! stunnel for TLS. Needs Node.js with `peers/smsc/install.sh`, stunnel and
//! openssl (`scripts/install-test-deps.sh`); without them these tests fail,
//! they never skip.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use otpgate::config::{Config, DriverConfig, RouteConfig};
use otpgate::delivery::smpp::{SmppConfig, ValidityPeriod};
use otpgate::startup::Application;
use serde_json::{Value, json};

use crate::durability::{create_account, otpgate};
use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, database_url, spawn_app_with, test_config, text_send};
use crate::smsc::{Smsc, id_of, smpp_route, wait_until};

/// A route to the peer on `port` serving `prefix`, with `tweak` applied to its `[routes.smpp]`.
fn route(name: &str, port: u16, prefix: &str, tweak: impl FnOnce(&mut SmppConfig)) -> RouteConfig {
    let mut route = smpp_route(port, "secret");
    route.name = name.into();
    route.prefixes = vec![prefix.into()];
    let DriverConfig::Smpp(smpp) = &mut route.driver else {
        panic!("smpp_route is an smpp route");
    };
    tweak(smpp);
    route
}

async fn app_with_routes(backend: Backend, routes: Vec<RouteConfig>) -> TestApp {
    spawn_app_with(backend, move |c| c.routes = routes).await
}

/// The accepted submit_sm the peer saw for `destination`, once it has.
async fn submit_to(smsc: &Smsc, destination: &str) -> Value {
    wait_until(&format!("a submit_sm to {destination}"), || {
        smsc.accepted()
            .iter()
            .any(|e| e["destination"] == destination)
    })
    .await;
    smsc.accepted()
        .into_iter()
        .find(|e| e["destination"] == destination)
        .unwrap()
}

/// Seconds of an SMPP relative time, `YYMMDDhhmmss000R` with no years or months.
fn relative_seconds(time: &str) -> u64 {
    assert_eq!(time.len(), 16, "{time:?}");
    assert!(
        time.starts_with("0000") && time.ends_with("000R"),
        "{time:?}"
    );
    let field = |i: usize| time[i..i + 2].parse::<u64>().unwrap();
    field(4) * 86_400 + field(6) * 3_600 + field(8) * 60 + field(10)
}

async fn by_default_the_validity_is_the_codes_remaining_life_and_addresses_are_international(
    backend: Backend,
) {
    let smsc = Smsc::start(&["--receipts", "delivered"]);
    let app = app_with_routes(backend, vec![route("smsc", smsc.port, "+977", |_| {})]).await;
    let ten_minutes = app.send_ok(&text_send("9851023212")).await;
    let one_minute = app
        .send_ok(
            &json!({"number": "9861023212", "message": "Your code is {otp}",
                         "sms_send_options": "text", "expiry_seconds": 60}),
        )
        .await;
    app.wait_for_status(id_of(&ten_minutes), "delivered").await;
    app.wait_for_status(id_of(&one_minute), "delivered").await;

    let s = submit_to(&smsc, "9779851023212").await;
    let validity = relative_seconds(s["validity_period"].as_str().unwrap());
    assert!((1..=600).contains(&validity), "{s}");
    assert!(
        validity > 60,
        "ten minutes of life cannot have shrunk below one: {s}"
    );
    let short = submit_to(&smsc, "9779861023212").await;
    let validity = relative_seconds(short["validity_period"].as_str().unwrap());
    assert!((1..=60).contains(&validity), "{short}");

    for field in ["service_type", "schedule_delivery_time"] {
        assert_eq!(s[field], "", "{field}: {s}");
    }
    let wire = |k: &str| s[k].as_u64().unwrap();
    assert_eq!(
        (
            wire("source_ton"),
            wire("source_npi"),
            wire("dest_ton"),
            wire("dest_npi")
        ),
        (5, 0, 1, 1),
        "alphanumeric sender, international destination: {s}"
    );
    assert_eq!(s["source"], "otpgate");
    assert_eq!((wire("priority_flag"), wire("data_coding")), (0, 0), "{s}");
    assert_eq!(
        (
            wire("protocol_id"),
            wire("replace_if_present_flag"),
            wire("registered_delivery")
        ),
        (0, 0, 1),
        "{s}"
    );
    app.stop().await;
}

async fn the_source_ton_and_npi_follow_the_sender_unless_overridden(backend: Backend) {
    let smsc = Smsc::start(&[]);
    let port = smsc.port;
    let routes = vec![
        route("alpha", port, "+97798510", |c| {
            c.source_addr = "ACME".into()
        }),
        route("short", port, "+97798511", |c| {
            c.source_addr = "34001".into()
        }),
        route("long", port, "+97798512", |c| {
            c.source_addr = "+9779801234567".into()
        }),
        route("fixed", port, "+97798513", |c| {
            c.source_addr = "ACME".into();
            c.source_ton = Some(6);
            c.source_npi = Some(9);
        }),
    ];
    let app = app_with_routes(backend, routes).await;
    let cases = [
        ("9851012345", "ACME", 5, 0),
        ("9851112345", "34001", 3, 0),
        ("9851212345", "9779801234567", 1, 1),
        ("9851312345", "ACME", 6, 9),
    ];
    for (number, ..) in cases {
        app.send_ok(&text_send(number)).await;
    }
    for (number, source, ton, npi) in cases {
        let s = submit_to(&smsc, &format!("977{number}")).await;
        assert_eq!(
            (
                s["source"].as_str(),
                s["source_ton"].as_u64(),
                s["source_npi"].as_u64()
            ),
            (Some(source), Some(ton), Some(npi)),
            "{s}"
        );
    }
    app.stop().await;
}

async fn national_destinations_drop_the_country_code_and_their_ton_npi_can_be_set(
    backend: Backend,
) {
    let smsc = Smsc::start(&[]);
    let port = smsc.port;
    let routes = vec![
        route("national", port, "+97798510", |c| {
            c.destination_format = "national".into()
        }),
        route("national_unknown", port, "+97798511", |c| {
            c.destination_format = "national".into();
            c.destination_ton = Some(0);
            c.destination_npi = Some(0);
        }),
        route("international_unknown", port, "+97798512", |c| {
            c.destination_ton = Some(0);
            c.destination_npi = Some(1);
        }),
    ];
    let app = app_with_routes(backend, routes).await;
    for number in ["9851012345", "9851112345", "9851212345"] {
        app.send_ok(&text_send(number)).await;
    }
    for (destination, ton, npi) in [
        ("9851012345", 2, 1),
        ("9851112345", 0, 0),
        ("9779851212345", 0, 1),
    ] {
        let s = submit_to(&smsc, destination).await;
        assert_eq!(
            (s["dest_ton"].as_u64(), s["dest_npi"].as_u64()),
            (Some(ton), Some(npi)),
            "{s}"
        );
    }
    assert_eq!(
        smsc.accepted().len(),
        3,
        "each OTP went once, in its route's form"
    );
    app.stop().await;
}

async fn service_type_priority_data_coding_and_validity_reach_the_smsc_as_configured(
    backend: Backend,
) {
    let smsc = Smsc::start(&["--receipts", "delivered"]);
    let port = smsc.port;
    let routes = vec![
        route("tuned", port, "+97798510", |c| {
            c.service_type = "OTP".into();
            c.priority_flag = 3;
            c.gsm_data_coding = 1;
            c.validity_period = ValidityPeriod::Seconds(300);
        }),
        route("smsc_default", port, "+97798511", |c| {
            c.validity_period = ValidityPeriod::Named("smsc_default".into());
            c.priority_flag = 1;
        }),
    ];
    let app = app_with_routes(backend, routes).await;
    let gsm = app.send_ok(&text_send("9851012345")).await;
    let ucs2 = app
        .send_ok(
            &json!({"number": "9851022222", "message": "तपाईंको कोड {otp} हो",
                         "sms_send_options": "text"}),
        )
        .await;
    let plain = app.send_ok(&text_send("9851112345")).await;
    for reply in [&gsm, &ucs2, &plain] {
        app.wait_for_status(id_of(reply), "delivered").await;
    }

    let s = submit_to(&smsc, "9779851012345").await;
    assert_eq!(s["service_type"], "OTP", "{s}");
    assert_eq!(s["priority_flag"], 3, "{s}");
    assert_eq!(
        s["data_coding"], 1,
        "GSM text with gsm_data_coding = 1: {s}"
    );
    assert_eq!(s["validity_period"], "000000000500000R", "{s}");
    let u = submit_to(&smsc, "9779851022222").await;
    assert_eq!(u["data_coding"], 8, "UCS-2 text stays 8: {u}");
    assert_eq!(u["text"], ucs2["data"]["details"]["message"], "{u}");
    assert_eq!(u["service_type"], "OTP", "{u}");
    let p = submit_to(&smsc, "9779851112345").await;
    assert_eq!(p["validity_period"], "", "smsc_default sends none: {p}");
    assert_eq!(
        (p["priority_flag"].as_u64(), p["data_coding"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(p["service_type"], "", "{p}");
    app.stop().await;
}

async fn ready(app: &TestApp) -> Value {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `/readyz`'s routes once `done` holds for them.
async fn routes_when(app: &TestApp, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Value::Null;
    for _ in 0..400 {
        last = ready(app).await;
        if let Some(routes) = last["routes"].as_array()
            && done(routes)
        {
            return routes.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("readyz never got there: {last}");
}

async fn separate_transmitter_and_receiver_binds_submit_on_one_and_take_receipts_on_the_other(
    backend: Backend,
) {
    let smsc = Smsc::start(&["--receipts", "delivered"]);
    let routes = vec![route("split", smsc.port, "+977", |c| {
        c.bind_mode = "transmitter_receiver".into();
    })];
    let app = app_with_routes(backend, routes).await;
    let routes = routes_when(&app, |r| {
        r.len() == 2 && r.iter().all(|c| c["status"] == "bound")
    })
    .await;
    let mut connections: Vec<&str> = routes
        .iter()
        .map(|c| c["connection"].as_str().unwrap())
        .collect();
    connections.sort();
    assert_eq!(connections, ["otpgate#0", "otpgate#rx0"]);

    let reply = app.send_ok(&text_send("9851023212")).await;
    app.wait_for_status(id_of(&reply), "delivered").await;
    let binds = smsc.events("bind");
    let session_of = |mode: &str| {
        let matching: Vec<&Value> = binds.iter().filter(|b| b["mode"] == mode).collect();
        assert_eq!(matching.len(), 1, "one {mode} bind: {binds:?}");
        matching[0]["session"].clone()
    };
    let transmitter = session_of("transmitter");
    let receiver = session_of("receiver");
    assert!(
        binds.iter().all(|b| b["mode"] != "transceiver"),
        "{binds:?}"
    );
    let s = submit_to(&smsc, "9779851023212").await;
    assert_eq!(
        s["session"], transmitter,
        "submitted on the transmitter: {s}"
    );
    wait_until("the receipt's deliver_sm_resp", || {
        !smsc.events("deliver_sm_resp").is_empty()
    })
    .await;
    let acks = smsc.events("deliver_sm_resp");
    assert!(acks.iter().all(|a| a["session"] == receiver), "{acks:?}");
    app.stop().await;
}

/// A change that spoils a route's settings.
type Spoil = Box<dyn Fn(&mut SmppConfig)>;

/// Settings that must stop the start, and words the error must contain.
fn bad_settings() -> Vec<(&'static str, Spoil)> {
    vec![
        ("priority_flag", Box::new(|c| c.priority_flag = 4)),
        ("gsm_data_coding", Box::new(|c| c.gsm_data_coding = 8)),
        (
            "service_type",
            Box::new(|c| c.service_type = "TOOLONG".into()),
        ),
        ("source_ton", Box::new(|c| c.source_ton = Some(7))),
        ("source_npi", Box::new(|c| c.source_npi = Some(2))),
        ("destination_ton", Box::new(|c| c.destination_ton = Some(9))),
        ("destination_npi", Box::new(|c| c.destination_npi = Some(5))),
        (
            "destination_format",
            Box::new(|c| c.destination_format = "e164".into()),
        ),
        ("bind_mode", Box::new(|c| c.bind_mode = "receiver".into())),
        (
            "validity_period",
            Box::new(|c| c.validity_period = ValidityPeriod::Seconds(0)),
        ),
        (
            "validity_period",
            Box::new(|c| c.validity_period = ValidityPeriod::Seconds(31 * 86_400)),
        ),
        (
            "validity_period",
            Box::new(|c| c.validity_period = ValidityPeriod::Named("forever".into())),
        ),
        (
            "at most 11 characters",
            Box::new(|c| c.source_addr = "ACME-Payments".into()),
        ),
        ("source_addr", Box::new(|c| c.source_addr = String::new())),
        (
            "need smpp.tls = true",
            Box::new(|c| c.tls_cert_sha256 = "00".repeat(32)),
        ),
        (
            "tls_cert_sha256",
            Box::new(|c| {
                c.tls = true;
                c.tls_cert_sha256 = "not-a-digest".into();
            }),
        ),
        (
            "not both",
            Box::new(|c| {
                c.tls = true;
                c.tls_cert_sha256 = "00".repeat(32);
                c.tls_ca_file = "/etc/ssl/certs/ca-certificates.crt".into();
            }),
        ),
        (
            "is not a DNS name or an IP address",
            Box::new(|c| {
                c.tls = true;
                c.tls_server_name = "smsc example".into();
            }),
        ),
        (
            "no-such-ca.pem",
            Box::new(|c| {
                c.tls = true;
                c.tls_ca_file = "/nonexistent/no-such-ca.pem".into();
            }),
        ),
    ]
}

async fn each_bad_setting_stops_the_start_with_an_error_naming_it(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(backend, &dir).await;
    // The same settings with nothing wrong start: the refusals below are the settings'.
    let mut config: Config = test_config(&url, &dir);
    config.routes = vec![route("ntc", 9, "+977", |_| {})];
    let app = Application::build(config)
        .await
        .expect("good settings start");
    drop(app);
    for (words, bad) in bad_settings() {
        let mut config = test_config(&url, &dir);
        config.routes = vec![route("ntc", 9, "+977", |c| bad(c))];
        let err = match Application::build(config).await {
            Ok(_) => panic!("a bad {words} was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("route ntc"), "{err}");
        assert!(err.contains(words), "{words}: {err}");
        assert!(!err.contains("secret"), "the password leaked: {err}");
    }
}

// ------------------------------------------------------------ SMPP over TLS --

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is not installed: run scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A CA, the SMSC's certificate for 127.0.0.1 signed by it, and another CA.
struct Certs(tempfile::TempDir);

impl Certs {
    fn make() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, pem, subj) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN={ca}"),
            );
            let mut args = vec!["req", "-x509", "-days", "30"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &pem, "-subj", &subj]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            openssl(d, &args);
        }
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend([
            "-keyout", "smsc.key", "-out", "smsc.csr", "-subj", "/CN=smsc",
        ]);
        openssl(d, &args);
        std::fs::write(
            d.join("smsc.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "smsc.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                "smsc.ext",
                "-out",
                "smsc.pem",
            ],
        );
        Certs(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.path().join(name).display().to_string()
    }

    fn fingerprint(&self, name: &str) -> String {
        let out = openssl(
            self.0.path(),
            &["x509", "-in", name, "-noout", "-fingerprint", "-sha256"],
        );
        out.trim().rsplit('=').next().unwrap().to_owned()
    }
}

/// stunnel on 127.0.0.1 terminating TLS in front of the SMSC peer.
struct Stunnel {
    child: Child,
    port: u16,
}

impl Stunnel {
    async fn start(certs: &Certs, smsc_port: u16) -> Stunnel {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = certs.path(&format!("stunnel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\nsyslog = no\n[smsc]\naccept = 127.0.0.1:{port}\n\
                 connect = 127.0.0.1:{smsc_port}\ncert = {}\nkey = {}\n",
                certs.path("smsc.pem"),
                certs.path("smsc.key")
            ),
        )
        .unwrap();
        let child = Command::new("stunnel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "stunnel is not installed: apt-get install stunnel4 (scripts/install-test-deps.sh)",
            );
        let stunnel = Stunnel { child, port };
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return stunnel;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("stunnel did not listen on 127.0.0.1:{port}");
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_route(port: u16, trust: impl FnOnce(&mut SmppConfig)) -> RouteConfig {
    route("smsc", port, "+977", |c| {
        c.tls = true;
        trust(c);
    })
}

async fn an_smsc_behind_tls_takes_otps_with_its_ca_or_its_pinned_certificate(backend: Backend) {
    let certs = Certs::make();
    let smsc = Smsc::start(&["--receipts", "delivered"]);
    let stunnel = Stunnel::start(&certs, smsc.port).await;
    let ca = certs.path("ca.pem");
    let by_ca = tls_route(stunnel.port, |c| c.tls_ca_file = ca);
    let app = app_with_routes(backend, vec![by_ca]).await;
    let reply = app.send_ok(&text_send("9851023212")).await;
    app.wait_for_status(id_of(&reply), "delivered").await;
    assert_eq!(submit_to(&smsc, "9779851023212").await["status"], 0);
    app.stop().await;

    let pin = certs.fingerprint("smsc.pem");
    let pinned = tls_route(stunnel.port, |c| {
        c.tls_cert_sha256 = pin;
        // A pin does not look at names.
        c.tls_server_name = "smsc.example.net".into();
    });
    let app = app_with_routes(backend, vec![pinned]).await;
    let reply = app.send_ok(&text_send("9861023212")).await;
    app.wait_for_status(id_of(&reply), "delivered").await;
    assert_eq!(submit_to(&smsc, "9779861023212").await["status"], 0);
    app.stop().await;
}

async fn a_wrong_ca_or_a_pin_mismatch_is_refused_shows_in_readyz_and_nothing_is_lost(
    backend: Backend,
) {
    let certs = Certs::make();
    let smsc = Smsc::start(&["--receipts", "delivered"]);
    let stunnel = Stunnel::start(&certs, smsc.port).await;
    let other_ca = certs.path("other-ca.pem");
    let wrong_pin = certs.fingerprint("ca.pem");
    let cases: Vec<(RouteConfig, String)> = vec![
        (
            tls_route(stunnel.port, |c| c.tls_ca_file = other_ca),
            "invalid peer certificate: UnknownIssuer".into(),
        ),
        (
            tls_route(stunnel.port, |c| c.tls_cert_sha256 = wrong_pin.clone()),
            format!(
                "invalid peer certificate: the SMSC's certificate has SHA-256 {}, not the pinned {wrong_pin}",
                certs.fingerprint("smsc.pem")
            ),
        ),
    ];
    for (route, why) in cases {
        let app = app_with_routes(backend, vec![route]).await;
        let reply = app.send_ok(&text_send("9851023212")).await;
        let routes = routes_when(&app, |r| r[0]["status"] == "down").await;
        let detail = routes[0]["detail"].as_str().unwrap();
        assert_eq!(detail, format!("TLS handshake with the SMSC failed: {why}"));
        let metrics = app.metrics_text().await;
        assert!(
            metrics.contains("otpgate_smpp_total{route=\"smsc\",event=\"tls_refused\"}"),
            "{metrics}"
        );
        let otp = app
            .store
            .otp(app.account_id, id_of(&reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(otp.status.as_str(), "queued", "waits in the outbox");
        app.stop().await;
    }
    assert!(
        smsc.events("bind").is_empty(),
        "no bind (no password) went past a refused certificate"
    );
}

/// A child process killed when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `otpgate serve` with `config_toml` as its config file and JSON logs: the
/// process, its base URL and its log lines as they come.
fn serve_with(
    db: &str,
    dir: &Path,
    config_toml: &str,
    log_level: &str,
) -> (Killed, String, std::sync::mpsc::Receiver<Value>) {
    let config = dir.join("otpgate.toml");
    std::fs::write(&config, config_toml).unwrap();
    let mut child = otpgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db])
        .arg("--config")
        .arg(&config)
        .env("OTPGATE_DEMO__CREATE_DEFAULT_ACCOUNT", "false")
        .env("OTPGATE_DELIVERY__LOG_PATH", dir.join("deliveries.jsonl"))
        .env("OTPGATE_SECRETS__FILE", dir.join("secrets.toml"))
        .env("OTPGATE_LOG__LEVEL", log_level)
        .env("OTPGATE_LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting otpgate serve");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let entry = serde_json::from_str(&line).unwrap_or_else(|_| json!({"raw": line}));
            let _ = tx.send(entry);
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let process = Killed(child);
    let base = loop {
        let line = stdout
            .next()
            .expect("otpgate exited before listening")
            .unwrap();
        if let Some(a) = line.strip_prefix("otpgate listening on ") {
            break a.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in stdout {});
    (process, base, rx)
}

/// The first log entry matching `want`, and every entry read before it.
fn entry_where(
    rx: &std::sync::mpsc::Receiver<Value>,
    want: impl Fn(&Value) -> bool,
) -> (Value, Vec<Value>) {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(entry) if want(&entry) => return (entry, seen),
            Ok(entry) => seen.push(entry),
            Err(_) => panic!("no such log entry; the log so far: {seen:#?}"),
        }
    }
}

fn message_of(entry: &Value) -> &str {
    entry["message"].as_str().unwrap_or("")
}

fn route_toml(port: u16, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"ntc\"\nchannel = \"text\"\ndriver = \"smpp\"\n[routes.smpp]\n\
         host = \"127.0.0.1\"\nport = {port}\nsystem_id = \"otpgate\"\npassword = \"secret\"\n\
         reconnect_max_seconds = 1\n{extra}"
    )
}

async fn a_refused_certificate_is_one_clear_error_line_in_the_log(backend: Backend) {
    let certs = Certs::make();
    let smsc = Smsc::start(&[]);
    let stunnel = Stunnel::start(&certs, smsc.port).await;
    let wrong_pin = certs.fingerprint("ca.pem");
    let cases = [
        (
            format!("tls_ca_file = \"{}\"\n", certs.path("other-ca.pem")),
            "tls_ca_file",
            "invalid peer certificate: UnknownIssuer".to_owned(),
        ),
        (
            format!("tls_cert_sha256 = \"{wrong_pin}\"\n"),
            "tls_cert_sha256",
            format!(
                "invalid peer certificate: the SMSC's certificate has SHA-256 {}, not the pinned {wrong_pin}",
                certs.fingerprint("smsc.pem")
            ),
        ),
    ];
    for (trust, setting, why) in cases {
        let dir = tempfile::tempdir().unwrap();
        let db = database_url(backend, &dir).await;
        let extra = format!("tls = true\n{trust}");
        let (_server, _base, log) =
            serve_with(&db, dir.path(), &route_toml(stunnel.port, &extra), "info");
        let (entry, _) = entry_where(&log, |e| message_of(e).starts_with("SMPP over TLS"));
        assert_eq!(entry["level"], "ERROR", "{entry}");
        assert_eq!(entry["route"], "ntc", "{entry}");
        assert_eq!(entry["bind"], "otpgate#0", "{entry}");
        assert!(
            message_of(&entry).contains(setting),
            "it says what to check: {entry}"
        );
        let error = entry["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("TLS handshake with the SMSC failed: {why}")),
            "{entry}"
        );
        assert!(!entry.to_string().contains("secret"), "{entry}");
        // Logged once per change of state, not once per retry.
        std::thread::sleep(Duration::from_millis(2_500));
        let again: Vec<Value> = log
            .try_iter()
            .filter(|e| message_of(e).starts_with("SMPP over TLS"))
            .collect();
        assert!(again.is_empty(), "{again:#?}");
    }
    assert!(smsc.events("bind").is_empty());
}

async fn the_pdu_trace_logs_each_pdu_at_debug_level_without_the_code_or_the_password(
    backend: Backend,
) {
    let smsc = Smsc::start(&["--receipts", "delivered"]);
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    let toml = route_toml(smsc.port, "pdu_trace = true\nservice_type = \"OTP\"\n");
    let (_server, base, log) = serve_with(&db, dir.path(), &toml, "info,smpp::pdu=debug");
    let (_, binding) = entry_where(&log, |e| message_of(e) == "SMPP bind is up");
    let (_id, key) = create_account(&db, "shop", 5);
    let reply: Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/auths/send/otp/"))
        .bearer_auth(&key)
        .json(&text_send("9851023212"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = reply["data"]["details"]["otp"].as_str().unwrap().to_owned();
    let (receipt, before) = entry_where(&log, |e| message_of(e).starts_with("deliver_sm "));
    let mut trace: Vec<Value> = binding
        .into_iter()
        .chain(before)
        .filter(|e| e["target"] == "smpp::pdu")
        .collect();
    trace.push(receipt);
    assert!(trace.iter().all(|e| e["level"] == "DEBUG"), "{trace:#?}");
    assert!(
        trace.iter().all(|e| e["bind"] == "ntc/otpgate#0"),
        "{trace:#?}"
    );
    let find = |start: &str, dir: &str| {
        trace
            .iter()
            .find(|e| message_of(e).starts_with(start) && e["dir"] == dir)
            .unwrap_or_else(|| panic!("no traced {start} ({dir}): {trace:#?}"))
    };
    let bind = find("bind_transceiver ", "out");
    assert!(message_of(bind).contains("system_id=\"otpgate\""), "{bind}");
    find("bind_transceiver_resp ", "in");
    let submit = message_of(find("submit_sm ", "out"));
    assert!(submit.contains("service_type=\"OTP\""), "{submit}");
    assert!(
        submit.contains("destination=1/1:\"9779851023212\""),
        "{submit}"
    );
    assert!(submit.contains("validity_period=\"0000000"), "{submit}");
    find("submit_sm_resp ", "in");
    for entry in &trace {
        let text = entry.to_string();
        assert!(!text.contains(&code), "the code is in the trace: {text}");
        assert!(
            !text.contains("Your code is"),
            "the message text is in the trace: {text}"
        );
        assert!(
            !text.contains("secret"),
            "the password is in the trace: {text}"
        );
    }
}

for_each_backend!(
    by_default_the_validity_is_the_codes_remaining_life_and_addresses_are_international,
    the_source_ton_and_npi_follow_the_sender_unless_overridden,
    national_destinations_drop_the_country_code_and_their_ton_npi_can_be_set,
    service_type_priority_data_coding_and_validity_reach_the_smsc_as_configured,
    separate_transmitter_and_receiver_binds_submit_on_one_and_take_receipts_on_the_other,
    each_bad_setting_stops_the_start_with_an_error_naming_it,
    an_smsc_behind_tls_takes_otps_with_its_ca_or_its_pinned_certificate,
    a_wrong_ca_or_a_pin_mismatch_is_refused_shows_in_readyz_and_nothing_is_lost,
    a_refused_certificate_is_one_clear_error_line_in_the_log,
    the_pdu_trace_logs_each_pdu_at_debug_level_without_the_code_or_the_password
);
