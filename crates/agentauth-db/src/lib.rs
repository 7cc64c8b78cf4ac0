//! The databases of the services that keep state (token-vault's accounts, audit-log's chain).
//!
//! - [`Config`]: a `[database]` section: the URL (`postgres://…` or `sqlite://…`), the pool's
//!   size, and on PostgreSQL the role every connection switches to.
//! - [`Database::connect_lazy`]: a pool that connects on first use, so a service starts before
//!   its database does and reports NOT_SERVING until it answers. SQLite connections use WAL
//!   with `synchronous = FULL`: a committed write survives a power loss, not only a crash.
//! - [`Database::migrate_until_done`]: the service's migrations for its backend
//!   ([`Migrations`], embedded with `sqlx::migrate!`), retried while the database is
//!   unreachable.
//! - [`bind`] and [`push_placeholder`]: building statements for either backend.

use std::sync::Once;
use std::time::Duration;

use serde::Deserialize;
use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Arguments as _, AssertSqlSafe, Executor as _};
use tokio_util::sync::CancellationToken;

/// A `[database]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `postgres://…` or `sqlite://path?mode=rwc`.
    pub url: String,
    /// The most connections the pool opens.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// PostgreSQL only: the role every connection switches to (`SET ROLE`), so the login
    /// role can own the schema while the service runs with less.
    #[serde(default)]
    pub role: Option<String>,
}

fn default_max_connections() -> u32 {
    10
}

impl Config {
    /// The database at `url`, with the default pool size and no role.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: default_max_connections(),
            role: None,
        }
    }
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A service's migrations, one set per backend (`sqlx::migrate!("./migrations/postgres")`…).
#[derive(Debug)]
pub struct Migrations {
    pub postgres: Migrator,
    pub sqlite: Migrator,
}

/// A pool and the backend it talks to.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
}

impl Database {
    /// A pool for `config` that connects on first use. Refuses a URL of another database and
    /// a role that is not a plain PostgreSQL role name (or is given for SQLite).
    pub fn connect_lazy(config: &Config) -> Result<Self, sqlx::Error> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let invalid = |why: &str| sqlx::Error::Configuration(why.to_owned().into());
        let backend =
            if config.url.starts_with("postgres:") || config.url.starts_with("postgresql:") {
                Backend::Postgres
            } else if config.url.starts_with("sqlite:") {
                Backend::Sqlite
            } else {
                return Err(invalid(
                    "database.url must start with postgres:// or sqlite:",
                ));
            };
        let setup = match (backend, &config.role) {
            (Backend::Sqlite, None) => Some(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 30000;"
                    .to_owned(),
            ),
            (Backend::Postgres, None) => None,
            (Backend::Postgres, Some(role))
                if !role.is_empty()
                    && role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Some(format!("SET ROLE {role}"))
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "database.role must be a plain PostgreSQL role name, and only for PostgreSQL",
                ));
            }
        };
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |connection, _| {
                let setup = setup.clone();
                Box::pin(async move {
                    if let Some(setup) = setup {
                        connection.execute(AssertSqlSafe(setup)).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy(&config.url)?;
        Ok(Self { pool, backend })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Brings the schema up to date with this backend's migrations. Migrations in one process
    /// run one at a time, so two parts of a service that share a database (connector-executor's
    /// virtual MCP sessions and webhook events) do not apply the same migration at once; the
    /// second finds it applied.
    pub async fn migrate(
        &self,
        migrations: &Migrations,
    ) -> Result<(), sqlx::migrate::MigrateError> {
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let migrator = match self.backend {
            Backend::Postgres => &migrations.postgres,
            Backend::Sqlite => &migrations.sqlite,
        };
        let _turn = ONE_AT_A_TIME.lock().await;
        migrator.run(&self.pool).await
    }

    /// [`Database::migrate`], retried with a growing delay (up to 5 s) while it fails, each
    /// failure logged with what `what` names. `false` when `shutdown` came first, which also
    /// cuts short an attempt still waiting for the database.
    pub async fn migrate_until_done(
        &self,
        migrations: &Migrations,
        what: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut delay = Duration::from_millis(100);
        loop {
            // A migration runs in a transaction: one cut short by shutdown is rolled back.
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return false,
                attempt = self.migrate(migrations) => attempt,
            };
            match attempt {
                Ok(()) => return true,
                Err(error) => tracing::warn!(%error, retry_in = ?delay, "cannot migrate {what}"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(delay) => delay = (delay * 2).min(Duration::from_secs(5)),
            }
        }
    }
}

/// Adds `value` to a statement's arguments.
pub fn bind<'q, T>(args: &mut AnyArguments, value: T)
where
    T: 'q + sqlx::Encode<'q, Any> + sqlx::Type<Any> + Send,
{
    // Encoding into Any's in-memory argument buffer cannot fail for these plain types.
    let _ = args.add(value);
}

/// Appends the `n`-th (from 1) bind parameter of a statement built in order: `$n` on
/// PostgreSQL, an anonymous `?` on SQLite. SQLite looks a named parameter up by a linear scan
/// of the statement's names on every bind, so a statement of many `$n` costs the square of its
/// size to bind (at 1,000 rows, more than everything else in a batch insert); anonymous ones
/// are bound by position.
pub fn push_placeholder(sql: &mut String, backend: Backend, n: usize) {
    match backend {
        Backend::Postgres => {
            sql.push('$');
            sql.push_str(&n.to_string());
        }
        Backend::Sqlite => sql.push('?'),
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row as _;

    use super::*;

    fn refused(config: Config) -> String {
        Database::connect_lazy(&config)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn only_postgres_and_sqlite_urls_and_plain_postgres_roles_are_accepted() {
        assert!(refused(Config::new("mysql://localhost/db")).contains("must start with"));
        for (url, role) in [
            ("sqlite://x.db?mode=rwc", "agentauth"),
            ("postgres://localhost/db", "x; DROP TABLE accounts"),
            ("postgres://localhost/db", ""),
        ] {
            let config = Config {
                role: Some(role.to_owned()),
                ..Config::new(url)
            };
            assert!(
                refused(config).contains("database.role"),
                "{url} with role {role:?}"
            );
        }
        let lazy = Database::connect_lazy(&Config {
            role: Some("agentauth_reader".to_owned()),
            ..Config::new("postgres://127.0.0.1:1/nowhere")
        })
        .expect("nothing is connected before first use");
        assert_eq!(lazy.backend(), Backend::Postgres);
    }

    #[tokio::test]
    async fn sqlite_connections_use_wal_and_full_synchronous_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let db = Database::connect_lazy(&Config::new(url)).expect("pool");
        db.ping().await.expect("answers");
        let journal: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(db.pool())
            .await
            .expect("pragma")
            .try_get(0)
            .expect("text");
        assert_eq!(journal, "wal");
        let synchronous: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(db.pool())
            .await
            .expect("pragma")
            .try_get(0)
            .expect("integer");
        assert_eq!(synchronous, 2, "FULL");
    }

    #[tokio::test]
    async fn migrations_are_those_of_the_backend_and_run_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (backend, table) in [
            ("postgres", "only_on_postgres"),
            ("sqlite", "only_on_sqlite"),
        ] {
            let path = dir.path().join(backend);
            std::fs::create_dir(&path).expect("dir");
            std::fs::write(
                path.join("0001_first.sql"),
                format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY);"),
            )
            .expect("migration");
        }
        let migrations = Migrations {
            postgres: Migrator::new(dir.path().join("postgres"))
                .await
                .expect("migrator"),
            sqlite: Migrator::new(dir.path().join("sqlite"))
                .await
                .expect("migrator"),
        };
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let db = Database::connect_lazy(&Config::new(url)).expect("pool");
        let shutdown = CancellationToken::new();
        assert!(
            db.migrate_until_done(&migrations, "the test database", &shutdown)
                .await
        );
        db.migrate(&migrations)
            .await
            .expect("a second run changes nothing");
        let tables: Vec<String> = sqlx::query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'only_on_%'",
        )
        .fetch_all(db.pool())
        .await
        .expect("tables")
        .iter()
        .map(|row| row.try_get(0).expect("name"))
        .collect();
        assert_eq!(tables, ["only_on_sqlite"]);
    }

    #[tokio::test]
    async fn migrating_an_unreachable_database_stops_at_shutdown() {
        let db =
            Database::connect_lazy(&Config::new("postgres://127.0.0.1:1/nowhere")).expect("pool");
        let migrations = Migrations {
            postgres: Migrator::DEFAULT,
            sqlite: Migrator::DEFAULT,
        };
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                shutdown.cancel();
            }
        });
        // The attempt waits up to the pool's 5 s acquire timeout; shutdown cuts it short.
        let migrated = tokio::time::timeout(
            Duration::from_secs(4),
            db.migrate_until_done(&migrations, "nothing", &shutdown),
        )
        .await
        .expect("shutdown does not wait for the attempt");
        assert!(!migrated);
    }
}
