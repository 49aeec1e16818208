-- An encrypted copy of each API key a user generates, so `get-api-keys` can
-- show the usable key as TingTing's does. Sealed like a webhook secret
-- (AES-256-GCM under the current encryption key, bound to the account), so a
-- database dump does not reveal it. NULL: no copy (keys made before this
-- migration, or by the command line and the key API, which show a key once).
ALTER TABLE api_keys ADD COLUMN copy_salt BYTEA;
ALTER TABLE api_keys ADD COLUMN copy_cipher BYTEA;
ALTER TABLE api_keys ADD COLUMN copy_key_id TEXT;
