//! Finding the message part a delivery receipt is for, and keeping the
//! receipts that found none.
//!
//! Each part's carrier id is stored with its canonical forms
//! ([`smpp::receipt::ids::IdForms`]: text without padding, case or `0x`; hex
//! reading in decimal; decimal reading in hex), indexed per route.
//! [`ReceiptStore::receipt_candidates`] finds, for a receipt's
//! [`IdLookup`], every part whose id is spelled as the receipt wrote it or
//! shares a form with it; the caller decides among them with
//! [`smpp::receipt::ids::decide`] (the one rule) and applies the receipt to
//! the chosen id with [`Store::record_receipts`](crate::Store::record_receipts).
//! Rows written before the forms existed are still found by their id as
//! written, in any of the receipt's canonical spellings.
//!
//! A receipt that matches nothing (or more than one part) is kept in a bounded
//! table: the newest [`UNMATCHED_KEEP_PER_ROUTE`] per route, for
//! [`UNMATCHED_KEEP_MICROS`], pruned as new ones arrive, so an operator can
//! see the raw ids of a spelling problem the day it starts.
//!
//! Applying a receipt to the id the caller chose is one decision both
//! backends run their SQL around: the parts its spellings name are loaded
//! (PostgreSQL: `FOR NO KEY UPDATE`), [`receipt_part`] picks the one it lands on,
//! the part takes the receipt's final state (`UPDATE ... AND state IS NULL`:
//! a part takes one final receipt), the OTP is loaded, [`receipt_step`]
//! decides what the receipt changes, and the backend writes that.
//!
//! Implemented for both backends in `sqlite/receipts.rs` and
//! `postgres/receipts.rs`.

use smpp::receipt::ids::{IdForms, IdLookup};

use crate::jobs::{OtpState, Refund};
use crate::rows::Columns;
use crate::webhooks::WebhookEvent;
use crate::{Micros, OtpStatus, Receipt, StoreError};

/// Unmatched receipts kept per route.
pub const UNMATCHED_KEEP_PER_ROUTE: i64 = 300;
/// How long an unmatched receipt is kept: a day.
pub const UNMATCHED_KEEP_MICROS: Micros = 24 * 3600 * 1_000_000;
/// Longest receipt text kept, in characters (an SMPP short_message has at
/// most 254 octets; a message_payload can be far longer).
pub const UNMATCHED_MAX_TEXT_CHARS: usize = 300;
/// Longest id kept, in characters (longer ids match nothing).
pub const UNMATCHED_MAX_ID_CHARS: usize = 80;

/// Candidates kept per receipt: more than one fitting is already ambiguous,
/// so this only bounds a pathological id shared by many parts.
pub(crate) const MAX_CANDIDATES: i64 = 64;

/// A lookup's rows without repeats (one part can match several branches),
/// at most [`MAX_CANDIDATES`].
pub(crate) fn distinct(mut ids: Vec<String>) -> Vec<String> {
    ids.sort_unstable();
    ids.dedup();
    ids.truncate(MAX_CANDIDATES as usize);
    ids
}

/// A receipt that matched no message part, as the SMSC sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmatchedReceipt {
    /// The route it came in on.
    pub route: String,
    /// The id it names, as written (cut to [`UNMATCHED_MAX_ID_CHARS`]).
    pub message_id: String,
    /// The state word (`DELIVRD`, `UNDELIV`, ...).
    pub state: String,
    /// Why it matched nothing: `no_match` (no part fits) or `ambiguous`
    /// (several do), `too_long` (an id over 64 characters).
    pub reason: String,
    /// The receipt text (cut to [`UNMATCHED_MAX_TEXT_CHARS`]).
    pub text: String,
    pub received_at: Micros,
}

impl UnmatchedReceipt {
    /// Cuts the id and text to what is kept.
    pub(crate) fn bounded(&self) -> (String, String) {
        (
            self.message_id
                .chars()
                .take(UNMATCHED_MAX_ID_CHARS)
                .collect(),
            self.text.chars().take(UNMATCHED_MAX_TEXT_CHARS).collect(),
        )
    }
}

/// The spellings a part written before the forms existed may have been
/// stored under: the receipt's id as written, its text form and its other
/// base, unpadded. The text form also finds every part whose id is its own
/// text form: since migration 28 the text-form index holds only the others.
pub(crate) fn legacy_spellings(lookup: &IdLookup) -> [Option<String>; 4] {
    let f = IdForms::of(&lookup.raw);
    [
        Some(lookup.raw.clone()),
        Some(lookup.text.clone()),
        f.hex_as_decimal,
        f.decimal_as_hex,
    ]
}

/// The store's side of receipt matching.
#[async_trait::async_trait]
pub trait ReceiptStore {
    /// For each lookup, the ids (as the carrier gave them) of the route's
    /// parts that share a form with it, at most 64, in no particular order.
    async fn receipt_candidates(
        &self,
        route: &str,
        lookups: Vec<IdLookup>,
    ) -> Result<Vec<Vec<String>>, StoreError>;

    /// Keeps receipts that matched nothing, then drops those of their routes
    /// past the newest [`UNMATCHED_KEEP_PER_ROUTE`] and any older than
    /// [`UNMATCHED_KEEP_MICROS`] before `now`.
    async fn record_unmatched_receipts(
        &self,
        receipts: Vec<UnmatchedReceipt>,
        now: Micros,
    ) -> Result<(), StoreError>;

    /// Unmatched receipts of the last day, newest first, of one route or all.
    async fn unmatched_receipts(
        &self,
        route: Option<String>,
        limit: u32,
        now: Micros,
    ) -> Result<Vec<UnmatchedReceipt>, StoreError>;
}

/// The columns of [`RecordedPart`], read `FROM provider_messages`.
pub(crate) const PART_COLUMNS: &str = "message_id, otp_id, part, parts, state";

/// A message part as `provider_messages` has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordedPart {
    pub message_id: String,
    pub otp_id: i64,
    pub part: i64,
    pub parts: i64,
    /// The final state a receipt gave it (`None`: none yet).
    pub state: Option<String>,
}

impl RecordedPart {
    /// The part of [`PART_COLUMNS`].
    pub fn from_row(r: &impl Columns) -> Result<RecordedPart, StoreError> {
        Ok(RecordedPart {
            message_id: r.text(0)?,
            otp_id: r.int(1)?,
            part: r.int(2)?,
            parts: r.int(3)?,
            state: r.opt_text(4)?,
        })
    }
}

/// The part a receipt lands on, of the route's parts its spellings name:
/// the first spelling (most likely first) whose part has no final state.
/// `None`: no part is recorded under any of them yet (the receipt is held
/// and may be retried), or each one's part took its final receipt (a repeat,
/// or a newer submission's not yet recorded id).
pub(crate) fn receipt_part<'a>(
    rc: &Receipt,
    found: &'a [RecordedPart],
) -> Option<&'a RecordedPart> {
    rc.message_ids.iter().find_map(|id| {
        found
            .iter()
            .find(|p| &p.message_id == id && p.state.is_none())
    })
}

/// What a receipt writes once its part took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReceiptStep {
    pub otp_id: i64,
    /// The OTP's new status (`status_at` becomes the receipt's time);
    /// `None`: unchanged.
    pub status: Option<OtpStatus>,
    /// The OTP's `delivered_at` when this receipt delivers it (the receipt's
    /// time); `None`: unchanged.
    pub delivered_at: Option<Micros>,
    /// A failure's `error` text (with the receipt's error code).
    pub failure: Option<String>,
    /// The history event: the new status, or `receipt`, with its detail.
    pub event: &'static str,
    pub detail: String,
    pub refund: Option<Refund>,
    pub webhook: Option<WebhookEvent>,
}

/// Decides what receipt `rc`, taken by `part`, changes for its OTP, loaded
/// as its state and how many of its parts (this one counted with the state
/// it just took) are not delivered (`None`: gone, purged). A failure ends
/// the message; a delivery ends it with its last part; either moves only an
/// OTP still in flight, and only a move refunds and calls the webhook (of an
/// account that has one). Other receipts are history only.
pub(crate) fn receipt_step(
    rc: &Receipt,
    part: &RecordedPart,
    loaded: Option<&(OtpState, i64)>,
) -> ReceiptStep {
    let otp = loaded.map(|(otp, _)| otp);
    let pending = loaded.map_or(0, |(_, pending)| *pending);
    let ends = match rc.status {
        Some(st) if st.is_failure() => Some(st),
        Some(OtpStatus::Delivered) if part.parts == 1 || pending == 0 => Some(OtpStatus::Delivered),
        _ => None,
    };
    let status = ends.filter(|_| otp.is_some_and(OtpState::in_flight));
    let failed = status.filter(|st| st.is_failure());
    ReceiptStep {
        otp_id: part.otp_id,
        status,
        delivered_at: (status == Some(OtpStatus::Delivered)).then_some(rc.at),
        failure: failed.map(|_| format!("carrier reported {}", rc.state)),
        event: status.map_or("receipt", OtpStatus::as_str),
        detail: format!("part {}: {}", part.part, rc.state),
        refund: failed
            .zip(otp)
            .and_then(|(st, o)| o.refund(format!("carrier reported {}", st.as_str()))),
        webhook: status
            .and_then(WebhookEvent::for_receipt)
            .filter(|_| otp.is_some_and(|o| o.has_webhook)),
    }
}

/// Ids of every kind for the tests of migration 28's indexes, each with the
/// forms a part stored under it gets (as `rows::id_columns` stores them): a
/// hex id (read as decimal too), a decimal id (both readings), two ids with
/// neither (the log driver's, an HTTP aggregator's), and a padded upper-case
/// hex id, the one whose text form (`1f`) is not the id as written.
#[cfg(test)]
pub(crate) fn id_kinds() -> Vec<(&'static str, IdForms)> {
    ["1d0bb113", "31", "log-1", "5f0c-77aa", "0000001F"]
        .into_iter()
        .map(|id| (id, IdForms::of(id)))
        .collect()
}

/// How many of [`id_kinds`] each form index holds since migration 28.
#[cfg(test)]
pub(crate) const ID_KIND_ENTRIES: [(&str, i64); 3] = [
    ("provider_messages_id_text", 1),
    ("provider_messages_id_hex_decimal", 3),
    ("provider_messages_id_decimal_hex", 1),
];

#[cfg(test)]
mod decision_tests {
    use otp_domain::channel::Channel;

    use super::*;

    fn receipt(ids: &[&str], status: Option<OtpStatus>, state: &str) -> Receipt {
        Receipt {
            route: "smsc".into(),
            message_ids: ids.iter().map(|s| s.to_string()).collect(),
            status,
            state: state.into(),
            error_code: Some("042".into()),
            at: 900,
        }
    }

    fn part(id: &str, n: i64, of: i64, state: Option<&str>) -> RecordedPart {
        RecordedPart {
            message_id: id.into(),
            otp_id: 7,
            part: n,
            parts: of,
            state: state.map(str::to_owned),
        }
    }

    fn otp(status: OtpStatus) -> OtpState {
        OtpState {
            id: 7,
            account_id: 3,
            status,
            refunded: false,
            channel: Channel::Text,
            credits_used: 1,
            fallback: None,
            fallback_credits: 0,
            has_webhook: true,
        }
    }

    #[test]
    fn a_receipt_lands_on_the_first_spelling_whose_part_has_no_final_state() {
        let found = [
            part("1f", 1, 1, Some("delivered")),
            part("31", 1, 1, None),
            part("0x1f", 1, 1, None),
        ];
        let rc = receipt(&["1f", "0x1f", "31"], Some(OtpStatus::Delivered), "DELIVRD");
        assert_eq!(receipt_part(&rc, &found).unwrap().message_id, "0x1f");
        let repeat = receipt(&["1f"], Some(OtpStatus::Delivered), "DELIVRD");
        assert_eq!(
            receipt_part(&repeat, &found),
            None,
            "a final part takes no more"
        );
        let unknown = receipt(&["99"], Some(OtpStatus::Delivered), "DELIVRD");
        assert_eq!(receipt_part(&unknown, &found), None);
    }

    #[test]
    fn a_failure_receipt_fails_an_otp_in_flight_and_refunds_it() {
        let rc = receipt(&["1f"], Some(OtpStatus::Undeliverable), "UNDELIV");
        let step = receipt_step(
            &rc,
            &part("1f", 1, 2, None),
            Some(&(otp(OtpStatus::Sent), 2)),
        );
        assert_eq!(step.status, Some(OtpStatus::Undeliverable));
        assert_eq!(step.delivered_at, None);
        assert_eq!(step.event, "undeliverable");
        assert_eq!(step.failure.as_deref(), Some("carrier reported UNDELIV"));
        assert_eq!(step.webhook, Some(WebhookEvent::Failed));
        let refund = step.refund.unwrap();
        assert_eq!(
            (refund.sms, refund.note.as_str()),
            (1, "carrier reported undeliverable")
        );
        let refunded = OtpState {
            refunded: true,
            ..otp(OtpStatus::Sent)
        };
        assert_eq!(
            receipt_step(&rc, &part("1f", 1, 1, None), Some(&(refunded, 1))).refund,
            None
        );
    }

    #[test]
    fn a_delivery_ends_the_message_with_its_last_part_and_never_refunds() {
        let rc = receipt(&["1f"], Some(OtpStatus::Delivered), "DELIVRD");
        let first = receipt_step(
            &rc,
            &part("1f", 1, 2, None),
            Some(&(otp(OtpStatus::Sent), 1)),
        );
        assert_eq!((first.status, first.event), (None, "receipt"));
        assert_eq!(first.detail, "part 1: DELIVRD");
        let last = receipt_step(
            &rc,
            &part("20", 2, 2, None),
            Some(&(otp(OtpStatus::Sent), 0)),
        );
        assert_eq!(last.status, Some(OtpStatus::Delivered));
        assert_eq!((first.delivered_at, last.delivered_at), (None, Some(900)));
        assert_eq!((last.refund, last.failure), (None, None));
        assert_eq!(last.webhook, Some(WebhookEvent::Delivered));
        let unhooked = OtpState {
            has_webhook: false,
            ..otp(OtpStatus::Sent)
        };
        let quiet = receipt_step(&rc, &part("20", 2, 2, None), Some(&(unhooked, 0)));
        assert_eq!(
            (quiet.status, quiet.webhook),
            (Some(OtpStatus::Delivered), None),
            "an account without a webhook gets no webhook event"
        );
    }

    #[test]
    fn a_receipt_for_a_finished_otp_is_history_only() {
        let rc = receipt(&["1f"], Some(OtpStatus::Rejected), "REJECTD");
        for done in [OtpStatus::Verified, OtpStatus::Failed, OtpStatus::Delivered] {
            let step = receipt_step(&rc, &part("1f", 1, 1, None), Some(&(otp(done), 1)));
            assert_eq!((step.status, step.event), (None, "receipt"));
            assert_eq!((step.refund, step.webhook), (None, None));
        }
        let gone = receipt_step(&rc, &part("1f", 1, 1, None), None);
        assert_eq!((gone.otp_id, gone.status, gone.event), (7, None, "receipt"));
        assert_eq!(gone.refund, None);
        let enroute = receipt(&["1f"], None, "ENROUTE");
        let step = receipt_step(
            &enroute,
            &part("1f", 1, 1, None),
            Some(&(otp(OtpStatus::Sent), 1)),
        );
        assert_eq!((step.status, step.event), (None, "receipt"));
    }
}
