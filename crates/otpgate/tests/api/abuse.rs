//! Hostile clients: oversized and numerous headers, slowloris connections, and
//! bodies built to hurt (invalid UTF-8, numbers of 1,000 digits, 100 KB
//! messages, deep nesting). Each is refused with a clear answer, nothing is
//! written or charged, and the server goes on serving everyone else. Raw TCP
//! where reqwest would not send the abuse.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, spawn_app_with, text_send};

/// How long a test waits for the server to close a connection it should close:
/// generous, the header timeout below is 2 s.
const CLOSE_WITHIN: Duration = Duration::from_secs(60);

fn host_port(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Writes `request` on a fresh connection and reads until the server closes
/// it. Returns what was read; a write or read cut short by a reset (the
/// server closing on unread input) ends the exchange like a close does.
async fn exchange(app: &TestApp, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(host_port(app)).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut reply = Vec::new();
    let read = tokio::time::timeout(CLOSE_WITHIN, async {
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

fn status_line(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    text.lines().next().unwrap_or("").to_owned()
}

/// The server still answers a health check and accepts a send.
async fn still_serving(app: &TestApp) {
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.send_ok(&text_send("9851023212")).await;
}

/// Nothing was written or charged by anything the test sent so far.
async fn nothing_written(app: &TestApp) {
    let (status, list) = app.list("").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["count"], 0, "{list}");
    assert_eq!(app.otp_count().await, 0);
    assert_eq!(app.balance().await, (100, 10));
}

async fn post_raw(app: &TestApp, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/api/v1/auths/send/otp/"))
        .bearer_auth(&app.key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The error envelope with this status, and its first error's field and code.
fn assert_envelope(status: u16, body: &Value, want: u16, field: &str, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["status"], want, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert!(body["data"].is_null(), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(body["errors"][0]["field"], field, "{body}");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
}

fn short_header_timeout(config: &mut otpgate::config::Config) {
    config.api.header_read_timeout_seconds = 2;
}

for_each_backend! {
    async fn a_100_kb_header_is_refused_and_the_server_keeps_serving(app) {
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(100 * 1024)
        );
        let reply = exchange(&app, request.as_bytes()).await;
        // hyper answers 431 once its header buffer is full; the kernel may turn
        // the close into a reset (our unread bytes), which loses the answer.
        assert!(
            reply.is_empty() || status_line(&reply).starts_with("HTTP/1.1 431"),
            "{}",
            status_line(&reply)
        );
        still_serving(&app).await;
        app.stop().await;
    }

    async fn headers_over_the_byte_limit_are_a_431(app) {
        // 40 headers of 1 KiB: over the default 32 KiB, all of it read by the
        // server before it answers, so the 431 always arrives.
        let mut request = "GET /healthz HTTP/1.1\r\nHost: x\r\n".to_owned();
        for i in 0..40 {
            request.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(1024)));
        }
        request.push_str("\r\n");
        let reply = exchange(&app, request.as_bytes()).await;
        assert!(status_line(&reply).starts_with("HTTP/1.1 431"), "{}", status_line(&reply));
        still_serving(&app).await;
        app.stop().await;
    }

    async fn too_many_headers_are_a_431(app) {
        let mut request = "GET /healthz HTTP/1.1\r\nHost: x\r\n".to_owned();
        for i in 0..200 {
            request.push_str(&format!("X-H{i}: v\r\n"));
        }
        request.push_str("\r\n");
        let reply = exchange(&app, request.as_bytes()).await;
        assert!(status_line(&reply).starts_with("HTTP/1.1 431"), "{}", status_line(&reply));
        still_serving(&app).await;
        app.stop().await;
    }
}

/// 50 clients that send a request line, then one header byte every 300 ms,
/// against a server with a 2-second header timeout.
async fn slowloris(backend: Backend) {
    let app = spawn_app_with(backend, short_header_timeout).await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let stream = TcpStream::connect(host_port(&app)).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        write
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        let trickle = tokio::spawn(async move {
            while write.write_all(b"z").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let closed = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            tokio::time::timeout(CLOSE_WITHIN, async {
                loop {
                    match read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await
            .map(|()| seen)
        });
        slow.push((trickle, closed));
    }

    // Everyone else is served while they hang on.
    still_serving(&app).await;
    let (status, _) = app.list("").await;
    assert_eq!(status, 200);

    for (trickle, closed) in slow {
        let seen = closed
            .await
            .unwrap()
            .expect("the server closes a connection that never finishes its headers");
        // Closed without an answer, or with 408; never a 200 for the
        // request it never finished.
        assert!(
            seen.is_empty() || status_line(&seen).starts_with("HTTP/1.1 408"),
            "{}",
            status_line(&seen)
        );
        trickle.abort();
    }
    still_serving(&app).await;
    app.stop().await;
}

mod slowloris_connections_are_closed_and_others_are_served_meanwhile {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        slowloris(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        slowloris(Backend::Postgres).await;
    }
}

for_each_backend! {
    async fn invalid_utf8_in_a_json_body_is_a_400_and_nothing_is_written(app) {
        let mut body = br#"{"number":"98"#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe, 0xc3]);
        body.extend_from_slice(br#"","message":"Code {otp}","sms_send_options":"text"}"#);
        let (status, reply) = post_raw(&app, "application/json", body).await;
        assert_envelope(status, &reply, 400, "non_field_errors", "parse_error");

        // A form decodes bad UTF-8 as U+FFFD, which no number holds.
        let form = b"number=98%FF%FE51023212&message=Code+%7Botp%7D&sms_send_options=text".to_vec();
        let (status, reply) = post_raw(&app, "application/x-www-form-urlencoded", form).await;
        assert_envelope(status, &reply, 400, "number", "invalid");

        nothing_written(&app).await;
        still_serving(&app).await;
        app.stop().await;
    }

    async fn numbers_of_1000_digits_are_400s_and_nothing_is_written(app) {
        let digits = "9".repeat(1000);

        // As a string: the phone number field refuses it by its length.
        let r = app.send(&text_send(&digits)).await;
        let status = r.status().as_u16();
        let reply: Value = r.json().await.unwrap();
        assert_envelope(status, &reply, 400, "number", "invalid");
        assert!(reply["errors"][0]["message"].as_str().unwrap().contains("32"), "{reply}");
        assert!(!reply.to_string().contains(&digits), "the input is not echoed");

        // As a JSON number it is out of every numeric range: a parse error.
        let body = format!(
            r#"{{"number":{digits},"message":"Code {{otp}}","sms_send_options":"text"}}"#
        );
        let (status, reply) = post_raw(&app, "application/json", body.into_bytes()).await;
        assert_envelope(status, &reply, 400, "non_field_errors", "parse_error");

        // In integer fields, as text: a field error each.
        let mut send = text_send("9851023212");
        send["otp_length"] = json!(digits);
        send["expiry_seconds"] = json!(digits);
        let r = app.send(&send).await;
        let status = r.status().as_u16();
        let reply: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{reply}");
        let fields: Vec<&str> = reply["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["otp_length", "expiry_seconds"], "{reply}");

        nothing_written(&app).await;
        still_serving(&app).await;
        app.stop().await;
    }

    async fn a_100_kb_message_is_a_413_and_nothing_is_written(app) {
        let mut send = text_send("9851023212");
        send["message"] = json!(format!("{{otp}}{}", "m".repeat(100 * 1024)));
        let r = app.send(&send).await;
        let status = r.status().as_u16();
        let reply: Value = r.json().await.unwrap();
        assert_eq!(status, 413, "{reply}");
        assert_eq!(reply["status"], 413);
        assert_eq!(reply["success"], false);

        // The same body without a Content-Length (chunked) is cut off as it streams.
        let body = serde_json::to_vec(&send).unwrap();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(8 * 1024).map(|c| Ok(c.to_vec())).collect();
        let r = app
            .client
            .post(app.url("/api/v1/auths/send/otp/"))
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        let reply: Value = r.json().await.unwrap();
        assert_eq!(reply["status"], 413);

        // Under the body limit but over the message limit: a field error.
        send["message"] = json!(format!("{{otp}}{}", "m".repeat(50 * 1024)));
        let r = app.send(&send).await;
        let status = r.status().as_u16();
        let reply: Value = r.json().await.unwrap();
        assert_envelope(status, &reply, 400, "message", "invalid");

        nothing_written(&app).await;
        still_serving(&app).await;
        app.stop().await;
    }

    async fn deeply_nested_json_is_a_400_and_nothing_is_written(app) {
        for nested in [
            format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)),
            format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)),
        ] {
            let body = format!(
                r#"{{"number":{nested},"message":"Code {{otp}}","sms_send_options":"text"}}"#
            );
            let (status, reply) = post_raw(&app, "application/json", body.into_bytes()).await;
            assert_envelope(status, &reply, 400, "non_field_errors", "parse_error");
        }
        nothing_written(&app).await;
        still_serving(&app).await;
        app.stop().await;
    }
}

for_each_backend! {
    async fn every_operation_with_a_body_documents_and_gives_its_413_and_415(app) {
        let doc: Value = app
            .client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // A new connection for each request: the server closes one whose body it
        // did not read, and a pooled client could pick that one up again.
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if operation.get("requestBody").is_none() {
                    continue;
                }
                let documented = operation["responses"].as_object().unwrap();
                for status in ["413", "415"] {
                    assert!(documented.contains_key(status), "{method} {path} lacks {status}");
                }
                // What a client gets for a body that is not JSON or a form, or too
                // big, is always one of the statuses the document lists.
                let url = app.url(&path.replace("{id}", "1").replace("{key_id}", "1"));
                let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let send = |content_type: &'static str, body: Vec<u8>| {
                    client
                        .request(method.clone(), &url)
                        .bearer_auth(&app.key)
                        .header("content-type", content_type)
                        .body(body)
                        .send()
                };
                let r = send("text/plain", b"hello".to_vec()).await.unwrap();
                let refused_before_the_body = [401, 404].contains(&r.status().as_u16());
                let status = r.status().as_u16().to_string();
                let reply: Value = r.json().await.unwrap();
                assert!(documented.contains_key(&status), "{method} {path}: {status} {reply}");
                assert_eq!(reply["success"], false, "{method} {path}: {reply}");
                checked += 1;

                match send("application/json", vec![b' '; 70 * 1024]).await {
                    Ok(r) => {
                        let status = r.status().as_u16().to_string();
                        let reply: Value = r.json().await.unwrap();
                        assert!(documented.contains_key(&status), "{method} {path}: {status} {reply}");
                        assert_eq!(reply["success"], false, "{method} {path}: {reply}");
                    }
                    // A route that refuses the caller (401, or 404 for the admin API
                    // without its token) answers before reading the body and closes
                    // the connection on the rest, which may reset it before the
                    // client reads the answer. Only there.
                    Err(e) => assert!(refused_before_the_body, "{method} {path}: {e}"),
                }
            }
        }
        assert!(checked >= 3, "only {checked} operations with a body");
    }
}

for_each_backend! {
    async fn page_numbers_and_offsets_at_the_top_of_their_range_are_empty_pages(app) {
        app.send_ok(&text_send("9851023212")).await;
        for query in [
            // Found by schemathesis: page * page size past u64, then a next link.
            "?total=1&cursor=1&offset=722&page=1519193414584035072&phone_number=9851023212",
            "?page=9223372036854775807",
            "?page=9223372036854775807&page_size=100",
            "?offset=9223372036854775807",
        ] {
            let (status, page) = app.list(query).await;
            assert_eq!(status, 200, "{query}: {page}");
            assert_eq!(page["results"]["data"], json!([]), "{query}: {page}");
        }
        // A cursor seeks below itself, whatever the offset says.
        let (status, page) = app
            .list("?offset=9223372036854775807&limit=100&cursor=9223372036854775807")
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["results"]["data"][0]["id"], 1, "{page}");
        let (status, page) = app.list("?offset=9223372036854775808").await;
        assert_eq!(status, 400, "{page}");
        assert_eq!(page["errors"][0]["field"], "offset", "{page}");
    }
}
