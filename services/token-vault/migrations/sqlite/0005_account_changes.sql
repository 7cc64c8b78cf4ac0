-- The change log executors follow (WatchAccountChanges): one row per change that makes a
-- cached token or session stale. Sequences are assigned under the lock of the one head row
-- in the transaction that inserts the change, so they commit in order and without gaps.

CREATE TABLE account_changes (
    sequence           INTEGER PRIMARY KEY,
    tenant             TEXT    NOT NULL,
    connection_name    TEXT    NOT NULL,
    identifier         TEXT    NOT NULL,
    kind               TEXT    NOT NULL,
    credential_version INTEGER NOT NULL,
    changed_at_us      INTEGER NOT NULL
);

CREATE INDEX account_changes_by_time ON account_changes (changed_at_us);

CREATE TABLE account_change_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    sequence INTEGER NOT NULL
);

INSERT INTO account_change_head (id, sequence) VALUES (1, 0);
