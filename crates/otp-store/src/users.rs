//! Users of an account (email and password) and their sessions.
//!
//! Implemented for both backends in `sqlite/users.rs` and `postgres/users.rs`.

/// What the login, user-detail and key-management endpoints need from the store.
#[async_trait::async_trait]
pub trait UserStore: Send + Sync + 'static {}
