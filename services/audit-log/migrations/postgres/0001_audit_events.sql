-- The audit trail: one hash chain per tenant, append-only.

CREATE TABLE audit_events (
    tenant             TEXT   NOT NULL,
    sequence           BIGINT NOT NULL,
    event_id           TEXT   NOT NULL,
    occurred_at_us     BIGINT NOT NULL,
    recorded_at_us     BIGINT NOT NULL,
    actor_service      TEXT   NOT NULL,
    actor_identifier   TEXT,
    connection_name    TEXT,
    identifier         TEXT,
    asana_user_gid     TEXT,
    account_id         TEXT,
    credential_version BIGINT,
    action             TEXT   NOT NULL,
    outcome            TEXT   NOT NULL,
    details            TEXT   NOT NULL,
    trace_id           TEXT,
    prev_hash          BYTEA  NOT NULL,
    hash               BYTEA  NOT NULL,
    PRIMARY KEY (tenant, sequence),
    UNIQUE (tenant, event_id)
);

CREATE INDEX audit_events_by_time ON audit_events (tenant, occurred_at_us, sequence);

-- The newest link of each tenant's chain. Appends lock this row, which serialises them per
-- tenant across every replica and keeps sequences gapless.
CREATE TABLE audit_chain_heads (
    tenant   TEXT   PRIMARY KEY,
    sequence BIGINT NOT NULL,
    hash     BYTEA  NOT NULL
);

-- Where a retention purge cut each chain: the last purged sequence and its hash, so the
-- remaining events still verify.
CREATE TABLE audit_checkpoints (
    tenant        TEXT   NOT NULL,
    sequence      BIGINT NOT NULL,
    hash          BYTEA  NOT NULL,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant, sequence)
);

-- The database itself refuses changes to recorded events. Only the retention purge may
-- delete, and only inside a transaction that sets agentauth.audit_purge.
CREATE FUNCTION audit_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('agentauth.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

-- Roles for deployments: the service runs as a login that is a member of
-- agentauth_audit_writer (set `database.role`), which cannot update or delete events at all;
-- the purge switches to agentauth_audit_purger for its one transaction.
DO $$
BEGIN
    CREATE ROLE agentauth_audit_writer NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    CREATE ROLE agentauth_audit_purger NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT SELECT, INSERT ON audit_events TO agentauth_audit_writer;
GRANT SELECT, INSERT, UPDATE ON audit_chain_heads TO agentauth_audit_writer;
GRANT SELECT, INSERT ON audit_checkpoints TO agentauth_audit_writer;
GRANT SELECT, DELETE ON audit_events TO agentauth_audit_purger;
GRANT SELECT, INSERT ON audit_checkpoints TO agentauth_audit_purger;
