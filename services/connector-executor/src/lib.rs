//! connector-executor: ExecuteTool over Asana REST and MCP, the tool catalogue, the proxy and rate control.

mod api;
mod error;
mod mcp;

use std::net::SocketAddr;

use agentauth_grpc::{AlwaysReady, Api, Server, ServerConfig};
use agentauth_proto::executor::v1::connector_executor_server::{
    ConnectorExecutorServer, SERVICE_NAME,
};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::Error;

/// connector-executor's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gRPC listener and its callers.
    pub server: ServerConfig,
}

/// The connector-executor service, configured and ready to serve.
#[derive(Debug)]
pub struct ConnectorExecutorService {
    server: Server,
    listen: SocketAddr,
}

impl agentauth_launch::Service for ConnectorExecutorService {
    const NAME: &'static str = "connector-executor";
    const ENV_PREFIX: &'static str = "CONNECTOR_EXECUTOR";
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
            routes: tonic::service::Routes::new(ConnectorExecutorServer::with_interceptor(
                api::ConnectorExecutorApi,
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
