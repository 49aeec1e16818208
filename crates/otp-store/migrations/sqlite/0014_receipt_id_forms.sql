-- The canonical forms of each part's carrier id (smpp::receipt::ids::IdForms):
-- its text without padding, case or 0x; its hex reading in decimal; its
-- decimal reading in hex. A receipt finds its part through them whichever way
-- the SMSC spells the id. NULL on rows written before: those are found by the
-- id as written.
ALTER TABLE provider_messages ADD COLUMN id_text TEXT;
ALTER TABLE provider_messages ADD COLUMN id_hex_decimal TEXT;
ALTER TABLE provider_messages ADD COLUMN id_decimal_hex TEXT;
CREATE INDEX provider_messages_id_text ON provider_messages (route, id_text);
CREATE INDEX provider_messages_id_hex_decimal ON provider_messages (route, id_hex_decimal);
CREATE INDEX provider_messages_id_decimal_hex ON provider_messages (route, id_decimal_hex);

-- Receipts that matched no message (or more than one), with the id and text
-- as the SMSC sent them: the last few hundred per route, for a day.
CREATE TABLE unmatched_receipts (
    id          INTEGER PRIMARY KEY,
    route       TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX unmatched_receipts_route ON unmatched_receipts (route, id);
CREATE INDEX unmatched_receipts_received ON unmatched_receipts (received_at);
