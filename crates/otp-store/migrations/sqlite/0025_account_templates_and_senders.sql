-- An account's approved message templates and its sender ID per route.
-- A template is kept normalized (whitespace runs collapsed, ends trimmed)
-- and keyed by the SHA-256 of that text, so the key stays small whatever
-- the template's length. An account with no row here sends any text. Only
-- adds tables: older binaries ignore them.
CREATE TABLE account_templates (
    account_id INTEGER NOT NULL,
    text_hash BLOB NOT NULL,
    text TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, text_hash)
);
CREATE TABLE account_senders (
    account_id INTEGER NOT NULL,
    route TEXT NOT NULL,
    sender TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, route)
);
