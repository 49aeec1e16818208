-- Codes at rest and verification. The code is no longer stored in plain: a keyed
-- hash (otp_hash) verifies it and an AES-256-GCM cipher (otp_cipher, under the
-- encryption key key_id) lets the list show it until it is purged. Both are
-- bound to the OTP's account, destination and code_salt (random per OTP).
ALTER TABLE otps ADD COLUMN code_salt BYTEA;
ALTER TABLE otps ADD COLUMN otp_hash BYTEA;
ALTER TABLE otps ADD COLUMN otp_cipher BYTEA;
ALTER TABLE otps ADD COLUMN key_id TEXT;
ALTER TABLE otps ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE otps ADD COLUMN verify_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE otps ADD COLUMN verified_at BIGINT;

-- Codes sent before this version predate verification, so nobody can be waiting
-- to verify them, and SQL cannot encrypt them: they are dropped rather than kept
-- in plain. They expire at once and list masked; the stored message is masked too.
UPDATE otps SET expires_at = created_at, message = replace(template, '{otp}', '******');
ALTER TABLE otps DROP COLUMN otp;

-- What the purge task looks for: ciphers of codes past expiry.
CREATE INDEX otps_code_expiry ON otps (expires_at) WHERE otp_cipher IS NOT NULL;
