//! The executor: everything an RPC needs to run a call as an account, shared by ExecuteTool,
//! ExecuteBatch and ProxyRequest.
//!
//! A call is: resolve the connection, take a token (cached, one fetch per account), take the
//! token's rate slots, send, and on a 401 report the token and retry once with the new one.
//! Each call ends in one audit event naming the credential version that executed it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentauth_audit::{CredentialRef, Event, Outcome, Sink, Subject};
use agentauth_grpc::client::AuthenticatedChannel;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use asana_tools::Catalogue;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::Error;
use crate::config::{AsanaConfig, Config, ConnectionSettings, ExecutionConfig, ProxyConfig};
use crate::connections::{Connection, Connections};
use crate::mcp::McpClients;
use crate::mcp::UpstreamTool;
use crate::rate::{Demand, Exhausted, Limiter, Permit};
use crate::tokens::{AccessToken, AccountKey, Tokens};
use crate::upstream::Validators;

/// The service name in audit events.
pub(crate) const SERVICE: &str = "connector-executor";

/// Shared state of every call.
#[derive(Debug)]
pub(crate) struct Executor {
    pub catalogue: Catalogue,
    pub connections: Connections,
    pub tokens: Arc<Tokens>,
    pub limiter: Limiter,
    pub mcp: McpClients,
    pub validators: Validators,
    pub audit: Sink,
    pub execution: ExecutionConfig,
    pub proxy: ProxyConfig,
    asana: AsanaConfig,
    settings: BTreeMap<String, ConnectionSettings>,
    default_settings: ConnectionSettings,
    rest_clients: Mutex<HashMap<String, asana_client::Client>>,
    /// The upstream tool list last seen on each MCP connection.
    upstream_seen: Mutex<HashMap<String, Arc<[UpstreamTool]>>>,
}

/// Who a call acts as and for whom.
#[derive(Debug, Clone)]
pub(crate) struct CallContext {
    pub account: AccountKey,
    /// The caller's configured name.
    pub caller: String,
    pub deadline: Instant,
}

/// What an audit event of a call records besides its outcome.
#[derive(Debug, Default)]
pub(crate) struct Trail {
    pub details: Map<String, Value>,
    pub credential: Option<(String, u64, String)>,
}

impl Trail {
    pub(crate) fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.details.insert(key.to_owned(), value.into());
    }

    pub(crate) fn used(&mut self, token: &AccessToken) {
        self.credential = Some((
            token.account_id.clone(),
            token.version,
            token.asana_user_gid.clone(),
        ));
    }
}

impl Executor {
    pub(crate) fn new(
        config: &Config,
        token_vault: TokenVaultClient<AuthenticatedChannel>,
        audit: Sink,
        mcp: McpClients,
    ) -> Result<Self, String> {
        let catalogue = Catalogue::new().map_err(|e| format!("tool catalogue: {e}"))?;
        Ok(Self {
            catalogue,
            connections: Connections::new(token_vault.clone(), config.token_vault.connections_ttl),
            tokens: Arc::new(Tokens::new(
                token_vault.clone(),
                config.execution.token_margin,
                config.token_cache.clone(),
            )),
            limiter: Limiter::new(config.limits.clone()),
            mcp,
            validators: Validators::default(),
            audit,
            execution: config.execution.clone(),
            proxy: config.proxy.clone(),
            asana: config.asana.clone(),
            settings: config.connections.clone(),
            default_settings: ConnectionSettings::default(),
            rest_clients: Mutex::new(HashMap::new()),
            upstream_seen: Mutex::new(HashMap::new()),
        })
    }

    /// Remembers what an MCP connection's server listed, for `ListTools`.
    pub(crate) fn saw_upstream_tools(&self, connection: &str, tools: &Arc<[UpstreamTool]>) {
        self.upstream_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(connection.to_owned(), tools.clone());
    }

    /// The upstream tools of an MCP connection for `ListTools`: the list last seen, or the one
    /// its `list_tools_as` account's session gives.
    pub(crate) async fn upstream_catalogue(
        &self,
        connection: &Connection,
        url: &str,
        caller: &str,
    ) -> Result<Arc<[UpstreamTool]>, Error> {
        let seen = self
            .upstream_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&connection.name)
            .cloned();
        if let Some(tools) = seen {
            return Ok(tools);
        }
        let Some(probe) = &self.settings(&connection.name).list_tools_as else {
            return Ok(Arc::from([]));
        };
        let context = CallContext {
            account: AccountKey {
                tenant: probe.tenant.clone(),
                connection: connection.name.clone(),
                identifier: probe.identifier.clone(),
            },
            caller: caller.to_owned(),
            deadline: Instant::now() + self.limiter.max_wait(),
        };
        self.upstream_tools(&context, url).await
    }

    pub(crate) fn settings(&self, connection: &str) -> &ConnectionSettings {
        self.settings
            .get(connection)
            .unwrap_or(&self.default_settings)
    }

    /// The REST client of `connection`: its base URL and `Asana-Enable`/`-Disable`.
    pub(crate) fn rest_client(
        &self,
        connection: &Connection,
        api_base_url: &str,
    ) -> Result<asana_client::Client, Error> {
        let mut clients = self
            .rest_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(&connection.name) {
            return Ok(client.clone());
        }
        let settings = self.settings(&connection.name);
        let client = asana_client::Client::new(asana_client::Config {
            base_url: api_base_url.to_owned(),
            timeout: self.asana.timeout,
            max_retries: self.asana.max_retries,
            backoff_base: self.asana.backoff_base,
            backoff_cap: self.asana.backoff_cap,
            max_retry_wait: self.asana.timeout,
            retry_rate_limited: false,
            max_response_bytes: self.asana.max_response_bytes,
            asana_enable: settings.asana_enable.clone(),
            asana_disable: settings.asana_disable.clone(),
            ..asana_client::Config::default()
        })
        .map_err(|e| Error::Internal(format!("connection `{}`: {e}", connection.name)))?;
        clients.insert(connection.name.clone(), client.clone());
        Ok(client)
    }

    /// Takes `demand`'s slots of the account's budget, waiting until the call's deadline.
    pub(crate) async fn admit(
        &self,
        context: &CallContext,
        demand: Demand,
    ) -> Result<Permit, Error> {
        let per_minute = self
            .settings(&context.account.connection)
            .requests_per_minute;
        self.limiter
            .acquire(&context.account, demand, per_minute, context.deadline)
            .await
            .map_err(rate_limited)
    }

    /// Refuses work while auditing is on but the emitter takes no events.
    pub(crate) fn audit_ready(&self) -> Result<(), Error> {
        if self.audit.is_healthy() {
            Ok(())
        } else {
            Err(Error::Unavailable {
                dependency: "audit-log",
                reason: "the audit emitter takes no events".to_owned(),
            })
        }
    }

    /// Records one call's audit event.
    pub(crate) fn record(
        &self,
        id: uuid::Uuid,
        context: &CallContext,
        action_name: &str,
        result: Result<bool, &Error>,
        trail: Trail,
    ) {
        let mut event = Event::new(
            &context.account.tenant,
            SERVICE,
            action_name,
            Outcome::Success,
        );
        event.id = id;
        event.actor.identifier = Some(context.caller.clone());
        let mut details = trail.details;
        event.outcome = match result {
            Ok(false) => Outcome::Success,
            Ok(true) => {
                details.insert("is_error".to_owned(), json!(true));
                Outcome::Failure
            }
            Err(error) => {
                details.insert("error".to_owned(), json!(error.audit_text()));
                details.insert("error_reason".to_owned(), json!(error.reason()));
                if matches!(error, Error::Denied(_) | Error::RateLimited { .. }) {
                    Outcome::Denied
                } else {
                    Outcome::Failure
                }
            }
        };
        let (credential, asana_user_gid) = match trail.credential {
            Some((account_id, version, user)) => (
                Some(CredentialRef {
                    account_id,
                    version,
                }),
                Some(user),
            ),
            None => (None, None),
        };
        event.subject = Subject {
            connection_name: Some(context.account.connection.clone()),
            identifier: Some(context.account.identifier.clone()),
            asana_user_gid: asana_user_gid.filter(|gid| !gid.is_empty()),
        };
        event.credential = credential;
        event.details = details;
        self.audit.record(event);
    }
}

/// RESOURCE_EXHAUSTED for a call this side will not send in time.
pub(crate) fn rate_limited(exhausted: Exhausted) -> Error {
    Error::RateLimited {
        limit: exhausted.limit.describe(),
        retry_after: exhausted.retry_after,
    }
}

/// Asana's `Retry-After` when it sent none: long enough for in-flight requests to finish.
pub(crate) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);
