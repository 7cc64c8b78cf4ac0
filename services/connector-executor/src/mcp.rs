//! MCP dispatch: calls an upstream MCP server (Asana's V2, or the sandbox) over Streamable HTTP
//! with an account's MCP token, one session per account reused across calls.
//!
//! # Session model
//!
//! [`McpClients`] keeps at most one upstream session per account (`SessionKey::account_id`),
//! opened on first use with the legacy `initialize` handshake (Asana speaks a 2025 revision,
//! `reference/mcp.md` §1.5) and the account's token in the `Authorization` header of the
//! transport. Concurrent first calls for an account wait on that account's lock and share the
//! one session it opens; the lock is held only while a session is looked up or opened, so calls
//! on an open session run concurrently.
//!
//! - A session is reused while its credential version is at least the caller's. A newer
//!   credential version (the token was refreshed) opens a new session with the new token and
//!   drops the old one, which closes once its in-flight calls finish (rmcp then `DELETE`s it).
//! - A session unused for `idle_session_ttl` is dropped: when its account next calls, and by a
//!   sweep over all accounts that runs at most once per `min(idle_session_ttl, 30 s)` on access.
//! - The server dropping the session (HTTP 404 on its id) is handled by rmcp's
//!   `reinit_on_expired_session`: it re-initialises once and replays the request. A transport
//!   that has closed (the worker is gone, or the response stream ended without a reply) makes
//!   this module open a new session and retry the call once; a second failure is `Unavailable`.
//! - `tools/list` follows `nextCursor` to the last page and is cached per session, refreshed
//!   after the server sends `notifications/tools/list_changed`, and in every session of a
//!   server once a fresh listing (schema-watcher's poll) found its tools changed. It reads at most `max_pages`
//!   pages and `max_tools` tools; a server that keeps paging past them is `Unavailable`.
//! - A message (one JSON answer or one SSE event) longer than `max_message_bytes` is refused
//!   unread; redirects are never followed (one to another host would carry the token).
//! - Every request (each `initialize`, each page, each call) is bounded by `request_timeout`.
//!
//! # Error mapping ([`McpError`])
//!
//! - HTTP 401 (rmcp's `AuthRequired` when the server sends a challenge, else its "HTTP 401"
//!   unexpected response) → `Unauthorized`, and the account's session is discarded: the
//!   executor reports the rejected token and calls again with a new credential version.
//! - HTTP 429 (rmcp's `HttpStatus`, with the raw `Retry-After`), or a JSON-RPC error with code
//!   429 (the sandbox's `RATE_LIMITED`, `data.retryAfter` in seconds) → `RateLimited`.
//! - Connect and I/O errors, HTTP 5xx, JSON-RPC internal errors (-32603, what a 5xx with a
//!   JSON-RPC body arrives as), a session that cannot be re-initialised, timeouts →
//!   `Unavailable`.
//! - Any other JSON-RPC error (unknown tool, invalid params, 403 insufficient scope) →
//!   `Protocol` with the server's message.
//! - A tool result with `isError: true` is not an error: it is passed through as
//!   [`ToolResult::is_error`].
//!
//! The token is never logged or put in an error: rmcp keeps it only in the transport config
//! (which it does not log), its errors carry statuses, URLs and server bodies but not request
//! headers, and every message taken from rmcp is still scrubbed of the token before it is
//! returned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use asana_client::Token;
use asana_tools::Validator;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ErrorCode, ErrorData, Implementation,
    PaginatedRequestParams, ProtocolVersion, Tool,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::{ClientHandler, RoleClient, ServiceError, ServiceExt};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

/// The JSON-RPC error code the sandbox (and our guess at Asana) uses for a rate limit.
const RATE_LIMITED: i32 = 429;
/// The `data` key rmcp marks a response stream that closed before its reply with.
const TRANSPORT_CLOSED_MARKER: &str = "io.modelcontextprotocol/transportClosed";
/// How many `list_changed` announcements wait for a slow follower before it skips them.
const CHANGES_BACKLOG: usize = 64;
/// The longest gap between sweeps for idle sessions.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// How the MCP client behaves.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    /// The longest an upstream request (initialize, one tools/list page, one call) may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Sessions unused this long are closed.
    #[serde(with = "humantime_serde")]
    pub idle_session_ttl: Duration,
    /// The most `tools/list` pages read for one listing.
    pub max_pages: usize,
    /// The most tools one listing may hold.
    pub max_tools: usize,
    /// The longest message accepted from a server: one JSON answer or one SSE event.
    pub max_message_bytes: usize,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            idle_session_ttl: Duration::from_secs(600),
            max_pages: 50,
            max_tools: 2_000,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Compiled input schemas of upstream tools, by (server URL, tool name); recompiled when the
/// server changes a tool's schema.
#[derive(Debug, Default)]
pub(crate) struct Validators {
    by_tool: Mutex<HashMap<(String, String), Compiled>>,
}

/// A schema and its compiled validator.
type Compiled = (Value, Arc<Validator>);

impl Validators {
    /// The compiled input schema of `tool` as the server at `url` lists it now.
    pub(crate) fn get(&self, url: &str, tool: &UpstreamTool) -> Result<Arc<Validator>, McpError> {
        let key = (url.to_owned(), tool.name.clone());
        let mut by_tool = lock(&self.by_tool);
        if let Some((schema, validator)) = by_tool.get(&key)
            && *schema == tool.input_schema
        {
            return Ok(validator.clone());
        }
        let validator = Arc::new(Validator::new(&tool.input_schema).map_err(|e| {
            McpError::Unavailable(format!(
                "tool `{}` declares an unusable input schema: {e}",
                tool.name
            ))
        })?);
        by_tool.insert(key, (tool.input_schema.clone(), validator.clone()));
        Ok(validator)
    }
}

/// Which account a session belongs to, and which of its tokens opened it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SessionKey {
    pub account_id: String,
    pub credential_version: u64,
}

/// One tool of the upstream `tools/list`, with its annotations resolved to MCP's defaults, and
/// its whole definition as listed with that definition's canonical hash (what drift pinning
/// compares with the approved one).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpstreamTool {
    pub name: String,
    pub definition: Map<String, Value>,
    /// `sha256:<hex>` of the canonical definition ([`mcp_drift::definition_hash`]).
    pub hash: String,
    pub title: Option<String>,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Option<Value>,
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

impl From<Tool> for UpstreamTool {
    fn from(tool: Tool) -> Self {
        let definition = match serde_json::to_value(&tool) {
            Ok(Value::Object(definition)) => definition,
            _ => Map::new(),
        };
        // A JSON value always canonicalizes; were it not to, the empty hash matches no
        // approved definition, so a pinned connection refuses the tool.
        let hash = mcp_drift::definition_hash(&definition).unwrap_or_default();
        let annotations = tool.annotations.unwrap_or_default();
        Self {
            definition,
            hash,
            title: tool.title.or(annotations.title),
            description: tool.description.map(String::from).unwrap_or_default(),
            input_schema: Value::Object(tool.input_schema.as_ref().clone()),
            output_schema: tool
                .output_schema
                .map(|schema| Value::Object(schema.as_ref().clone())),
            read_only: annotations.read_only_hint.unwrap_or(false),
            destructive: annotations.destructive_hint.unwrap_or(true),
            idempotent: annotations.idempotent_hint.unwrap_or(false),
            open_world: annotations.open_world_hint.unwrap_or(true),
            name: tool.name.into_owned(),
        }
    }
}

/// What a `tools/call` returned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolResult {
    /// `{"content": [...], "structuredContent": ...}`, the latter only when the server sent it.
    pub output: Value,
    /// The server's `isError`: the tool ran and failed (a result for the model, not an error).
    pub is_error: bool,
}

/// Why an upstream MCP request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum McpError {
    #[error("the upstream MCP server rejected the token")]
    Unauthorized,
    #[error("the upstream MCP server is rate limiting (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the upstream MCP server is unavailable: {0}")]
    Unavailable(String),
    #[error("the upstream MCP server answered with an error: {0}")]
    Protocol(String),
}

/// The upstream MCP sessions of every account; clones share them.
#[derive(Debug, Clone)]
pub(crate) struct McpClients {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: McpConfig,
    /// Shared by every session: one connection pool, no redirects.
    http: reqwest::Client,
    /// Announces the URL of a server that sent `notifications/tools/list_changed`.
    changes: broadcast::Sender<String>,
    /// Per server URL, the listing generation: raised when a fresh listing finds its tools
    /// changed, which makes every session's cached list stale.
    generations: Mutex<HashMap<String, u64>>,
    accounts: Mutex<Accounts>,
}

#[derive(Debug)]
struct Accounts {
    slots: HashMap<String, Arc<Slot>>,
    last_sweep: Instant,
}

/// One account's session, behind the lock that makes opening it single-flight.
#[derive(Debug, Default)]
struct Slot {
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
}

/// Receives the server's notifications for one session.
#[derive(Debug)]
struct Handler {
    tools_changed: Arc<AtomicBool>,
    /// The server's URL, announced to [`McpClients::changes`] on `list_changed`.
    url: String,
    changes: broadcast::Sender<String>,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed.store(true, Ordering::Release);
        // Nobody following the changes is not an error.
        let _ = self.changes.send(self.url.clone());
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("agentauth-connector-executor", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }
}

/// An open upstream session. Dropping the last reference closes it (rmcp's drop guard cancels
/// the transport, which sends `DELETE`).
struct Session {
    credential_version: u64,
    url: String,
    service: RunningService<RoleClient, Handler>,
    tools_changed: Arc<AtomicBool>,
    /// The cached list, and the server's listing generation when it was read.
    tools: tokio::sync::Mutex<Option<(Arc<[UpstreamTool]>, u64)>>,
    last_used: Mutex<Instant>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("credential_version", &self.credential_version)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How one attempt failed: the session's transport is gone (worth one retry on a new session),
/// or an answer for the caller.
enum Failure {
    Closed,
    Mcp(McpError),
}

impl From<McpError> for Failure {
    fn from(error: McpError) -> Self {
        Self::Mcp(error)
    }
}

impl Session {
    async fn open(
        url: &str,
        token: &Token,
        credential_version: u64,
        inner: &Inner,
    ) -> Result<Self, McpError> {
        let config = &inner.config;
        let timeout = config.request_timeout;
        let transport_config = StreamableHttpClientTransportConfig::with_uri(url)
            .auth_header(token.expose())
            .reinit_on_expired_session(true)
            .max_json_response_size(config.max_message_bytes)
            .max_sse_event_size(config.max_message_bytes);
        let transport =
            StreamableHttpClientTransport::with_client(inner.http.clone(), transport_config);
        let tools_changed = Arc::new(AtomicBool::new(false));
        let handler = Handler {
            tools_changed: tools_changed.clone(),
            url: url.to_owned(),
            changes: inner.changes.clone(),
        };
        let service = tokio::time::timeout(timeout, handler.serve(transport))
            .await
            .map_err(|_| timed_out("initialize", timeout))?
            .map_err(|error| match initialize_failure(error, token) {
                Failure::Closed => {
                    McpError::Unavailable("the connection closed during initialize".into())
                }
                Failure::Mcp(error) => error,
            })?;
        Ok(Self {
            credential_version,
            url: url.to_owned(),
            service,
            tools_changed,
            tools: tokio::sync::Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
        })
    }

    fn idle_longer_than(&self, ttl: Duration) -> bool {
        lock(&self.last_used).elapsed() > ttl
    }

    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    /// The session's tool list: the cached one unless the server announced a change, the
    /// list is older than the server's listing `generation`, or the caller asks for a `fresh`
    /// read (which then becomes the cached one); and whether it differs from the one cached
    /// before.
    async fn list_tools(
        &self,
        token: &Token,
        config: &McpConfig,
        fresh: bool,
        generation: u64,
    ) -> Result<(Arc<[UpstreamTool]>, bool), Failure> {
        let timeout = config.request_timeout;
        let mut cached = self.tools.lock().await;
        let changed = self.tools_changed.swap(false, Ordering::AcqRel);
        if let Some((tools, _)) = cached
            .as_ref()
            .filter(|(_, seen)| !changed && !fresh && *seen >= generation)
        {
            return Ok((tools.clone(), false));
        }
        let mut tools = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let params = PaginatedRequestParams::default().with_cursor(cursor);
            let page = tokio::time::timeout(timeout, self.service.peer().list_tools(Some(params)))
                .await
                .map_err(|_| timed_out("tools/list", timeout))?
                .map_err(|error| service_failure(error, token))?;
            tools.extend(page.tools.into_iter().map(UpstreamTool::from));
            pages += 1;
            if tools.len() > config.max_tools {
                return Err(McpError::Unavailable(format!(
                    "the server lists more than {} tools",
                    config.max_tools
                ))
                .into());
            }
            match page.next_cursor {
                Some(_) if pages >= config.max_pages => {
                    return Err(McpError::Unavailable(format!(
                        "the server's tools/list goes on past {} pages",
                        config.max_pages
                    ))
                    .into());
                }
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let tools: Arc<[UpstreamTool]> = tools.into();
        let differs = cached.as_ref().is_none_or(|(old, _)| {
            old.len() != tools.len() || old.iter().zip(tools.iter()).any(|(a, b)| a.hash != b.hash)
        });
        *cached = Some((tools.clone(), generation));
        Ok((tools, differs))
    }

    async fn call_tool(
        &self,
        token: &Token,
        timeout: Duration,
        name: &str,
        arguments: &Map<String, Value>,
    ) -> Result<ToolResult, Failure> {
        let params = CallToolRequestParams::new(name.to_owned()).with_arguments(arguments.clone());
        let result = tokio::time::timeout(timeout, self.service.peer().call_tool(params))
            .await
            .map_err(|_| timed_out("tools/call", timeout))?
            .map_err(|error| service_failure(error, token))?;
        let mut output = Map::new();
        let content = serde_json::to_value(&result.content).map_err(|error| {
            McpError::Protocol(format!(
                "the tool result's content does not serialize: {error}"
            ))
        })?;
        output.insert("content".into(), content);
        if let Some(structured) = result.structured_content {
            output.insert("structuredContent".into(), structured);
        }
        Ok(ToolResult {
            output: Value::Object(output),
            is_error: result.is_error.unwrap_or(false),
        })
    }
}

impl McpClients {
    pub(crate) fn new(config: McpConfig) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|error| panic!("the MCP HTTP client cannot be built: {error}"));
        Self {
            inner: Arc::new(Inner {
                config,
                http,
                changes: broadcast::channel(CHANGES_BACKLOG).0,
                generations: Mutex::new(HashMap::new()),
                accounts: Mutex::new(Accounts {
                    slots: HashMap::new(),
                    last_sweep: Instant::now(),
                }),
            }),
        }
    }

    /// The upstream tools/list, every page, for the session of `key` (opened on first use).
    pub(crate) async fn list_tools(
        &self,
        key: &SessionKey,
        url: &str,
        token: &Token,
    ) -> Result<Arc<[UpstreamTool]>, McpError> {
        self.list(key, url, token, false).await
    }

    /// Every page of the upstream `tools/list` read now, not from the session's cache (which
    /// it then replaces): what the schema-watcher's polls see.
    pub(crate) async fn list_tools_fresh(
        &self,
        key: &SessionKey,
        url: &str,
        token: &Token,
    ) -> Result<Arc<[UpstreamTool]>, McpError> {
        self.list(key, url, token, true).await
    }

    async fn list(
        &self,
        key: &SessionKey,
        url: &str,
        token: &Token,
        fresh: bool,
    ) -> Result<Arc<[UpstreamTool]>, McpError> {
        let config = &self.inner.config;
        let generation = self.generation(url);
        let (tools, differs) = self
            .with_session(key, url, token, |session| async move {
                session.list_tools(token, config, fresh, generation).await
            })
            .await?;
        if fresh && differs {
            // Every session of this server lists again before its next call: a server need
            // not announce `list_changed`, and no call may go out under an old definition.
            *lock(&self.inner.generations)
                .entry(url.to_owned())
                .or_default() += 1;
        }
        Ok(tools)
    }

    /// How many times a fresh listing found the tools of the server at `url` changed.
    fn generation(&self, url: &str) -> u64 {
        lock(&self.inner.generations)
            .get(url)
            .copied()
            .unwrap_or_default()
    }

    /// The URLs of upstream servers whose sessions receive `notifications/tools/list_changed`,
    /// from now on. A receiver that falls behind skips what it missed (`Lagged`).
    pub(crate) fn changes(&self) -> broadcast::Receiver<String> {
        self.inner.changes.subscribe()
    }

    /// tools/call on the session of `key`.
    pub(crate) async fn call_tool(
        &self,
        key: &SessionKey,
        url: &str,
        token: &Token,
        name: &str,
        arguments: Map<String, Value>,
    ) -> Result<ToolResult, McpError> {
        let timeout = self.inner.config.request_timeout;
        let arguments = &arguments;
        self.with_session(key, url, token, |session| async move {
            session.call_tool(token, timeout, name, arguments).await
        })
        .await
    }

    /// Runs `attempt` on the account's session; when the transport has closed, once more on a
    /// new session. A rejected token discards the session.
    async fn with_session<T, F, Fut>(
        &self,
        key: &SessionKey,
        url: &str,
        token: &Token,
        attempt: F,
    ) -> Result<T, McpError>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut failed = None;
        for _ in 0..2 {
            let session = self.session(key, url, token, failed.as_ref()).await?;
            match attempt(session.clone()).await {
                Ok(value) => return Ok(value),
                Err(Failure::Closed) => {
                    tracing::debug!(
                        account_id = %key.account_id,
                        "the upstream MCP session closed; opening a new one"
                    );
                    failed = Some(session);
                }
                Err(Failure::Mcp(McpError::Unauthorized)) => {
                    self.discard(&key.account_id, &session).await;
                    return Err(McpError::Unauthorized);
                }
                Err(Failure::Mcp(error)) => return Err(error),
            }
        }
        if let Some(session) = failed {
            self.discard(&key.account_id, &session).await;
        }
        Err(McpError::Unavailable(
            "the upstream MCP session closed, and again after it was re-opened".into(),
        ))
    }

    /// The account's slot, sweeping idle sessions first when a sweep is due.
    fn slot(&self, account_id: &str) -> Arc<Slot> {
        let ttl = self.inner.config.idle_session_ttl;
        let mut accounts = lock(&self.inner.accounts);
        if accounts.last_sweep.elapsed() >= ttl.min(MAX_SWEEP_INTERVAL) {
            accounts.last_sweep = Instant::now();
            accounts
                .slots
                .retain(|_, slot| match slot.session.try_lock() {
                    Ok(mut session) => {
                        if session.as_ref().is_some_and(|s| s.idle_longer_than(ttl)) {
                            *session = None;
                        }
                        // Only the map holds an empty slot: nobody can be about to fill it.
                        session.is_some() || Arc::strong_count(slot) > 1
                    }
                    Err(_) => true,
                });
        }
        accounts
            .slots
            .entry(account_id.to_owned())
            .or_default()
            .clone()
    }

    /// The account's session for `key`, opened when there is none, it is older than the key's
    /// credential version, idle too long, for another URL, or the one that just `failed`.
    async fn session(
        &self,
        key: &SessionKey,
        url: &str,
        token: &Token,
        failed: Option<&Arc<Session>>,
    ) -> Result<Arc<Session>, McpError> {
        let config = &self.inner.config;
        let slot = self.slot(&key.account_id);
        let mut current = slot.session.lock().await;
        if let Some(session) = current.as_ref() {
            let usable = session.credential_version >= key.credential_version
                && session.url == url
                && !session.idle_longer_than(config.idle_session_ttl)
                && !session.service.is_closed()
                && !failed.is_some_and(|failed| Arc::ptr_eq(failed, session));
            if usable {
                session.touch();
                return Ok(session.clone());
            }
        }
        // Drop the old session before opening the next: it closes once its calls finish.
        *current = None;
        let session =
            Arc::new(Session::open(url, token, key.credential_version, &self.inner).await?);
        tracing::debug!(
            account_id = %key.account_id,
            credential_version = key.credential_version,
            "opened an upstream MCP session"
        );
        *current = Some(session.clone());
        Ok(session)
    }

    /// Closes the sessions of `accounts` (by account id): their credentials changed.
    pub(crate) fn close(&self, accounts: &[String]) {
        let mut all = lock(&self.inner.accounts);
        for account in accounts {
            if let Some(slot) = all.slots.remove(account) {
                // A call still holding the session finishes on it; nothing new will.
                if let Ok(mut session) = slot.session.try_lock() {
                    *session = None;
                }
            }
        }
    }

    /// Forgets the account's session if it is still `session`.
    async fn discard(&self, account_id: &str, session: &Arc<Session>) {
        let slot = self.slot(account_id);
        let mut current = slot.session.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, session)) {
            *current = None;
        }
    }
}

fn timed_out(what: &str, timeout: Duration) -> McpError {
    McpError::Unavailable(format!("{what} took longer than {timeout:?}"))
}

/// `message` without the token, should a server or library ever have echoed it.
fn scrub(message: impl Into<String>, token: &Token) -> String {
    let message = message.into();
    let secret = token.expose();
    if secret.is_empty() {
        message
    } else {
        message.replace(secret, "[redacted]")
    }
}

/// A `Retry-After` of delay-seconds (an HTTP date is not worth a dependency: `None`).
fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse().ok().map(Duration::from_secs)
}

fn initialize_failure(error: rmcp::service::ClientInitializeError, token: &Token) -> Failure {
    use rmcp::service::ClientInitializeError as E;
    match error {
        E::TransportError { error, .. } => transport_failure(error.error.as_ref(), token),
        E::JsonRpcError(data) => error_data_failure(&data, token),
        E::ConnectionClosed(_) => Failure::Closed,
        other => McpError::Protocol(scrub(other.to_string(), token)).into(),
    }
}

fn service_failure(error: ServiceError, token: &Token) -> Failure {
    match error {
        ServiceError::McpError(data) => error_data_failure(&data, token),
        ServiceError::TransportSend(error) => transport_failure(error.error.as_ref(), token),
        ServiceError::TransportClosed | ServiceError::Cancelled { .. } => Failure::Closed,
        ServiceError::Timeout { timeout } => {
            McpError::Unavailable(format!("the request took longer than {timeout:?}")).into()
        }
        other => McpError::Protocol(scrub(other.to_string(), token)).into(),
    }
}

fn error_data_failure(data: &ErrorData, token: &Token) -> Failure {
    let data_field = |key: &str| data.data.as_ref().and_then(|d| d.get(key));
    if data.code == ErrorCode(RATE_LIMITED) {
        let retry_after = data_field("retryAfter")
            .and_then(Value::as_u64)
            .map(Duration::from_secs);
        return McpError::RateLimited { retry_after }.into();
    }
    if data_field(TRANSPORT_CLOSED_MARKER).is_some() {
        return Failure::Closed;
    }
    let message = scrub(data.message.as_ref(), token);
    if data.code == ErrorCode::INTERNAL_ERROR {
        McpError::Unavailable(message).into()
    } else {
        McpError::Protocol(message).into()
    }
}

fn transport_failure(
    error: &(dyn std::error::Error + Send + Sync + 'static),
    token: &Token,
) -> Failure {
    let Some(error) = error.downcast_ref::<StreamableHttpError<reqwest::Error>>() else {
        return McpError::Unavailable(scrub(error.to_string(), token)).into();
    };
    match error {
        StreamableHttpError::AuthRequired(_) => McpError::Unauthorized.into(),
        StreamableHttpError::InsufficientScope(_) => {
            McpError::Protocol("the token lacks the scope this needs (HTTP 403)".into()).into()
        }
        StreamableHttpError::HttpStatus(status) if status.status == 429 => McpError::RateLimited {
            retry_after: retry_after(status.retry_after.as_deref()),
        }
        .into(),
        StreamableHttpError::HttpStatus(status) => {
            McpError::Unavailable(format!("HTTP {}", status.status)).into()
        }
        // A 401 without a challenge: rmcp keeps only "HTTP 401 Unauthorized: <body>".
        StreamableHttpError::UnexpectedServerResponse(message)
            if message.starts_with("HTTP 401") =>
        {
            McpError::Unauthorized.into()
        }
        StreamableHttpError::TransportChannelClosed => Failure::Closed,
        StreamableHttpError::SessionExpired
        | StreamableHttpError::SessionRecoveryTimeout
        | StreamableHttpError::ReinitializationFailed(_) => McpError::Unavailable(
            "the upstream dropped the session and it could not be re-initialised".into(),
        )
        .into(),
        other => McpError::Unavailable(scrub(other.to_string(), token)).into(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::process::Stdio;

    use anyhow::{Context, Result, bail, ensure};
    use asana_sandbox::control::HEADER;
    use asana_sandbox::seed::MCP_CLIENT_ID;
    use asana_sandbox::{Config, Fault, Sandbox};
    use serde_json::json;
    use tokio::net::TcpListener;
    use tokio_util::sync::{CancellationToken, DropGuard};

    use super::*;

    const CONTROL_KEY: &str = "executor-mcp-test-key";
    /// The sandbox's tools, in `tools/list` order.
    const SANDBOX_TOOLS: [&str; 14] = [
        "get_me",
        "search_objects",
        "get_task",
        "get_tasks",
        "get_my_tasks",
        "get_projects",
        "get_project",
        "create_tasks",
        "update_tasks",
        "delete_task",
        "add_comment",
        "create_project_status_update",
        "get_workspace_users",
        "create_task_preview",
    ];

    /// The sandbox's `get_me` tool through `clients`, as the account of `key`.
    async fn get_me(
        clients: &McpClients,
        key: &SessionKey,
        url: &str,
        token: &Token,
    ) -> Result<ToolResult, McpError> {
        clients
            .call_tool(key, url, token, "get_me", Map::new())
            .await
    }

    fn key(account_id: &str, credential_version: u64) -> SessionKey {
        SessionKey {
            account_id: account_id.into(),
            credential_version,
        }
    }

    fn args(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn config(request_timeout: Duration, idle_session_ttl: Duration) -> McpConfig {
        McpConfig {
            request_timeout,
            idle_session_ttl,
            ..McpConfig::default()
        }
    }

    /// The session `clients` holds for `account`, if any (and nobody is opening one).
    fn held_session(clients: &McpClients, account: &str) -> Option<Arc<Session>> {
        let slot = lock(&clients.inner.accounts).slots.get(account)?.clone();
        slot.session.try_lock().ok()?.clone()
    }

    /// An in-process sandbox (stopped on drop) with Alice's MCP-app grants.
    struct Upstream {
        sandbox: Sandbox,
        base: String,
        url: String,
        alice: String,
        http: reqwest::Client,
        _stop: DropGuard,
    }

    /// An access token and the refresh token that revokes its grant.
    struct Grant {
        token: Token,
        refresh_token: String,
    }

    impl Upstream {
        async fn start() -> Result<Self> {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let base = format!("http://{}", listener.local_addr()?);
            let sandbox = Sandbox::new(Config {
                public_url: base.clone(),
                control_key: Some(CONTROL_KEY.into()),
                seed: true,
                mcp_page_size: 4,
                ..Config::default()
            });
            let alice = sandbox
                .world()
                .all("user", |u| u["email"] == "alice@acme.test")
                .next()
                .and_then(|u| u["gid"].as_str())
                .context("the seed has Alice")?
                .to_owned();
            let stop = CancellationToken::new();
            tokio::spawn(sandbox.clone().serve(listener, stop.clone()));
            Ok(Self {
                sandbox,
                url: format!("{base}/v2/mcp"),
                base,
                alice,
                http: reqwest::Client::new(),
                _stop: stop.drop_guard(),
            })
        }

        /// A new MCP-app grant for Alice.
        fn grant(&self) -> Result<Grant> {
            let issued =
                self.sandbox
                    .tokens()
                    .grant(MCP_CLIENT_ID, &self.alice, vec!["default".into()]);
            Ok(Grant {
                token: Token::new(issued.access_token),
                refresh_token: issued
                    .refresh_token
                    .context("a grant has a refresh token")?,
            })
        }

        fn revoke(&self, grant: &Grant) {
            self.sandbox.tokens().revoke(&grant.refresh_token);
        }

        fn inject(&self, fault: Value) -> Result<()> {
            let fault: Fault = serde_json::from_value(fault)?;
            lock(&self.sandbox.0.faults).push(fault);
            Ok(())
        }

        /// How many handshake-era sessions the sandbox has open.
        async fn live_sessions(&self) -> Result<usize> {
            let answer: Value = self
                .http
                .get(format!("{}/_sandbox/mcp/sessions", self.base))
                .header(HEADER, CONTROL_KEY)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            Ok(answer["sessions"].as_array().map_or(0, Vec::len))
        }

        /// Ends every session, so the next request on one meets a 404.
        async fn end_sessions(&self) -> Result<()> {
            self.http
                .delete(format!("{}/_sandbox/mcp/sessions", self.base))
                .header(HEADER, CONTROL_KEY)
                .send()
                .await?
                .error_for_status()?;
            Ok(())
        }

        async fn wait_for_live_sessions(&self, expected: usize) -> Result<()> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let live = self.live_sessions().await?;
                if live == expected {
                    return Ok(());
                }
                ensure!(
                    Instant::now() < deadline,
                    "{live} live sessions, expected {expected}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    #[tokio::test]
    async fn sandbox_tools_are_listed_across_pages_with_schemas_and_annotations() -> Result<()> {
        let upstream = Upstream::start().await?;
        let grant = upstream.grant()?;
        let clients = McpClients::new(McpConfig::default());

        let tools = clients
            .list_tools(&key("acct", 1), &upstream.url, &grant.token)
            .await?;
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, SANDBOX_TOOLS, "every page of 4, in order");
        for tool in tools.iter() {
            assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
            assert!(!tool.description.is_empty(), "{}", tool.name);
            assert!(tool.open_world, "{}", tool.name);
        }
        let get_task = tools
            .iter()
            .find(|t| t.name == "get_task")
            .context("get_task")?;
        assert!(get_task.read_only && !get_task.destructive && get_task.idempotent);
        assert!(get_task.input_schema["properties"]["task_gid"].is_object());
        let delete = tools
            .iter()
            .find(|t| t.name == "delete_task")
            .context("delete_task")?;
        assert!(!delete.read_only && delete.destructive);

        let again = clients
            .list_tools(&key("acct", 1), &upstream.url, &grant.token)
            .await?;
        assert!(
            Arc::ptr_eq(&tools, &again),
            "the list is cached per session"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_listing_past_its_bounds_and_an_oversized_message_are_refused() -> Result<()> {
        let upstream = Upstream::start().await?;
        let grant = upstream.grant()?;
        let bounded = |change: fn(&mut McpConfig)| {
            let mut config = McpConfig::default();
            change(&mut config);
            McpClients::new(config)
        };
        let few_pages = bounded(|c| c.max_pages = 2);
        let error = few_pages
            .list_tools(&key("acct", 1), &upstream.url, &grant.token)
            .await
            .expect_err("the sandbox lists its tools in more than 2 pages of 4");
        assert!(
            matches!(&error, McpError::Unavailable(m) if m.contains("past 2 pages")),
            "{error}"
        );
        let few_tools = bounded(|c| c.max_tools = 5);
        let error = few_tools
            .list_tools(&key("acct", 1), &upstream.url, &grant.token)
            .await
            .expect_err("more than 5 tools");
        assert!(
            matches!(&error, McpError::Unavailable(m) if m.contains("more than 5 tools")),
            "{error}"
        );
        let small = bounded(|c| c.max_message_bytes = 512);
        let refused = small
            .list_tools(&key("acct", 1), &upstream.url, &grant.token)
            .await;
        assert!(
            refused.is_err(),
            "a page of four tools with their schemas is longer than 512 bytes"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_redirecting_server_never_receives_the_token_elsewhere() -> Result<()> {
        let upstream = Upstream::start().await?;
        let grant = upstream.grant()?;
        let serve = |router: axum::Router| async move {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}/v2/mcp", listener.local_addr()?);
            let stop = CancellationToken::new();
            let stopped = stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped.cancelled_owned())
                    .await
            });
            anyhow::Ok((url, stop.drop_guard()))
        };
        // Where the redirect points: it counts whatever reaches it.
        let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = reached.clone();
        let (elsewhere, _stop_elsewhere) = serve(axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { axum::http::StatusCode::NOT_FOUND }
        }))
        .await?;
        let (url, _stop) = serve(axum::Router::new().fallback(move || {
            let elsewhere = elsewhere.clone();
            async move {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [("Location", elsewhere)],
                )
            }
        }))
        .await?;
        let clients = McpClients::new(McpConfig::default());
        let error = get_me(&clients, &key("acct", 1), &url, &grant.token)
            .await
            .expect_err("a redirect is not followed");
        assert!(!error.to_string().contains(grant.token.expose()), "{error}");
        assert_eq!(
            reached.load(Ordering::SeqCst),
            0,
            "nothing reached the redirect's target"
        );
        Ok(())
    }

    #[tokio::test]
    async fn sandbox_tool_list_is_refreshed_after_list_changed() -> Result<()> {
        let upstream = Upstream::start().await?;
        let grant = upstream.grant()?;
        let clients = McpClients::new(McpConfig::default());
        let k = key("acct", 1);
        let before = clients.list_tools(&k, &upstream.url, &grant.token).await?;
        assert!(!before.iter().any(|t| t.name == "added_tool"));

        upstream
            .http
            .post(format!("{}/_sandbox/mcp/tools", upstream.base))
            .header(HEADER, CONTROL_KEY)
            .json(&json!({"tool": {
                "name": "added_tool",
                "description": "Added while the session was open.",
                "inputSchema": {"type": "object"},
            }}))
            .send()
            .await?
            .error_for_status()?;

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let tools = clients.list_tools(&k, &upstream.url, &grant.token).await?;
            if tools.iter().any(|t| t.name == "added_tool") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the list never picked up the added tool"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn sandbox_calls_pass_tool_failures_through_and_map_protocol_errors() -> Result<()> {
        let upstream = Upstream::start().await?;
        let grant = upstream.grant()?;
        let clients = McpClients::new(McpConfig::default());
        let k = key("acct", 1);

        let me = get_me(&clients, &k, &upstream.url, &grant.token).await?;
        assert!(!me.is_error, "{:?}", me.output);
        assert_eq!(me.output["content"][0]["type"], "text");
        assert_eq!(
            me.output["structuredContent"]["gid"], upstream.alice,
            "{:?}",
            me.output
        );

        let bad = clients
            .call_tool(&k, &upstream.url, &grant.token, "get_task", Map::new())
            .await?;
        assert!(bad.is_error, "{:?}", bad.output);
        assert!(bad.output["content"][0]["text"].is_string());
        assert!(bad.output.get("structuredContent").is_none());

        let unknown = clients
            .call_tool(&k, &upstream.url, &grant.token, "no_such_tool", Map::new())
            .await;
        match unknown {
            Err(McpError::Protocol(message)) => {
                assert!(message.contains("no_such_tool"), "{message}")
            }
            other => bail!("expected a protocol error, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn sandbox_session_is_reused_and_replaced_by_a_new_credential_version() -> Result<()> {
        let upstream = Upstream::start().await?;
        let first = upstream.grant()?;
        let clients = McpClients::new(McpConfig::default());

        clients
            .list_tools(&key("acct", 1), &upstream.url, &first.token)
            .await?;
        let opened = held_session(&clients, "acct").context("a session")?;
        for _ in 0..3 {
            get_me(&clients, &key("acct", 1), &upstream.url, &first.token).await?;
        }
        let held = held_session(&clients, "acct").context("a session")?;
        assert!(Arc::ptr_eq(&opened, &held), "calls reuse the session");
        assert_eq!(upstream.live_sessions().await?, 1);
        drop((opened, held));

        // The token was refreshed: version 2 opens a session with the new token and the old
        // session is closed (DELETE).
        let second = upstream.grant()?;
        get_me(&clients, &key("acct", 2), &upstream.url, &second.token).await?;
        assert_eq!(
            held_session(&clients, "acct").map(|s| s.credential_version),
            Some(2)
        );
        upstream.wait_for_live_sessions(1).await?;

        // Only the new token works now, and the session uses it.
        upstream.revoke(&first);
        let me = get_me(&clients, &key("acct", 2), &upstream.url, &second.token).await?;
        assert!(!me.is_error);
        Ok(())
    }

    #[tokio::test]
    async fn sandbox_concurrent_first_calls_open_one_session() -> Result<()> {
        let upstream = Upstream::start().await?;
        let grant = upstream.grant()?;
        let clients = McpClients::new(McpConfig::default());
        let k = key("acct", 1);

        let calls = (0..8).map(|_| get_me(&clients, &k, &upstream.url, &grant.token));
        for result in futures::future::join_all(calls).await {
            assert!(!result?.is_error);
        }
        assert_eq!(upstream.live_sessions().await?, 1);
        Ok(())
    }

    #[tokio::test]
    async fn sandbox_calls_on_one_session_run_concurrently() -> Result<()> {
        let upstream = Upstream::start().await?;
        let grant = upstream.grant()?;
        let clients = McpClients::new(McpConfig::default());
        let k = key("acct", 1);
        clients.list_tools(&k, &upstream.url, &grant.token).await?;

        upstream.inject(json!({"path_prefix": "/v2/mcp", "latency_ms": 700, "times": 4}))?;
        let started = Instant::now();
        let calls = (0..4).map(|_| get_me(&clients, &k, &upstream.url, &grant.token));
        for result in futures::future::join_all(calls).await {
            assert!(!result?.is_error);
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(2000),
            "4 calls of 700 ms took {elapsed:?}: they were serialized"
        );
        Ok(())
    }

    #[tokio::test]
    async fn sandbox_rejected_tokens_are_unauthorized_and_drop_the_session() -> Result<()> {
        let upstream = Upstream::start().await?;
        let clients = McpClients::new(McpConfig::default());

        let wrong = clients
            .list_tools(&key("acct", 1), &upstream.url, &Token::new("sbx_at_wrong"))
            .await;
        assert_eq!(wrong.err(), Some(McpError::Unauthorized));

        let grant = upstream.grant()?;
        clients
            .list_tools(&key("acct", 1), &upstream.url, &grant.token)
            .await?;
        upstream.revoke(&grant);
        let revoked = get_me(&clients, &key("acct", 1), &upstream.url, &grant.token).await;
        assert_eq!(revoked.err(), Some(McpError::Unauthorized));
        assert!(
            held_session(&clients, "acct").is_none(),
            "the session is discarded"
        );

        let renewed = upstream.grant()?;
        let me = get_me(&clients, &key("acct", 2), &upstream.url, &renewed.token).await?;
        assert!(!me.is_error);
        Ok(())
    }

    #[tokio::test]
    async fn sandbox_ended_session_is_reinitialised_transparently() -> Result<()> {
        let upstream = Upstream::start().await?;
        let grant = upstream.grant()?;
        let clients = McpClients::new(McpConfig::default());
        let k = key("acct", 1);

        clients.list_tools(&k, &upstream.url, &grant.token).await?;
        let before = held_session(&clients, "acct").context("a session")?;
        upstream.end_sessions().await?;
        assert_eq!(upstream.live_sessions().await?, 0);
        let me = get_me(&clients, &k, &upstream.url, &grant.token).await?;
        assert!(!me.is_error);
        assert_eq!(upstream.live_sessions().await?, 1, "one new session");
        let after = held_session(&clients, "acct").context("a session")?;
        assert!(
            Arc::ptr_eq(&before, &after),
            "rmcp re-initialised on the same transport (404 → initialize → replay)"
        );
        Ok(())
    }

    #[tokio::test]
    async fn sandbox_rate_limits_server_errors_and_timeouts_are_mapped() -> Result<()> {
        let upstream = Upstream::start().await?;
        let grant = upstream.grant()?;
        let clients = McpClients::new(config(Duration::from_millis(500), Duration::from_secs(600)));
        let k = key("acct", 1);
        let call = || get_me(&clients, &k, &upstream.url, &grant.token);
        call().await?;

        upstream.inject(json!({"path_prefix": "/v2/mcp", "status": 429, "times": 1}))?;
        assert_eq!(
            call().await.err(),
            Some(McpError::RateLimited {
                retry_after: Some(Duration::from_secs(30))
            })
        );

        upstream.inject(json!({"path_prefix": "/v2/mcp", "status": 503, "times": 1}))?;
        assert!(
            matches!(call().await, Err(McpError::Unavailable(_))),
            "a 503 is Unavailable"
        );

        upstream.inject(json!({"path_prefix": "/v2/mcp", "latency_ms": 2000, "times": 1}))?;
        match call().await {
            Err(McpError::Unavailable(message)) => {
                assert!(message.contains("longer than"), "{message}")
            }
            other => bail!("expected a timeout, got {other:?}"),
        }

        assert!(!call().await?.is_error, "the session still works");
        let dead = McpClients::new(config(Duration::from_secs(5), Duration::from_secs(600)));
        let closed_port = agentauth_testkit::free_port();
        assert!(matches!(
            dead.list_tools(&k, &format!("http://{closed_port}/v2/mcp"), &grant.token)
                .await,
            Err(McpError::Unavailable(_))
        ));
        Ok(())
    }

    #[test]
    fn errors_never_carry_the_token() {
        let token = Token::new("sbx_at_secret");
        let data = ErrorData::invalid_params("Unknown tool: sbx_at_secret", None);
        match error_data_failure(&data, &token) {
            Failure::Mcp(McpError::Protocol(message)) => {
                assert_eq!(message, "Unknown tool: [redacted]")
            }
            _ => panic!("an invalid-params error is a protocol error"),
        }
    }

    #[test]
    fn config_reads_humantime_durations_and_defaults() -> Result<()> {
        let config: McpConfig = serde_json::from_value(json!({"request_timeout": "5s"}))?;
        assert_eq!(config.request_timeout, Duration::from_secs(5));
        assert_eq!(config.idle_session_ttl, Duration::from_secs(600));
        assert!(serde_json::from_value::<McpConfig>(json!({"nope": 1})).is_err());
        Ok(())
    }

    /// The independent peer: `tests/python/mcp_peer_server.py` under the project venv's
    /// Python, killed on drop.
    struct PythonPeer {
        url: String,
        _child: tokio::process::Child,
    }

    impl PythonPeer {
        async fn start() -> Result<Self> {
            let python = agentauth_testkit::tools_dir().join("venv/bin/python");
            ensure!(
                python.exists(),
                "no Python venv at {}: run `make tools` (it installs tests/python/requirements.txt, \
                 which has the `mcp` SDK), or point AGENTAUTH_TOOLS_DIR at a folder whose \
                 venv/bin/python has it",
                python.display()
            );
            let script: PathBuf =
                agentauth_testkit::workspace_root().join("tests/python/mcp_peer_server.py");
            let address: SocketAddr = agentauth_testkit::free_port();
            let mut child = tokio::process::Command::new(&python)
                .arg(&script)
                .arg(address.port().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", python.display()))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while tokio::net::TcpStream::connect(address).await.is_err() {
                if let Some(status) = child.try_wait()? {
                    let mut stderr = String::new();
                    if let Some(mut pipe) = child.stderr.take() {
                        tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut stderr).await?;
                    }
                    bail!(
                        "the Python MCP peer exited ({status}); is `mcp` installed in the venv? stderr:\n{stderr}"
                    );
                }
                ensure!(
                    Instant::now() < deadline,
                    "the Python MCP peer did not listen on {address} within 30s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Self {
                url: format!("http://{address}/mcp"),
                _child: child,
            })
        }
    }

    async fn peer_sessions(
        clients: &McpClients,
        peer: &PythonPeer,
        k: &SessionKey,
    ) -> Result<Value> {
        let token = Token::new("peer-token");
        let counted = clients
            .call_tool(k, &peer.url, &token, "sessions", Map::new())
            .await?;
        ensure!(!counted.is_error, "{:?}", counted.output);
        Ok(counted.output["structuredContent"]["result"].clone())
    }

    #[tokio::test]
    async fn python_peer_lists_calls_and_reuses_one_session() -> Result<()> {
        let peer = PythonPeer::start().await?;
        let token = Token::new("peer-token");
        let clients = McpClients::new(McpConfig::default());
        let k = key("acct", 1);

        // Concurrent first calls share the one session they open.
        let echoes = (0..6).map(|i| {
            let token = &token;
            let clients = &clients;
            let k = &k;
            let url = &peer.url;
            async move {
                clients
                    .call_tool(
                        k,
                        url,
                        token,
                        "echo",
                        args(json!({"text": format!("hi {i}")})),
                    )
                    .await
            }
        });
        for (i, result) in futures::future::join_all(echoes)
            .await
            .into_iter()
            .enumerate()
        {
            let result = result?;
            assert!(!result.is_error);
            assert_eq!(result.output["content"][0]["text"], format!("hi {i}"));
        }

        let tools = clients.list_tools(&k, &peer.url, &token).await?;
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["add", "echo", "evolve", "fail", "sessions"]);
        let add = tools.iter().find(|t| t.name == "add").context("add")?;
        assert_eq!(add.title.as_deref(), Some("Add"));
        assert!(add.read_only && add.idempotent && !add.open_world);
        assert_eq!(add.input_schema["properties"]["a"]["type"], "integer");
        assert!(add.output_schema.is_some());
        let fail = tools.iter().find(|t| t.name == "fail").context("fail")?;
        assert!(
            !fail.read_only && fail.destructive && !fail.idempotent && fail.open_world,
            "no annotations: MCP's defaults"
        );

        let sum = clients
            .call_tool(&k, &peer.url, &token, "add", args(json!({"a": 2, "b": 3})))
            .await?;
        assert!(!sum.is_error);
        assert_eq!(sum.output["structuredContent"], json!({"sum": 5}));

        let failed = clients
            .call_tool(
                &k,
                &peer.url,
                &token,
                "fail",
                args(json!({"reason": "nope"})),
            )
            .await?;
        assert!(failed.is_error, "{:?}", failed.output);
        let text = failed.output["content"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(text.contains("nope"), "{text}");

        assert_eq!(peer_sessions(&clients, &peer, &k).await?, 1);
        Ok(())
    }

    #[tokio::test]
    async fn python_peer_refuses_a_bad_token() -> Result<()> {
        let peer = PythonPeer::start().await?;
        let clients = McpClients::new(McpConfig::default());
        let refused = clients
            .list_tools(
                &key("acct", 1),
                &peer.url,
                &Token::new("not-the-peer-token"),
            )
            .await;
        assert_eq!(refused.err(), Some(McpError::Unauthorized));
        Ok(())
    }

    #[tokio::test]
    async fn python_peer_sessions_are_replaced_when_idle_or_on_a_new_credential_version()
    -> Result<()> {
        let peer = PythonPeer::start().await?;
        let clients = McpClients::new(config(Duration::from_secs(30), Duration::from_millis(300)));

        assert_eq!(peer_sessions(&clients, &peer, &key("acct", 1)).await?, 1);
        assert_eq!(peer_sessions(&clients, &peer, &key("acct", 1)).await?, 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            peer_sessions(&clients, &peer, &key("acct", 1)).await?,
            2,
            "an idle session is replaced"
        );
        assert_eq!(
            peer_sessions(&clients, &peer, &key("acct", 2)).await?,
            3,
            "a new credential version opens a new session"
        );
        assert_eq!(
            peer_sessions(&clients, &peer, &key("acct", 1)).await?,
            3,
            "an older version reuses the newer session"
        );

        // The sweep drops other accounts' idle sessions too.
        peer_sessions(&clients, &peer, &key("other", 1)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        peer_sessions(&clients, &peer, &key("acct", 2)).await?;
        assert!(held_session(&clients, "other").is_none());
        Ok(())
    }

    mod untrusted {
        use proptest::prelude::*;

        use super::*;

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<String>().prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                    proptest::collection::btree_map(any::<String>(), inner, 0..3)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Tool definitions as a server might send them: the known fields with any values.
        fn tool() -> impl Strategy<Value = Value> {
            (
                any::<String>(),
                proptest::option::of(json()),
                proptest::option::of(json()),
                proptest::option::of(json()),
                proptest::option::of(json()),
                proptest::option::of(json()),
            )
                .prop_map(|(name, title, description, input, output, annotations)| {
                    let mut tool = Map::new();
                    tool.insert("name".into(), name.into());
                    for (key, value) in [
                        ("title", title),
                        ("description", description),
                        ("inputSchema", input),
                        ("outputSchema", output),
                        ("annotations", annotations),
                    ] {
                        if let Some(value) = value {
                            tool.insert(key.into(), value);
                        }
                    }
                    Value::Object(tool)
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever a server lists, a tool that parses becomes an `UpstreamTool` with its
            /// name and an object schema; one that does not parse is an error, never a panic.
            #[test]
            fn any_listed_tool_converts_or_is_refused(definition in tool()) {
                if let Ok(parsed) = serde_json::from_value::<Tool>(definition.clone()) {
                    let name = parsed.name.to_string();
                    let upstream = UpstreamTool::from(parsed);
                    prop_assert_eq!(upstream.name, name);
                    prop_assert!(upstream.input_schema.is_object());
                }
            }
        }
    }
}
