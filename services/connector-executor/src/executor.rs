//! The executor's shared state: what every call needs to run as an account (connections,
//! tokens, the limiter, REST clients, MCP sessions, the audit sink), and the one place a call's
//! audit event is recorded. How a call is sent is `pipeline`; what it sends is `rest`,
//! `upstream` and `proxy`, which use this module and are used only by `api`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use agentauth_audit::{CredentialRef, Event, Outcome, Sink, Subject};
use agentauth_grpc::client::AuthenticatedChannel;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use asana_tools::Catalogue;
use tokio::time::Instant;

use crate::Error;
use crate::config::{AsanaConfig, Config, ConnectionSettings, ExecutionConfig, ProxyConfig};
use crate::connections::{Connection, Connections};
use crate::mcp::{McpClients, UpstreamTool, Validators};
use crate::metrics::Metrics;
use crate::pins::Pins;
use crate::rate::{Budget, Demand, Exhausted, Limiter, Permit, Refusal};
use crate::tokens::{AccountKey, Tokens};
use crate::trail::{Details, Ending, Trail};

/// The service name in audit events.
pub(crate) const SERVICE: &str = "connector-executor";

/// Shared state of every call.
#[derive(Debug)]
pub(crate) struct Executor {
    pub catalogue: Catalogue,
    pub connections: Connections,
    pub tokens: Arc<Tokens>,
    pub limiter: Limiter,
    pub metrics: Metrics,
    pub mcp: McpClients,
    pub pins: Arc<Pins>,
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
    /// The caller's configured name (for a virtual MCP session, the caller that minted it).
    pub caller: String,
    pub deadline: Instant,
    /// The virtual MCP server and session a call came through, if any.
    pub via: Option<crate::virtual_mcp::Via>,
}

impl Executor {
    pub(crate) fn new(
        config: &Config,
        token_vault: TokenVaultClient<AuthenticatedChannel>,
        audit: Sink,
        mcp: McpClients,
        pins: Arc<Pins>,
        catalogue: Catalogue,
    ) -> Result<Self, String> {
        Ok(Self {
            catalogue,
            connections: Connections::new(token_vault.clone(), config.token_vault.connections_ttl),
            tokens: Arc::new(Tokens::new(
                token_vault.clone(),
                config.execution.token_margin,
                config.token_cache.clone(),
            )),
            limiter: Limiter::new(&config.limits).map_err(|e| format!("{e:#}"))?,
            metrics: Metrics::new(&opentelemetry::global::meter(SERVICE)),
            mcp,
            pins,
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

    /// The upstream tool list last seen on the MCP connection `connection`.
    pub(crate) fn upstream_seen(&self, connection: &str) -> Option<Arc<[UpstreamTool]>> {
        self.upstream_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(connection)
            .cloned()
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
        budget: &Budget,
        demand: Demand,
    ) -> Result<Permit, Error> {
        let per_minute = self
            .settings(&context.account.connection)
            .requests_per_minute;
        self.limiter
            .acquire(budget, demand, per_minute, context.deadline)
            .await
            .map_err(|refusal| match refusal {
                Refusal::Exhausted(exhausted) => rate_limited(exhausted),
                Refusal::Unavailable(reason) => Error::Unavailable {
                    dependency: "redis",
                    reason,
                },
            })
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

    /// Records one call's audit event: `kind`'s details (`ToolExecuted`, `ProxyRequested`),
    /// the exchange's facts in `trail`, and how it ended: `Ok(is_error)` when Asana answered,
    /// or the error. Waits for room in the emitter's queue: the call's answer waits for its
    /// record, which is never dropped. With auditing off nothing is built.
    pub(crate) async fn record<D: serde::Serialize>(
        &self,
        id: uuid::Uuid,
        context: &CallContext,
        action_name: &str,
        result: Result<bool, &Error>,
        kind: &D,
        trail: &Trail,
    ) {
        if !self.audit.is_enabled() {
            return;
        }
        let mut ending = Ending::default();
        let outcome = match result {
            Ok(false) => Outcome::Success,
            Ok(true) => {
                ending.is_error = true;
                Outcome::Failure
            }
            Err(error) => {
                ending.error = Some(error.audit_text());
                ending.error_reason = Some(error.reason());
                if matches!(error, Error::Denied(_) | Error::RateLimited { .. }) {
                    Outcome::Denied
                } else {
                    Outcome::Failure
                }
            }
        };
        let mut event = Event::with_id(id, &context.account.tenant, SERVICE, action_name, outcome);
        event.actor.identifier = Some(context.caller.clone());
        event.subject = Subject {
            connection_name: Some(context.account.connection.clone()),
            identifier: Some(context.account.identifier.clone()),
            asana_user_gid: trail
                .credential
                .as_ref()
                .map(|c| c.asana_user_gid.clone())
                .filter(|gid| !gid.is_empty()),
        };
        event.credential = trail.credential.as_ref().map(|c| CredentialRef {
            account_id: c.account_id.clone(),
            version: c.version,
        });
        // One serialization of the typed details; it cannot fail for these plain structs.
        if let Ok(serde_json::Value::Object(details)) = serde_json::to_value(Details {
            kind,
            trail,
            ending,
            via: context.via.as_ref(),
        }) {
            event.details = details;
        }
        self.audit.record(event).await;
    }
}

impl Executor {
    /// Records an action that is no tool call (a virtual MCP session minted or revoked, an
    /// event subscription changed, repaired or refused, …) by `actor` for (`tenant`,
    /// `identifier`), with its typed `details`.
    pub(crate) async fn record_action<D: serde::Serialize>(
        &self,
        action: &'static str,
        actor: &str,
        tenant: &str,
        identifier: Option<&str>,
        outcome: Outcome,
        details: &D,
    ) {
        let mut event = Event::new(tenant, SERVICE, action, outcome);
        event.actor.identifier = Some(actor.to_owned());
        event.subject.identifier = identifier.map(str::to_owned);
        // One serialization of the typed details; it cannot fail for these plain structs.
        if let Ok(serde_json::Value::Object(details)) = serde_json::to_value(details) {
            event.details = details;
        }
        self.audit.record(event).await;
    }
}

/// RESOURCE_EXHAUSTED for a call this side will not send in time.
pub(crate) fn rate_limited(exhausted: Exhausted) -> Error {
    Error::RateLimited {
        limit: exhausted.limit.describe(),
        retry_after: exhausted.retry_after,
    }
}
