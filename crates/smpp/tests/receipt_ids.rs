//! The receipt id rule (`smpp::receipt::ids`): the SMSC (padded hex
//! in submit_sm_resp, padded decimal in the receipt), fixed and learned
//! habits, ambiguity, long ids; a fixed corpus of receipt texts as SMSCs
//! write them; and properties: for any id and any spelling on either side,
//! within a route's habit, a receipt matches its own message and no other.

use bytes::Bytes;
use proptest::prelude::*;
use smpp::pdu::{DeliverSm, Tlv, esm_class};
use smpp::receipt::ids::{Decision, Habit, HabitLearner, IdForms, IdLookup, MAX_ID_LEN, decide};
use smpp::receipt::{IdFormat, MessageIdIndex, MessageState, from_deliver_sm, parse_text};

fn matched(d: Decision) -> Option<usize> {
    match d {
        Decision::Matched { index, .. } => Some(index),
        _ => None,
    }
}

#[test]
fn padded_hex_answered_and_padded_decimal_reported_match() {
    // The issue: submit_sm_resp `0000002a`, receipt `id:0000000042`.
    let stored = ["0000002a"];
    assert_eq!(
        decide("0000000042", &stored, None),
        Decision::Matched {
            index: 0,
            evidence: Some(Habit::Decimal)
        }
    );
    assert_eq!(
        matched(decide("0000000042", &stored, Some(Habit::Decimal))),
        Some(0)
    );
    assert_eq!(
        decide("0000000042", &stored, Some(Habit::Text)),
        Decision::NoMatch
    );
    assert_eq!(
        decide("0000000042", &stored, Some(Habit::Hex)),
        Decision::NoMatch
    );
}

#[test]
fn forms_drop_padding_case_and_0x_and_cross_the_bases() {
    let f = IdForms::of(" 0x0000002A ");
    assert_eq!(f.text, "2a");
    assert_eq!(f.hex_as_decimal.as_deref(), Some("42"));
    assert_eq!(f.decimal_as_hex, None);
    let f = IdForms::of("0000000042");
    assert_eq!(f.text, "42");
    assert_eq!(f.hex_as_decimal.as_deref(), Some("66"));
    assert_eq!(f.decimal_as_hex.as_deref(), Some("2a"));
    let f = IdForms::of("msg-00042");
    assert_eq!(f.text, "msg-00042");
    assert_eq!((f.hex_as_decimal, f.decimal_as_hex), (None, None));
    assert_eq!(IdForms::of("0000").text, "0");
}

#[test]
fn a_known_habit_is_not_fooled_by_another_message_spelled_like_the_receipt() {
    // Hex ids without letters: message A is 0x42 (66), message B is 0x66
    // (102). A's receipt says "66", which is B's spelling character for
    // character; under the `decimal` habit it is A's.
    let stored = ["42", "66"];
    assert_eq!(
        matched(decide("66", &stored, Some(Habit::Decimal))),
        Some(0)
    );
    assert_eq!(matched(decide("66", &stored, Some(Habit::Text))), Some(1));
    // Not known yet: both fit, so neither is settled on a guess.
    assert_eq!(decide("66", &stored, None), Decision::Ambiguous);
}

#[test]
fn the_exact_spelling_goes_first_under_the_text_habit() {
    let stored = ["0042", "42"];
    assert_eq!(matched(decide("42", &stored, Some(Habit::Text))), Some(1));
    assert_eq!(matched(decide("0042", &stored, Some(Habit::Text))), Some(0));
    assert_eq!(
        decide("042", &stored, Some(Habit::Text)),
        Decision::Ambiguous
    );
}

#[test]
fn an_id_with_no_reading_in_the_habit_is_matched_as_text() {
    let stored = ["AB-12", "0000002a"];
    assert_eq!(
        matched(decide("ab-12", &stored, Some(Habit::Decimal))),
        Some(0)
    );
    assert_eq!(
        matched(decide("zz-1", &["zz-1"], Some(Habit::Hex))),
        Some(0)
    );
}

#[test]
fn ids_longer_than_64_characters_match_nothing() {
    let long = "1".repeat(MAX_ID_LEN + 1);
    assert_eq!(IdLookup::of(&long), None);
    assert_eq!(decide(&long, &[long.as_str()], None), Decision::NoMatch);
    assert_eq!(IdLookup::of("   "), None);
    // 64 decimal digits (beyond any integer type) against their hex.
    let decimal = "9".repeat(MAX_ID_LEN);
    let hex = IdForms::of(&decimal).decimal_as_hex.unwrap();
    assert_eq!(hex.len(), 54);
    assert_eq!(
        matched(decide(&decimal, &[hex.as_str()], Some(Habit::Decimal))),
        Some(0)
    );
    assert_eq!(
        matched(decide(&hex.to_uppercase(), &[decimal.as_str()], None)),
        Some(0)
    );
}

#[test]
fn auto_learns_a_habit_from_unambiguous_matches_only() {
    let mut learner = HabitLearner::new(IdFormat::Auto);
    assert_eq!(learner.habit(), None);
    assert_eq!(learner.observe(Habit::Decimal), None);
    assert_eq!(learner.observe(Habit::Decimal), None);
    assert_eq!(learner.observe(Habit::Decimal), Some(Habit::Decimal));
    assert_eq!(learner.habit(), Some(Habit::Decimal));
    // Contradicting evidence keeps it learning.
    let mut mixed = HabitLearner::new(IdFormat::Auto);
    for _ in 0..5 {
        mixed.observe(Habit::Text);
        mixed.observe(Habit::Hex);
    }
    assert_eq!(mixed.habit(), None);
    // A configured habit is never overridden.
    let mut fixed = HabitLearner::new(IdFormat::Fixed(Habit::Text));
    for _ in 0..10 {
        assert_eq!(fixed.observe(Habit::Decimal), None);
    }
    assert_eq!(fixed.habit(), Some(Habit::Text));
    // A single digit fits every habit: no evidence.
    assert_eq!(
        decide("7", &["7"], None),
        Decision::Matched {
            index: 0,
            evidence: None
        }
    );
}

#[test]
fn the_setting_words_parse() {
    assert_eq!(IdFormat::parse("auto"), Some(IdFormat::Auto));
    assert_eq!(IdFormat::parse("HEX"), Some(IdFormat::Fixed(Habit::Hex)));
    assert_eq!(
        IdFormat::parse("decimal"),
        Some(IdFormat::Fixed(Habit::Decimal))
    );
    assert_eq!(IdFormat::parse("text"), Some(IdFormat::Fixed(Habit::Text)));
    assert_eq!(IdFormat::parse("same"), None);
    for w in ["auto", "text", "hex", "decimal"] {
        assert_eq!(IdFormat::parse(w).unwrap().as_str(), w);
    }
}

/// Receipt texts as SMSCs write them: the id and state each must yield.
const CORPUS: &[(&str, &str, MessageState)] = &[
    (
        "id:0000000042 sub:001 dlvrd:000 submit date:2511261200 done date:2511261201 stat:UNDELIV err:001 text:Your code",
        "0000000042",
        MessageState::Undeliverable,
    ),
    (
        "stat:UNDELIV err:001 id:0000000042 sub:001 dlvrd:000 done date:2511261201 submit date:2511261200 text:",
        "0000000042",
        MessageState::Undeliverable,
    ),
    (
        "ID:0000002A SUB:001 DLVRD:001 SUBMIT DATE:2511261200 DONE DATE:2511261201 STAT:DELIVRD ERR:000 TEXT:",
        "0000002A",
        MessageState::Delivered,
    ),
    ("Id:42 Stat:Undeliv", "42", MessageState::Undeliverable),
    ("id:42 stat:DELIVRD", "42", MessageState::Delivered),
    ("stat:EXPIRED id:42", "42", MessageState::Expired),
    (
        "id:42 submit_date:2511261200 done_date:2511261201 stat:REJECTD",
        "42",
        MessageState::Rejected,
    ),
    (
        "id:42\nsub:001\tstat:DELIVRD",
        "42",
        MessageState::Delivered,
    ),
    ("id: 42  stat: DELIVRD", "42", MessageState::Delivered),
    ("   id:42 stat:DELIVRD   ", "42", MessageState::Delivered),
    (
        "id:42 sub:1 dlvrd:1 submit date:2511261200 done date:2511261201 stat:DELIVERED err:0",
        "42",
        MessageState::Delivered,
    ),
    ("id:42 stat:DELIVRD\0", "42", MessageState::Delivered),
    ("id:42\0 stat:UNDELIV\0", "42", MessageState::Undeliverable),
    (
        "id:42 stat:DELIVRD text:id:99 stat:UNDELIV",
        "42",
        MessageState::Delivered,
    ),
    (
        "id:1a2b3c4d-0001 sub:001 dlvrd:001 stat:ACCEPTD err:000",
        "1a2b3c4d-0001",
        MessageState::Accepted,
    ),
    (
        "id:0x2A stat:FAILED err:034",
        "0x2A",
        MessageState::Undeliverable,
    ),
    (
        "dlvrd:000 err:001 stat:undeliv id:42",
        "42",
        MessageState::Undeliverable,
    ),
];

#[test]
fn a_corpus_of_receipt_texts_in_other_orders_cases_and_with_missing_fields_parses() {
    for (text, id, state) in CORPUS {
        let r = parse_text(text);
        assert_eq!(r.message_id.as_deref(), Some(*id), "{text:?}");
        assert_eq!(r.state, Some(*state), "{text:?}");
        let pdu = DeliverSm {
            esm_class: esm_class::SMSC_DELIVERY_RECEIPT,
            short_message: Bytes::copy_from_slice(text.as_bytes()),
            ..DeliverSm::default()
        };
        let r = from_deliver_sm(&pdu).unwrap();
        assert_eq!(r.message_id.as_deref(), Some(*id), "{text:?}");
        assert_eq!(r.state, Some(*state), "{text:?}");
    }
}

#[test]
fn tlvs_give_the_id_and_state_when_the_text_has_none() {
    for text in ["", "sub:001 dlvrd:000 err:001 text:x", "garbage"] {
        let pdu = DeliverSm {
            esm_class: esm_class::SMSC_DELIVERY_RECEIPT,
            short_message: Bytes::copy_from_slice(text.as_bytes()),
            tlvs: vec![
                Tlv::receipted_message_id("0000002a").unwrap(),
                Tlv::message_state(MessageState::Undeliverable.as_u8()),
            ],
            ..DeliverSm::default()
        };
        let r = from_deliver_sm(&pdu).unwrap();
        assert_eq!(r.message_id.as_deref(), Some("0000002a"), "{text:?}");
        assert_eq!(r.state, Some(MessageState::Undeliverable), "{text:?}");
    }
}

/// A number's decimal digits from its hex digits, by decimal long
/// multiplication: an oracle independent of the library's division.
fn hex_to_decimal(hex: &str) -> String {
    let mut digits: Vec<u32> = vec![0]; // little-endian decimal digits
    for c in hex.chars() {
        let mut carry = c.to_digit(16).unwrap();
        for d in digits.iter_mut() {
            let v = *d * 16 + carry;
            *d = v % 10;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push(carry % 10);
            carry /= 10;
        }
    }
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
    }
    digits
        .iter()
        .rev()
        .map(|d| char::from_digit(*d, 10).unwrap())
        .collect()
}

/// One side's cosmetics: zero padding, upper case and `0x` for hex.
#[derive(Debug, Clone, Copy)]
struct Cosmetics {
    zeros: usize,
    upper: bool,
    prefix: bool,
}

fn cosmetics() -> impl Strategy<Value = Cosmetics> {
    (0usize..5, any::<bool>(), any::<bool>()).prop_map(|(zeros, upper, prefix)| Cosmetics {
        zeros,
        upper,
        prefix,
    })
}

fn spell_hex(hex: &str, c: Cosmetics) -> String {
    let mut s = format!("{}{hex}", "0".repeat(c.zeros));
    if c.upper {
        s = s.to_ascii_uppercase();
    }
    if c.prefix {
        s = format!("0x{s}");
    }
    s
}

fn spell_decimal(decimal: &str, c: Cosmetics) -> String {
    format!("{}{decimal}", "0".repeat(c.zeros))
}

/// A route's SMSC: its habit, and for a text habit whether it writes hex
/// or decimal on both sides.
#[derive(Debug, Clone, Copy)]
enum Smsc {
    Text { hex: bool },
    Hex,
    Decimal,
}

impl Smsc {
    fn habit(self) -> Habit {
        match self {
            Smsc::Text { .. } => Habit::Text,
            Smsc::Hex => Habit::Hex,
            Smsc::Decimal => Habit::Decimal,
        }
    }

    /// (submit_sm_resp id, receipt id) for the number with these hex digits.
    fn spell(self, hex: &str, resp: Cosmetics, receipt: Cosmetics) -> (String, String) {
        let decimal = hex_to_decimal(hex);
        match self {
            Smsc::Text { hex: true } => (spell_hex(hex, resp), spell_hex(hex, receipt)),
            Smsc::Text { hex: false } => (
                spell_decimal(&decimal, resp),
                spell_decimal(&decimal, receipt),
            ),
            Smsc::Hex => (spell_decimal(&decimal, resp), spell_hex(hex, receipt)),
            Smsc::Decimal => (spell_hex(hex, resp), spell_decimal(&decimal, receipt)),
        }
    }
}

fn smsc() -> impl Strategy<Value = Smsc> {
    prop_oneof![
        any::<bool>().prop_map(|hex| Smsc::Text { hex }),
        Just(Smsc::Hex),
        Just(Smsc::Decimal),
    ]
}

/// Distinct numbers as hex digits without leading zeros: short ones (where
/// spellings collide most) and ones past 128 bits.
fn numbers() -> impl Strategy<Value = Vec<String>> {
    let number = prop_oneof![
        (0u64..300).prop_map(|n| format!("{n:x}")),
        "[1-9a-f][0-9a-f]{0,7}",
        "[1-9a-f][0-9a-f]{30,40}",
    ];
    prop::collection::btree_set(number, 1..12).prop_map(|s| s.into_iter().collect())
}

/// Messages of one route: (submit_sm_resp id, receipt id) per number.
fn route() -> impl Strategy<Value = (Smsc, Vec<(String, String)>)> {
    (smsc(), numbers()).prop_flat_map(|(smsc, numbers)| {
        let n = numbers.len();
        (
            Just(smsc),
            Just(numbers),
            prop::collection::vec((cosmetics(), cosmetics()), n),
        )
            .prop_map(|(smsc, numbers, looks)| {
                let ids = numbers
                    .iter()
                    .zip(looks)
                    .map(|(hex, (resp, receipt))| smsc.spell(hex, resp, receipt))
                    .collect();
                (smsc, ids)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn within_the_routes_habit_a_receipt_matches_its_own_message_and_no_other(
        (smsc, ids) in route(),
    ) {
        let mut index = MessageIdIndex::with_format(IdFormat::Fixed(smsc.habit()));
        for (i, (resp, _)) in ids.iter().enumerate() {
            index.insert(resp, i);
        }
        for (i, (resp, receipt)) in ids.iter().enumerate() {
            prop_assert_eq!(index.get(receipt), Some(&i), "{:?} {} -> {}", smsc, resp, receipt);
        }
    }

    #[test]
    fn under_auto_a_receipt_never_matches_another_message_and_all_match_once_learned(
        (smsc, ids) in route(),
    ) {
        let mut index = MessageIdIndex::new();
        for (i, (resp, _)) in ids.iter().enumerate() {
            index.insert(resp, i);
        }
        for (i, (resp, receipt)) in ids.iter().enumerate() {
            let got = index.get(receipt).copied();
            prop_assert!(got.is_none() || got == Some(i), "{:?} {} -> {} got {:?}", smsc, resp, receipt, got);
        }
        if let Some(habit) = index.habit() {
            prop_assert_eq!(habit, smsc.habit());
            for (i, (_, receipt)) in ids.iter().enumerate() {
                prop_assert_eq!(index.get(receipt), Some(&i));
            }
        }
    }

    #[test]
    fn under_auto_ids_that_fit_only_one_reading_match_before_anything_is_learned(
        (_smsc, ids) in route(),
    ) {
        let stored: Vec<&str> = ids.iter().map(|(resp, _)| resp.as_str()).collect();
        for (i, (_, receipt)) in ids.iter().enumerate() {
            let r = IdForms::of(receipt);
            let fitting = stored
                .iter()
                .filter(|s| !IdForms::habits_between(&r, &IdForms::of(s)).is_empty())
                .count();
            let d = decide(receipt, &stored, None);
            if fitting == 1 {
                prop_assert_eq!(matched(d), Some(i));
            } else {
                prop_assert_eq!(d, Decision::Ambiguous);
            }
        }
    }

    #[test]
    fn forms_agree_with_an_independent_conversion(hex in "[0-9a-f]{1,50}") {
        let decimal = hex_to_decimal(&hex);
        let trimmed = hex.trim_start_matches('0');
        let canonical = if trimmed.is_empty() { "0" } else { trimmed };
        prop_assert_eq!(IdForms::of(&hex).hex_as_decimal, Some(decimal.clone()));
        prop_assert_eq!(IdForms::of(&decimal).decimal_as_hex, Some(canonical.to_owned()));
    }
}
