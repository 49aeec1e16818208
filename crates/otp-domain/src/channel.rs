//! How a code reaches the user, where it comes from, and which voice reads it.
//!
//! The wire names are TingTing's: `sms_send_options` is `text` or `voice`,
//! `otp_options` is `generated` or `personnel`, and the voices are `np_*`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The way an OTP is delivered (`sms_send_options` on the wire).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// An SMS carrying the rendered message.
    Text,
    /// A phone call that reads the code out.
    Voice,
}

impl Channel {
    /// Parses the wire name, exactly `"text"` or `"voice"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(Self::Text),
            "voice" => Some(Self::Voice),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Voice => "voice",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who chooses the code (`otp_options` on the wire).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtpOption {
    /// otpgate draws the code; the default.
    #[default]
    Generated,
    /// The client supplies the code (TingTing's spelling, kept for compatibility).
    Personnel,
}

impl OtpOption {
    /// Parses the wire name, exactly `"generated"` or `"personnel"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "generated" => Some(Self::Generated),
            "personnel" => Some(Self::Personnel),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generated => "generated",
            Self::Personnel => "personnel",
        }
    }
}

impl fmt::Display for OtpOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Nepali voice that reads a code out in a call (`voice_input` on the wire).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Voice {
    /// `np_rija`
    NpRija,
    /// `np_prashanna`
    NpPrashanna,
    /// `np_shreegya`
    NpShreegya,
    /// `np_binod`
    NpBinod,
}

impl Voice {
    /// Every voice, in the order TingTing lists them.
    pub const ALL: [Voice; 4] = [
        Voice::NpRija,
        Voice::NpPrashanna,
        Voice::NpShreegya,
        Voice::NpBinod,
    ];

    /// Parses the wire name, e.g. exactly `"np_rija"`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|voice| voice.as_str() == s)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NpRija => "np_rija",
            Self::NpPrashanna => "np_prashanna",
            Self::NpShreegya => "np_shreegya",
            Self::NpBinod => "np_binod",
        }
    }
}

impl fmt::Display for Voice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_their_exact_lowercase_names() {
        assert_eq!(Channel::parse("text"), Some(Channel::Text));
        assert_eq!(Channel::parse("voice"), Some(Channel::Voice));
        for bad in ["Text", "VOICE", " text", "sms", ""] {
            assert_eq!(Channel::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Channel::Voice.as_str(), "voice");
    }

    #[test]
    fn otp_options_default_to_generated() {
        assert_eq!(OtpOption::default(), OtpOption::Generated);
        assert_eq!(OtpOption::parse("personnel"), Some(OtpOption::Personnel));
        assert_eq!(OtpOption::parse("Personnel"), None);
        assert_eq!(OtpOption::Personnel.as_str(), "personnel");
    }

    #[test]
    fn every_voice_round_trips_through_its_name() {
        for voice in Voice::ALL {
            assert_eq!(Voice::parse(voice.as_str()), Some(voice));
        }
        assert_eq!(Voice::parse("np_binod"), Some(Voice::NpBinod));
        assert_eq!(Voice::parse("NP_BINOD"), None);
        assert_eq!(Voice::parse("binod"), None);
    }

    #[test]
    fn serde_uses_the_wire_names() {
        assert_eq!(serde_json::to_string(&Channel::Text).unwrap(), "\"text\"");
        assert_eq!(
            serde_json::to_string(&OtpOption::Personnel).unwrap(),
            "\"personnel\""
        );
        for voice in Voice::ALL {
            assert_eq!(
                serde_json::to_string(&voice).unwrap(),
                format!("\"{}\"", voice.as_str())
            );
            assert_eq!(
                serde_json::from_str::<Voice>(&format!("\"{voice}\"")).unwrap(),
                voice
            );
        }
        assert_eq!(
            serde_json::from_str::<Channel>("\"voice\"").unwrap(),
            Channel::Voice
        );
        assert!(serde_json::from_str::<Channel>("\"Voice\"").is_err());
    }
}
