-- Per-destination send limits count an account's recent sends to one number.
CREATE INDEX otps_account_e164_created ON otps (account_id, e164, created_at);
