-- The webhook secrets token-vault keeps in Vault (PutWebhookSecret), by tenant and
-- subscription: their KV paths are hashes, and Vault is never listed, so this is how a key
-- rotation finds every one to re-wrap and a tenant's deletion every one to destroy. No secret
-- is here.

CREATE TABLE webhook_secrets (
    tenant           TEXT  NOT NULL,
    subscription_id  TEXT  NOT NULL,
    PRIMARY KEY (tenant, subscription_id)
);
