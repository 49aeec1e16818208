-- Idempotency-Key on sends: per account and key, the first accepted send and
-- what it was told, so a retry gets the same answer. The reply itself is not
-- kept (it holds the code): it is rebuilt from the OTP, whose code is sealed.
CREATE TABLE idempotency (
    account_id    INTEGER NOT NULL,
    idem_key      TEXT    NOT NULL,
    body_hash     BLOB    NOT NULL,
    otp_id        INTEGER NOT NULL,
    account_seq   INTEGER NOT NULL,
    sms_credits   INTEGER NOT NULL,
    phone_credits INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (account_id, idem_key)
);
