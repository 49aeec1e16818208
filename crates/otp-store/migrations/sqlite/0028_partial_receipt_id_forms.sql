-- Migration 14's indexes of a part's id forms held every part, and every
-- delivery paid for entries no lookup can reach:
-- - the indexes of the other readings (hex read as decimal, decimal read as
--   hex) held the parts whose id has no such reading (the column is NULL: ids
--   with letters past f or dashes, as the log driver and HTTP aggregators
--   give). A lookup asks for a value (`id_hex_decimal = ?`), which SQLite's
--   planner proves against `IS NOT NULL`;
-- - the index of the text form held the parts whose text form is the id as
--   the carrier wrote it (most ids: decimal digits, lower-case hex). The
--   lookup's first branch finds those by `message_id` (its list holds the
--   text form), so the text-form branch asks only for the others, with this
--   very condition.
-- Rebuilding them reads provider_messages once.
DROP INDEX provider_messages_id_text;
DROP INDEX provider_messages_id_hex_decimal;
DROP INDEX provider_messages_id_decimal_hex;
CREATE INDEX provider_messages_id_text ON provider_messages (route, id_text)
    WHERE id_text <> message_id;
CREATE INDEX provider_messages_id_hex_decimal ON provider_messages (route, id_hex_decimal)
    WHERE id_hex_decimal IS NOT NULL;
CREATE INDEX provider_messages_id_decimal_hex ON provider_messages (route, id_decimal_hex)
    WHERE id_decimal_hex IS NOT NULL;
