//! The events table, its chain heads and checkpoints, on PostgreSQL or SQLite.
//!
//! One code path serves both backends through sqlx's `Any` driver: every statement is written
//! in the SQL they share, with `$N` placeholders, and the few differences (the purge's
//! permission to delete, placeholders in long statements) branch on [`Backend`].

use agentauth_audit::Event;
pub use agentauth_db::Config;
use agentauth_db::{Backend, Database, bind, push_placeholder};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyPool, Arguments, AssertSqlSafe, Executor, Row as _};

use crate::record::{GENESIS, Row};

/// A database failure, kept apart from request errors so it maps to UNAVAILABLE or INTERNAL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored event is corrupt: {0}")]
    Corrupt(String),
}

/// The columns of `audit_events`, in the order every statement lists them.
const COLUMNS: &str = "tenant, sequence, event_id, occurred_at_us, recorded_at_us, actor_service, \
    actor_identifier, connection_name, identifier, asana_user_gid, account_id, credential_version, \
    action, outcome, details, trace_id, prev_hash, hash";
const COLUMN_COUNT: usize = 18;

/// Recreates SQLite's delete guard after a purge; the same text as the migration's.
const SQLITE_DELETE_GUARD: &str =
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only (DELETE refused)');
END;";

/// What `Append` did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub sequence: i64,
    pub duplicate: bool,
}

/// Which events a query or export selects. `tenant` is always set.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tenant: String,
    pub start_us: Option<i64>,
    pub end_us: Option<i64>,
    pub identifier: Option<String>,
    pub connection_name: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub account_id: Option<String>,
    pub credential_version: Option<i64>,
}

/// Where a `Query` page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub occurred_at_us: i64,
    pub sequence: i64,
}

/// Where a purge cut a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub sequence: i64,
    pub hash: Vec<u8>,
    pub created_at_us: i64,
}

/// The result of walking a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub events_checked: u64,
    /// The first sequence number that does not verify, and why.
    pub broken: Option<(i64, String)>,
    pub checkpoint: Option<Checkpoint>,
}

/// The audit database.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
    role: Option<String>,
}

impl Store {
    /// A pool for `config` that connects on first use, so the service can start before its
    /// database does (and reports NOT_SERVING until it answers).
    pub fn connect_lazy(config: &Config) -> Result<Self, Error> {
        Ok(Self {
            db: Database::connect_lazy(config)?,
            role: config.role.clone(),
        })
    }

    /// The database, to migrate and to check.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Appends one tenant's `events` to its chain, in order, skipping ids already recorded.
    pub async fn append(&self, tenant: &str, events: &[&Event]) -> Result<Vec<Appended>, Error> {
        let mut tx = self.db.pool().begin().await?;
        let (mut sequence, mut prev_hash) = lock_head(&mut tx, tenant).await?;

        let mut known = std::collections::HashMap::new();
        if !events.is_empty() {
            // One unique-index probe per sent id. (With hundreds of ids, `IN (…)` or a join lets
            // PostgreSQL's generic plan scan the whole chain instead.)
            let mut sql = String::from("WITH sent(id) AS (VALUES ");
            let mut args = AnyArguments::default();
            for (i, event) in events.iter().enumerate() {
                sql.push_str(if i == 0 { "(" } else { ", (" });
                push_placeholder(&mut sql, self.db.backend(), i + 1);
                sql.push(')');
                bind(&mut args, event.id.to_string());
            }
            bind(&mut args, tenant.to_owned());
            sql.push_str(
                ") SELECT sent.id, (SELECT e.sequence FROM audit_events e WHERE e.tenant = ",
            );
            push_placeholder(&mut sql, self.db.backend(), events.len() + 1);
            sql.push_str(" AND e.event_id = sent.id) FROM sent");
            let rows = sqlx::query_with(AssertSqlSafe(sql), args)
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                if let Some(sequence) = row.try_get::<Option<i64>, _>(1)? {
                    known.insert(row.try_get::<String, _>(0)?, sequence);
                }
            }
        }

        let recorded_at = Utc::now();
        let mut results = Vec::with_capacity(events.len());
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            let id = event.id.to_string();
            if let Some(&existing) = known.get(&id) {
                results.push(Appended {
                    sequence: existing,
                    duplicate: true,
                });
                continue;
            }
            sequence += 1;
            let row = Row::chain(event, sequence, prev_hash, recorded_at);
            prev_hash.copy_from_slice(&row.hash);
            known.insert(id, sequence);
            results.push(Appended {
                sequence,
                duplicate: false,
            });
            rows.push(row);
        }
        if !rows.is_empty() {
            insert_rows(&mut tx, rows, self.db.backend()).await?;
            sqlx::query("UPDATE audit_chain_heads SET sequence = $2, hash = $3 WHERE tenant = $1")
                .bind(tenant.to_owned())
                .bind(sequence)
                .bind(prev_hash.to_vec())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(results)
    }

    /// One page of events matching `filter`, in order of occurrence (ties in chain order),
    /// after `after`. Keyset paging on `(occurred_at_us, sequence)` follows the time index, so
    /// a page costs the same wherever its window lies in the chain.
    pub async fn query(
        &self,
        filter: &Filter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<Row>, Error> {
        let (mut sql, mut args) = select(filter);
        if let Some(cursor) = after {
            let n = args_len(&args);
            sql.push_str(&format!(
                " AND (occurred_at_us, sequence) > (${}, ${})",
                n + 1,
                n + 2
            ));
            bind(&mut args, cursor.occurred_at_us);
            bind(&mut args, cursor.sequence);
        }
        // The limit is written into the statement, not bound: with a bound LIMIT, PostgreSQL's
        // generic plan cannot know the page is small and sorts the whole window instead of
        // walking the time index.
        sql.push_str(&format!(" ORDER BY occurred_at_us, sequence LIMIT {limit}"));
        let rows = sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(from_any)
            .collect::<Result<_, _>>()
            .map_err(Error::from)
    }

    /// Every event matching `filter`, streamed in chain order without holding them all.
    pub fn export(
        &self,
        filter: &Filter,
    ) -> impl Stream<Item = Result<Row, Error>> + Send + 'static {
        let (mut sql, args) = select(filter);
        sql.push_str(" ORDER BY sequence");
        let pool = self.db.pool().clone();
        row_stream(pool, sql, args)
    }

    /// Walks `tenant`'s chain over `[from, to]` (whole chain by default) and reports the first
    /// event that does not verify.
    pub async fn verify(
        &self,
        tenant: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Verification, Error> {
        let head: Option<(i64, Vec<u8>)> =
            sqlx::query("SELECT sequence, hash FROM audit_chain_heads WHERE tenant = $1")
                .bind(tenant.to_owned())
                .fetch_optional(self.db.pool())
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
                .transpose()?;
        let checkpoint = self.latest_checkpoint(tenant).await?;
        let Some((head_sequence, head_hash)) = head else {
            return Ok(self
                .past_head(tenant, 0, checkpoint.clone())
                .await?
                .unwrap_or(Verification {
                    events_checked: 0,
                    broken: None,
                    checkpoint,
                }));
        };
        let floor = checkpoint.as_ref().map_or(1, |c| c.sequence + 1);
        let start = from.unwrap_or(floor).max(floor);
        let end = to.unwrap_or(head_sequence).min(head_sequence);
        let mut expected_prev = if start == floor {
            checkpoint
                .as_ref()
                .map_or(GENESIS.to_vec(), |c| c.hash.clone())
        } else {
            let previous =
                sqlx::query("SELECT hash FROM audit_events WHERE tenant = $1 AND sequence = $2")
                    .bind(tenant.to_owned())
                    .bind(start - 1)
                    .fetch_optional(self.db.pool())
                    .await?;
            match previous {
                Some(row) => row.try_get(0)?,
                None => {
                    return Ok(broken(
                        0,
                        start - 1,
                        "event is missing (deleted?)",
                        checkpoint,
                    ));
                }
            }
        };

        let mut args = AnyArguments::default();
        bind(&mut args, tenant.to_owned());
        bind(&mut args, start);
        bind(&mut args, end);
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_events WHERE tenant = $1 AND sequence >= $2 AND sequence <= $3 ORDER BY sequence"
        );
        let mut rows = std::pin::pin!(row_stream(self.db.pool().clone(), sql, args));
        let mut next = start;
        let mut checked = 0u64;
        while let Some(row) = rows.next().await {
            let row = row?;
            if row.sequence != next {
                return Ok(broken(
                    checked,
                    next,
                    "event is missing (deleted?)",
                    checkpoint,
                ));
            }
            if row.prev_hash != expected_prev {
                return Ok(broken(
                    checked,
                    next,
                    "prev_hash does not match the previous event's hash",
                    checkpoint,
                ));
            }
            if row.content_hash().as_slice() != row.hash.as_slice() {
                return Ok(broken(
                    checked,
                    next,
                    "content does not match its hash (altered)",
                    checkpoint,
                ));
            }
            expected_prev = row.hash;
            checked += 1;
            next += 1;
        }
        if next <= end {
            return Ok(broken(
                checked,
                next,
                "event is missing (deleted?)",
                checkpoint,
            ));
        }
        if end == head_sequence && start <= end && expected_prev != head_hash {
            return Ok(broken(
                checked,
                head_sequence,
                "chain head does not match the last event",
                checkpoint,
            ));
        }
        if end == head_sequence
            && let Some(forged) = self.past_head(tenant, checked, checkpoint.clone()).await?
        {
            return Ok(forged);
        }
        Ok(Verification {
            events_checked: checked,
            broken: None,
            checkpoint,
        })
    }

    /// The first of `tenant`'s events past its chain head, which only a write outside audit-log
    /// leaves. One statement, so an append committing meanwhile moves the head it compares with.
    async fn past_head(
        &self,
        tenant: &str,
        checked: u64,
        checkpoint: Option<Checkpoint>,
    ) -> Result<Option<Verification>, Error> {
        let first: Option<i64> = sqlx::query(
            "SELECT MIN(sequence) FROM audit_events WHERE tenant = $1 AND sequence > \
             COALESCE((SELECT sequence FROM audit_chain_heads WHERE tenant = $1), 0)",
        )
        .bind(tenant.to_owned())
        .fetch_one(self.db.pool())
        .await?
        .try_get(0)?;
        Ok(first.map(|sequence| {
            broken(
                checked,
                sequence,
                "event is past the chain's head (written outside audit-log)",
                checkpoint,
            )
        }))
    }

    /// Removes `tenant`'s events recorded before `before`: a prefix of the chain, ending in a
    /// checkpoint so the rest still verifies. Returns how many went and the newest checkpoint.
    pub async fn purge(
        &self,
        tenant: &str,
        before: DateTime<Utc>,
    ) -> Result<(u64, Option<Checkpoint>), Error> {
        let mut tx = self.db.pool().begin().await?;
        lock_head(&mut tx, tenant).await?;
        let cut: Option<(i64, Vec<u8>)> = sqlx::query(
            "SELECT sequence, hash FROM audit_events WHERE tenant = $1 AND sequence = \
             (SELECT MAX(sequence) FROM audit_events WHERE tenant = $1 AND recorded_at_us < $2)",
        )
        .bind(tenant.to_owned())
        .bind(before.timestamp_micros())
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?;
        let Some((sequence, hash)) = cut else {
            tx.rollback().await?;
            return Ok((0, self.latest_checkpoint(tenant).await?));
        };
        match self.db.backend() {
            Backend::Postgres => {
                tx.execute("SET LOCAL agentauth.audit_purge = 'on'").await?;
                if self.role.is_some() {
                    tx.execute("SET LOCAL ROLE agentauth_audit_purger").await?;
                }
            }
            Backend::Sqlite => {
                tx.execute("DROP TRIGGER audit_events_no_delete").await?;
            }
        }
        let purged = sqlx::query("DELETE FROM audit_events WHERE tenant = $1 AND sequence <= $2")
            .bind(tenant.to_owned())
            .bind(sequence)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if self.db.backend() == Backend::Sqlite {
            tx.execute(SQLITE_DELETE_GUARD).await?;
        }
        let checkpoint = Checkpoint {
            sequence,
            hash,
            created_at_us: Utc::now().timestamp_micros(),
        };
        sqlx::query("INSERT INTO audit_checkpoints (tenant, sequence, hash, created_at_us) VALUES ($1, $2, $3, $4)")
            .bind(tenant.to_owned())
            .bind(checkpoint.sequence)
            .bind(checkpoint.hash.clone())
            .bind(checkpoint.created_at_us)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((purged, Some(checkpoint)))
    }

    async fn latest_checkpoint(&self, tenant: &str) -> Result<Option<Checkpoint>, Error> {
        let row = sqlx::query(
            "SELECT sequence, hash, created_at_us FROM audit_checkpoints WHERE tenant = $1 ORDER BY sequence DESC LIMIT 1",
        )
        .bind(tenant.to_owned())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row
            .map(|r| {
                Ok::<_, sqlx::Error>(Checkpoint {
                    sequence: r.try_get(0)?,
                    hash: r.try_get(1)?,
                    created_at_us: r.try_get(2)?,
                })
            })
            .transpose()?)
    }
}

fn broken(checked: u64, sequence: i64, why: &str, checkpoint: Option<Checkpoint>) -> Verification {
    Verification {
        events_checked: checked,
        broken: Some((sequence, why.to_owned())),
        checkpoint,
    }
}

/// Takes the tenant's chain lock for this transaction and returns its head. On PostgreSQL the
/// UPDATE locks the head row until commit (across replicas); on SQLite the first write takes
/// the database's write lock.
async fn lock_head(
    tx: &mut sqlx::Transaction<'_, Any>,
    tenant: &str,
) -> Result<(i64, [u8; 32]), Error> {
    sqlx::query("INSERT INTO audit_chain_heads (tenant, sequence, hash) VALUES ($1, 0, $2) ON CONFLICT (tenant) DO NOTHING")
        .bind(tenant.to_owned())
        .bind(GENESIS.to_vec())
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE audit_chain_heads SET sequence = sequence WHERE tenant = $1")
        .bind(tenant.to_owned())
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query("SELECT sequence, hash FROM audit_chain_heads WHERE tenant = $1")
        .bind(tenant.to_owned())
        .fetch_one(&mut **tx)
        .await?;
    let hash: Vec<u8> = row.try_get(1)?;
    let hash = hash
        .as_slice()
        .try_into()
        .map_err(|_| Error::Corrupt(format!("chain head of `{tenant}` is not a SHA-256")))?;
    Ok((row.try_get(0)?, hash))
}

/// One multi-row INSERT per chunk, within both backends' limit on bound parameters.
async fn insert_rows(
    tx: &mut sqlx::Transaction<'_, Any>,
    rows: Vec<Row>,
    backend: Backend,
) -> Result<(), Error> {
    const ROWS_PER_STATEMENT: usize = 1_000;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut sql = format!("INSERT INTO audit_events ({COLUMNS}) VALUES ");
        let mut args = AnyArguments::default();
        for (i, row) in rows.by_ref().take(ROWS_PER_STATEMENT).enumerate() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for c in 0..COLUMN_COUNT {
                if c > 0 {
                    sql.push_str(", ");
                }
                push_placeholder(&mut sql, backend, i * COLUMN_COUNT + c + 1);
            }
            sql.push(')');
            bind(&mut args, row.tenant);
            bind(&mut args, row.sequence);
            bind(&mut args, row.event_id);
            bind(&mut args, row.occurred_at_us);
            bind(&mut args, row.recorded_at_us);
            bind(&mut args, row.actor_service);
            bind(&mut args, row.actor_identifier);
            bind(&mut args, row.connection_name);
            bind(&mut args, row.identifier);
            bind(&mut args, row.asana_user_gid);
            bind(&mut args, row.account_id);
            bind(&mut args, row.credential_version);
            bind(&mut args, row.action);
            bind(&mut args, row.outcome);
            bind(&mut args, row.details);
            bind(&mut args, row.trace_id);
            bind(&mut args, row.prev_hash);
            bind(&mut args, row.hash);
        }
        sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// `SELECT … WHERE …` for `filter`, with its arguments.
fn select(filter: &Filter) -> (String, AnyArguments) {
    let mut sql = format!("SELECT {COLUMNS} FROM audit_events WHERE tenant = $1");
    let mut args = AnyArguments::default();
    bind(&mut args, filter.tenant.clone());
    let condition = |sql: &mut String, args: &mut AnyArguments, clause: &str| {
        let n = args_len(args);
        sql.push_str(&format!(" AND {clause} ${n}"));
    };
    if let Some(start) = filter.start_us {
        bind(&mut args, start);
        condition(&mut sql, &mut args, "occurred_at_us >=");
    }
    if let Some(end) = filter.end_us {
        bind(&mut args, end);
        condition(&mut sql, &mut args, "occurred_at_us <");
    }
    for (column, value) in [
        ("identifier", &filter.identifier),
        ("connection_name", &filter.connection_name),
        ("action", &filter.action),
        ("outcome", &filter.outcome),
        ("account_id", &filter.account_id),
    ] {
        if let Some(value) = value {
            bind(&mut args, value.clone());
            condition(&mut sql, &mut args, &format!("{column} ="));
        }
    }
    if let Some(version) = filter.credential_version {
        bind(&mut args, version);
        condition(&mut sql, &mut args, "credential_version =");
    }
    (sql, args)
}

fn args_len(args: &AnyArguments) -> usize {
    args.len()
}

/// Rows of `sql` as a stream that owns its connection: a task reads them from the database
/// cursor and hands them over a small bounded channel, so memory stays constant however many
/// rows there are and a slow reader slows the cursor rather than filling memory.
fn row_stream(
    pool: AnyPool,
    sql: String,
    args: AnyArguments,
) -> impl Stream<Item = Result<Row, Error>> + Send + 'static {
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        let mut rows = sqlx::query_with(AssertSqlSafe(sql), args).fetch(&pool);
        while let Some(row) = rows.next().await {
            let item = row.and_then(|r| from_any(&r)).map_err(Error::from);
            let failed = item.is_err();
            if sender.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

fn from_any(row: &AnyRow) -> Result<Row, sqlx::Error> {
    Ok(Row {
        tenant: row.try_get(0)?,
        sequence: row.try_get(1)?,
        event_id: row.try_get(2)?,
        occurred_at_us: row.try_get(3)?,
        recorded_at_us: row.try_get(4)?,
        actor_service: row.try_get(5)?,
        actor_identifier: row.try_get(6)?,
        connection_name: row.try_get(7)?,
        identifier: row.try_get(8)?,
        asana_user_gid: row.try_get(9)?,
        account_id: row.try_get(10)?,
        credential_version: row.try_get(11)?,
        action: row.try_get(12)?,
        outcome: row.try_get(13)?,
        details: row.try_get(14)?,
        trace_id: row.try_get(15)?,
        prev_hash: row.try_get(16)?,
        hash: row.try_get(17)?,
    })
}
