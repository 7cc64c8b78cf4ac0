//! audit-log: a tamper-evident, append-only record of every authorization and tool call.

mod api;
mod error;

use std::net::SocketAddr;

use agentauth_grpc::{AlwaysReady, Api, Server, ServerConfig};
use agentauth_proto::audit::v1::audit_log_server::{AuditLogServer, SERVICE_NAME};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::Error;

/// audit-log's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gRPC listener and its callers.
    pub server: ServerConfig,
}

/// The audit-log service, configured and ready to serve.
#[derive(Debug)]
pub struct AuditLogService {
    server: Server,
    listen: SocketAddr,
}

impl agentauth_launch::Service for AuditLogService {
    const NAME: &'static str = "audit-log";
    const ENV_PREFIX: &'static str = "AUDIT_LOG";
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
            routes: tonic::service::Routes::new(AuditLogServer::with_interceptor(
                api::AuditLogApi,
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
