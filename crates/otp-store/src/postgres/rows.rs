//! [`Columns`] for `tokio_postgres` rows (a value of the wrong type or an
//! unexpected NULL is an error, never a panic), and the shared mappings of
//! [`crate::rows`] under the names the backend uses.

use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use crate::StoreError;
use crate::rows::Columns;
pub(super) use crate::rows::{account, key, ledger_entry, otp, verify};

fn get<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i)
        .map_err(|e| StoreError::Internal(format!("column {i}: {e}")))
}

impl Columns for Row {
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
