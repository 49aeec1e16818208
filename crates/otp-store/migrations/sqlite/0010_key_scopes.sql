-- What each API key may do: a comma-separated list of `send`, `verify`, `read`
-- and `account`. Keys written before scopes existed (or by an older binary
-- during a rolling upgrade) get all four: they could send, verify, read and
-- manage the account's webhook, and `account` is what the webhook now needs.
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'send,verify,read,account';
