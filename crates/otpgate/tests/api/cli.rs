//! The command line against both stores.

use serde_json::Value;

use crate::durability::{create_account, otpgate, start_server};
use crate::helpers::{Backend, database_url, text_send};

fn run(args: &[&str], db: &str) -> String {
    let out = otpgate()
        .args(args)
        .args(["--database-url", db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn accounts_credits_and_keys_from_the_command_line(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    assert!(run(&["migrate"], &db).contains("migrations applied"));
    let (id, key) = create_account(&db, "shop", 5);
    assert!(key.starts_with("otpg_"));
    let list: Value = serde_json::from_str(&run(&["accounts", "list", "--json"], &db)).unwrap();
    assert_eq!(list[0]["account_id"], id);
    assert_eq!(list[0]["sms_credits"], 5);
    run(
        &["credits", "add", "shop", "--sms", "10", "--phone", "2"],
        &db,
    );
    let list: Value = serde_json::from_str(&run(&["accounts", "list", "--json"], &db)).unwrap();
    assert_eq!(
        (
            list[0]["sms_credits"].as_i64(),
            list[0]["phone_credits"].as_i64()
        ),
        (Some(15), Some(2))
    );
    let out = otpgate()
        .args([
            "credits",
            "add",
            "shop",
            "--sms",
            "-100",
            "--database-url",
            &db,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a balance must not go negative");

    let second: Value = serde_json::from_str(&run(
        &["keys", "create", &id.to_string(), "--label", "ci", "--json"],
        &db,
    ))
    .unwrap();
    let second_key = second["api_key"].as_str().unwrap().to_owned();
    let keys: Value = serde_json::from_str(&run(&["keys", "list", "shop", "--json"], &db)).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(
        !keys.to_string().contains(&key[10..]),
        "key listings must not show secrets"
    );

    let (mut server, base) = start_server(&db, dir.path());
    let client = reqwest::Client::new();
    // Each send goes to its own number, clear of the per-number limits.
    let send = |k: String, number: &'static str| {
        let client = client.clone();
        let url = format!("{base}/api/v1/auths/send/otp/");
        async move {
            client
                .post(url)
                .bearer_auth(k)
                .json(&text_send(number))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(send(key.clone(), "9851023212").await, 200);
    assert_eq!(send(second_key.clone(), "9851023213").await, 200);
    run(&["keys", "revoke", &second_key], &db);
    assert_eq!(send(second_key, "9851023214").await, 401);
    assert_eq!(send(key, "9851023215").await, 200);
    server.kill().unwrap();
    server.wait().unwrap();
}

async fn the_first_serve_creates_a_default_account_and_prints_its_key_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    let mut child = otpgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db])
        .env("OTPGATE_DELIVERY__LOG_PATH", dir.path().join("d.jsonl"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::{BufRead, BufReader};
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
    let key = key.expect("the first start prints the demo key");
    let base = base.unwrap();
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/auths/send/otp/"))
        .bearer_auth(&key)
        .json(&text_send("9851023212"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    unsafe { libc_kill(child.id() as i32, 15) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a SIGTERM stops the server cleanly");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        !logs.contains(&key[10..]),
        "the key must never reach the logs"
    );
    // A second start finds the account and prints no key.
    let out = std::process::Command::new("timeout")
        .args([
            "3",
            env!("CARGO_BIN_EXE_otpgate"),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db,
        ])
        .env("OTPGATE_DELIVERY__LOG_PATH", dir.path().join("d.jsonl"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("otpg_"));
}

/// `otpgate accounts fallback` with `args` after the account, expected to fail.
fn refused(args: &[&str], db: &str) -> String {
    let out = otpgate()
        .args(["accounts", "fallback", "shop"])
        .args(args)
        .args(["--database-url", db])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} must be refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn an_accounts_default_fallback_is_set_and_printed_from_the_command_line(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(backend, &dir).await;
    run(&["migrate"], &db);
    let (id, _) = create_account(&db, "shop", 5);
    let shown = |db: &str| -> Value {
        serde_json::from_str(&run(&["accounts", "fallback", "shop", "--json"], db)).unwrap()
    };
    let none = serde_json::json!({"account_id": id, "fallback_channel": "none",
        "fallback_after_seconds": null, "fallback_voice_input": null});
    assert_eq!(shown(&db), none);
    assert!(
        run(&["accounts", "fallback", "shop"], &db).contains("no default fallback"),
        "without a flag it prints the default"
    );

    let set = run(
        &[
            "accounts",
            "fallback",
            &id.to_string(),
            "--channel",
            "voice",
            "--after",
            "45",
            "--voice",
            "np_rija",
        ],
        &db,
    );
    assert!(
        set.contains("a voice call after 45 seconds, read by np_rija"),
        "{set}"
    );
    let voice = serde_json::json!({"account_id": id, "fallback_channel": "voice",
        "fallback_after_seconds": 45, "fallback_voice_input": "np_rija"});
    assert_eq!(shown(&db), voice);

    for (args, says) in [
        (&["--channel", "voice"][..], "--voice is required"),
        (
            &["--channel", "voice", "--voice", "np_rija", "--after", "5"][..],
            "between 10 and 3600",
        ),
        (&["--channel", "voice", "--voice", "robot"][..], "np_rija"),
        (&["--channel", "sms"][..], "voice"),
        (
            &["--channel", "none", "--after", "30"][..],
            "--channel voice",
        ),
        (&["--after", "30"][..], "--channel"),
    ] {
        let stderr = refused(args, &db);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(shown(&db), voice, "{args:?} changed nothing");
    }
    let out = otpgate()
        .args(["accounts", "fallback", "nobody", "--database-url", &db])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no such account");

    run(
        &[
            "accounts",
            "fallback",
            "shop",
            "--channel",
            "voice",
            "--voice",
            "np_binod",
        ],
        &db,
    );
    assert_eq!(
        shown(&db)["fallback_after_seconds"],
        60,
        "the wait defaults to 60 seconds"
    );
    run(&["accounts", "fallback", "shop", "--channel", "none"], &db);
    assert_eq!(shown(&db), none);
}

mod an_accounts_default_fallback_is_set_and_printed_from_the_command_line {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::an_accounts_default_fallback_is_set_and_printed_from_the_command_line(
            super::Backend::Sqlite,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::an_accounts_default_fallback_is_set_and_printed_from_the_command_line(
            super::Backend::Postgres,
        )
        .await
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

mod accounts_credits_and_keys_from_the_command_line {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::accounts_credits_and_keys_from_the_command_line(super::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::accounts_credits_and_keys_from_the_command_line(super::Backend::Postgres).await
    }
}

mod the_first_serve_creates_a_default_account_and_prints_its_key_once {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::the_first_serve_creates_a_default_account_and_prints_its_key_once(
            super::Backend::Sqlite,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::the_first_serve_creates_a_default_account_and_prints_its_key_once(
            super::Backend::Postgres,
        )
        .await
    }
}
