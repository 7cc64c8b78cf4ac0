-- Event subscriptions (Asana webhooks agentauth registered) and the events they delivered.
-- No webhook secret is kept here: token-vault keeps each in Vault.

CREATE TABLE event_subscriptions (
    subscription_id      TEXT    NOT NULL PRIMARY KEY,
    tenant               TEXT    NOT NULL,
    connection_name      TEXT    NOT NULL,
    identifier           TEXT    NOT NULL,
    resource_gid         TEXT    NOT NULL,
    -- Asana's WebhookFilter array as JSON text; empty for none.
    filters_json         TEXT    NOT NULL,
    -- Empty until Asana confirmed the webhook.
    webhook_gid          TEXT    NOT NULL,
    -- SHA-256 (hex) of the random key in the current webhook's target path: the intake takes
    -- a handshake or delivery only at the URL holding it. The key itself is known only to
    -- Asana; a new one is drawn for every webhook the subscription gets.
    target_key_sha256    TEXT    NOT NULL,
    -- PENDING, ACTIVE, FAILED or DELETED.
    state                TEXT    NOT NULL,
    failure_reason       TEXT    NOT NULL,
    -- The caller that created it.
    created_by           TEXT    NOT NULL,
    created_at_us        INTEGER NOT NULL,
    -- Since when it waits for a handshake (created, or being re-created after Asana
    -- deleted its webhook).
    pending_since_us     INTEGER NOT NULL,
    -- Set by the one handshake accepted since then.
    handshake_at_us      INTEGER,
    last_delivery_at_us  INTEGER,
    last_heartbeat_at_us INTEGER,
    events_received      INTEGER NOT NULL,
    -- Asana's events API position for gap-fill (an opaque token, not a secret); empty
    -- until one was obtained.
    sync_token           TEXT    NOT NULL,
    -- When its health is checked next (the replica that moves it does the check).
    next_check_at_us     INTEGER NOT NULL,
    last_checked_at_us   INTEGER,
    -- Asana's last_failure_at of the webhook, as last read.
    asana_last_failure_at_us INTEGER,
    -- When its webhook was last re-created after Asana deleted it.
    repaired_at_us       INTEGER,
    -- When events were lost for good (a sync token Asana no longer honoured).
    gap_lost_at_us       INTEGER
);

CREATE INDEX event_subscriptions_by_tenant ON event_subscriptions (tenant, subscription_id);
CREATE INDEX event_subscriptions_due ON event_subscriptions (state, next_check_at_us);

-- One row per delivered event, in the order deliveries were stored.
CREATE TABLE webhook_events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL,
    subscription_id TEXT    NOT NULL,
    tenant          TEXT    NOT NULL,
    connection_name TEXT    NOT NULL,
    identifier      TEXT    NOT NULL,
    webhook_gid     TEXT    NOT NULL,
    resource_gid    TEXT    NOT NULL,
    parent_gid      TEXT    NOT NULL,
    -- SHA-256 of what identifies the event: a redelivery, or the same event read again
    -- from Asana's events API, stores nothing.
    digest          TEXT    NOT NULL,
    event_json      TEXT    NOT NULL,
    -- 1 when it came from Asana's events API because the webhook missed it.
    backfilled      INTEGER NOT NULL,
    received_at_us  INTEGER NOT NULL,
    UNIQUE (subscription_id, digest)
);

CREATE INDEX webhook_events_by_tenant ON webhook_events (tenant, position);
CREATE INDEX webhook_events_by_age ON webhook_events (received_at_us);

-- The last position retention removed: a cursor before it is expired.
CREATE TABLE webhook_events_retention (
    purged_through INTEGER NOT NULL
);

INSERT INTO webhook_events_retention (purged_through) VALUES (0);
