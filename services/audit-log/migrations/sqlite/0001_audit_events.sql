-- The audit trail: one hash chain per tenant, append-only.

CREATE TABLE audit_events (
    tenant             TEXT    NOT NULL,
    sequence           INTEGER NOT NULL,
    event_id           TEXT    NOT NULL,
    occurred_at_us     INTEGER NOT NULL,
    recorded_at_us     INTEGER NOT NULL,
    actor_service      TEXT    NOT NULL,
    actor_identifier   TEXT,
    connection_name    TEXT,
    identifier         TEXT,
    asana_user_gid     TEXT,
    account_id         TEXT,
    credential_version INTEGER,
    action             TEXT    NOT NULL,
    outcome            TEXT    NOT NULL,
    details            TEXT    NOT NULL,
    trace_id           TEXT,
    prev_hash          BLOB    NOT NULL,
    hash               BLOB    NOT NULL,
    PRIMARY KEY (tenant, sequence),
    UNIQUE (tenant, event_id)
) WITHOUT ROWID;

CREATE INDEX audit_events_by_time ON audit_events (tenant, occurred_at_us, sequence);

-- The newest link of each tenant's chain; appends write it first, which takes SQLite's
-- write lock and serialises them.
CREATE TABLE audit_chain_heads (
    tenant   TEXT    PRIMARY KEY,
    sequence INTEGER NOT NULL,
    hash     BLOB    NOT NULL
);

-- Where a retention purge cut each chain.
CREATE TABLE audit_checkpoints (
    tenant        TEXT    NOT NULL,
    sequence      INTEGER NOT NULL,
    hash          BLOB    NOT NULL,
    created_at_us INTEGER NOT NULL,
    PRIMARY KEY (tenant, sequence)
);

-- The database itself refuses changes to recorded events. The retention purge drops and
-- recreates the delete trigger inside its own transaction.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only (DELETE refused)');
END;
