-- Resends that keep working: a generated-code send to a number with a live code
-- of the same account and key repeats that code and points to its first record
-- here. The first record keeps the shared attempt counter, expiry and verified
-- state; the others mirror them. NULL: a first send (every row before this).
ALTER TABLE otps ADD COLUMN resend_of INTEGER;
CREATE INDEX otps_resend_of ON otps (resend_of) WHERE resend_of IS NOT NULL;
