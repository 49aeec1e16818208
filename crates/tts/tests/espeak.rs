//! The espeak-ng engine against the real program (Debian package `espeak-ng`), and its
//! failure paths against small stand-in scripts. WAV headers are cross-checked with SoX
//! (Debian package `sox`). Missing tools fail these tests; they are never skipped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tts::{
    Audio, CachedEngine, DEFAULT_CACHE_BYTES, DEFAULT_REPEAT, EspeakConfig, EspeakEngine,
    LengthFactor, RenderRequest, SpeechText, TtsEngine, TtsError, default_profiles,
};

/// A Nepali message, split where the code goes.
const MESSAGE: [&str; 2] = ["तपाईंको प्रमाणीकरण कोड ", " हो।"];

fn require(program: &str, package: &str) {
    let found = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        found,
        "`{program}` is not installed, and these tests need the real program. \
         Install it with: apt-get install -y {package}"
    );
}

fn engine_with(config: EspeakConfig) -> EspeakEngine {
    require("espeak-ng", "espeak-ng");
    EspeakEngine::new(config).unwrap()
}

fn engine() -> EspeakEngine {
    engine_with(EspeakConfig::default())
}

fn otp(voice: &str, code: &str, repeat: u32) -> RenderRequest {
    RenderRequest::new(voice, SpeechText::with_code(MESSAGE, code, repeat).unwrap())
}

/// A shell script in this test binary's scratch directory.
fn script(name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn seconds(audio: &Audio) -> f64 {
    audio.duration().as_secs_f64()
}

/// Mean fundamental frequency over voiced 40 ms frames, by normalised autocorrelation
/// searched between 60 and 400 Hz.
fn mean_pitch_hz(audio: &Audio) -> f64 {
    let x: Vec<f64> = audio.samples().iter().map(|s| f64::from(*s)).collect();
    let frame = 320;
    let frames: Vec<&[f64]> = x.chunks_exact(frame).collect();
    let energy = |f: &[f64]| f.iter().map(|s| s * s).sum::<f64>();
    let loudest = frames.iter().map(|f| energy(f)).fold(0.0, f64::max);
    let mut pitches = Vec::new();
    for f in frames {
        if energy(f) < 0.1 * loudest {
            continue;
        }
        let best = (20..=133)
            .map(|lag| {
                let (a, b) = (&f[..frame - lag], &f[lag..]);
                let dot: f64 = a.iter().zip(b).map(|(p, q)| p * q).sum();
                (lag, dot / (energy(a) * energy(b)).sqrt().max(1e-9))
            })
            .max_by(|p, q| p.1.total_cmp(&q.1))
            .unwrap();
        if best.1 > 0.6 {
            pitches.push(8000.0 / best.0 as f64);
        }
    }
    assert!(
        pitches.len() >= 5,
        "too few voiced frames to estimate pitch"
    );
    pitches.iter().sum::<f64>() / pitches.len() as f64
}

#[tokio::test]
async fn each_voice_renders_8khz_speech_and_women_sound_higher_than_men() {
    let engine = engine();
    let mut renders = Vec::new();
    for profile in default_profiles() {
        let audio = engine.render(&otp(&profile.name, "4821", 2)).await.unwrap();
        assert!(seconds(&audio) > 3.0, "{}: {:?}", profile.name, audio);
        let peak = audio.samples().iter().map(|s| s.unsigned_abs()).max();
        assert!(peak > Some(3000), "{} is near silent", profile.name);
        let pitch = mean_pitch_hz(&audio);
        eprintln!("{:<13} {audio:?} mean pitch {pitch:.0} Hz", profile.name);
        renders.push((profile.name, audio, pitch));
    }
    for (i, (name_a, audio_a, _)) in renders.iter().enumerate() {
        for (name_b, audio_b, _) in &renders[i + 1..] {
            assert_ne!(audio_a, audio_b, "{name_a} and {name_b} are identical");
        }
    }
    let pitch = |name: &str| renders.iter().find(|r| r.0 == name).unwrap().2;
    for woman in ["np_rija", "np_shreegya"] {
        for man in ["np_prashanna", "np_binod"] {
            assert!(
                pitch(woman) > 1.3 * pitch(man),
                "{woman} {:.0} Hz is not clearly above {man} {:.0} Hz",
                pitch(woman),
                pitch(man)
            );
        }
    }
    let apart = |a: &str, b: &str| {
        let (hi, lo) = (pitch(a).max(pitch(b)), pitch(a).min(pitch(b)));
        assert!(hi > 1.15 * lo, "{a} and {b} are too close in pitch");
    };
    apart("np_rija", "np_shreegya");
    apart("np_prashanna", "np_binod");
}

#[tokio::test]
async fn the_code_is_read_digit_by_digit_and_a_second_repeat_about_doubles_it() {
    let engine = engine();
    let code = |repeat| {
        RenderRequest::new(
            "np_rija",
            SpeechText::with_code(["", ""], "4821", repeat).unwrap(),
        )
    };
    let once = seconds(&engine.render(&code(1)).await.unwrap());
    let twice = seconds(&engine.render(&code(DEFAULT_REPEAT)).await.unwrap());
    // The same digits as words in a row, without the pauses.
    let no_pauses = seconds(
        &engine
            .render(&RenderRequest::new("np_rija", SpeechText::plain("४ ८ २ १")))
            .await
            .unwrap(),
    );
    eprintln!("digits: without pauses {no_pauses:.2} s, once {once:.2} s, twice {twice:.2} s");
    assert!(
        once > no_pauses + 0.6,
        "the pauses between digits do not show"
    );
    let ratio = twice / once;
    assert!((1.6..=2.4).contains(&ratio), "twice/once = {ratio:.2}");
}

#[tokio::test]
async fn length_factor_above_one_is_slower_and_below_one_faster() {
    let engine = engine();
    let at = |factor| RenderRequest {
        length_factor: LengthFactor::new(factor).unwrap(),
        ..otp("np_binod", "4821", 2)
    };
    let normal = seconds(&engine.render(&at(1.0)).await.unwrap());
    let slow = seconds(&engine.render(&at(2.0)).await.unwrap());
    let fast = seconds(&engine.render(&at(0.5)).await.unwrap());
    eprintln!("length factor 0.5: {fast:.2} s, 1.0: {normal:.2} s, 2.0: {slow:.2} s");
    assert!(slow > 1.6 * normal, "2.0 gave {slow:.2} s vs {normal:.2} s");
    assert!(fast < 0.7 * normal, "0.5 gave {fast:.2} s vs {normal:.2} s");
}

#[tokio::test]
async fn a_render_is_a_valid_8khz_mono_wav_for_other_tools() {
    let audio = engine().render(&otp("np_shreegya", "93", 1)).await.unwrap();
    let wav = audio.to_wav_bytes();
    assert_eq!(Audio::from_wav_bytes(&wav).unwrap(), audio);

    require("sox", "sox");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("render.wav");
    std::fs::write(&path, &wav).unwrap();
    let info = |flag: &str| {
        let out = std::process::Command::new("soxi")
            .arg(flag)
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "soxi {flag} rejected our WAV");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(info("-r"), "8000");
    assert_eq!(info("-c"), "1");
    assert_eq!(info("-b"), "16");
    assert_eq!(info("-s"), audio.samples().len().to_string());
}

#[tokio::test]
async fn a_second_identical_render_is_a_cache_hit_with_identical_audio() {
    let cache = CachedEngine::new(engine(), DEFAULT_CACHE_BYTES);
    let req = otp("np_prashanna", "4821", 2);
    let first = cache.render(&req).await.unwrap();
    let second = cache.render(&req).await.unwrap();
    assert_eq!(first, second);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

#[tokio::test]
async fn the_engine_works_behind_a_shared_trait_object() {
    let shared: Arc<dyn TtsEngine> = Arc::new(CachedEngine::new(engine(), DEFAULT_CACHE_BYTES));
    let tasks: Vec<_> = ["np_rija", "np_binod"]
        .into_iter()
        .map(|voice| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move { shared.render(&otp(voice, "1", 1)).await })
        })
        .collect();
    for task in tasks {
        assert!(!task.await.unwrap().unwrap().is_empty());
    }
}

#[tokio::test]
async fn check_reports_the_installed_version() {
    let version = engine().check().await.unwrap();
    assert!(version.contains("eSpeak NG"), "{version}");
}

#[tokio::test]
async fn a_missing_program_is_engine_missing() {
    let engine = EspeakEngine::new(EspeakConfig {
        program: "/nonexistent/espeak-ng".into(),
        ..EspeakConfig::default()
    })
    .unwrap();
    let err = engine.render(&otp("np_rija", "1", 1)).await.unwrap_err();
    assert!(matches!(err, TtsError::EngineMissing { .. }), "{err:?}");
    assert!(
        err.to_string().contains("apt-get install espeak-ng"),
        "{err}"
    );
    assert!(matches!(
        engine.check().await,
        Err(TtsError::EngineMissing { .. })
    ));
}

#[tokio::test]
async fn a_hung_engine_is_killed_at_the_timeout() {
    let pid_file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hung.pid");
    let _ = std::fs::remove_file(&pid_file);
    let hung = script(
        "hung-espeak",
        &format!("echo $$ > {}\nexec sleep 30", pid_file.display()),
    );
    let engine = EspeakEngine::new(EspeakConfig {
        program: hung,
        timeout: Duration::from_millis(500),
        ..EspeakConfig::default()
    })
    .unwrap();

    let err = engine.render(&otp("np_rija", "1", 1)).await.unwrap_err();
    assert!(
        matches!(err, TtsError::Timeout { after } if after == Duration::from_millis(500)),
        "{err:?}"
    );

    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let proc_entry = PathBuf::from(format!("/proc/{}", pid.trim()));
    assert!(
        !proc_entry.exists(),
        "the timed-out process {} is still there",
        pid.trim()
    );
}

#[tokio::test]
async fn a_failing_engine_reports_its_status_and_stderr() {
    let failing = script("failing-espeak", "echo 'no such voice' >&2\nexit 3");
    let engine = EspeakEngine::new(EspeakConfig {
        program: failing,
        ..EspeakConfig::default()
    })
    .unwrap();
    match engine.render(&otp("np_rija", "1", 1)).await {
        Err(TtsError::EngineFailed { status, stderr, .. }) => {
            assert_eq!(status.code(), Some(3));
            assert_eq!(stderr, "no such voice");
        }
        other => panic!("expected EngineFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn output_that_is_not_a_wav_is_bad_output() {
    let chatty = script("chatty-espeak", "cat > /dev/null\necho hello");
    let engine = EspeakEngine::new(EspeakConfig {
        program: chatty,
        ..EspeakConfig::default()
    })
    .unwrap();
    let err = engine.render(&otp("np_rija", "1", 1)).await.unwrap_err();
    assert!(matches!(err, TtsError::BadOutput(_)), "{err:?}");
}

#[tokio::test]
async fn output_beyond_the_size_limit_is_refused_without_hanging() {
    let flood = script("flood-espeak", "cat > /dev/null\nexec cat /dev/zero");
    let engine = EspeakEngine::new(EspeakConfig {
        program: flood,
        max_output_bytes: 1 << 20,
        ..EspeakConfig::default()
    })
    .unwrap();
    let err = engine.render(&otp("np_rija", "1", 1)).await.unwrap_err();
    assert!(
        matches!(err, TtsError::OutputTooLarge { limit } if limit == 1 << 20),
        "{err:?}"
    );
}

#[tokio::test]
async fn only_the_end_of_a_long_stderr_is_kept() {
    let noisy = script(
        "noisy-espeak",
        "cat > /dev/null\nhead -c 1000000 /dev/zero | tr '\\0' x >&2\necho ' the end' >&2\nexit 1",
    );
    let engine = EspeakEngine::new(EspeakConfig {
        program: noisy,
        ..EspeakConfig::default()
    })
    .unwrap();
    match engine.render(&otp("np_rija", "1", 1)).await {
        Err(TtsError::EngineFailed { stderr, .. }) => {
            assert!(stderr.len() <= 2048, "kept {} bytes", stderr.len());
            assert!(stderr.ends_with("x the end"), "{stderr}");
        }
        other => panic!("expected EngineFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_voice_is_named_in_the_error() {
    let err = engine()
        .render(&otp("np_nobody", "1", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TtsError::UnknownVoice { voice } if voice == "np_nobody"),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_concurrency_limit_makes_renders_wait_their_turn() {
    require("espeak-ng", "espeak-ng");
    // The stand-in logs when each render starts and ends; under a limit of one
    // the second must start after the first ended.
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slow-espeak.log");
    let _ = std::fs::remove_file(&log);
    let slow = script(
        "slow-espeak",
        &format!(
            "echo start >> {log}\nsleep 0.2\nespeak-ng \"$@\"\nstatus=$?\necho end >> {log}\nexit $status",
            log = log.display()
        ),
    );
    let engine = Arc::new(engine_with(EspeakConfig {
        program: slow,
        max_concurrent: 1,
        ..EspeakConfig::default()
    }));
    let (first, second) = (otp("np_rija", "1", 1), otp("np_binod", "2", 1));
    let (a, b) = tokio::join!(engine.render(&first), engine.render(&second));
    a.unwrap();
    b.unwrap();
    let events = std::fs::read_to_string(&log).unwrap();
    let events: Vec<&str> = events.lines().collect();
    assert_eq!(
        events,
        ["start", "end", "start", "end"],
        "two renders overlapped under a limit of one"
    );
}
