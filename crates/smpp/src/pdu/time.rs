//! SMPP times (section 7.1.1): schedule_delivery_time and validity_period.

use std::time::Duration;

/// The longest span [`relative_time`] writes: 99 days, 23:59:59.
pub const MAX_RELATIVE: Duration = Duration::from_secs(99 * 86_400 + 86_399);

/// `after` as an SMPP relative time, `YYMMDDhhmmss000R` (section 7.1.1.2):
/// years and months stay zero (their length in days is the SMSC's to
/// choose), so the span is written in days, hours, minutes and seconds.
/// Part of a second counts as a whole one; spans beyond [`MAX_RELATIVE`]
/// are written as it. A relative time needs no clock agreement with the SMSC.
///
/// ```
/// use std::time::Duration;
/// use smpp::pdu::relative_time;
///
/// assert_eq!(relative_time(Duration::from_secs(600)), "000000001000000R");
/// assert_eq!(relative_time(Duration::from_secs(90_061)), "000001010101000R");
/// ```
pub fn relative_time(after: Duration) -> String {
    let whole = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    let secs = whole.min(MAX_RELATIVE.as_secs());
    format!(
        "0000{:02}{:02}{:02}{:02}000R",
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}
