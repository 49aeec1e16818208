-- Users of an account: they log in with email and password to manage the
-- account's API key. `email` is kept normalised (trimmed, lower case), so the
-- uniqueness below is case-insensitive. `password_hash` is an Argon2id PHC
-- string; `session_version` is carried by every token a login issues and is
-- bumped when the password changes, which ends those tokens at once.
CREATE TABLE users (
    id                  INTEGER PRIMARY KEY,
    account_id          INTEGER NOT NULL,
    email               TEXT    NOT NULL UNIQUE,
    password_hash       TEXT    NOT NULL,
    session_version     INTEGER NOT NULL DEFAULT 1,
    created_at          INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL
);
CREATE INDEX users_account ON users (account_id);

-- A key issued through `generate-api-keys` belongs to its user; a user has at
-- most one key that is not revoked. Keys made by the CLI or the admin API have
-- no user.
ALTER TABLE api_keys ADD COLUMN user_id INTEGER;
CREATE UNIQUE INDEX api_keys_user_active ON api_keys (user_id)
    WHERE user_id IS NOT NULL AND revoked_at IS NULL;

-- Login attempts per email, known to a user or not (so a lockout tells nothing
-- about which emails exist): attempts counted in the window that began at
-- `window_start`. A successful login deletes the row.
CREATE TABLE login_attempts (
    email        TEXT    PRIMARY KEY,
    attempts     INTEGER NOT NULL,
    window_start INTEGER NOT NULL
);
CREATE INDEX login_attempts_window ON login_attempts (window_start);
