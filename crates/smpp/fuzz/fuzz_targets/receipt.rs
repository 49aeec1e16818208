//! Arbitrary text through the receipt parser and arbitrary ids through the
//! matcher: no panics, and matching is symmetric.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smpp::receipt::{MessageIdIndex, ids_match, parse_text};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let receipt = parse_text(&text);
    if let Some(id) = receipt.message_id.as_deref() {
        assert!(ids_match(id, id));
        let mut index = MessageIdIndex::new();
        index.insert(id, ());
        // Ids past 64 characters match nothing, on purpose.
        assert_eq!(
            index.get(id).is_some(),
            id.chars().count() <= smpp::receipt::ids::MAX_ID_LEN
        );
    }
    let middle = (text.len() / 2..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    let (a, b) = text.split_at(middle);
    assert_eq!(ids_match(a, b), ids_match(b, a));
});
