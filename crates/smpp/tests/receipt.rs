//! Delivery receipt parsing (text and TLV forms) and hex/decimal id matching.

use bytes::Bytes;
use smpp::pdu::{DeliverSm, NetworkErrorCode, Tlv, esm_class};
use smpp::receipt::ids::Habit;
use smpp::receipt::{
    IdFormat, MessageIdIndex, MessageState, ReceiptError, ReceiptTime, from_deliver_sm, ids_match,
    parse_text,
};

#[test]
fn the_spec_text_form_parses_field_by_field() {
    let r = parse_text(
        "id:1234567890 sub:001 dlvrd:001 submit date:2511261200 done date:2511261201 stat:DELIVRD err:000 text:Your code is 123456",
    );
    assert_eq!(r.message_id.as_deref(), Some("1234567890"));
    assert_eq!(r.submitted, Some(1));
    assert_eq!(r.delivered, Some(1));
    assert_eq!(
        r.submit_date,
        Some(ReceiptTime {
            year: 2025,
            month: 11,
            day: 26,
            hour: 12,
            minute: 0,
            second: 0
        })
    );
    assert_eq!(r.done_date.unwrap().minute, 1);
    assert_eq!(r.state, Some(MessageState::Delivered));
    assert_eq!(r.stat.as_deref(), Some("DELIVRD"));
    assert_eq!(r.error.as_deref(), Some("000"));
    assert_eq!(r.error_code(), Some(0));
    assert_eq!(r.text.as_deref(), Some("Your code is 123456"));
}

#[test]
fn lower_case_extra_spaces_and_seconds_are_tolerated() {
    let r = parse_text(
        "ID:  a1b2c3   SUB:1 DLVRD:0  Submit  Date:251126120005 Done_Date:251126120107  Stat:undeliv  Err:034 Text:",
    );
    assert_eq!(r.message_id.as_deref(), Some("a1b2c3"));
    assert_eq!(r.delivered, Some(0));
    assert_eq!(r.submit_date.unwrap().second, 5);
    assert_eq!(r.done_date.unwrap().second, 7);
    assert_eq!(r.state, Some(MessageState::Undeliverable));
    assert_eq!(r.error_code(), Some(34));
    assert_eq!(r.text.as_deref(), Some(""));
}

#[test]
fn missing_fields_stay_empty() {
    let r = parse_text("id:77 stat:EXPIRED");
    assert_eq!(r.message_id.as_deref(), Some("77"));
    assert_eq!(r.state, Some(MessageState::Expired));
    assert_eq!(r.submitted, None);
    assert_eq!(r.submit_date, None);
    assert_eq!(r.error, None);
    assert_eq!(r.text, None);
}

#[test]
fn text_may_contain_words_that_look_like_keys() {
    let r = parse_text(
        "id:9 sub:001 dlvrd:000 submit date:2511261200 done date:2511261201 stat:REJECTD err:0x0B text:id:1 stat:DELIVRD",
    );
    assert_eq!(r.message_id.as_deref(), Some("9"));
    assert_eq!(r.state, Some(MessageState::Rejected));
    assert_eq!(r.text.as_deref(), Some("id:1 stat:DELIVRD"));
    assert_eq!(r.error.as_deref(), Some("0x0B"));
    assert_eq!(r.error_code(), None);
}

#[test]
fn spelled_out_and_unknown_states() {
    for (word, state) in [
        ("DELIVERED", Some(MessageState::Delivered)),
        ("failed", Some(MessageState::Undeliverable)),
        ("ACCEPTD", Some(MessageState::Accepted)),
        ("unknown", Some(MessageState::Unknown)),
        ("DELETED", Some(MessageState::Deleted)),
        ("ENROUTE", Some(MessageState::Enroute)),
        ("SOMETHING", None),
    ] {
        assert_eq!(MessageState::from_stat(word), state, "{word}");
    }
    let r = parse_text("id:1 stat:WEIRD");
    assert_eq!(r.state, None);
    assert_eq!(r.stat.as_deref(), Some("WEIRD"));
    for n in 1..=8 {
        assert_eq!(MessageState::from_u8(n).unwrap().as_u8(), n);
    }
    assert_eq!(MessageState::from_u8(9), None);
}

#[test]
fn invalid_dates_are_dropped_not_fatal() {
    let r = parse_text("id:1 submit date:2513261200 done date:abc stat:DELIVRD");
    assert_eq!(r.submit_date, None);
    assert_eq!(r.done_date, None);
    assert_eq!(r.state, Some(MessageState::Delivered));
}

fn receipt_pdu(text: &str, tlvs: Vec<Tlv>) -> DeliverSm {
    DeliverSm {
        esm_class: esm_class::SMSC_DELIVERY_RECEIPT,
        short_message: Bytes::copy_from_slice(text.as_bytes()),
        tlvs,
        ..DeliverSm::default()
    }
}

#[test]
fn tlv_only_receipts_parse() {
    let pdu = receipt_pdu(
        "",
        vec![
            Tlv::receipted_message_id("1a2b").unwrap(),
            Tlv::message_state(MessageState::Undeliverable.as_u8()),
            Tlv::network_error_code(NetworkErrorCode {
                network_type: 3,
                error_code: 1,
            }),
        ],
    );
    let r = from_deliver_sm(&pdu).unwrap();
    assert_eq!(r.message_id.as_deref(), Some("1a2b"));
    assert_eq!(r.state, Some(MessageState::Undeliverable));
    assert_eq!(
        r.network_error,
        Some(NetworkErrorCode {
            network_type: 3,
            error_code: 1
        })
    );
}

#[test]
fn tlvs_win_over_the_text() {
    let pdu = receipt_pdu(
        "id:6699 sub:001 dlvrd:001 submit date:2511261200 done date:2511261201 stat:DELIVRD err:000 text:x",
        vec![
            Tlv::receipted_message_id("1a2b").unwrap(),
            Tlv::message_state(2),
        ],
    );
    let r = from_deliver_sm(&pdu).unwrap();
    assert_eq!(r.message_id.as_deref(), Some("1a2b"));
    assert_eq!(r.state, Some(MessageState::Delivered));
    assert!(ids_match("6699", r.message_id.as_deref().unwrap()));
    assert_eq!(r.done_date.unwrap().minute, 1);
}

#[test]
fn receipts_without_id_or_state_are_named_errors() {
    assert_eq!(
        from_deliver_sm(&receipt_pdu("stat:DELIVRD", vec![])),
        Err(ReceiptError::MissingId)
    );
    assert_eq!(
        from_deliver_sm(&receipt_pdu("id:5 stat:", vec![])),
        Err(ReceiptError::MissingState)
    );
}

#[test]
fn a_receipt_in_message_payload_parses() {
    let pdu = receipt_pdu(
        "",
        vec![Tlv::message_payload(&b"id:42 stat:DELIVRD err:000"[..])],
    );
    assert_eq!(
        from_deliver_sm(&pdu).unwrap().message_id.as_deref(),
        Some("42")
    );
}

#[test]
fn hex_and_decimal_spellings_of_one_id_match() {
    assert!(ids_match("1a2b", "6699"));
    assert!(ids_match("6699", "1A2B"));
    assert!(ids_match("0x1a2b", "6699"));
    assert!(ids_match("00001234", "1234"));
    assert!(ids_match(" abc ", "ABC"));
    assert!(!ids_match("1a2b", "6698"));
    assert!(!ids_match("msg-1", "msg-2"));
    // Large ids as SMSCs emit them: 16 hex digits against 20 decimal ones.
    assert!(ids_match("ffffffffffffffff", "18446744073709551615"));
}

#[test]
fn a_0x_prefix_is_one_more_spelling_of_a_hex_id() {
    assert!(ids_match("0xa", "a"));
    assert!(ids_match("0X001A2B", "1a2b"));
    assert!(!ids_match("0xg", "g"));
    let mut index = MessageIdIndex::new();
    index.insert("0x1a2b", "prefixed");
    assert_eq!(index.get("1A2B"), Some(&"prefixed"));
    assert_eq!(index.get("6699"), Some(&"prefixed"));
}

#[test]
fn the_index_finds_a_message_whichever_way_the_receipt_spells_its_id() {
    let mut index = MessageIdIndex::new();
    index.insert("1a2b", "first");
    index.insert("268435461", "second"); // 0x10000005
    index.insert("abc-xyz", "third");
    assert_eq!(index.get("6699"), Some(&"first"));
    assert_eq!(index.get("1A2B"), Some(&"first"));
    assert_eq!(index.get("10000005"), Some(&"second"));
    assert_eq!(index.get("ABC-XYZ"), Some(&"third"));
    assert_eq!(index.get("6698"), None);
    assert_eq!(index.remove("6699"), Some("first"));
    assert_eq!(index.get("1a2b"), None);
    assert_eq!(index.len(), 2);
}

#[test]
fn the_index_prefers_an_exact_match_only_once_the_habit_is_text() {
    let mut index = MessageIdIndex::with_format(IdFormat::Fixed(Habit::Text));
    index.insert("16", "decimal sixteen");
    index.insert("10", "decimal ten");
    assert_eq!(index.get("10"), Some(&"decimal ten"));
    // Under `auto`, before a habit is learned, "10" fits "10" as text and
    // "16" as hex read in decimal: ambiguous, so neither is matched.
    let mut auto = MessageIdIndex::new();
    auto.insert("16", "decimal sixteen");
    auto.insert("10", "decimal ten");
    assert_eq!(auto.get("10"), None);
    assert_eq!(auto.remove("16"), None);
    assert_eq!(auto.len(), 2);
}

#[test]
fn the_message_excerpt_is_cut_from_a_receipt_kept_for_operators() {
    use smpp::receipt::without_message_excerpt;
    assert_eq!(
        without_message_excerpt(
            "id:42 sub:001 dlvrd:001 stat:DELIVRD err:000 text:4821 is your code"
        ),
        "id:42 sub:001 dlvrd:001 stat:DELIVRD err:000 text:[removed]"
    );
    assert_eq!(
        without_message_excerpt("ID:7 STAT:UNDELIV Text:Your code 1234"),
        "ID:7 STAT:UNDELIV text:[removed]"
    );
    // A field whose name only ends in "text" is not the excerpt.
    assert_eq!(
        without_message_excerpt("id:9 subtext:x stat:DELIVRD"),
        "id:9 subtext:x stat:DELIVRD"
    );
    assert_eq!(
        without_message_excerpt("id:9 stat:DELIVRD"),
        "id:9 stat:DELIVRD"
    );
}
