//! [`Columns`] for `rusqlite` rows, and the shared mappings of
//! [`crate::rows`] in the shape rusqlite's closures take.
//!
//! A mapping's [`StoreError`] travels through rusqlite as a
//! conversion failure and [`map_err`](super::map_err) takes it out again,
//! so a corrupt row reads back as the error that names it.

use rusqlite::Row;

use crate::model::VerifyRow;
use crate::rows::{self, Columns, OtpRow};
use crate::{Account, ApiKeyRecord, LedgerEntry, StoreError};

fn get<T: rusqlite::types::FromSql>(r: &Row<'_>, i: usize) -> Result<T, StoreError> {
    r.get(i).map_err(super::map_err)
}

impl Columns for Row<'_> {
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        get(self, i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        get(self, i)
    }
    fn opt_float(&self, i: usize) -> Result<Option<f64>, StoreError> {
        get(self, i)
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        get(self, i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        get(self, i)
    }
    fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        get(self, i)
    }
    fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        get(self, i)
    }
}

/// A mapping's result as rusqlite's closures return it: the error rides in
/// a conversion failure (its column index and type are not used).
pub(super) fn lift<T>(mapped: Result<T, StoreError>) -> rusqlite::Result<T> {
    mapped.map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Null, Box::new(e))
    })
}

/// [`rows::otp`] of a row that selected [`rows::OTP_COLUMNS`] first.
pub(super) fn otp(r: &Row<'_>) -> rusqlite::Result<OtpRow> {
    lift(rows::otp(r, 0))
}

/// [`rows::verify`].
pub(super) fn verify(r: &Row<'_>) -> rusqlite::Result<VerifyRow> {
    lift(rows::verify(r))
}

/// [`rows::account`].
pub(super) fn account(r: &Row<'_>) -> rusqlite::Result<Account> {
    lift(rows::account(r))
}

/// [`rows::ledger_entry`].
pub(super) fn ledger_entry(r: &Row<'_>) -> rusqlite::Result<LedgerEntry> {
    lift(rows::ledger_entry(r))
}

/// [`rows::key`].
pub(super) fn key(r: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    lift(rows::key(r))
}
