-- Pending OAuth consents: one row per authorization link. The state is stored only as its
-- SHA-256 and the PKCE verifier only as Transit ciphertext under the tenant's key.

CREATE TABLE oauth_states (
    state_sha256       TEXT    PRIMARY KEY,
    tenant             TEXT    NOT NULL,
    connection_name    TEXT    NOT NULL,
    identifier         TEXT    NOT NULL,
    verifier_ciphertext TEXT   NOT NULL,
    return_url         TEXT,
    created_at_us      BIGINT  NOT NULL,
    expires_at_us      BIGINT  NOT NULL,
    used_at_us         BIGINT
);

CREATE INDEX oauth_states_by_expiry ON oauth_states (expires_at_us);
