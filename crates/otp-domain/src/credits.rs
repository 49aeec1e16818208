//! What a send costs: the credit rules, apart from where balances are kept.

use crate::channel::Channel;
use crate::segments::SegmentCount;

/// Credits a send uses. Accounts hold SMS credits and phone credits apart.
///
/// `i64` to match the store's balance columns, so a cost can be subtracted
/// from a balance without conversions.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cost {
    /// SMS credits: one per SMS part sent.
    pub sms: i64,
    /// Phone credits: one per call.
    pub phone: i64,
}

/// The cost of sending `rendered` (the analysed rendered message) over `channel`.
///
/// A text costs one SMS credit per part, as the SMSC bills each part. A call
/// costs one phone credit whatever the message, since the call reads out the
/// code and not the text.
pub fn cost(channel: Channel, rendered: &SegmentCount) -> Cost {
    match channel {
        Channel::Text => Cost {
            sms: i64::from(rendered.segments),
            phone: 0,
        },
        Channel::Voice => Cost { sms: 0, phone: 1 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::analyze;

    #[test]
    fn a_text_costs_one_sms_credit_per_part() {
        assert_eq!(
            cost(Channel::Text, &analyze("हेल्लो नमस्ते")),
            Cost { sms: 1, phone: 0 }
        );
        assert_eq!(
            cost(Channel::Text, &analyze(&"a".repeat(307))),
            Cost { sms: 3, phone: 0 }
        );
    }

    #[test]
    fn a_call_costs_one_phone_credit_however_long_the_message() {
        assert_eq!(
            cost(Channel::Voice, &analyze(&"न".repeat(500))),
            Cost { sms: 0, phone: 1 }
        );
    }
}
