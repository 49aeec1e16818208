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
//! Implemented for both backends in `sqlite/receipts.rs` and
//! `postgres/receipts.rs`.

use smpp::receipt::ids::{IdForms, IdLookup};

use crate::{Micros, StoreError};

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

/// The forms columns of a part's id: (text, hex read in decimal, decimal
/// read in hex).
pub(crate) fn id_columns(id: &str) -> (String, Option<String>, Option<String>) {
    let f = IdForms::of(id);
    (f.text, f.hex_as_decimal, f.decimal_as_hex)
}

/// The spellings a part written before the forms existed may have been
/// stored under: the receipt's id as written, its text form and its other
/// base, unpadded.
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
