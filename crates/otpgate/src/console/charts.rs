//! The overview's conversion section, drawn from the store's per-minute
//! aggregates ([`otp_store::conversions`]), never from OTP rows: sends per
//! minute over the last 24 hours by channel (a server-drawn SVG line chart),
//! and per channel the delivery rate with the median time from acceptance
//! to delivery, the verification rate with the median time to verify.

use std::fmt::Write;

use otp_domain::channel::Channel;
use otp_store::conversions::{Dimension, MinuteSends, StatsGroup};

use super::pages::esc;
use crate::api::stats::StatsItem;

/// Minutes the chart covers.
pub(super) const CHART_MINUTES: i64 = 24 * 60;

const WIDTH: i64 = CHART_MINUTES;
const HEIGHT: i64 = 200;

/// What the section shows.
pub(super) struct Conversions {
    /// Sends per minute and channel in the chart's window.
    pub minutes: Vec<MinuteSends>,
    /// The chart's last minute (minutes since the epoch, exclusive end).
    pub end_minute: i64,
    /// The last day's aggregates by channel.
    pub by_channel: Vec<StatsGroup>,
}

fn per_minute(c: &Conversions, channel: Channel) -> Vec<i64> {
    let start = c.end_minute - CHART_MINUTES;
    let mut values = vec![0i64; CHART_MINUTES as usize];
    for m in c.minutes.iter().filter(|m| m.channel == channel) {
        if let Some(slot) = usize::try_from(m.minute - start)
            .ok()
            .and_then(|i| values.get_mut(i))
        {
            *slot += m.sent;
        }
    }
    values
}

/// The line chart: one polyline per channel, scaled to the busiest minute.
fn sends_chart(c: &Conversions) -> String {
    let text = per_minute(c, Channel::Text);
    let voice = per_minute(c, Channel::Voice);
    let peak = text.iter().chain(&voice).copied().max().unwrap_or(0);
    let scale = peak.max(1);
    let total = |v: &[i64]| v.iter().sum::<i64>();
    let mut svg = format!(
        "<svg class=\"chart sends\" viewBox=\"0 0 {WIDTH} {h}\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-labelledby=\"sends-title sends-desc\">\
         <title id=\"sends-title\">Sends per minute, last 24 hours</title>\
         <desc id=\"sends-desc\">{t} text and {v} voice sends in the last 24 hours; \
         the busiest minute had {peak}.</desc>\
         <line class=\"axis\" x1=\"0\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\"></line>",
        h = HEIGHT + 2,
        t = total(&text),
        v = total(&voice),
    );
    for (class, values) in [("line-text", &text), ("line-voice", &voice)] {
        let mut points = String::with_capacity(values.len() * 9);
        for (x, v) in values.iter().enumerate() {
            let y = HEIGHT - HEIGHT * v / scale;
            let _ = write!(points, "{x},{y} ");
        }
        let _ = write!(
            svg,
            "<polyline class=\"{class}\" points=\"{}\"></polyline>",
            points.trim_end()
        );
    }
    svg.push_str("</svg>");
    format!(
        "{svg}<p class=\"legend\"><span class=\"key key-text\">text</span> \
         <span class=\"key key-voice\">voice</span> · 24 hours ago to now; \
         top of the chart: {peak} per minute</p>"
    )
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn duration(ms: Option<i64>) -> String {
    match ms {
        None => "–".to_owned(),
        Some(ms) if ms < 10_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) if ms < 120_000 => format!("{} s", ms / 1000),
        Some(ms) => format!("{:.1} min", ms as f64 / 60_000.0),
    }
}

/// A bar per channel for a rate (0 to 100%).
fn rate_bars(title: &str, id: &str, rows: &[(String, Option<f64>)]) -> String {
    let height = 28 * rows.len().max(1) as i64 + 8;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 320 {height}\" role=\"img\" aria-labelledby=\"{id}\">\
         <title id=\"{id}\">{title}</title>",
        title = esc(title),
    );
    for (i, (label, rate)) in rows.iter().enumerate() {
        let y = 8 + 28 * i as i64;
        let width = (150.0 * rate.unwrap_or(0.0).clamp(0.0, 1.0))
            .round()
            .max(1.0) as i64;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{ty}\" class=\"chart-label\">{label}</text>\
             <rect x=\"110\" y=\"{y}\" width=\"{width}\" height=\"18\" class=\"bar bar-{i}\"></rect>\
             <text x=\"{tx}\" y=\"{ty}\" class=\"chart-value\">{value}</text>",
            ty = y + 14,
            tx = 110 + width + 4,
            label = esc(label),
            value = percent(*rate),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The section's HTML.
pub(super) fn section(c: &Conversions) -> String {
    let items: Vec<StatsItem> = c
        .by_channel
        .iter()
        .map(|g| StatsItem::of(g, Dimension::Channel))
        .collect();
    let mut table = String::from(
        "<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Last 24 hours by channel\"><table><caption>Last 24 hours by channel</caption><thead><tr>\
         <th scope=\"col\">Channel</th><th scope=\"col\">Sent</th><th scope=\"col\">Delivered</th>\
         <th scope=\"col\">Delivery rate</th><th scope=\"col\">Median to delivery</th>\
         <th scope=\"col\">Verified</th><th scope=\"col\">Verification rate</th>\
         <th scope=\"col\">Median to verify</th></tr></thead><tbody>",
    );
    for i in &items {
        let _ = write!(
            table,
            "<tr><th scope=\"row\">{channel}</th><td>{sent}</td><td>{delivered}</td><td>{dr}</td>\
             <td>{dm}</td><td>{verified}</td><td>{vr}</td><td>{vm}</td></tr>",
            channel = esc(i.key.as_deref().unwrap_or("")),
            sent = i.sent,
            delivered = i.delivered,
            dr = percent(i.delivery_rate),
            dm = duration(i.median_delivery_ms),
            verified = i.verified,
            vr = percent(i.verification_rate),
            vm = duration(i.median_verify_ms),
        );
    }
    if items.is_empty() {
        table.push_str("<tr><td colspan=\"8\">Nothing was sent in the last 24 hours.</td></tr>");
    }
    table.push_str("</tbody></table></div>");
    let rows = |f: fn(&StatsItem) -> Option<f64>| -> Vec<(String, Option<f64>)> {
        items
            .iter()
            .map(|i| (i.key.clone().unwrap_or_default(), f(i)))
            .collect()
    };
    format!(
        "<section class=\"card\" aria-labelledby=\"sends-h\"><h2 id=\"sends-h\">Sends per minute</h2>{chart}</section>\
         <section class=\"card\" aria-labelledby=\"conversion-h\"><h2 id=\"conversion-h\">Delivery and verification</h2>\
         <p class=\"muted\">Delivery rate: delivered of those a carrier took. Verification rate: \
         verified of those sent. Medians from the time the send was accepted.</p>\
         {table}{delivery}{verification}</section>",
        chart = sends_chart(c),
        delivery = rate_bars(
            "Delivery rate by channel",
            "delivery-rate",
            &rows(|i| i.delivery_rate)
        ),
        verification = rate_bars(
            "Verification rate by channel",
            "verification-rate",
            &rows(|i| i.verification_rate)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_minute_lands_on_its_point_and_the_peak_tops_the_chart() {
        let c = Conversions {
            minutes: vec![
                MinuteSends {
                    minute: 1_000 - 1,
                    channel: Channel::Text,
                    sent: 4,
                },
                MinuteSends {
                    minute: 1_000 - CHART_MINUTES,
                    channel: Channel::Voice,
                    sent: 2,
                },
                MinuteSends {
                    minute: 1_000,
                    channel: Channel::Text,
                    sent: 9,
                },
            ],
            end_minute: 1_000,
            by_channel: Vec::new(),
        };
        let text = per_minute(&c, Channel::Text);
        assert_eq!(
            (text[CHART_MINUTES as usize - 1], text.iter().sum::<i64>()),
            (4, 4),
            "a minute past the end is left out"
        );
        assert_eq!(per_minute(&c, Channel::Voice)[0], 2);
        let html = section(&c);
        assert!(html.contains("4 text and 2 voice sends"), "{html}");
        assert!(
            html.contains(&format!("{},0", CHART_MINUTES - 1)),
            "the peak is at the top"
        );
        assert!(html.contains("Nothing was sent"));
    }
}
