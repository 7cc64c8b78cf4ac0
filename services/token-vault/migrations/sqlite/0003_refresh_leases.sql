-- Refresh leases: at most one upstream refresh per account at a time across all replicas.
-- A lease is taken by inserting its row, or by taking over a row whose lease has expired, and
-- is released only by its owner (a random value per acquisition).

CREATE TABLE refresh_leases (
    account_id     TEXT    PRIMARY KEY,
    owner          TEXT    NOT NULL,
    expires_at_us  INTEGER NOT NULL
);
