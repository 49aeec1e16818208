//! Embedded migrations, one list per backend, applied in order on open.
//!
//! Applied versions are recorded in `otpgate_migrations`; a migration runs in the
//! same transaction as its record, so a crash leaves it either applied or not.

/// One schema step.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "receipts",
        sql: include_str!("../migrations/sqlite/0002_receipts.sql"),
    },
    Migration {
        version: 3,
        name: "codes_at_rest",
        sql: include_str!("../migrations/sqlite/0003_codes_at_rest.sql"),
    },
    Migration {
        version: 4,
        name: "send_limits",
        sql: include_str!("../migrations/sqlite/0004_send_limits.sql"),
    },
    Migration {
        version: 5,
        name: "idempotency",
        sql: include_str!("../migrations/sqlite/0005_idempotency.sql"),
    },
    Migration {
        version: 6,
        name: "users",
        sql: include_str!("../migrations/sqlite/0006_users.sql"),
    },
    Migration {
        version: 7,
        name: "webhooks",
        sql: include_str!("../migrations/sqlite/0007_webhooks.sql"),
    },
    Migration {
        version: 8,
        name: "account_limits",
        sql: include_str!("../migrations/sqlite/0008_account_limits.sql"),
    },
    Migration {
        version: 9,
        name: "message_parts",
        sql: include_str!("../migrations/sqlite/0009_message_parts.sql"),
    },
    Migration {
        version: 10,
        name: "key_scopes",
        sql: include_str!("../migrations/sqlite/0010_key_scopes.sql"),
    },
    Migration {
        version: 11,
        name: "login_limits_and_sessions",
        sql: include_str!("../migrations/sqlite/0011_login_limits_and_sessions.sql"),
    },
    Migration {
        version: 12,
        name: "verify_refusals",
        sql: include_str!("../migrations/sqlite/0012_verify_refusals.sql"),
    },
    Migration {
        version: 13,
        name: "webhook_limits",
        sql: include_str!("../migrations/sqlite/0013_webhook_limits.sql"),
    },
    Migration {
        version: 14,
        name: "receipt_id_forms",
        sql: include_str!("../migrations/sqlite/0014_receipt_id_forms.sql"),
    },
    Migration {
        version: 15,
        name: "api_key_copies",
        sql: include_str!("../migrations/sqlite/0015_api_key_copies.sql"),
    },
    Migration {
        version: 16,
        name: "resends",
        sql: include_str!("../migrations/sqlite/0016_resends.sql"),
    },
    Migration {
        version: 17,
        name: "retention",
        sql: include_str!("../migrations/sqlite/0017_retention.sql"),
    },
];

pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "receipts",
        sql: include_str!("../migrations/postgres/0002_receipts.sql"),
    },
    Migration {
        version: 3,
        name: "codes_at_rest",
        sql: include_str!("../migrations/postgres/0003_codes_at_rest.sql"),
    },
    Migration {
        version: 4,
        name: "send_limits",
        sql: include_str!("../migrations/postgres/0004_send_limits.sql"),
    },
    Migration {
        version: 5,
        name: "idempotency",
        sql: include_str!("../migrations/postgres/0005_idempotency.sql"),
    },
    Migration {
        version: 6,
        name: "users",
        sql: include_str!("../migrations/postgres/0006_users.sql"),
    },
    Migration {
        version: 7,
        name: "webhooks",
        sql: include_str!("../migrations/postgres/0007_webhooks.sql"),
    },
    Migration {
        version: 8,
        name: "account_limits",
        sql: include_str!("../migrations/postgres/0008_account_limits.sql"),
    },
    Migration {
        version: 9,
        name: "message_parts",
        sql: include_str!("../migrations/postgres/0009_message_parts.sql"),
    },
    Migration {
        version: 10,
        name: "key_scopes",
        sql: include_str!("../migrations/postgres/0010_key_scopes.sql"),
    },
    Migration {
        version: 11,
        name: "login_limits_and_sessions",
        sql: include_str!("../migrations/postgres/0011_login_limits_and_sessions.sql"),
    },
    Migration {
        version: 12,
        name: "verify_refusals",
        sql: include_str!("../migrations/postgres/0012_verify_refusals.sql"),
    },
    Migration {
        version: 13,
        name: "webhook_limits",
        sql: include_str!("../migrations/postgres/0013_webhook_limits.sql"),
    },
    Migration {
        version: 14,
        name: "receipt_id_forms",
        sql: include_str!("../migrations/postgres/0014_receipt_id_forms.sql"),
    },
    Migration {
        version: 15,
        name: "api_key_copies",
        sql: include_str!("../migrations/postgres/0015_api_key_copies.sql"),
    },
    Migration {
        version: 16,
        name: "resends",
        sql: include_str!("../migrations/postgres/0016_resends.sql"),
    },
    Migration {
        version: 17,
        name: "retention",
        sql: include_str!("../migrations/postgres/0017_retention.sql"),
    },
];

pub(crate) const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS otpgate_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT   NOT NULL,
    applied_at BIGINT NOT NULL
)";
