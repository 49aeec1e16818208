-- Operators: a user who may open the console's operator pages (every
-- account, the routes), made with `otpgate users create --operator`.
-- Older binaries never read the column, and its default keeps their users
-- account users.
ALTER TABLE users ADD COLUMN operator BOOLEAN NOT NULL DEFAULT FALSE;
