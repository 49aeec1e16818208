//! How stored times are written in replies and webhook events.

use otp_store::Micros;

/// Formats a stored time in the configured zone.
pub fn rfc3339(micros: Micros, tz: &chrono_tz::Tz) -> String {
    let utc = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    utc.with_timezone(tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}
