//! Voice OTPs: the prompt a call plays, and the `sip` driver that plays it.
//!
//! [`Prompter`] is the one speech renderer of a node: a `tts::CachedEngine` over
//! `tts::EspeakEngine`, built from `[voice]` at startup and shared by the `log`
//! driver (which writes each voice OTP's prompt as a WAV file), the [`sip`] driver
//! (which plays it) and `POST /api/v1/auths/voice/preview/` (which returns it). All
//! three go through [`Prompter::render`], so a preview is byte for byte what a call
//! would play.
//!
//! Building a `Prompter` never runs espeak-ng: the embedded default (the `log`
//! driver) starts on a machine without it, and logs voice OTPs without audio.
//! Startup checks for the program only when a `sip` route needs it.

pub mod settings;
pub mod sip;

use std::path::{Path, PathBuf};
use std::time::Duration;

use otp_domain::channel::Voice;
use otp_domain::code::OtpCode;
use otp_domain::message::MessageTemplate;
use otp_store::OtpRecord;
use tts::{
    Audio, CachedEngine, EspeakConfig, EspeakEngine, LengthFactor, PromptError, RenderRequest,
    SpeechText, TtsEngine, TtsError, VoiceProfile,
};

use settings::VoiceConfig;

/// What a voice OTP says, taken from its record or from a preview request.
#[derive(Debug, Clone, Copy)]
pub struct Prompt<'a> {
    pub voice: Voice,
    /// The message with `{otp}` where the code goes.
    pub template: &'a MessageTemplate,
    /// The code, ASCII digits.
    pub code: &'a OtpCode,
    pub length_factor: f64,
}

impl<'a> Prompt<'a> {
    /// The prompt of a voice OTP; `None` for a text OTP, or one whose code is
    /// masked (a claim never hands those out).
    pub fn of(otp: &'a OtpRecord) -> Option<Prompt<'a>> {
        Some(Prompt {
            voice: otp.voice?,
            template: &otp.template,
            code: otp.code.plain()?,
            length_factor: otp.length_factor.unwrap_or(1.0),
        })
    }
}

/// Why a prompt could not be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The code cannot become speech (a non-digit one, or one too long):
    /// no retry or configuration change helps.
    #[error("the prompt cannot be spoken: {0}")]
    Prompt(#[from] PromptError),
    /// The engine failed (not installed, timed out, crashed).
    #[error(transparent)]
    Engine(#[from] TtsError),
}

impl RenderError {
    /// Whether the same prompt could render later (or after an operator's fix).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RenderError::Engine(
                TtsError::EngineMissing { .. }
                    | TtsError::Timeout { .. }
                    | TtsError::EngineFailed { .. }
                    | TtsError::Io { .. }
            )
        )
    }

    /// True when espeak-ng is not installed.
    pub fn is_engine_missing(&self) -> bool {
        matches!(self, RenderError::Engine(TtsError::EngineMissing { .. }))
    }
}

/// The node's speech renderer.
pub struct Prompter {
    engine: CachedEngine<EspeakEngine>,
    repeat: u32,
}

impl Prompter {
    /// Checks `[voice]` and builds the engine; does not run espeak-ng.
    pub fn new(config: &VoiceConfig) -> Result<Prompter, TtsError> {
        if !(1..=tts::prompt::MAX_REPEAT).contains(&config.repeat) {
            return Err(TtsError::InvalidConfig(format!(
                "voice.repeat must be 1 to {}, not {}",
                tts::prompt::MAX_REPEAT,
                config.repeat
            )));
        }
        let mut profiles = tts::default_profiles();
        for (name, change) in &config.voices {
            let profile = profiles
                .iter_mut()
                .find(|p| &p.name == name)
                .ok_or_else(|| TtsError::InvalidVoiceProfile {
                    name: name.clone(),
                    reason: "not an API voice (np_rija, np_prashanna, np_shreegya, np_binod)"
                        .into(),
                })?;
            if let Some(v) = &change.espeak_voice {
                profile.espeak_voice = v.clone();
            }
            if let Some(p) = change.pitch {
                profile.pitch = p;
            }
            if let Some(r) = change.rate_wpm {
                profile.rate_wpm = r;
            }
        }
        let engine = EspeakEngine::new(EspeakConfig {
            program: PathBuf::from(&config.espeak_program),
            timeout: Duration::from_millis(config.render_timeout_ms),
            max_concurrent: config.max_concurrent_renders,
            profiles,
            ..EspeakConfig::default()
        })?;
        Ok(Prompter {
            engine: CachedEngine::new(engine, config.cache_bytes),
            repeat: config.repeat,
        })
    }

    /// The voice behind an API voice name.
    pub fn profile(&self, voice: Voice) -> Option<&VoiceProfile> {
        self.engine.inner().profile(voice.as_str())
    }

    /// Runs `espeak-ng --version`: `Err(EngineMissing)` when it is not installed.
    pub async fn check(&self) -> Result<String, TtsError> {
        self.engine.inner().check().await
    }

    /// The audio a call plays for `prompt`: the message, with the code read digit
    /// by digit `voice.repeat` times, in the prompt's voice and length factor.
    pub async fn render(&self, prompt: &Prompt<'_>) -> Result<Audio, RenderError> {
        self.render_text(prompt, prompt.template.parts(), self.repeat)
            .await
    }

    /// How far into [`Prompter::render`]'s audio the code has been read out once in
    /// full: the length of the same prompt cut after its first code, said once.
    /// A callee who hangs up after this point has heard the code.
    pub async fn first_reading_ends(&self, prompt: &Prompt<'_>) -> Result<Duration, RenderError> {
        let head = self
            .render_text(prompt, prompt.template.first_reading(), 1)
            .await?;
        Ok(head.duration())
    }

    /// The speech of `parts` ([`MessageTemplate::parts`] or its first
    /// reading) with the prompt's code between each two.
    async fn render_text<'p>(
        &self,
        prompt: &Prompt<'_>,
        parts: impl IntoIterator<Item = &'p str>,
        repeat: u32,
    ) -> Result<Audio, RenderError> {
        let text = SpeechText::with_code(parts, prompt.code.as_str(), repeat)?;
        let request = RenderRequest {
            voice: prompt.voice.as_str().to_owned(),
            text,
            length_factor: LengthFactor::new(prompt.length_factor as f32)?,
        };
        Ok(self.engine.render(&request).await?)
    }
}

/// The sex of each API voice, as the voice list reports it (the voice table may
/// change how a voice sounds, not who it is).
pub fn gender(voice: Voice) -> &'static str {
    match voice {
        Voice::NpRija | Voice::NpShreegya => "female",
        Voice::NpPrashanna | Voice::NpBinod => "male",
    }
}

/// Renders a voice OTP's prompt into `dir/<otp id>.wav` (written whole, then
/// renamed into place, so a reader never sees half a file) and returns the path.
/// The file speaks the code, so it is readable by its owner only (0600, whatever
/// the umask), as the delivery log is.
pub async fn write_prompt_wav(
    prompter: &Prompter,
    dir: &Path,
    otp: &OtpRecord,
) -> Result<PathBuf, String> {
    let prompt = Prompt::of(otp).ok_or("not a voice OTP")?;
    let audio = prompter.render(&prompt).await.map_err(|e| e.to_string())?;
    let path = dir.join(format!("{}.wav", otp.id));
    let partial = dir.join(format!(".{}.wav.partial", otp.id));
    let io = |e: std::io::Error| format!("writing {}: {e}", path.display());
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    write_private(&partial, &audio.to_wav_bytes())
        .await
        .map_err(io)?;
    tokio::fs::rename(&partial, &path).await.map_err(io)?;
    Ok(path)
}

/// Writes `bytes` to a new or truncated file that only its owner may read.
async fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await?;
    // A leftover partial file from an earlier crash keeps its old mode otherwise.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .await?;
    }
    file.write_all(bytes).await?;
    file.sync_all().await
}

#[cfg(test)]
mod tests {
    use super::settings::VoiceOverride;
    use super::*;

    #[test]
    fn overrides_change_only_the_fields_they_name() {
        let mut config = VoiceConfig::default();
        config.voices.insert(
            "np_binod".into(),
            VoiceOverride {
                pitch: Some(20),
                ..VoiceOverride::default()
            },
        );
        let prompter = Prompter::new(&config).unwrap();
        let binod = prompter.profile(Voice::NpBinod).unwrap();
        assert_eq!((binod.pitch, binod.espeak_voice.as_str()), (20, "ne+m1"));
        assert_eq!(prompter.profile(Voice::NpRija).unwrap().pitch, 40);
    }

    #[test]
    fn unknown_voices_and_bad_values_are_refused_at_startup() {
        let mut config = VoiceConfig::default();
        config
            .voices
            .insert("np_nobody".into(), VoiceOverride::default());
        assert!(matches!(
            Prompter::new(&config),
            Err(TtsError::InvalidVoiceProfile { .. })
        ));
        let mut config = VoiceConfig::default();
        config.voices.insert(
            "np_rija".into(),
            VoiceOverride {
                pitch: Some(120),
                ..VoiceOverride::default()
            },
        );
        assert!(Prompter::new(&config).is_err());
        let config = VoiceConfig {
            repeat: 0,
            ..VoiceConfig::default()
        };
        assert!(matches!(
            Prompter::new(&config),
            Err(TtsError::InvalidConfig(_))
        ));
    }

    #[test]
    fn every_api_voice_has_a_profile_and_a_gender() {
        let prompter = Prompter::new(&VoiceConfig::default()).unwrap();
        for voice in Voice::ALL {
            assert!(prompter.profile(voice).is_some(), "{voice:?}");
        }
        assert_eq!(gender(Voice::NpShreegya), "female");
        assert_eq!(gender(Voice::NpPrashanna), "male");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_transient_engine_missing_error() {
        let config = VoiceConfig {
            espeak_program: "/nonexistent/espeak-ng".into(),
            ..VoiceConfig::default()
        };
        let prompter = Prompter::new(&config).unwrap();
        let template = MessageTemplate::parse("code {otp}").unwrap();
        let (code, bad_code) = (
            OtpCode::from_stored("1234".into()),
            OtpCode::from_stored("12a4".into()),
        );
        let prompt = Prompt {
            voice: Voice::NpRija,
            template: &template,
            code: &code,
            length_factor: 1.0,
        };
        let err = prompter.render(&prompt).await.unwrap_err();
        assert!(err.is_engine_missing() && err.is_transient(), "{err}");
        let bad = Prompt {
            code: &bad_code,
            ..prompt
        };
        let err = prompter.render(&bad).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
    }
}
