//! What is spoken: message text with the code read digit by digit, and its SSML form.
//!
//! The gateway passes the text around the code (the message split where the code goes; this
//! crate knows no placeholder) and the code separately, so the code never goes through text
//! normalisation: between each part and the next the code is spoken one digit at a time, with a
//! [`DIGIT_PAUSE_MS`] pause between digits, repeated `repeat` times with a
//! [`REPEAT_PAUSE_MS`] pause between repetitions.
//!
//! [`SpeechText::to_ssml`] writes the text for espeak-ng's SSML mode (`-m`): user text is
//! XML-escaped, pauses become `<break time="…ms"/>`, and for Nepali voices every ASCII digit
//! becomes a Devanagari numeral (espeak-ng reads `4` in English but `४` in Nepali).

use std::fmt::Write as _;

use thiserror::Error;

use crate::voice::Numerals;

/// How many times the code is spoken unless the caller says otherwise.
pub const DEFAULT_REPEAT: u32 = 2;
/// Most repetitions accepted.
pub const MAX_REPEAT: u32 = 5;
/// Longest code accepted, in digits.
pub const MAX_CODE_DIGITS: usize = 12;
/// Pause between two digits of the code, at `length_factor` 1.0.
pub const DIGIT_PAUSE_MS: u32 = 300;
/// Pause before, between and after repetitions of the code, at `length_factor` 1.0.
pub const REPEAT_PAUSE_MS: u32 = 800;

/// Why a template and code could not become speech.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PromptError {
    /// Fewer than two parts were given, so there is no place for the code and it would
    /// never be spoken.
    #[error("the text has no place for the code (fewer than two parts)")]
    NoPlaceForCode,
    /// The code is empty, longer than [`MAX_CODE_DIGITS`], or not all ASCII digits.
    #[error("the code must be 1 to {MAX_CODE_DIGITS} ASCII digits")]
    InvalidCode,
    /// `repeat` is 0 or above [`MAX_REPEAT`].
    #[error("repeat must be 1 to {MAX_REPEAT}, not {repeat}")]
    InvalidRepeat {
        /// The value given.
        repeat: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Segment {
    Text(String),
    /// One digit, 0-9, spoken on its own.
    Digit(u8),
    /// Silence at `length_factor` 1.0.
    PauseMs(u32),
}

/// Text to speak, with the code kept apart from the surrounding words.
///
/// Hashable and comparable so a rendered request can key the render cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpeechText {
    segments: Vec<Segment>,
}

impl SpeechText {
    /// Plain text with no code in it.
    pub fn plain(text: &str) -> SpeechText {
        SpeechText {
            segments: vec![Segment::Text(text.to_owned())],
        }
    }

    /// The `parts` with `code` spoken digit by digit, `repeat` times, between each part and
    /// the next.
    ///
    /// ```
    /// use tts::{Numerals, SpeechText};
    /// let text = SpeechText::with_code(["कोड ", " हो"], "42", 2).unwrap();
    /// assert_eq!(
    ///     text.to_ssml(Numerals::Devanagari, 1.0),
    ///     "<speak>कोड <break time=\"800ms\"/>४<break time=\"300ms\"/>२\
    ///      <break time=\"800ms\"/>४<break time=\"300ms\"/>२<break time=\"800ms\"/> हो</speak>"
    /// );
    /// ```
    pub fn with_code<'a>(
        parts: impl IntoIterator<Item = &'a str>,
        code: &str,
        repeat: u32,
    ) -> Result<SpeechText, PromptError> {
        let parts: Vec<&str> = parts.into_iter().collect();
        if parts.len() < 2 {
            return Err(PromptError::NoPlaceForCode);
        }
        if code.is_empty()
            || code.len() > MAX_CODE_DIGITS
            || !code.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(PromptError::InvalidCode);
        }
        if !(1..=MAX_REPEAT).contains(&repeat) {
            return Err(PromptError::InvalidRepeat { repeat });
        }

        let mut spoken_code = vec![Segment::PauseMs(REPEAT_PAUSE_MS)];
        for _ in 0..repeat {
            for (i, digit) in code.bytes().enumerate() {
                if i > 0 {
                    spoken_code.push(Segment::PauseMs(DIGIT_PAUSE_MS));
                }
                spoken_code.push(Segment::Digit(digit - b'0'));
            }
            spoken_code.push(Segment::PauseMs(REPEAT_PAUSE_MS));
        }

        let mut segments = Vec::new();
        for (i, text) in parts.into_iter().enumerate() {
            if i > 0 {
                segments.extend(spoken_code.iter().cloned());
            }
            if !text.is_empty() {
                segments.push(Segment::Text(text.to_owned()));
            }
        }
        Ok(SpeechText { segments })
    }

    /// Approximate heap bytes held, for the render cache's budget.
    pub(crate) fn heap_estimate(&self) -> usize {
        self.segments
            .iter()
            .map(|s| {
                size_of::<Segment>()
                    + match s {
                        Segment::Text(text) => text.len(),
                        Segment::Digit(_) | Segment::PauseMs(_) => 0,
                    }
            })
            .sum()
    }

    /// The SSML document for espeak-ng `-m`. Pauses are multiplied by `pause_scale` (the
    /// request's length factor), so a slower rendering is slower between digits too.
    pub fn to_ssml(&self, numerals: Numerals, pause_scale: f32) -> String {
        let mut out = String::from("<speak>");
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => push_escaped(&mut out, text, numerals),
                Segment::Digit(d) => out.push(digit_char(*d, numerals)),
                Segment::PauseMs(ms) => {
                    let scaled = (f64::from(*ms) * f64::from(pause_scale)).round() as u64;
                    // Writing to a String cannot fail.
                    let _ = write!(out, "<break time=\"{scaled}ms\"/>");
                }
            }
        }
        out.push_str("</speak>");
        out
    }
}

fn digit_char(digit: u8, numerals: Numerals) -> char {
    let zero = match numerals {
        Numerals::Ascii => '0',
        Numerals::Devanagari => '\u{0966}',
    };
    char::from_u32(zero as u32 + u32::from(digit)).expect("digit is 0-9")
}

/// Appends user text, escaped for XML and with its digits in the voice's numerals.
fn push_escaped(out: &mut String, text: &str, numerals: Numerals) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '0'..='9' => out.push(digit_char(c as u8 - b'0', numerals)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spoken characters: the SSML with its tags removed.
    fn spoken(ssml: &str) -> String {
        let mut out = String::new();
        let mut in_tag = false;
        for c in ssml.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn a_nepali_code_is_spoken_in_devanagari_numerals_only() {
        let text =
            SpeechText::with_code(["तपाईंको कोड ", " हो। 5 मिनेटभित्र प्रयोग गर्नुहोस्।"], "4821", 2)
                .unwrap();
        let words = spoken(&text.to_ssml(Numerals::Devanagari, 1.0));
        for numeral in ["४", "८", "२", "१", "५"] {
            assert!(words.contains(numeral), "{numeral} missing from {words}");
        }
        assert!(!words.chars().any(|c| c.is_ascii_digit()), "{words}");
        assert_eq!(words.matches("४८२१").count(), 2, "{words}");
    }

    #[test]
    fn digits_are_separated_by_pauses_and_repetitions_by_longer_ones() {
        let text = SpeechText::with_code(["", ""], "907", 2).unwrap();
        assert_eq!(
            text.to_ssml(Numerals::Ascii, 1.0),
            "<speak><break time=\"800ms\"/>9<break time=\"300ms\"/>0<break time=\"300ms\"/>7\
             <break time=\"800ms\"/>9<break time=\"300ms\"/>0<break time=\"300ms\"/>7\
             <break time=\"800ms\"/></speak>"
        );
    }

    #[test]
    fn pauses_scale_with_the_length_factor() {
        let text = SpeechText::with_code(["", ""], "12", 1).unwrap();
        assert_eq!(
            text.to_ssml(Numerals::Ascii, 2.0),
            "<speak><break time=\"1600ms\"/>1<break time=\"600ms\"/>2\
             <break time=\"1600ms\"/></speak>"
        );
    }

    #[test]
    fn user_text_is_escaped_so_it_cannot_inject_markup() {
        let text = SpeechText::with_code(["<break time=\"9s\"/> & 'x' ", ""], "1", 1).unwrap();
        let ssml = text.to_ssml(Numerals::Ascii, 1.0);
        assert!(
            ssml.starts_with(
                "<speak>&lt;break time=&quot;9s&quot;/&gt; &amp; &apos;x&apos; <break"
            )
        );
        assert_eq!(ssml.matches("<break").count(), 2);
    }

    #[test]
    fn the_code_is_spoken_between_each_part_and_the_next() {
        let text = SpeechText::with_code(["", " and ", ""], "5", 1).unwrap();
        let words = spoken(&text.to_ssml(Numerals::Devanagari, 1.0));
        assert_eq!(words, "५ and ५");
    }

    #[test]
    fn bad_inputs_map_to_named_errors() {
        for parts in [&["no code here"][..], &[]] {
            assert_eq!(
                SpeechText::with_code(parts.iter().copied(), "1234", 2),
                Err(PromptError::NoPlaceForCode)
            );
        }
        for code in ["", "12a4", "१२३", "1234567890123", " 12"] {
            assert_eq!(
                SpeechText::with_code(["", ""], code, 2),
                Err(PromptError::InvalidCode),
                "{code:?}"
            );
        }
        for repeat in [0, MAX_REPEAT + 1] {
            assert_eq!(
                SpeechText::with_code(["", ""], "1", repeat),
                Err(PromptError::InvalidRepeat { repeat })
            );
        }
    }

    #[test]
    fn plain_text_is_escaped_and_converted_too() {
        assert_eq!(
            SpeechText::plain("a<b 10").to_ssml(Numerals::Devanagari, 1.0),
            "<speak>a&lt;b १०</speak>"
        );
    }
}
