-- schema-watcher's state: tool-list snapshots, approved baselines, drift and the feed that
-- WatchDrift streams resume from.

-- A connection's tool list, stored only when it differs from the one before (and baselines
-- assembled by a partial approval).
CREATE TABLE snapshots (
    snapshot_id     TEXT    NOT NULL PRIMARY KEY,
    connection_name TEXT    NOT NULL,
    taken_at_us     BIGINT NOT NULL,
    snapshot_hash   TEXT    NOT NULL,
    -- The whole definitions as listed, a JSON array in name order.
    tools           TEXT    NOT NULL,
    -- Whether a poll saw it (1), or an approval assembled it (0).
    polled          BIGINT NOT NULL
);

CREATE INDEX snapshots_by_connection ON snapshots (connection_name, taken_at_us);

-- Each connection's approved baseline.
CREATE TABLE baselines (
    connection_name TEXT    NOT NULL PRIMARY KEY,
    snapshot_id     TEXT    NOT NULL REFERENCES snapshots (snapshot_id),
    approved_by     TEXT    NOT NULL,
    approved_at_us  BIGINT NOT NULL
);

-- A tool's difference from the baseline, or an alert (empty tool_name).
CREATE TABLE drift (
    drift_id             TEXT    NOT NULL PRIMARY KEY,
    connection_name      TEXT    NOT NULL,
    tool_name            TEXT    NOT NULL,
    kind                 TEXT    NOT NULL,
    severity             TEXT    NOT NULL,
    -- A JSON array of {path, description, severity}.
    changes              TEXT    NOT NULL,
    detected_at_us       BIGINT NOT NULL,
    snapshot_id          TEXT    NOT NULL,
    baseline_snapshot_id TEXT    NOT NULL,
    baseline_hash        TEXT    NOT NULL,
    definition_hash      TEXT    NOT NULL,
    approved             BIGINT NOT NULL DEFAULT 0,
    superseded           BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX drift_open ON drift (connection_name, tool_name, approved, superseded);

-- What WatchDrift streams, in order: each new drift and each approved baseline.
CREATE TABLE feed (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_name TEXT    NOT NULL,
    drift_id        TEXT,
    snapshot_id     TEXT,
    approved_by     TEXT
);
