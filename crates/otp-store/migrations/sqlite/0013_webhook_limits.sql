-- Deliveries leased to a node (attempts in flight), counted per account by
-- every claim so that one account cannot hold every delivery slot.
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (account_id)
    WHERE state = 'pending' AND lease_owner IS NOT NULL;

-- An account's own low_balance thresholds (NULL: the configured ones).
ALTER TABLE webhooks ADD COLUMN low_balance_sms_credits INTEGER;
ALTER TABLE webhooks ADD COLUMN low_balance_phone_credits INTEGER;
-- What a low_balance event reports (NULL for the other events): which
-- credits fell below which threshold, and both balances right after the send.
ALTER TABLE webhook_deliveries ADD COLUMN credits TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN threshold INTEGER;
ALTER TABLE webhook_deliveries ADD COLUMN sms_credits INTEGER;
ALTER TABLE webhook_deliveries ADD COLUMN phone_credits INTEGER;
