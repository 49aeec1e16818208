//! Properties of the receipt parser and the id matcher, over generated input:
//! hostile text and bytes never panic, a receipt rendered from any valid fields
//! reads back as those fields (as text and through a deliver_sm in either
//! coding), and every spelling of a numeric id finds its message.

use bytes::Bytes;
use proptest::prelude::*;
use smpp::pdu::{DeliverSm, Tlv, data_coding, esm_class};
use smpp::receipt::{
    MessageIdIndex, MessageState, Receipt, ReceiptTime, from_deliver_sm, ids_match, parse_text,
};

const STATES: [MessageState; 8] = [
    MessageState::Enroute,
    MessageState::Delivered,
    MessageState::Expired,
    MessageState::Deleted,
    MessageState::Undeliverable,
    MessageState::Accepted,
    MessageState::Unknown,
    MessageState::Rejected,
];

/// Text that looks like receipts, cut up and glued together: key words with
/// and without colons, the separators the key matcher treats specially,
/// digits, multi-byte characters.
fn receipt_like_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("id:".to_owned()),
        Just("ID".to_owned()),
        Just("sub:".to_owned()),
        Just("dlvrd:".to_owned()),
        Just("submit date:".to_owned()),
        Just("submit__ _date :".to_owned()),
        Just("done_date:".to_owned()),
        Just("donedate".to_owned()),
        Just("stat:".to_owned()),
        Just("err:".to_owned()),
        Just("text:".to_owned()),
        Just(":".to_owned()),
        Just(" ".to_owned()),
        Just("_".to_owned()),
        Just("\t".to_owned()),
        "[0-9]{0,14}",
        "[a-zA-Z]{1,8}",
        "[ऀ-ॿ🙂\u{a0}\u{2028}]{1,3}",
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

/// Generated fields of a receipt in the spec's text form, each optional.
#[derive(Debug, Clone)]
struct Fields {
    id: Option<String>,
    submitted: Option<u32>,
    delivered: Option<u32>,
    submit_date: Option<(ReceiptTime, bool)>,
    done_date: Option<(ReceiptTime, bool)>,
    stat: Option<String>,
    error: Option<String>,
    text: Option<String>,
    /// The order the fields before `text:` are written in.
    order: Vec<usize>,
}

fn receipt_time() -> impl Strategy<Value = (ReceiptTime, bool)> {
    (
        0u16..100,
        1u8..=12,
        1u8..=31,
        0u8..24,
        0u8..60,
        prop::option::of(0u8..60),
    )
        .prop_map(|(yy, month, day, hour, minute, second)| {
            let time = ReceiptTime {
                year: 2000 + yy,
                month,
                day,
                hour,
                minute,
                second: second.unwrap_or(0),
            };
            (time, second.is_some())
        })
}

/// `text` drawn from `chars`; a leading space would be taken as the separator
/// after `text:` (SMSCs write both `text:x` and `text: x`), so none is made.
fn fields(text: impl Strategy<Value = String>) -> impl Strategy<Value = Fields> {
    let stat = prop_oneof![
        prop::sample::select(STATES.to_vec()).prop_map(|s| s.as_stat().to_owned()),
        prop::sample::select(STATES.to_vec()).prop_map(|s| s.as_stat().to_ascii_lowercase()),
        "[A-Za-z]{1,13}",
    ];
    (
        (
            prop::option::of("[!-~]{1,64}"),
            prop::option::of(any::<u32>()),
            prop::option::of(any::<u32>()),
            prop::option::of(receipt_time()),
            prop::option::of(receipt_time()),
        ),
        (
            prop::option::of(stat),
            prop::option::of("[!-~]{1,10}"),
            prop::option::of(text.prop_filter("no leading space", |t| !t.starts_with(' '))),
            Just((0..7).collect::<Vec<usize>>()).prop_shuffle(),
        ),
    )
        .prop_map(
            |((id, submitted, delivered, submit_date, done_date), (stat, error, text, order))| {
                Fields {
                    id,
                    submitted,
                    delivered,
                    submit_date,
                    done_date,
                    stat,
                    error,
                    text,
                    order,
                }
            },
        )
}

fn date(time: &ReceiptTime, seconds: bool) -> String {
    let mut s = format!(
        "{:02}{:02}{:02}{:02}{:02}",
        time.year - 2000,
        time.month,
        time.day,
        time.hour,
        time.minute
    );
    if seconds {
        s.push_str(&format!("{:02}", time.second));
    }
    s
}

/// The fields in the text form, one space between them, `text:` last.
fn render(f: &Fields) -> String {
    let mut parts = Vec::new();
    for &field in &f.order {
        let part = match field {
            0 => f.id.as_ref().map(|v| format!("id:{v}")),
            1 => f.submitted.map(|v| format!("sub:{v:03}")),
            2 => f.delivered.map(|v| format!("dlvrd:{v:03}")),
            3 => f
                .submit_date
                .map(|(t, s)| format!("submit date:{}", date(&t, s))),
            4 => f
                .done_date
                .map(|(t, s)| format!("done date:{}", date(&t, s))),
            5 => f.stat.as_ref().map(|v| format!("stat:{v}")),
            _ => f.error.as_ref().map(|v| format!("err:{v}")),
        };
        parts.extend(part);
    }
    parts.extend(f.text.as_ref().map(|t| format!("text:{t}")));
    parts.join(" ")
}

fn expected(f: &Fields) -> Receipt {
    Receipt {
        message_id: f.id.clone(),
        state: f.stat.as_deref().and_then(MessageState::from_stat),
        stat: f.stat.clone(),
        error: f.error.clone(),
        submitted: f.submitted,
        delivered: f.delivered,
        submit_date: f.submit_date.map(|(t, _)| t),
        done_date: f.done_date.map(|(t, _)| t),
        text: f.text.clone(),
        network_error: None,
    }
}

fn deliver_sm(coding: u8, short_message: Vec<u8>, tlvs: Vec<Tlv>) -> DeliverSm {
    DeliverSm {
        esm_class: esm_class::SMSC_DELIVERY_RECEIPT,
        data_coding: coding,
        short_message: Bytes::from(short_message),
        tlvs,
        ..DeliverSm::default()
    }
}

fn ucs2(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// Every way a receipt may spell the number `n` when the submit_sm_resp
/// spelled it `hex` or `decimal`.
fn spellings(n: u64) -> impl Strategy<Value = (String, String)> {
    (0usize..4, 0usize..4, any::<bool>(), any::<bool>()).prop_map(
        move |(hex_zeros, dec_zeros, upper, prefix)| {
            let mut hex = format!("{}{n:x}", "0".repeat(hex_zeros));
            if upper {
                hex = hex.to_ascii_uppercase();
            }
            if prefix {
                hex = format!("0x{hex}");
            }
            (hex, format!(" {}{n} ", "0".repeat(dec_zeros)))
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsing_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = parse_text(&text);
    }

    #[test]
    fn parsing_receipt_like_text_never_panics_and_keeps_ids_trimmed(text in receipt_like_text()) {
        let receipt = parse_text(&text);
        if let Some(id) = &receipt.message_id {
            prop_assert!(!id.is_empty());
            prop_assert_eq!(id.trim(), id.as_str());
        }
        if let (Some(stat), Some(state)) = (&receipt.stat, receipt.state) {
            prop_assert_eq!(MessageState::from_stat(stat), Some(state));
        }
    }

    #[test]
    fn a_deliver_sm_of_arbitrary_bytes_never_panics(
        coding in prop_oneof![Just(data_coding::UCS2), Just(data_coding::SMSC_DEFAULT), any::<u8>()],
        short_message in prop::collection::vec(any::<u8>(), 0..300),
        payload in prop::option::of(prop::collection::vec(any::<u8>(), 0..600)),
        id in prop::option::of(prop::collection::vec(any::<u8>(), 0..70)),
        state in prop::option::of(prop::collection::vec(any::<u8>(), 0..3)),
        network in prop::option::of(prop::collection::vec(any::<u8>(), 0..5)),
    ) {
        let tlvs: Vec<Tlv> = [
            payload.map(Tlv::message_payload),
            id.map(|v| Tlv::new(smpp::pdu::tlv::tag::RECEIPTED_MESSAGE_ID, v)),
            state.map(|v| Tlv::new(smpp::pdu::tlv::tag::MESSAGE_STATE, v)),
            network.map(|v| Tlv::new(smpp::pdu::tlv::tag::NETWORK_ERROR_CODE, v)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Ok(receipt) = from_deliver_sm(&deliver_sm(coding, short_message, tlvs)) {
            prop_assert!(receipt.message_id.is_some_and(|id| !id.trim().is_empty()));
            prop_assert!(receipt.state.is_some());
        }
    }

    #[test]
    fn a_rendered_receipt_parses_back_to_its_fields(f in fields(any::<String>())) {
        prop_assert_eq!(parse_text(&render(&f)), expected(&f));
    }

    #[test]
    fn a_rendered_receipt_reads_back_from_a_latin1_deliver_sm(f in fields("[\u{0}-\u{ff}]{0,40}")) {
        let bytes: Vec<u8> = render(&f)
            .chars()
            .map(|c| u8::try_from(u32::from(c)).expect("rendered Latin-1"))
            .collect();
        let pdu = deliver_sm(data_coding::SMSC_DEFAULT, bytes, Vec::new());
        let want = expected(&f);
        match from_deliver_sm(&pdu) {
            Ok(receipt) => prop_assert_eq!(receipt, want),
            Err(_) => prop_assert!(want.message_id.is_none() || want.state.is_none()),
        }
    }

    #[test]
    fn a_rendered_receipt_reads_back_from_a_ucs2_deliver_sm(f in fields(any::<String>())) {
        let pdu = deliver_sm(data_coding::UCS2, ucs2(&render(&f)), Vec::new());
        let want = expected(&f);
        match from_deliver_sm(&pdu) {
            Ok(receipt) => prop_assert_eq!(receipt, want),
            Err(_) => prop_assert!(want.message_id.is_none() || want.state.is_none()),
        }
    }

    #[test]
    fn tlvs_override_the_rendered_text(
        f in fields("[ -~]{0,20}"),
        id in "[0-9a-zA-Z]{1,64}",
        state in prop::sample::select(STATES.to_vec()),
    ) {
        let tlvs = vec![
            Tlv::receipted_message_id(&id).unwrap(),
            Tlv::message_state(state.as_u8()),
        ];
        let pdu = deliver_sm(data_coding::SMSC_DEFAULT, render(&f).into_bytes(), tlvs);
        let receipt = from_deliver_sm(&pdu).unwrap();
        let want = Receipt { message_id: Some(id), state: Some(state), ..expected(&f) };
        prop_assert_eq!(receipt, want);
    }

    #[test]
    fn hex_and_decimal_spellings_of_a_number_match(
        (n, (hex, decimal)) in any::<u64>().prop_flat_map(|n| (Just(n), spellings(n))),
    ) {
        prop_assert!(ids_match(&hex, &decimal));
        prop_assert!(ids_match(&decimal, &hex));
        let plain_hex = format!("{n:x}");
        prop_assert!(ids_match(&hex, &plain_hex));
        prop_assert!(ids_match(&decimal, &n.to_string()));
    }

    #[test]
    fn the_index_finds_a_message_by_the_other_spelling_of_its_id(
        (hex, decimal) in any::<u64>().prop_flat_map(spellings),
        hex_stored in any::<bool>(),
    ) {
        let (stored, looked_up) = if hex_stored { (&hex, &decimal) } else { (&decimal, &hex) };
        let mut index = MessageIdIndex::new();
        index.insert(stored, "the message");
        prop_assert_eq!(index.get(looked_up), Some(&"the message"));
        prop_assert_eq!(index.remove(looked_up), Some("the message"));
        prop_assert!(index.is_empty());
    }

    #[test]
    fn ids_that_are_neither_hex_nor_decimal_match_only_when_equal_up_to_case_and_zeros(
        a in "0{0,2}[a-z0-9]{0,6}[g-z-][a-z0-9]{0,6}",
        b in "0{0,2}[a-z0-9]{0,6}[g-z-][a-z0-9]{0,6}",
    ) {
        let normal = |s: &str| s.trim_start_matches('0').to_owned();
        prop_assert_eq!(ids_match(&a, &b), normal(&a) == normal(&b));
        prop_assert!(ids_match(&a, &a.to_ascii_uppercase()));
    }
}
