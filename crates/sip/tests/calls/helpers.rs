//! Shared by the peer tests: tool checks, ports, scratch folders, the client under test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use sip::{CallerId, Credentials, Password, SipClient, TrunkConfig};

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Fails (never skips) when `program` is missing, naming the Debian package to install.
pub fn require(program: &str, version_arg: &str, package: &str) {
    let found = std::process::Command::new(program)
        .arg(version_arg)
        .output()
        .is_ok();
    assert!(
        found,
        "`{program}` is not installed, and these tests need the real program. \
         Install it with: apt-get install -y {package}"
    );
}

/// A port that was free on 127.0.0.1 for both UDP and TCP a moment ago.
pub fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind((LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// A port that is free for UDP and TCP, with the next port free for TCP too (baresip
/// listens for TLS there).
pub fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX && std::net::TcpListener::bind((LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
}

/// A fresh, empty folder for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("sip-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A trunk on 127.0.0.1 with timers short enough for tests.
pub fn trunk(port: u16) -> TrunkConfig {
    let mut config = TrunkConfig::new(SocketAddr::new(LOCALHOST, port), LOCALHOST, "127.0.0.1");
    config.t1 = Duration::from_millis(100);
    config
}

pub fn client(config: TrunkConfig) -> SipClient {
    SipClient::new(config).unwrap()
}

pub fn caller() -> CallerId {
    CallerId::new("9779700000000", Some("Gateway Test")).unwrap()
}

pub fn credentials() -> Credentials {
    Credentials {
        username: "trunkuser".into(),
        password: Password::new("s3cret-pass"),
    }
}

/// A 440 Hz tone with a 3 Hz amplitude wobble, for tests where the content does not matter.
pub fn tone(seconds: f64) -> Vec<i16> {
    let n = (seconds * 8000.0) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let envelope = 0.6 + 0.4 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
            (12_000.0 * envelope * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
        })
        .collect()
}

/// The test's whole-call bound: a hung peer fails the test instead of hanging it.
pub const CALL_BOUND: Duration = Duration::from_secs(60);
