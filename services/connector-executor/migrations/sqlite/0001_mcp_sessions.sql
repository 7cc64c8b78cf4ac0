-- connector-executor's state: the sessions of virtual MCP servers, so they can be listed and
-- revoked. A bearer is checked without reading this table; replicas read its revocations.

CREATE TABLE mcp_sessions (
    session_id     TEXT    NOT NULL PRIMARY KEY,
    tenant         TEXT    NOT NULL,
    virtual_server TEXT    NOT NULL,
    identifier     TEXT    NOT NULL,
    -- The caller that minted it.
    minted_by      TEXT    NOT NULL,
    -- The signing key's id.
    key_id         TEXT    NOT NULL,
    created_at_us  INTEGER NOT NULL,
    -- Seconds since the Unix epoch, as the bearer says.
    expires_at     INTEGER NOT NULL,
    revoked_at_us  INTEGER,
    -- The caller that revoked it.
    revoked_by     TEXT
);

CREATE INDEX mcp_sessions_by_tenant ON mcp_sessions (tenant, session_id);
CREATE INDEX mcp_sessions_revoked ON mcp_sessions (revoked_at_us, expires_at);
CREATE INDEX mcp_sessions_expiry ON mcp_sessions (expires_at);

-- Protocol sessions (`Mcp-Session-Id`, 2025-06-18 / 2025-11-25) their clients ended with
-- DELETE: a request naming one is 404, until the bearer it was opened with expires.
CREATE TABLE ended_protocol_sessions (
    protocol_session_id TEXT    NOT NULL PRIMARY KEY,
    session_id          TEXT    NOT NULL,
    ended_at_us         INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL
);

CREATE INDEX ended_protocol_sessions_by_session ON ended_protocol_sessions (session_id);
CREATE INDEX ended_protocol_sessions_expiry ON ended_protocol_sessions (expires_at);
