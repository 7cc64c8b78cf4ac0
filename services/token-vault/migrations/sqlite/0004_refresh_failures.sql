-- Refresh backoff: how many refreshes in a row failed transiently, and when the last one did,
-- so the sweeper retries an EXPIRED account with backoff instead of on every sweep.

ALTER TABLE accounts ADD COLUMN refresh_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN refresh_failed_at_us INTEGER;

CREATE INDEX accounts_by_expiry ON accounts (expires_at_us);
