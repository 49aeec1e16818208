-- Deliveries leased to a node (attempts in flight), counted per account by
-- every claim so that one account cannot hold every delivery slot.
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (account_id)
    WHERE state = 'pending' AND lease_owner IS NOT NULL;
