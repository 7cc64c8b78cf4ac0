//! connector-executor: ExecuteTool over Asana REST and MCP, the tool catalogue, the proxy and
//! rate control.
//!
//! A call flows api → [`executor`] (connection, token, rate slots, audit) → `rest` (REST tools,
//! `/batch`), `upstream` (MCP tools) or `proxy` (raw REST). Tokens come from token-vault
//! (`tokens`) and never leave this process except in the `Authorization` header to Asana.

mod api;
mod config;
mod connections;
mod error;
mod executor;
mod mcp;
mod proxy;
mod rate;
mod rest;
mod tokens;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentauth_audit::Sink;
use agentauth_grpc::{AlwaysReady, Api, ApiKey, Server};
use agentauth_proto::executor::v1::connector_executor_server::{
    ConnectorExecutorServer, SERVICE_NAME,
};
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::Error;
pub use mcp::McpConfig;

/// The connector-executor service, configured and ready to serve.
#[derive(Debug)]
pub struct ConnectorExecutorService {
    server: Server,
    listen: SocketAddr,
    shutdown_grace: Duration,
    config: Config,
}

impl agentauth_launch::Service for ConnectorExecutorService {
    const NAME: &'static str = "connector-executor";
    const ENV_PREFIX: &'static str = "CONNECTOR_EXECUTOR";
    type Config = Config;

    fn new(mut config: Config) -> anyhow::Result<Self> {
        let listen = config.server.listen;
        let shutdown_grace = config.server.shutdown_grace;
        let server = Server::new(Self::NAME, std::mem::take(&mut config.server))?;
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

    async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let config = self.config;
        let key = config
            .token_vault
            .api_key_file
            .as_deref()
            .map(|path| {
                ApiKey::read_file(path)
                    .with_context(|| format!("token_vault.api_key_file {}", path.display()))
            })
            .transpose()?;
        let channel = agentauth_grpc::client::channel(&config.token_vault.url, key.as_ref())?;
        let audit = Sink::start(config.audit.clone())?;
        audit.log_mode(&config.audit.emitter.url, "tool calls");
        let mcp = mcp::McpClients::new(config.mcp.clone());
        let executor = Arc::new(
            executor::Executor::new(&config, TokenVaultClient::new(channel), audit, mcp)
                .map_err(anyhow::Error::msg)?,
        );
        let api = Api {
            routes: tonic::service::Routes::new(ConnectorExecutorServer::with_interceptor(
                api::ConnectorExecutorApi {
                    executor: executor.clone(),
                },
                self.server.authenticator(),
            )),
            services: vec![SERVICE_NAME],
            descriptors: agentauth_proto::FILE_DESCRIPTOR_SET,
        };
        self.server
            .serve(listener, api, AlwaysReady, shutdown)
            .await?;
        executor.audit.shutdown(self.shutdown_grace).await;
        Ok(())
    }
}
