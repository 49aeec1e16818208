-- Delivery receipts, status history and refunds.
ALTER TABLE otps ADD COLUMN route TEXT;
ALTER TABLE otps ADD COLUMN error_code TEXT;
ALTER TABLE otps ADD COLUMN delivered_at INTEGER;
ALTER TABLE otps ADD COLUMN refunded INTEGER NOT NULL DEFAULT 0;

-- Every change of an OTP's status after it was queued, oldest first.
CREATE TABLE otp_events (
    id         INTEGER PRIMARY KEY,
    otp_id     INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    route      TEXT,
    detail     TEXT,
    error_code TEXT
);
CREATE INDEX otp_events_otp ON otp_events (otp_id, id);

-- One row per message part a carrier accepted, keyed the way receipts name it.
CREATE TABLE provider_messages (
    route      TEXT    NOT NULL,
    message_id TEXT    NOT NULL,
    otp_id     INTEGER NOT NULL,
    part       INTEGER NOT NULL,
    state      TEXT,
    PRIMARY KEY (route, message_id)
);
CREATE INDEX provider_messages_otp ON provider_messages (otp_id);
