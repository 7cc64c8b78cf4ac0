-- Connected accounts: the non-secret record of each end user's credential for one connection.
-- Secrets live only in Vault; nothing here is a token.

CREATE TABLE accounts (
    account_id         TEXT    PRIMARY KEY,
    tenant             TEXT    NOT NULL,
    connection_name    TEXT    NOT NULL,
    identifier         TEXT    NOT NULL,
    state              TEXT    NOT NULL CHECK (state IN ('PENDING', 'ACTIVE', 'EXPIRED', 'NEEDS_REAUTH', 'REVOKED')),
    state_reason       TEXT    NOT NULL DEFAULT '',
    auth_method        TEXT    NOT NULL CHECK (auth_method IN ('oauth', 'pat', 'service_account')),
    asana_user_gid     TEXT    NOT NULL DEFAULT '',
    asana_user_name    TEXT    NOT NULL DEFAULT '',
    credential_version INTEGER NOT NULL DEFAULT 0,
    expires_at_us      INTEGER,
    scopes             TEXT    NOT NULL DEFAULT '[]',
    created_at_us      INTEGER NOT NULL,
    updated_at_us      INTEGER NOT NULL,
    last_refreshed_at_us INTEGER,
    UNIQUE (tenant, connection_name, identifier)
);

CREATE INDEX accounts_by_tenant ON accounts (tenant, account_id);
CREATE INDEX accounts_by_identifier ON accounts (tenant, identifier);
