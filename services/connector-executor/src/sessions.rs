//! The sessions of virtual MCP servers, in connector-executor's database: each mint is
//! recorded, so sessions can be listed and revoked.
//!
//! A bearer verifies without this table ([`crate::bearer`]); what a replica reads from it is
//! the set of revoked sessions, and of protocol sessions (`Mcp-Session-Id`) their clients
//! ended, that have not yet expired, refreshed every `revocation_refresh`. A replica that
//! could not refresh it for `revocation_stale_after` refuses every bearer rather than honour
//! one that may have been revoked.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agentauth_db::Database;
use sqlx::Row as _;
use sqlx::any::AnyRow;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::bearer::Claims;

/// connector-executor's migrations, one set per backend.
pub(crate) static MIGRATIONS: agentauth_db::Migrations = agentauth_db::Migrations {
    postgres: sqlx::migrate!("./migrations/postgres"),
    sqlite: sqlx::migrate!("./migrations/sqlite"),
};

/// The most sessions one page lists.
const MAX_PAGE: u32 = 1000;

/// The most protocol sessions one session's clients may end: each is held in every replica's
/// revocation set until the session expires, so one bearer cannot grow it without bound.
const MAX_ENDED_PER_SESSION: i64 = 256;

/// How the revocation set is kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Freshness {
    /// How often it is read again.
    pub refresh: Duration,
    /// How old it may be before every bearer is refused.
    pub stale_after: Duration,
    /// How long a session stays listed after it expired.
    pub retention: Duration,
}

/// One session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub session_id: String,
    pub tenant: String,
    pub virtual_server: String,
    pub identifier: String,
    pub minted_by: String,
    /// The signing key's id.
    pub key_id: String,
    pub created_at_us: i64,
    /// Seconds since the Unix epoch.
    pub expires_at: i64,
    pub revoked_at_us: Option<i64>,
    pub revoked_by: Option<String>,
}

/// What [`Sessions::list`] selects.
#[derive(Debug, Default)]
pub(crate) struct Filter<'a> {
    pub tenant: &'a str,
    pub virtual_server: Option<&'a str>,
    pub identifier: Option<&'a str>,
    pub include_ended: bool,
    /// Only sessions older than this one (the previous page's last).
    pub before: Option<&'a str>,
    pub page_size: u32,
}

/// Why a bearer cannot be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Revoked,
    /// The revocation set is older than `stale_after`.
    Stale,
}

/// The revoked sessions and ended protocol sessions not yet expired, by id (a session id is
/// a UUID, a protocol session id is not), with their expiry; and when they were read.
#[derive(Debug)]
struct Revoked {
    expiries: HashMap<String, i64>,
    read_at: Option<Instant>,
}

/// The session store and this replica's copy of its revocations.
#[derive(Debug)]
pub(crate) struct Sessions {
    database: Database,
    revoked: RwLock<Revoked>,
    freshness: Freshness,
}

const COLUMNS: &str = "session_id, tenant, virtual_server, identifier, minted_by, key_id, created_at_us, expires_at, revoked_at_us, revoked_by";

fn session(row: &AnyRow) -> Result<Session, Error> {
    read_session(row).map_err(|e| Error::Internal(format!("an MCP session row: {e}")))
}

fn read_session(row: &AnyRow) -> Result<Session, sqlx::Error> {
    Ok(Session {
        session_id: row.try_get("session_id")?,
        tenant: row.try_get("tenant")?,
        virtual_server: row.try_get("virtual_server")?,
        identifier: row.try_get("identifier")?,
        minted_by: row.try_get("minted_by")?,
        key_id: row.try_get("key_id")?,
        created_at_us: row.try_get("created_at_us")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at_us: row.try_get("revoked_at_us")?,
        revoked_by: row.try_get("revoked_by")?,
    })
}

/// UNAVAILABLE, its cause in the log only (a driver's text is no answer to a client).
fn unavailable(error: &sqlx::Error) -> Error {
    tracing::warn!(%error, "connector-executor's database failed");
    Error::Unavailable {
        dependency: "connector-executor's database",
        reason: "it did not answer as expected".to_owned(),
    }
}

/// Microseconds since the Unix epoch.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
        })
}

impl Sessions {
    pub(crate) fn new(database: Database, freshness: Freshness) -> Self {
        Self {
            database,
            revoked: RwLock::new(Revoked {
                expiries: HashMap::new(),
                read_at: None,
            }),
            freshness,
        }
    }

    /// Records a minted session; its bearer must not be handed out unless this succeeded.
    pub(crate) async fn record(&self, claims: &Claims, key_id: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO mcp_sessions (session_id, tenant, virtual_server, identifier, minted_by, key_id, created_at_us, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&claims.sid)
        .bind(&claims.ten)
        .bind(&claims.srv)
        .bind(&claims.idn)
        .bind(&claims.by)
        .bind(key_id)
        .bind(now_us())
        .bind(claims.exp)
        .execute(self.database.pool())
        .await
        .map_err(|e| unavailable(&e))?;
        Ok(())
    }

    /// A page of a tenant's sessions, newest first (session ids are UUIDv7), and whether more
    /// follow.
    pub(crate) async fn list(
        &self,
        filter: &Filter<'_>,
        now: i64,
    ) -> Result<(Vec<Session>, bool), Error> {
        let page = match filter.page_size {
            0 => 100,
            size => size.min(MAX_PAGE),
        };
        let mut sql = format!("SELECT {COLUMNS} FROM mcp_sessions WHERE tenant = $1");
        let mut texts = vec![filter.tenant];
        for (column, value) in [
            ("virtual_server", filter.virtual_server),
            ("identifier", filter.identifier),
        ] {
            if let Some(value) = value {
                texts.push(value);
                sql.push_str(&format!(" AND {column} = ${}", texts.len()));
            }
        }
        if let Some(before) = filter.before {
            texts.push(before);
            sql.push_str(&format!(" AND session_id < ${}", texts.len()));
        }
        if !filter.include_ended {
            sql.push_str(&format!(
                " AND revoked_at_us IS NULL AND expires_at > ${}",
                texts.len() + 1
            ));
        }
        sql.push_str(&format!(" ORDER BY session_id DESC LIMIT {}", page + 1));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for text in texts {
            query = query.bind(text);
        }
        if !filter.include_ended {
            query = query.bind(now);
        }
        let rows = query
            .fetch_all(self.database.pool())
            .await
            .map_err(|e| unavailable(&e))?;
        let mut sessions = rows.iter().map(session).collect::<Result<Vec<_>, _>>()?;
        let more = sessions.len() > page as usize;
        sessions.truncate(page as usize);
        Ok((sessions, more))
    }

    /// Revokes `tenant`'s session `session_id` as `by`: the session as it is now, and whether
    /// it had been revoked before. This replica refuses it at once.
    pub(crate) async fn revoke(
        &self,
        tenant: &str,
        session_id: &str,
        by: &str,
    ) -> Result<(Session, bool), Error> {
        let updated = sqlx::query(
            "UPDATE mcp_sessions SET revoked_at_us = $1, revoked_by = $2 WHERE session_id = $3 AND tenant = $4 AND revoked_at_us IS NULL AND expires_at > $5",
        )
        .bind(now_us())
        .bind(by)
        .bind(session_id)
        .bind(tenant)
        .bind(crate::virtual_mcp::unix_now())
        .execute(self.database.pool())
        .await
        .map_err(|e| unavailable(&e))?
        .rows_affected();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM mcp_sessions WHERE session_id = $1 AND tenant = $2"
        )))
        .bind(session_id)
        .bind(tenant)
        .fetch_optional(self.database.pool())
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(|| Error::UnknownSession {
            id: crate::virtual_mcp::bounded(session_id).to_owned(),
        })?;
        let stored = session(&row)?;
        self.refuse_now(&stored.session_id, stored.expires_at);
        Ok((stored, updated == 0))
    }

    /// Ends the protocol session `id`, opened with session `session_id` whose bearer expires
    /// at `expires_at`: this replica answers 404 for it at once, the others after their next
    /// refresh.
    pub(crate) async fn end_protocol(
        &self,
        id: &str,
        session_id: &str,
        expires_at: i64,
    ) -> Result<(), Error> {
        let ended: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM ended_protocol_sessions WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_one(self.database.pool())
        .await
        .map_err(|e| unavailable(&e))?;
        if ended >= MAX_ENDED_PER_SESSION {
            return Err(Error::RateLimited {
                limit: "the protocol sessions one session may end",
                retry_after: Duration::from_secs(60),
            });
        }
        sqlx::query(
            "INSERT INTO ended_protocol_sessions (protocol_session_id, session_id, ended_at_us, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT (protocol_session_id) DO NOTHING",
        )
            .bind(id)
            .bind(session_id)
            .bind(now_us())
            .bind(expires_at)
            .execute(self.database.pool())
            .await
            .map_err(|e| unavailable(&e))?;
        self.refuse_now(id, expires_at);
        Ok(())
    }

    /// This replica refuses `id` from now on, until `expires_at`.
    fn refuse_now(&self, id: &str, expires_at: i64) {
        self.revoked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .expiries
            .insert(id.to_owned(), expires_at);
    }

    /// Whether a verified bearer's session (or a protocol session) may act now.
    pub(crate) fn check(&self, session_id: &str) -> Result<(), Refusal> {
        let revoked = self
            .revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if revoked.expiries.contains_key(session_id) {
            return Err(Refusal::Revoked);
        }
        match revoked.read_at {
            Some(at) if at.elapsed() <= self.freshness.stale_after => Ok(()),
            _ => Err(Refusal::Stale),
        }
    }

    /// Reads the revocations of unexpired sessions afresh.
    pub(crate) async fn refresh(&self, now: i64) -> Result<(), sqlx::Error> {
        let started = Instant::now();
        let rows = sqlx::query(
            "SELECT session_id AS id, expires_at FROM mcp_sessions WHERE revoked_at_us IS NOT NULL AND expires_at > $1 UNION ALL SELECT protocol_session_id AS id, expires_at FROM ended_protocol_sessions WHERE expires_at > $1",
        )
        .bind(now)
        .fetch_all(self.database.pool())
        .await?;
        let mut expiries = HashMap::with_capacity(rows.len());
        for row in &rows {
            expiries.insert(row.try_get("id")?, row.try_get("expires_at")?);
        }
        let mut revoked = self
            .revoked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // What this replica revoked while the read was under way is kept; only the expired go.
        revoked.expiries.retain(|_, expires| *expires > now);
        revoked.expiries.extend(expiries);
        revoked.read_at = Some(started);
        Ok(())
    }

    /// Deletes the sessions that expired longer than `retention` ago (a revoked session is
    /// kept at least until it expires, so its revocation is never forgotten).
    async fn prune(&self, now: i64) -> Result<u64, sqlx::Error> {
        let retention = i64::try_from(self.freshness.retention.as_secs()).unwrap_or(i64::MAX);
        let sessions = sqlx::query("DELETE FROM mcp_sessions WHERE expires_at < $1")
            .bind(now.saturating_sub(retention))
            .execute(self.database.pool())
            .await?;
        let protocol = sqlx::query("DELETE FROM ended_protocol_sessions WHERE expires_at < $1")
            .bind(now)
            .execute(self.database.pool())
            .await?;
        Ok(sessions.rows_affected() + protocol.rows_affected())
    }

    /// Whether the schema is migrated and the revocations were read once: until then nothing
    /// can be minted or honoured, and the service is not ready.
    pub(crate) fn started(&self) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .read_at
            .is_some()
    }

    /// Migrates the schema, then keeps the revocation set fresh (and prunes ended sessions
    /// once an hour) until `shutdown`.
    pub(crate) async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        if !self
            .database
            .migrate_until_done(&MIGRATIONS, "the MCP session store", &shutdown)
            .await
        {
            return;
        }
        let mut pruned_at: Option<Instant> = None;
        let mut failing = false;
        loop {
            let now = crate::virtual_mcp::unix_now();
            match self.refresh(now).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("MCP session revocations are read again");
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, stale_after = ?self.freshness.stale_after, "cannot read MCP session revocations; bearers are refused once they are this old");
                }
                Err(_) => {}
            }
            if pruned_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                match self.prune(now).await {
                    Ok(pruned) => {
                        pruned_at = Some(Instant::now());
                        if pruned > 0 {
                            tracing::info!(pruned, "ended MCP sessions pruned");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot prune ended MCP sessions"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.freshness.refresh) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sid: &str, exp: i64) -> Claims {
        Claims {
            sid: sid.to_owned(),
            srv: "people".into(),
            ten: "acme".into(),
            idn: "alice".into(),
            by: "platform".into(),
            exp,
        }
    }

    async fn replica(url: &str, stale_after: Duration) -> Sessions {
        let database =
            Database::connect_lazy(&agentauth_db::Config::new(url)).expect("a SQLite pool");
        database.migrate(&MIGRATIONS).await.expect("migrated");
        Sessions::new(
            database,
            Freshness {
                refresh: Duration::from_millis(50),
                stale_after,
                retention: Duration::from_secs(3600),
            },
        )
    }

    #[tokio::test]
    async fn a_revocation_reaches_every_replica_and_a_stale_copy_refuses_everything() {
        let file = agentauth_testkit::database::SqliteDatabase::create().expect("sqlite");
        let here = replica(file.url(), Duration::from_millis(300)).await;
        let there = replica(file.url(), Duration::from_millis(300)).await;
        let now = crate::virtual_mcp::unix_now();
        let sid = uuid::Uuid::now_v7().to_string();
        assert_eq!(
            here.check(&sid),
            Err(Refusal::Stale),
            "nothing is honoured before the revocations were read"
        );
        here.record(&claims(&sid, now + 600), "k1")
            .await
            .expect("recorded");
        for sessions in [&here, &there] {
            sessions.refresh(now).await.expect("read");
            assert_eq!(sessions.check(&sid), Ok(()));
        }
        let (revoked, before) = here.revoke("acme", &sid, "ops").await.expect("revoked");
        assert!(!before);
        assert_eq!(revoked.revoked_by.as_deref(), Some("ops"));
        assert_eq!(here.check(&sid), Err(Refusal::Revoked), "at once here");
        assert_eq!(there.check(&sid), Ok(()), "not yet there");
        there.refresh(now).await.expect("read");
        assert_eq!(
            there.check(&sid),
            Err(Refusal::Revoked),
            "there after a read"
        );
        // A refresh keeps what this replica revoked meanwhile, and drops only the expired.
        here.refresh(now).await.expect("read");
        assert_eq!(here.check(&sid), Err(Refusal::Revoked));
        let (_, again) = here.revoke("acme", &sid, "ops").await.expect("idempotent");
        assert!(again);
        // An expired session is not revoked: nothing changes.
        let expired = uuid::Uuid::now_v7().to_string();
        here.record(&claims(&expired, now - 1), "k1")
            .await
            .expect("recorded");
        let (untouched, ended) = here.revoke("acme", &expired, "ops").await.expect("found");
        assert!(ended && untouched.revoked_at_us.is_none());
        assert!(matches!(
            here.revoke("globex", &sid, "ops").await,
            Err(Error::UnknownSession { .. })
        ));
        let other = uuid::Uuid::now_v7().to_string();
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            there.check(&other),
            Err(Refusal::Stale),
            "a copy older than stale_after honours nothing"
        );
        there.refresh(now).await.expect("read");
        assert_eq!(there.check(&other), Ok(()));
    }

    #[tokio::test]
    async fn sessions_are_listed_newest_first_by_tenant_and_filter() {
        let file = agentauth_testkit::database::SqliteDatabase::create().expect("sqlite");
        let sessions = replica(file.url(), Duration::from_secs(60)).await;
        let now = crate::virtual_mcp::unix_now();
        let mut ids = Vec::new();
        for (tenant, identifier, exp) in [
            ("acme", "alice", now + 600),
            ("acme", "bob", now + 600),
            ("acme", "alice", now - 1),
            ("globex", "alice", now + 600),
        ] {
            let id = uuid::Uuid::now_v7().to_string();
            let mut minted = claims(&id, exp);
            minted.ten = tenant.into();
            minted.idn = identifier.into();
            sessions.record(&minted, "k1").await.expect("recorded");
            ids.push(id);
        }
        let list = |filter: Filter<'static>| {
            let sessions = &sessions;
            async move {
                let (page, more) = sessions.list(&filter, now).await.expect("listed");
                (
                    page.into_iter().map(|s| s.session_id).collect::<Vec<_>>(),
                    more,
                )
            }
        };
        let live = list(Filter {
            tenant: "acme",
            ..Filter::default()
        })
        .await;
        assert_eq!(live, (vec![ids[1].clone(), ids[0].clone()], false));
        let everything = list(Filter {
            tenant: "acme",
            include_ended: true,
            ..Filter::default()
        })
        .await;
        assert_eq!(
            everything.0,
            [ids[2].clone(), ids[1].clone(), ids[0].clone()]
        );
        let alice = list(Filter {
            tenant: "acme",
            identifier: Some("alice"),
            include_ended: true,
            page_size: 1,
            ..Filter::default()
        })
        .await;
        assert_eq!(alice, (vec![ids[2].clone()], true));
        let (page, more) = sessions
            .list(
                &Filter {
                    tenant: "acme",
                    identifier: Some("alice"),
                    include_ended: true,
                    before: Some(&ids[2]),
                    ..Filter::default()
                },
                now,
            )
            .await
            .expect("listed");
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].session_id, ids[0]);
        assert!(!more);
    }
}
