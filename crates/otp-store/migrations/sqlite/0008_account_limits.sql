-- Per-account and per-key send rates and the daily spend cap. The counters live
-- on the rows the accept transaction already locks and rewrites, so they cost
-- no extra statement per send. NULL limits mean "the configured default".
ALTER TABLE accounts ADD COLUMN max_rps INTEGER;
ALTER TABLE accounts ADD COLUMN daily_spend_cap INTEGER;
ALTER TABLE accounts ADD COLUMN rate_second INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN rate_current INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN rate_previous INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN spend_day INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN spend_today INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN rate_second INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN rate_current INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN rate_previous INTEGER NOT NULL DEFAULT 0;
