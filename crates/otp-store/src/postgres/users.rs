//! [`UserStore`] for the postgres backend.

use super::PgStore;
use crate::users::UserStore;

#[async_trait::async_trait]
impl UserStore for PgStore {}
