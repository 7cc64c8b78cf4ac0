//! audit-log: a tamper-evident, append-only record of every authorization and tool call.
//!
//! Each tenant's events form a hash chain in PostgreSQL or SQLite; see `store` for how
//! appends stay gapless across replicas and `record` for what each hash covers.

mod api;
mod error;
mod record;
mod store;

use std::net::SocketAddr;
use std::time::Duration;

use agentauth_grpc::{Api, Policy, Readiness, Role, Server, ServerConfig};
use agentauth_proto::audit::v1::audit_log_server::{AuditLogServer, SERVICE_NAME};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use api::MAX_BATCH;
pub use error::Error;
pub use store::Config as DatabaseConfig;

/// The chain's schema, per backend.
static MIGRATIONS: agentauth_db::Migrations = agentauth_db::Migrations {
    postgres: sqlx::migrate!("./migrations/postgres"),
    sqlite: sqlx::migrate!("./migrations/sqlite"),
};

/// audit-log's configuration.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gRPC listener and its callers.
    pub server: ServerConfig,
    /// Where events are stored.
    pub database: DatabaseConfig,
    /// What `Append` accepts.
    pub append: AppendConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            database: DatabaseConfig::new("sqlite://audit-log.db?mode=rwc"),
            append: AppendConfig::default(),
        }
    }
}

/// `[append]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppendConfig {
    /// How far in the future (by this server's clock) an event's `occurred_at` may be; later
    /// ones are refused, so a producer cannot place events ahead of what really happened.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
}

impl Default for AppendConfig {
    fn default() -> Self {
        Self {
            max_clock_skew: Duration::from_secs(300),
        }
    }
}

/// audit-log's RPCs and roles. Only `writer` appends, and what it appends carries its own
/// name as the actor; readers and operators never write.
pub const POLICY: Policy = Policy {
    service: SERVICE_NAME,
    rpcs: &["Append", "Query", "Export", "VerifyChain", "PurgeBefore"],
    roles: &[
        Role {
            name: "writer",
            purpose: "the agentauth services that record events",
            rpcs: &["Append"],
        },
        Role {
            name: "reader",
            purpose: "compliance: query, export and verify",
            rpcs: &["Query", "Export", "VerifyChain"],
        },
        Role {
            name: "operator",
            purpose: "administrators: read, and purge by retention",
            rpcs: &["Query", "Export", "VerifyChain", "PurgeBefore"],
        },
    ],
};

/// The audit-log service, configured and ready to serve.
#[derive(Debug)]
pub struct AuditLogService {
    server: Server,
    listen: SocketAddr,
    store: store::Store,
    append: AppendConfig,
}

impl agentauth_launch::Service for AuditLogService {
    const NAME: &'static str = "audit-log";
    const ENV_PREFIX: &'static str = "AUDIT_LOG";
    type Config = Config;

    fn new(config: Config) -> anyhow::Result<Self> {
        let listen = config.server.listen;
        let server = Server::new(Self::NAME, config.server, &[&POLICY])?;
        let store = store::Store::connect_lazy(&config.database)?;
        Ok(Self {
            server,
            listen,
            store,
            append: config.append,
        })
    }

    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn access(&self) -> Vec<agentauth_grpc::Access> {
        self.server.access()
    }

    /// Brings the schema up to date (retrying while the database is unreachable), then serves.
    async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let migrated = self
            .store
            .database()
            .migrate_until_done(&MIGRATIONS, "the audit database", &shutdown)
            .await;
        if !migrated {
            return Ok(());
        }
        let api = api::AuditLogApi {
            store: self.store.clone(),
            max_clock_skew: self.append.max_clock_skew,
            append_lag: api::append_lag(&opentelemetry::global::meter("audit-log")),
        };
        let api = Api {
            routes: tonic::service::Routes::new(AuditLogServer::new(api)),
            descriptors: agentauth_proto::FILE_DESCRIPTOR_SET,
        };
        self.server
            .serve(listener, api, Database(self.store), shutdown)
            .await?;
        Ok(())
    }
}

/// Ready while the database answers.
struct Database(store::Store);

impl Readiness for Database {
    async fn check(&self) -> Result<(), String> {
        self.0.database().ping().await.map_err(|e| e.to_string())
    }
}
