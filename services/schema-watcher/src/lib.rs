//! schema-watcher: polls the MCP server's `tools/list`, flags drift, pins approved tools.

mod api;
pub mod drift;
mod error;

use std::net::SocketAddr;

use agentauth_grpc::{AlwaysReady, Api, Policy, Role, Server, ServerConfig};
use agentauth_proto::watcher::v1::schema_watcher_server::{SERVICE_NAME, SchemaWatcherServer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::Error;

/// schema-watcher's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gRPC listener and its callers.
    pub server: ServerConfig,
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
}

impl agentauth_launch::Service for SchemaWatcherService {
    const NAME: &'static str = "schema-watcher";
    const ENV_PREFIX: &'static str = "SCHEMA_WATCHER";
    type Config = Config;

    fn new(config: Config) -> anyhow::Result<Self> {
        let listen = config.server.listen;
        let server = Server::new(Self::NAME, config.server, &[&POLICY])?;
        Ok(Self { server, listen })
    }

    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn access(&self) -> Vec<agentauth_grpc::Access> {
        self.server.access()
    }

    async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let api = Api {
            routes: tonic::service::Routes::new(SchemaWatcherServer::new(api::SchemaWatcherApi)),
            descriptors: agentauth_proto::FILE_DESCRIPTOR_SET,
        };
        self.server
            .serve(listener, api, AlwaysReady, shutdown)
            .await?;
        Ok(())
    }
}
