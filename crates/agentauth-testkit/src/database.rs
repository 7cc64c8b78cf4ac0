//! A fresh database per test: a PostgreSQL database of its own, or a SQLite file of its own.

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// The server tests create their databases on (`$AGENTAUTH_TEST_POSTGRES_URL`, by default the
/// development and CI machines' local PostgreSQL with trust auth).
pub fn postgres_admin_url() -> String {
    std::env::var("AGENTAUTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database only this test uses; dropped (with its connections) when this value is.
#[derive(Debug)]
pub struct PostgresDatabase {
    name: String,
    url: String,
}

impl PostgresDatabase {
    /// Creates `agentauth_test_<uuid>`.
    pub async fn create() -> anyhow::Result<Self> {
        let admin = postgres_admin_url();
        let name = format!("agentauth_test_{}", uuid::Uuid::now_v7().simple());
        let mut connection = PgConnection::connect(&admin)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach PostgreSQL at {admin}: {e}"))?;
        connection
            .execute(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await?;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
        })
    }

    /// Its connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside a test's runtime, which cannot be blocked on: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut connection = PgConnection::connect(&postgres_admin_url()).await?;
                connection
                    .execute(AssertSqlSafe(format!(
                        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                    )))
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database: {error:#}");
        }
    }
}

/// A SQLite database file only this test uses, removed with its folder.
#[derive(Debug)]
pub struct SqliteDatabase {
    _dir: tempfile::TempDir,
    url: String,
}

impl SqliteDatabase {
    /// A new, not yet existing file in a fresh temporary folder.
    pub fn create() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        Ok(Self { _dir: dir, url })
    }

    /// Its connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}
