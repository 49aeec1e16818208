//! SMPP over TLS against a real TLS terminator: stunnel (Debian `stunnel4`)
//! on 127.0.0.1 in front of the node-smpp SMSC of `peers/smsc`, with
//! certificates made by `openssl` for each test. Needs stunnel, openssl,
//! Node.js and `peers/smsc/install.sh` (`scripts/install-test-deps.sh`
//! installs them); without them these tests fail, they never skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use smpp::pdu::{SubmitSm, data_coding};
use smpp::tls::{TlsConfig, TlsConfigError, parse_sha256_pin};
use smpp::{BindConfig, Client, Error};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): run scripts/install-test-deps.sh"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A CA, a server certificate it signed for 127.0.0.1 and localhost, and a
/// second CA that signed nothing here. Files in a temporary directory.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            run(
                d,
                "openssl",
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "30",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-subj",
                    &format!("/CN=otpgate test {ca}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        run(
            d,
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "smsc.key",
                "-out",
                "smsc.csr",
                "-subj",
                "/CN=otpgate test smsc",
            ],
        );
        std::fs::write(
            d.join("smsc.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(
            d,
            "openssl",
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
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `openssl x509 -noout -fingerprint -sha256` of a certificate file, as
    /// an operator would copy it into `tls_cert_sha256`.
    fn fingerprint(&self, name: &str) -> String {
        let out = run(
            self.dir.path(),
            "openssl",
            &["x509", "-in", name, "-noout", "-fingerprint", "-sha256"],
        );
        out.trim().rsplit('=').next().unwrap().to_owned()
    }
}

/// The node-smpp SMSC and its JSON events.
struct Smsc {
    _child: tokio::process::Child,
    port: u16,
    events: mpsc::UnboundedReceiver<Value>,
}

impl Smsc {
    async fn start() -> Smsc {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../peers/smsc");
        assert!(
            dir.join("node_modules/smpp/package.json").exists(),
            "node-smpp is not installed: run peers/smsc/install.sh"
        );
        let mut child = tokio::process::Command::new("node")
            .args(["smsc.js", "--port", "0"])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node is not installed: run scripts/install-test-deps.sh");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, mut events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap());
            }
        });
        let listening = timeout(WAIT, events.recv()).await.unwrap().unwrap();
        let port = listening["port"].as_u64().expect("a listening event") as u16;
        Smsc {
            _child: child,
            port,
            events,
        }
    }

    /// Every event so far.
    fn drain(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }

    async fn next(&mut self, name: &str) -> Value {
        timeout(WAIT, async {
            loop {
                let event = self.events.recv().await.expect("smsc.js exited");
                if event["event"] == name {
                    return event;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {name} event from smsc.js"))
    }
}

/// stunnel on 127.0.0.1 terminating TLS with `cert`/`key`, forwarding to the SMSC.
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
                "foreground = yes\npid =\nsyslog = no\ndebug = 4\n\n[smsc]\n\
                 accept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{smsc_port}\n\
                 cert = {}\nkey = {}\n",
                certs.path("smsc.pem").display(),
                certs.path("smsc.key").display()
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

/// An SMSC behind stunnel, with the certificates it uses.
async fn smsc_behind_tls() -> (Certs, Smsc, Stunnel) {
    let certs = Certs::make();
    let smsc = Smsc::start().await;
    let stunnel = Stunnel::start(&certs, smsc.port).await;
    (certs, smsc, stunnel)
}

fn bind_config() -> BindConfig {
    let mut config = BindConfig::new("otpgate", "secret");
    config.response_timeout = Duration::from_secs(5);
    config
}

async fn bind_and_submit(tls: &TlsConfig, stunnel: &Stunnel, smsc: &mut Smsc) {
    let (client, _inbound) = Client::connect_tls(("127.0.0.1", stunnel.port), tls, bind_config())
        .await
        .expect("binds over TLS");
    let bind = smsc.next("bind").await;
    assert_eq!(bind["ok"], true, "{bind}");
    let sm = SubmitSm::new(
        "OTPGATE",
        "9779841234567",
        data_coding::SMSC_DEFAULT,
        Bytes::from_static(b"Your code is 123456"),
    );
    let resp = client.submit(&sm).await.unwrap();
    assert!(resp.is_ok());
    let event = smsc.next("submit_sm").await;
    assert_eq!(event["text"], "Your code is 123456");
    assert_eq!(event["message_id"], resp.message_id.as_str());
    client.unbind().await.unwrap();
}

async fn refused(tls: &TlsConfig, stunnel: &Stunnel, smsc: &mut Smsc) -> String {
    let err = Client::connect_tls(("127.0.0.1", stunnel.port), tls, bind_config())
        .await
        .expect_err("the certificate is refused");
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    // Nothing reached the SMSC: no bind, no password.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = smsc.drain();
    assert!(
        events.iter().all(|e| e["event"] != "bind"),
        "the SMSC saw a bind: {events:?}"
    );
    err.to_string()
}

#[tokio::test]
async fn a_certificate_from_the_configured_ca_binds_and_carries_messages() {
    let (certs, mut smsc, stunnel) = smsc_behind_tls().await;
    let tls = TlsConfig::ca_file("127.0.0.1", &certs.path("ca.pem")).unwrap();
    bind_and_submit(&tls, &stunnel, &mut smsc).await;
    // By DNS name too: the certificate names localhost.
    let tls = TlsConfig::ca_file("localhost", &certs.path("ca.pem")).unwrap();
    bind_and_submit(&tls, &stunnel, &mut smsc).await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_before_the_bind() {
    let (certs, mut smsc, stunnel) = smsc_behind_tls().await;
    let tls = TlsConfig::ca_file("127.0.0.1", &certs.path("other-ca.pem")).unwrap();
    let why = refused(&tls, &stunnel, &mut smsc).await;
    assert_eq!(
        why,
        "TLS handshake with the SMSC failed: invalid peer certificate: UnknownIssuer"
    );
    // The public roots do not know a private CA either.
    let tls = TlsConfig::public_roots("127.0.0.1").unwrap();
    let why = refused(&tls, &stunnel, &mut smsc).await;
    assert!(why.contains("UnknownIssuer"), "{why}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let (certs, mut smsc, stunnel) = smsc_behind_tls().await;
    let tls = TlsConfig::ca_file("smsc.example.net", &certs.path("ca.pem")).unwrap();
    let why = refused(&tls, &stunnel, &mut smsc).await;
    assert!(
        why.contains("certificate not valid for name \"smsc.example.net\""),
        "{why}"
    );
}

#[tokio::test]
async fn the_pinned_certificate_binds_whoever_signed_it() {
    let (certs, mut smsc, stunnel) = smsc_behind_tls().await;
    let pin = parse_sha256_pin(&certs.fingerprint("smsc.pem")).unwrap();
    // A name the certificate does not carry: a pin does not look at names.
    let tls = TlsConfig::pinned("smsc.example.net", pin).unwrap();
    bind_and_submit(&tls, &stunnel, &mut smsc).await;
}

#[tokio::test]
async fn a_certificate_other_than_the_pinned_one_is_refused_naming_both_digests() {
    let (certs, mut smsc, stunnel) = smsc_behind_tls().await;
    let wanted = certs.fingerprint("ca.pem");
    let shown = certs.fingerprint("smsc.pem");
    let tls = TlsConfig::pinned("127.0.0.1", parse_sha256_pin(&wanted).unwrap()).unwrap();
    let why = refused(&tls, &stunnel, &mut smsc).await;
    assert_eq!(
        why,
        format!(
            "TLS handshake with the SMSC failed: invalid peer certificate: \
             the SMSC's certificate has SHA-256 {shown}, not the pinned {wanted}"
        )
    );
}

#[tokio::test]
async fn a_plain_smsc_without_tls_fails_the_handshake_within_the_response_timeout() {
    let mut smsc = Smsc::start().await;
    let tls = TlsConfig::pinned("127.0.0.1", [0; 32]).unwrap();
    let mut config = bind_config();
    config.response_timeout = Duration::from_secs(1);
    let err = Client::connect_tls(("127.0.0.1", smsc.port), &tls, config)
        .await
        .expect_err("node-smpp does not speak TLS here");
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    assert!(smsc.drain().iter().all(|e| e["event"] != "bind"));
}

#[test]
fn pins_are_read_with_or_without_colons_in_either_case() {
    let colons = "AB:".repeat(31) + "CD";
    let pin = parse_sha256_pin(&colons).unwrap();
    assert_eq!(pin[0], 0xAB);
    assert_eq!(pin[31], 0xCD);
    assert_eq!(
        parse_sha256_pin(&colons.replace(':', "").to_lowercase()).unwrap(),
        pin
    );
    assert_eq!(parse_sha256_pin(&format!(" {colons}\n")).unwrap(), pin);
}

#[test]
fn a_pin_that_is_not_32_bytes_of_hex_is_refused() {
    for bad in [
        "",
        "AB:CD",
        &"ab".repeat(33),
        &"zz".repeat(32),
        &"é".repeat(32),
    ] {
        assert!(
            matches!(parse_sha256_pin(bad), Err(TlsConfigError::Pin)),
            "{bad:?}"
        );
    }
}

#[test]
fn a_ca_file_that_is_missing_or_holds_no_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = TlsConfig::ca_file("127.0.0.1", &missing).unwrap_err();
    assert!(matches!(err, TlsConfigError::CaFile { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = TlsConfig::ca_file("127.0.0.1", &empty).unwrap_err();
    assert!(
        matches!(err, TlsConfigError::NoCertificates { .. }),
        "{err:?}"
    );

    let err = TlsConfig::public_roots("not a host name!").unwrap_err();
    assert!(matches!(err, TlsConfigError::ServerName(_)), "{err:?}");
}
