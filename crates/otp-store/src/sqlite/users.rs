//! [`UserStore`] for the sqlite backend.

use super::SqliteStore;
use crate::users::UserStore;

#[async_trait::async_trait]
impl UserStore for SqliteStore {}
