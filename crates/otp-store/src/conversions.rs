//! Conversion aggregates: how many sends were accepted, taken by a carrier,
//! delivered, failed and verified, and how long delivery and verification
//! took, per account, minute, channel, route, country and operator prefix,
//! so that rates and medians are read from a few thousand rows instead of
//! scanning OTPs.
//!
//! Counted in the transactions that already change an OTP's status, on the
//! decisions those transactions made:
//! - accepting a batch of sends: `sent` (no route yet: route `""`);
//! - finishing delivery jobs: `submitted` when a queued OTP became `sent`
//!   (the carrier took it; the route is known from here on), `failed` when an
//!   OTP in flight failed;
//! - applying receipts: `delivered` (with the time from acceptance to the
//!   receipt) or `failed`, only when the receipt moved the OTP;
//! - verifying: `verified` (with the time from acceptance), once per code.
//!
//! [`Change`]s are decided from the step each rule already returns
//! ([`from_finish`], [`from_receipt`], [`from_verify`]); the backend loads
//! each changed OTP's [`Facts`] and [`tally`] folds everything into one
//! [`Counts`] per [`Key`], written with one upsert per key per transaction.
//!
//! Rows are per minute (the time of the event, UTC) and kept
//! [`KEEP_MICROS`] (eight days: a week's window and a day of slack);
//! [`ConversionStore::purge_conversions`] removes older ones. Each process
//! also keeps running totals of what it committed ([`LiveTotals`]) for
//! `/metrics`, with labels from bounded sets only.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Mutex;

use otp_domain::channel::Channel;
use otp_domain::phone::operator_prefix;

use crate::jobs::Finish;
use crate::receipts::ReceiptStep;
use crate::{AccountId, Micros, NewOtp, OtpStatus, Receipt, StoreError, VerifyOutcome};

/// One row covers this much time.
pub const BUCKET_MICROS: Micros = 60_000_000;
/// Rows older than this are purged: a week's window and a day of slack.
pub const KEEP_MICROS: Micros = 8 * 24 * 3600 * 1_000_000;
/// Upper bounds, in milliseconds, of the latency histogram's buckets; a
/// last bucket takes everything longer.
pub const LATENCY_BOUNDS_MS: [i64; 9] = [
    1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 900_000,
];
/// Buckets of a latency histogram.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The minute an instant falls in (minutes since the epoch).
pub fn minute_of(at: Micros) -> i64 {
    at.div_euclid(BUCKET_MICROS)
}

/// The minutes `[first, end)` whose rows overlap `[from, to)`.
pub fn minutes(from: Micros, to: Micros) -> (i64, i64) {
    (
        minute_of(from),
        minute_of(to.saturating_add(BUCKET_MICROS - 1)),
    )
}

/// What one row is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub account_id: AccountId,
    pub minute: i64,
    /// `text` or `voice` ([`Channel::as_str`]).
    pub channel: &'static str,
    /// `""` until a carrier took the message (accepted sends).
    pub route: String,
    /// The calling code, `"977"` (`""` when the number has none known).
    pub country: String,
    /// The calling code and three national digits, `"+977984"`.
    pub prefix: String,
}

/// A latency histogram: counts per [`LATENCY_BOUNDS_MS`] bucket and the sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub buckets: [i64; LATENCY_BUCKETS],
    pub sum_ms: i64,
}

impl Latency {
    fn observe(&mut self, ms: i64) {
        let ms = ms.max(0);
        let i = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.buckets[i] += 1;
        self.sum_ms += ms;
    }

    fn add(&mut self, other: &Latency) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_ms += other.sum_ms;
    }

    /// How many were observed.
    pub fn count(&self) -> i64 {
        self.buckets.iter().sum()
    }

    /// The median, estimated from the buckets: linear within the bucket
    /// holding the middle observation (the open last bucket answers its lower
    /// bound). `None` when nothing was observed.
    pub fn median_ms(&self) -> Option<i64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let half = n as f64 / 2.0;
        let mut below = 0i64;
        for (i, &c) in self.buckets.iter().enumerate() {
            if c > 0 && (below + c) as f64 >= half {
                let lo = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] };
                let Some(&hi) = LATENCY_BOUNDS_MS.get(i) else {
                    return Some(lo);
                };
                let share = (half - below as f64) / c as f64;
                return Some(lo + ((hi - lo) as f64 * share).round() as i64);
            }
            below += c;
        }
        Some(*LATENCY_BOUNDS_MS.last().expect("bounds"))
    }
}

/// What happened under one [`Key`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sends accepted.
    pub sent: i64,
    /// Messages a carrier took.
    pub submitted: i64,
    pub delivered: i64,
    /// Never handed over, or reported undeliverable, expired or rejected.
    pub failed: i64,
    pub verified: i64,
    /// Acceptance to the delivery receipt.
    pub delivery: Latency,
    /// Acceptance to the verification.
    pub verify: Latency,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.submitted += other.submitted;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.verified += other.verified;
        self.delivery.add(&other.delivery);
        self.verify.add(&other.verify);
    }
}

/// A status change worth counting, before its OTP's facts are loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub otp_id: i64,
    pub event: Event,
    pub at: Micros,
    /// The route the change came through, when it names one.
    pub route: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Submitted,
    Delivered,
    Failed,
    Verified,
}

/// What a change's row is keyed on, read from its OTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    pub account_id: AccountId,
    pub channel: Channel,
    pub e164: String,
    pub route: Option<String>,
    pub created_at: Micros,
}

/// The columns of [`Facts`] (after `id`), read `FROM otps`.
pub(crate) const FACT_COLUMNS: &str = "id, account_id, channel, e164, route, created_at";

impl Facts {
    /// The row of [`FACT_COLUMNS`]: (id, facts).
    pub fn from_row(r: &impl crate::rows::Columns) -> Result<(i64, Facts), StoreError> {
        Ok((
            r.int(0)?,
            Facts {
                account_id: r.int(1)?,
                channel: crate::rows::parsed("otps.channel", &r.text(2)?, Channel::parse)?,
                e164: r.text(3)?,
                route: r.opt_text(4)?,
                created_at: r.int(5)?,
            },
        ))
    }
}

/// A finished job's change: the carrier took a queued OTP, or an OTP in
/// flight failed.
pub(crate) fn from_finish(f: &Finish) -> Option<Change> {
    let event = match f.status? {
        OtpStatus::Sent => Event::Submitted,
        OtpStatus::Failed => Event::Failed,
        _ => return None,
    };
    Some(Change {
        otp_id: f.otp_id,
        event,
        at: f.at,
        route: f.route.clone(),
    })
}

/// A receipt's change, when it moved its OTP.
pub(crate) fn from_receipt(step: &ReceiptStep, rc: &Receipt) -> Option<Change> {
    let event = match step.status? {
        OtpStatus::Delivered => Event::Delivered,
        s if s.is_failure() => Event::Failed,
        _ => return None,
    };
    Some(Change {
        otp_id: step.otp_id,
        event,
        at: rc.at,
        route: Some(rc.route.clone()),
    })
}

/// A verification's change: only a code verified now.
pub(crate) fn from_verify(outcome: &VerifyOutcome) -> Option<Change> {
    match outcome {
        VerifyOutcome::Verified { id, verified_at } => Some(Change {
            otp_id: *id,
            event: Event::Verified,
            at: *verified_at,
            route: None,
        }),
        _ => None,
    }
}

/// The ids whose facts [`tally`] needs, without repeats.
pub(crate) fn wanted(changes: &[Change]) -> Vec<i64> {
    let mut ids: Vec<i64> = changes.iter().map(|c| c.otp_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn place(e164: &str) -> (String, String) {
    match operator_prefix(e164) {
        Some((code, prefix)) => (code.to_string(), prefix),
        None => (String::new(), String::new()),
    }
}

/// Folds accepted sends and changes into one [`Counts`] per [`Key`]. A
/// change whose OTP is gone (no facts) is not counted.
pub(crate) fn tally<'a>(
    accepted: impl IntoIterator<Item = &'a NewOtp>,
    changes: &[Change],
    facts: &HashMap<i64, Facts>,
) -> BTreeMap<Key, Counts> {
    let mut out: BTreeMap<Key, Counts> = BTreeMap::new();
    for otp in accepted {
        let (country, prefix) = place(otp.number.e164());
        let key = Key {
            account_id: otp.account_id,
            minute: minute_of(otp.created_at),
            channel: otp.channel.as_str(),
            route: String::new(),
            country,
            prefix,
        };
        out.entry(key).or_default().sent += 1;
    }
    for c in changes {
        let Some(f) = facts.get(&c.otp_id) else {
            continue;
        };
        let (country, prefix) = place(&f.e164);
        let key = Key {
            account_id: f.account_id,
            minute: minute_of(c.at),
            channel: f.channel.as_str(),
            route: c
                .route
                .clone()
                .or_else(|| f.route.clone())
                .unwrap_or_default(),
            country,
            prefix,
        };
        let counts = out.entry(key).or_default();
        let ms = (c.at - f.created_at) / 1_000;
        match c.event {
            Event::Submitted => counts.submitted += 1,
            Event::Failed => counts.failed += 1,
            Event::Delivered => {
                counts.delivered += 1;
                counts.delivery.observe(ms);
            }
            Event::Verified => {
                counts.verified += 1;
                counts.verify.observe(ms);
            }
        }
    }
    out
}

/// The upsert of one row: `?N` or `$N` placeholders in the order of
/// [`upsert_values`]. Built once per placeholder (every accept and receipt
/// batch runs it).
pub(crate) fn upsert_sql(placeholder: char) -> &'static str {
    static SQLITE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| build_upsert('?'));
    static POSTGRES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| build_upsert('$'));
    match placeholder {
        '?' => &SQLITE,
        '$' => &POSTGRES,
        other => unreachable!("no store uses {other:?} placeholders"),
    }
}

fn build_upsert(placeholder: char) -> String {
    let mut columns: Vec<String> = [
        "account_id",
        "minute",
        "channel",
        "route",
        "country",
        "prefix",
        "sent",
        "submitted",
        "delivered",
        "failed",
        "verified",
        "delivery_ms_sum",
        "verify_ms_sum",
    ]
    .iter()
    .map(|c| c.to_string())
    .collect();
    columns.extend((0..LATENCY_BUCKETS).map(|i| format!("delivery_b{i}")));
    columns.extend((0..LATENCY_BUCKETS).map(|i| format!("verify_b{i}")));
    let values: Vec<String> = (1..=columns.len())
        .map(|i| format!("{placeholder}{i}"))
        .collect();
    let sums: Vec<String> = columns[6..]
        .iter()
        .map(|c| format!("{c} = conversions.{c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO conversions ({}) VALUES ({}) ON CONFLICT (account_id, minute, channel, \
         route, country, prefix) DO UPDATE SET {}",
        columns.join(", "),
        values.join(", "),
        sums.join(", ")
    )
}

/// The numbers of a row after its key's six columns, in [`upsert_sql`]'s order.
pub(crate) fn upsert_numbers(c: &Counts) -> Vec<i64> {
    let mut v = vec![
        c.sent,
        c.submitted,
        c.delivered,
        c.failed,
        c.verified,
        c.delivery.sum_ms,
        c.verify.sum_ms,
    ];
    v.extend(c.delivery.buckets);
    v.extend(c.verify.buckets);
    v
}

/// The sums a stats query selects, after its group column, in
/// [`counts_from`]'s order.
pub(crate) fn sum_columns() -> String {
    let mut cols: Vec<String> = [
        "sent",
        "submitted",
        "delivered",
        "failed",
        "verified",
        "delivery_ms_sum",
        "verify_ms_sum",
    ]
    .iter()
    .map(|c| format!("SUM({c})"))
    .collect();
    cols.extend((0..LATENCY_BUCKETS).map(|i| format!("SUM(delivery_b{i})")));
    cols.extend((0..LATENCY_BUCKETS).map(|i| format!("SUM(verify_b{i})")));
    cols.join(", ")
}

/// [`Counts`] from the sums of [`sum_columns`], in its order.
pub(crate) fn counts_from(values: &[i64]) -> Counts {
    let mut c = Counts {
        sent: values[0],
        submitted: values[1],
        delivered: values[2],
        failed: values[3],
        verified: values[4],
        ..Counts::default()
    };
    c.delivery.sum_ms = values[5];
    c.verify.sum_ms = values[6];
    c.delivery
        .buckets
        .copy_from_slice(&values[7..7 + LATENCY_BUCKETS]);
    c.verify
        .buckets
        .copy_from_slice(&values[7 + LATENCY_BUCKETS..7 + 2 * LATENCY_BUCKETS]);
    c
}

/// Columns a stats query returns per group: the group and the sums.
pub(crate) const SUMS: usize = 7 + 2 * LATENCY_BUCKETS;

/// What rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Channel,
    Route,
    Country,
    Prefix,
}

impl Dimension {
    pub const ALL: [Dimension; 4] = [
        Dimension::Channel,
        Dimension::Route,
        Dimension::Country,
        Dimension::Prefix,
    ];

    /// The column, which is also the API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Channel => "channel",
            Dimension::Route => "route",
            Dimension::Country => "country",
            Dimension::Prefix => "prefix",
        }
    }

    pub fn parse(s: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// An account's aggregates over `[from, to)` (microseconds; every minute
/// overlapping it counts whole, [`minutes`]), grouped.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    pub account_id: AccountId,
    pub from: Micros,
    pub to: Micros,
    pub group_by: Dimension,
}

/// One group of a [`StatsQuery`]: its value (a channel, a route, `""` for
/// none) and its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsGroup {
    pub group: String,
    pub counts: Counts,
}

/// Accepted sends of one channel in one minute, for charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteSends {
    pub minute: i64,
    pub channel: Channel,
    pub sent: i64,
}

/// The store's side of conversion tracking.
#[async_trait::async_trait]
pub trait ConversionStore {
    /// The account's aggregates over the query's window, one entry per group,
    /// in the group's order.
    async fn conversion_stats(&self, query: StatsQuery) -> Result<Vec<StatsGroup>, StoreError>;
    /// The account's accepted sends per minute and channel over `[from, to)`,
    /// oldest first; minutes without sends are left out.
    async fn sends_per_minute(
        &self,
        account_id: AccountId,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<MinuteSends>, StoreError>;
    /// Removes rows of minutes before `before`; returns how many.
    async fn purge_conversions(&self, before: Micros) -> Result<u64, StoreError>;
    /// What this process committed since it started, per (route, channel,
    /// country label), for `/metrics`.
    fn live_totals(&self) -> Vec<(MetricKey, Counts)>;
}

/// The countries `/metrics` names; every other calling code is `other`, so
/// the label set stays fixed whatever numbers are sent to.
pub const METRIC_COUNTRIES: &[(&str, &str)] = &[
    ("977", "NP"),
    ("91", "IN"),
    ("880", "BD"),
    ("92", "PK"),
    ("94", "LK"),
    ("975", "BT"),
    ("86", "CN"),
    ("971", "AE"),
    ("974", "QA"),
    ("966", "SA"),
    ("965", "KW"),
    ("60", "MY"),
    ("81", "JP"),
    ("82", "KR"),
    ("61", "AU"),
    ("44", "GB"),
    ("1", "US"),
];

/// The `/metrics` label of a calling code.
pub fn country_label(code: &str) -> &'static str {
    METRIC_COUNTRIES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("other", |(_, l)| *l)
}

/// The labels of a `/metrics` series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricKey {
    /// A configured route's name, or `none` before a carrier took it.
    pub route: String,
    /// `text` or `voice`.
    pub channel: &'static str,
    /// From [`METRIC_COUNTRIES`], or `other`.
    pub country: &'static str,
}

/// The `/metrics` labels of an accepted send (no route yet).
pub(crate) fn accepted_key(otp: &NewOtp) -> MetricKey {
    MetricKey {
        route: "none".to_owned(),
        channel: otp.channel.as_str(),
        country: country_label(&otp.number.country_code().to_string()),
    }
}

/// Running totals of committed counts (std mutex: held for a few map
/// updates, never across `.await`).
#[derive(Debug, Default)]
pub(crate) struct LiveTotals(Mutex<BTreeMap<MetricKey, Counts>>);

impl LiveTotals {
    /// Adds a committed tally.
    pub fn add(&self, tally: &BTreeMap<Key, Counts>) {
        if tally.is_empty() {
            return;
        }
        let mut map = self.0.lock().expect("conversion totals poisoned");
        for (k, c) in tally {
            let key = MetricKey {
                route: if k.route.is_empty() {
                    "none".to_owned()
                } else {
                    k.route.clone()
                },
                channel: k.channel,
                country: country_label(&k.country),
            };
            map.entry(key).or_default().add(c);
        }
    }

    /// Adds one accepted send, once its batch committed.
    pub fn add_sent(&self, key: MetricKey) {
        let mut map = self.0.lock().expect("conversion totals poisoned");
        map.entry(key).or_default().sent += 1;
    }

    pub fn snapshot(&self) -> Vec<(MetricKey, Counts)> {
        let map = self.0.lock().expect("conversion totals poisoned");
        map.iter().map(|(k, c)| (k.clone(), *c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(created_at: Micros) -> Facts {
        Facts {
            account_id: 3,
            channel: Channel::Text,
            e164: "+9779841234567".into(),
            route: Some("smsc".into()),
            created_at,
        }
    }

    #[test]
    fn accepted_sends_count_as_sent_without_a_route_under_their_prefix() {
        let mut a = crate::test_support::sample_otp(3);
        a.created_at = 90 * BUCKET_MICROS + 5;
        let b = NewOtp {
            created_at: 90 * BUCKET_MICROS + 59_000_000,
            ..a.clone()
        };
        let t = tally([&a, &b], &[], &HashMap::new());
        assert_eq!(t.len(), 1, "same minute, same number: one row");
        let (k, c) = t.iter().next().unwrap();
        assert_eq!(
            (
                k.minute,
                k.route.as_str(),
                k.country.as_str(),
                k.prefix.as_str()
            ),
            (90, "", "977", "+977985")
        );
        assert_eq!(c.sent, 2);
    }

    #[test]
    fn changes_count_under_their_own_minute_and_route_with_latencies() {
        let created = 1_000 * BUCKET_MICROS;
        let changes = [
            Change {
                otp_id: 1,
                event: Event::Delivered,
                at: created + 1_500_000,
                route: Some("smsc".into()),
            },
            Change {
                otp_id: 1,
                event: Event::Verified,
                at: created + 70_000_000,
                route: None,
            },
            Change {
                otp_id: 9,
                event: Event::Failed,
                at: created,
                route: None,
            },
        ];
        let facts = HashMap::from([(1, facts(created))]);
        let t = tally([], &changes, &facts);
        let rows: Vec<(i64, &str, Counts)> = t
            .iter()
            .map(|(k, c)| (k.minute, k.route.as_str(), *c))
            .collect();
        assert_eq!(rows.len(), 2, "a change whose OTP is gone is not counted");
        let (m0, r0, c0) = &rows[0];
        assert_eq!((*m0, *r0, c0.delivered), (1_000, "smsc", 1));
        assert_eq!(c0.delivery.buckets[1], 1, "1.5 s falls in (1 s, 2 s]");
        let (m1, r1, c1) = &rows[1];
        assert_eq!(
            (*m1, *r1, c1.verified, c1.verify.sum_ms),
            (1_001, "smsc", 1, 70_000),
            "the OTP's route when the change names none"
        );
    }

    #[test]
    fn the_median_is_read_from_the_buckets() {
        let mut l = Latency::default();
        assert_eq!(l.median_ms(), None);
        for ms in [100, 200, 3_000, 4_000, 4_500] {
            l.observe(ms);
        }
        // Third of five in (2 s, 5 s], which holds three: 2000 + 3000 * 0.5/3.
        assert_eq!(l.median_ms(), Some(2_500));
        let mut slow = Latency::default();
        slow.observe(5_000_000);
        assert_eq!(slow.median_ms(), Some(900_000));
    }

    #[test]
    fn only_status_moves_are_changes() {
        use crate::webhooks::WebhookEvent;
        let step = ReceiptStep {
            otp_id: 4,
            status: None,
            failure: None,
            event: "receipt",
            detail: String::new(),
            refund: None,
            webhook: None::<WebhookEvent>,
            delivered_at: None,
        };
        let rc = Receipt {
            route: "smsc".into(),
            message_ids: vec![],
            status: Some(OtpStatus::Delivered),
            state: "DELIVRD".into(),
            error_code: None,
            at: 5,
        };
        assert_eq!(from_receipt(&step, &rc), None);
        let moved = ReceiptStep {
            status: Some(OtpStatus::Undeliverable),
            ..step
        };
        assert_eq!(from_receipt(&moved, &rc).unwrap().event, Event::Failed);
        assert_eq!(from_verify(&VerifyOutcome::NotFound), None);
        assert_eq!(from_verify(&VerifyOutcome::AlreadyVerified { id: 1 }), None);
    }

    #[test]
    fn metric_countries_are_a_fixed_list_and_everything_else_is_other() {
        assert_eq!(country_label("977"), "NP");
        assert_eq!(country_label("999"), "other");
        assert_eq!(country_label(""), "other");
    }

    #[test]
    fn the_upsert_names_every_number_once() {
        let sql = upsert_sql('?');
        assert!(sql.contains(&format!(
            "?{}",
            6 + upsert_numbers(&Counts::default()).len()
        )));
        assert!(!sql.contains(&format!(
            "?{}",
            7 + upsert_numbers(&Counts::default()).len()
        )));
        assert_eq!(sum_columns().matches("SUM(").count(), SUMS);
    }
}
