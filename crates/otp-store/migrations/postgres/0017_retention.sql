-- Data lifecycle: the retention purge removes each account's OTPs oldest
-- first and records here how far it got, so the OTPs left keep gapless
-- numbers otp_purged_through + 1 ..= otp_count (the list still turns an
-- offset into an index bound) and the list's count is their difference.
ALTER TABLE accounts ADD COLUMN otp_purged_through BIGINT NOT NULL DEFAULT 0;
-- What the idempotency purge walks, oldest first.
CREATE INDEX idempotency_created ON idempotency (created_at);
