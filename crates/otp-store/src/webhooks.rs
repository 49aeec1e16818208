//! Per-account webhooks: the callback URL, the durable queue of event
//! deliveries and the attempts made.
//!
//! Implemented for both backends in `sqlite/webhooks.rs` and `postgres/webhooks.rs`.

/// What the webhook dispatcher and its settings need from the store.
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync + 'static {}
