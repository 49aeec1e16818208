-- The OTPs that ended in a failure (undeliverable, expired by the carrier,
-- rejected, failed) are few; a search for one of those statuses read every
-- OTP of the account (or of all accounts) to find them. These partial indexes
-- hold only those rows, so an OTP enters one at most once, when it fails. The
-- lists add `status IN (...)` with this very list to use them.
CREATE INDEX otps_account_failures ON otps (account_id, account_seq)
    WHERE status IN ('undeliverable', 'expired', 'rejected', 'failed');
CREATE INDEX otps_failures ON otps (id)
    WHERE status IN ('undeliverable', 'expired', 'rejected', 'failed');
