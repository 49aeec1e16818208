//! [`WebhookStore`] for the postgres backend.

use super::PgStore;
use crate::webhooks::WebhookStore;

#[async_trait::async_trait]
impl WebhookStore for PgStore {}
