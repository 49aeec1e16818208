//! Phone numbers: parsed once at the edge, E.164 from then on.

use std::fmt;
use std::str::FromStr;

use phonenumber::Type;
use phonenumber::country::Id;

use crate::channel::Channel;

/// The longest input [`PhoneNumber::parse`] looks at, in characters.
///
/// E.164 allows 15 digits; 32 leaves room for `00`, spaces, dashes and
/// parentheses while refusing anything bigger before any parsing work.
pub const MAX_INPUT_CHARS: usize = 32;

/// Nepal's numbers in E.164: `+` and its country calling code, the default
/// when a number has none.
const NP_PREFIX: &str = "+977";

/// A validated phone number, stored in E.164 form.
///
/// The only way to get one is [`PhoneNumber::parse`], so holding a
/// `PhoneNumber` means the number passed libphonenumber's validation for its
/// region. Equality and hashing follow the E.164 form: `9851023212` and
/// `+977 985-102-3212` are the same number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    e164: E164,
    country_code: u16,
    region: Option<Id>,
    number_type: NumberType,
}

/// What kind of line a number is, from libphonenumber's metadata for its
/// region; it decides which channels may reach the number
/// ([`NumberType::allows`]).
///
/// Only ordinary subscriber lines get OTPs. The others are how toll fraud
/// works (a premium-rate, shared-cost or satellite number earns its owner money
/// for each message or call a gateway is made to send it) or lines no person
/// reads a code from (pagers, VoIP and personal forwarding ranges, company
/// numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NumberType {
    /// A mobile line.
    Mobile,
    /// A region (such as the US) whose numbers do not tell mobile from fixed line.
    FixedLineOrMobile,
    /// A fixed line: reachable by a call, not by SMS.
    FixedLine,
    /// A freephone number (`+1 800`, `+44 800`).
    TollFree,
    /// A premium-rate number (`+1 900`, `+44 909`, `+44 871`, `+44 843`).
    PremiumRate,
    /// A shared-cost number (`+33 884`).
    SharedCost,
    /// A personal number that forwards anywhere (`+44 70`).
    Personal,
    /// A voice-over-IP range (`+44 56`).
    Voip,
    /// A pager (`+44 76`).
    Pager,
    /// A universal access or company number (`+44 55`).
    Uan,
    /// A voicemail access number.
    Voicemail,
    /// A number of a non-geographic service: satellite phones (`+881`,
    /// `+870`), international freephone (`+800`), global networks (`+882`,
    /// `+883`). libphonenumber calls some of these mobile, but none belongs to
    /// a country, and calls and messages to them are billed at satellite or
    /// premium rates.
    NonGeographic,
    /// A range whose type the metadata does not know.
    Unknown,
}

impl NumberType {
    /// Whether an OTP may go to a number of this type over `channel`: SMS to
    /// mobiles (and to regions that do not tell mobiles apart), calls to those
    /// and to fixed lines. Everything else is refused whatever
    /// `allowed_countries` says.
    pub fn allows(self, channel: Channel) -> bool {
        match self {
            Self::Mobile | Self::FixedLineOrMobile => true,
            Self::FixedLine => channel == Channel::Voice,
            _ => false,
        }
    }

    /// A short name for messages: `"premium-rate"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mobile => "mobile",
            Self::FixedLineOrMobile => "fixed-line-or-mobile",
            Self::FixedLine => "fixed-line",
            Self::TollFree => "toll-free",
            Self::PremiumRate => "premium-rate",
            Self::SharedCost => "shared-cost",
            Self::Personal => "personal",
            Self::Voip => "VoIP",
            Self::Pager => "pager",
            Self::Uan => "universal access",
            Self::Voicemail => "voicemail",
            Self::NonGeographic => "non-geographic (satellite or global service)",
            Self::Unknown => "unknown-type",
        }
    }

    /// The type of a number of `region` that libphonenumber read as `kind`
    /// (a number of no region is non-geographic, whatever its metadata says).
    fn of(kind: Type, region: Option<Id>) -> Self {
        if region.is_none() {
            return Self::NonGeographic;
        }
        match kind {
            Type::Mobile => Self::Mobile,
            Type::FixedLineOrMobile => Self::FixedLineOrMobile,
            Type::FixedLine => Self::FixedLine,
            Type::TollFree => Self::TollFree,
            Type::PremiumRate => Self::PremiumRate,
            Type::SharedCost => Self::SharedCost,
            Type::PersonalNumber => Self::Personal,
            Type::Voip => Self::Voip,
            Type::Pager => Self::Pager,
            Type::Uan => Self::Uan,
            Type::Voicemail => Self::Voicemail,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for NumberType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an input is not a phone number. The messages are shown to API users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// The input was empty or only whitespace.
    #[error("Enter a phone number.")]
    Empty,
    /// The input was longer than [`MAX_INPUT_CHARS`] characters.
    #[error("A phone number can be at most {max} characters long.")]
    TooLong {
        /// The limit, [`MAX_INPUT_CHARS`].
        max: usize,
    },
    /// The input held something other than digits, a leading `+`, whitespace
    /// and the separators `-`, `.`, `(`, `)`.
    #[error(
        "A phone number can only contain digits, spaces, dashes, dots, parentheses and a leading +."
    )]
    InvalidCharacters,
    /// The characters were allowed but do not form a number: no digits, a `+`
    /// after the first digit, an unknown country code, or too few digits.
    #[error(
        "Enter a valid phone number, with the country code after a + for numbers outside Nepal."
    )]
    NotANumber,
    /// The number is well formed but is not a valid number of its country
    /// (wrong length, or a range that is not allocated).
    #[error("Enter a valid phone number.")]
    Invalid,
}

/// A number in E.164 form (`+9779851023212`) as the store keeps it and
/// reads it back: a `+`, a country code that does not start with 0, and at
/// most 15 digits in all.
///
/// Only the shape is checked, not libphonenumber's metadata: a number was a
/// [`PhoneNumber`] when it was sent, and it must read back whatever a later
/// metadata release says about its range. The one way in from a request is
/// [`PhoneNumber::as_e164`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct E164(String);

impl E164 {
    /// The E.164 form of a parsed number: `+`, the country code, and the
    /// national significant number with any leading zeros it keeps (Italy's
    /// `+39 06...`). That is what the library's E.164 formatter writes, but it
    /// also matches the number against its country's national formats first,
    /// with regular expressions, for the other modes: about 2% of a send's
    /// CPU under load (BENCHMARKS.md).
    fn of(parsed: &phonenumber::PhoneNumber) -> E164 {
        E164(format!("+{}{}", parsed.country().code(), parsed.national()))
    }

    /// The most digits E.164 allows, country code included.
    pub const MAX_DIGITS: usize = 15;

    /// A stored E.164 string, or `None` when it is not one: no leading `+`,
    /// a leading 0, anything but ASCII digits after the `+`, fewer than 2 or
    /// more than [`E164::MAX_DIGITS`] digits.
    pub fn parse(stored: &str) -> Option<E164> {
        let digits = stored.strip_prefix('+')?;
        let shaped = (2..=Self::MAX_DIGITS).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        shaped.then(|| E164(stored.to_owned()))
    }

    /// `+9779851023212`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used in API replies, as TingTing shows numbers: the national
    /// number for Nepal (`9851023212`), E.164 for everyone else. (Country
    /// codes are prefix-free, so a number starting `+977` is Nepali.)
    pub fn display(&self) -> &str {
        self.0.strip_prefix(NP_PREFIX).unwrap_or(&self.0)
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the caller typed, once separators are gone.
enum Dialable {
    /// Country code and national number, as after a `+`.
    International(String),
    /// A number dialled inside Nepal, without the national prefix `0`.
    Nepal(String),
}

impl PhoneNumber {
    /// Parses a number as a person or a client would write it.
    ///
    /// Numbers without a country code are Nepali. Accepted forms, for the same
    /// number: `9851023212`, `09851023212` (national prefix `0`),
    /// `+9779851023212`, `009779851023212` (international prefix `00`) and
    /// `9779851023212` (country code without `+`, recognised only at 13
    /// digits so that it cannot be mistaken for a national number). Spaces,
    /// dashes, dots and parentheses are ignored. Other countries need `+` or
    /// `00`: `+14155552671`, `+447911123456`.
    ///
    /// The length check comes first and looks at no more than
    /// `MAX_INPUT_CHARS + 1` characters, so an oversized input costs nothing.
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        if input.chars().nth(MAX_INPUT_CHARS).is_some() {
            return Err(PhoneError::TooLong {
                max: MAX_INPUT_CHARS,
            });
        }
        let parsed = match dialable(input)? {
            Dialable::International(digits) => phonenumber::parse(None, format!("+{digits}")),
            Dialable::Nepal(digits) => phonenumber::parse(Some(Id::NP), digits),
        }
        .map_err(|_| PhoneError::NotANumber)?;

        // libphonenumber's validity is "the type is not unknown", read over
        // the national number with its leading zeros; its type reads the
        // number without them. For a number without leading zeros (every
        // country's but a few, Nepal's included) that is the same reading,
        // so it is made once: each one matches the number against up to a
        // dozen of its country's patterns.
        let kind = parsed.number_type(&phonenumber::metadata::DATABASE);
        let valid = if parsed.national().zeros() == 0 {
            kind != Type::Unknown
        } else {
            parsed.is_valid()
        };
        if parsed.extension().is_some() || !valid {
            return Err(PhoneError::Invalid);
        }
        let region = parsed.country().id();
        Ok(PhoneNumber {
            e164: E164::of(&parsed),
            country_code: parsed.country().code(),
            number_type: NumberType::of(kind, region),
            region,
        })
    }

    /// The E.164 form, `+9779851023212`: what goes to SMSCs and SIP trunks.
    pub fn e164(&self) -> &str {
        self.e164.as_str()
    }

    /// The E.164 form as a value of its own: what the store keeps.
    pub fn as_e164(&self) -> &E164 {
        &self.e164
    }

    /// The form used in API replies ([`E164::display`]).
    pub fn display(&self) -> &str {
        self.e164.display()
    }

    /// The country calling code, `977` for Nepal.
    pub fn country_code(&self) -> u16 {
        self.country_code
    }

    /// Whether the number can receive SMS: mobile, or a region (such as the
    /// US) whose numbers do not tell mobile from fixed line.
    pub fn is_mobile(&self) -> bool {
        matches!(
            self.number_type,
            NumberType::Mobile | NumberType::FixedLineOrMobile
        )
    }

    /// What kind of line this is.
    pub fn number_type(&self) -> NumberType {
        self.number_type
    }

    /// Whether an OTP may go to this number over `channel` (see
    /// [`NumberType::allows`]).
    pub fn accepts(&self, channel: Channel) -> bool {
        self.number_type.allows(channel)
    }

    /// The ISO 3166 region the number belongs to (`"NP"`), if it belongs to
    /// one; non-geographic numbers (`+800`, satellite) have none.
    pub fn region(&self) -> Option<&str> {
        self.region.as_ref().map(AsRef::as_ref)
    }
}

/// The country calling code and the operator prefix of a stored E.164 number:
/// `+9779841234567` gives `(977, "+977984")`, the calling code followed by the
/// first three national digits (in Nepal, the operator's block: 984 NTC, 980
/// Ncell). Calling codes are prefix-free, so the code is the one of one to
/// three digits that libphonenumber knows; `None` for anything that is not
/// `+` and digits under a known code. Cheap: no parsing of the whole number.
pub fn operator_prefix(e164: &str) -> Option<(u16, String)> {
    let digits = e164.strip_prefix('+')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code = (1..=3.min(digits.len())).find_map(|len| {
        let code: u16 = digits[..len].parse().ok()?;
        phonenumber::metadata::DATABASE
            .by_code(&code)
            .map(|_| (code, len))
    })?;
    let (code, len) = code;
    let end = (len + 3).min(digits.len());
    Some((code, format!("+{}", &digits[..end])))
}

/// Strips separators and sorts out which prefix, if any, the input uses.
fn dialable(input: &str) -> Result<Dialable, PhoneError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(PhoneError::Empty);
    }
    let mut digits = String::with_capacity(input.len());
    let mut plus = false;
    for c in input.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if !plus && digits.is_empty() => plus = true,
            '+' => return Err(PhoneError::NotANumber),
            '-' | '.' | '(' | ')' => {}
            c if c.is_whitespace() => {}
            _ => return Err(PhoneError::InvalidCharacters),
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::NotANumber);
    }
    Ok(if plus {
        Dialable::International(digits)
    } else if let Some(rest) = digits.strip_prefix("00") {
        Dialable::International(rest.to_owned())
    } else if digits.len() == 13 && digits.starts_with("977") {
        Dialable::International(digits)
    } else if let Some(rest) = digits.strip_prefix('0') {
        Dialable::Nepal(rest.to_owned())
    } else {
        Dialable::Nepal(digits)
    })
}

impl FromStr for PhoneNumber {
    type Err = PhoneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Serialized as E.164, so a stored or logged number is never ambiguous.
impl serde::Serialize for PhoneNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.e164.as_str())
    }
}

/// Deserialized through [`PhoneNumber::parse`], so any accepted form works.
impl<'de> serde::Deserialize<'de> for PhoneNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PhoneNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a phone number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PhoneNumber, E> {
                PhoneNumber::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonenumber::Mode;
    use proptest::prelude::*;
    #[test]
    fn an_operator_prefix_is_the_calling_code_and_three_national_digits() {
        assert_eq!(
            operator_prefix("+9779841234567"),
            Some((977, "+977984".to_owned()))
        );
        assert_eq!(
            operator_prefix("+14155552671"),
            Some((1, "+1415".to_owned()))
        );
        assert_eq!(
            operator_prefix("+447911123456"),
            Some((44, "+44791".to_owned()))
        );
        assert_eq!(operator_prefix("9779841234567"), None);
        assert_eq!(operator_prefix("+97798x"), None);
        assert_eq!(operator_prefix("+"), None);
    }

    fn e164(input: &str) -> String {
        PhoneNumber::parse(input)
            .unwrap_or_else(|e| panic!("{input:?} rejected: {e:?}"))
            .e164()
            .to_owned()
    }

    #[test]
    fn a_stored_e164_reads_back_with_the_display_form_of_the_parsed_number() {
        for input in ["9851023212", "+14155552671", "+447400123456", "014123456"] {
            let number = PhoneNumber::parse(input).unwrap();
            let stored = E164::parse(number.e164()).unwrap();
            assert_eq!(&stored, number.as_e164());
            assert_eq!(stored.display(), number.display());
            assert_eq!(stored.to_string(), number.e164());
        }
        assert_eq!(
            E164::parse("+9779851023212").unwrap().display(),
            "9851023212"
        );
    }

    #[test]
    fn a_stored_e164_is_checked_for_its_shape_only() {
        // A range a later metadata release might drop still reads back.
        assert!(E164::parse("+97799999").is_some());
        assert!(E164::parse(&format!("+{}", "1".repeat(E164::MAX_DIGITS))).is_some());
        for bad in [
            "",
            "+",
            "+1",
            "9851023212",
            "+09851023212",
            "+977 985",
            "+977-9851023212",
            "+97798510232120000",
            "+٩٧٧١٢٣",
        ] {
            assert_eq!(E164::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_nepali_form_of_a_number_parses_to_the_same_e164() {
        for input in [
            "9851023212",
            "+9779851023212",
            "9779851023212",
            "009779851023212",
            "09851023212",
            "985-102-3212",
            "985 102 3212",
            "985.102.3212",
            "(985) 1023212",
            "+977 (985) 102-3212",
            "  9851023212\t",
        ] {
            assert_eq!(e164(input), "+9779851023212", "{input:?}");
        }
    }

    #[test]
    fn a_nepali_mobile_number_displays_as_its_ten_national_digits() {
        let number = PhoneNumber::parse("+9779851023212").unwrap();
        assert_eq!(number.display(), "9851023212");
        assert_eq!(number.country_code(), 977);
        assert_eq!(number.region(), Some("NP"));
        assert!(number.is_mobile());
    }

    #[test]
    fn every_current_nepali_mobile_range_is_accepted() {
        // libphonenumber's NP mobile ranges: 960-963, 972, 974-976, 980-982,
        // 984-986, 988.
        for prefix in [
            960, 961, 962, 963, 972, 974, 975, 976, 980, 981, 982, 984, 985, 986, 988,
        ] {
            let input = format!("{prefix}1234567");
            let number = PhoneNumber::parse(&input).unwrap_or_else(|e| panic!("{input}: {e:?}"));
            assert!(number.is_mobile(), "{input}");
            assert_eq!(number.display(), input);
        }
        for input in [
            "9851023212",
            "9861489014",
            "9801234567",
            "9612345678",
            "9631234567",
            "9721234567",
            "9881234567",
        ] {
            assert!(PhoneNumber::parse(input).unwrap().is_mobile(), "{input}");
        }
    }

    #[test]
    fn ranges_newer_than_our_reference_are_accepted_as_the_metadata_says() {
        // libphonenumber 9.0.33 also lists 900, 970 and 971 as NP mobile.
        for input in ["9001234567", "9701234567", "9711234567"] {
            assert!(PhoneNumber::parse(input).unwrap().is_mobile(), "{input}");
        }
    }

    #[test]
    fn unallocated_or_misshapen_nepali_numbers_are_invalid() {
        for input in [
            "9871234567",
            "9891234567",
            "9641234567",
            "9731234567",
            "98510232121",
            "985102321",
        ] {
            assert_eq!(
                PhoneNumber::parse(input),
                Err(PhoneError::Invalid),
                "{input}"
            );
        }
    }

    #[test]
    fn a_handful_of_digits_is_not_a_valid_number() {
        assert_eq!(PhoneNumber::parse("123"), Err(PhoneError::Invalid));
        // Under three digits libphonenumber does not see a number at all.
        assert_eq!(PhoneNumber::parse("1"), Err(PhoneError::NotANumber));
    }

    /// A country whose national numbers keep a leading zero keeps it in E.164.
    #[test]
    fn an_italian_number_keeps_its_leading_zero() {
        let number = PhoneNumber::parse("+39 06 6982 1234").unwrap();
        assert_eq!(number.e164(), "+390669821234");
    }

    #[test]
    fn a_nepali_fixed_line_number_is_valid_but_not_mobile() {
        let number = PhoneNumber::parse("01-4123456").unwrap();
        assert_eq!(number.e164(), "+97714123456");
        assert_eq!(number.display(), "14123456");
        assert!(!number.is_mobile());
    }

    #[test]
    fn international_numbers_need_a_plus_or_00() {
        let us = PhoneNumber::parse("+1 (415) 555-2671").unwrap();
        assert_eq!(us.e164(), "+14155552671");
        assert_eq!(us.display(), "+14155552671");
        assert_eq!(us.country_code(), 1);
        assert_eq!(us.region(), Some("US"));
        assert!(us.is_mobile(), "US numbers are fixed-line-or-mobile");

        let uk = PhoneNumber::parse("00447400123456").unwrap();
        assert_eq!(uk.e164(), "+447400123456");
        assert_eq!(uk.region(), Some("GB"));
        assert!(uk.is_mobile());

        // +44 7911 1xxxxx is allocated to Guernsey, which shares +44.
        let gg = PhoneNumber::parse("+447911123456").unwrap();
        assert_eq!(gg.country_code(), 44);
        assert_eq!(gg.region(), Some("GG"));

        // Without a prefix the digits are read as a Nepali number.
        assert!(PhoneNumber::parse("447911123456").is_err());
    }

    #[test]
    fn premium_and_other_service_numbers_get_no_otp_on_either_channel() {
        for (input, kind) in [
            ("+1 900 234 5678", NumberType::PremiumRate),
            ("+44 909 876 5432", NumberType::PremiumRate),
            ("+44 871 234 5678", NumberType::PremiumRate),
            ("+44 70 1234 5678", NumberType::Personal),
            ("+44 843 123 4567", NumberType::PremiumRate),
            ("+33 884 01 23 45", NumberType::SharedCost),
            ("+44 56 1234 5678", NumberType::Voip),
            ("+44 55 1234 5678", NumberType::Uan),
            ("+44 76 4012 3456", NumberType::Pager),
            ("+1 800 234 5678", NumberType::TollFree),
            ("+44 800 123 4567", NumberType::TollFree),
            ("+881 6 1234 5678", NumberType::NonGeographic),
            ("+870 301 234 567", NumberType::NonGeographic),
            ("+882 342 1234", NumberType::NonGeographic),
            ("+883 510 012 345", NumberType::NonGeographic),
            ("+800 1234 5678", NumberType::NonGeographic),
            ("+979 123 456 789", NumberType::NonGeographic),
        ] {
            let number = PhoneNumber::parse(input).unwrap_or_else(|e| panic!("{input}: {e:?}"));
            assert_eq!(number.number_type(), kind, "{input}");
            assert!(!number.is_mobile(), "{input}");
            assert!(!number.accepts(Channel::Text), "{input} by SMS");
            assert!(!number.accepts(Channel::Voice), "{input} by call");
        }
    }

    #[test]
    fn satellite_numbers_are_refused_although_the_metadata_calls_them_mobile() {
        let number = PhoneNumber::parse("+881612345678").unwrap();
        assert_eq!(
            number
                .e164()
                .parse::<phonenumber::PhoneNumber>()
                .unwrap()
                .number_type(&phonenumber::metadata::DATABASE),
            Type::Mobile
        );
        assert_eq!(number.region(), None);
        assert_eq!(number.number_type(), NumberType::NonGeographic);
        assert!(!number.accepts(Channel::Text));
    }

    #[test]
    fn fixed_lines_take_calls_but_not_sms() {
        for input in ["01-4123456", "+44 121 234 5678"] {
            let number = PhoneNumber::parse(input).unwrap();
            assert_eq!(number.number_type(), NumberType::FixedLine, "{input}");
            assert!(number.accepts(Channel::Voice), "{input}");
            assert!(!number.accepts(Channel::Text), "{input}");
        }
    }

    #[test]
    fn mobiles_at_home_and_abroad_take_both_channels() {
        for (input, kind) in [
            ("9851023212", NumberType::Mobile),
            ("9741234567", NumberType::Mobile),
            ("9612345678", NumberType::Mobile),
            ("+447400123456", NumberType::Mobile),
            ("+919812345678", NumberType::Mobile),
            ("+61412345678", NumberType::Mobile),
            ("+14155552671", NumberType::FixedLineOrMobile),
        ] {
            let number = PhoneNumber::parse(input).unwrap();
            assert_eq!(number.number_type(), kind, "{input}");
            assert!(number.accepts(Channel::Text), "{input}");
            assert!(number.accepts(Channel::Voice), "{input}");
        }
        for prefix in [
            960, 961, 962, 963, 972, 974, 975, 976, 980, 981, 982, 984, 985, 986, 988,
        ] {
            let number = PhoneNumber::parse(&format!("{prefix}7654321")).unwrap();
            assert!(number.accepts(Channel::Text), "{prefix}");
            assert!(number.accepts(Channel::Voice), "{prefix}");
        }
    }

    #[test]
    fn number_types_read_as_words_in_messages() {
        assert_eq!(NumberType::PremiumRate.to_string(), "premium-rate");
        assert_eq!(NumberType::Voip.as_str(), "VoIP");
    }

    #[test]
    fn empty_and_blank_inputs_are_empty() {
        assert_eq!(PhoneNumber::parse(""), Err(PhoneError::Empty));
        assert_eq!(PhoneNumber::parse(" \t "), Err(PhoneError::Empty));
    }

    #[test]
    fn letters_and_other_symbols_are_invalid_characters() {
        for input in [
            "98510232l2",
            "call 9851023212",
            "9851023212#",
            "985/1023212",
            "९८५१०२३२१२",
        ] {
            assert_eq!(
                PhoneNumber::parse(input),
                Err(PhoneError::InvalidCharacters),
                "{input}"
            );
        }
    }

    #[test]
    fn a_misplaced_plus_or_no_digits_is_not_a_number() {
        for input in [
            "+",
            "()-",
            "985+1023212",
            "++9779851023212",
            "+999123456789",
        ] {
            assert_eq!(
                PhoneNumber::parse(input),
                Err(PhoneError::NotANumber),
                "{input}"
            );
        }
    }

    #[test]
    fn inputs_over_the_limit_are_rejected_before_parsing() {
        let at_limit = format!("{:>width$}", "9851023212", width = MAX_INPUT_CHARS);
        assert!(PhoneNumber::parse(&at_limit).is_ok());
        let over = format!(" {at_limit}");
        assert_eq!(
            PhoneNumber::parse(&over),
            Err(PhoneError::TooLong {
                max: MAX_INPUT_CHARS
            })
        );
        // Letters after the limit are never looked at.
        let huge = format!("{}x", "9".repeat(1_000));
        assert_eq!(
            PhoneNumber::parse(&huge),
            Err(PhoneError::TooLong {
                max: MAX_INPUT_CHARS
            })
        );
    }

    #[test]
    fn equal_numbers_are_equal_whatever_their_input_form() {
        assert_eq!(
            PhoneNumber::parse("9851023212").unwrap(),
            PhoneNumber::parse("+977-985-1023212").unwrap()
        );
    }

    #[test]
    fn serde_writes_e164_and_reads_any_accepted_form() {
        let number: PhoneNumber = serde_json::from_str("\"985-1023212\"").unwrap();
        assert_eq!(
            serde_json::to_string(&number).unwrap(),
            "\"+9779851023212\""
        );
        assert!(serde_json::from_str::<PhoneNumber>("\"abc\"").is_err());
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            PhoneError::Invalid.to_string(),
            "Enter a valid phone number."
        );
        assert_eq!(
            PhoneError::TooLong { max: 32 }.to_string(),
            "A phone number can be at most 32 characters long."
        );
    }

    /// A Nepali mobile number in one of its ranges, and that number as someone
    /// might write it: any accepted prefix, separators between the digits,
    /// blanks around.
    fn nepali_mobile_input() -> impl Strategy<Value = (String, String)> {
        let ranges = prop::sample::select(vec![
            "960", "961", "962", "963", "972", "974", "975", "976", "980", "981", "982", "984",
            "985", "986", "988",
        ]);
        let prefix = prop::sample::select(vec!["", "0", "+977", "977", "00977"]);
        let separators = prop::collection::vec(
            prop::sample::select(vec!["", "", "", " ", "-", ".", "(", ")"]),
            15,
        );
        let blank = prop::sample::select(vec!["", " ", "\t"]);
        (ranges, "[0-9]{7}", prefix, separators, blank.clone(), blank).prop_map(
            |(range, rest, prefix, separators, before, after)| {
                let national = format!("{range}{rest}");
                let (plus, digits) = match prefix.strip_prefix('+') {
                    Some(code) => ("+", format!("{code}{national}")),
                    None => ("", format!("{prefix}{national}")),
                };
                let mut written = format!("{before}{plus}");
                for (i, digit) in digits.chars().enumerate() {
                    if i > 0 {
                        written.push_str(separators[i]);
                    }
                    written.push(digit);
                }
                written.push_str(after);
                (national, written)
            },
        )
    }

    proptest! {
        #[test]
        fn parsing_never_panics_on_arbitrary_input(input in any::<String>()) {
            let _ = PhoneNumber::parse(&input);
        }

        #[test]
        fn parsing_never_panics_on_number_like_input(input in "[+0-9 ().-]{0,34}") {
            let _ = PhoneNumber::parse(&input);
        }

        #[test]
        fn every_written_form_of_a_nepali_mobile_number_is_its_e164(
            (national, input) in nepali_mobile_input(),
        ) {
            let number = PhoneNumber::parse(&input)
                .map_err(|e| TestCaseError::fail(format!("{input:?}: {e:?}")))?;
            prop_assert_eq!(number.e164(), format!("+977{national}"));
            prop_assert_eq!(number.display(), national.as_str());
            prop_assert_eq!(number.region(), Some("NP"));
            prop_assert!(number.is_mobile());
            prop_assert!(number.accepts(Channel::Text) && number.accepts(Channel::Voice));
            prop_assert_eq!(PhoneNumber::parse(number.e164()).unwrap(), number.clone());
            prop_assert_eq!(PhoneNumber::parse(number.display()).unwrap(), number);
        }

        #[test]
        fn digits_without_a_country_code_are_nepali_when_valid(input in "0?[1-9][0-9]{5,10}") {
            if let Ok(number) = PhoneNumber::parse(&input) {
                let e164 = number.e164().to_owned();
                prop_assert!(e164.starts_with("+977"), "{input} -> {e164}");
                prop_assert_eq!(number.country_code(), 977);
                let again = PhoneNumber::parse(&e164).unwrap();
                prop_assert_eq!(again.e164(), e164.as_str());
            }
        }

        #[test]
        fn the_e164_form_is_the_library_formatters(
            input in "\\+(39|1|44|977|225|242|61|86|91)0?[0-9]{5,11}",
        ) {
            if let Ok(number) = PhoneNumber::parse(&input) {
                let parsed = phonenumber::parse(None, &input).unwrap();
                prop_assert_eq!(
                    number.e164(),
                    parsed.format().mode(Mode::E164).to_string()
                );
            }
        }

        /// `parse` reads a number's type once and takes its validity from
        /// it: what it accepts, and the type it gives, are still what the
        /// library's own validity check and type say, leading zeros (Italy,
        /// Côte d'Ivoire, Gabon) and shared country codes (+1, +44) included.
        #[test]
        fn validity_and_type_are_the_librarys(
            input in "\\+(39|1|44|977|225|241|242|61|86|91|882)0{0,2}[0-9]{5,11}",
        ) {
            let library = phonenumber::parse(None, &input)
                .ok()
                .filter(|p| p.extension().is_none() && p.is_valid());
            let ours = PhoneNumber::parse(&input);
            prop_assert_eq!(ours.is_ok(), library.is_some(), "{}", input);
            if let (Ok(number), Some(parsed)) = (ours, library) {
                let region = parsed.country().id();
                let kind = parsed.number_type(&phonenumber::metadata::DATABASE);
                prop_assert_eq!(number.number_type(), NumberType::of(kind, region), "{}", input);
                prop_assert_eq!(number.region(), region.as_ref().map(AsRef::as_ref));
            }
        }

        #[test]
        fn a_parsed_number_parses_again_to_itself(input in "\\+?[0-9]{3,16}") {
            if let Ok(number) = PhoneNumber::parse(&input) {
                prop_assert_eq!(PhoneNumber::parse(number.e164()).unwrap(), number.clone());
                prop_assert_eq!(PhoneNumber::parse(number.display()).unwrap(), number);
            }
        }
    }
}
