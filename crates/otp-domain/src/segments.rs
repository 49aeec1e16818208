//! SMS encoding and concatenation: how many parts a text costs, and the parts themselves.
//!
//! A text goes out in the GSM 03.38 7-bit default alphabet (3GPP TS 23.038,
//! section 6.2.1) when every character is in it, otherwise in UCS-2
//! (UTF-16BE; characters outside the BMP take a surrogate pair, as every
//! handset does). One SMS carries 140 octets: 160 septets or 70 UTF-16 code
//! units. A concatenated message loses 6 octets per part to the user data
//! header, leaving 153 septets or 67 code units.
//!
//! [`analyze`] and [`split`] share one greedy packing, which never puts half
//! of an escape sequence or half of a surrogate pair in a part. A part can
//! therefore end one unit short, and counting `ceil(units / 153)` would
//! under-charge; counting the parts actually packed cannot.

/// The most SMS parts a rendered message may take: 10 parts is 1,530 GSM
/// characters or 670 UCS-2 code units.
pub const MAX_SEGMENTS: u32 = 10;

/// Septets in a single, unconcatenated GSM-7 SMS.
const GSM7_SINGLE: usize = 160;
/// Septets per part of a concatenated GSM-7 SMS.
const GSM7_PART: usize = 153;
/// UTF-16 code units in a single UCS-2 SMS.
const UCS2_SINGLE: usize = 70;
/// UTF-16 code units per part of a concatenated UCS-2 SMS.
const UCS2_PART: usize = 67;

/// The escape septet: the next septet comes from the extension table.
pub const GSM7_ESCAPE: u8 = 0x1B;

/// The GSM 7-bit default alphabet, indexed by septet (3GPP TS 23.038, 6.2.1).
/// Entry 0x1B is the escape to the extension table, not a character; it holds
/// ESC here only as a filler and is never matched.
const GSM7_BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The GSM 7-bit default alphabet extension table (3GPP TS 23.038, 6.2.1.1):
/// each character is sent as [`GSM7_ESCAPE`] followed by its septet.
const GSM7_EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'), // form feed
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The alphabet a text is sent in.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SmsEncoding {
    /// The GSM 03.38 7-bit default alphabet with its extension table.
    Gsm7,
    /// UCS-2, sent as UTF-16BE.
    Ucs2,
}

/// What a text costs on the air.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SegmentCount {
    /// The alphabet the text is sent in.
    pub encoding: SmsEncoding,
    /// Septets for GSM-7 (extension characters count 2), UTF-16 code units
    /// for UCS-2 (characters outside the BMP count 2).
    pub units: usize,
    /// SMS parts; an empty text is still one SMS.
    pub segments: u32,
}

/// One SMS of a possibly concatenated message, without its user data header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// How `bytes` is encoded.
    pub encoding: SmsEncoding,
    /// GSM-7: unpacked septets, one per byte, escapes included.
    /// UCS-2: UTF-16BE.
    pub bytes: Vec<u8>,
}

/// How many parts `text` takes, in which alphabet, and how many units.
pub fn analyze(text: &str) -> SegmentCount {
    let (encoding, units, parts) = match gsm7_septets(text) {
        Some(septets) => (
            SmsEncoding::Gsm7,
            septets.len(),
            pack(
                text.chars().map(gsm7_width),
                septets.len(),
                GSM7_SINGLE,
                GSM7_PART,
            )
            .len(),
        ),
        None => {
            let units = text.encode_utf16().count();
            let parts = pack(
                text.chars().map(char::len_utf16),
                units,
                UCS2_SINGLE,
                UCS2_PART,
            );
            (SmsEncoding::Ucs2, units, parts.len())
        }
    };
    SegmentCount {
        encoding,
        units,
        segments: u32::try_from(parts).unwrap_or(u32::MAX),
    }
}

/// The unpacked septets of `text` in the GSM 7-bit default alphabet, with
/// [`GSM7_ESCAPE`] before each extension character; `None` if any character
/// is in neither table.
pub fn gsm7_septets(text: &str) -> Option<Vec<u8>> {
    let mut septets = Vec::with_capacity(text.len());
    for c in text.chars() {
        if let Some(septet) = gsm7_basic(c) {
            septets.push(septet);
        } else {
            septets.extend([GSM7_ESCAPE, gsm7_extension(c)?]);
        }
    }
    Some(septets)
}

/// Turns unpacked GSM-7 septets back into text; `None` for a value above
/// 0x7F, an escape with nothing after it, or an escape before a septet that
/// is not in the extension table.
pub fn decode_gsm7(septets: &[u8]) -> Option<String> {
    let mut text = String::with_capacity(septets.len());
    let mut septets = septets.iter().copied();
    while let Some(septet) = septets.next() {
        let c = if septet == GSM7_ESCAPE {
            let extended = septets.next()?;
            GSM7_EXTENSION
                .iter()
                .find(|&&(code, _)| code == extended)
                .map(|&(_, c)| c)?
        } else {
            *GSM7_BASIC.get(usize::from(septet))?
        };
        text.push(c);
    }
    Some(text)
}

/// Splits `text` into the parts to send, exactly [`analyze`]`(text).segments` of them.
///
/// A text that fits in one SMS is one part (an empty text is one empty part).
/// Otherwise each part holds at most 153 septets or 67 code units, and an
/// escape sequence or a surrogate pair is never cut in two.
pub fn split(text: &str) -> Vec<Part> {
    match gsm7_septets(text) {
        Some(septets) => {
            let sizes = pack(
                text.chars().map(gsm7_width),
                septets.len(),
                GSM7_SINGLE,
                GSM7_PART,
            );
            chunks(&septets, &sizes)
                .map(|chunk| Part {
                    encoding: SmsEncoding::Gsm7,
                    bytes: chunk.to_vec(),
                })
                .collect()
        }
        None => {
            let units: Vec<u16> = text.encode_utf16().collect();
            let sizes = pack(
                text.chars().map(char::len_utf16),
                units.len(),
                UCS2_SINGLE,
                UCS2_PART,
            );
            chunks(&units, &sizes)
                .map(|chunk| Part {
                    encoding: SmsEncoding::Ucs2,
                    bytes: chunk.iter().flat_map(|unit| unit.to_be_bytes()).collect(),
                })
                .collect()
        }
    }
}

fn gsm7_basic(c: char) -> Option<u8> {
    if c == '\u{1B}' {
        return None;
    }
    let septet = GSM7_BASIC.iter().position(|&b| b == c)?;
    u8::try_from(septet).ok()
}

fn gsm7_extension(c: char) -> Option<u8> {
    GSM7_EXTENSION
        .iter()
        .find(|&&(_, e)| e == c)
        .map(|&(code, _)| code)
}

/// Septets one GSM-7 character takes; only called on text that fits GSM-7.
fn gsm7_width(c: char) -> usize {
    if gsm7_basic(c).is_some() { 1 } else { 2 }
}

/// Greedy packing shared by [`analyze`] and [`split`]: given the width in
/// units of each character, the units in each part. Everything in one part
/// when it fits a single SMS; otherwise parts of at most `per_part` units,
/// closed early rather than cut a character.
fn pack(
    widths: impl Iterator<Item = usize>,
    total: usize,
    single: usize,
    per_part: usize,
) -> Vec<usize> {
    if total <= single {
        return vec![total];
    }
    let mut sizes = Vec::with_capacity(total.div_ceil(per_part));
    let mut current = 0;
    for width in widths {
        if current + width > per_part {
            sizes.push(current);
            current = 0;
        }
        current += width;
    }
    sizes.push(current);
    sizes
}

/// Cuts `units` into consecutive chunks of the given sizes.
fn chunks<'a, T>(units: &'a [T], sizes: &'a [usize]) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = units;
    sizes.iter().map(move |&size| {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        chunk
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(parts: &[Part]) -> String {
        match parts[0].encoding {
            SmsEncoding::Gsm7 => {
                let septets: Vec<u8> = parts.iter().flat_map(|p| p.bytes.clone()).collect();
                decode_gsm7(&septets).expect("split produced valid septets")
            }
            SmsEncoding::Ucs2 => {
                let units: Vec<u16> = parts
                    .iter()
                    .flat_map(|p| p.bytes.chunks(2).map(|b| u16::from_be_bytes([b[0], b[1]])))
                    .collect();
                String::from_utf16(&units).expect("split produced valid UTF-16")
            }
        }
    }

    fn count(encoding: SmsEncoding, units: usize, segments: u32) -> SegmentCount {
        SegmentCount {
            encoding,
            units,
            segments,
        }
    }

    #[test]
    fn the_basic_table_maps_every_septet_but_escape_to_its_character() {
        assert_eq!(gsm7_septets("@"), Some(vec![0x00]));
        assert_eq!(gsm7_septets("\n"), Some(vec![0x0A]));
        assert_eq!(gsm7_septets("Δ"), Some(vec![0x10]));
        assert_eq!(gsm7_septets("É"), Some(vec![0x1F]));
        assert_eq!(gsm7_septets("¤"), Some(vec![0x24]));
        assert_eq!(gsm7_septets("¡"), Some(vec![0x40]));
        assert_eq!(gsm7_septets("§"), Some(vec![0x5F]));
        assert_eq!(gsm7_septets("¿"), Some(vec![0x60]));
        assert_eq!(gsm7_septets("à"), Some(vec![0x7F]));
        assert_eq!(gsm7_septets("\u{1B}"), None);
        let all: String = GSM7_BASIC
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != usize::from(GSM7_ESCAPE))
            .map(|(_, &c)| c)
            .collect();
        let septets = gsm7_septets(&all).unwrap();
        assert_eq!(septets.len(), 127);
        assert!(septets.iter().all(|&s| s != GSM7_ESCAPE));
        assert_eq!(decode_gsm7(&septets).unwrap(), all);
    }

    #[test]
    fn characters_that_look_gsm_but_are_not_force_ucs2() {
        // Lowercase ç, backtick, curly quotes, Greek lowercase, NBSP.
        for text in ["ç", "`", "’", "“", "δ", "\u{a0}", "â", "ê"] {
            assert_eq!(analyze(text).encoding, SmsEncoding::Ucs2, "{text:?}");
        }
    }

    #[test]
    fn extension_characters_cost_two_septets() {
        assert_eq!(gsm7_septets("€"), Some(vec![0x1B, 0x65]));
        assert_eq!(analyze("€"), count(SmsEncoding::Gsm7, 2, 1));
        assert_eq!(analyze("^{}\\[~]|€\u{0C}").units, 20);
        assert_eq!(
            gsm7_septets("[a]"),
            Some(vec![0x1B, 0x3C, 0x61, 0x1B, 0x3E])
        );
    }

    #[test]
    fn gsm_messages_are_160_septets_single_and_153_per_part() {
        let a = |n| "a".repeat(n);
        assert_eq!(analyze(""), count(SmsEncoding::Gsm7, 0, 1));
        assert_eq!(analyze(&a(160)), count(SmsEncoding::Gsm7, 160, 1));
        assert_eq!(analyze(&a(161)), count(SmsEncoding::Gsm7, 161, 2));
        assert_eq!(analyze(&a(306)), count(SmsEncoding::Gsm7, 306, 2));
        assert_eq!(analyze(&a(307)), count(SmsEncoding::Gsm7, 307, 3));
        assert_eq!(analyze(&a(1530)).segments, MAX_SEGMENTS);
        assert_eq!(analyze(&a(1531)).segments, MAX_SEGMENTS + 1);
    }

    #[test]
    fn eighty_euro_signs_fit_one_sms_and_eighty_one_take_two() {
        assert_eq!(analyze(&"€".repeat(80)), count(SmsEncoding::Gsm7, 160, 1));
        assert_eq!(analyze(&"€".repeat(81)), count(SmsEncoding::Gsm7, 162, 2));
    }

    #[test]
    fn an_escape_sequence_is_never_cut_so_a_part_can_end_one_short() {
        // 152 letters then euro signs: the first euro would straddle septets
        // 153 and 154, so part one stops at 152.
        let text = format!("{}{}", "a".repeat(152), "€".repeat(77));
        assert_eq!(analyze(&text), count(SmsEncoding::Gsm7, 306, 3));
        let parts = split(&text);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].bytes.len(), 152);
        assert_eq!(parts[1].bytes.len(), 152);
        assert_eq!(parts[2].bytes.len(), 2);
        assert_eq!(decode(&parts), text);
    }

    #[test]
    fn ucs2_messages_are_70_units_single_and_67_per_part() {
        let na = |n| "न".repeat(n);
        assert_eq!(analyze(&na(70)), count(SmsEncoding::Ucs2, 70, 1));
        assert_eq!(analyze(&na(71)), count(SmsEncoding::Ucs2, 71, 2));
        assert_eq!(analyze(&na(134)), count(SmsEncoding::Ucs2, 134, 2));
        assert_eq!(analyze(&na(135)), count(SmsEncoding::Ucs2, 135, 3));
        // One non-GSM character turns the whole text into UCS-2.
        let mixed = format!("{}न", "a".repeat(69));
        assert_eq!(analyze(&mixed), count(SmsEncoding::Ucs2, 70, 1));
    }

    #[test]
    fn the_tingting_sample_is_one_ucs2_sms_of_13_units() {
        assert_eq!(analyze("हेल्लो नमस्ते"), count(SmsEncoding::Ucs2, 13, 1));
        let parts = split("हेल्लो नमस्ते");
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].bytes.len(), 26);
        assert_eq!(&parts[0].bytes[..2], &[0x09, 0x39]); // ह U+0939
    }

    #[test]
    fn an_emoji_is_two_units_and_its_pair_is_never_cut() {
        assert_eq!(analyze("🙂"), count(SmsEncoding::Ucs2, 2, 1));
        let text = format!("{}{}", "न".repeat(66), "🙂".repeat(3));
        assert_eq!(analyze(&text), count(SmsEncoding::Ucs2, 72, 2));
        let parts = split(&text);
        assert_eq!(parts[0].bytes.len(), 66 * 2);
        assert_eq!(parts[1].bytes.len(), 6 * 2);
        assert_eq!(decode(&parts), text);
    }

    #[test]
    fn a_text_that_fits_one_sms_is_one_part_with_its_bytes() {
        let parts = split("Code 1234");
        assert_eq!(
            parts,
            vec![Part {
                encoding: SmsEncoding::Gsm7,
                bytes: b"Code 1234".to_vec(),
            }]
        );
        assert_eq!(split("").len(), 1);
    }

    #[test]
    fn decoding_rejects_what_no_encoder_produces() {
        assert_eq!(decode_gsm7(&[0x80]), None);
        assert_eq!(decode_gsm7(&[0x41, GSM7_ESCAPE]), None);
        assert_eq!(decode_gsm7(&[GSM7_ESCAPE, 0x41]), None);
    }

    fn sms_text() -> impl Strategy<Value = String> {
        prop_oneof![
            // Mostly GSM, with extension characters to land on boundaries.
            "[a-z€\\[\\]^{}|~ ]{0,400}",
            // Devanagari with emoji and the odd GSM character.
            "[नमस्ते🙂😀a€]{0,250}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn split_sends_exactly_the_segments_analyze_counts(text in sms_text()) {
            let count = analyze(&text);
            let parts = split(&text);
            prop_assert_eq!(parts.len(), count.segments as usize);
            prop_assert!(parts.iter().all(|p| p.encoding == count.encoding));
            let bytes: usize = parts.iter().map(|p| p.bytes.len()).sum();
            let unit_bytes = match count.encoding {
                SmsEncoding::Gsm7 => 1,
                SmsEncoding::Ucs2 => 2,
            };
            prop_assert_eq!(bytes, count.units * unit_bytes);
            let (single, per_part) = match count.encoding {
                SmsEncoding::Gsm7 => (GSM7_SINGLE, GSM7_PART),
                SmsEncoding::Ucs2 => (UCS2_SINGLE * 2, UCS2_PART * 2),
            };
            let limit = if parts.len() == 1 { single } else { per_part };
            prop_assert!(parts.iter().all(|p| p.bytes.len() <= limit));
            prop_assert_eq!(decode(&parts), text);
        }

        #[test]
        fn a_part_is_closed_early_only_to_keep_a_character_whole(text in sms_text()) {
            let parts = split(&text);
            for pair in parts.windows(2) {
                let (part, next) = (&pair[0], &pair[1]);
                // Units in this part, and the width of the character that opens the next.
                let (units, next_width, per_part) = match part.encoding {
                    SmsEncoding::Gsm7 => (
                        part.bytes.len(),
                        if next.bytes[0] == GSM7_ESCAPE { 2 } else { 1 },
                        GSM7_PART,
                    ),
                    SmsEncoding::Ucs2 => (
                        part.bytes.len() / 2,
                        if (0xD8..0xDC).contains(&next.bytes[0]) { 2 } else { 1 },
                        UCS2_PART,
                    ),
                };
                prop_assert!(units + next_width > per_part, "{units} + {next_width}");
            }
        }

        #[test]
        fn every_part_decodes_on_its_own(text in sms_text()) {
            for part in split(&text) {
                let decoded = decode(std::slice::from_ref(&part));
                prop_assert!(text.contains(&decoded));
            }
        }
    }
}
