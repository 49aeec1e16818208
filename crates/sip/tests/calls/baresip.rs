//! baresip as the callee: auto-answer, record the decoded audio with its `sndfile` module,
//! compare the recording with what we sent.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sip::{CallOutcome, Codec, Hangup, Progress, SipUri, TransportKind};
use tokio::process::{Child, Command};
use tts::{Audio, EspeakConfig, EspeakEngine, RenderRequest, SpeechText, TtsEngine};

use crate::helpers::*;

struct Baresip {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Baresip {
    /// Starts baresip listening on 127.0.0.1 only, answering every call at once, with no
    /// sound card: aubridge stands in for the player and the source, and sndfile writes
    /// what it decodes to `dump-*-dec.wav` in `recordings/`.
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
             call_max_calls 64\n\
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
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:callee@127.0.0.1:{port}>;regint=0;answermode=auto\n"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .args(["-t", "300"]) // baresip quits on its own if a test forgets it
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
            "OPTIONS sip:callee@127.0.0.1:{port} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bKready\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\n\
             To: <sip:callee@127.0.0.1:{port}>\r\nCall-ID: ready-{port}\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            port = self.port
        );
        let mut buf = [0u8; 4096];
        for _ in 0..100 {
            let _ = socket
                .send_to(options.as_bytes(), ("127.0.0.1", self.port))
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

    fn uri(&self) -> SipUri {
        SipUri::from_parts("callee", &format!("127.0.0.1:{}", self.port)).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    /// The decoded-audio recordings, once baresip has closed them (the WAV header is only
    /// final then, so wait until every file parses and stops growing).
    async fn recordings(&self, expected: usize) -> Vec<Audio> {
        let dir = self.dir.join("recordings");
        let mut last = Vec::new();
        for _ in 0..100 {
            let files = dec_files(&dir);
            let sizes: Vec<u64> = files
                .iter()
                .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
                .collect();
            if files.len() == expected && sizes == last {
                let audio: Result<Vec<Audio>, _> = files
                    .iter()
                    .map(|f| Audio::from_wav_bytes(&std::fs::read(f).unwrap()))
                    .collect();
                if let Ok(audio) = audio
                    && audio.iter().all(|a| !a.is_empty())
                {
                    return audio;
                }
            }
            last = sizes;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "expected {expected} finished recordings in {}, found {:?}; baresip log:\n{}",
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

/// A short Nepali prompt in voice np_rija, 8 kHz.
async fn nepali_prompt() -> Audio {
    require("espeak-ng", "--version", "espeak-ng");
    let engine = EspeakEngine::new(EspeakConfig::default()).unwrap();
    let text = SpeechText::plain("नमस्ते। यो कल परीक्षणको लागि हो। धन्यवाद।");
    engine
        .render(&RenderRequest::new("np_rija", text))
        .await
        .unwrap()
}

/// The best alignment of `sent` inside `received`: (lag in samples, normalised
/// cross-correlation over the overlap). Only lags where at least 3/4 of `sent` overlaps
/// `received` count, so a few stray samples cannot correlate perfectly. A coarse search on
/// 10 ms energy envelopes (mean removed) finds the neighbourhood, then every lag within
/// ±20 ms of it is tried on the samples.
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

/// Normalised correlation of `a` against `b` shifted so that a[i] meets b[i + lag].
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
async fn baresip_hears_the_nepali_prompt_we_play() {
    let prompt = nepali_prompt().await;
    let peer = Baresip::start("prompt").await;
    let client = client(trunk(peer.port));
    let mut events = Vec::new();
    let report = tokio::time::timeout(
        CALL_BOUND,
        client.call_with_progress(&peer.uri(), &caller(), prompt.samples(), &mut |p| {
            events.push(p)
        }),
    )
    .await
    .expect("the call did not end")
    .unwrap();

    let sent = prompt.duration();
    assert_eq!(
        report.outcome,
        CallOutcome::Answered {
            played: sent.div_duration_f64(Duration::from_millis(20)).ceil() as u32
                * Duration::from_millis(20),
            completed: true,
            hangup: Hangup::AudioEnded
        },
        "baresip log:\n{}",
        peer.log()
    );
    assert_eq!(
        report.codec,
        Some(Codec::Pcmu),
        "our first choice, which baresip takes"
    );
    assert!(report.remote_rtp.unwrap().ip().is_loopback());
    assert_eq!(
        events,
        [
            Progress::InviteSent,
            Progress::Ringing { status: 180 },
            Progress::Answered { codec: Codec::Pcmu }
        ]
    );
    let t = report.timeline;
    assert!(t.invite_sent.unwrap() <= t.answered.unwrap());
    assert!(t.answered.unwrap() <= t.ended.unwrap());

    let recording = peer.recordings(1).await.remove(0);
    peer.stop().await;
    let (lag, corr) = align(prompt.samples(), recording.samples());
    eprintln!(
        "sent {:?}, recorded {:?}, lag {lag} samples, correlation {corr:.3}",
        sent,
        recording.duration()
    );
    assert!(
        corr > 0.8,
        "recording does not match the prompt: correlation {corr:.3}"
    );
    // The measure tells speech apart: the same prompt played backwards does not match.
    let reversed: Vec<i16> = prompt.samples().iter().rev().copied().collect();
    let (_, other) = align(&reversed, recording.samples());
    assert!(other < 0.5, "reversed prompt correlates {other:.3}");
    let diff = recording.duration().abs_diff(sent);
    assert!(
        diff <= Duration::from_millis(300),
        "recorded {:?} of a {sent:?} prompt",
        recording.duration()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_hears_a_tone_over_a_tcp_call() {
    let audio = tone(1.5);
    let peer = Baresip::start("tcp").await;
    let mut config = trunk(peer.port);
    config.transport = TransportKind::Tcp;
    let report = tokio::time::timeout(
        CALL_BOUND,
        client(config).call(&peer.uri(), &caller(), &audio),
    )
    .await
    .expect("the call did not end")
    .unwrap();
    assert_eq!(
        report.outcome,
        CallOutcome::Answered {
            played: Duration::from_millis(1500),
            completed: true,
            hangup: Hangup::AudioEnded
        },
        "baresip log:\n{}",
        peer.log()
    );
    let recording = peer.recordings(1).await.remove(0);
    peer.stop().await;
    let (_, corr) = align(&audio, recording.samples());
    assert!(
        corr > 0.8,
        "recording does not match the tone: correlation {corr:.3}"
    );
}
