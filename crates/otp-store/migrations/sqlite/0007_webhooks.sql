-- Per-account webhooks: where events go and the secret they are signed with.
-- The secret is kept sealed like a code (AES-256-GCM under the current
-- encryption key, bound to the account), so a database dump does not reveal it.
-- `expired_swept_until`: the expiry sweep has emitted `expired` for this
-- account's codes that expired up to this time (it starts when the URL is set,
-- so older codes never produce events).
CREATE TABLE webhooks (
    account_id          INTEGER PRIMARY KEY,
    url                 TEXT    NOT NULL,
    secret_salt         BLOB    NOT NULL,
    secret_cipher       BLOB    NOT NULL,
    secret_key_id       TEXT    NOT NULL,
    expired_swept_until INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);

-- The webhook outbox: one row per event of an OTP, written in the transaction
-- that changed the OTP. A delivery is due when state = 'pending' and
-- next_attempt_at has passed; claiming pushes next_attempt_at to the end of a
-- lease. States: pending, delivered, failed (gave up), cancelled (webhook removed).
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL,
    otp_id          INTEGER NOT NULL,
    event           TEXT    NOT NULL,
    otp_status      TEXT    NOT NULL,
    occurred_at     INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
-- Each event of an OTP once, however many nodes or retries report it.
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (otp_id, event);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_account ON webhook_deliveries (account_id, id);

-- Every attempt to deliver an event: when, how long, and what came back.
CREATE TABLE webhook_attempts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
