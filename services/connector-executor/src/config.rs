//! connector-executor's configuration: `connector-executor.toml`, then `CONNECTOR_EXECUTOR__*`
//! environment variables, then flags.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use agentauth_audit::SinkConfig;
use agentauth_grpc::ServerConfig;
use serde::Deserialize;

use crate::mcp::McpConfig;
use crate::tokens::CacheConfig;
use crate::virtual_mcp::{VirtualMcpConfig, VirtualServerConfig};
use crate::webhooks::WebhooksConfig;

/// connector-executor's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gRPC listener and its callers.
    pub server: ServerConfig,
    /// Where tokens and connections come from.
    pub token_vault: TokenVaultConfig,
    /// Where audit events go; absent means auditing is off (said once at start).
    pub audit: SinkConfig,
    /// How Asana's REST API is called: timeouts and retries of requests that are safe to repeat.
    pub asana: AsanaConfig,
    /// Per-connection settings, by connection name; a connection without an entry gets the
    /// defaults (the free tier's 150 requests per minute, no `Asana-Enable`/`-Disable`).
    pub connections: BTreeMap<String, ConnectionSettings>,
    /// Asana's per-token limits, enforced before a request leaves.
    pub limits: LimitsConfig,
    /// How tools run: pagination bounds, batch sizes, the token refresh margin.
    pub execution: ExecutionConfig,
    /// `ProxyRequest`'s size limits.
    pub proxy: ProxyConfig,
    /// MCP sessions with upstream servers.
    pub mcp: McpConfig,
    /// The cache of access tokens: its bounds, and how long a token is trusted while
    /// token-vault's stream of account changes is down.
    pub token_cache: CacheConfig,
    /// Drift pinning of MCP tools; absent means no pinning (said once at start).
    pub schema_watcher: SchemaWatcherConfig,
    /// Per-user virtual MCP endpoints: where they listen, how their bearers are signed and
    /// how long they live; without a signing key there are none.
    pub virtual_mcp: VirtualMcpConfig,
    /// The virtual MCP servers: which tools each exposes and which callers mint sessions.
    pub virtual_servers: Vec<VirtualServerConfig>,
    /// Asana webhooks: event subscriptions, their intake and the events they delivered;
    /// without a `public_url` there are none.
    pub webhooks: WebhooksConfig,
    /// Where virtual MCP sessions, event subscriptions and webhook events are recorded; needed
    /// when `[virtual_mcp]` names a signing key or `[webhooks]` a public URL, and shared by
    /// every replica.
    pub database: Option<agentauth_db::Config>,
}

/// `[schema_watcher]`: where the approved baselines of MCP connections come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaWatcherConfig {
    /// schema-watcher's gRPC URL; without it no MCP tool is pinned.
    pub url: Option<String>,
    /// The file holding this service's API key for schema-watcher (a caller with its
    /// `executor` role).
    pub api_key_file: Option<PathBuf>,
}

/// `[token_vault]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenVaultConfig {
    /// token-vault's gRPC URL.
    pub url: String,
    /// The file holding this service's API key for token-vault (a caller with its `executor`
    /// role).
    pub api_key_file: Option<PathBuf>,
    /// How long the connection list is reused before it is read again.
    #[serde(with = "humantime_serde")]
    pub connections_ttl: Duration,
    /// How long the stream of account changes may stay silent before it counts as down and
    /// is opened again (token-vault sends a message at least every `[changes] heartbeat`).
    #[serde(with = "humantime_serde")]
    pub changes_silence: Duration,
}

impl Default for TokenVaultConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:50051".to_owned(),
            api_key_file: None,
            connections_ttl: Duration::from_secs(60),
            changes_silence: Duration::from_secs(30),
        }
    }
}

/// `[asana]`: the REST client's timeouts and retries (every connection's base URL comes from
/// token-vault's connection registry).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsanaConfig {
    /// The limit for one attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries after the first attempt, for requests that are safe to repeat.
    pub max_retries: u32,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// The largest answer read from Asana for a tool call; a longer one is an error.
    pub max_response_bytes: usize,
}

impl Default for AsanaConfig {
    fn default() -> Self {
        let defaults = asana_client::Config::default();
        Self {
            timeout: defaults.timeout,
            max_retries: 2,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(5),
            max_response_bytes: defaults.max_response_bytes,
        }
    }
}

/// `[connections.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSettings {
    /// The domain's per-token budget: 150 (free) or 1,500 (paid) requests per minute.
    pub requests_per_minute: u32,
    /// Changes opted into on every request (`Asana-Enable`).
    pub asana_enable: Vec<String>,
    /// Changes opted out of on every request (`Asana-Disable`).
    pub asana_disable: Vec<String>,
    /// MCP connections: the account whose session lists the upstream tools for `ListTools`
    /// before any call has (ListTools names no account). Without it, ListTools shows the list
    /// last seen by any account's session.
    pub list_tools_as: Option<ListToolsAccount>,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            requests_per_minute: 150,
            asana_enable: Vec::new(),
            asana_disable: Vec::new(),
            list_tools_as: None,
        }
    }
}

/// `[connections.<name>.list_tools_as]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListToolsAccount {
    pub tenant: String,
    pub identifier: String,
}

/// `[limits]`: Asana's per-token limits (`reference/asana-platform.md` §4).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// GETs in flight per token.
    pub reads_in_flight: u32,
    /// POST/PUT/PATCH/DELETEs in flight per token.
    pub writes_in_flight: u32,
    /// Search API requests per minute per token.
    pub search_per_minute: u32,
    /// How long a call may wait for a slot when the caller set no deadline; a call that cannot
    /// be served within its deadline gets RESOURCE_EXHAUSTED with RetryInfo at once.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// The budgets shared by every replica, in Redis; absent, each replica keeps its own in
    /// process (right for one replica only).
    pub shared: Option<SharedLimitsConfig>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            reads_in_flight: 50,
            writes_in_flight: 15,
            search_per_minute: 60,
            max_wait: Duration::from_secs(10),
            shared: None,
        }
    }
}

/// `[limits.shared]`: Asana's per-token limits held across replicas through Redis.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedLimitsConfig {
    /// Redis's URL (`redis://[:password@]host:port[/db]`, `rediss://` for TLS); it may hold a
    /// password, so give it as `CONNECTOR_EXECUTOR__LIMITS__SHARED__URL` from a secret.
    pub url: String,
    /// What a call gets while Redis cannot be reached.
    pub on_outage: OnOutage,
    /// How many replicas share the budgets: with `replica_share`, each spends `1/replicas` of
    /// every limit while Redis is down.
    pub replicas: u32,
    /// How long a request's in-flight slot stays taken without its replica renewing it: what a
    /// replica that died mid-request costs its accounts.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How long one exchange with Redis may take before Redis counts as unreachable.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The prefix of every key this limiter writes.
    pub key_prefix: String,
}

impl Default for SharedLimitsConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            on_outage: OnOutage::FailClosed,
            replicas: 1,
            lease: Duration::from_secs(30),
            timeout: Duration::from_millis(500),
            key_prefix: "agentauth:rate".to_owned(),
        }
    }
}

/// The URL may carry a password: it is never printed.
impl std::fmt::Debug for SharedLimitsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimitsConfig")
            .field("on_outage", &self.on_outage)
            .field("replicas", &self.replicas)
            .field("lease", &self.lease)
            .field("timeout", &self.timeout)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// `[limits.shared] on_outage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOutage {
    /// Refuse every call UNAVAILABLE (and report not ready): no budget is ever exceeded.
    FailClosed,
    /// Each replica spends its share (`1/replicas`) of every limit in process.
    ReplicaShare,
}

/// `[execution]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionConfig {
    /// Pages fetched by an auto-paginated call whose request names no bound.
    pub default_max_pages: u32,
    /// The most pages one auto-paginated call may fetch.
    pub max_pages_cap: u32,
    /// The most items one `ExecuteBatch` may carry.
    pub max_batch_items: usize,
    /// The largest tool input accepted, in bytes.
    pub max_input_bytes: usize,
    /// A cached token is used while it stays valid at least this long.
    #[serde(with = "humantime_serde")]
    pub token_margin: Duration,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        Self {
            default_max_pages: 10,
            max_pages_cap: 100,
            max_batch_items: 50,
            max_input_bytes: 1024 * 1024,
            token_margin: Duration::from_secs(60),
        }
    }
}

/// `[proxy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// The largest request body forwarded, in bytes.
    pub max_request_bytes: usize,
    /// The largest response body returned, in bytes.
    pub max_response_bytes: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 1024 * 1024,
            max_response_bytes: 8 * 1024 * 1024,
        }
    }
}
