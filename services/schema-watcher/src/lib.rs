//! schema-watcher: polls the MCP server's `tools/list`, flags drift, pins approved tools.
//!
//! It holds no credential: each watch lists its connection through connector-executor as a
//! probe account (`poller`), every listing is reconciled against the approved baseline
//! (`watch`) and stored (`store`), and the RPCs (`api`) serve snapshots, drift, approvals,
//! a resumable drift stream and the verdicts connector-executor pins calls with.

mod api;
mod error;
mod poller;
mod store;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentauth_audit::{Sink, SinkConfig};
use agentauth_grpc::{Api, Policy, Readiness, Role, Server, ServerConfig};
use agentauth_proto::executor::v1::connector_executor_client::ConnectorExecutorClient;
use agentauth_proto::watcher::v1::schema_watcher_server::{SERVICE_NAME, SchemaWatcherServer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use watch::{Mode, WatchConfig};

/// The watcher's schema, per backend.
static MIGRATIONS: agentauth_db::Migrations = agentauth_db::Migrations {
    postgres: sqlx::migrate!("./migrations/postgres"),
    sqlite: sqlx::migrate!("./migrations/sqlite"),
};

/// The largest `ListUpstreamTools` answer read (tonic's default is 4 MiB).
const MAX_LISTING_BYTES: usize = 64 * 1024 * 1024;

/// schema-watcher's configuration.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gRPC listener and its callers.
    pub server: ServerConfig,
    /// Where snapshots, baselines and drift are stored.
    pub database: agentauth_db::Config,
    /// connector-executor, through which every listing is read.
    pub executor: ExecutorConfig,
    /// Where audit events go; absent means auditing is off (said once at start).
    pub audit: SinkConfig,
    /// How polls are timed and when a failing upstream is an alert.
    pub polling: PollingConfig,
    /// One watch per MCP connection.
    pub watches: Vec<WatchConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            database: agentauth_db::Config::new("sqlite://schema-watcher.db?mode=rwc"),
            executor: ExecutorConfig::default(),
            audit: SinkConfig::default(),
            polling: PollingConfig::default(),
            watches: Vec::new(),
        }
    }
}

/// `[executor]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    /// connector-executor's gRPC URL.
    pub url: String,
    /// The file holding this service's API key for connector-executor (a caller with its
    /// `watcher` role, bound to the watches' tenants and connections).
    pub api_key_file: Option<PathBuf>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:50052".to_owned(),
            api_key_file: None,
        }
    }
}

/// `[polling]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollingConfig {
    /// The longest one listing (every page) may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The shortest time between two polls of one watch, early polls included.
    #[serde(with = "humantime_serde")]
    pub min_gap: Duration,
    /// Polls that fail in a row before the upstream is reported failing.
    pub failures_before_alert: u32,
}

impl Default for PollingConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            min_gap: Duration::from_secs(1),
            failures_before_alert: 3,
        }
    }
}

/// schema-watcher's RPCs and roles. Approving a baseline is an operator's act.
pub const POLICY: Policy = Policy {
    service: SERVICE_NAME,
    rpcs: &[
        "GetSnapshot",
        "ListDrift",
        "ApproveBaseline",
        "WatchDrift",
        "CheckTools",
    ],
    roles: &[
        Role {
            name: "executor",
            purpose: "connector-executor: which tools are approved, and their changes",
            rpcs: &["CheckTools", "WatchDrift"],
        },
        Role {
            name: "reader",
            purpose: "snapshots and drift reports",
            rpcs: &["GetSnapshot", "ListDrift", "WatchDrift"],
        },
        Role {
            name: "operator",
            purpose: "administrators: read, and approve baselines",
            rpcs: &["GetSnapshot", "ListDrift", "WatchDrift", "ApproveBaseline"],
        },
    ],
};

/// The schema-watcher service, configured and ready to serve.
#[derive(Debug)]
pub struct SchemaWatcherService {
    server: Server,
    listen: SocketAddr,
    shutdown_grace: Duration,
    config: Config,
}

impl agentauth_launch::Service for SchemaWatcherService {
    const NAME: &'static str = "schema-watcher";
    const ENV_PREFIX: &'static str = "SCHEMA_WATCHER";
    type Config = Config;

    fn new(mut config: Config) -> anyhow::Result<Self> {
        let listen = config.server.listen;
        let shutdown_grace = config.server.shutdown_grace;
        let server = Server::new(Self::NAME, std::mem::take(&mut config.server), &[&POLICY])?;
        Ok(Self {
            server,
            listen,
            shutdown_grace,
            config,
        })
    }

    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn access(&self) -> Vec<agentauth_grpc::Access> {
        self.server.access()
    }

    /// Brings the schema up to date (retrying while the database is unreachable), then polls
    /// and serves.
    async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let config = self.config;
        let store = store::Store::connect_lazy(&config.database)?;
        let channel = agentauth_grpc::client::channel_with_key_file(
            &config.executor.url,
            config.executor.api_key_file.as_deref(),
            "executor.api_key_file",
        )?;
        let audit = Sink::start(config.audit.clone())?;
        audit.log_mode(&config.audit.emitter.url, "drift and approvals");
        let watcher = Arc::new(
            watch::Watcher::new(
                store.clone(),
                audit,
                config.watches,
                config.polling.failures_before_alert,
            )
            .map_err(anyhow::Error::msg)?,
        );
        if !store
            .database()
            .migrate_until_done(&MIGRATIONS, "the watcher's database", &shutdown)
            .await
        {
            return Ok(());
        }
        let polls = tokio::spawn(poller::run(
            watcher.clone(),
            // A listing of many tools is a large message.
            ConnectorExecutorClient::new(channel).max_decoding_message_size(MAX_LISTING_BYTES),
            poller::Timing {
                timeout: config.polling.timeout,
                min_gap: config.polling.min_gap,
            },
            shutdown.clone(),
        ));
        let api = Api {
            routes: tonic::service::Routes::new(SchemaWatcherServer::new(api::SchemaWatcherApi {
                watcher: watcher.clone(),
            })),
            descriptors: agentauth_proto::FILE_DESCRIPTOR_SET,
        };
        let served = self
            .server
            .serve(listener, api, Ready(watcher.clone()), shutdown.clone())
            .await;
        shutdown.cancel();
        if let Err(error) = polls.await {
            tracing::warn!(%error, "the polls panicked");
        }
        served?;
        watcher.audit.shutdown(self.shutdown_grace).await;
        Ok(())
    }
}

/// Ready while the database answers and every drift and approval can be audited.
struct Ready(Arc<watch::Watcher>);

impl Readiness for Ready {
    async fn check(&self) -> Result<(), String> {
        self.0
            .store
            .database()
            .ping()
            .await
            .map_err(|e| e.to_string())?;
        if self.0.audit.keeps_up() {
            Ok(())
        } else {
            Err("the audit emitter does not keep up".to_owned())
        }
    }
}
