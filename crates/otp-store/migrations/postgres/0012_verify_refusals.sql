-- Refused verifications of a code that can no longer verify (dead after its
-- attempts, or expired). The first is recorded in otp_events; the rest are only
-- counted here, so a flood of guesses at a dead code cannot grow its history.
ALTER TABLE otps ADD COLUMN verify_refusals BIGINT NOT NULL DEFAULT 0;
