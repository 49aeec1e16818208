//! Text-to-speech for voice OTPs: one engine trait, audio ready for G.711 telephony.
//!
//! # The trait
//! [`TtsEngine::render`] turns a [`RenderRequest`] (an API voice name, a [`SpeechText`],
//! a [`LengthFactor`]) into [`Audio`]: 8 kHz mono 16-bit PCM, which is exactly what a
//! PCMU/PCMA encoder consumes, so the call path never converts again. The gateway keeps an
//! `Arc<dyn TtsEngine>`; engines compose, and the usual stack is
//! `CachedEngine<EspeakEngine>`:
//!
//! - [`EspeakEngine`] (module [`espeak`]) runs Debian's `espeak-ng` as a subprocess in SSML
//!   mode, under a timeout and a concurrency limit, and converts its 22 050 Hz output.
//! - [`CachedEngine`] (module [`cache`]) keeps renders in an LRU with a byte budget, with
//!   hit/miss counters for metrics, so a repeated prompt costs nothing.
//!
//! # Voices
//! The API's four voices are rows of a table, [`default_profiles`], replaceable from
//! configuration ([`VoiceProfile`] is `Deserialize`):
//!
//! | name           | sex    | espeak_voice | pitch | rate_wpm |
//! |----------------|--------|--------------|-------|----------|
//! | `np_rija`      | female | `ne+f3`      | 40    | 165      |
//! | `np_shreegya`  | female | `ne+f2`      | 80    | 175      |
//! | `np_prashanna` | male   | `ne+m3`      | 55    | 170      |
//! | `np_binod`     | male   | `ne+m1`      | 30    | 160      |
//!
//! # Digits
//! [`SpeechText::with_code`] takes the text around the code and the code separately. The
//! code is spoken one digit at a time with short pauses and repeated ([`DEFAULT_REPEAT`]
//! times by default). espeak-ng's Nepali voice reads ASCII digits in English, so for
//! Nepali voices every digit, in the code and in the template, is written as a Devanagari
//! numeral (`०`-`९`). Template text is XML-escaped before it reaches the SSML document.
//!
//! # Speaking rate
//! [`LengthFactor`] is TingTing's "length factor": 1.0 is the voice's own rate, **above 1
//! is longer (slower) speech**, below 1 shorter. It divides the espeak-ng rate and
//! multiplies the pauses; accepted range 0.5 to 2.0.
//!
//! # Resampling
//! espeak-ng writes 22 050 Hz. [`Resampler`] (module [`resample`]) converts it with a
//! Kaiser-windowed sinc run as a polyphase filter (160 phases for 22 050 → 8 000): flat to
//! within 1 dB up to 3.4 kHz, more than 60 dB down from 4.3 kHz, so what lies above the
//! new 4 kHz Nyquist frequency does not fold back into the telephone band. It is about a
//! hundred lines, and its tests pin the frequency response. A general-purpose crate such as
//! `rubato` would bring streaming and FFT machinery that one-shot prompts of a few seconds
//! do not need, and its own choice of filter that we would still have to test.
//!
//! # WAV
//! [`Audio::to_wav_bytes`] and [`Audio::from_wav_bytes`] (any rate, any channel count of
//! 16-bit PCM) sit on the codec in [`wav`].

pub mod audio;
pub mod cache;
pub mod espeak;
pub mod prompt;
pub mod resample;
pub mod voice;
pub mod wav;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

pub use audio::Audio;
pub use cache::{CacheStats, CachedEngine, DEFAULT_CACHE_BYTES};
pub use espeak::{EspeakConfig, EspeakEngine};
pub use prompt::{DEFAULT_REPEAT, PromptError, SpeechText};
pub use resample::Resampler;
pub use voice::{Numerals, VoiceProfile, default_profiles};
pub use wav::{Pcm, WavError};

/// A text-to-speech engine.
#[async_trait]
pub trait TtsEngine: Send + Sync {
    /// Renders `req` as 8 kHz mono audio.
    async fn render(&self, req: &RenderRequest) -> Result<Audio, TtsError>;
}

/// What to say, in which voice, how fast.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RenderRequest {
    /// An API voice name from the engine's table, e.g. `np_rija`.
    pub voice: String,
    /// The words.
    pub text: SpeechText,
    /// Speaking-rate scale; above 1 is slower.
    pub length_factor: LengthFactor,
}

impl RenderRequest {
    /// A request at length factor 1.0.
    pub fn new(voice: impl Into<String>, text: SpeechText) -> RenderRequest {
        RenderRequest {
            voice: voice.into(),
            text,
            length_factor: LengthFactor::default(),
        }
    }
}

/// How long speech is relative to the voice's own rate: 2.0 takes twice as long, 0.5 half.
/// Always within [`LengthFactor::MIN`]..=[`LengthFactor::MAX`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LengthFactor(f32);

impl LengthFactor {
    /// Fastest accepted.
    pub const MIN: f32 = 0.5;
    /// Slowest accepted.
    pub const MAX: f32 = 2.0;

    /// Accepts `MIN..=MAX`; NaN and everything else is [`TtsError::InvalidLengthFactor`].
    pub fn new(value: f32) -> Result<LengthFactor, TtsError> {
        if (Self::MIN..=Self::MAX).contains(&value) {
            Ok(LengthFactor(value))
        } else {
            Err(TtsError::InvalidLengthFactor { value })
        }
    }

    /// The factor.
    pub fn get(self) -> f32 {
        self.0
    }
}

impl Default for LengthFactor {
    fn default() -> Self {
        LengthFactor(1.0)
    }
}

// The value is never NaN, so bitwise equality is a true equivalence and the factor can key
// the render cache. (-0.0 cannot occur: the range is positive.)
impl Eq for LengthFactor {}

impl std::hash::Hash for LengthFactor {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// Why a render failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TtsError {
    /// The request names a voice that is not in the engine's table.
    #[error("unknown voice {voice:?}")]
    UnknownVoice {
        /// The name asked for.
        voice: String,
    },
    /// A length factor outside 0.5-2.0, or NaN.
    #[error("length factor {value} is outside {min}..={max}", min = LengthFactor::MIN, max = LengthFactor::MAX)]
    InvalidLengthFactor {
        /// The value given.
        value: f32,
    },
    /// A voice profile espeak-ng cannot use, or a duplicated name.
    #[error("voice profile {name:?}: {reason}")]
    InvalidVoiceProfile {
        /// The profile's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An engine setting that cannot work (zero timeout, zero concurrency).
    #[error("invalid TTS configuration: {0}")]
    InvalidConfig(String),
    /// The engine program is not installed (spawning it found no such file).
    #[error(
        "TTS engine {} not found; install it (Debian: apt-get install espeak-ng)",
        program.display()
    )]
    EngineMissing {
        /// The program that was run.
        program: PathBuf,
    },
    /// The engine did not finish within the configured time and was killed.
    #[error("TTS engine timed out after {after:?} and was killed")]
    Timeout {
        /// The configured limit.
        after: Duration,
    },
    /// The engine exited unsuccessfully.
    #[error("TTS engine {} failed ({status}): {stderr}", program.display())]
    EngineFailed {
        /// The program that was run.
        program: PathBuf,
        /// How it exited.
        status: ExitStatus,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// Spawning the engine or talking to it over its pipes failed.
    #[error("running TTS engine {}", program.display())]
    Io {
        /// The program that was run.
        program: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The engine wrote more than the configured limit (see
    /// [`EspeakConfig::max_output_bytes`]); the output was discarded.
    #[error("TTS engine output exceeded {limit} bytes")]
    OutputTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The engine's output is not a 16-bit PCM WAV.
    #[error("TTS engine output is not usable audio")]
    BadOutput(#[from] WavError),
    /// The engine produced a WAV with no samples (for example, nothing speakable).
    #[error("TTS engine produced no audio")]
    EmptyOutput,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_factor_accepts_its_range_and_names_the_rest() {
        assert_eq!(LengthFactor::default().get(), 1.0);
        for ok in [0.5, 1.0, 1.25, 2.0] {
            assert_eq!(LengthFactor::new(ok).unwrap().get(), ok);
        }
        for bad in [0.49, 2.01, 0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                LengthFactor::new(bad),
                Err(TtsError::InvalidLengthFactor { .. })
            ));
        }
    }

    #[test]
    fn the_engine_is_usable_as_a_shared_trait_object() {
        fn assert_object(_: std::sync::Arc<dyn TtsEngine>) {}
        let engine = EspeakEngine::new(EspeakConfig::default()).unwrap();
        assert_object(std::sync::Arc::new(CachedEngine::new(
            engine,
            DEFAULT_CACHE_BYTES,
        )));
    }
}
