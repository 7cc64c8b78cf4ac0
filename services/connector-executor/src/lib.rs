//! connector-executor: ExecuteTool over Asana REST and MCP, the tool catalogue, the proxy and
//! rate control.
//!
//! A call flows api → [`executor`] (connection, token, rate slots, audit) → `rest` (REST tools,
//! `/batch`), `upstream` (MCP tools) or `proxy` (raw REST). Tokens come from token-vault
//! (`tokens`) and never leave this process except in the `Authorization` header to Asana.

mod api;
pub mod bearer;
mod config;
mod connections;
mod error;
mod event_api;
mod events;
mod executor;
mod mcp;
mod metrics;
mod pins;
mod pipeline;
mod proxy;
mod rate;
mod requests;
mod rest;
mod sessions;
mod tokens;
mod trail;
mod upstream;
mod virtual_mcp;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentauth_audit::Sink;
use agentauth_grpc::{Api, Policy, Readiness, Role, Server};
use agentauth_proto::executor::v1::connector_executor_server::{
    ConnectorExecutorServer, SERVICE_NAME,
};
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_proto::watcher::v1::schema_watcher_client::SchemaWatcherClient;
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
        "ListMcpSessions",
        "RevokeMcpSession",
        "SubscribeEvents",
        "CreateEventSubscription",
        "ListEventSubscriptions",
        "DeleteEventSubscription",
        "PauseEventSubscription",
        "ResumeEventSubscription",
        "ListUpstreamTools",
        "WatchUpstreamChanges",
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
            name: "sessions",
            purpose: "list and revoke the virtual MCP sessions of the caller's tenants",
            rpcs: &["ListMcpSessions", "RevokeMcpSession"],
        },
        Role {
            name: "events",
            purpose: "follow Asana webhook events",
            rpcs: &["SubscribeEvents"],
        },
        Role {
            name: "webhooks",
            purpose: "register, list, pause, resume and delete the Asana webhooks of event subscriptions",
            rpcs: &[
                "CreateEventSubscription",
                "ListEventSubscriptions",
                "DeleteEventSubscription",
                "PauseEventSubscription",
                "ResumeEventSubscription",
            ],
        },
        Role {
            name: "watcher",
            purpose: "schema-watcher: list upstream MCP tools as its probe accounts, hear of changes",
            rpcs: &["ListUpstreamTools", "WatchUpstreamChanges"],
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
    catalogue: asana_tools::Catalogue,
}

impl agentauth_launch::Service for ConnectorExecutorService {
    const NAME: &'static str = "connector-executor";
    const ENV_PREFIX: &'static str = "CONNECTOR_EXECUTOR";
    type Config = Config;

    fn new(mut config: Config) -> anyhow::Result<Self> {
        let listen = config.server.listen;
        let shutdown_grace = config.server.shutdown_grace;
        let server = Server::new(Self::NAME, std::mem::take(&mut config.server), &[&POLICY])?;
        // Everything that can be checked without a file or a connection is checked here, so
        // that `--check-config` finds it.
        let catalogue =
            asana_tools::Catalogue::new().map_err(|e| anyhow::anyhow!("tool catalogue: {e}"))?;
        rate::check(&config.limits)?;
        virtual_mcp::check(
            &config.virtual_mcp,
            &config.virtual_servers,
            &catalogue,
            &server.callers(),
            config.database.as_ref(),
        )
        .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            config.webhooks.public_url.is_none() || config.database.is_some(),
            "[webhooks] names a public_url but there is no [database] to store subscriptions and events in"
        );
        Ok(Self {
            server,
            listen,
            shutdown_grace,
            config,
            catalogue,
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
        let channel = agentauth_grpc::client::channel_with_key_file(
            &config.token_vault.url,
            config.token_vault.api_key_file.as_deref(),
            "token_vault.api_key_file",
        )?;
        let audit = Sink::start(config.audit.clone())?;
        audit.log_mode(&config.audit.emitter.url, "tool calls");
        let mcp = mcp::McpClients::new(config.mcp.clone());
        let pins = Arc::new(pins::Pins::new(watcher_client(&config)?));
        let pinning = tokio::spawn(pins.clone().follow(shutdown.clone()));
        let vault = TokenVaultClient::new(channel);
        let executor = Arc::new(
            executor::Executor::new(&config, vault.clone(), audit, mcp, pins, self.catalogue)
                .map_err(anyhow::Error::msg)?,
        );
        let mcp_sessions = executor.mcp.clone();
        let following = tokio::spawn(tokens::follow(
            executor.tokens.clone(),
            move |accounts| mcp_sessions.close(accounts),
            config.token_vault.changes_silence,
            shutdown.clone(),
        ));
        let virtual_mcp = virtual_mcp::VirtualMcp::new(
            &config.virtual_mcp,
            &config.virtual_servers,
            &executor.catalogue,
            self.server.callers(),
            config.database.as_ref(),
        )
        .map_err(anyhow::Error::msg)?
        .map(Arc::new);
        let revocations = virtual_mcp
            .as_ref()
            .map(|mcp| tokio::spawn(mcp.sessions.clone().follow(shutdown.clone())));
        let webhooks = match &config.webhooks.public_url {
            Some(public_url) => {
                let database = config.database.as_ref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "[webhooks] names a public_url but there is no [database] to store subscriptions and events in"
                    )
                })?;
                let pool = agentauth_db::Database::connect_lazy(database)
                    .map_err(|e| anyhow::anyhow!("database: {e}"))?;
                let events = events::Events::new(pool.clone(), config.webhooks.poll_interval);
                Some(Arc::new(webhooks::Webhooks::new(
                    &config.webhooks,
                    public_url,
                    events,
                    vault,
                    executor.clone(),
                )))
            }
            None => {
                tracing::info!("no [webhooks] public_url: no event subscriptions and no intake");
                None
            }
        };
        let maintaining = webhooks.as_ref().map(|webhooks| {
            let listen_url = config
                .database
                .as_ref()
                .map(|d| d.url.clone())
                .filter(|url| url.starts_with("postgres"));
            let retention = config.webhooks.retention;
            tokio::spawn(webhooks.events.clone().maintain(
                listen_url,
                retention,
                (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600)),
                shutdown.clone(),
            ))
        });
        let health = webhooks
            .as_ref()
            .map(|webhooks| tokio::spawn(webhooks.clone().watch_health(shutdown.clone())));
        let intake = match &webhooks {
            Some(webhooks) => {
                let router = webhooks::router(webhooks.clone(), &config.webhooks);
                let listener = TcpListener::bind(config.webhooks.listen)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("webhooks.listen {}: {e}", config.webhooks.listen)
                    })?;
                tracing::info!(address = %config.webhooks.listen, "webhook intake listening");
                let stop = shutdown.clone();
                Some(tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stop.cancelled_owned())
                        .await
                }))
            }
            None => None,
        };
        let handlers = api::ConnectorExecutorApi {
            executor: executor.clone(),
            virtual_mcp: virtual_mcp.clone(),
            webhooks: webhooks.clone(),
        };
        let mcp_endpoints = match &virtual_mcp {
            Some(mcp) => {
                let router = virtual_mcp::router(
                    mcp.clone(),
                    handlers.clone(),
                    &config.virtual_mcp,
                    shutdown.clone(),
                )
                .map_err(anyhow::Error::msg)?;
                let listener = TcpListener::bind(config.virtual_mcp.listen)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("virtual_mcp.listen {}: {e}", config.virtual_mcp.listen)
                    })?;
                tracing::info!(address = %config.virtual_mcp.listen, "virtual MCP endpoints listening");
                let stop = shutdown.clone();
                Some(tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stop.cancelled_owned())
                        .await
                }))
            }
            None => {
                tracing::info!("no [virtual_mcp] signing key: no virtual MCP endpoints");
                None
            }
        };
        let api = Api {
            routes: tonic::service::Routes::new(ConnectorExecutorServer::new(handlers)),
            descriptors: agentauth_proto::FILE_DESCRIPTOR_SET,
        };
        let served = self
            .server
            .serve(
                listener,
                api,
                Ready {
                    executor: executor.clone(),
                    sessions: virtual_mcp.as_ref().map(|mcp| mcp.sessions.clone()),
                    events: webhooks.as_ref().map(|w| w.events.clone()),
                },
                shutdown.clone(),
            )
            .await;
        shutdown.cancel();
        if let Err(error) = following.await {
            tracing::warn!(%error, "following token-vault's account changes panicked");
        }
        if let Err(error) = pinning.await {
            tracing::warn!(%error, "following schema-watcher's drift panicked");
        }
        if let Some(revocations) = revocations
            && let Err(error) = revocations.await
        {
            tracing::warn!(%error, "reading MCP session revocations panicked");
        }
        if let Some(maintaining) = maintaining
            && let Err(error) = maintaining.await
        {
            tracing::warn!(%error, "maintaining the event store panicked");
        }
        if let Some(health) = health
            && let Err(error) = health.await
        {
            tracing::warn!(%error, "checking webhook health panicked");
        }
        if let Some(intake) = intake {
            match intake.await {
                Ok(Err(error)) => tracing::warn!(%error, "the webhook intake failed"),
                Err(error) => tracing::warn!(%error, "the webhook intake panicked"),
                Ok(Ok(())) => {}
            }
        }
        if let Some(endpoints) = mcp_endpoints {
            match endpoints.await {
                Ok(Err(error)) => tracing::warn!(%error, "virtual MCP endpoints failed"),
                Err(error) => tracing::warn!(%error, "virtual MCP endpoints panicked"),
                Ok(Ok(())) => {}
            }
        }
        served?;
        executor.audit.shutdown(self.shutdown_grace).await;
        Ok(())
    }
}

/// schema-watcher's client when `[schema_watcher] url` is set; without it nothing is pinned,
/// which is said once.
fn watcher_client(
    config: &Config,
) -> anyhow::Result<Option<SchemaWatcherClient<agentauth_grpc::client::AuthenticatedChannel>>> {
    let settings = &config.schema_watcher;
    let Some(url) = &settings.url else {
        tracing::info!("no [schema_watcher] url: MCP tools are not pinned to approved definitions");
        return Ok(None);
    };
    let channel = agentauth_grpc::client::channel_with_key_file(
        url,
        settings.api_key_file.as_deref(),
        "schema_watcher.api_key_file",
    )?;
    Ok(Some(SchemaWatcherClient::new(channel)))
}

/// Ready while every call can be audited: the emitter takes events and keeps up with them
/// (token-vault and Asana are per call, and answer for themselves); with a shared rate limiter
/// that fails closed, while Redis answers; with webhooks, once the
/// event store is migrated; and, with virtual MCP, once
/// its session store is migrated and its revocations were read (a later outage of that
/// database answers MCP requests 503 rather than take every RPC out of service).
struct Ready {
    executor: Arc<executor::Executor>,
    sessions: Option<Arc<sessions::Sessions>>,
    events: Option<Arc<events::Events>>,
}

impl Readiness for Ready {
    async fn check(&self) -> Result<(), String> {
        if !self.executor.audit.keeps_up() {
            return Err("the audit emitter does not keep up (its queue is nearly full or its spool is full)".to_owned());
        }
        self.executor.limiter.check().await?;
        if self.sessions.as_ref().is_some_and(|s| !s.started()) {
            return Err("the virtual MCP session store is not migrated and read yet".to_owned());
        }
        if self.events.as_ref().is_some_and(|e| !e.started()) {
            return Err("the event store is not migrated yet".to_owned());
        }
        Ok(())
    }
}
