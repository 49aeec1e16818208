//! Arbitrary bodies through the send endpoint's decoding and validation
//! (`otpgate::api::check_send_body`, what the handler runs before it touches
//! the store), as JSON, as a form and under other content types: it must never
//! panic, a refusal is always a client error (400, 413 or 415), and an
//! accepted body renders a message that holds a code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpgate::api::check_send_body;
use otpgate::config::LimitsConfig;

/// The first input byte picks the content type, the rest is the body.
const CONTENT_TYPES: [&str; 6] = [
    "application/json",
    "application/x-www-form-urlencoded",
    "application/json; charset=utf-8",
    "application/problem+json",
    "text/plain",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    // Every region, so that the number check runs for any country too.
    let limits = [
        LimitsConfig::default(),
        LimitsConfig {
            allowed_countries: Vec::new(),
            ..LimitsConfig::default()
        },
    ];
    for limits in &limits {
        match check_send_body(content_type, body, limits) {
            Ok(message) => assert!(!message.is_empty()),
            Err(e) => assert!(
                [400, 413, 415].contains(&e.status().as_u16()),
                "{content_type:?}: {}",
                e.status()
            ),
        }
    }
});
