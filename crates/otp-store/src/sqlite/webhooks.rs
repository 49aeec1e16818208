//! [`WebhookStore`] for the sqlite backend.

use super::SqliteStore;
use crate::webhooks::WebhookStore;

#[async_trait::async_trait]
impl WebhookStore for SqliteStore {}
