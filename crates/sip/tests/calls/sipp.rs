//! sipp as the trunk, one scenario per test (files in `tests/scenarios/`). Each test checks
//! both sides: our outcome, and sipp's exit status (0: its scenario ran to the end, so
//! every message it expected from us arrived).

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sip::{CallOutcome, Codec, Hangup, Progress, SipUri, TransportKind, TrunkConfig};
use tokio::process::{Child, Command};

use crate::helpers::*;

struct Sipp {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Sipp {
    /// Runs `scenario` as a UAS for one call on 127.0.0.1 (`transport`: `u1` or `t1`).
    async fn start(scenario: &str, transport: &str) -> Sipp {
        Sipp::start_with(scenario, transport, 1, &[]).await
    }

    /// Runs `scenario` for `calls` calls, with `-key name value` for each of `keys`.
    async fn start_with(
        scenario: &str,
        transport: &str,
        calls: u32,
        keys: &[(&str, String)],
    ) -> Sipp {
        require("sipp", "-v", "sip-tester");
        let dir = scratch(&format!("sipp-{scenario}-{transport}"));
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/scenarios")
            .join(format!("{scenario}.xml"));
        let port = free_port();
        let media_port = free_port();
        let out = std::fs::File::create(dir.join("sipp.out")).unwrap();
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(&file)
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-t", transport])
            .args(["-p", &port.to_string(), "-mp", &media_port.to_string()])
            .args(["-m", &calls.to_string()])
            .args(["-timeout", "30s", "-timeout_error", "-nostdin"])
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
        sipp.wait_until_bound(transport).await;
        sipp
    }

    /// sipp is listening once its port can no longer be bound (probing it with a SIP
    /// message would start a call in the scenario).
    async fn wait_until_bound(&self, transport: &str) {
        for _ in 0..200 {
            let free = if transport == "t1" {
                std::net::TcpListener::bind((LOCALHOST, self.port)).is_ok()
            } else {
                std::net::UdpSocket::bind((LOCALHOST, self.port)).is_ok()
            };
            if !free {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sipp never bound port {}: {}", self.port, self.logs());
    }

    fn trunk(&self) -> TrunkConfig {
        trunk(self.port)
    }

    fn uri(&self) -> SipUri {
        SipUri::from_parts("9779800000000", &format!("127.0.0.1:{}", self.port)).unwrap()
    }

    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "\n--- sipp messages ---\n{}\n--- sipp errors ---\n{}\n--- sipp output (tail) ---\n{}",
            read("messages.log"),
            read("errors.log"),
            read("sipp.out")
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    /// Waits for sipp to finish its one call and asserts it exited 0.
    async fn assert_passed(mut self) {
        let status: ExitStatus = tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("sipp did not exit")
            .unwrap();
        assert!(status.success(), "sipp failed ({status}): {}", self.logs());
    }
}

async fn place(
    sipp: &Sipp,
    config: TrunkConfig,
    audio: &[i16],
) -> (sip::CallReport, Vec<Progress>) {
    let client = client(config);
    let mut events = Vec::new();
    let report = tokio::time::timeout(
        CALL_BOUND,
        client.call_with_progress(&sipp.uri(), &caller(), audio, &mut |p| events.push(p)),
    )
    .await
    .unwrap_or_else(|_| panic!("the call did not end: {}", sipp.logs()))
    .unwrap();
    (report, events)
}

fn answered_in_full(audio: &[i16]) -> CallOutcome {
    CallOutcome::Answered {
        played: Duration::from_millis(20) * audio.len().div_ceil(160) as u32,
        completed: true,
        hangup: Hangup::AudioEnded,
    }
}

#[tokio::test]
async fn call_succeeds_after_answering_a_401_challenge() {
    let sipp = Sipp::start("uas_auth_401", "u1").await;
    let audio = tone(0.5);
    let mut config = sipp.trunk();
    config.credentials = Some(credentials());
    let (report, events) = place(&sipp, config, &audio).await;
    assert_eq!(report.outcome, answered_in_full(&audio), "{}", sipp.logs());
    assert_eq!(report.codec, Some(Codec::Pcmu));
    assert_eq!(
        events,
        [
            Progress::InviteSent,
            Progress::InviteSent,
            Progress::Answered { codec: Codec::Pcmu }
        ]
    );
    sipp.assert_passed().await;
}

#[tokio::test]
async fn a_wrong_password_is_reported_as_auth_failed() {
    let sipp = Sipp::start("uas_auth_401", "u1").await;
    let mut config = sipp.trunk();
    config.credentials = Some(sip::Credentials {
        password: sip::Password::new("wrong"),
        ..credentials()
    });
    let (report, _) = place(&sipp, config, &tone(0.5)).await;
    assert_eq!(
        report.outcome,
        CallOutcome::AuthFailed { status: 401 },
        "{}",
        sipp.logs()
    );
    sipp.assert_passed().await;
}

#[tokio::test]
async fn call_succeeds_after_answering_a_407_challenge() {
    let sipp = Sipp::start("uas_auth_407", "u1").await;
    let audio = tone(0.5);
    let mut config = sipp.trunk();
    config.credentials = Some(credentials());
    let (report, _) = place(&sipp, config, &audio).await;
    assert_eq!(report.outcome, answered_in_full(&audio), "{}", sipp.logs());
    assert_eq!(
        report.codec,
        Some(Codec::Pcma),
        "the only codec in sipp's answer"
    );
    sipp.assert_passed().await;
}

#[tokio::test]
async fn a_challenge_without_credentials_is_auth_failed() {
    let sipp = Sipp::start("uas_auth_407", "u1").await;
    let (report, _) = place(&sipp, sipp.trunk(), &tone(0.5)).await;
    assert_eq!(report.outcome, CallOutcome::AuthFailed { status: 407 });
    // sipp waits for a second INVITE that never comes; only our side is checked here.
}

#[tokio::test]
async fn busy_callee_is_reported_as_busy_over_udp() {
    let sipp = Sipp::start("uas_busy", "u1").await;
    let (report, _) = place(&sipp, sipp.trunk(), &tone(0.5)).await;
    assert_eq!(
        report.outcome,
        CallOutcome::Busy { status: 486 },
        "{}",
        sipp.logs()
    );
    assert_eq!(report.codec, None);
    sipp.assert_passed().await;
}

#[tokio::test]
async fn busy_callee_is_reported_as_busy_over_tcp() {
    let sipp = Sipp::start("uas_busy", "t1").await;
    let mut config = sipp.trunk();
    config.transport = TransportKind::Tcp;
    let (report, _) = place(&sipp, config, &tone(0.5)).await;
    assert_eq!(
        report.outcome,
        CallOutcome::Busy { status: 486 },
        "{}",
        sipp.logs()
    );
    sipp.assert_passed().await;
}

#[tokio::test]
async fn ringing_past_the_timeout_is_cancelled_as_no_answer() {
    let sipp = Sipp::start("uas_no_answer", "u1").await;
    let mut config = sipp.trunk();
    config.ring_timeout = Duration::from_secs(1);
    let (report, events) = place(&sipp, config, &tone(0.5)).await;
    assert_eq!(
        report.outcome,
        CallOutcome::NoAnswer { status: Some(487) },
        "{}",
        sipp.logs()
    );
    assert_eq!(
        events,
        [Progress::InviteSent, Progress::Ringing { status: 180 }]
    );
    assert!(report.timeline.ringing.is_some());
    assert!(report.timeline.answered.is_none());
    sipp.assert_passed().await;
}

/// Places a call that the caller abandons `after` it was started.
async fn place_abandoned(
    sipp: &Sipp,
    config: TrunkConfig,
    after: Duration,
) -> (sip::CallReport, Vec<Progress>, Duration) {
    let client = client(config);
    let mut events = Vec::new();
    let started = std::time::Instant::now();
    let report = tokio::time::timeout(
        CALL_BOUND,
        client.call_until(
            &sipp.uri(),
            &caller(),
            &tone(0.5),
            &mut |p| events.push(p),
            tokio::time::sleep(after),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("the call did not end: {}", sipp.logs()))
    .unwrap();
    (report, events, started.elapsed())
}

#[tokio::test]
async fn a_ringing_call_the_caller_abandons_is_cancelled_at_once() {
    let sipp = Sipp::start("uas_no_answer", "u1").await;
    let mut config = sipp.trunk();
    // The ring timeout is far away: only the abandon can end this call early.
    config.ring_timeout = Duration::from_secs(30);
    let (report, events, took) = place_abandoned(&sipp, config, Duration::from_millis(800)).await;
    assert_eq!(
        report.outcome,
        CallOutcome::Abandoned { answered: false },
        "{}",
        sipp.logs()
    );
    assert_eq!(
        events,
        [Progress::InviteSent, Progress::Ringing { status: 180 }]
    );
    assert!(report.timeline.answered.is_none());
    assert!(took < Duration::from_secs(20), "{took:?}");
    // sipp's scenario ends with the 487 ACKed: it got our CANCEL.
    sipp.assert_passed().await;
}

#[tokio::test]
async fn an_answer_crossing_the_callers_cancel_is_acked_and_hung_up() {
    let sipp = Sipp::start("uas_answer_crosses_cancel", "u1").await;
    let mut config = sipp.trunk();
    config.ring_timeout = Duration::from_secs(30);
    let (report, _, _) = place_abandoned(&sipp, config, Duration::from_millis(800)).await;
    assert_eq!(
        report.outcome,
        CallOutcome::Abandoned { answered: true },
        "{}",
        sipp.logs()
    );
    assert!(report.timeline.answered.is_some());
    // sipp's scenario ends with our ACK and BYE: no audio was wanted.
    sipp.assert_passed().await;
}

#[tokio::test]
async fn a_call_abandoned_before_it_starts_is_never_placed() {
    // Nothing listens here: a call that was placed would end unreachable, not abandoned.
    let config = trunk(free_port());
    let to = SipUri::from_parts(
        "9779800000000",
        &format!("127.0.0.1:{}", config.proxy.port()),
    )
    .unwrap();
    let mut events = Vec::new();
    let report = client(config)
        .call_until(&to, &caller(), &tone(0.5), &mut |p| events.push(p), async {
        })
        .await
        .unwrap();
    assert_eq!(report.outcome, CallOutcome::Abandoned { answered: false });
    assert!(events.is_empty(), "{events:?}");
    assert!(report.timeline.invite_sent.is_none());
}

#[tokio::test]
async fn a_bye_from_the_callee_mid_prompt_stops_the_audio() {
    let sipp = Sipp::start("uas_bye_mid_prompt", "u1").await;
    let audio = tone(20.0);
    let (report, _) = place(&sipp, sipp.trunk(), &audio).await;
    let CallOutcome::Answered {
        played,
        completed,
        hangup,
    } = report.outcome
    else {
        panic!("not answered: {:?} {}", report.outcome, sipp.logs());
    };
    assert_eq!(hangup, Hangup::Callee);
    assert!(!completed);
    assert!(
        played > Duration::ZERO && played < Duration::from_secs(20),
        "{played:?}"
    );
    assert_eq!(
        report.codec,
        Some(Codec::Pcma),
        "sipp's first choice among ours"
    );
    sipp.assert_passed().await;
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let port = free_port(); // nothing listens: the kernel answers ICMP port unreachable
    let client = client(trunk(port));
    let to = SipUri::from_parts("9779800000000", &format!("127.0.0.1:{port}")).unwrap();
    let report = tokio::time::timeout(CALL_BOUND, client.call(&to, &caller(), &tone(0.1)))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(report.outcome, CallOutcome::Unreachable { .. }),
        "{:?}",
        report.outcome
    );
    assert!(report.timeline.invite_sent.is_some());
}

#[tokio::test]
async fn a_silent_peer_is_unreachable_after_timer_b() {
    // Bound but mute: every INVITE retransmission arrives and none is answered.
    let silent = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let mut config = trunk(silent.local_addr().unwrap().port());
    config.t1 = Duration::from_millis(20);
    let client = client(config);
    let to = SipUri::from_parts("x", "127.0.0.1").unwrap();
    let report = tokio::time::timeout(CALL_BOUND, client.call(&to, &caller(), &tone(0.1)))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(report.outcome, CallOutcome::Unreachable { .. }),
        "{:?}",
        report.outcome
    );
    // Timer A doubles from T1 until Timer B (64·T1): the first send and 6 retransmissions
    // (at 1, 3, 7, 15, 31, 63 T1).
    let mut buf = [0u8; 4096];
    let mut invites = 0;
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(10), silent.recv(&mut buf)).await
    {
        assert!(buf[..n].starts_with(b"INVITE "));
        invites += 1;
    }
    assert_eq!(invites, 7);
}

/// One RTP packet's header fields, as the sink saw them.
struct Seen {
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    payload_len: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_each_send_their_own_clean_stream() {
    const CALLS: usize = 50;
    let sink = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let sink_port = sink.local_addr().unwrap().port().to_string();
    let sipp = Sipp::start_with("uas_answer", "u1", CALLS as u32, &[("rtp_sink", sink_port)]).await;
    let audio: Arc<[i16]> = tone(1.0).into();
    let client = client(sipp.trunk());
    let to = sipp.uri();

    let (calls_over, mut over) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(async move {
        let mut streams: HashMap<u32, Vec<Seen>> = HashMap::new();
        let mut buf = [0u8; 2048];
        let mut finished = false;
        loop {
            // Everything until the calls are over, then what is still in flight.
            let n = if finished {
                match tokio::time::timeout(Duration::from_millis(300), sink.recv(&mut buf)).await {
                    Ok(r) => r.unwrap(),
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    r = sink.recv(&mut buf) => r.unwrap(),
                    _ = &mut over => {
                        finished = true;
                        continue;
                    }
                }
            };
            let p = &buf[..n];
            assert_eq!(p[0], 0x80, "RTP version 2, no padding, extension or CSRCs");
            streams
                .entry(u32::from_be_bytes([p[8], p[9], p[10], p[11]]))
                .or_default()
                .push(Seen {
                    marker: p[1] & 0x80 != 0,
                    payload_type: p[1] & 0x7F,
                    sequence: u16::from_be_bytes([p[2], p[3]]),
                    timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                    payload_len: n - 12,
                });
        }
        streams
    });

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..CALLS {
        let (client, to, audio) = (client.clone(), to.clone(), audio.clone());
        calls.spawn(async move {
            tokio::time::timeout(CALL_BOUND, client.call(&to, &caller(), &audio))
                .await
                .expect("a call did not end")
                .unwrap()
        });
    }
    let mut call_ids = HashSet::new();
    while let Some(report) = calls.join_next().await {
        let report = report.unwrap();
        assert_eq!(report.outcome, answered_in_full(&audio), "{}", sipp.logs());
        assert!(call_ids.insert(report.call_id));
    }
    assert_eq!(call_ids.len(), CALLS);
    calls_over.send(()).unwrap();

    let streams = collector.await.unwrap();
    assert_eq!(streams.len(), CALLS, "one SSRC per call");
    let packets = audio.len().div_ceil(160);
    for (ssrc, stream) in &streams {
        assert_eq!(stream.len(), packets, "stream {ssrc:#x}");
        let first = stream
            .iter()
            .find(|p| p.marker)
            .expect("a marked first packet");
        assert_eq!(stream.iter().filter(|p| p.marker).count(), 1);
        let mut offsets: Vec<u16> = stream
            .iter()
            .map(|p| {
                assert_eq!(p.payload_type, 0);
                assert_eq!(p.payload_len, 160);
                let k = p.sequence.wrapping_sub(first.sequence);
                assert_eq!(
                    p.timestamp.wrapping_sub(first.timestamp),
                    160 * u32::from(k),
                    "stream {ssrc:#x}: timestamp follows the sequence number"
                );
                k
            })
            .collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..packets as u16).collect::<Vec<_>>());
    }
    sipp.assert_passed().await;
}

#[tokio::test]
async fn the_maximum_call_length_cuts_the_audio_with_a_bye() {
    let sink = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let sink_port = sink.local_addr().unwrap().port().to_string();
    let sipp = Sipp::start_with("uas_answer", "u1", 1, &[("rtp_sink", sink_port)]).await;
    let mut config = sipp.trunk();
    config.max_duration = Duration::from_millis(500);
    let (report, _) = place(&sipp, config, &tone(20.0)).await;
    let CallOutcome::Answered {
        played,
        completed,
        hangup,
    } = report.outcome
    else {
        panic!("not answered: {:?} {}", report.outcome, sipp.logs());
    };
    assert_eq!(hangup, Hangup::MaxDuration);
    assert!(!completed);
    assert!(played < Duration::from_secs(20), "{played:?}");
    // sipp's scenario ends with our BYE and its 200.
    sipp.assert_passed().await;
}
