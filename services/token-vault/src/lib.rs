//! token-vault: per-user Asana credentials in Vault: connect, refresh, re-prompt, revoke.

mod api;
mod connections;
mod error;
mod vault;

use std::net::SocketAddr;
use std::sync::Arc;

use agentauth_grpc::{Api, Server, ServerConfig};
use agentauth_proto::vault::v1::token_vault_server::{SERVICE_NAME, TokenVaultServer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::Error;

/// token-vault's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gRPC listener and its callers.
    pub server: ServerConfig,
    /// Where credentials are kept.
    pub vault: vault::Config,
    /// Every way agentauth reaches Asana; other services read these through the API.
    pub connections: Vec<connections::Connection>,
}

/// The token-vault service, configured and ready to serve.
#[derive(Debug)]
pub struct TokenVaultService {
    server: Server,
    listen: SocketAddr,
    vault: vault::Vault,
    connections: Arc<connections::Registry>,
}

impl agentauth_launch::Service for TokenVaultService {
    const NAME: &'static str = "token-vault";
    const ENV_PREFIX: &'static str = "TOKEN_VAULT";
    type Config = Config;

    fn new(config: Config) -> anyhow::Result<Self> {
        let listen = config.server.listen;
        let server = Server::new(Self::NAME, config.server)?;
        let vault = vault::Vault::new(&config.vault)?;
        let connections =
            connections::Registry::new(config.connections).map_err(anyhow::Error::msg)?;
        Ok(Self {
            server,
            listen,
            vault,
            connections: Arc::new(connections),
        })
    }

    fn listen(&self) -> SocketAddr {
        self.listen
    }

    async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let api = Api {
            routes: tonic::service::Routes::new(TokenVaultServer::with_interceptor(
                api::TokenVaultApi {
                    connections: self.connections.clone(),
                },
                self.server.authenticator(),
            )),
            services: vec![SERVICE_NAME],
            descriptors: agentauth_proto::FILE_DESCRIPTOR_SET,
        };
        self.server
            .serve(listener, api, self.vault, shutdown)
            .await?;
        Ok(())
    }
}
