-- Conversion tracking: what happened to sends per account, minute (of the
-- event, UTC), channel, route ('' before a carrier took the message), calling
-- code and operator prefix (calling code and three national digits), with
-- latency histograms (buckets: 1, 2, 5, 10, 30, 60, 120, 300, 900 seconds and
-- above) so medians are read without scanning OTPs. Written by the
-- transactions that change a status, one upsert per key; rows older than
-- eight days are purged. Only adds a table: older binaries ignore it.
CREATE TABLE conversions (
    account_id INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    channel TEXT NOT NULL,
    route TEXT NOT NULL,
    country TEXT NOT NULL,
    prefix TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    submitted INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    verified INTEGER NOT NULL DEFAULT 0,
    delivery_ms_sum INTEGER NOT NULL DEFAULT 0,
    verify_ms_sum INTEGER NOT NULL DEFAULT 0,
    delivery_b0 INTEGER NOT NULL DEFAULT 0,
    delivery_b1 INTEGER NOT NULL DEFAULT 0,
    delivery_b2 INTEGER NOT NULL DEFAULT 0,
    delivery_b3 INTEGER NOT NULL DEFAULT 0,
    delivery_b4 INTEGER NOT NULL DEFAULT 0,
    delivery_b5 INTEGER NOT NULL DEFAULT 0,
    delivery_b6 INTEGER NOT NULL DEFAULT 0,
    delivery_b7 INTEGER NOT NULL DEFAULT 0,
    delivery_b8 INTEGER NOT NULL DEFAULT 0,
    delivery_b9 INTEGER NOT NULL DEFAULT 0,
    verify_b0 INTEGER NOT NULL DEFAULT 0,
    verify_b1 INTEGER NOT NULL DEFAULT 0,
    verify_b2 INTEGER NOT NULL DEFAULT 0,
    verify_b3 INTEGER NOT NULL DEFAULT 0,
    verify_b4 INTEGER NOT NULL DEFAULT 0,
    verify_b5 INTEGER NOT NULL DEFAULT 0,
    verify_b6 INTEGER NOT NULL DEFAULT 0,
    verify_b7 INTEGER NOT NULL DEFAULT 0,
    verify_b8 INTEGER NOT NULL DEFAULT 0,
    verify_b9 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, minute, channel, route, country, prefix)
);
-- What the purge walks, oldest first.
CREATE INDEX conversions_minute ON conversions (minute);
