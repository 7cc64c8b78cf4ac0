//! A database of one backend (PostgreSQL or SQLite), shared by the token-vault tests.

use agentauth_testkit::database::{PostgresDatabase, SqliteDatabase};

/// A database of one backend, alive as long as the test.
pub enum Db {
    Postgres(PostgresDatabase),
    Sqlite(SqliteDatabase),
}

impl Db {
    pub async fn create(backend: &str) -> Self {
        match backend {
            "postgres" => {
                Self::Postgres(PostgresDatabase::create().await.expect("postgres database"))
            }
            _ => Self::Sqlite(SqliteDatabase::create().expect("sqlite file")),
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Postgres(db) => db.url(),
            Self::Sqlite(db) => db.url(),
        }
    }
}
