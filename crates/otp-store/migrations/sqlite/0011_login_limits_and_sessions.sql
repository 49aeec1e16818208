-- Login attempts per client address and over the whole gateway, beside the
-- per-email count of `login_attempts`: `key` is chosen by the server, never by
-- a client (`a:<address>` for an address or IPv6 /64, `g` for the gateway), so
-- no email can collide with it. Rows whose window ended are deleted.
CREATE TABLE login_throttle (
    key          TEXT    PRIMARY KEY,
    attempts     INTEGER NOT NULL,
    window_start INTEGER NOT NULL
);
CREATE INDEX login_throttle_window ON login_throttle (window_start);

-- One row per login: the refresh token it issued (and every access token
-- refreshed from it) carries the row's id as `sid`. A token is accepted only
-- while its row is neither revoked (logout, password reset) nor expired.
-- `client` is the address the login came from, for the user's list.
CREATE TABLE refresh_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    client       TEXT
);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
