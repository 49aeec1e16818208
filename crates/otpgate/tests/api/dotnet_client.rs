//! A .NET app's requests replayed byte for byte over a raw TCP socket:
//! `HttpClient.PostAsJsonAsync` (System.Net.Http.Json) sends its body chunked,
//! because it serializes as it writes, with `Content-Type: application/json;
//! charset=utf-8`; System.Text.Json's default encoder writes every non-ASCII
//! character as `\uXXXX` (upper-case hex), and with its web defaults a model's
//! null properties go out as `null`. The app's numbers are `977` and ten
//! digits. `GetFromJsonAsync` sends no `Accept`. One kept-alive connection, as
//! .NET's pool keeps it. One test per row of the table in
//! docs/compatibility.md, in development and production mode, on both stores.

use std::time::Duration;

use otpgate::config::Mode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conformance::{self, codes_shown, user_with_key};
use crate::for_each_backend;
use crate::helpers::TestApp;

/// How long a reply may take on a loaded 2-core machine before the test fails.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// `new { number = "9779851023212", message = "तपाईंको कोड {otp} हो",
/// sms_send_options = "text", otp_options = "generated", otp_length = 6 }`.
const STRING_NUMBER_BODY: &str = r#"{"number":"9779851023212","message":"\u0924\u092A\u093E\u0908\u0902\u0915\u094B \u0915\u094B\u0921 {otp} \u0939\u094B","sms_send_options":"text","otp_options":"generated","otp_length":6}"#;
const NEPALI: &str = "तपाईंको कोड {otp} हो";

/// A model with `long Number` and nullable `Otp` and `VoiceInput` left unset.
const LONG_NUMBER_BODY: &str = r#"{"number":9779861489014,"message":"Code: {otp} \u2014 don\u0027t share it","sms_send_options":"text","otp":null,"voice_input":null}"#;

/// One connection to the server, used as .NET's pool uses it.
struct Connection {
    stream: TcpStream,
    host: String,
    buffered: Vec<u8>,
}

/// A reply: status, headers (names lower-cased) and the JSON body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Connection {
    async fn open(app: &TestApp) -> Connection {
        let host = app.address.trim_start_matches("http://").to_owned();
        let stream = TcpStream::connect(&host).await.unwrap();
        Connection {
            stream,
            host,
            buffered: Vec::new(),
        }
    }

    /// `PostAsJsonAsync(path, model)`: the head, then the serialized model as
    /// one chunk (hex size in upper case), then the last chunk.
    async fn post_as_json(&mut self, path: &str, key: &str, json: &str) -> Reply {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
             Transfer-Encoding: chunked\r\nContent-Type: application/json; charset=utf-8\r\n\r\n",
            self.host
        );
        self.stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = format!("{:X}\r\n{json}\r\n0\r\n\r\n", json.len());
        self.stream.write_all(chunk.as_bytes()).await.unwrap();
        self.read_reply().await
    }

    /// `GetFromJsonAsync(path)`.
    async fn get_from_json(&mut self, path: &str, key: &str) -> Reply {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\r\n",
            self.host
        );
        self.stream.write_all(head.as_bytes()).await.unwrap();
        self.read_reply().await
    }

    /// Reads one reply, framed by `Content-Length` or chunked; the connection
    /// stays open for the next request.
    async fn read_reply(&mut self) -> Reply {
        tokio::time::timeout(ANSWER_WITHIN, self.read_reply_now())
            .await
            .expect("the server did not answer")
    }

    async fn read_reply_now(&mut self) -> Reply {
        let head_end = loop {
            if let Some(at) = find(&self.buffered, b"\r\n\r\n") {
                break at;
            }
            self.fill().await;
        };
        let head = String::from_utf8(self.buffered[..head_end].to_vec()).unwrap();
        self.buffered.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse::<usize>().unwrap());
        let body = match length {
            Some(length) => self.take(length).await,
            None => self.take_chunked().await,
        };
        let body = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn fill(&mut self) {
        let mut buf = [0u8; 8192];
        let n = self.stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        self.buffered.extend_from_slice(&buf[..n]);
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buffered.len() < n {
            self.fill().await;
        }
        self.buffered.drain(..n).collect()
    }

    async fn take_line(&mut self) -> String {
        loop {
            if let Some(at) = find(&self.buffered, b"\r\n") {
                let line = String::from_utf8(self.buffered[..at].to_vec()).unwrap();
                self.buffered.drain(..at + 2);
                return line;
            }
            self.fill().await;
        }
    }

    async fn take_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let size = self.take_line().await;
            let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
            if size == 0 {
                // No trailers from this server: the empty line ends the body.
                assert_eq!(self.take_line().await, "");
                return body;
            }
            body.extend(self.take(size).await);
            assert_eq!(self.take_line().await, "");
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

const SEND: &str = "/api/v1/auths/send/otp/";

for_each_backend! {
    modes: [
        development => (Mode::Development, conformance::development),
        production => (Mode::Production, conformance::production),
    ];

    async fn dotnet_post_as_json_sends_a_chunked_escaped_body_with_a_977_string_number(app, _mode) {
        let user = user_with_key(&app).await;
        let mut dotnet = Connection::open(&app).await;
        let reply = dotnet.post_as_json(SEND, &user.key, STRING_NUMBER_BODY).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.header("content-type").unwrap().starts_with("application/json"));
        // What a `ReadFromJsonAsync<TingTingReply>()` model binds.
        let body = &reply.body;
        assert_eq!(body["success"], true);
        assert_eq!(body["message"], "OTP Sent Successfully.");
        let d = &body["data"]["details"];
        let code = d["otp"].as_str().unwrap();
        assert_eq!(code.len(), 6);
        assert_eq!(d["number"], "9851023212");
        assert_eq!(d["message"], NEPALI.replace("{otp}", code));
        // The stored OTP: the number parsed from 977 + 10 digits, the text unescaped.
        let stored = app.store.otp(app.account_id, d["id"].as_i64().unwrap()).await.unwrap().unwrap();
        assert_eq!(stored.number.display(), "9851023212");
        assert_eq!(stored.number.as_str(), "+9779851023212");
        assert_eq!(stored.template.as_str(), NEPALI);
        assert_eq!(stored.code.shown(), code);
        assert_eq!(stored.otp_option.as_str(), "generated");
        assert_eq!(stored.channel.as_str(), "text");
        assert_eq!(stored.credits_used, 1);
        assert_eq!(app.balance().await, (99, 10));
    }

    async fn dotnet_post_as_json_sends_the_number_as_a_json_number_and_nulls_for_unset_fields(app, _mode) {
        let user = user_with_key(&app).await;
        let mut dotnet = Connection::open(&app).await;
        let reply = dotnet.post_as_json(SEND, &user.key, LONG_NUMBER_BODY).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let d = &reply.body["data"]["details"];
        let code = d["otp"].as_str().unwrap();
        assert_eq!(d["number"], "9861489014");
        assert_eq!(d["otp_options"], "generated");
        assert_eq!(d["message"], format!("Code: {code} \u{2014} don't share it"));
        let stored = app.store.otp(app.account_id, d["id"].as_i64().unwrap()).await.unwrap().unwrap();
        assert_eq!(stored.number.as_str(), "+9779861489014");
        assert_eq!(stored.template.as_str(), "Code: {otp} \u{2014} don't share it");
        assert_eq!(stored.voice, None);
    }

    async fn dotnet_get_from_json_lists_the_sent_codes(app, mode) {
        let user = user_with_key(&app).await;
        let mut dotnet = Connection::open(&app).await;
        let sent = dotnet.post_as_json(SEND, &user.key, STRING_NUMBER_BODY).await;
        assert_eq!(sent.status, 200, "{}", sent.body);
        let code = sent.body["data"]["details"]["otp"].as_str().unwrap().to_owned();
        // The same kept-alive connection, as .NET's pool reuses it.
        let reply = dotnet.get_from_json("/api/v1/auths/list/send-otps/?limit=10&offset=0", &user.key).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let list = &reply.body;
        assert_eq!(list["count"], 1);
        let item = &list["results"]["data"][0];
        assert_eq!(item["phone_number"], "9851023212");
        if codes_shown(mode) {
            assert_eq!(item["otp"], code.as_str());
            assert_eq!(item["message"], NEPALI.replace("{otp}", &code));
        } else {
            assert_eq!(item["otp"], "******");
            assert_eq!(item["message"], NEPALI.replace("{otp}", "******"));
        }
    }

    async fn dotnet_the_sixth_send_to_a_number_in_ten_minutes_is_a_429_with_retry_after(app, _mode) {
        let user = user_with_key(&app).await;
        let mut dotnet = Connection::open(&app).await;
        // A resend at once passes (no cooldown by default): five in a row.
        for n in 1..=5 {
            let reply = dotnet.post_as_json(SEND, &user.key, STRING_NUMBER_BODY).await;
            assert_eq!(reply.status, 200, "send {n}: {}", reply.body);
        }
        // The sixth: EnsureSuccessStatusCode throws; the app shows an outage.
        let reply = dotnet.post_as_json(SEND, &user.key, STRING_NUMBER_BODY).await;
        assert_eq!(reply.status, 429, "{}", reply.body);
        let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!(wait > 0 && wait <= 600, "{wait}");
        assert_eq!(reply.body["success"], false);
        assert_eq!(reply.body["errors"][0]["code"], "rate_limited");
        assert_eq!(reply.body["data"]["retry_after"], json!(wait));
        assert_eq!(app.otp_count().await, 5, "the refused send wrote nothing");
        assert_eq!(app.balance().await, (95, 10));
    }
}
