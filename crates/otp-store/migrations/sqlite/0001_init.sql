-- Times are microseconds since the Unix epoch, UTC. Money is whole credits.
CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    sms_credits   INTEGER NOT NULL CHECK (sms_credits >= 0),
    phone_credits INTEGER NOT NULL CHECK (phone_credits >= 0),
    otp_count     INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    key_id      TEXT    NOT NULL UNIQUE,
    account_id  INTEGER NOT NULL,
    secret_hash BLOB    NOT NULL,
    label       TEXT,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    last_used   INTEGER
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE otps (
    id                  INTEGER PRIMARY KEY,
    account_id          INTEGER NOT NULL,
    account_seq         INTEGER NOT NULL,
    api_key_id          INTEGER,
    phone_number        TEXT    NOT NULL,
    e164                TEXT    NOT NULL,
    template            TEXT    NOT NULL,
    message             TEXT    NOT NULL,
    otp                 TEXT    NOT NULL,
    otp_options         TEXT    NOT NULL,
    channel             TEXT    NOT NULL,
    voice_input         TEXT,
    length_factor       REAL,
    company_name        TEXT,
    segments            INTEGER NOT NULL,
    credits_used        INTEGER NOT NULL,
    status              TEXT    NOT NULL,
    status_at           INTEGER NOT NULL,
    error               TEXT,
    provider_message_id TEXT,
    created_at          INTEGER NOT NULL
);
CREATE UNIQUE INDEX otps_account_seq ON otps (account_id, account_seq);
CREATE INDEX otps_account_phone ON otps (account_id, phone_number, account_seq);
CREATE INDEX otps_account_channel ON otps (account_id, channel, account_seq);
CREATE INDEX otps_account_created ON otps (account_id, created_at);

-- The outbox. A job is due when state = 'queued' and next_attempt_at has passed;
-- claiming pushes next_attempt_at to the end of a lease, so a node that dies
-- mid-delivery gives its jobs back when the lease runs out.
CREATE TABLE delivery_jobs (
    id              INTEGER PRIMARY KEY,
    otp_id          INTEGER NOT NULL UNIQUE,
    channel         TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    last_error      TEXT,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX delivery_jobs_due ON delivery_jobs (channel, next_attempt_at) WHERE state = 'queued';

CREATE TABLE ledger (
    id          INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    sms_delta   INTEGER NOT NULL,
    phone_delta INTEGER NOT NULL,
    otp_id      INTEGER,
    note        TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX ledger_account ON ledger (account_id, id);
