//! Snapshots, baselines, drift and the drift feed, on PostgreSQL or SQLite (one code path
//! through sqlx's `Any` driver, `$N` placeholders both understand).
//!
//! Every change that makes a drift or a baseline also appends to `feed` in the same
//! transaction, so a `WatchDrift` stream that resumes after a feed position misses nothing.

use agentauth_db::{Backend, Database};
use mcp_drift::Snapshot;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};

/// A database failure, or a stored row this version cannot read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored state is corrupt: {0}")]
    Corrupt(String),
}

/// A snapshot as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: String,
    pub connection: String,
    pub taken_at_us: i64,
    pub snapshot: Snapshot,
}

/// The baseline of a connection.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub stored: Stored,
    pub approved_by: String,
}

/// What a drift row says (a tool's, or an alert's with an empty `tool`).
#[derive(Debug, Clone, PartialEq)]
pub struct DriftRow {
    pub id: String,
    pub connection: String,
    pub tool: String,
    pub kind: Kind,
    pub severity: mcp_drift::Severity,
    pub changes: Vec<Change>,
    pub detected_at_us: i64,
    pub snapshot_id: String,
    pub baseline_snapshot_id: String,
    pub baseline_hash: String,
    pub definition_hash: String,
    pub approved: bool,
    pub superseded: bool,
}

/// What kind of drift a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Added,
    Removed,
    Changed,
    EmptyListing,
    UpstreamFailing,
}

impl Kind {
    pub fn is_alert(self) -> bool {
        matches!(self, Self::EmptyListing | Self::UpstreamFailing)
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Changed => "changed",
            Self::EmptyListing => "empty_listing",
            Self::UpstreamFailing => "upstream_failing",
        }
    }

    fn parse(text: &str) -> Result<Self, Error> {
        serde_json::from_value(Value::String(text.to_owned()))
            .map_err(|_| Error::Corrupt(format!("drift kind `{text}`")))
    }
}

/// One difference inside a drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    pub description: String,
    pub severity: mcp_drift::Severity,
}

/// A new drift row, before it has an id.
#[derive(Debug, Clone)]
pub struct NewDrift {
    pub tool: String,
    pub kind: Kind,
    pub severity: mcp_drift::Severity,
    pub changes: Vec<Change>,
    pub snapshot_id: String,
    pub baseline_snapshot_id: String,
    pub baseline_hash: String,
    pub definition_hash: String,
}

/// What one reconciliation decided for a connection's open drift.
#[derive(Debug, Default)]
pub struct Plan {
    pub supersede: Vec<String>,
    pub approve: Vec<String>,
    pub new: Vec<NewDrift>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.supersede.is_empty() && self.approve.is_empty() && self.new.is_empty()
    }
}

/// The PostgreSQL advisory lock every writer of the feed holds for its transaction.
const FEED_LOCK: i64 = 0x6167_6e74_6472_6674;

/// One entry of the feed.
#[derive(Debug, Clone)]
pub enum FeedEntry {
    Drift(DriftRow),
    Baseline {
        connection: String,
        snapshot_id: String,
        approved_by: String,
    },
}

const DRIFT_COLUMNS: &str = "drift_id, connection_name, tool_name, kind, severity, changes, \
    detected_at_us, snapshot_id, baseline_snapshot_id, baseline_hash, definition_hash, approved, \
    superseded";

/// Where open drift rows are: neither approved nor superseded.
const OPEN: &str = "approved = 0 AND superseded = 0";

/// The store; clones share the pool.
#[derive(Debug, Clone)]
pub struct Store {
    database: Database,
}

fn severity_text(severity: mcp_drift::Severity) -> String {
    match serde_json::to_value(severity) {
        Ok(Value::String(text)) => text,
        _ => String::new(),
    }
}

fn parse_severity(text: &str) -> Result<mcp_drift::Severity, Error> {
    serde_json::from_value(Value::String(text.to_owned()))
        .map_err(|_| Error::Corrupt(format!("severity `{text}`")))
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Store {
    pub fn connect_lazy(config: &agentauth_db::Config) -> Result<Self, sqlx::Error> {
        Ok(Self {
            database: Database::connect_lazy(config)?,
        })
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    fn stored(row: &AnyRow) -> Result<Stored, Error> {
        let tools: String = row.try_get("tools")?;
        let tools: Vec<Value> = serde_json::from_str(&tools)
            .map_err(|e| Error::Corrupt(format!("snapshot tools: {e}")))?;
        let snapshot =
            Snapshot::of(&tools).map_err(|e| Error::Corrupt(format!("snapshot tools: {e}")))?;
        let hash: String = row.try_get("snapshot_hash")?;
        if hash != snapshot.hash {
            return Err(Error::Corrupt(format!(
                "snapshot {} does not hash to what was stored",
                row.try_get::<String, _>("snapshot_id")?
            )));
        }
        Ok(Stored {
            id: row.try_get("snapshot_id")?,
            connection: row.try_get("connection_name")?,
            taken_at_us: row.try_get("taken_at_us")?,
            snapshot,
        })
    }

    /// The newest snapshot a poll of `connection` stored.
    pub async fn latest(&self, connection: &str) -> Result<Option<Stored>, Error> {
        let row = sqlx::query(
            "SELECT snapshot_id, connection_name, taken_at_us, snapshot_hash, tools FROM snapshots \
             WHERE connection_name = $1 AND polled = 1 ORDER BY taken_at_us DESC, snapshot_id DESC LIMIT 1",
        )
        .bind(connection)
        .fetch_optional(self.database.pool())
        .await?;
        row.as_ref().map(Self::stored).transpose()
    }

    /// The snapshot `id` of `connection`.
    pub async fn snapshot(&self, connection: &str, id: &str) -> Result<Option<Stored>, Error> {
        let row = sqlx::query(
            "SELECT snapshot_id, connection_name, taken_at_us, snapshot_hash, tools FROM snapshots \
             WHERE connection_name = $1 AND snapshot_id = $2",
        )
        .bind(connection)
        .bind(id)
        .fetch_optional(self.database.pool())
        .await?;
        row.as_ref().map(Self::stored).transpose()
    }

    /// The approved baseline of `connection`.
    pub async fn baseline(&self, connection: &str) -> Result<Option<Baseline>, Error> {
        let row = sqlx::query(
            "SELECT s.snapshot_id, s.connection_name, s.taken_at_us, s.snapshot_hash, s.tools, \
             b.approved_by FROM baselines b JOIN snapshots s ON s.snapshot_id = b.snapshot_id \
             WHERE b.connection_name = $1",
        )
        .bind(connection)
        .fetch_optional(self.database.pool())
        .await?;
        row.as_ref()
            .map(|row| {
                Ok(Baseline {
                    stored: Self::stored(row)?,
                    approved_by: row.try_get("approved_by")?,
                })
            })
            .transpose()
    }

    /// Stores `snapshot` of `connection`, seen by a poll (`polled`) or assembled by an
    /// approval.
    pub async fn insert_snapshot(
        &self,
        connection: &str,
        snapshot: &Snapshot,
        polled: bool,
    ) -> Result<Stored, Error> {
        let id = uuid::Uuid::now_v7().to_string();
        let taken_at_us = now_us();
        let tools: Vec<&serde_json::Map<String, Value>> =
            snapshot.tools.values().map(|t| &t.definition).collect();
        let tools = serde_json::to_string(&tools)
            .map_err(|e| Error::Corrupt(format!("snapshot tools: {e}")))?;
        sqlx::query(
            "INSERT INTO snapshots (snapshot_id, connection_name, taken_at_us, snapshot_hash, tools, polled) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(connection)
        .bind(taken_at_us)
        .bind(&snapshot.hash)
        .bind(tools)
        .bind(i64::from(polled))
        .execute(self.database.pool())
        .await?;
        Ok(Stored {
            id,
            connection: connection.to_owned(),
            taken_at_us,
            snapshot: snapshot.clone(),
        })
    }

    /// The open drift of `connection` (alerts included), by tool name; alerts under "".
    pub async fn open_drift(&self, connection: &str) -> Result<Vec<DriftRow>, Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DRIFT_COLUMNS} FROM drift WHERE connection_name = $1 AND {OPEN} ORDER BY drift_id"
        )))
        .bind(connection)
        .fetch_all(self.database.pool())
        .await?;
        rows.iter().map(drift_row).collect()
    }

    /// Applies one decision in one transaction: a new baseline for `connection` (with a feed
    /// entry), then `plan`'s open rows superseded and approved and its new rows inserted, each
    /// with a feed entry. Returns the rows inserted.
    ///
    /// Feed positions must commit in order, or a stream that read position 11 would never see
    /// a 10 that committed after it: SQLite serialises writers; on PostgreSQL every writer of
    /// the feed first takes one transaction-scoped advisory lock.
    pub async fn apply(
        &self,
        connection: &str,
        baseline: Option<(&str, &str)>,
        plan: Plan,
    ) -> Result<Vec<DriftRow>, Error> {
        let mut tx = self.database.pool().begin().await?;
        if self.database.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(FEED_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        if let Some((snapshot_id, approved_by)) = baseline {
            sqlx::query("DELETE FROM baselines WHERE connection_name = $1")
                .bind(connection)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO baselines (connection_name, snapshot_id, approved_by, approved_at_us) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(connection)
            .bind(snapshot_id)
            .bind(approved_by)
            .bind(now_us())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO feed (connection_name, snapshot_id, approved_by) VALUES ($1, $2, $3)",
            )
            .bind(connection)
            .bind(snapshot_id)
            .bind(approved_by)
            .execute(&mut *tx)
            .await?;
        }
        for (ids, column) in [(&plan.supersede, "superseded"), (&plan.approve, "approved")] {
            for id in ids {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE drift SET {column} = 1 WHERE drift_id = $1"
                )))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        let mut inserted = Vec::with_capacity(plan.new.len());
        for drift in plan.new {
            let row = DriftRow {
                id: uuid::Uuid::now_v7().to_string(),
                connection: connection.to_owned(),
                tool: drift.tool,
                kind: drift.kind,
                severity: drift.severity,
                changes: drift.changes,
                detected_at_us: now_us(),
                snapshot_id: drift.snapshot_id,
                baseline_snapshot_id: drift.baseline_snapshot_id,
                baseline_hash: drift.baseline_hash,
                definition_hash: drift.definition_hash,
                approved: false,
                superseded: false,
            };
            insert_drift(&mut tx, &row).await?;
            sqlx::query("INSERT INTO feed (connection_name, drift_id) VALUES ($1, $2)")
                .bind(connection)
                .bind(&row.id)
                .execute(&mut *tx)
                .await?;
            inserted.push(row);
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// How many snapshots polls of `connection` stored.
    pub async fn polled_snapshots(&self, connection: &str) -> Result<i64, Error> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM snapshots WHERE connection_name = $1 AND polled = 1")
                .bind(connection)
                .fetch_one(self.database.pool())
                .await?
                .try_get(0)?,
        )
    }

    /// A page of drift, newest first: of `connections` (all when `None`), only open rows
    /// unless `all`, older than the drift id `before`.
    pub async fn list_drift(
        &self,
        connections: Option<&[String]>,
        all: bool,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DriftRow>, Error> {
        let mut sql = format!("SELECT {DRIFT_COLUMNS} FROM drift WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        if !all {
            sql.push_str(&format!(" AND {OPEN}"));
        }
        if let Some(before) = before {
            binds.push(before.to_owned());
            sql.push_str(&format!(" AND drift_id < ${}", binds.len()));
        }
        if let Some(connections) = connections {
            if connections.is_empty() {
                return Ok(Vec::new());
            }
            let mut placeholders = Vec::new();
            for name in connections {
                binds.push(name.clone());
                placeholders.push(format!("${}", binds.len()));
            }
            sql.push_str(&format!(
                " AND connection_name IN ({})",
                placeholders.join(", ")
            ));
        }
        sql.push_str(&format!(" ORDER BY drift_id DESC LIMIT {limit}"));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in binds {
            query = query.bind(value);
        }
        let rows = query.fetch_all(self.database.pool()).await?;
        rows.iter().map(drift_row).collect()
    }

    /// The feed's last position (0 when empty).
    pub async fn feed_head(&self) -> Result<i64, Error> {
        let head: Option<i64> = sqlx::query("SELECT MAX(position) FROM feed")
            .fetch_one(self.database.pool())
            .await?
            .try_get(0)?;
        Ok(head.unwrap_or(0))
    }

    /// Up to `limit` feed entries after `position`, each with its position.
    pub async fn feed_after(
        &self,
        position: i64,
        limit: i64,
    ) -> Result<Vec<(i64, FeedEntry)>, Error> {
        let rows = sqlx::query(
            "SELECT position, connection_name, drift_id, snapshot_id, approved_by FROM feed \
             WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(position)
        .bind(limit)
        .fetch_all(self.database.pool())
        .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let position: i64 = row.try_get("position")?;
            let drift_id: Option<String> = row.try_get("drift_id")?;
            let entry = match drift_id {
                Some(id) => FeedEntry::Drift(self.drift(&id).await?.ok_or_else(|| {
                    Error::Corrupt(format!("feed entry {position} names no drift"))
                })?),
                None => FeedEntry::Baseline {
                    connection: row.try_get("connection_name")?,
                    snapshot_id: row
                        .try_get::<Option<String>, _>("snapshot_id")?
                        .unwrap_or_default(),
                    approved_by: row
                        .try_get::<Option<String>, _>("approved_by")?
                        .unwrap_or_default(),
                },
            };
            entries.push((position, entry));
        }
        Ok(entries)
    }

    /// The drift row `id`.
    pub async fn drift(&self, id: &str) -> Result<Option<DriftRow>, Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DRIFT_COLUMNS} FROM drift WHERE drift_id = $1"
        )))
        .bind(id)
        .fetch_optional(self.database.pool())
        .await?;
        row.as_ref().map(drift_row).transpose()
    }
}

async fn insert_drift(tx: &mut Transaction<'_, Any>, row: &DriftRow) -> Result<(), Error> {
    let changes = serde_json::to_string(&row.changes)
        .map_err(|e| Error::Corrupt(format!("drift changes: {e}")))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO drift ({DRIFT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, 0)"
    )))
    .bind(&row.id)
    .bind(&row.connection)
    .bind(&row.tool)
    .bind(row.kind.as_str())
    .bind(severity_text(row.severity))
    .bind(changes)
    .bind(row.detected_at_us)
    .bind(&row.snapshot_id)
    .bind(&row.baseline_snapshot_id)
    .bind(&row.baseline_hash)
    .bind(&row.definition_hash)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn drift_row(row: &AnyRow) -> Result<DriftRow, Error> {
    let changes: String = row.try_get("changes")?;
    Ok(DriftRow {
        id: row.try_get("drift_id")?,
        connection: row.try_get("connection_name")?,
        tool: row.try_get("tool_name")?,
        kind: Kind::parse(&row.try_get::<String, _>("kind")?)?,
        severity: parse_severity(&row.try_get::<String, _>("severity")?)?,
        changes: serde_json::from_str(&changes)
            .map_err(|e| Error::Corrupt(format!("drift changes: {e}")))?,
        detected_at_us: row.try_get("detected_at_us")?,
        snapshot_id: row.try_get("snapshot_id")?,
        baseline_snapshot_id: row.try_get("baseline_snapshot_id")?,
        baseline_hash: row.try_get("baseline_hash")?,
        definition_hash: row.try_get("definition_hash")?,
        approved: row.try_get::<i64, _>("approved")? != 0,
        superseded: row.try_get::<i64, _>("superseded")? != 0,
    })
}
