-- Idempotency-Key on sends: per account and key, the first accepted send and
-- what it was told, so a retry gets the same answer. The reply itself is not
-- kept (it holds the code): it is rebuilt from the OTP, whose code is sealed.
CREATE TABLE idempotency (
    account_id    BIGINT  NOT NULL,
    idem_key      TEXT    NOT NULL,
    body_hash     BYTEA   NOT NULL,
    otp_id        BIGINT  NOT NULL,
    account_seq   BIGINT  NOT NULL,
    sms_credits   BIGINT  NOT NULL,
    phone_credits BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL,
    PRIMARY KEY (account_id, idem_key)
);
