//! Arbitrary text through the phone number parser: it must never panic, and
//! whatever it accepts is an E.164 number that parses again to itself, from
//! its E.164 form and from the form replies show.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otp_domain::phone::{MAX_INPUT_CHARS, PhoneError, PhoneNumber};

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    match PhoneNumber::parse(&input) {
        Ok(number) => {
            let e164 = number.e164();
            assert!(e164.starts_with('+'), "{e164}");
            assert!(e164[1..].bytes().all(|b| b.is_ascii_digit()), "{e164}");
            // libphonenumber's longest national number is 17 digits (E.164's
            // 15 is exceeded by some German ranges), after a code of up to 3.
            assert!((3..=21).contains(&e164.len()), "{e164}");
            assert!(e164[1..].starts_with(&number.country_code().to_string()));
            assert_eq!(PhoneNumber::parse(e164).as_ref(), Ok(&number));
            assert_eq!(PhoneNumber::parse(number.display()).as_ref(), Ok(&number));
        }
        Err(PhoneError::TooLong { max }) => {
            assert_eq!(max, MAX_INPUT_CHARS);
            assert!(input.chars().count() > MAX_INPUT_CHARS);
        }
        Err(_) => assert!(input.chars().count() <= MAX_INPUT_CHARS),
    }
});
