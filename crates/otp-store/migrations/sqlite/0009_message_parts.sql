-- How many parts the OTP's message was sent in, on each part's row, so a
-- delivered receipt for a one-part message needs no count of its siblings.
-- 0: unknown (rows written before this column): the parts are counted.
ALTER TABLE provider_messages ADD COLUMN parts INTEGER NOT NULL DEFAULT 0;
