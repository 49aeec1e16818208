-- The SMS-pumping guard's holds: a country, operator prefix or number block
-- (the E.164 number without its last three digits) whose sends are refused
-- until `until_at`, for one account or (account_id 0) across accounts.
-- Shared by every node of a database: a node that judges a burst places
-- the hold here and the others read it. `open` is 1 until the hold is
-- released or replaced after it ended, so one key has at most one open
-- hold. Only adds a table: older binaries ignore it.
CREATE TABLE guard_holds (
    id BIGSERIAL PRIMARY KEY,
    scope TEXT NOT NULL,
    value TEXT NOT NULL,
    account_id BIGINT NOT NULL,
    open SMALLINT NOT NULL DEFAULT 1,
    reason TEXT NOT NULL,
    volume BIGINT NOT NULL,
    conversion_ppm BIGINT NOT NULL,
    baseline_ppm BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    until_at BIGINT NOT NULL,
    released_at BIGINT,
    released_by TEXT
);
CREATE UNIQUE INDEX guard_holds_open ON guard_holds (scope, value, account_id) WHERE open = 1;
-- What nodes read when they refresh their copy of the holds.
CREATE INDEX guard_holds_until ON guard_holds (until_at);
