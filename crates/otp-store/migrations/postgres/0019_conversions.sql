-- Conversion tracking: what happened to sends per account, minute (of the
-- event, UTC), channel, route ('' before a carrier took the message), calling
-- code and operator prefix (calling code and three national digits), with
-- latency histograms (buckets: 1, 2, 5, 10, 30, 60, 120, 300, 900 seconds and
-- above) so medians are read without scanning OTPs. Written by the
-- transactions that change a status, one upsert per key; rows older than
-- eight days are purged. Only adds a table: older binaries ignore it.
CREATE TABLE conversions (
    account_id BIGINT NOT NULL,
    minute BIGINT NOT NULL,
    channel TEXT NOT NULL,
    route TEXT NOT NULL,
    country TEXT NOT NULL,
    prefix TEXT NOT NULL,
    sent BIGINT NOT NULL DEFAULT 0,
    submitted BIGINT NOT NULL DEFAULT 0,
    delivered BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    verified BIGINT NOT NULL DEFAULT 0,
    delivery_ms_sum BIGINT NOT NULL DEFAULT 0,
    verify_ms_sum BIGINT NOT NULL DEFAULT 0,
    delivery_b0 BIGINT NOT NULL DEFAULT 0,
    delivery_b1 BIGINT NOT NULL DEFAULT 0,
    delivery_b2 BIGINT NOT NULL DEFAULT 0,
    delivery_b3 BIGINT NOT NULL DEFAULT 0,
    delivery_b4 BIGINT NOT NULL DEFAULT 0,
    delivery_b5 BIGINT NOT NULL DEFAULT 0,
    delivery_b6 BIGINT NOT NULL DEFAULT 0,
    delivery_b7 BIGINT NOT NULL DEFAULT 0,
    delivery_b8 BIGINT NOT NULL DEFAULT 0,
    delivery_b9 BIGINT NOT NULL DEFAULT 0,
    verify_b0 BIGINT NOT NULL DEFAULT 0,
    verify_b1 BIGINT NOT NULL DEFAULT 0,
    verify_b2 BIGINT NOT NULL DEFAULT 0,
    verify_b3 BIGINT NOT NULL DEFAULT 0,
    verify_b4 BIGINT NOT NULL DEFAULT 0,
    verify_b5 BIGINT NOT NULL DEFAULT 0,
    verify_b6 BIGINT NOT NULL DEFAULT 0,
    verify_b7 BIGINT NOT NULL DEFAULT 0,
    verify_b8 BIGINT NOT NULL DEFAULT 0,
    verify_b9 BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, minute, channel, route, country, prefix)
);
-- What the purge walks, oldest first.
CREATE INDEX conversions_minute ON conversions (minute);
