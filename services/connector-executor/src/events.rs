//! Event subscriptions and the events their webhooks delivered, in connector-executor's
//! database, shared by every replica.
//!
//! - A subscription is recorded PENDING before Asana is asked to create its webhook, so the
//!   handshake finds it on whichever replica it lands; exactly one handshake is accepted
//!   (an atomic update of a pending row still inside its handshake window).
//! - Each accepted delivery is stored before the intake answers: one row per event,
//!   deduplicated by (subscription, digest of the event), so a redelivery stores nothing.
//!   Deliveries arriving together are committed together by one writer (group commit), each
//!   answered only once its group committed.
//! - Positions order the events: SQLite assigns them under its single writer; on PostgreSQL the
//!   writers hold one advisory lock, so positions commit in order and a reader that saw
//!   position n never later finds a smaller one appear.
//! - Readers wake on this replica's own writes at once, on other replicas' through PostgreSQL
//!   `LISTEN/NOTIFY`, and otherwise look again every `poll_interval`.

use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentauth_db::{Backend, Database};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;
use sqlx::any::AnyRow;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// The PostgreSQL channel writers notify and readers listen on.
const CHANNEL: &str = "agentauth_webhook_events";
/// The advisory lock that orders writers on PostgreSQL.
const WRITE_LOCK: i64 = 0x6167_6577_6831;

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Pending,
    Active,
    Failed,
    Deleted,
    Paused,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Active => "ACTIVE",
            Self::Failed => "FAILED",
            Self::Deleted => "DELETED",
            Self::Paused => "PAUSED",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        Ok(match text {
            "PENDING" => Self::Pending,
            "ACTIVE" => Self::Active,
            "FAILED" => Self::Failed,
            "DELETED" => Self::Deleted,
            "PAUSED" => Self::Paused,
            other => {
                return Err(sqlx::Error::Decode(
                    format!("unknown subscription state {other:?}").into(),
                ));
            }
        })
    }

    /// Whether its webhook's deliveries are still taken.
    pub(crate) fn receives(self) -> bool {
        matches!(self, Self::Pending | Self::Active)
    }

    /// Whether it has ended (failed or deleted).
    pub(crate) fn ended(self) -> bool {
        matches!(self, Self::Failed | Self::Deleted)
    }
}

/// One subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub subscription_id: String,
    pub tenant: String,
    pub connection_name: String,
    pub identifier: String,
    pub resource_gid: String,
    pub filters_json: String,
    pub webhook_gid: String,
    pub target_key_sha256: String,
    pub state: State,
    pub failure_reason: String,
    pub created_by: String,
    pub created_at_us: i64,
    pub pending_since_us: i64,
    pub handshake_at_us: Option<i64>,
    pub last_delivery_at_us: Option<i64>,
    pub last_heartbeat_at_us: Option<i64>,
    pub events_received: i64,
    pub sync_token: String,
    pub last_checked_at_us: Option<i64>,
    pub asana_last_failure_at_us: Option<i64>,
    pub repaired_at_us: Option<i64>,
    pub gap_lost_at_us: Option<i64>,
}

/// One stored event and its position.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub position: i64,
    pub event_id: String,
    pub subscription_id: String,
    pub connection_name: String,
    pub identifier: String,
    pub webhook_gid: String,
    pub event: Value,
    pub received_at_us: i64,
    pub backfilled: bool,
}

/// What [`Events::page`] reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventFilter {
    pub tenant: String,
    pub connection_name: Option<String>,
    pub resource_gid: Option<String>,
}

const SUBSCRIPTION_COLUMNS: &str = "subscription_id, tenant, connection_name, identifier, resource_gid, filters_json, webhook_gid, target_key_sha256, state, failure_reason, created_by, created_at_us, pending_since_us, handshake_at_us, last_delivery_at_us, last_heartbeat_at_us, events_received, sync_token, last_checked_at_us, asana_last_failure_at_us, repaired_at_us, gap_lost_at_us";

fn read_subscription(row: &AnyRow) -> Result<Subscription, sqlx::Error> {
    Ok(Subscription {
        subscription_id: row.try_get("subscription_id")?,
        tenant: row.try_get("tenant")?,
        connection_name: row.try_get("connection_name")?,
        identifier: row.try_get("identifier")?,
        resource_gid: row.try_get("resource_gid")?,
        filters_json: row.try_get("filters_json")?,
        webhook_gid: row.try_get("webhook_gid")?,
        target_key_sha256: row.try_get("target_key_sha256")?,
        state: State::parse(&row.try_get::<String, _>("state")?)?,
        failure_reason: row.try_get("failure_reason")?,
        created_by: row.try_get("created_by")?,
        created_at_us: row.try_get("created_at_us")?,
        pending_since_us: row.try_get("pending_since_us")?,
        handshake_at_us: row.try_get("handshake_at_us")?,
        last_delivery_at_us: row.try_get("last_delivery_at_us")?,
        last_heartbeat_at_us: row.try_get("last_heartbeat_at_us")?,
        events_received: row.try_get("events_received")?,
        sync_token: row.try_get("sync_token")?,
        last_checked_at_us: row.try_get("last_checked_at_us")?,
        asana_last_failure_at_us: row.try_get("asana_last_failure_at_us")?,
        repaired_at_us: row.try_get("repaired_at_us")?,
        gap_lost_at_us: row.try_get("gap_lost_at_us")?,
    })
}

fn read_event(row: &AnyRow) -> Result<StoredEvent, sqlx::Error> {
    let text: String = row.try_get("event_json")?;
    Ok(StoredEvent {
        position: row.try_get("position")?,
        event_id: row.try_get("event_id")?,
        subscription_id: row.try_get("subscription_id")?,
        connection_name: row.try_get("connection_name")?,
        identifier: row.try_get("identifier")?,
        webhook_gid: row.try_get("webhook_gid")?,
        event: serde_json::from_str(&text)
            .map_err(|e| sqlx::Error::Decode(format!("a stored event: {e}").into()))?,
        received_at_us: row.try_get("received_at_us")?,
        backfilled: row.try_get::<i64, _>("backfilled")? != 0,
    })
}

/// UNAVAILABLE, its cause in the log only (a driver's text is no answer to a client).
fn unavailable(error: &sqlx::Error) -> Error {
    tracing::warn!(%error, "connector-executor's event store failed");
    Error::Unavailable {
        dependency: "connector-executor's database",
        reason: "it did not answer as expected".to_owned(),
    }
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
        })
}

/// The digest an event is recognised by, whichever way it came (a webhook delivery, a
/// redelivery, Asana's events API): SHA-256 of what identifies it (who, when to the
/// microsecond, what, which resource and parent, which field changed how, and the gids or
/// values involved), so that details one source adds and the other lacks (names, nested
/// fields), key order or whitespace do not make it new.
fn digest(event: &Value) -> String {
    let gid = |value: &Value| value.get("gid").cloned().unwrap_or(Value::Null);
    // A changed value is named by its gid when it is an object, else it is itself.
    let value = |value: &Value| match value {
        Value::Object(_) => gid(value),
        other => other.clone(),
    };
    let change = &event["change"];
    let created_at = event["created_at"].as_str().map_or(Value::Null, |at| {
        prost_types::Timestamp::from_str(at).map_or_else(
            |_| Value::from(at),
            |at| Value::from(format!("{}.{:09}", at.seconds, at.nanos)),
        )
    });
    let identity = serde_json::json!([
        gid(&event["user"]),
        created_at,
        event["action"],
        gid(&event["resource"]),
        gid(&event["parent"]),
        change["field"],
        change["action"],
        value(&change["new_value"]),
        value(&change["added_value"]),
        value(&change["removed_value"]),
    ]);
    hex::encode(Sha256::digest(identity.to_string().as_bytes()))
}

/// Microseconds of a duration, saturated.
pub(crate) fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// The most stores one transaction commits.
const MAX_GROUP: usize = 256;

/// One store waiting for the writer, and where its outcome goes: how many events were new and
/// the newest position stored.
struct Write {
    subscription: Subscription,
    events: Vec<Value>,
    backfilled: bool,
    done: oneshot::Sender<Result<(u64, i64), Error>>,
}

/// Commits the stores waiting in `queue` in groups until every sender is gone.
async fn write_groups(database: Database, mut queue: mpsc::Receiver<Write>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(write) => group.push(write),
                Err(_) => break,
            }
        }
        match commit(&database, &group).await {
            Ok(outcomes) => {
                for (write, outcome) in group.into_iter().zip(outcomes) {
                    let _ = write.done.send(Ok(outcome));
                }
            }
            // One store's failure must not fail the others: each is tried alone.
            Err(_) if group.len() > 1 => {
                for write in group {
                    let outcome = commit(&database, std::slice::from_ref(&write))
                        .await
                        .map(|outcomes| outcomes[0]);
                    let _ = write.done.send(outcome);
                }
            }
            Err(error) => {
                for write in group {
                    let _ = write.done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// One transaction for every store of `group`: per store, how many events were new and the
/// newest position stored. Nothing of any is stored if it fails.
async fn commit(database: &Database, group: &[Write]) -> Result<Vec<(u64, i64)>, Error> {
    let now = now_us();
    let mut tx = database.pool().begin().await.map_err(|e| unavailable(&e))?;
    if database.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&e))?;
    }
    let mut outcomes = Vec::with_capacity(group.len());
    for write in group {
        let subscription = &write.subscription;
        let (mut stored, mut newest) = (0, 0);
        for event in &write.events {
            let gid = |key: &str| {
                event
                    .get(key)
                    .and_then(|v| v.get("gid"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let done = sqlx::query(
                "INSERT INTO webhook_events (event_id, subscription_id, tenant, connection_name, identifier, webhook_gid, resource_gid, parent_gid, digest, event_json, received_at_us, backfilled) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (subscription_id, digest) DO NOTHING RETURNING position",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(&subscription.subscription_id)
            .bind(&subscription.tenant)
            .bind(&subscription.connection_name)
            .bind(&subscription.identifier)
            .bind(&subscription.webhook_gid)
            .bind(gid("resource"))
            .bind(gid("parent"))
            .bind(digest(event))
            .bind(event.to_string())
            .bind(now)
            .bind(i64::from(write.backfilled))
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| unavailable(&e))?;
            if let Some(row) = done {
                stored += 1;
                newest = row.try_get("position").map_err(|e| unavailable(&e))?;
            }
        }
        sqlx::query(
            "UPDATE event_subscriptions SET last_delivery_at_us = CASE WHEN $1 = 1 THEN last_delivery_at_us ELSE $2 END, events_received = events_received + $3 WHERE subscription_id = $4",
        )
        .bind(i64::from(write.backfilled))
        .bind(now)
        .bind(i64::try_from(stored).unwrap_or(i64::MAX))
        .bind(&subscription.subscription_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| unavailable(&e))?;
        outcomes.push((stored, newest));
    }
    if database.backend() == Backend::Postgres && outcomes.iter().any(|(stored, _)| *stored > 0) {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&e))?;
    }
    tx.commit().await.map_err(|e| unavailable(&e))?;
    Ok(outcomes)
}

/// The subscription and event store, and this replica's view of the newest position.
#[derive(Debug)]
pub(crate) struct Events {
    database: Database,
    /// The newest position this replica knows to be committed (its own writes, or a
    /// notification); readers wait on it.
    newest: watch::Sender<i64>,
    poll_interval: Duration,
    migrated: AtomicBool,
    /// Stores for the writer that commits them in groups.
    writes: mpsc::Sender<Write>,
}

impl Events {
    /// The store on `database`, its writer started (it stops when the store is dropped).
    pub(crate) fn new(database: Database, poll_interval: Duration) -> Arc<Self> {
        let (writes, queue) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(write_groups(database.clone(), queue));
        Arc::new(Self {
            writes,
            database,
            newest: watch::Sender::new(0),
            poll_interval,
            migrated: AtomicBool::new(false),
        })
    }

    /// Whether the schema is migrated: until then the service is not ready.
    pub(crate) fn started(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }

    /// Runs a statement that changes rows; how many it changed.
    async fn changed(
        &self,
        statement: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<u64, Error> {
        statement
            .execute(self.database.pool())
            .await
            .map(|done| done.rows_affected())
            .map_err(|e| unavailable(&e))
    }

    /// Records a new subscription, PENDING, its health first checked at `next_check_at_us`.
    pub(crate) async fn create(
        &self,
        subscription: &Subscription,
        next_check_at_us: i64,
    ) -> Result<(), Error> {
        self.changed(
sqlx::query(
            "INSERT INTO event_subscriptions (subscription_id, tenant, connection_name, identifier, resource_gid, filters_json, webhook_gid, target_key_sha256, state, failure_reason, created_by, created_at_us, pending_since_us, events_received, sync_token, next_check_at_us) VALUES ($1, $2, $3, $4, $5, $6, '', '', $7, '', $8, $9, $9, 0, $10, $11)",
        )
        .bind(&subscription.subscription_id)
        .bind(&subscription.tenant)
        .bind(&subscription.connection_name)
        .bind(&subscription.identifier)
        .bind(&subscription.resource_gid)
        .bind(&subscription.filters_json)
        .bind(State::Pending.as_str())
        .bind(&subscription.created_by)
        .bind(subscription.created_at_us)
        .bind(&subscription.sync_token)
        .bind(next_check_at_us),
        )
        .await?;
        Ok(())
    }

    /// The subscription `id`, whatever its tenant (the intake knows no tenant yet).
    pub(crate) async fn get(&self, id: &str) -> Result<Option<Subscription>, Error> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions WHERE subscription_id = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.database.pool())
            .await
            .map_err(|e| unavailable(&e))?;
        row.as_ref()
            .map(read_subscription)
            .transpose()
            .map_err(|e| unavailable(&e))
    }

    /// A page of a tenant's subscriptions, newest first (ids are UUIDv7): at most `limit`
    /// older than the subscription `before`, if given.
    pub(crate) async fn list(
        &self,
        tenant: &str,
        connection_name: Option<&str>,
        include_ended: bool,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Subscription>, Error> {
        let mut sql =
            format!("SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions WHERE tenant = $1");
        let mut texts = vec![tenant];
        for (column, value) in [
            ("connection_name = ", connection_name),
            ("subscription_id < ", before),
        ] {
            if let Some(value) = value {
                texts.push(value);
                sql.push_str(&format!(" AND {column}${}", texts.len()));
            }
        }
        if !include_ended {
            sql.push_str(" AND state IN ('PENDING', 'ACTIVE', 'PAUSED')");
        }
        sql.push_str(&format!(
            " ORDER BY subscription_id DESC LIMIT ${}",
            texts.len() + 1
        ));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for text in texts {
            query = query.bind(text);
        }
        let rows = query
            .bind(limit)
            .fetch_all(self.database.pool())
            .await
            .map_err(|e| unavailable(&e))?;
        rows.iter()
            .map(read_subscription)
            .collect::<Result<_, _>>()
            .map_err(|e| unavailable(&e))
    }

    /// Takes the handshake of a subscription pending for less than `window`; when it was
    /// taken, or `None` when none is expected (only the first one since it became pending
    /// counts).
    pub(crate) async fn take_handshake(
        &self,
        id: &str,
        window: Duration,
    ) -> Result<Option<i64>, Error> {
        let now = now_us();
        let done = self.changed(
sqlx::query(
            "UPDATE event_subscriptions SET handshake_at_us = $1, last_heartbeat_at_us = $1 WHERE subscription_id = $2 AND state = 'PENDING' AND handshake_at_us IS NULL AND pending_since_us > $3",
        )
        .bind(now)
        .bind(id)
        .bind(now - micros(window)),
        )
        .await?;
        Ok((done == 1).then_some(now))
    }

    /// A subscription in state `from` (ACTIVE: Asana deleted its webhook; PAUSED: it is
    /// resumed) waits for the handshake of a new webhook; `false` when it was not in `from`
    /// (another replica or request is at it).
    pub(crate) async fn await_new_webhook(&self, id: &str, from: State) -> Result<bool, Error> {
        let done = self.changed(
sqlx::query(
            "UPDATE event_subscriptions SET state = 'PENDING', handshake_at_us = NULL, pending_since_us = $1 WHERE subscription_id = $2 AND state = $3",
        )
        .bind(now_us())
        .bind(id)
        .bind(from.as_str()),
        )
        .await?;
        Ok(done == 1)
    }

    /// Moves the subscription from one of the states `from` to `to`; whether it was in one.
    pub(crate) async fn transition(
        &self,
        id: &str,
        from: &[State],
        to: State,
    ) -> Result<bool, Error> {
        let from: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let sql = format!(
            "UPDATE event_subscriptions SET state = $1 WHERE subscription_id = $2 AND state IN ({})",
            from.join(", ")
        );
        let done = self
            .changed(
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(to.as_str())
                    .bind(id),
            )
            .await?;
        Ok(done == 1)
    }

    /// A PENDING subscription goes back to `state` (a webhook that could not be created yet).
    pub(crate) async fn back_to(&self, id: &str, state: State) -> Result<(), Error> {
        self.transition(id, &[State::Pending], state).await?;
        Ok(())
    }

    /// An ACTIVE subscription is PAUSED; `false` when it was not ACTIVE.
    pub(crate) async fn pause(&self, id: &str) -> Result<bool, Error> {
        self.transition(id, &[State::Active], State::Paused).await
    }

    /// The digest of the key the next webhook's target holds (set before Asana is asked for
    /// it, so its handshake finds it).
    pub(crate) async fn set_target_key(&self, id: &str, key_sha256: &str) -> Result<(), Error> {
        self.changed(
sqlx::query(
            "UPDATE event_subscriptions SET target_key_sha256 = $1 WHERE subscription_id = $2 AND state = 'PENDING'",
        )
        .bind(key_sha256)
        .bind(id),
        )
        .await?;
        Ok(())
    }

    /// Keeps the events API position of the subscription.
    pub(crate) async fn set_sync_token(&self, id: &str, token: &str) -> Result<(), Error> {
        self.changed(
            sqlx::query(
                "UPDATE event_subscriptions SET sync_token = $1 WHERE subscription_id = $2",
            )
            .bind(token)
            .bind(id),
        )
        .await?;
        Ok(())
    }

    /// Events of the subscription were lost for good (its sync token expired).
    pub(crate) async fn gap_lost(&self, id: &str, token: &str) -> Result<(), Error> {
        self.changed(
sqlx::query(
            "UPDATE event_subscriptions SET sync_token = $1, gap_lost_at_us = $2 WHERE subscription_id = $3",
        )
        .bind(token)
        .bind(now_us())
        .bind(id),
        )
        .await?;
        Ok(())
    }

    /// The subscriptions whose health check is due, each claimed for this replica until
    /// `interval` from now (a claim is a conditional update: one replica wins it).
    pub(crate) async fn claim_due(
        &self,
        interval: Duration,
        limit: i64,
    ) -> Result<Vec<Subscription>, Error> {
        let now = now_us();
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS}, next_check_at_us FROM event_subscriptions WHERE state = 'ACTIVE' AND next_check_at_us <= $1 ORDER BY next_check_at_us LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .fetch_all(self.database.pool())
            .await
            .map_err(|e| unavailable(&e))?;
        let mut claimed = Vec::new();
        for row in &rows {
            let subscription = read_subscription(row).map_err(|e| unavailable(&e))?;
            let due: i64 = row
                .try_get("next_check_at_us")
                .map_err(|e| unavailable(&e))?;
            let won = self.changed(
sqlx::query(
                "UPDATE event_subscriptions SET next_check_at_us = $1 WHERE subscription_id = $2 AND next_check_at_us = $3",
            )
            .bind(now + micros(interval))
            .bind(&subscription.subscription_id)
            .bind(due),
            )
            .await?;
            if won == 1 {
                claimed.push(subscription);
            }
        }
        Ok(claimed)
    }

    /// Subscriptions left PENDING for longer than `stale` (their registration was cut short:
    /// a crash, a cancelled call): a new one becomes FAILED, one whose webhook was being
    /// replaced ACTIVE again, so that the next check repairs it. How many were moved.
    pub(crate) async fn settle_stale(&self, stale: Duration) -> Result<u64, Error> {
        let before = now_us() - micros(stale);
        let failed = self.changed(
sqlx::query(
            "UPDATE event_subscriptions SET state = 'FAILED', failure_reason = 'its registration did not complete' WHERE state = 'PENDING' AND webhook_gid = '' AND pending_since_us < $1",
        )
        .bind(before),
        )
        .await?;
        let revived = self.changed(
sqlx::query(
            "UPDATE event_subscriptions SET state = 'ACTIVE' WHERE state = 'PENDING' AND webhook_gid <> '' AND pending_since_us < $1",
        )
        .bind(before),
        )
        .await?;
        Ok(failed + revived)
    }

    /// What a health check read of the webhook at Asana.
    pub(crate) async fn checked(
        &self,
        id: &str,
        asana_last_failure_at_us: Option<i64>,
    ) -> Result<(), Error> {
        self.changed(
sqlx::query(
            "UPDATE event_subscriptions SET last_checked_at_us = $1, asana_last_failure_at_us = $2 WHERE subscription_id = $3",
        )
        .bind(now_us())
        .bind(asana_last_failure_at_us)
        .bind(id),
        )
        .await?;
        Ok(())
    }

    /// A pending subscription's webhook was created: it becomes ACTIVE with its gid (after a
    /// repair, noting when); `false` when it is no longer pending (deleted meanwhile).
    pub(crate) async fn activate(
        &self,
        id: &str,
        webhook_gid: &str,
        repaired: bool,
    ) -> Result<bool, Error> {
        let done = self.changed(
sqlx::query(
            "UPDATE event_subscriptions SET state = 'ACTIVE', webhook_gid = $1, repaired_at_us = CASE WHEN $2 = 1 THEN $3 ELSE repaired_at_us END WHERE subscription_id = $4 AND state = 'PENDING'",
        )
        .bind(webhook_gid)
        .bind(i64::from(repaired))
        .bind(now_us())
        .bind(id),
        )
        .await?;
        Ok(done == 1)
    }

    /// A pending subscription could not be registered: it becomes FAILED with `reason`.
    pub(crate) async fn fail(&self, id: &str, reason: &str) -> Result<(), Error> {
        self.changed(
sqlx::query(
            "UPDATE event_subscriptions SET state = 'FAILED', failure_reason = $1 WHERE subscription_id = $2 AND state = 'PENDING'",
        )
        .bind(reason)
        .bind(id),
        )
        .await?;
        Ok(())
    }

    /// Marks the subscription DELETED; `false` when it had already ended.
    pub(crate) async fn delete(&self, id: &str) -> Result<bool, Error> {
        self.transition(
            id,
            &[State::Pending, State::Active, State::Paused],
            State::Deleted,
        )
        .await
    }

    /// A verified heartbeat of the subscription.
    pub(crate) async fn heartbeat(&self, id: &str) -> Result<(), Error> {
        self.changed(
sqlx::query(
            "UPDATE event_subscriptions SET last_heartbeat_at_us = $1 WHERE subscription_id = $2",
        )
        .bind(now_us())
        .bind(id),
        )
        .await?;
        Ok(())
    }

    /// Stores `events` of `subscription` (a verified delivery, or `backfilled` from Asana's
    /// events API), skipping those already stored; how many were new, once they are committed.
    /// Readers are woken then. Concurrent stores are committed together by one writer (group
    /// commit): one transaction, one fsync, for every delivery waiting at the time.
    pub(crate) async fn store(
        &self,
        subscription: &Subscription,
        events: &[Value],
        backfilled: bool,
    ) -> Result<u64, Error> {
        let (done, stored) = oneshot::channel();
        let write = Write {
            subscription: subscription.clone(),
            events: events.to_vec(),
            backfilled,
            done,
        };
        let writer_gone = || Error::Unavailable {
            dependency: "connector-executor's database",
            reason: "the event writer stopped".to_owned(),
        };
        self.writes.send(write).await.map_err(|_| writer_gone())?;
        let (stored, newest) = stored.await.map_err(|_| writer_gone())??;
        if stored > 0 {
            self.raise(newest);
        }
        Ok(stored)
    }

    /// Raises this replica's newest position to what the database holds, waking readers.
    async fn wake(&self) {
        match self.head().await {
            Ok(head) => self.raise(head),
            Err(error) => tracing::debug!(%error, "cannot read the newest event position"),
        }
    }

    /// Raises this replica's newest position to `position`, waking readers.
    fn raise(&self, position: i64) {
        self.newest.send_if_modified(|newest| {
            let newer = position > *newest;
            *newest = (*newest).max(position);
            newer
        });
    }

    /// The newest stored position (0 when none).
    pub(crate) async fn head(&self) -> Result<i64, Error> {
        let row = sqlx::query("SELECT COALESCE(MAX(position), 0) AS head FROM webhook_events")
            .fetch_one(self.database.pool())
            .await
            .map_err(|e| unavailable(&e))?;
        row.try_get("head").map_err(|e| unavailable(&e))
    }

    /// The last position retention removed (0 when none): a cursor below it is expired.
    pub(crate) async fn purged_through(&self) -> Result<i64, Error> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(purged_through), 0) AS purged FROM webhook_events_retention",
        )
        .fetch_one(self.database.pool())
        .await
        .map_err(|e| unavailable(&e))?;
        row.try_get("purged").map_err(|e| unavailable(&e))
    }

    /// Up to `limit` events after `after` that pass `filter`, in position order.
    pub(crate) async fn page(
        &self,
        filter: &EventFilter,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, Error> {
        let mut sql = "SELECT position, event_id, subscription_id, connection_name, identifier, webhook_gid, event_json, received_at_us, backfilled FROM webhook_events WHERE tenant = $1 AND position > $2".to_owned();
        let mut n = 2;
        if filter.connection_name.is_some() {
            n += 1;
            sql.push_str(&format!(" AND connection_name = ${n}"));
        }
        if filter.resource_gid.is_some() {
            n += 1;
            sql.push_str(&format!(" AND (resource_gid = ${n} OR parent_gid = ${n})"));
        }
        sql.push_str(&format!(" ORDER BY position LIMIT ${}", n + 1));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&filter.tenant)
            .bind(after);
        if let Some(name) = &filter.connection_name {
            query = query.bind(name);
        }
        if let Some(gid) = &filter.resource_gid {
            query = query.bind(gid);
        }
        let rows = query
            .bind(limit)
            .fetch_all(self.database.pool())
            .await
            .map_err(|e| unavailable(&e))?;
        rows.iter()
            .map(read_event)
            .collect::<Result<_, _>>()
            .map_err(|e| unavailable(&e))
    }

    /// Waits until a position after `after` may have been committed: this replica's own
    /// write, a notification from another replica, or `poll_interval` passing.
    pub(crate) async fn wait_after(&self, after: i64) {
        let mut newest = self.newest.subscribe();
        let _ = tokio::time::timeout(self.poll_interval, newest.wait_for(|n| *n > after)).await;
    }

    /// Removes the events received before `cutoff_us`, recording the last position removed,
    /// and the failed and deleted subscriptions created before it.
    pub(crate) async fn purge(&self, cutoff_us: i64) -> Result<u64, Error> {
        self.changed(
sqlx::query(
            "DELETE FROM event_subscriptions WHERE state IN ('FAILED', 'DELETED') AND created_at_us < $1",
        )
        .bind(cutoff_us),
        )
        .await?;
        let mut tx = self
            .database
            .pool()
            .begin()
            .await
            .map_err(|e| unavailable(&e))?;
        let row = sqlx::query(
            "SELECT COALESCE(MAX(position), 0) AS upto FROM webhook_events WHERE received_at_us < $1",
        )
        .bind(cutoff_us)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| unavailable(&e))?;
        let upto: i64 = row.try_get("upto").map_err(|e| unavailable(&e))?;
        if upto == 0 {
            return Ok(0);
        }
        let removed = sqlx::query("DELETE FROM webhook_events WHERE position <= $1")
            .bind(upto)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(&e))?
            .rows_affected();
        sqlx::query(
            "UPDATE webhook_events_retention SET purged_through = $1 WHERE purged_through < $1",
        )
        .bind(upto)
        .execute(&mut *tx)
        .await
        .map_err(|e| unavailable(&e))?;
        tx.commit().await.map_err(|e| unavailable(&e))?;
        Ok(removed)
    }

    /// Migrates the schema, then until `shutdown`: on PostgreSQL, listens for other replicas'
    /// writes and wakes readers; on both, removes events older than `retention` every
    /// `purge_every`.
    pub(crate) async fn maintain(
        self: Arc<Self>,
        url: Option<String>,
        retention: Duration,
        purge_every: Duration,
        shutdown: CancellationToken,
    ) {
        if !self
            .database
            .migrate_until_done(&crate::sessions::MIGRATIONS, "the event store", &shutdown)
            .await
        {
            return;
        }
        self.migrated.store(true, Ordering::Release);
        let listening = url.map(|url| {
            let events = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { events.listen(&url, stop).await })
        });
        let mut ticks = tokio::time::interval(purge_every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let cutoff = now_us() - i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
            match self.purge(cutoff).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "removed webhook events past retention"),
                Err(error) => tracing::warn!(%error, "cannot remove webhook events past retention"),
            }
        }
        if let Some(listening) = listening {
            let _ = listening.await;
        }
    }

    /// PostgreSQL `LISTEN` on [`CHANNEL`], re-established after a failure.
    async fn listen(&self, url: &str, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            let failed = tokio::select! {
                () = shutdown.cancelled() => return,
                listened = self.listen_once(url) => match listened {
                    Err(failed) => failed,
                    Ok(never) => match never {},
                },
            };
            tracing::warn!(error = %failed, retry_in = ?delay, "cannot listen for webhook events");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => delay = (delay * 2).min(Duration::from_secs(5)),
            }
        }
    }

    /// One `LISTEN` connection, until it fails.
    async fn listen_once(&self, url: &str) -> Result<std::convert::Infallible, sqlx::Error> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        // Anything committed before the listener was up.
        self.wake().await;
        loop {
            listener.recv().await?;
            self.wake().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_event_is_the_same_whichever_source_describes_it_more_fully() {
        let webhook = json!({
            "user": {"gid": "1516", "resource_type": "user"},
            "created_at": "2026-01-15T18:00:00.000Z",
            "action": "changed",
            "resource": {"gid": "1337", "resource_type": "task"},
            "parent": null,
            "change": {"field": "assignee", "action": "changed",
                       "new_value": {"gid": "1516", "resource_type": "user"}}
        });
        let events_api = json!({
            "type": "task",
            "user": {"gid": "1516", "resource_type": "user", "name": "Alice"},
            "created_at": "2026-01-15T18:00:00Z",
            "action": "changed",
            "resource": {"gid": "1337", "resource_type": "task", "name": "Book the venue"},
            "change": {"field": "assignee", "action": "changed",
                       "new_value": {"gid": "1516", "resource_type": "user", "name": "Alice"}}
        });
        assert_eq!(digest(&webhook), digest(&events_api));
        let mut other = webhook.clone();
        other["change"]["new_value"]["gid"] = json!("1517");
        assert_ne!(digest(&webhook), digest(&other), "another assignee");
        let mut later = webhook.clone();
        later["created_at"] = json!("2026-01-15T18:00:00.001Z");
        assert_ne!(digest(&webhook), digest(&later), "another moment");
    }
}
