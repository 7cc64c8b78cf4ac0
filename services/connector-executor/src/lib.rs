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
mod pipeline;
mod proxy;
mod rate;
mod requests;
mod rest;
mod tokens;
mod trail;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentauth_audit::Sink;
use agentauth_grpc::{Api, ApiKey, Policy, Readiness, Role, Server};
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

/// connector-executor's RPCs and roles. What a granted RPC may touch is then bound by the
/// caller's tenants, connections and tools; `ProxyRequest` is checked as the tool of the spec
/// operation its method and path resolve to.
pub const POLICY: Policy = Policy {
    service: SERVICE_NAME,
    rpcs: &[
        "ExecuteTool",
        "ExecuteBatch",
        "ListTools",
        "ProxyRequest",
        "MintMcpSession",
        "SubscribeEvents",
    ],
    roles: &[
        Role {
            name: "executor",
            purpose: "internal services and agents: run tools, list them",
            rpcs: &["ExecuteTool", "ExecuteBatch", "ListTools"],
        },
        Role {
            name: "proxy",
            purpose: "raw REST requests, each checked as its operation's generated tool",
            rpcs: &["ProxyRequest", "ListTools"],
        },
        Role {
            name: "reader",
            purpose: "browse the tool catalogue",
            rpcs: &["ListTools"],
        },
        Role {
            name: "mcp",
            purpose: "mint per-user virtual MCP sessions",
            rpcs: &["MintMcpSession", "ListTools"],
        },
        Role {
            name: "events",
            purpose: "follow Asana webhook events",
            rpcs: &["SubscribeEvents"],
        },
    ],
};

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
        let mcp_sessions = executor.mcp.clone();
        let following = tokio::spawn(tokens::follow(
            executor.tokens.clone(),
            move |accounts| mcp_sessions.close(accounts),
            config.token_vault.changes_silence,
            shutdown.clone(),
        ));
        let api = Api {
            routes: tonic::service::Routes::new(ConnectorExecutorServer::new(
                api::ConnectorExecutorApi {
                    executor: executor.clone(),
                },
            )),
            descriptors: agentauth_proto::FILE_DESCRIPTOR_SET,
        };
        let served = self
            .server
            .serve(
                listener,
                api,
                AuditKeepsUp(executor.clone()),
                shutdown.clone(),
            )
            .await;
        shutdown.cancel();
        if let Err(error) = following.await {
            tracing::warn!(%error, "following token-vault's account changes panicked");
        }
        served?;
        executor.audit.shutdown(self.shutdown_grace).await;
        Ok(())
    }
}

/// Ready while every call can be audited: the emitter takes events and keeps up with them
/// (token-vault and Asana are per call, and answer for themselves).
struct AuditKeepsUp(Arc<executor::Executor>);

impl Readiness for AuditKeepsUp {
    async fn check(&self) -> Result<(), String> {
        if self.0.audit.keeps_up() {
            Ok(())
        } else {
            Err("the audit emitter does not keep up (its queue is nearly full or its spool is full)".to_owned())
        }
    }
}
