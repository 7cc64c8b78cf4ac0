//! schema-watcher: polls the MCP server's `tools/list`, flags drift, pins approved tools.

mod api;
mod error;

use std::net::SocketAddr;

use agentauth_grpc::{AlwaysReady, Api, Server, ServerConfig};
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
        let server = Server::new(Self::NAME, config.server)?;
        Ok(Self { server, listen })
    }

    fn listen(&self) -> SocketAddr {
        self.listen
    }

    async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let api = Api {
            routes: tonic::service::Routes::new(SchemaWatcherServer::with_interceptor(
                api::SchemaWatcherApi,
                self.server.authenticator(),
            )),
            services: vec![SERVICE_NAME],
            descriptors: agentauth_proto::FILE_DESCRIPTOR_SET,
        };
        self.server
            .serve(listener, api, AlwaysReady, shutdown)
            .await?;
        Ok(())
    }
}
