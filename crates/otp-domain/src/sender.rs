//! Sender IDs: what a handset shows as the sender of an SMS.
//!
//! GSM 03.40 carries an alphanumeric originator in at most 11 characters,
//! and a numeric one is a phone number (at most 15 digits, E.164). A
//! [`SenderId`] is one of the two, so whatever an operator sets for an
//! account fits every carrier's field: SMPP `source_addr`, a vendor's
//! `from` or `sender` parameter.

use std::fmt;

/// The most characters of an alphanumeric sender (GSM 03.40).
pub const MAX_ALPHANUMERIC: usize = 11;
/// The most digits of a numeric sender (E.164).
pub const MAX_DIGITS: usize = 15;

/// A sender ID: 1 to 11 ASCII letters and digits with at least one letter, or
/// 1 to 15 ASCII digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SenderId(String);

/// Why a sender ID was refused. The messages are shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SenderError {
    /// Empty.
    #[error("The sender ID must not be empty.")]
    Empty,
    /// A character other than an ASCII letter or digit.
    #[error("A sender ID may hold only ASCII letters and digits.")]
    Character,
    /// Letters and digits, over [`MAX_ALPHANUMERIC`] characters.
    #[error("An alphanumeric sender ID can be at most {MAX_ALPHANUMERIC} characters long.")]
    AlphanumericTooLong,
    /// Digits only, over [`MAX_DIGITS`] of them.
    #[error("A numeric sender ID can be at most {MAX_DIGITS} digits long.")]
    NumericTooLong,
}

impl SenderId {
    /// Checks a sender ID; nothing is trimmed or changed.
    pub fn parse(s: &str) -> Result<SenderId, SenderError> {
        if s.is_empty() {
            return Err(SenderError::Empty);
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SenderError::Character);
        }
        // All ASCII from here, so bytes are characters.
        if s.bytes().all(|b| b.is_ascii_digit()) {
            if s.len() > MAX_DIGITS {
                return Err(SenderError::NumericTooLong);
            }
        } else if s.len() > MAX_ALPHANUMERIC {
            return Err(SenderError::AlphanumericTooLong);
        }
        Ok(SenderId(s.to_owned()))
    }

    /// A sender ID read back from the store: checked again, so a stored value
    /// that is not one is never sent (`None`).
    pub fn from_stored(stored: &str) -> Option<SenderId> {
        SenderId::parse(stored).ok()
    }

    /// Whether it is digits only (a phone number or a short code).
    pub fn is_numeric(&self) -> bool {
        self.0.bytes().all(|b| b.is_ascii_digit())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SenderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphanumeric_senders_take_up_to_eleven_characters_and_numeric_ones_fifteen_digits() {
        for ok in [
            "ACME",
            "Bank2Go",
            "ABCDEFGHIJK",
            "977",
            "977984123456789",
            "9",
        ] {
            assert_eq!(SenderId::parse(ok).unwrap().as_str(), ok);
        }
        assert!(SenderId::parse("977984123456789").unwrap().is_numeric());
        assert!(!SenderId::parse("ACME1").unwrap().is_numeric());
        assert_eq!(
            SenderId::parse("ABCDEFGHIJKL"),
            Err(SenderError::AlphanumericTooLong)
        );
        assert_eq!(
            SenderId::parse("9779841234567890"),
            Err(SenderError::NumericTooLong)
        );
    }

    #[test]
    fn anything_but_ascii_letters_and_digits_is_refused() {
        assert_eq!(SenderId::parse(""), Err(SenderError::Empty));
        for bad in ["AC ME", "+977984", "ACME\n", "ÄCME", "AC-ME", "otp\u{0}"] {
            assert_eq!(SenderId::parse(bad), Err(SenderError::Character), "{bad:?}");
        }
        assert_eq!(SenderId::from_stored("AC ME"), None);
    }
}
