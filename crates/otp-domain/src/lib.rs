//! otpgate's domain: the values an OTP request is made of, parsed and checked
//! once at the edge so that nothing past it handles a raw string. No I/O, no
//! async; the only outside call is the OS random source that [`OtpCode::generate`] draws from.
//!
//! - [`phone`]: [`PhoneNumber`], parsed with the `phonenumber` crate
//!   (a port of Google's libphonenumber, whose metadata is maintained
//!   upstream). Numbers without a country code are Nepali (+977). Inputs over
//!   [`phone::MAX_INPUT_CHARS`] (32) characters are refused before any
//!   parsing. The crate's NP metadata (9.0.33) accepts every current mobile
//!   range (960-963, 972, 974-976, 980-982, 984-986, 988, plus 900, 970 and
//!   971), so no range table of our own is needed; the tests pin those ranges
//!   so that a metadata update that drops one fails the build. What the
//!   store keeps and reads back is the [`E164`] form, checked for its shape
//!   only, so a number sent once stays readable whatever later metadata says.
//! - [`channel`]: the wire enums [`Channel`] (`text`/`voice`), [`OtpOption`]
//!   (`generated`/`personnel`) and [`Voice`] (`np_rija`, ...).
//! - [`code`]: [`OtpLength`] (4 to 10, default 6) and [`OtpCode`]. Generated
//!   codes are decimal digits from the OS CSPRNG, drawn without modulo bias.
//!   Personnel (client-chosen) codes are 4 to 10 characters: ASCII letters and
//!   digits for text, ASCII digits only for voice, since a call reads the code
//!   digit by digit and a TTS engine would read letters ambiguously. An
//!   `OtpCode` never shows its value in `Debug`.
//! - [`message`]: [`MessageTemplate`], client text of at most
//!   [`message::MAX_TEMPLATE_CHARS`] (1,000) characters holding
//!   [`message::PLACEHOLDER`] (`{otp}`), without control characters other
//!   than line breaks and tabs, split at its placeholders in one place
//!   ([`MessageTemplate::parts`]) for the message sent and stored, its masked
//!   form and the spoken prompt of a call.
//! - [`segments`]: GSM 03.38 / UCS-2 encoding and concatenation.
//!   [`segments::analyze`] counts the parts and [`segments::split`] makes
//!   them with the same packing, so the parts sent are the parts charged.
//!   [`segments::MAX_SEGMENTS`] (10) is the most parts a rendered message may take.
//! - [`credits`]: [`credits::cost`], one SMS credit per part for text, one phone credit per call.
//! - [`vault`]: [`CodeVault`], what is kept of a code at rest: an HMAC-SHA256
//!   hash to verify it and an AES-256-GCM cipher to show it, both bound to the
//!   OTP's account, destination and a random per-OTP salt.
//! - [`sender`]: [`SenderId`], an SMS sender an operator sets per account and
//!   route: 1 to 11 ASCII letters and digits, or 1 to 15 digits (GSM 03.40).
//!   [`message::normalize`] is how a send's template is compared with an
//!   account's approved templates (whitespace runs collapsed, ends trimmed).
//! - [`webhook`]: the signing secrets of account webhooks and the
//!   `v1=<HMAC-SHA256 of "timestamp.body">` signature their requests carry.

pub mod channel;
pub mod code;
pub mod credits;
pub mod message;
pub mod phone;
pub mod secret;
pub mod segments;
pub mod sender;
pub mod vault;
pub mod webhook;

pub use channel::{Channel, OtpOption, Voice};
pub use code::{CodeError, OtpCode, OtpLength};
pub use credits::Cost;
pub use message::{MessageTemplate, TemplateError};
pub use phone::{E164, NumberType, PhoneError, PhoneNumber};
pub use segments::{Part, SegmentCount, SmsEncoding};
pub use sender::{SenderError, SenderId};
pub use vault::{CodeVault, SealedCode};
