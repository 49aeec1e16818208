-- Disabling an account (operators: admin API, CLI, console): while
-- `disabled_at` is set, its keys and its users are refused and it sends
-- nothing; what it had already accepted is still delivered. Older binaries
-- never read the column: they do not enforce a disable, which the upgrade
-- notes say.
ALTER TABLE accounts ADD COLUMN disabled_at BIGINT;
