//! Message ids across spellings: the one rule that ties a receipt's id to the
//! id a submit_sm_resp gave.
//!
//! SMSCs do not agree on how to write an id. One answers submit_sm with
//! `0000002a` (hex, zero-padded) and writes the receipt's `id:` as
//! `0000000042` (the same number in decimal, padded to ten digits); another
//! repeats the id as it gave it; a third gives decimal and reports hex. So
//! every id has [`IdForms`]: its text normalised (no padding, lower case, no
//! `0x`), its hex reading written in decimal and its decimal reading written
//! in hex, of any length (ids outgrow every integer type).
//!
//! Which of those forms ties a receipt to a message is the SMSC's habit, a
//! [`Habit`]: the receipt repeats the text ([`Habit::Text`]), writes in
//! decimal what submit_sm_resp gave in hex ([`Habit::Decimal`]), or in hex
//! what it gave in decimal ([`Habit::Hex`]). An all-digit id is ambiguous
//! (`10` may be hex for 16), so a route names the habit or lets it be learned
//! ([`IdFormat`], [`HabitLearner`]), and [`decide`] picks the message a
//! receipt is for among the candidates a store found through [`IdLookup`]:
//!
//! - a known habit: the receipt matches through that habit's form only (the
//!   exact spelling first for `Text`); a receipt id that has no such reading
//!   (letters where the habit wants decimal digits) is matched as text;
//! - no habit yet (`auto` before it has learned): a receipt matches when
//!   exactly one message fits any form; several fitting is ambiguous and
//!   matches none, rather than a guess that would settle the wrong message.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// Longest message id matched (SMPP 3.4: a C-octet string of 65 octets).
pub const MAX_ID_LEN: usize = 64;

/// How a route's SMSC spells, in its receipts, the id submit_sm_resp gave
/// (otpgate's `receipt_ids` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IdFormat {
    /// Learn the habit from the first unambiguous matches ([`HabitLearner`]).
    #[default]
    Auto,
    /// Always this habit.
    Fixed(Habit),
}

impl IdFormat {
    /// From `auto`, `text`, `hex` or `decimal` (any case).
    pub fn parse(text: &str) -> Option<IdFormat> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "auto" => IdFormat::Auto,
            "text" => IdFormat::Fixed(Habit::Text),
            "hex" => IdFormat::Fixed(Habit::Hex),
            "decimal" => IdFormat::Fixed(Habit::Decimal),
            _ => return None,
        })
    }

    /// The setting's word.
    pub fn as_str(self) -> &'static str {
        match self {
            IdFormat::Auto => "auto",
            IdFormat::Fixed(h) => h.as_str(),
        }
    }
}

/// How an SMSC's receipts spell the id its submit_sm_resp gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Habit {
    /// The same text, up to case, zero padding and `0x`.
    Text,
    /// submit_sm_resp in decimal, the receipt in hex.
    Hex,
    /// submit_sm_resp in hex, the receipt in decimal.
    Decimal,
}

impl Habit {
    const ALL: [Habit; 3] = [Habit::Text, Habit::Hex, Habit::Decimal];

    /// `text`, `hex` or `decimal`.
    pub fn as_str(self) -> &'static str {
        match self {
            Habit::Text => "text",
            Habit::Hex => "hex",
            Habit::Decimal => "decimal",
        }
    }

    fn index(self) -> usize {
        match self {
            Habit::Text => 0,
            Habit::Hex => 1,
            Habit::Decimal => 2,
        }
    }

    /// True when a receipt whose id has the forms `receipt` is, under this
    /// habit, for the message submit_sm_resp named with the forms `stored`.
    pub fn fits(self, receipt: &IdForms, stored: &IdForms) -> bool {
        if receipt.text.is_empty() {
            return false;
        }
        match self {
            Habit::Text => receipt.text == stored.text,
            // The receipt's text form of a decimal id is its decimal value.
            Habit::Decimal => {
                receipt.is_decimal()
                    && stored.hex_as_decimal.as_deref() == Some(receipt.text.as_str())
            }
            Habit::Hex => {
                receipt.is_hex() && stored.decimal_as_hex.as_deref() == Some(receipt.text.as_str())
            }
        }
    }
}

impl fmt::Display for Habit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The canonical forms of one message id, as a store keeps them per message
/// part and looks receipts up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdForms {
    /// Trimmed, lower case, without a `0x` before hex digits and without
    /// leading zeros (`0` for zero).
    pub text: String,
    /// The id read as hexadecimal, written in decimal without leading zeros,
    /// when it is hex digits (after an optional `0x`).
    pub hex_as_decimal: Option<String>,
    /// The id read as decimal, written in lower-case hex without leading
    /// zeros, when it is decimal digits.
    pub decimal_as_hex: Option<String>,
}

impl IdForms {
    /// The forms of `id`, whatever its length.
    pub fn of(id: &str) -> IdForms {
        let trimmed = id.trim();
        let hex_digits = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .filter(|rest| is_hex(rest))
            .or_else(|| is_hex(trimmed).then_some(trimmed));
        let is_decimal = !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit());
        let lower = hex_digits.unwrap_or(trimmed).to_ascii_lowercase();
        let stripped = lower.trim_start_matches('0');
        let text = if stripped.is_empty() && !lower.is_empty() {
            "0".to_owned()
        } else {
            stripped.to_owned()
        };
        IdForms {
            hex_as_decimal: hex_digits.map(|h| convert(h, 16, 10)),
            decimal_as_hex: is_decimal.then(|| convert(trimmed, 10, 16)),
            text,
        }
    }

    /// True when the id is decimal digits.
    pub fn is_decimal(&self) -> bool {
        self.decimal_as_hex.is_some()
    }

    /// True when the id is hex digits (after an optional `0x`).
    pub fn is_hex(&self) -> bool {
        self.hex_as_decimal.is_some()
    }

    /// The habits under which `receipt` is for the message `stored` names.
    pub fn habits_between(receipt: &IdForms, stored: &IdForms) -> Vec<Habit> {
        Habit::ALL
            .into_iter()
            .filter(|h| h.fits(receipt, stored))
            .collect()
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `digits` (valid in base `from`) written in base `to` (10 or 16, lower
/// case), without leading zeros. Every id a carrier sends and every id a
/// receipt names goes through here. One that fits in 128 bits (any of up to
/// 32 hex or 38 decimal digits does) is read and written by the standard
/// library; a longer one by [`convert_by_division`].
fn convert(digits: &str, from: u32, to: u32) -> String {
    match u128::from_str_radix(digits, from) {
        Ok(n) if to == 16 => format!("{n:x}"),
        Ok(n) => n.to_string(),
        Err(_) => convert_by_division(digits, from, to),
    }
}

/// [`convert`] at any length. Schoolbook division: quadratic in the length,
/// which ids bound.
fn convert_by_division(digits: &str, from: u32, to: u32) -> String {
    let mut number: Vec<u32> = digits
        .chars()
        .filter_map(|c| c.to_digit(from))
        .skip_while(|&d| d == 0)
        .collect();
    let mut out = Vec::new();
    while !number.is_empty() {
        let mut remainder = 0;
        let mut quotient = Vec::with_capacity(number.len());
        for d in &number {
            let value = remainder * from + d;
            let q = value / to;
            remainder = value % to;
            if !(quotient.is_empty() && q == 0) {
                quotient.push(q);
            }
        }
        out.push(char::from_digit(remainder, to).expect("a digit below the base"));
        number = quotient;
    }
    if out.is_empty() {
        return "0".to_owned();
    }
    out.iter().rev().collect()
}

/// What a store searches for a receipt's id: the parts of the route whose
/// id is `raw`, or whose text form is `text`, or whose hex reading (in
/// decimal) is `text` when the receipt id is decimal, or whose decimal
/// reading (in hex) is `text` when the receipt id is hex. [`decide`] then
/// picks among what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdLookup {
    /// The id as the receipt wrote it, trimmed.
    pub raw: String,
    /// Its text form, the key for every column.
    pub text: String,
    /// Search stored ids by their hex reading (the receipt id is decimal).
    pub by_hex_reading: bool,
    /// Search stored ids by their decimal reading (the receipt id is hex).
    pub by_decimal_reading: bool,
}

impl IdLookup {
    /// The lookup for a receipt's id; `None` for an empty id or one longer
    /// than [`MAX_ID_LEN`], which match nothing.
    pub fn of(receipt_id: &str) -> Option<IdLookup> {
        let raw = receipt_id.trim();
        if raw.is_empty() || raw.chars().count() > MAX_ID_LEN {
            return None;
        }
        let forms = IdForms::of(raw);
        Some(IdLookup {
            raw: raw.to_owned(),
            by_hex_reading: forms.is_decimal(),
            by_decimal_reading: forms.is_hex(),
            text: forms.text,
        })
    }
}

/// Which candidate a receipt is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The candidate at this index. `evidence` is the one habit the match
    /// fits, when only one does: what [`HabitLearner::observe`] learns from.
    Matched {
        index: usize,
        evidence: Option<Habit>,
    },
    /// More than one candidate fits: none is matched.
    Ambiguous,
    /// No candidate fits.
    NoMatch,
}

/// Picks the message a receipt is for among `candidates` (the ids, as
/// submit_sm_resp gave them, of distinct message parts of the route), under
/// `habit` (`None`: not known yet). See the module documentation.
pub fn decide<S: AsRef<str>>(receipt_id: &str, candidates: &[S], habit: Option<Habit>) -> Decision {
    let Some(lookup) = IdLookup::of(receipt_id) else {
        return Decision::NoMatch;
    };
    let receipt = IdForms::of(&lookup.raw);
    let stored: Vec<IdForms> = candidates.iter().map(|c| IdForms::of(c.as_ref())).collect();
    let only = |fits: &dyn Fn(usize) -> bool| {
        let mut found = (0..stored.len()).filter(|&i| fits(i));
        match (found.next(), found.next()) {
            (Some(i), None) => Some(Ok(i)),
            (Some(_), Some(_)) => Some(Err(())),
            (None, _) => None,
        }
    };
    let evidence = |i: usize| match IdForms::habits_between(&receipt, &stored[i]).as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let settle = |found: Option<Result<usize, ()>>| match found {
        Some(Ok(index)) => Decision::Matched {
            index,
            evidence: evidence(index),
        },
        Some(Err(())) => Decision::Ambiguous,
        None => Decision::NoMatch,
    };
    let as_text = || {
        let exact = only(&|i| candidates[i].as_ref().trim() == lookup.raw);
        if exact.is_some() {
            return settle(exact);
        }
        settle(only(&|i| Habit::Text.fits(&receipt, &stored[i])))
    };
    match habit {
        Some(Habit::Text) => as_text(),
        Some(Habit::Decimal) if !receipt.is_decimal() => as_text(),
        Some(Habit::Hex) if !receipt.is_hex() => as_text(),
        Some(h) => settle(only(&|i| h.fits(&receipt, &stored[i]))),
        None => settle(only(&|i| {
            Habit::ALL.iter().any(|h| h.fits(&receipt, &stored[i]))
        })),
    }
}

/// A route's habit: fixed by its setting, or learned from matches that fit
/// exactly one habit. It is learned once one habit has [`Self::LEARN_AFTER`]
/// such matches and at least ten times as many as the others together; an
/// SMSC that keeps giving contradicting evidence is never pinned down and
/// stays under the "exactly one message fits" rule.
#[derive(Debug, Clone)]
pub struct HabitLearner {
    format: IdFormat,
    counts: [u32; 3],
    learned: Option<Habit>,
}

impl HabitLearner {
    /// Unambiguous matches needed before a habit is taken as learned.
    pub const LEARN_AFTER: u32 = 3;

    /// A learner for a route's setting.
    pub fn new(format: IdFormat) -> HabitLearner {
        HabitLearner {
            format,
            counts: [0; 3],
            learned: None,
        }
    }

    /// The habit to decide with: the configured one, the learned one, or
    /// `None` while `auto` is still learning.
    pub fn habit(&self) -> Option<Habit> {
        match self.format {
            IdFormat::Fixed(h) => Some(h),
            IdFormat::Auto => self.learned,
        }
    }

    /// Counts one match's evidence; returns the habit when this match
    /// completed learning it.
    pub fn observe(&mut self, evidence: Habit) -> Option<Habit> {
        if self.habit().is_some() {
            return None;
        }
        let slot = &mut self.counts[evidence.index()];
        *slot = slot.saturating_add(1);
        let n = *slot;
        let others: u32 = self.counts.iter().sum::<u32>() - n;
        if n >= Self::LEARN_AFTER && others.saturating_mul(10) <= n {
            self.learned = Some(evidence);
            return self.learned;
        }
        None
    }
}

/// A map from the ids submit_sm_resp gave to values (say, the caller's
/// message keys), looked up by receipt ids through [`decide`] and, under
/// `auto`, a [`HabitLearner`]: the in-memory form of what otpgate's store
/// does with its indexed id forms.
#[derive(Debug, Clone)]
pub struct MessageIdIndex<V> {
    values: HashMap<String, V>,
    by_text: HashMap<String, HashSet<String>>,
    by_hex_reading: HashMap<String, HashSet<String>>,
    by_decimal_reading: HashMap<String, HashSet<String>>,
    learner: HabitLearner,
}

impl<V> Default for MessageIdIndex<V> {
    fn default() -> Self {
        Self::with_format(IdFormat::Auto)
    }
}

impl<V> MessageIdIndex<V> {
    /// An empty index that learns the SMSC's habit.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty index for a route's `receipt_ids` setting.
    pub fn with_format(format: IdFormat) -> Self {
        MessageIdIndex {
            values: HashMap::new(),
            by_text: HashMap::new(),
            by_hex_reading: HashMap::new(),
            by_decimal_reading: HashMap::new(),
            learner: HabitLearner::new(format),
        }
    }

    /// The habit lookups use now.
    pub fn habit(&self) -> Option<Habit> {
        self.learner.habit()
    }

    /// Stores `value` under the id the SMSC gave in submit_sm_resp (trimmed);
    /// returns the value previously stored under that same spelling.
    pub fn insert(&mut self, id: &str, value: V) -> Option<V> {
        let raw = id.trim().to_owned();
        let forms = IdForms::of(&raw);
        self.by_text
            .entry(forms.text)
            .or_default()
            .insert(raw.clone());
        if let Some(h) = forms.hex_as_decimal {
            self.by_hex_reading
                .entry(h)
                .or_default()
                .insert(raw.clone());
        }
        if let Some(d) = forms.decimal_as_hex {
            self.by_decimal_reading
                .entry(d)
                .or_default()
                .insert(raw.clone());
        }
        self.values.insert(raw, value)
    }

    /// The stored ids a receipt id could be for, as a store's lookup finds them.
    fn candidates(&self, lookup: &IdLookup) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        let mut add = |ids: Option<&HashSet<String>>| {
            for id in ids.into_iter().flatten() {
                if !found.contains(id) {
                    found.push(id.clone());
                }
            }
        };
        if self.values.contains_key(&lookup.raw) {
            add(Some(&HashSet::from([lookup.raw.clone()])));
        }
        add(self.by_text.get(&lookup.text));
        if lookup.by_hex_reading {
            add(self.by_hex_reading.get(&lookup.text));
        }
        if lookup.by_decimal_reading {
            add(self.by_decimal_reading.get(&lookup.text));
        }
        found.sort();
        found
    }

    /// The stored id a receipt id is for, learning from the match.
    fn resolve(&mut self, receipt_id: &str) -> Option<String> {
        let lookup = IdLookup::of(receipt_id)?;
        let candidates = self.candidates(&lookup);
        match decide(receipt_id, &candidates, self.learner.habit()) {
            Decision::Matched { index, evidence } => {
                if let Some(e) = evidence {
                    self.learner.observe(e);
                }
                Some(candidates[index].clone())
            }
            Decision::Ambiguous | Decision::NoMatch => None,
        }
    }

    /// The value of the message a receipt id is for (none when no message
    /// or more than one fits).
    pub fn get(&mut self, receipt_id: &str) -> Option<&V> {
        let id = self.resolve(receipt_id)?;
        self.values.get(&id)
    }

    /// Removes and returns the value of the message a receipt id is for.
    pub fn remove(&mut self, receipt_id: &str) -> Option<V> {
        let id = self.resolve(receipt_id)?;
        let forms = IdForms::of(&id);
        let unlink = |map: &mut HashMap<String, HashSet<String>>, key: Option<String>| {
            if let Some(key) = key
                && let Some(set) = map.get_mut(&key)
            {
                set.remove(&id);
                if set.is_empty() {
                    map.remove(&key);
                }
            }
        };
        unlink(&mut self.by_text, Some(forms.text));
        unlink(&mut self.by_hex_reading, forms.hex_as_decimal);
        unlink(&mut self.by_decimal_reading, forms.decimal_as_hex);
        self.values.remove(&id)
    }

    /// Number of ids stored.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// True when some habit ties the two ids: equal up to case, blanks, `0x`
/// and leading zeros, or one read as hex is the other read as decimal
/// (`1a2b` and `6699`). Symmetric; ambiguous for all-digit ids (`10` and
/// `16`), which is why matching goes through [`decide`].
pub fn ids_match(a: &str, b: &str) -> bool {
    let (a, b) = (IdForms::of(a), IdForms::of(b));
    !IdForms::habits_between(&a, &b).is_empty() || !IdForms::habits_between(&b, &a).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_convert_between_bases_at_any_length() {
        assert_eq!(convert("2a", 16, 10), "42");
        assert_eq!(convert("0000000042", 10, 16), "2a");
        assert_eq!(convert("000", 10, 16), "0");
        assert_eq!(
            convert("ffffffffffffffffffffffffffffffffff", 16, 10),
            "87112285931760246646623899502532662132735"
        );
        assert_eq!(
            convert("87112285931760246646623899502532662132735", 10, 16),
            "ffffffffffffffffffffffffffffffffff"
        );
    }

    proptest::proptest! {
        /// The 128-bit path and schoolbook division agree, on both sides of
        /// 128 bits (no id of 33 hex digits fits, nor a large one of 39
        /// decimal digits).
        #[test]
        fn both_ways_of_converting_agree(
            hex in "[0-9a-fA-F]{1,64}",
            decimal in "[0-9]{1,64}",
        ) {
            proptest::prop_assert_eq!(convert(&hex, 16, 10), convert_by_division(&hex, 16, 10));
            proptest::prop_assert_eq!(convert(&decimal, 10, 16), convert_by_division(&decimal, 10, 16));
            proptest::prop_assert_eq!(convert(&decimal, 10, 10), convert_by_division(&decimal, 10, 10));
        }
    }
}
