-- An account's default fallback call: a text send of the account that does
-- not say `fallback_channel` gets it, decided in the accepting transaction
-- (which reads these columns with the account's balances), so a change is
-- used at once by every node. fallback_channel: 'voice', or NULL for no
-- default (then the other two are NULL too). fallback_after_seconds: the wait
-- before the call; fallback_voice: the voice that reads the code. Only adds
-- columns: older binaries ignore them, and the sends they accept get no
-- default.
ALTER TABLE accounts ADD COLUMN fallback_channel TEXT;
ALTER TABLE accounts ADD COLUMN fallback_after_seconds INTEGER;
ALTER TABLE accounts ADD COLUMN fallback_voice TEXT;
