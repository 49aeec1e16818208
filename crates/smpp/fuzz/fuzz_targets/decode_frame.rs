//! Arbitrary bytes through the framer: it must never panic, never consume
//! bytes on `Ok(None)`, and whatever decodes must re-encode to a frame that
//! decodes to the same PDU.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use smpp::pdu::decode_frame;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decode_frame(&mut buf) {
            Ok(Some(pdu)) => {
                let bytes = pdu.to_bytes().expect("a decoded PDU re-encodes");
                let mut again = BytesMut::from(&bytes[..]);
                let decoded = decode_frame(&mut again).expect("re-encoded PDU decodes");
                assert_eq!(decoded.as_ref(), Some(&pdu));
                assert!(again.is_empty());
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                break;
            }
            Err(smpp::pdu::FrameError::InvalidPdu { .. }) => assert!(buf.len() < before),
            Err(_) => break,
        }
    }
});
