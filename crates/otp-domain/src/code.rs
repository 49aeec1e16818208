//! OTP codes: how long they are, how they are drawn, which ones a client may supply.

use std::fmt;

use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore, TryRngCore};
use subtle::ConstantTimeEq;

use crate::channel::Channel;

/// The length of a generated code, in digits: 4 to 10, 6 by default.
///
/// The range is what Twilio and Vonage accept; TingTing does not publish one.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u32", into = "u32")]
pub struct OtpLength(u32);

impl OtpLength {
    /// The shortest code, generated or supplied.
    pub const MIN: u32 = 4;
    /// The longest code, generated or supplied.
    pub const MAX: u32 = 10;
    /// The length used when the request does not say.
    pub const DEFAULT: u32 = 6;

    /// Accepts `4..=10`.
    pub fn new(n: u32) -> Result<Self, CodeError> {
        if (Self::MIN..=Self::MAX).contains(&n) {
            Ok(Self(n))
        } else {
            Err(CodeError::length_out_of_range())
        }
    }

    /// The number of digits.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for OtpLength {
    fn default() -> Self {
        Self(Self::DEFAULT)
    }
}

impl TryFrom<u32> for OtpLength {
    type Error = CodeError;

    fn try_from(n: u32) -> Result<Self, Self::Error> {
        Self::new(n)
    }
}

impl From<OtpLength> for u32 {
    fn from(length: OtpLength) -> u32 {
        length.0
    }
}

/// A one-time code. Its `Debug` never shows the value, so a code cannot
/// leak into logs through `{:?}` on a struct that holds one.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpCode(String);

/// Why a code or a code length was refused. The messages are shown to API users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    /// A supplied code, or a requested length, is outside `min..=max`.
    #[error("The OTP must be between {min} and {max} characters long.")]
    LengthOutOfRange {
        /// [`OtpLength::MIN`].
        min: u32,
        /// [`OtpLength::MAX`].
        max: u32,
    },
    /// A supplied code has characters its channel cannot carry.
    #[error("The OTP may only contain {allowed}.")]
    InvalidCharacters {
        /// The characters that are allowed, as words.
        allowed: &'static str,
    },
    /// A personnel code was asked for but none was supplied.
    #[error("Enter the OTP to send.")]
    Empty,
}

impl CodeError {
    fn length_out_of_range() -> Self {
        Self::LengthOutOfRange {
            min: OtpLength::MIN,
            max: OtpLength::MAX,
        }
    }
}

/// What a text code may contain, as shown in [`CodeError::InvalidCharacters`].
const TEXT_ALLOWED: &str = "letters (A-Z, a-z) and digits (0-9)";
/// What a voice code may contain: it is read out one digit at a time.
const VOICE_ALLOWED: &str = "digits (0-9)";

impl OtpCode {
    /// Draws a code of `len` decimal digits from the operating system's CSPRNG.
    ///
    /// `OsRng` rather than `rand::rng()`: both are cryptographically secure,
    /// but `OsRng` keeps no generator state in the process, so nothing about
    /// past or future codes sits in memory or survives a fork or a VM
    /// snapshot. The bytes for a code come in one `getrandom` call (a call per
    /// digit showed up in a profile under load). If the OS cannot supply
    /// randomness we panic rather than send a guessable code.
    pub fn generate(len: OtpLength) -> OtpCode {
        Self::generate_with(len, &mut OsRng.unwrap_err())
    }

    /// Draws a code from the given generator; tests pass a seeded one.
    pub fn generate_with<R: CryptoRng + RngCore>(len: OtpLength, rng: &mut R) -> OtpCode {
        // Rejection sampling on bytes: 250 is the largest multiple of 10 that
        // fits in a byte, so a byte below it gives each digit with exactly
        // 25/250 = 1/10 chance; a byte of 250-255 is thrown away. (`byte % 10`
        // over all 256 values would favour 0-5.) 32 bytes cover a 10-digit code
        // unless more than 22 are thrown away (chance below 1e-20); if they
        // are, more are drawn.
        let want = len.get() as usize;
        let mut pool = [0u8; 32];
        let mut next = pool.len();
        let mut code = String::with_capacity(want);
        while code.len() < want {
            if next == pool.len() {
                rng.fill_bytes(&mut pool);
                next = 0;
            }
            let b = pool[next];
            next += 1;
            if b < 250 {
                code.push(char::from(b'0' + b % 10));
            }
        }
        OtpCode(code)
    }

    /// Accepts a code chosen by the client (`otp_options: personnel`).
    ///
    /// It must be 4 to 10 characters. A text code may use ASCII letters and
    /// digits; a voice code only ASCII digits, because the call reads it out
    /// digit by digit. Letters keep their case. Nothing is trimmed: the code
    /// sent is the code given.
    pub fn personnel(value: &str, channel: Channel) -> Result<OtpCode, CodeError> {
        if value.is_empty() {
            return Err(CodeError::Empty);
        }
        // Counting stops past the maximum, so a huge value costs nothing.
        let chars = value.chars().take(OtpLength::MAX as usize + 1).count();
        if !(OtpLength::MIN as usize..=OtpLength::MAX as usize).contains(&chars) {
            return Err(CodeError::length_out_of_range());
        }
        let (allowed, fits): (_, fn(&u8) -> bool) = match channel {
            Channel::Text => (TEXT_ALLOWED, u8::is_ascii_alphanumeric),
            Channel::Voice => (VOICE_ALLOWED, u8::is_ascii_digit),
        };
        if !value.bytes().all(|b| fits(&b)) {
            return Err(CodeError::InvalidCharacters { allowed });
        }
        Ok(OtpCode(value.to_owned()))
    }

    /// Wraps a code read back from the store, which validated it on the way in.
    pub fn from_stored(value: String) -> OtpCode {
        OtpCode(value)
    }

    /// The code itself, to render into a message or read out.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its length in bytes, which is its length in characters for every code
    /// this module creates (they are ASCII).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True only for an empty stored value; generated and personnel codes
    /// never are.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares a code a user typed with this one in constant time, so the
    /// time taken does not reveal how many leading characters were right.
    /// Only the length can leak, and the length is not secret.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn lengths_from_4_to_10_are_accepted_and_6_is_the_default() {
        for n in 4..=10 {
            assert_eq!(OtpLength::new(n).unwrap().get(), n);
        }
        for n in [0, 3, 11, u32::MAX] {
            assert_eq!(
                OtpLength::new(n),
                Err(CodeError::LengthOutOfRange { min: 4, max: 10 })
            );
        }
        assert_eq!(OtpLength::default().get(), 6);
    }

    #[test]
    fn lengths_deserialize_only_within_range() {
        assert_eq!(
            serde_json::from_str::<OtpLength>("8").unwrap(),
            OtpLength::new(8).unwrap()
        );
        assert!(serde_json::from_str::<OtpLength>("11").is_err());
    }

    #[test]
    fn generated_codes_are_digits_of_the_requested_length() {
        for n in 4..=10 {
            let code = OtpCode::generate(OtpLength::new(n).unwrap());
            assert_eq!(code.len(), n as usize);
            assert!(code.as_str().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn a_seeded_generator_gives_reproducible_codes() {
        let len = OtpLength::default();
        let a = OtpCode::generate_with(len, &mut ChaCha20Rng::seed_from_u64(7));
        let b = OtpCode::generate_with(len, &mut ChaCha20Rng::seed_from_u64(7));
        assert_eq!(a, b);
    }

    /// Hands out a fixed byte stream, to see which bytes become digits.
    struct Bytes(Vec<u8>, usize);

    impl RngCore for Bytes {
        fn next_u32(&mut self) -> u32 {
            unreachable!("codes are drawn with fill_bytes")
        }
        fn next_u64(&mut self) -> u64 {
            unreachable!("codes are drawn with fill_bytes")
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            for d in dst {
                *d = self.0[self.1 % self.0.len()];
                self.1 += 1;
            }
        }
    }
    impl CryptoRng for Bytes {}

    #[test]
    fn bytes_of_250_and_above_are_thrown_away() {
        let mut stream = vec![250, 251, 252, 253, 254, 255, 0, 11, 22, 33, 249, 105];
        stream.resize(32, 255);
        let code = OtpCode::generate_with(OtpLength::default(), &mut Bytes(stream, 0));
        assert_eq!(code.as_str(), "012395");
        // A pool with too few usable bytes is refilled: the second 32 give the rest.
        let mut stream = vec![255; 32];
        stream.extend([1, 2, 3, 4, 5, 6]);
        stream.resize(64, 255);
        let code = OtpCode::generate_with(OtpLength::default(), &mut Bytes(stream, 0));
        assert_eq!(code.as_str(), "123456");
    }

    #[test]
    fn generated_digits_are_uniform() {
        // 100,000 digits from a seeded CSPRNG: deterministic, so it cannot
        // flake. Chi-square with 9 degrees of freedom has a 0.1% critical
        // value of 27.88; a modulo-biased or broken generator lands far above.
        let mut rng = ChaCha20Rng::seed_from_u64(0x0709_2025);
        let len = OtpLength::new(10).unwrap();
        let mut counts = [0u64; 10];
        for _ in 0..10_000 {
            for b in OtpCode::generate_with(len, &mut rng).as_str().bytes() {
                counts[usize::from(b - b'0')] += 1;
            }
        }
        let expected = 10_000.0;
        let chi_square: f64 = counts
            .iter()
            .map(|&n| (n as f64 - expected).powi(2) / expected)
            .sum();
        assert!(
            chi_square < 27.88,
            "chi-square {chi_square}, counts {counts:?}"
        );
    }

    #[test]
    fn debug_never_shows_the_code() {
        let code = OtpCode::personnel("4821", Channel::Voice).unwrap();
        assert_eq!(format!("{code:?}"), "OtpCode([redacted])");
        assert_eq!(format!("{:?}", Some(&code)), "Some(OtpCode([redacted]))");
    }

    #[test]
    fn text_personnel_codes_allow_ascii_letters_and_digits() {
        let code = OtpCode::personnel("Ab12Cd", Channel::Text).unwrap();
        assert_eq!(code.as_str(), "Ab12Cd");
        assert!(OtpCode::personnel("abcd", Channel::Text).is_ok());
        assert!(OtpCode::personnel("1234567890", Channel::Text).is_ok());
        for bad in ["12 34", "12-34", "ab_cd", "१२३४", "abcé"] {
            assert_eq!(
                OtpCode::personnel(bad, Channel::Text),
                Err(CodeError::InvalidCharacters {
                    allowed: TEXT_ALLOWED
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn voice_personnel_codes_allow_only_digits() {
        assert!(OtpCode::personnel("0042", Channel::Voice).is_ok());
        assert_eq!(
            OtpCode::personnel("12ab", Channel::Voice),
            Err(CodeError::InvalidCharacters {
                allowed: VOICE_ALLOWED
            })
        );
    }

    #[test]
    fn personnel_codes_must_be_4_to_10_characters() {
        let out_of_range = Err(CodeError::LengthOutOfRange { min: 4, max: 10 });
        assert_eq!(OtpCode::personnel("123", Channel::Text), out_of_range);
        assert_eq!(
            OtpCode::personnel("12345678901", Channel::Voice),
            out_of_range
        );
        assert_eq!(
            OtpCode::personnel(&"9".repeat(100_000), Channel::Voice),
            out_of_range
        );
        assert_eq!(OtpCode::personnel("", Channel::Text), Err(CodeError::Empty));
    }

    #[test]
    fn stored_codes_are_taken_as_they_are() {
        let code = OtpCode::from_stored("x y".to_owned());
        assert_eq!(code.as_str(), "x y");
        assert_eq!(code.len(), 3);
    }

    #[test]
    fn matches_compares_the_whole_code() {
        let code = OtpCode::from_stored("123456".to_owned());
        assert!(code.matches("123456"));
        assert!(!code.matches("123457"));
        assert!(!code.matches("12345"));
        assert!(!code.matches("1234567"));
        assert!(!code.matches(""));
    }

    #[test]
    fn error_messages_are_sentences() {
        assert_eq!(
            CodeError::LengthOutOfRange { min: 4, max: 10 }.to_string(),
            "The OTP must be between 4 and 10 characters long."
        );
        assert_eq!(
            CodeError::InvalidCharacters {
                allowed: VOICE_ALLOWED
            }
            .to_string(),
            "The OTP may only contain digits (0-9)."
        );
    }
}
