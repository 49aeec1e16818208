//! The voice table: which espeak-ng voice, pitch and rate stand behind each API voice name.

use serde::{Deserialize, Serialize};

use crate::TtsError;

/// espeak-ng's accepted pitch range (`-p`).
pub const PITCH_RANGE: std::ops::RangeInclusive<u8> = 0..=99;
/// Speaking rates (`-s`, words per minute) a profile may set. espeak-ng goes no slower than
/// 80; the upper bound leaves room for `length_factor` to speed up further (see
/// [`crate::LengthFactor`]).
pub const RATE_RANGE: std::ops::RangeInclusive<u16> = 80..=450;

/// One API voice and how espeak-ng produces it.
///
/// Deserializable so the gateway's configuration can replace [`default_profiles`]:
///
/// ```toml
/// [[tts.voices]]
/// name = "np_rija"
/// espeak_voice = "ne+f3"
/// pitch = 50
/// rate_wpm = 165
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceProfile {
    /// The name the API uses, e.g. `np_rija`.
    pub name: String,
    /// espeak-ng `-v` argument: a language, optionally `+variant` (`ne+f3`).
    pub espeak_voice: String,
    /// espeak-ng `-p`, 0-99 (50 is the voice's own base pitch).
    pub pitch: u8,
    /// espeak-ng `-s` at `length_factor` 1.0, words per minute.
    pub rate_wpm: u16,
}

/// How digits are written in the text sent to the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Numerals {
    /// `0`-`9`.
    Ascii,
    /// `०`-`९` (U+0966-U+096F). espeak-ng's Nepali voice reads ASCII digits in English, so
    /// Nepali text must carry these.
    Devanagari,
}

impl VoiceProfile {
    /// The espeak-ng language of this voice: the part of `espeak_voice` before any `+variant`.
    pub fn language(&self) -> &str {
        self.espeak_voice
            .split_once('+')
            .map_or(self.espeak_voice.as_str(), |(language, _)| language)
    }

    /// Devanagari numerals for Nepali (`ne`), ASCII otherwise.
    pub fn numerals(&self) -> Numerals {
        if self.language() == "ne" {
            Numerals::Devanagari
        } else {
            Numerals::Ascii
        }
    }

    /// Checks the fields against what espeak-ng accepts.
    pub fn validate(&self) -> Result<(), TtsError> {
        let invalid = |reason: String| TtsError::InvalidVoiceProfile {
            name: self.name.clone(),
            reason,
        };
        if self.name.is_empty() {
            return Err(invalid("the name is empty".into()));
        }
        // The value becomes one argv element; a leading '-' would be read as an option.
        let voice_ok = !self.espeak_voice.is_empty()
            && !self.espeak_voice.starts_with('-')
            && self
                .espeak_voice
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-_".contains(c));
        if !voice_ok {
            return Err(invalid(format!(
                "espeak_voice {:?} is not of the form language[+variant]",
                self.espeak_voice
            )));
        }
        if !PITCH_RANGE.contains(&self.pitch) {
            return Err(invalid(format!(
                "pitch {} is outside {PITCH_RANGE:?}",
                self.pitch
            )));
        }
        if !RATE_RANGE.contains(&self.rate_wpm) {
            return Err(invalid(format!(
                "rate_wpm {} is outside {RATE_RANGE:?}",
                self.rate_wpm
            )));
        }
        Ok(())
    }
}

/// The four API voices, two female and two male, all espeak-ng Nepali (`ne`).
///
/// | name           | sex    | espeak_voice | pitch | rate_wpm |
/// |----------------|--------|--------------|-------|----------|
/// | `np_rija`      | female | `ne+f3`      | 40    | 165      |
/// | `np_shreegya`  | female | `ne+f2`      | 80    | 175      |
/// | `np_prashanna` | male   | `ne+m3`      | 55    | 170      |
/// | `np_binod`     | male   | `ne+m1`      | 30    | 160      |
///
/// The variants give each voice its own formants; the pitches keep the two women and the
/// two men apart from each other as well as from the other sex. Rates stay at or above 160
/// so that `length_factor` 2.0 still lands at or above espeak-ng's 80 wpm floor.
///
/// Mean pitch of a full OTP prompt, in table order: about 185, 234, 116 and 85 Hz
/// (espeak-ng 1.51, printed by
/// `cargo test -p tts --test espeak each_voice -- --nocapture`).
pub fn default_profiles() -> Vec<VoiceProfile> {
    [
        ("np_rija", "ne+f3", 40, 165),
        ("np_shreegya", "ne+f2", 80, 175),
        ("np_prashanna", "ne+m3", 55, 170),
        ("np_binod", "ne+m1", 30, 160),
    ]
    .into_iter()
    .map(|(name, espeak_voice, pitch, rate_wpm)| VoiceProfile {
        name: name.into(),
        espeak_voice: espeak_voice.into(),
        pitch,
        rate_wpm,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_table_is_valid_nepali_with_four_distinct_voices() {
        let profiles = default_profiles();
        let mut names: Vec<_> = profiles.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["np_binod", "np_prashanna", "np_rija", "np_shreegya"]
        );
        for p in &profiles {
            p.validate().unwrap();
            assert_eq!(p.numerals(), Numerals::Devanagari);
        }
        let mut settings: Vec<_> = profiles
            .iter()
            .map(|p| (&p.espeak_voice, p.pitch))
            .collect();
        settings.dedup();
        assert_eq!(settings.len(), 4);
    }

    #[test]
    fn a_profile_deserializes_from_config_and_rejects_unknown_fields() {
        let p: VoiceProfile = serde_json::from_str(
            r#"{"name":"np_rija","espeak_voice":"ne+f4","pitch":70,"rate_wpm":150}"#,
        )
        .unwrap();
        assert_eq!(p.language(), "ne");
        assert!(
            serde_json::from_str::<VoiceProfile>(
                r#"{"name":"x","espeak_voice":"ne","pitch":1,"rate_wpm":150,"speed":2}"#
            )
            .is_err()
        );
    }

    #[test]
    fn out_of_range_or_option_like_settings_are_rejected() {
        let good = default_profiles().remove(0);
        for bad in [
            VoiceProfile {
                pitch: 100,
                ..good.clone()
            },
            VoiceProfile {
                rate_wpm: 79,
                ..good.clone()
            },
            VoiceProfile {
                espeak_voice: "--stdout".into(),
                ..good.clone()
            },
            VoiceProfile {
                espeak_voice: "ne f3".into(),
                ..good.clone()
            },
            VoiceProfile {
                name: String::new(),
                ..good.clone()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(TtsError::InvalidVoiceProfile { .. })),
                "{bad:?} was accepted"
            );
        }
        let english = VoiceProfile {
            espeak_voice: "en-us".into(),
            ..good
        };
        assert_eq!(english.numerals(), Numerals::Ascii);
    }
}
