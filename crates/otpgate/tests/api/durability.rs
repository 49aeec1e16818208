//! A 200 means durable: the server is killed with SIGKILL while sends are in
//! flight, restarted on the same store, and every OTP that got a 200 is there,
//! with its job, and is then delivered.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Backend, database_url, text_send};

pub fn otpgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_otpgate"))
}

/// A server process that is killed when the test ends, passed or not.
pub struct Server(Child);

impl Server {
    /// SIGKILL: no shutdown hook runs.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `otpgate serve` on port 0 and returns it with its base URL.
pub fn start_server(db: &str, dir: &std::path::Path) -> (Server, String) {
    start_binary(otpgate(), db, &dir.join("deliveries.jsonl"))
}

/// Starts `serve` of the given binary (this one or an older release) on port 0,
/// delivering into the `log` file.
pub fn start_binary(mut binary: Command, db: &str, log: &std::path::Path) -> (Server, String) {
    let mut child = binary
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db])
        .env("OTPGATE_DEMO__CREATE_DEFAULT_ACCOUNT", "false")
        .env("OTPGATE_DELIVERY__LOG_PATH", log)
        .env("OTPGATE_LOG__LEVEL", "warn")
        // Jobs leased by a killed node come back after this long.
        .env("OTPGATE_DELIVERY__LEASE_SECONDS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting otpgate serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("otpgate exited before listening")
            .unwrap();
        if let Some(a) = line.strip_prefix("otpgate listening on ") {
            break a.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Server(child), address)
}

pub fn create_account(db: &str, name: &str, sms: i64) -> (i64, String) {
    let out = otpgate()
        .args([
            "accounts",
            "create",
            name,
            "--sms-credits",
            &sms.to_string(),
            "--phone-credits",
            "0",
            "--json",
            "--database-url",
            db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["account_id"].as_i64().unwrap(),
        v["api_key"].as_str().unwrap().to_owned(),
    )
}

async fn every_200_survives_sigkill(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    let (_, key) = create_account(&db, "acme", 1000);
    let (mut server, base) = start_server(&db, dir.path());
    let client = reqwest::Client::new();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..300 {
        let client = client.clone();
        let url = format!("{base}/api/v1/auths/send/otp/");
        let key = key.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .json(&text_send(&format!("98010{i:05}")))
                .send()
                .await;
            let id = match r {
                Ok(r) if r.status() == 200 => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["data"]["details"]["id"].as_i64()),
                _ => None,
            };
            let _ = tx.send(id);
        });
    }
    drop(tx);
    let mut acknowledged = HashSet::new();
    let mut answered = 0;
    while let Some(id) = rx.recv().await {
        answered += 1;
        if let Some(id) = id {
            acknowledged.insert(id);
        }
        if acknowledged.len() == 50 {
            server.kill().unwrap(); // SIGKILL: no shutdown hook runs.
            server.wait().unwrap();
        }
    }
    assert_eq!(answered, 300);
    assert!(
        acknowledged.len() >= 50,
        "only {} sends were acknowledged",
        acknowledged.len()
    );

    let (mut server, base) = start_server(&db, dir.path());
    let mut listed = HashSet::new();
    let mut url = Some(format!("{base}/api/v1/auths/list/send-otps/?limit=100"));
    let mut count = 0;
    while let Some(u) = url {
        let page: Value = client
            .get(&u)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        count = page["count"].as_i64().unwrap();
        for item in page["results"]["data"].as_array().unwrap() {
            listed.insert(item["id"].as_i64().unwrap());
        }
        url = page["next"].as_str().map(str::to_owned);
    }
    let lost: Vec<_> = acknowledged.difference(&listed).collect();
    assert!(
        lost.is_empty(),
        "acknowledged OTPs lost after kill -9: {lost:?}"
    );
    assert_eq!(listed.len() as i64, count);

    // Credits match the records exactly, and every record gets delivered.
    let store = otp_store::open(&db, &otp_store::StoreOptions::default())
        .await
        .unwrap();
    let account = store
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.name == "acme")
        .unwrap();
    assert_eq!(account.sms_credits, 1000 - count);
    let mut delivered = false;
    for _ in 0..400 {
        let depth: i64 = store
            .queue_depth()
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum();
        if depth == 0 {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(delivered, "the queue did not drain after the restart");
    server.kill().unwrap();
    server.wait().unwrap();
}

mod every_200_survives_sigkill {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::every_200_survives_sigkill(super::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::every_200_survives_sigkill(super::Backend::Postgres).await
    }
}
