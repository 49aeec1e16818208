//! `[voice]` settings: how prompts are rendered and what calls inherit. They
//! live with the voice drivers that read them; `crate::config` includes them.

use serde::Deserialize;

/// `[voice]`: how prompts are rendered (espeak-ng, shared by the `log` and `sip`
/// drivers and the preview endpoint) and the call settings `sip` routes inherit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceConfig {
    /// The espeak-ng program; looked up in `PATH` when it has no slash.
    pub espeak_program: String,
    /// How long one render may take before espeak-ng is killed.
    pub render_timeout_ms: u64,
    /// espeak-ng processes running at once on this node; more renders wait.
    pub max_concurrent_renders: usize,
    /// Memory for cached renders (LRU); a repeated prompt is not rendered again.
    pub cache_bytes: usize,
    /// How many times the code is read out, 1-5.
    pub repeat: u32,
    /// Changes to the voice table, keyed by API voice name (`np_rija`, ...).
    pub voices: std::collections::BTreeMap<String, VoiceOverride>,
    /// The `From` user of calls (digits, or a name the trunk accepts).
    pub caller_id: String,
    /// The `From` display name of calls; empty: none.
    pub caller_name: String,
    /// How long a callee may ring before the call is cancelled (no answer).
    pub ring_timeout_seconds: u64,
    /// The longest a call may last once answered.
    pub max_call_seconds: u64,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        VoiceConfig {
            espeak_program: "espeak-ng".into(),
            render_timeout_ms: 10_000,
            max_concurrent_renders: 4,
            cache_bytes: tts::DEFAULT_CACHE_BYTES,
            repeat: tts::DEFAULT_REPEAT,
            voices: std::collections::BTreeMap::new(),
            caller_id: "otpgate".into(),
            caller_name: String::new(),
            ring_timeout_seconds: 30,
            max_call_seconds: 60,
        }
    }
}

/// `[voice.voices.NAME]`: the fields of one voice to change; the rest keep the
/// built-in table's values.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VoiceOverride {
    /// espeak-ng `-v`: a language with an optional variant, e.g. `ne+f3`.
    pub espeak_voice: Option<String>,
    /// espeak-ng `-p`, 0-99.
    pub pitch: Option<u8>,
    /// espeak-ng `-s` at `length_factor` 1.0, words per minute, 80-450.
    pub rate_wpm: Option<u16>,
}
