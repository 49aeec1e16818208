//! Voice OTPs: the voice list, the prompt preview, the `log` driver's WAV files, and
//! calls through the `sip` driver to real peers on 127.0.0.1: baresip (answers and
//! records what it hears) and sipp (scripted trunks, scenarios from `crates/sip` and
//! `tests/scenarios/`). Needs the Debian packages espeak-ng, baresip-core and
//! sip-tester; without them these tests fail, they never skip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use otp_domain::channel::Channel;
use otpgate::config::{Config, DriverConfig, RouteConfig, Secret};
use otpgate::delivery::voice::sip::SipConfig;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tts::{Audio, EspeakConfig, EspeakEngine, LengthFactor, RenderRequest, SpeechText, TtsEngine};

use crate::for_each_backend;
use crate::helpers::{Backend, TestApp, spawn_app_with};

const LOCALHOST: &str = "127.0.0.1";
/// The test number and the user part of its Request-URI.
const NUMBER: &str = "9851023212";
const URI_USER: &str = "9779851023212";

fn require(program: &str, version_arg: &str, package: &str) {
    let found = std::process::Command::new(program)
        .arg(version_arg)
        .output()
        .is_ok();
    assert!(
        found,
        "`{program}` is not installed, and these tests need the real program. \
         Install it with: apt-get install -y {package} (or run scripts/install-test-deps.sh)"
    );
}

fn voice_send(message: &str, voice: &str, otp: &str, length_factor: f64) -> Value {
    json!({
        "number": NUMBER,
        "message": message,
        "sms_send_options": "voice",
        "voice_input": voice,
        "otp_options": "personnel",
        "otp": otp,
        "length_factor": length_factor,
    })
}

fn id_of(reply: &Value) -> i64 {
    reply["data"]["details"]["id"].as_i64().unwrap()
}

async fn preview(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auths/voice/preview/"))
        .bearer_auth(&app.key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn preview_audio(app: &TestApp, body: &Value) -> Audio {
    let r = preview(app, body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "audio/wav");
    Audio::from_wav_bytes(&r.bytes().await.unwrap()).expect("a WAV")
}

/// Waits (bounded, generously: a call lasts seconds) for the OTP's status.
async fn wait_for(app: &TestApp, id: i64, status: &str) -> otp_store::OtpRecord {
    let mut otp = None;
    for _ in 0..1200 {
        let o = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        if o.status.as_str() == status {
            return o;
        }
        otp = Some(o);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("OTP {id} never reached {status}: {otp:?}");
}

/// Waits until the OTP's error says `what`.
async fn wait_for_error(app: &TestApp, id: i64, what: &str) -> otp_store::OtpRecord {
    let mut otp = None;
    for _ in 0..1200 {
        let o = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        if o.error.as_deref().is_some_and(|e| e.contains(what)) {
            return o;
        }
        otp = Some(o);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("OTP {id} never had an error with {what:?}: {otp:?}");
}

for_each_backend! {
    async fn the_four_voices_are_listed_with_their_genders(app) {
        let r = app
            .client
            .get(app.url("/api/v1/auths/voices/"))
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!((body["status"].as_u64(), body["success"].as_bool()), (Some(200), Some(true)));
        assert_eq!(body["errors"], json!([]));
        let voices: Vec<(String, String)> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_owned(), v["gender"].as_str().unwrap().to_owned()))
            .collect();
        let expected = [("np_rija", "female"), ("np_prashanna", "male"), ("np_shreegya", "female"), ("np_binod", "male")];
        assert_eq!(voices, expected.map(|(n, g)| (n.to_owned(), g.to_owned())));
        let rija = &body["data"][0];
        assert_eq!((rija["espeak_voice"].as_str(), rija["pitch"].as_u64(), rija["rate_wpm"].as_u64()), (Some("ne+f3"), Some(40), Some(165)));
    }

    async fn the_voice_endpoints_are_in_the_openapi_document(app) {
        let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
        assert!(doc["paths"]["/api/v1/auths/voices/"]["get"].is_object(), "{doc}");
        let preview = &doc["paths"]["/api/v1/auths/voice/preview/"]["post"];
        assert!(preview["responses"]["200"]["content"]["audio/wav"].is_object(), "{preview}");
    }

    async fn voice_endpoints_need_a_key(app) {
        let list = app.client.get(app.url("/api/v1/auths/voices/")).send().await.unwrap();
        assert_eq!(list.status(), 401);
        let r = app
            .client
            .post(app.url("/api/v1/auths/voice/preview/"))
            .json(&json!({"message": "{otp}", "voice_input": "np_rija"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["success"], false);
        assert_eq!(body["detail"], "Authentication credentials were not provided.");
    }

    async fn the_preview_slows_with_the_length_factor_and_differs_per_voice(app) {
        require("espeak-ng", "--version", "espeak-ng");
        let body = |voice: &str, factor: f64| json!({"message": "तपाईंको कोड {otp} हो", "voice_input": voice, "otp": "4821", "length_factor": factor});
        let normal = preview_audio(&app, &body("np_rija", 1.0)).await;
        let slow = preview_audio(&app, &body("np_rija", 2.0)).await;
        let fast = preview_audio(&app, &body("np_rija", 0.5)).await;
        assert!(!normal.is_empty());
        assert!(
            fast.duration() < normal.duration() && normal.duration() < slow.duration(),
            "{:?} {:?} {:?}", fast.duration(), normal.duration(), slow.duration()
        );
        let binod = preview_audio(&app, &body("np_binod", 1.0)).await;
        assert_ne!(binod.samples(), normal.samples());
        // Without an otp, a sample code is read: still a prompt, and another one.
        let sample = preview_audio(&app, &json!({"message": "कोड {otp}", "voice_input": "np_rija"})).await;
        assert!(!sample.is_empty());
        // Nothing was charged or written.
        assert_eq!(app.balance().await, (100, 10));
        assert_eq!(app.otp_count().await, 0);
    }

    async fn the_preview_names_each_bad_field(app) {
        for (body, field) in [
            (json!({"message": "no code here", "voice_input": "np_rija"}), "message"),
            (json!({"message": "code {otp}", "voice_input": "np_rija", "otp": "12ab"}), "otp"),
            (json!({"message": "code {otp}", "voice_input": "en_us"}), "voice_input"),
            (json!({"message": "code {otp}", "voice_input": "np_rija", "length_factor": 3}), "length_factor"),
            (json!({"voice_input": "np_rija"}), "message"),
        ] {
            let r = preview(&app, &body).await;
            assert_eq!(r.status(), 400, "{body}");
            let reply: Value = r.json().await.unwrap();
            assert_eq!(reply["success"], false);
            let fields: Vec<&str> = reply["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
            assert_eq!(fields, [field], "{reply}");
        }
        // Every problem at once.
        let r = preview(&app, &json!({"message": "x", "voice_input": "x", "otp": "1a"})).await;
        let reply: Value = r.json().await.unwrap();
        assert_eq!(reply["errors"].as_array().unwrap().len(), 3, "{reply}");
        let r = app
            .client
            .post(app.url("/api/v1/auths/voice/preview/"))
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_espeak_ng_the_preview_is_503_and_the_log_still_delivers() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.voice.espeak_program = "/nonexistent/espeak-ng".into();
    })
    .await;
    let r = preview(
        &app,
        &json!({"message": "code {otp}", "voice_input": "np_rija"}),
    )
    .await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert!(
        body["message"].as_str().unwrap().contains("espeak-ng"),
        "{body}"
    );

    let reply = app
        .send_ok(&voice_send("code {otp}", "np_rija", "4821", 1.0))
        .await;
    app.wait_for_status(id_of(&reply), "sent").await;
    let line = last_log_line(&app.deliveries);
    assert_eq!(line["channel"], "voice");
    assert!(line.get("audio").is_none(), "{line}");
    assert!(
        line["audio_error"].as_str().unwrap().contains("not found"),
        "{line}"
    );
    app.stop().await;
}

fn last_log_line(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(text.lines().last().expect("a delivery line")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_driver_writes_the_prompt_a_call_would_play() {
    require("espeak-ng", "--version", "espeak-ng");
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let message = "तपाईंको कोड {otp} हो।";
    let reply = app
        .send_ok(&voice_send(message, "np_binod", "4821", 1.25))
        .await;
    let id = id_of(&reply);
    let otp = app.wait_for_status(id, "sent").await;
    assert_eq!(otp.provider_message_id, Some(format!("log-{id}")));

    let line = last_log_line(&app.deliveries);
    assert_eq!(line["otp_id"], id);
    assert_eq!(
        (
            &line["voice_input"],
            &line["length_factor"],
            &line["channel"]
        ),
        (&json!("np_binod"), &json!(1.25), &json!("voice"))
    );
    assert!(line.get("audio_error").is_none(), "{line}");
    let path = PathBuf::from(line["audio"].as_str().expect("an audio path"));
    assert_eq!(path.file_name().unwrap(), format!("{id}.wav").as_str());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the prompt speaks the code: its owner's only");
    }
    let logged = Audio::from_wav_bytes(&std::fs::read(&path).unwrap()).unwrap();
    assert!(!logged.is_empty());
    let header = std::fs::read(&path).unwrap();
    assert_eq!(
        u32::from_le_bytes(header[24..28].try_into().unwrap()),
        8000,
        "8 kHz"
    );
    assert_eq!(u16::from_le_bytes([header[22], header[23]]), 1, "mono");

    // A render straight from the speech crate, with the gateway's settings: same audio.
    let engine = EspeakEngine::new(EspeakConfig::default()).unwrap();
    let direct = engine
        .render(&RenderRequest {
            voice: "np_binod".into(),
            text: SpeechText::with_code(
                otp_domain::message::MessageTemplate::parse(message)
                    .unwrap()
                    .parts(),
                "4821",
                2,
            )
            .unwrap(),
            length_factor: LengthFactor::new(1.25).unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(logged.samples(), direct.samples());
    // And the preview of the same prompt is the same audio too.
    let previewed = preview_audio(
        &app,
        &json!({"message": message, "voice_input": "np_binod", "otp": "4821", "length_factor": 1.25}),
    )
    .await;
    assert_eq!(previewed.samples(), direct.samples());
    app.stop().await;
}

// ---- calls -------------------------------------------------------------------

/// A port that was free on 127.0.0.1 for both UDP and TCP a moment ago.
fn free_port() -> u16 {
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
fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX && std::net::TcpListener::bind((LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("otpgate-voice-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sip_route(port: u16, tweak: impl FnOnce(&mut SipConfig)) -> RouteConfig {
    let mut sip = SipConfig {
        proxy: format!("{LOCALHOST}:{port}"),
        local_ip: LOCALHOST.into(),
        max_calls: 2,
        ..SipConfig::default()
    };
    tweak(&mut sip);
    RouteConfig {
        name: "trunk".into(),
        channel: Channel::Voice,
        prefixes: Vec::new(),
        weight: None,
        driver: DriverConfig::Sip(sip),
    }
}

async fn app_with_trunk(route: RouteConfig, tweak: impl FnOnce(&mut Config)) -> TestApp {
    require("espeak-ng", "--version", "espeak-ng");
    spawn_app_with(Backend::Sqlite, move |c| {
        c.routes = vec![route];
        // Longer than the longest call attempt, which startup checks.
        c.delivery.lease_seconds = 600;
        tweak(c);
    })
    .await
}

struct Baresip {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Baresip {
    /// baresip on 127.0.0.1 answering every call to [`URI_USER`] at once, no sound
    /// card (aubridge), recording what it decodes to `recordings/dump-*-dec.wav`.
    ///
    /// baresip 1.0 also listens for TLS on the SIP port + 1 and has no setting to turn
    /// that off, so both ports are checked first; if another process takes one of them
    /// in the meantime baresip exits at once, and it is started again on new ports.
    async fn start(name: &str) -> Baresip {
        require("baresip", "-h", "baresip-core");
        for _ in 0..5 {
            let peer = Self::spawn(name, free_port_pair());
            if peer.wait_until_listening().await {
                return peer;
            }
            if !peer.log().contains("Address already in use") {
                panic!("baresip did not answer OPTIONS; log:\n{}", peer.log());
            }
        }
        panic!("baresip found its ports taken five times");
    }

    fn spawn(name: &str, port: u16) -> Baresip {
        let dir = scratch(&format!("baresip-{name}"));
        let recordings = dir.join("recordings");
        std::fs::create_dir_all(&recordings).unwrap();
        let config = format!(
            "poll_method epoll\n\
             sip_listen 127.0.0.1:{port}\n\
             net_interface 127.0.0.1\n\
             audio_player aubridge,otp\n\
             audio_source aubridge,otp\n\
             audio_alert aubridge,otp\n\
             jitter_buffer_delay 1-10\n\
             rtp_stats no\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module aubridge.so\n\
             module sndfile.so\n\
             module_tmp account.so\n\
             snd_path {}\n",
            recordings.display()
        );
        std::fs::write(dir.join("config"), config).unwrap();
        // baresip finds the account of an incoming call by the Request-URI's user.
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:{URI_USER}@127.0.0.1:{port}>;regint=0;answermode=auto\n"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .args(["-t", "300"]) // quits on its own if a test forgets it
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawning baresip");
        Baresip { child, dir, port }
    }

    /// Sends OPTIONS until baresip answers anything; false if it never does.
    async fn wait_until_listening(&self) -> bool {
        let socket = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let local = socket.local_addr().unwrap();
        let options = format!(
            "OPTIONS sip:{URI_USER}@127.0.0.1:{port} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bKready\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\n\
             To: <sip:{URI_USER}@127.0.0.1:{port}>\r\nCall-ID: ready-{port}\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            port = self.port
        );
        let mut buf = [0u8; 4096];
        for _ in 0..100 {
            let _ = socket
                .send_to(options.as_bytes(), (LOCALHOST, self.port))
                .await;
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await
            {
                return true;
            }
            if self.log().contains("Address already in use") {
                return false;
            }
        }
        false
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    /// The one decoded recording, once baresip has closed it (its WAV header is final
    /// only then: wait until it parses and stops growing).
    async fn recording(&self) -> Audio {
        let dir = self.dir.join("recordings");
        let mut last = None;
        for _ in 0..200 {
            let files = dec_files(&dir);
            if let [file] = files.as_slice() {
                let size = std::fs::metadata(file).map_or(0, |m| m.len());
                if last == Some(size)
                    && let Ok(audio) = Audio::from_wav_bytes(&std::fs::read(file).unwrap())
                    && !audio.is_empty()
                {
                    return audio;
                }
                last = Some(size);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no finished recording in {}: {:?}; baresip log:\n{}",
            dir.display(),
            dec_files(&dir),
            self.log()
        );
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn dec_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .collect();
    files.sort();
    files
}

/// The best alignment of `sent` inside `received`: (lag in samples, normalised
/// cross-correlation over the overlap), as `crates/sip/tests/calls/baresip.rs` does
/// it: a coarse search on 10 ms energy envelopes, then every lag within ±20 ms of it
/// on the samples; only lags where 3/4 of `sent` overlaps count.
fn align(sent: &[i16], received: &[i16]) -> (isize, f64) {
    const BLOCK: usize = 80;
    let envelope = |x: &[i16]| -> Vec<f64> {
        let e: Vec<f64> = x
            .chunks(BLOCK)
            .map(|c| c.iter().map(|s| f64::from(*s).abs()).sum::<f64>() / c.len() as f64)
            .collect();
        let mean = e.iter().sum::<f64>() / e.len().max(1) as f64;
        e.into_iter().map(|v| v - mean).collect()
    };
    let (es, er) = (envelope(sent), envelope(received));
    let lags = |a: usize, b: usize| -(a as isize / 4)..=(b as isize - a as isize * 3 / 4);
    let best = |a: &[f64], b: &[f64], lags: &mut dyn Iterator<Item = isize>| {
        lags.map(|lag| (lag, correlation(a, b, lag)))
            .max_by(|x, y| x.1.partial_cmp(&y.1).unwrap())
            .expect("the recording is far shorter than the prompt")
    };
    let (coarse, _) = best(&es, &er, &mut lags(es.len(), er.len()));
    let (s, r): (Vec<f64>, Vec<f64>) = (
        sent.iter().map(|v| f64::from(*v)).collect(),
        received.iter().map(|v| f64::from(*v)).collect(),
    );
    let centre = coarse * BLOCK as isize;
    let allowed = lags(s.len(), r.len());
    best(
        &s,
        &r,
        &mut (centre - 2 * BLOCK as isize..=centre + 2 * BLOCK as isize)
            .filter(|lag| allowed.contains(lag)),
    )
}

fn correlation(a: &[f64], b: &[f64], lag: isize) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (i, x) in a.iter().enumerate() {
        let j = i as isize + lag;
        if j < 0 || j >= b.len() as isize {
            continue;
        }
        let y = b[j as usize];
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_otp_rings_baresip_which_hears_the_prompt() {
    let peer = Baresip::start("prompt").await;
    let app = app_with_trunk(sip_route(peer.port, |_| {}), |_| {}).await;
    let message = "तपाईंको कोड {otp} हो।";
    let reply = app
        .send_ok(&voice_send(message, "np_shreegya", "4821", 1.0))
        .await;
    let id = id_of(&reply);
    let otp = wait_for(&app, id, "sent").await;
    assert_eq!(otp.route.as_deref(), Some("trunk"));
    let call_id = otp.provider_message_id.expect("the Call-ID");
    assert!(call_id.ends_with("@127.0.0.1"), "{call_id}");
    assert!(!otp.refunded);
    assert_eq!(app.balance().await, (100, 9), "one phone credit per call");

    let recording = peer.recording().await;
    let log = peer.log();
    peer.stop().await;
    let prompt = preview_audio(
        &app,
        &json!({"message": message, "voice_input": "np_shreegya", "otp": "4821"}),
    )
    .await;
    let (lag, corr) = align(prompt.samples(), recording.samples());
    eprintln!(
        "prompt {:?}, recorded {:?}, lag {lag}, correlation {corr:.3}",
        prompt.duration(),
        recording.duration()
    );
    assert!(
        corr > 0.8,
        "the recording is not the prompt: correlation {corr:.3}; baresip log:\n{log}"
    );
    let diff = recording.duration().abs_diff(prompt.duration());
    assert!(
        diff <= Duration::from_millis(300),
        "recorded {:?} of a {:?} prompt",
        recording.duration(),
        prompt.duration()
    );
    app.stop().await;
}

/// Channel fallback end to end: the node-smpp SMSC takes the SMS and reports
/// it `UNDELIV`; the OTP's fallback call (due only an hour later) starts at
/// once, baresip answers it, and what it records is the prompt of the same
/// code in the fallback's voice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_the_smsc_reports_undeliverable_becomes_a_call_that_baresip_hears() {
    let smsc = crate::smsc::Smsc::start(&["--receipts", "undeliverable"]);
    let peer = Baresip::start("fallback").await;
    let sms_route = crate::smsc::smpp_route(smsc.port, "secret");
    let app = app_with_trunk(sip_route(peer.port, |_| {}), move |c| {
        c.routes.insert(0, sms_route);
    })
    .await;
    let message = "तपाईंको कोड {otp} हो।";
    let reply = app
        .send_ok(&with_call_in_an_hour(message, "5930", "np_shreegya"))
        .await;
    let id = id_of(&reply);
    assert_eq!(
        app.balance().await,
        (99, 9),
        "the SMS and the reserved call"
    );
    let otp = wait_for(&app, id, "undeliverable").await;
    assert!(otp.refunded, "the undelivered SMS's credit went back");

    let sent = fallback_reaching(&app, id, otp_store::FallbackState::Sent, 60).await;
    let fallback = sent.unwrap_or_else(|| {
        panic!(
            "the call never ended answered; baresip log:\n{}",
            peer.log()
        )
    });
    assert_eq!(fallback.voice, otp_domain::channel::Voice::NpShreegya);
    assert_eq!(
        app.balance().await,
        (100, 9),
        "the call is charged, the SMS is not"
    );
    assert_eq!(smsc.accepted().len(), 1, "one SMS, not sent again");

    let recording = peer.recording().await;
    let log = peer.log();
    peer.stop().await;
    let prompt = preview_audio(
        &app,
        &json!({"message": message, "voice_input": "np_shreegya", "otp": "5930"}),
    )
    .await;
    let (lag, corr) = align(prompt.samples(), recording.samples());
    eprintln!(
        "prompt {:?}, recorded {:?}, lag {lag}, correlation {corr:.3}",
        prompt.duration(),
        recording.duration()
    );
    assert!(
        corr > 0.8,
        "the recording is not the prompt of the same code: correlation {corr:.3}; baresip log:\n{log}"
    );
    app.stop().await;
}

/// A text send of `otp` whose fallback call in `voice` is due in an hour
/// (so only a failed SMS starts it sooner).
fn with_call_in_an_hour(message: &str, otp: &str, voice: &str) -> Value {
    json!({
        "number": NUMBER,
        "message": message,
        "sms_send_options": "text",
        "otp_options": "personnel",
        "otp": otp,
        "expiry_seconds": 3600,
        "fallback_channel": "voice",
        "fallback_after_seconds": 3600,
        "fallback_voice_input": voice,
    })
}

/// The fallback of OTP `id` once it reaches `state`, polled for up to
/// `seconds`; `None` if it did not.
async fn fallback_reaching(
    app: &TestApp,
    id: i64,
    state: otp_store::FallbackState,
    seconds: u64,
) -> Option<otp_store::Fallback> {
    let until = std::time::Instant::now() + Duration::from_secs(seconds);
    while std::time::Instant::now() < until {
        let otp = app.store.otp(app.account_id, id).await.unwrap().unwrap();
        if otp.fallback.is_some_and(|f| f.state == state) {
            return otp.fallback;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

struct Sipp {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Sipp {
    /// Runs `scenario` (in `crates/sip/tests/scenarios/` or ours) as a UDP UAS on
    /// 127.0.0.1 for `calls` calls, with `-key name value` for each of `keys`.
    async fn start(scenario: &str, calls: u32, keys: &[(&str, String)]) -> Sipp {
        require("sipp", "-v", "sip-tester");
        // One directory per test process: two tests may run the same scenario at once.
        let dir = scratch(&format!("sipp-{scenario}-{}", std::process::id()));
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let file = [
            manifest.join("tests/scenarios"),
            manifest.join("../sip/tests/scenarios"),
        ]
        .into_iter()
        .map(|d| d.join(format!("{scenario}.xml")))
        .find(|f| f.exists())
        .expect("a scenario file");
        let port = free_port();
        let media_port = free_port();
        let out = std::fs::File::create(dir.join("sipp.out")).unwrap();
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(&file)
            .args(["-i", LOCALHOST, "-mi", LOCALHOST, "-t", "u1"])
            .args(["-p", &port.to_string(), "-mp", &media_port.to_string()])
            .args(["-m", &calls.to_string()])
            .args(["-timeout", "60s", "-timeout_error", "-nostdin"])
            .args(keys.iter().flat_map(|(k, v)| ["-key", k, v]))
            .args(["-trace_msg", "-trace_err"])
            .arg("-message_file")
            .arg(dir.join("messages.log"))
            .arg("-error_file")
            .arg(dir.join("errors.log"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("spawning sipp");
        let sipp = Sipp { child, dir, port };
        // Listening once its port can no longer be bound (a probe would start a call).
        for _ in 0..200 {
            if std::net::UdpSocket::bind((LOCALHOST, sipp.port)).is_err() {
                return sipp;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sipp never bound port {}: {}", sipp.port, sipp.logs());
    }

    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "\n--- sipp messages ---\n{}\n--- sipp errors ---\n{}",
            read("messages.log"),
            read("errors.log")
        )
    }

    /// Waits for sipp to finish its calls and asserts it exited 0 (every message
    /// its scenario expected from us arrived).
    async fn assert_passed(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(90), self.child.wait())
            .await
            .expect("sipp did not exit")
            .unwrap();
        assert!(status.success(), "sipp failed ({status}): {}", self.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_callee_leaves_the_otp_queued_with_a_retry_error() {
    // More calls than the test waits for: the dispatcher keeps retrying meanwhile.
    let sipp = Sipp::start("uas_busy", 20, &[]).await;
    let app = app_with_trunk(sip_route(sipp.port, |_| {}), |_| {}).await;
    let id = id_of(
        &app.send_ok(&voice_send("code {otp}", "np_rija", "4821", 1.0))
            .await,
    );
    let otp = wait_for_error(&app, id, "busy (486)").await;
    assert_eq!(otp.status.as_str(), "queued", "{otp:?}");
    assert!(!otp.refunded);
    assert_eq!(app.balance().await, (100, 9));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_callee_past_the_useful_life_of_the_code_fails_and_is_refunded() {
    let sipp = Sipp::start("uas_busy", 1, &[]).await;
    // The first retry would come after the code stopped being useful.
    let app = app_with_trunk(sip_route(sipp.port, |_| {}), |c| {
        c.delivery.give_up_after_seconds = 1;
    })
    .await;
    let id = id_of(
        &app.send_ok(&voice_send("code {otp}", "np_rija", "4821", 1.0))
            .await,
    );
    let otp = wait_for(&app, id, "failed").await;
    let error = otp.error.clone().unwrap_or_default();
    assert!(
        error.contains("gave up") && error.contains("busy (486)"),
        "{error}"
    );
    assert!(otp.refunded);
    assert_eq!(app.balance().await, (100, 10), "the phone credit came back");
    let ledger = app.store.ledger(app.account_id).await.unwrap();
    let refund = ledger
        .iter()
        .find(|e| e.kind == "refund")
        .expect("a refund row");
    assert_eq!((refund.phone_delta, refund.otp_id), (1, Some(id)));
    sipp.assert_passed().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_challenge_is_answered_with_the_configured_credentials() {
    let sipp = Sipp::start("uas_auth_401", 1, &[]).await;
    let route = sip_route(sipp.port, |s| {
        s.username = "trunkuser".into();
        s.password = Secret::new("s3cret-pass".into());
    });
    let app = app_with_trunk(route, |_| {}).await;
    let id = id_of(
        &app.send_ok(&voice_send("code {otp}", "np_rija", "4821", 1.0))
            .await,
    );
    let otp = wait_for(&app, id, "sent").await;
    assert!(otp.provider_message_id.is_some());
    sipp.assert_passed().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_the_trunk_does_not_know_fails_at_once_and_is_refunded() {
    let sipp = Sipp::start("uas_not_found", 1, &[]).await;
    let app = app_with_trunk(sip_route(sipp.port, |_| {}), |_| {}).await;
    let id = id_of(
        &app.send_ok(&voice_send("code {otp}", "np_rija", "4821", 1.0))
            .await,
    );
    let otp = wait_for(&app, id, "failed").await;
    let error = otp.error.clone().unwrap_or_default();
    assert!(error.starts_with("rejected: 404 Not Found"), "{error}");
    assert!(!error.contains("gave up"), "not retried: {error}");
    assert!(otp.refunded);
    assert_eq!(app.balance().await, (100, 10));
    sipp.assert_passed().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_calls_are_up_at_once_than_the_trunk_allows() {
    const SENDS: usize = 4;
    // sipp answers every call and sends our RTP to this sink, where each call's
    // stream (its own SSRC) shows when its audio flowed.
    let sink = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let sink_port = sink.local_addr().unwrap().port().to_string();
    let sipp = Sipp::start("uas_answer", SENDS as u32, &[("rtp_sink", sink_port)]).await;
    let app = app_with_trunk(sip_route(sipp.port, |s| s.max_calls = 2), |c| {
        c.voice.repeat = 1;
    })
    .await;
    let (done_tx, mut done) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(async move {
        // Per SSRC: the order of its first and last packet among all packets.
        let mut spans: std::collections::HashMap<u32, (usize, usize)> = Default::default();
        let mut buf = [0u8; 2048];
        let mut n = 0usize;
        loop {
            tokio::select! {
                r = sink.recv(&mut buf) => {
                    let len = r.unwrap();
                    if len < 12 { continue; }
                    let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                    spans.entry(ssrc).and_modify(|s| s.1 = n).or_insert((n, n));
                    n += 1;
                }
                _ = &mut done => break,
            }
        }
        spans
    });
    let mut ids = Vec::new();
    for i in 0..SENDS {
        let mut body = voice_send("code {otp}", "np_rija", "4821", 1.0);
        body["number"] = json!(format!("98510232{i:02}"));
        ids.push(id_of(&app.send_ok(&body).await));
    }
    for id in ids {
        wait_for(&app, id, "sent").await;
    }
    let health: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ready", "{health}");
    assert_eq!(health["routes"][0]["in_flight"], 0, "{health}");
    let _ = done_tx.send(());
    let spans = collector.await.unwrap();
    assert_eq!(spans.len(), SENDS, "one stream per call");
    // The most streams that were flowing at one moment (in packet order).
    let most = spans
        .values()
        .map(|&(first, _)| {
            spans
                .values()
                .filter(|&&(a, b)| a <= first && first <= b)
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(most, 2, "calls up at once: {spans:?}");
    sipp.assert_passed().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_lets_a_call_in_progress_finish() {
    let sink = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let sink_port = sink.local_addr().unwrap().port().to_string();
    let sipp = Sipp::start("uas_answer", 1, &[("rtp_sink", sink_port)]).await;
    let app = app_with_trunk(sip_route(sipp.port, |_| {}), |_| {}).await;
    let id = id_of(
        &app.send_ok(&voice_send("तपाईंको कोड {otp} हो।", "np_rija", "4821", 1.0))
            .await,
    );
    // The call is up once its audio arrives.
    let mut buf = [0u8; 2048];
    tokio::time::timeout(Duration::from_secs(60), sink.recv(&mut buf))
        .await
        .expect("no audio arrived")
        .unwrap();
    let (store, account) = (app.store.clone(), app.account_id);
    app.stop().await;
    // Stopping waited for the call: it ended with our BYE and its outcome is recorded.
    let otp = store.otp(account, id).await.unwrap().unwrap();
    assert_eq!(otp.status.as_str(), "sent", "{otp:?}");
    sipp.assert_passed().await;
}

/// A fallback call that rings (sipp sends 180 and never answers; the ring
/// timeout is a minute away) is cancelled once the SMS's code is verified:
/// sipp gets the CANCEL (its scenario ends with our ACK of the 487), the
/// fallback is `cancelled` and its phone credit goes back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_call_still_ringing_is_cancelled_when_the_code_is_verified() {
    let smsc = crate::smsc::Smsc::start(&["--receipts", "undeliverable"]);
    let sipp = Sipp::start("uas_no_answer", 1, &[]).await;
    let sms_route = crate::smsc::smpp_route(smsc.port, "secret");
    let trunk = sip_route(sipp.port, |s| s.ring_timeout_seconds = Some(60));
    let app = app_with_trunk(trunk, move |c| c.routes.insert(0, sms_route)).await;
    let url = app.url("/api/v1/auths/verify/otp/");
    verify_while_ringing(&app, &smsc, sipp, url).await;
    app.stop().await;
}

/// The same across two nodes on one PostgreSQL database: the first places
/// the call (the second has no routes and never polls its outbox), the code
/// is verified through the second, and the first cancels its ringing call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ringing_fallback_call_is_cancelled_by_a_verification_on_another_node() {
    require("espeak-ng", "--version", "espeak-ng");
    let smsc = crate::smsc::Smsc::start(&["--receipts", "undeliverable"]);
    let sipp = Sipp::start("uas_no_answer", 1, &[]).await;
    let sms_route = crate::smsc::smpp_route(smsc.port, "secret");
    let trunk = sip_route(sipp.port, |s| s.ring_timeout_seconds = Some(60));
    let mut config = None;
    let app = spawn_app_with(Backend::Postgres, |c| {
        c.routes = vec![sms_route, trunk];
        c.delivery.lease_seconds = 600;
        let mut second = c.clone();
        second.routes = Vec::new();
        second.delivery.poll_interval_ms = 3_600_000;
        config = Some(second);
    })
    .await;
    let second = crate::helpers::Node::start(config.expect("the tweak ran")).await;
    let url = format!("{}/api/v1/auths/verify/otp/", second.url);
    verify_while_ringing(&app, &smsc, sipp, url).await;
    second.stop().await;
    app.stop().await;
}

/// Sends a text OTP with a voice fallback through `app`, whose SMSC reports
/// it undeliverable, waits for the call to ring at `sipp`, verifies the code
/// at `verify_url`, and checks the ringing call is cancelled with its credit
/// back once.
async fn verify_while_ringing(
    app: &TestApp,
    smsc: &crate::smsc::Smsc,
    sipp: Sipp,
    verify_url: String,
) {
    let reply = app
        .send_ok(&with_call_in_an_hour(
            "Your code is {otp}",
            "4817",
            "np_binod",
        ))
        .await;
    let id = id_of(&reply);
    assert_eq!(
        app.balance().await,
        (99, 9),
        "the SMS and the reserved call"
    );

    // The SMS comes back UNDELIV, the call starts and rings.
    let rang = async {
        loop {
            let log = std::fs::read_to_string(sipp.dir.join("messages.log")).unwrap_or_default();
            if log.contains("180 Ringing") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), rang)
        .await
        .is_err()
    {
        panic!("the fallback call never rang: {}", sipp.logs());
    }
    let verified = app
        .client
        .post(verify_url)
        .bearer_auth(&app.key)
        .json(&json!({"id": id, "otp": "4817"}))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);

    let fallback = fallback_reaching(app, id, otp_store::FallbackState::Cancelled, 30).await;
    assert!(
        fallback.is_some(),
        "the ringing call was not cancelled within 30 s (the ring timeout is 60 s): {}",
        sipp.logs()
    );
    // The call's credit back, once; the undelivered SMS's too.
    assert_eq!(app.balance().await, (100, 10));
    sipp.assert_passed().await;
    let otp = app.store.otp(app.account_id, id).await.unwrap().unwrap();
    assert!(otp.verified_at.is_some());
    assert_eq!(smsc.accepted().len(), 1, "one SMS, not sent again");
}
