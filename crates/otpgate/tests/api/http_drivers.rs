//! The HTTP delivery drivers against local peers.
//!
//! Sparrow, Aakash and the generic driver talk to a small axum server on
//! 127.0.0.1 that records every request and answers what the test scripts, in the
//! vendors' published shapes (or never, to run past the driver's timeout). The
//! TingTing relay talks to the real thing: an otpgate `Application` on port 0.
//!
//! Jobs come from a real store (a SQLite file per test): the OTP is accepted and
//! its job claimed as the dispatcher would, so every driver sees the records it
//! sees in service.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use otp_domain::channel::{Channel, OtpOption, Voice};
use otp_domain::code::OtpCode;
use otp_domain::message::MessageTemplate;
use otp_domain::phone::PhoneNumber;
use otp_domain::sender::SenderId;
use otp_domain::{credits, segments};
use otp_store::{Claim, ClaimedJob, NewOtp, SharedStore, StoreOptions, now_micros};
use otpgate::config::Secret;
use otpgate::delivery::http::aakash::{self, AakashConfig, AakashDriver};
use otpgate::delivery::http::generic::{
    BodyType, Escape, GenericHttpConfig, GenericHttpDriver, Method as HttpMethod, Template,
    TemplateError, Values,
};
use otpgate::delivery::http::sparrow::{self, SparrowConfig, SparrowDriver};
use otpgate::delivery::http::tingting::{self, TingTingConfig, TingTingDriver};
use otpgate::delivery::http::{BuildError, scrub};
use otpgate::delivery::{DeliveryOutcome, Driver};

const CODE: &str = "482193";
const NEPALI_TEMPLATE: &str = "तपाईंको कोड {otp} हो। यो कसैलाई नदिनुहोला।";
/// Everything an escaper can get wrong in one message.
const AWKWARD_TEMPLATE: &str = "Code \"{otp}\" & more\nतपाईंको कोड {otp} हो +100%/?#";

// ---------------------------------------------------------------------------
// Jobs from a real store

/// A store to take jobs from, as the dispatcher would.
struct Source {
    store: SharedStore,
    account: i64,
    _dir: tempfile::TempDir,
}

impl Source {
    async fn new() -> Source {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("source.db").display());
        let store = otp_store::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        let account = store.create_account("source", 1000, 1000).await.unwrap().id;
        Source {
            store,
            account,
            _dir: dir,
        }
    }

    /// Accepts an OTP to `number` (as a client would write it) and claims its
    /// delivery job.
    async fn job(
        &self,
        number: &str,
        template: &str,
        code: &str,
        channel: Channel,
        voice: Option<(Voice, f64)>,
    ) -> ClaimedJob {
        let template = MessageTemplate::parse(template).unwrap();
        let code = OtpCode::from_stored(code.to_owned());
        let message = template.render(&code);
        let seg = segments::analyze(&message);
        let accepted = self
            .store
            .accept(NewOtp {
                account_id: self.account,
                api_key_id: None,
                number: PhoneNumber::parse(number).unwrap(),
                template,
                otp: code.clone(),
                otp_option: OtpOption::Generated,
                channel,
                voice: voice.map(|(v, _)| v),
                length_factor: voice.map(|(_, f)| f),
                company_name: None,
                segments: if channel == Channel::Text {
                    seg.segments
                } else {
                    0
                },
                cost: credits::cost(channel, &seg),
                created_at: now_micros(),
                expires_at: now_micros() + 600_000_000,
                spend_day: 0,
                spend_day_ends: i64::MAX,
                resend_of: None,
                fallback: otp_store::fallback::SendFallback::None,
            })
            .await
            .unwrap();
        let now = now_micros();
        let jobs = self
            .store
            .claim_jobs(Claim {
                node: "test".into(),
                channel,
                limit: 10,
                now,
                lease_until: now + 60_000_000,
            })
            .await
            .unwrap();
        let job = jobs
            .into_iter()
            .find(|j| j.otp.id == accepted.id)
            .expect("the job just queued");
        assert_eq!(job.otp.code.plain(), Some(&code));
        job
    }

    async fn text(&self, number: &str, template: &str) -> ClaimedJob {
        self.job(number, template, CODE, Channel::Text, None).await
    }
}

// ---------------------------------------------------------------------------
// A scripted HTTP peer

#[derive(Debug, Clone)]
struct Received {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as an ordered list of form fields.
    fn form(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_bytes(&self.body).expect("a form body")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn query_pairs(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_str(self.query.as_deref().unwrap_or("")).unwrap()
    }
}

#[derive(Debug, Clone)]
enum Answer {
    Json(u16, String),
    /// Never answers: the driver's timeout has to end the request.
    Hang,
}

#[derive(Clone)]
struct Peer {
    base: String,
    received: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<Answer>>,
}

impl Peer {
    async fn start() -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = Peer {
            base: format!("http://{}", listener.local_addr().unwrap()),
            received: Arc::default(),
            answer: Arc::new(Mutex::new(Answer::Json(200, "{}".into()))),
        };
        let app = Router::new().fallback(record).with_state(peer.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        peer
    }

    fn answer(&self, status: u16, body: Value) {
        self.answer_raw(status, &body.to_string());
    }

    fn answer_raw(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = Answer::Json(status, body.to_owned());
    }

    fn hang(&self) {
        *self.answer.lock().unwrap() = Answer::Hang;
    }

    /// Everything received since the last call.
    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }

    /// The one request received since the last call.
    fn only(&self) -> Received {
        let mut all = self.take();
        assert_eq!(all.len(), 1, "expected exactly one request: {all:?}");
        all.pop().unwrap()
    }
}

async fn record(
    State(peer): State<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    peer.received.lock().unwrap().push(Received {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body: body.to_vec(),
    });
    let answer = peer.answer.lock().unwrap().clone();
    match answer {
        Answer::Json(status, body) => (
            StatusCode::from_u16(status).unwrap(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Answer::Hang => std::future::pending().await,
    }
}

/// An address nothing listens on.
async fn closed_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    address
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[track_caller]
fn assert_sent(outcome: &DeliveryOutcome, id: Option<&str>) {
    assert_eq!(
        outcome,
        &DeliveryOutcome::Sent {
            provider_message_id: id.map(str::to_owned)
        }
    );
}

/// The error of a `Retry`, or a panic naming what came instead.
#[track_caller]
fn retry_error(outcome: DeliveryOutcome) -> String {
    match outcome {
        DeliveryOutcome::Retry { error } => error,
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[track_caller]
fn failed_error(outcome: DeliveryOutcome) -> String {
    match outcome {
        DeliveryOutcome::Failed { error } => error,
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// An error string must carry none of the secrets of the delivery.
#[track_caller]
fn assert_clean(error: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!error.contains(secret), "{error:?} leaks {secret:?}");
    }
}

/// The timeout of drivers pointed at a peer that never answers. Every other
/// driver keeps the default 10 s, so a loaded machine cannot turn an answer into
/// a timeout.
const SHORT_TIMEOUT_MS: u64 = 200;

// ---------------------------------------------------------------------------
// Sparrow SMS

mod sparrow_sms {
    use super::*;

    const TOKEN: &str = "v2_sparrow-token-9f8e7d";

    async fn driver(peer: &Peer) -> SparrowDriver {
        let mut config = SparrowConfig::new(TOKEN, "OTPGATE");
        config.base_url = peer.base.clone();
        SparrowDriver::new(config).unwrap()
    }

    async fn impatient_driver(peer: &Peer) -> SparrowDriver {
        let mut config = SparrowConfig::new(TOKEN, "OTPGATE");
        config.base_url = peer.base.clone();
        config.timeout_ms = SHORT_TIMEOUT_MS;
        SparrowDriver::new(config).unwrap()
    }

    /// The whole path: the admin API sets the account's sender on the
    /// route, the send is accepted and its job claimed with it, the router
    /// hands it to the route, and Sparrow's `from` carries it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_accounts_sender_on_a_sparrow_route_is_the_from_sparrow_receives() {
        let peer = Peer::start().await;
        peer.answer(
            200,
            json!({"count": 1, "response_code": 200, "response": "queued", "message_id": "sp-1"}),
        );
        let mut config = SparrowConfig::new(TOKEN, "OTPGATE");
        config.base_url = peer.base.clone();
        let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, move |c| {
            crate::users::configure(c);
            c.routes = vec![otpgate::config::RouteConfig {
                name: "sparrow".into(),
                channel: Channel::Text,
                prefixes: Vec::new(),
                driver: otpgate::config::DriverConfig::Sparrow(config),
                weight: None,
            }];
        })
        .await;
        let r = app
            .client
            .put(app.url(&format!(
                "/admin/v1/accounts/{}/senders/sparrow/",
                app.account_id
            )))
            .bearer_auth(crate::users::ADMIN_TOKEN)
            .json(&json!({"sender": "ACME"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (_, other_key) = app.new_account("other", 10, 0).await;
        for (key, from) in [(&app.key, "ACME"), (&other_key, "OTPGATE")] {
            let r = app
                .send_as(key, &crate::helpers::text_send("9851023212"))
                .await;
            assert_eq!(r.status(), 200);
            crate::smsc::wait_until("a request at the Sparrow peer", || {
                !peer.received.lock().unwrap().is_empty()
            })
            .await;
            let form = peer.only().form();
            assert!(
                form.contains(&("from".to_owned(), from.to_owned())),
                "{form:?}"
            );
        }
    }

    #[tokio::test]
    async fn sends_token_sender_national_number_and_devanagari_text_as_a_form() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9851023212", NEPALI_TEMPLATE).await;
        peer.answer(
            200,
            json!({"count": 1, "response_code": 200,
                   "response": "1 mesages has been queued for delivery",
                   "message_id": "sp-77"}),
        );

        let outcome = driver(&peer).await.deliver(&job).await;

        assert_sent(&outcome, Some("sp-77"));
        let got = peer.only();
        assert_eq!(got.method, Method::POST);
        assert_eq!(got.path, "/v2/sms/");
        assert_eq!(
            got.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            got.form(),
            pairs(&[
                ("token", TOKEN),
                ("from", "OTPGATE"),
                ("to", "9851023212"),
                ("text", &job.otp.message()),
            ])
        );
        // The text is UTF-8, percent-encoded: "त" is E0 A4 A4.
        let raw = String::from_utf8(got.body).unwrap();
        assert!(raw.contains("%E0%A4%A4"), "{raw}");
        assert!(job.otp.message().contains(CODE));
    }

    #[tokio::test]
    async fn success_without_a_message_id_is_sent_without_one() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9801234567", "Your code is {otp}").await;
        peer.answer(
            200,
            json!({"count": 1, "response_code": 200, "response": "1 mesages has been queued for delivery"}),
        );
        assert_sent(&driver(&peer).await.deliver(&job).await, None);
    }

    #[tokio::test]
    async fn every_documented_refusal_maps_to_its_outcome() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;
        let driver = driver(&peer).await;
        let cases = [
            (1002, "invalid token", false),
            (1007, "invalid receiver", true),
            (1008, "invalid sender", false),
            (1011, "no valid receiver", true),
            (1012, "no credits", false),
            (1013, "insufficient credits", false),
            (1099, "undocumented refusal", false),
        ];
        for (code, what, permanent) in cases {
            peer.answer(
                403,
                json!({"response_code": code, "response": format!("refused {TOKEN}")}),
            );
            let outcome = driver.deliver(&job).await;
            let error = if permanent {
                failed_error(outcome)
            } else {
                retry_error(outcome)
            };
            assert_eq!(
                error,
                format!("upstream answered 403 (code {code}: {what})")
            );
            assert_clean(&error, &[TOKEN, CODE]);
        }
        assert_eq!(peer.take().len(), cases.len());
    }

    #[tokio::test]
    async fn outages_and_throttling_are_retried() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;
        let driver = driver(&peer).await;
        for status in [500, 502, 503, 429, 408] {
            peer.answer_raw(status, "<html>busy</html>");
            let error = retry_error(driver.deliver(&job).await);
            assert_eq!(error, format!("upstream answered {status}"));
        }
    }

    #[tokio::test]
    async fn a_slow_upstream_is_retried_after_the_timeout() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;
        peer.hang();
        let error = retry_error(impatient_driver(&peer).await.deliver(&job).await);
        assert_eq!(
            error,
            format!("no reply from the upstream within {SHORT_TIMEOUT_MS} ms")
        );
        assert_eq!(peer.take().len(), 1);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_retried_without_naming_the_url() {
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;
        let mut config = SparrowConfig::new(TOKEN, "OTPGATE");
        config.base_url = closed_address().await;
        let error = retry_error(SparrowDriver::new(config).unwrap().deliver(&job).await);
        assert!(
            error.starts_with("could not connect to the upstream: "),
            "{error}"
        );
        assert_clean(&error, &[TOKEN, CODE, "127.0.0.1", "/v2/sms"]);
    }

    #[tokio::test]
    async fn a_number_outside_nepal_fails_without_a_request() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("+14155550123", "Your code is {otp}").await;
        let error = failed_error(driver(&peer).await.deliver(&job).await);
        assert_eq!(error, "Sparrow SMS delivers to Nepali numbers only");
        assert!(peer.take().is_empty());
    }

    #[test]
    fn outcome_mapping_without_a_vendor_code() {
        // A 200 is Sparrow's "queued" even when its body cannot be read.
        assert_sent(&sparrow::outcome(200, b"not json"), None);
        assert_sent(
            &sparrow::outcome(200, br#"{"response_code":"200","message_id":42}"#),
            Some("42"),
        );
        // A 200 carrying a refusal code is that refusal.
        assert!(matches!(
            sparrow::outcome(200, br#"{"response_code":1007}"#),
            DeliveryOutcome::Failed { .. }
        ));
        assert_eq!(
            retry_error(sparrow::outcome(403, b"")),
            "upstream answered 403"
        );
        assert_eq!(
            retry_error(sparrow::outcome(301, b"")),
            "upstream answered 301"
        );
        assert_eq!(
            failed_error(sparrow::outcome(400, b"<html/>")),
            "upstream rejected the request (400)"
        );
    }

    #[test]
    fn config_reads_defaults_and_hides_the_token() {
        let config: SparrowConfig =
            serde_json::from_value(json!({"token": TOKEN, "sender": "OTPGATE"})).unwrap();
        assert_eq!(config.base_url, "https://api.sparrowsms.com");
        assert_eq!(config.timeout_ms, 10_000);
        assert_eq!(config.capacity, 32);
        let shown = format!("{config:?}");
        assert!(
            shown.contains("[redacted]") && !shown.contains(TOKEN),
            "{shown}"
        );
        let unknown = serde_json::from_value::<SparrowConfig>(
            json!({"token": TOKEN, "sender": "X", "tokn": 1}),
        );
        assert!(unknown.is_err());
        let driver = SparrowDriver::new(config).unwrap();
        assert_eq!((driver.name(), driver.capacity()), ("sparrow", 32));
        assert!(matches!(
            SparrowDriver::new(SparrowConfig::new("", "OTPGATE")),
            Err(BuildError::Invalid { field: "token", .. })
        ));
    }
}

// ---------------------------------------------------------------------------
// Aakash SMS

mod aakash_sms {
    use super::*;

    const TOKEN: &str = "aakash-auth-token-0c1d2e3f";

    async fn driver(peer: &Peer) -> AakashDriver {
        driver_with_timeout(peer, AakashConfig::new(TOKEN).timeout_ms).await
    }

    async fn driver_with_timeout(peer: &Peer, timeout_ms: u64) -> AakashDriver {
        let mut config = AakashConfig::new(TOKEN);
        config.base_url = format!("{}/", peer.base);
        config.timeout_ms = timeout_ms;
        AakashDriver::new(config).unwrap()
    }

    fn accepted(id: u64, job: &ClaimedJob) -> Value {
        json!({"error": false, "message": "1 messages has been queued",
               "data": {"valid": [{"id": id, "mobile": "9851023212", "text": job.otp.message(),
                                    "credit": 1, "network": "ntc", "status": "queued"}],
                        "invalid": []}})
    }

    #[tokio::test]
    async fn sends_auth_token_national_number_and_text_and_keeps_the_id() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9851023212", NEPALI_TEMPLATE).await;
        peer.answer(200, accepted(5512, &job));

        let outcome = driver(&peer).await.deliver(&job).await;

        assert_sent(&outcome, Some("5512"));
        let got = peer.only();
        assert_eq!(got.method, Method::POST);
        assert_eq!(got.path, "/sms/v3/send");
        assert_eq!(
            got.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            got.form(),
            pairs(&[
                ("auth_token", TOKEN),
                ("to", "9851023212"),
                ("text", &job.otp.message()),
            ])
        );
    }

    #[tokio::test]
    async fn a_number_listed_invalid_fails() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;
        peer.answer(
            200,
            json!({"error": false, "message": "0 messages has been queued",
                   "data": {"valid": [], "invalid": [{"mobile": "9851023212"}]}}),
        );
        let error = failed_error(driver(&peer).await.deliver(&job).await);
        assert_eq!(error, "upstream listed the number as invalid (200)");
    }

    #[tokio::test]
    async fn refusals_are_classified_by_their_message() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;
        let driver = driver(&peer).await;
        let cases = [
            (401, "Invalid auth token", false),
            (200, "Invalid Token", false),
            (402, "Insufficient credit", false),
            (200, "Your balance is low", false),
            (400, "Invalid mobile number", true),
            (400, "No valid receiver", true),
            (400, "Something unexpected", false),
        ];
        for (status, message, permanent) in cases {
            peer.answer(status, json!({"error": true, "message": message}));
            let outcome = driver.deliver(&job).await;
            let error = if permanent {
                failed_error(outcome)
            } else {
                retry_error(outcome)
            };
            assert_eq!(
                error,
                format!("upstream refused the message ({status}: {message})")
            );
        }
    }

    #[tokio::test]
    async fn quoted_vendor_text_never_carries_the_token_the_code_or_the_message() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;
        peer.answer(
            200,
            json!({"error": true,
                   "message": format!("Token {TOKEN} cannot send \"{}\"", job.otp.message())}),
        );
        let error = retry_error(driver(&peer).await.deliver(&job).await);
        assert_eq!(
            error,
            "upstream refused the message (200: Token [redacted] cannot send \"[redacted]\")"
        );
        assert_clean(&error, &[TOKEN, CODE]);
    }

    #[tokio::test]
    async fn outages_slowness_and_unreadable_replies_are_retried() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;
        let driver = driver(&peer).await;
        peer.answer_raw(500, "oops");
        assert_eq!(
            retry_error(driver.deliver(&job).await),
            "upstream answered 500"
        );
        // Aakash reports refusals inside a 200, so an unreadable 200 proves nothing.
        peer.answer_raw(200, "<html>maintenance</html>");
        assert_eq!(
            retry_error(driver.deliver(&job).await),
            "upstream answered 200 with a reply that could not be read"
        );
        peer.hang();
        let impatient = driver_with_timeout(&peer, SHORT_TIMEOUT_MS).await;
        assert_eq!(
            retry_error(impatient.deliver(&job).await),
            format!("no reply from the upstream within {SHORT_TIMEOUT_MS} ms")
        );
    }

    #[tokio::test]
    async fn a_number_outside_nepal_fails_without_a_request() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("+447911123456", "Your code is {otp}").await;
        failed_error(driver(&peer).await.deliver(&job).await);
        assert!(peer.take().is_empty());
    }

    #[test]
    fn outcome_mapping_edges() {
        let secrets = [TOKEN, CODE];
        assert_eq!(
            retry_error(aakash::outcome(
                200,
                br#"{"error":false,"message":"ok","data":{"valid":[],"invalid":[]}}"#,
                &secrets
            )),
            "upstream answered 200 but listed the number neither valid nor invalid"
        );
        assert_sent(
            &aakash::outcome(
                200,
                br#"{"error":false,"data":{"valid":[{"id":"ak-1"}],"invalid":[]}}"#,
                &secrets,
            ),
            Some("ak-1"),
        );
        assert_eq!(
            failed_error(aakash::outcome(422, b"", &secrets)),
            "upstream rejected the request (422)"
        );
        assert_eq!(
            retry_error(aakash::outcome(404, b"not found", &secrets)),
            "upstream answered 404"
        );
    }

    #[test]
    fn config_reads_defaults_and_hides_the_token() {
        let config: AakashConfig = serde_json::from_value(json!({"token": TOKEN})).unwrap();
        assert_eq!(config.base_url, "https://sms.aakashsms.com");
        assert_eq!((config.timeout_ms, config.capacity), (10_000, 32));
        assert!(!format!("{config:?}").contains(TOKEN));
        let mut bad = AakashConfig::new(TOKEN);
        bad.base_url = "ftp://sms.example".into();
        assert!(matches!(
            AakashDriver::new(bad),
            Err(BuildError::Invalid {
                field: "base_url",
                ..
            })
        ));
    }
}

// ---------------------------------------------------------------------------
// The generic templated driver

mod generic_http {
    use super::*;

    const SECRET: &str = "gen-key-5a6b7c8d";

    fn values<'a>() -> Values<'a> {
        Values {
            to: "+9779851023212",
            to_national: "9851023212",
            text: "a \"quoted\" & more\nतपाईं 100%",
            sender: "OTP GATE",
            otp_id: "17",
        }
    }

    #[test]
    fn percent_escaping_encodes_everything_but_unreserved_bytes() {
        let t =
            Template::parse("https://x.example/send?to={to}&text={text}&from={sender}").unwrap();
        assert_eq!(
            t.render(&values(), Escape::Percent),
            "https://x.example/send?to=%2B9779851023212\
             &text=a%20%22quoted%22%20%26%20more%0A%E0%A4%A4%E0%A4%AA%E0%A4%BE%E0%A4%88%E0%A4%82%20100%25\
             &from=OTP%20GATE"
        );
        let t = Template::parse("{text}").unwrap();
        assert_eq!(
            t.render(
                &Values {
                    text: "A-z0.9_~",
                    ..values()
                },
                Escape::Percent
            ),
            "A-z0.9_~"
        );
    }

    #[test]
    fn json_escaping_keeps_devanagari_and_escapes_quotes_and_newlines() {
        let t = Template::parse(r#"{"to":"{to}","text":"{text}","id":{otp_id}}"#).unwrap();
        let rendered = t.render(&values(), Escape::Json);
        assert_eq!(
            rendered,
            r#"{"to":"+9779851023212","text":"a \"quoted\" & more\nतपाईं 100%","id":17}"#
        );
        let parsed: Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(parsed["text"], values().text);
        let t = Template::parse("\"{text}\"").unwrap();
        let tab_and_backslash = t.render(
            &Values {
                text: "a\\b\tc\u{1}",
                ..values()
            },
            Escape::Json,
        );
        assert_eq!(tab_and_backslash, r#""a\\b\tc\u0001""#);
    }

    #[test]
    fn only_known_names_in_braces_are_placeholders() {
        let t =
            Template::parse(r#"{"a":{"b":"{to_national}"}, "c": "{}", "d": "{ text }"}"#).unwrap();
        assert_eq!(
            t.render(&values(), Escape::Json),
            r#"{"a":{"b":"9851023212"}, "c": "{}", "d": "{ text }"}"#
        );
        assert_eq!(
            Template::parse("to={to}&code={otp}"),
            Err(TemplateError::UnknownPlaceholder("otp".into()))
        );
    }

    async fn json_driver(peer: &Peer) -> GenericHttpDriver {
        let mut config = GenericHttpConfig::new(format!("{}/v1/messages?channel=sms", peer.base));
        config.headers.insert(
            "Authorization".into(),
            Secret::new(format!("Bearer {SECRET}")),
        );
        config.body = Some(
            r#"{"to": "{to}", "national": "{to_national}", "text": "{text}", "from": "{sender}", "reference": {otp_id}}"#
                .into(),
        );
        config.sender = "OTPGATE".into();
        config.id_pointer = Some("/data/id".into());
        config.permanent_failure_statuses = vec![400, 404, 422];
        GenericHttpDriver::new(config).unwrap()
    }

    #[tokio::test]
    async fn an_accounts_sender_fills_the_sender_placeholder_and_only_a_template_using_it_takes_one()
     {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let driver = json_driver(&peer).await;
        assert!(driver.takes_sender());
        let job = source.text("9851023212", "Code {otp}").await;
        peer.answer(201, json!({"data": {"id": "g-2"}}));
        let sender = SenderId::parse("ACME").unwrap();
        assert_sent(&driver.deliver_as(&job, Some(&sender)).await, Some("g-2"));
        assert_eq!(peer.only().json()["from"], "ACME");
        assert_sent(&driver.deliver_as(&job, None).await, Some("g-2"));
        assert_eq!(
            peer.only().json()["from"],
            "OTPGATE",
            "the configured sender"
        );

        let mut config = GenericHttpConfig::new(format!("{}/send?to={{to}}", peer.base));
        config.body = Some(r#"{"text": "{text}"}"#.into());
        assert!(
            !GenericHttpDriver::new(config).unwrap().takes_sender(),
            "no {{sender}}: an account's sender would go nowhere"
        );
    }

    #[tokio::test]
    async fn json_post_carries_headers_and_exact_values() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9851023212", AWKWARD_TEMPLATE).await;
        peer.answer(201, json!({"data": {"id": "g-1", "state": "accepted"}}));

        let outcome = json_driver(&peer).await.deliver(&job).await;

        assert_sent(&outcome, Some("g-1"));
        let got = peer.only();
        assert_eq!(got.method, Method::POST);
        assert_eq!(got.path, "/v1/messages");
        assert_eq!(got.query.as_deref(), Some("channel=sms"));
        assert_eq!(got.header("content-type"), Some("application/json"));
        let bearer = format!("Bearer {SECRET}");
        assert_eq!(got.header("authorization"), Some(bearer.as_str()));
        assert_eq!(
            got.json(),
            json!({"to": "+9779851023212", "national": "9851023212",
                   "text": job.otp.message(), "from": "OTPGATE", "reference": job.otp.id})
        );
        assert!(job.otp.message().contains("\"482193\" & more\nतपाईंको"));
    }

    #[tokio::test]
    async fn form_post_percent_encodes_each_value() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9851023212", AWKWARD_TEMPLATE).await;
        let mut config = GenericHttpConfig::new(format!("{}/send", peer.base));
        config.content_type = BodyType::Form;
        config.body = Some("to={to_national}&msg={text}&from={sender}&ref={otp_id}".into());
        config.sender = "OTP GATE".into();
        peer.answer(200, json!({"ok": true}));

        let outcome = GenericHttpDriver::new(config).unwrap().deliver(&job).await;

        assert_sent(&outcome, None);
        let got = peer.only();
        assert_eq!(
            got.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            got.form(),
            pairs(&[
                ("to", "9851023212"),
                ("msg", &job.otp.message()),
                ("from", "OTP GATE"),
                ("ref", &job.otp.id.to_string()),
            ])
        );
    }

    #[tokio::test]
    async fn get_puts_escaped_values_in_the_query() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("+919876543210", AWKWARD_TEMPLATE).await;
        let mut config = GenericHttpConfig::new(format!(
            "{}/api/send/{{to_national}}?to={{to}}&text={{text}}&key={SECRET}",
            peer.base
        ));
        config.method = HttpMethod::Get;
        peer.answer(200, json!({}));

        let outcome = GenericHttpDriver::new(config).unwrap().deliver(&job).await;

        assert_sent(&outcome, None);
        let got = peer.only();
        assert_eq!(got.method, Method::GET);
        assert_eq!(got.path, "/api/send/9876543210");
        assert!(got.body.is_empty());
        assert_eq!(got.header("content-type"), None);
        assert_eq!(
            got.query_pairs(),
            pairs(&[
                ("to", "+919876543210"),
                ("text", &job.otp.message()),
                ("key", SECRET),
            ])
        );
    }

    #[tokio::test]
    async fn statuses_map_as_configured() {
        let peer = Peer::start().await;
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;
        let mut config = GenericHttpConfig::new(format!("{}/send", peer.base));
        config.body = Some(r#"{"text":"{text}"}"#.into());
        config
            .headers
            .insert("X-Api-Key".into(), Secret::new(SECRET.to_owned()));
        config.success_status = vec![202];
        config.permanent_failure_statuses = vec![400, 404, 422];
        let impatient = GenericHttpConfig {
            timeout_ms: SHORT_TIMEOUT_MS,
            ..config.clone()
        };
        let driver = GenericHttpDriver::new(config).unwrap();

        peer.answer(202, json!({"id": "ignored without id_pointer"}));
        assert_sent(&driver.deliver(&job).await, None);

        // 200 is not the configured success, and not configured as permanent.
        peer.answer(200, json!({}));
        assert_eq!(
            retry_error(driver.deliver(&job).await),
            "upstream answered 200: {}"
        );

        peer.answer(
            422,
            json!({"error": format!("key {SECRET} may not send {}", job.otp.message())}),
        );
        let error = failed_error(driver.deliver(&job).await);
        assert_eq!(
            error,
            r#"upstream answered 422: {"error":"key [redacted] may not send [redacted]"}"#
        );
        assert_clean(&error, &[SECRET, CODE]);

        peer.answer_raw(404, "");
        assert_eq!(
            failed_error(driver.deliver(&job).await),
            "upstream answered 404"
        );

        peer.answer_raw(500, "busy");
        assert_eq!(
            retry_error(driver.deliver(&job).await),
            "upstream answered 500: busy"
        );

        peer.hang();
        let impatient = GenericHttpDriver::new(impatient).unwrap();
        assert_eq!(
            retry_error(impatient.deliver(&job).await),
            format!("no reply from the upstream within {SHORT_TIMEOUT_MS} ms")
        );
        assert_eq!(peer.take().len(), 6);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_retried_without_the_url_and_its_query() {
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;
        let config = GenericHttpConfig::new(format!(
            "{}/send?key={SECRET}&text={{text}}",
            closed_address().await
        ));
        let error = retry_error(GenericHttpDriver::new(config).unwrap().deliver(&job).await);
        assert!(
            error.starts_with("could not connect to the upstream"),
            "{error}"
        );
        assert_clean(&error, &[SECRET, CODE, "key="]);
    }

    #[test]
    fn the_id_pointer_reads_strings_and_numbers() {
        let mut config = GenericHttpConfig::new("https://sms.example/send");
        config.id_pointer = Some("/messages/0/id".into());
        let driver = GenericHttpDriver::new(config).unwrap();
        assert_sent(
            &driver.outcome(200, br#"{"messages":[{"id":991}]}"#, &[]),
            Some("991"),
        );
        assert_sent(
            &driver.outcome(200, br#"{"messages":[{"id":"m-9"}]}"#, &[]),
            Some("m-9"),
        );
        assert_sent(&driver.outcome(200, br#"{"messages":[]}"#, &[]), None);
        assert_sent(&driver.outcome(200, b"plain text", &[]), None);
    }

    #[test]
    fn bad_configurations_are_refused_when_built() {
        let invalid_field = |config: GenericHttpConfig| match GenericHttpDriver::new(config) {
            Err(BuildError::Invalid { field, .. }) => field,
            Err(other) => panic!("unexpected {other:?}"),
            Ok(_) => panic!("accepted a bad configuration"),
        };
        assert_eq!(
            invalid_field(GenericHttpConfig::new("https://x.example/{phone}")),
            "url"
        );
        assert_eq!(
            invalid_field(GenericHttpConfig::new("not a url {to}")),
            "url"
        );
        assert_eq!(
            invalid_field(GenericHttpConfig::new("file:///etc/{to}")),
            "url"
        );

        let mut get_with_body = GenericHttpConfig::new("https://x.example/send");
        get_with_body.method = HttpMethod::Get;
        get_with_body.body = Some("{text}".into());
        assert_eq!(invalid_field(get_with_body), "body");

        let mut bad_body = GenericHttpConfig::new("https://x.example/send");
        bad_body.body = Some(r#"{"code":"{code}"}"#.into());
        assert_eq!(invalid_field(bad_body), "body");

        let mut both = GenericHttpConfig::new("https://x.example/send");
        both.permanent_failure_statuses = vec![201];
        assert_eq!(invalid_field(both), "permanent_failure_statuses");

        let mut pointer = GenericHttpConfig::new("https://x.example/send");
        pointer.id_pointer = Some("data.id".into());
        assert_eq!(invalid_field(pointer), "id_pointer");

        let mut header = GenericHttpConfig::new("https://x.example/send");
        header
            .headers
            .insert("Bad Header".into(), Secret::new("x".to_owned()));
        assert_eq!(invalid_field(header), "headers");

        let mut status = GenericHttpConfig::new("https://x.example/send");
        status.permanent_failure_statuses = vec![4000];
        assert_eq!(invalid_field(status), "permanent_failure_statuses");

        let mut zero = GenericHttpConfig::new("https://x.example/send");
        zero.capacity = 0;
        assert_eq!(invalid_field(zero), "capacity");
    }

    #[test]
    fn config_reads_toml_style_keys_and_hides_secrets() {
        let config: GenericHttpConfig = serde_json::from_value(json!({
            "method": "POST",
            "url": format!("https://sms.example/send?api_key={SECRET}"),
            "headers": {"Authorization": format!("Bearer {SECRET}")},
            "body": format!(r#"{{"key":"{SECRET}","to":"{{to}}","text":"{{text}}"}}"#),
            "content_type": "application/json",
            "permanent_failure_statuses": [400, 422],
            "id_pointer": "/id",
        }))
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(
            shown.contains("https://sms.example/send?[redacted]"),
            "{shown}"
        );
        assert_eq!(config.timeout_ms, 10_000);
        assert_eq!(config.capacity, 32);
        assert!(GenericHttpDriver::new(config).is_ok());

        let form: GenericHttpConfig = serde_json::from_value(
            json!({"url": "https://x.example", "content_type": "form", "method": "GET"}),
        )
        .unwrap();
        assert_eq!(form.content_type, BodyType::Form);
        assert_eq!(form.method, HttpMethod::Get);
        assert!(
            serde_json::from_value::<GenericHttpConfig>(json!({"url": "https://x", "hedaers": {}}))
                .is_err()
        );
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by the modules

#[test]
fn scrub_removes_every_secret_and_cuts_long_text() {
    assert_eq!(
        scrub(
            "token abc123 sent 'Your code is 4821' ok",
            &["abc123", "Your code is 4821", "4821"]
        ),
        "token [redacted] sent '[redacted]' ok"
    );
    assert_eq!(scrub("line\nbreak\ttab", &[""]), "line break tab");
    let long = "x".repeat(500);
    let cut = scrub(&long, &[]);
    assert_eq!(cut.chars().count(), 161);
    assert!(cut.ends_with('…'));
}

// ---------------------------------------------------------------------------
// The TingTing relay against a real otpgate

mod tingting_relay {
    use super::*;
    use otpgate::auth::issue_key;
    use otpgate::config::Config;
    use otpgate::startup::Application;
    use tokio::sync::oneshot;

    /// A real otpgate on port 0: the upstream the relay forwards to.
    struct Upstream {
        address: String,
        store: SharedStore,
        client: reqwest::Client,
        stop: Option<oneshot::Sender<()>>,
        running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
        _dir: tempfile::TempDir,
    }

    impl Upstream {
        async fn spawn() -> Upstream {
            let dir = tempfile::tempdir().unwrap();
            let mut config = Config {
                listen: "127.0.0.1:0".into(),
                database_url: Secret::new(format!(
                    "sqlite://{}",
                    dir.path().join("upstream.db").display()
                )),
                ..Config::default()
            };
            config.delivery.log_path = dir.path().join("deliveries.jsonl").display().to_string();
            config.delivery.voice_dir = dir.path().join("voice").display().to_string();
            config.demo.create_default_account = Some(false);
            let app = Application::build(config).await.unwrap();
            let address = format!("http://{}", app.local_addr());
            let store = app.state().store.clone();
            let (tx, rx) = oneshot::channel::<()>();
            let running = tokio::spawn(app.run_until_stopped(async move {
                let _ = rx.await;
            }));
            Upstream {
                address,
                store,
                client: reqwest::Client::new(),
                stop: Some(tx),
                running: Some(running),
                _dir: dir,
            }
        }

        /// An account with these balances and a key for it.
        async fn account(&self, name: &str, sms: i64, phone: i64) -> (i64, String) {
            let account = self.store.create_account(name, sms, phone).await.unwrap();
            let key = issue_key(account.id, None);
            self.store.create_key(key.record).await.unwrap();
            (account.id, key.plaintext)
        }

        fn relay(&self, key: &str) -> TingTingDriver {
            let mut config = TingTingConfig::new(key);
            config.base_url = format!("{}/api/v1", self.address);
            TingTingDriver::new(config).unwrap()
        }

        /// The account's OTPs as its own API lists them, newest first.
        async fn list(&self, key: &str) -> Vec<Value> {
            let reply = self
                .client
                .get(format!(
                    "{}/api/v1/auths/list/send-otps/?limit=100",
                    self.address
                ))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), 200);
            let body: Value = reply.json().await.unwrap();
            body["results"]["data"].as_array().unwrap().clone()
        }

        async fn balance(&self, account: i64) -> (i64, i64) {
            let a = self.store.account(account).await.unwrap().unwrap();
            (a.sms_credits, a.phone_credits)
        }

        async fn stop(mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            if let Some(running) = self.running.take() {
                running.await.unwrap().unwrap();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_text_otp_is_rendered_upstream_exactly_as_here_and_charged_there() {
        let upstream = Upstream::spawn().await;
        let (account, key) = upstream.account("relay", 100, 10).await;
        let source = Source::new().await;
        let job = source.text("9851023212", NEPALI_TEMPLATE).await;
        assert!(job.otp.segments >= 1);

        let outcome = upstream.relay(&key).deliver(&job).await;

        let listed = upstream.list(&key).await;
        assert_eq!(listed.len(), 1);
        let item = &listed[0];
        assert_sent(&outcome, Some(&item["id"].to_string()));
        assert_eq!(item["message"], json!(job.otp.message()));
        assert_eq!(item["otp"], json!(CODE));
        assert_eq!(item["phone_number"], json!("9851023212"));
        assert_eq!(item["sms_send_options"], json!("text"));
        assert_eq!(item["otp_options"], json!("personnel"));
        assert_eq!(item["credits_used"], json!(job.otp.segments));
        assert_eq!(
            upstream.balance(account).await,
            (100 - i64::from(job.otp.segments), 10)
        );
        upstream.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_voice_otp_keeps_its_voice_and_length_factor_and_costs_a_phone_credit() {
        let upstream = Upstream::spawn().await;
        let (account, key) = upstream.account("relay", 100, 10).await;
        let source = Source::new().await;
        let job = source
            .job(
                "9801234567",
                "तपाईंको कोड {otp} हो",
                "7350",
                Channel::Voice,
                Some((Voice::NpBinod, 1.5)),
            )
            .await;
        assert_eq!(
            tingting::request_body(&job),
            json!({"number": "9801234567", "message": "तपाईंको कोड {otp} हो",
                   "sms_send_options": "voice", "otp_options": "personnel", "otp": "7350",
                   "voice_input": "np_binod", "length_factor": 1.5})
        );

        let outcome = upstream.relay(&key).deliver(&job).await;

        let listed = upstream.list(&key).await;
        assert_eq!(listed.len(), 1);
        assert_sent(&outcome, Some(&listed[0]["id"].to_string()));
        assert_eq!(listed[0]["message"], json!(job.otp.message()));
        assert_eq!(listed[0]["otp"], json!("7350"));
        assert_eq!(listed[0]["sms_send_options"], json!("voice"));
        assert_eq!(listed[0]["voice_input"], json!("np_binod"));
        assert_eq!(upstream.balance(account).await, (100, 9));
        upstream.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_key_is_retried_and_never_quoted() {
        let upstream = Upstream::spawn().await;
        let (account, key) = upstream.account("relay", 100, 10).await;
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;
        let wrong = format!("{key}x");

        let error = retry_error(upstream.relay(&wrong).deliver(&job).await);

        assert_eq!(error, "upstream refused the API key (401)");
        assert_clean(&error, &[&wrong, CODE]);
        assert!(upstream.list(&key).await.is_empty());
        assert_eq!(upstream.balance(account).await, (100, 10));
        upstream.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upstream_without_credits_is_retried() {
        let upstream = Upstream::spawn().await;
        let (_, key) = upstream.account("broke", 0, 0).await;
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;

        let error = retry_error(upstream.relay(&key).deliver(&job).await);

        assert_eq!(error, "upstream account has insufficient credits (402)");
        assert!(upstream.list(&key).await.is_empty());
        upstream.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_number_the_upstream_refuses_fails() {
        let upstream = Upstream::spawn().await;
        let (account, key) = upstream.account("relay", 100, 10).await;
        let source = Source::new().await;
        // The store only takes numbers that parse; the job read back is what
        // the driver relays, so the bad number goes there.
        let mut job = source.text("9851023212", "Your code is {otp}").await;
        // Shaped as E.164, but no Nepali number: its display form is "12345".
        job.otp.number = otp_domain::phone::E164::parse("+97712345").unwrap();

        let error = failed_error(upstream.relay(&key).deliver(&job).await);

        assert_eq!(error, "upstream rejected the OTP (400: number invalid)");
        assert!(upstream.list(&key).await.is_empty());
        assert_eq!(upstream.balance(account).await, (100, 10));
        upstream.stop().await;
    }

    #[tokio::test]
    async fn a_slow_or_absent_upstream_is_retried() {
        let source = Source::new().await;
        let job = source.text("9851023212", "Your code is {otp}").await;
        let peer = Peer::start().await;
        peer.hang();
        let mut config = TingTingConfig::new("otpg_k_s");
        config.base_url = format!("{}/api/v1", peer.base);
        config.timeout_ms = SHORT_TIMEOUT_MS;
        let error = retry_error(TingTingDriver::new(config).unwrap().deliver(&job).await);
        assert_eq!(
            error,
            format!("no reply from the upstream within {SHORT_TIMEOUT_MS} ms")
        );
        let got = peer.only();
        assert_eq!(got.path, "/api/v1/auths/send/otp/");
        assert_eq!(got.header("authorization"), Some("Bearer otpg_k_s"));
        assert_eq!(got.header("content-type"), Some("application/json"));

        let mut config = TingTingConfig::new("otpg_k_s");
        config.base_url = format!("{}/api/v1/", closed_address().await);
        let error = retry_error(TingTingDriver::new(config).unwrap().deliver(&job).await);
        assert!(
            error.starts_with("could not connect to the upstream"),
            "{error}"
        );
    }

    #[test]
    fn outcome_mapping() {
        let secrets = ["otpg_k_s", CODE];
        assert_sent(
            &tingting::outcome(200, br#"{"data":{"details":{"id":41}}}"#, &secrets),
            Some("41"),
        );
        assert_sent(&tingting::outcome(200, b"{}", &secrets), None);
        assert_eq!(
            retry_error(tingting::outcome(403, b"", &secrets)),
            "upstream refused the API key (403)"
        );
        assert_eq!(
            failed_error(tingting::outcome(
                400,
                br#"{"errors":[{"field":"otp","code":"invalid","message":"482193 is bad"},{"code":"x"}]}"#,
                &secrets
            )),
            "upstream rejected the OTP (400: otp invalid, request x)"
        );
        assert_eq!(
            failed_error(tingting::outcome(400, b"<html/>", &secrets)),
            "upstream rejected the OTP (400)"
        );
        for status in [429, 500, 503] {
            assert_eq!(
                retry_error(tingting::outcome(status, b"", &secrets)),
                format!("upstream answered {status}")
            );
        }
        assert_eq!(
            retry_error(tingting::outcome(404, b"", &secrets)),
            "upstream answered 404"
        );
        assert_eq!(
            failed_error(tingting::outcome(415, b"", &secrets)),
            "upstream rejected the request (415)"
        );
    }

    #[test]
    fn config_reads_defaults_and_hides_the_key() {
        let config: TingTingConfig = serde_json::from_value(json!({"token": "otpg_k_s"})).unwrap();
        assert_eq!(config.base_url, "https://app.tingting.io/api/v1");
        assert_eq!((config.timeout_ms, config.capacity), (10_000, 32));
        assert!(!format!("{config:?}").contains("otpg_k_s"));
        let driver = TingTingDriver::new(config).unwrap();
        assert_eq!((driver.name(), driver.capacity()), ("tingting", 32));
    }
}
