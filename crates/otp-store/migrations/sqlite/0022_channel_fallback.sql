-- Channel fallback: an SMS send may ask for a call reading the same code when
-- the SMS is not verified in time, or comes back undeliverable, rejected,
-- expired or failed sooner. The call's phone credits are reserved when the
-- send is accepted (fallback_credits, in the send's debit) and go back once if
-- no call is made or the call fails. fallback_state: 'pending' (waiting for
-- fallback_due_at), 'started' (the send's delivery job now carries the call),
-- 'sent' (the call was answered and played), 'failed' (the call did not
-- reach anyone; credits back), 'refunded' (no call was needed: verified or
-- expired first; credits back), 'cancelled' (verified after the call was
-- queued, before it was placed; credits back). NULL everywhere: no fallback (every row before
-- this). Only adds columns and an index: older binaries ignore them.
ALTER TABLE otps ADD COLUMN fallback_channel TEXT;
ALTER TABLE otps ADD COLUMN fallback_voice TEXT;
ALTER TABLE otps ADD COLUMN fallback_due_at INTEGER;
ALTER TABLE otps ADD COLUMN fallback_credits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE otps ADD COLUMN fallback_state TEXT;
ALTER TABLE otps ADD COLUMN fallback_at INTEGER;
CREATE INDEX otps_fallback_pending ON otps (fallback_due_at) WHERE fallback_state = 'pending';
