//! [`EspeakEngine`]: Debian's `espeak-ng` run as a subprocess.
//!
//! A subprocess rather than linking libespeak-ng keeps espeak-ng's GPL out of our binary,
//! and a crash or hang in the synthesizer cannot take the gateway with it: each render
//! runs under a timeout after which the child is killed, and a semaphore bounds how many
//! run at once.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Semaphore;

use crate::voice::{VoiceProfile, default_profiles};
use crate::wav::Pcm;
use crate::{Audio, RenderRequest, TtsEngine, TtsError};

/// espeak-ng's slowest rate; it ignores lower `-s` values.
const MIN_ESPEAK_RATE: f32 = 80.0;
/// The fastest rate we ask for (`length_factor` 0.5 on a 450 wpm profile).
const MAX_ESPEAK_RATE: f32 = 900.0;
/// How much of the child's stderr an error keeps (the end of it).
const STDERR_KEEP: usize = 2048;

/// How to run espeak-ng.
#[derive(Clone, Debug)]
pub struct EspeakConfig {
    /// The program to run; looked up in `PATH` when it has no slash. Default `espeak-ng`.
    pub program: PathBuf,
    /// How long one render may take before the child is killed. Default 10 s.
    pub timeout: Duration,
    /// Renders running at once; more wait their turn. Default 4.
    pub max_concurrent: usize,
    /// Largest WAV accepted from the program; more is [`TtsError::OutputTooLarge`]. Default
    /// 32 MiB, about 12 minutes at espeak-ng's 22 050 Hz, far beyond any prompt.
    pub max_output_bytes: usize,
    /// The voice table. Default [`default_profiles`].
    pub profiles: Vec<VoiceProfile>,
}

impl Default for EspeakConfig {
    fn default() -> Self {
        EspeakConfig {
            program: PathBuf::from("espeak-ng"),
            timeout: Duration::from_secs(10),
            max_concurrent: 4,
            max_output_bytes: 32 * 1024 * 1024,
            profiles: default_profiles(),
        }
    }
}

/// Renders with espeak-ng in SSML mode, then converts its 22 050 Hz output to 8 kHz.
#[derive(Debug)]
pub struct EspeakEngine {
    program: PathBuf,
    timeout: Duration,
    max_output_bytes: usize,
    profiles: Vec<VoiceProfile>,
    permits: Arc<Semaphore>,
}

impl EspeakEngine {
    /// Validates the configuration. Does not run the program; see [`EspeakEngine::check`].
    pub fn new(config: EspeakConfig) -> Result<EspeakEngine, TtsError> {
        if config.max_concurrent == 0 {
            return Err(TtsError::InvalidConfig(
                "max_concurrent must be at least 1".into(),
            ));
        }
        if config.timeout.is_zero() {
            return Err(TtsError::InvalidConfig("timeout must be positive".into()));
        }
        for (i, profile) in config.profiles.iter().enumerate() {
            profile.validate()?;
            if config.profiles[..i].iter().any(|p| p.name == profile.name) {
                return Err(TtsError::InvalidVoiceProfile {
                    name: profile.name.clone(),
                    reason: "the name appears twice".into(),
                });
            }
        }
        Ok(EspeakEngine {
            program: config.program,
            timeout: config.timeout,
            max_output_bytes: config.max_output_bytes,
            profiles: config.profiles,
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
        })
    }

    /// The voice table, for listing voices.
    pub fn profiles(&self) -> &[VoiceProfile] {
        &self.profiles
    }

    /// The profile for an API voice name.
    pub fn profile(&self, voice: &str) -> Option<&VoiceProfile> {
        self.profiles.iter().find(|p| p.name == voice)
    }

    /// Runs `espeak-ng --version` and returns its output, so startup can fail early with
    /// [`TtsError::EngineMissing`] instead of at the first voice OTP.
    pub async fn check(&self) -> Result<String, TtsError> {
        let out = self.run(&["--version"], Vec::new()).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Runs the program with `args`, writing `input` to its stdin, and returns its stdout.
    async fn run(&self, args: &[&str], input: Vec<u8>) -> Result<Vec<u8>, TtsError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");

        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Backstop if this future is dropped mid-render; the timeout path kills explicitly.
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| match source.kind() {
                ErrorKind::NotFound => TtsError::EngineMissing {
                    program: self.program.clone(),
                },
                _ => TtsError::Io {
                    program: self.program.clone(),
                    source,
                },
            })?;

        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        // Write, read and wait together: a child that fills a pipe while we wait on
        // another would otherwise deadlock.
        let write = async move {
            let written = stdin.write_all(&input).await;
            drop(stdin); // EOF ends espeak-ng's --stdin
            match written {
                // A child that exits without reading all input is judged by its status.
                Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
                other => other,
            }
        };
        let exchange = async {
            tokio::join!(
                write,
                read_capped(stdout, self.max_output_bytes),
                read_tail(stderr, STDERR_KEEP),
                child.wait()
            )
        };
        let finished = tokio::time::timeout(self.timeout, exchange).await;
        let Ok((written, out, err, status)) = finished else {
            // kill() also reaps the child, so no zombie is left behind.
            if let Err(e) = child.kill().await {
                tracing::warn!(program = %self.program.display(), error = %e, "killing a timed-out TTS process");
            }
            return Err(TtsError::Timeout {
                after: self.timeout,
            });
        };

        let io_error = |source| TtsError::Io {
            program: self.program.clone(),
            source,
        };
        // Checked before the exit status: closing an overflowing pipe may itself kill the
        // child (SIGPIPE), and the overflow is the real cause.
        let Some(out) = out.map_err(io_error)? else {
            return Err(TtsError::OutputTooLarge {
                limit: self.max_output_bytes,
            });
        };
        let status = status.map_err(io_error)?;
        let err = err.map_err(io_error)?;
        if !status.success() {
            return Err(TtsError::EngineFailed {
                program: self.program.clone(),
                status,
                stderr: String::from_utf8_lossy(&err).trim().to_owned(),
            });
        }
        written.map_err(io_error)?;
        Ok(out)
    }
}

/// Reads a pipe to its end, or returns `None` as soon as more than `limit` bytes arrive;
/// the pipe is then closed, so the writer gets EPIPE instead of blocking.
async fn read_capped(
    pipe: impl AsyncRead + Unpin,
    limit: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let limit_plus_one = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    pipe.take(limit_plus_one).read_to_end(&mut buf).await?;
    Ok((buf.len() <= limit).then_some(buf))
}

/// Reads a pipe to its end, keeping only the last `keep` bytes: a chatty child is never
/// blocked on a full pipe, and memory stays bounded.
async fn read_tail(mut pipe: impl AsyncRead + Unpin, keep: usize) -> std::io::Result<Vec<u8>> {
    let mut tail = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = pipe.read(&mut chunk).await?;
        if n == 0 {
            return Ok(tail);
        }
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
}

#[async_trait]
impl TtsEngine for EspeakEngine {
    async fn render(&self, req: &RenderRequest) -> Result<Audio, TtsError> {
        let profile = self
            .profile(&req.voice)
            .ok_or_else(|| TtsError::UnknownVoice {
                voice: req.voice.clone(),
            })?;
        let factor = req.length_factor.get();
        let ssml = req.text.to_ssml(profile.numerals(), factor);
        // espeak-ng clamps below 80 wpm; the pauses still scale, so long factors on slow
        // profiles still lengthen the prompt, only less than proportionally.
        let rate = (f32::from(profile.rate_wpm) / factor)
            .clamp(MIN_ESPEAK_RATE, MAX_ESPEAK_RATE)
            .round()
            .to_string();
        let pitch = profile.pitch.to_string();
        let args = [
            "-v",
            &profile.espeak_voice,
            "-p",
            &pitch,
            "-s",
            &rate,
            "-m",
            "--stdout",
            "--stdin",
        ];

        let started = std::time::Instant::now();
        let wav = self.run(&args, ssml.into_bytes()).await?;
        // Decoding and resampling are CPU work proportional to the prompt's length; keep
        // them off the runtime's workers.
        let audio = tokio::task::spawn_blocking(move || {
            let pcm = Pcm::decode_wav(&wav)?;
            if pcm.samples.is_empty() {
                return Err(TtsError::EmptyOutput);
            }
            Ok(Audio::from_pcm(&pcm))
        })
        .await
        .expect("WAV conversion does not panic")?;
        tracing::debug!(
            voice = %req.voice,
            audio = ?audio.duration(),
            took = ?started.elapsed(),
            "rendered speech with espeak-ng"
        );
        Ok(audio)
    }
}
