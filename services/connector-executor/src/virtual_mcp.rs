//! Virtual MCP servers: per-user MCP endpoints (Streamable HTTP) that list and call only the
//! tools an operator whitelisted, as the user a session was minted for.
//!
//! `MintMcpSession` signs a bearer ([`crate::bearer`]) naming the virtual server, the user and
//! an expiry, and records the session ([`crate::sessions`]); its URL is
//! `<public_url>/mcp/<server>/<session id>`. Every request is checked on its own (the bearer
//! verifies, is unexpired, belongs to the URL's server and session and is not revoked), so any
//! replica serves any request and no session lives in one process: rmcp serves the endpoint
//! statelessly, and the 2025-06-18 / 2025-11-25 session model is laid over it from what the
//! request carries (`Mcp-Session-Id` is a nonce bound to the bearer's session by an HMAC;
//! DELETE ends that protocol session, not the bearer), while the 2026-07-28 form passes as it
//! is. A `tools/call` runs through the same path as `ExecuteTool`
//! (validation, rate control, audit, which names the virtual server and session).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
    Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tonic_types::StatusExt as _;

use crate::Error;
use crate::api::ConnectorExecutorApi;
use crate::bearer::{Claims, KeyConfig, Keys};
use crate::executor::CallContext;
use crate::requests::{Pages, ToolCall};
use crate::sessions::Refusal;
use crate::tokens::AccountKey;

/// The RPC a minter must still be granted for its sessions to act.
const MINT_RPC: &str = "/agentauth.executor.v1.ConnectorExecutor/MintMcpSession";

/// The most tools one `tools/list` page holds.
const PAGE_SIZE: usize = 100;

/// `[virtual_mcp]`: where the endpoints listen and how their bearers are signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VirtualMcpConfig {
    /// The HTTP listener of every virtual server's endpoint.
    pub listen: SocketAddr,
    /// The URL clients reach `listen` by (an Ingress's); `http://<listen>` when unset.
    pub public_url: Option<String>,
    /// `Host` values accepted (DNS-rebinding guard); the public URL's host when empty.
    pub allowed_hosts: Vec<String>,
    /// Browser `Origin`s accepted (`https://app.example.com:443`; `:*` for any port), none
    /// when empty; a request without an `Origin` (any client but a browser) passes.
    pub allowed_origins: Vec<String>,
    /// A session's lifetime when `MintMcpSession` asks for none.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// The longest lifetime a session gets.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// The keys that sign and verify bearers, the signing key first; none turns virtual MCP
    /// off.
    pub signing_keys: Vec<KeyConfig>,
    /// How often each replica reads the revoked sessions from the database.
    #[serde(with = "humantime_serde")]
    pub revocation_refresh: Duration,
    /// How old a replica's copy of the revocations may grow (the database unreachable) before
    /// it refuses every bearer (503) rather than honour one that may have been revoked.
    #[serde(with = "humantime_serde")]
    pub revocation_stale_after: Duration,
    /// How long a session stays listed after it expired.
    #[serde(with = "humantime_serde")]
    pub session_retention: Duration,
    /// How a request's answer is sent: one JSON body, or an SSE stream.
    pub responses: Responses,
    /// The most requests the endpoints serve at once; more are answered 503 at once rather
    /// than queued.
    pub max_concurrent_requests: usize,
}

/// `virtual_mcp.responses`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Responses {
    /// `application/json`.
    #[default]
    Json,
    /// `text/event-stream`, one event per answer.
    Sse,
}

impl Default for VirtualMcpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50070)),
            public_url: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            default_ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(60 * 60),
            signing_keys: Vec::new(),
            revocation_refresh: Duration::from_secs(5),
            revocation_stale_after: Duration::from_secs(60),
            session_retention: Duration::from_secs(7 * 24 * 3600),
            responses: Responses::Json,
            max_concurrent_requests: 512,
        }
    }
}

impl VirtualMcpConfig {
    pub(crate) fn freshness(&self) -> crate::sessions::Freshness {
        crate::sessions::Freshness {
            refresh: self.revocation_refresh,
            stale_after: self.revocation_stale_after,
            retention: self.session_retention,
        }
    }
}

/// `[[virtual_servers]]`: one virtual MCP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServerConfig {
    /// Its name, in URLs: letters, digits, `-` and `_`.
    pub name: String,
    /// The callers that may mint sessions for it; each also needs the tools it exposes.
    pub minters: Vec<String>,
    /// Whether upstream preview tools (which render a proposed change for a person to
    /// confirm, e.g. `create_task_preview`) are exposed. A headless agent cannot confirm, so
    /// they are left out unless asked for.
    #[serde(default)]
    pub include_previews: bool,
    /// What it exposes; nothing else is listed or callable.
    pub tools: Vec<ExposedToolConfig>,
}

/// One whitelisted tool of a virtual server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposedToolConfig {
    /// The connection it runs on.
    pub connection: String,
    /// A curated or generated tool of the catalogue (a REST connection); with `upstream`, a
    /// tool of the connection's MCP server as its `tools/list` names it, or `*` for every
    /// tool it lists.
    pub tool: String,
    /// The tool is the upstream MCP server's. It is listed with the definition the server
    /// gives, and hidden (and refused) while drift pinning blocks it, so with `*` a tool the
    /// server adds appears only once an operator approved it (a watch in pinned mode).
    #[serde(default)]
    pub upstream: bool,
    /// Inputs fixed by the operator: hidden from the tool's schema, and an agent that sends
    /// another value is refused.
    #[serde(default)]
    pub fixed_inputs: Map<String, Value>,
}

/// `tool = "*"` of an upstream connection: every tool it lists.
const EVERY_TOOL: &str = "*";

/// Whether an upstream tool is a preview (confirmation-UI) tool: named `…_preview` or
/// `…_preview_v<N>`, or declaring an MCP Apps UI (`_meta.ui.resourceUri`).
fn is_preview(name: &str, definition: Option<&Map<String, Value>>) -> bool {
    let named = name.ends_with("_preview")
        || name.rsplit_once("_preview_v").is_some_and(|(_, version)| {
            !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit())
        });
    let ui = definition
        .and_then(|d| d.get("_meta"))
        .and_then(|meta| meta.get("ui"))
        .and_then(|ui| ui.get("resourceUri"))
        .is_some();
    named || ui
}

/// The virtual servers and what serves them.
#[derive(Debug)]
pub(crate) struct VirtualMcp {
    keys: Keys,
    /// Every session minted, and this replica's copy of the revoked ones.
    pub(crate) sessions: Arc<crate::sessions::Sessions>,
    servers: BTreeMap<String, VirtualServerConfig>,
    /// The configured callers: a session acts only while its minter may still do so.
    callers: agentauth_grpc::auth::Callers,
    public_url: String,
    default_ttl: Duration,
    max_ttl: Duration,
}

/// Who a request of an endpoint acts for: its bearer's claims, and the caller that minted
/// them as configured now.
#[derive(Debug, Clone)]
struct Principal {
    claims: Arc<Claims>,
    minter: Arc<agentauth_grpc::Caller>,
}

/// What an audit event of a call through a virtual server names.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Via {
    pub virtual_server: String,
    pub mcp_session: String,
}

/// A minted session.
pub(crate) struct Minted {
    /// The id of the key that signed it.
    pub key_id: String,
    pub url: String,
    pub bearer: String,
    pub claims: Claims,
    pub tool_names: Vec<String>,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("url", &self.url)
            .field("bearer", &"[redacted]")
            .field("claims", &self.claims)
            .finish()
    }
}

/// The longest name a mint request or a refused call may carry into an answer or audit row.
const MAX_NAME: usize = 256;

/// `text` cut to at most [`MAX_NAME`] bytes, on a character boundary.
pub(crate) fn bounded(text: &str) -> &str {
    let mut end = text.len().min(MAX_NAME);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl VirtualMcp {
    /// The virtual servers of `servers`, checked against the catalogue and the callers; `None`
    /// when `config` names no signing key.
    pub(crate) fn new(
        config: &VirtualMcpConfig,
        servers: &[VirtualServerConfig],
        catalogue: &asana_tools::Catalogue,
        callers: agentauth_grpc::auth::Callers,
        database: Option<&agentauth_db::Config>,
    ) -> Result<Option<Self>, String> {
        let Some((by_name, database)) = check(config, servers, catalogue, &callers, database)?
        else {
            return Ok(None);
        };
        let database =
            agentauth_db::Database::connect_lazy(database).map_err(|e| format!("database: {e}"))?;
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.listen))
            .trim_end_matches('/')
            .to_owned();
        Ok(Some(Self {
            keys: Keys::load(&config.signing_keys)?,
            sessions: Arc::new(crate::sessions::Sessions::new(database, config.freshness())),
            servers: by_name,
            callers,
            public_url,
            default_ttl: config.default_ttl,
            max_ttl: config.max_ttl,
        }))
    }

    /// A session of `server` for (`tenant`, `identifier`) minted by `caller`, who must be one
    /// of its minters and may itself use each of its tools.
    pub(crate) fn mint(
        &self,
        caller: &agentauth_grpc::Caller,
        server: &str,
        tenant: &str,
        identifier: &str,
        ttl: Option<Duration>,
    ) -> Result<Minted, Error> {
        // An unknown server and one the caller may not mint for are refused alike, so a
        // caller learns no server names it cannot use.
        let Some(declared) = self
            .servers
            .get(server)
            .filter(|declared| declared.minters.iter().any(|m| m == caller.name()))
        else {
            return Err(Error::Denied(agentauth_grpc::Denied::new(
                caller.name(),
                "virtual server",
                bounded(server),
            )));
        };
        caller.check_tenant(tenant)?;
        for exposed in &declared.tools {
            caller.check_connection(&exposed.connection)?;
            // Every upstream tool is checked against the minter when it is listed.
            if exposed.tool != EVERY_TOOL {
                caller.check_tool(&exposed.tool)?;
            }
        }
        if identifier.trim().is_empty() || identifier.len() > MAX_NAME {
            return Err(Error::InvalidArgument {
                field: "identifier",
                description: format!("is required, at most {MAX_NAME} bytes"),
            });
        }
        let ttl = match ttl {
            None => self.default_ttl,
            Some(ttl) if ttl.is_zero() => {
                return Err(Error::InvalidArgument {
                    field: "ttl",
                    description: "must be positive".to_owned(),
                });
            }
            Some(ttl) => ttl.min(self.max_ttl),
        };
        let claims = Claims {
            sid: uuid::Uuid::now_v7().to_string(),
            srv: server.to_owned(),
            ten: tenant.to_owned(),
            idn: identifier.to_owned(),
            by: caller.name().to_owned(),
            exp: unix_now().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        };
        Ok(Minted {
            key_id: self.keys.signing_id().to_owned(),
            url: format!("{}/mcp/{server}/{}", self.public_url, claims.sid),
            bearer: self.keys.sign(&claims),
            tool_names: declared.tools.iter().map(|t| t.tool.clone()).collect(),
            claims,
        })
    }

    /// Where a client learns how to authenticate to the endpoint of `server` and `session`
    /// (RFC 9728), if they name a declared server and a session id: nothing else a request's
    /// path brings is written into a header or a document.
    fn metadata_url(&self, server: &str, session: &str) -> Option<String> {
        (self.servers.contains_key(server) && uuid::Uuid::parse_str(session).is_ok()).then(|| {
            format!(
                "{}/.well-known/oauth-protected-resource/mcp/{server}/{session}",
                self.public_url
            )
        })
    }

    /// The minter of `claims` if they still act: it is configured, still one of the server's
    /// minters and bound to the tenant, and the lifetime left is within what a mint grants.
    fn admits(&self, claims: &Claims, now: i64) -> Option<Arc<agentauth_grpc::Caller>> {
        let server = self.servers.get(&claims.srv)?;
        let minter = self.callers.named(&claims.by)?;
        let longest = i64::try_from(self.max_ttl.as_secs()).unwrap_or(i64::MAX);
        let within = claims.exp.saturating_sub(now) <= longest.saturating_add(60);
        (within
            && server.minters.contains(&claims.by)
            && minter.may_call(MINT_RPC)
            && minter.check_tenant(&claims.ten).is_ok())
        .then_some(minter)
    }
}

/// The virtual servers by name, and the database that records their sessions.
type Checked<'a> = (
    BTreeMap<String, VirtualServerConfig>,
    &'a agentauth_db::Config,
);

/// `[virtual_mcp]` and the virtual servers checked against the catalogue and the callers,
/// reading no key file and opening no connection (so `--check-config` runs it): the servers by
/// name and the database that records their sessions, or `None` when no signing key is named.
pub(crate) fn check<'a>(
    config: &VirtualMcpConfig,
    servers: &[VirtualServerConfig],
    catalogue: &asana_tools::Catalogue,
    callers: &agentauth_grpc::auth::Callers,
    database: Option<&'a agentauth_db::Config>,
) -> Result<Option<Checked<'a>>, String> {
    if config.signing_keys.is_empty() {
        if !servers.is_empty() {
            return Err(
                "virtual_servers are declared but [virtual_mcp] names no signing key".to_owned(),
            );
        }
        return Ok(None);
    }
    crate::bearer::check_ids(config.signing_keys.iter().map(|k| k.id.as_str()))?;
    if config.revocation_refresh.is_zero()
        || config.revocation_stale_after <= config.revocation_refresh
    {
        return Err(
            "virtual_mcp.revocation_refresh must be positive and below virtual_mcp.revocation_stale_after"
                .to_owned(),
        );
    }
    if config.default_ttl.is_zero() || config.default_ttl > config.max_ttl {
        return Err(
            "virtual_mcp.default_ttl must be positive and at most virtual_mcp.max_ttl".to_owned(),
        );
    }
    let mut by_name = BTreeMap::new();
    for server in servers {
        check_server(server, catalogue, callers)?;
        if by_name
            .insert(server.name.clone(), server.clone())
            .is_some()
        {
            return Err(format!(
                "virtual_servers: `{}` is declared twice",
                server.name
            ));
        }
    }
    let database = database.ok_or(
        "[virtual_mcp] names a signing key but there is no [database] to record its sessions and revocations in",
    )?;
    Ok(Some((by_name, database)))
}

fn check_server(
    server: &VirtualServerConfig,
    catalogue: &asana_tools::Catalogue,
    callers: &agentauth_grpc::auth::Callers,
) -> Result<(), String> {
    let name = &server.name;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "virtual_servers: name `{name}` must be letters, digits, '-' and '_'"
        ));
    }
    if server.minters.is_empty() {
        return Err(format!(
            "virtual_servers `{name}`: minters must name a caller"
        ));
    }
    if let Some(unknown) = server.minters.iter().find(|m| callers.named(m).is_none()) {
        return Err(format!(
            "virtual_servers `{name}`: minter `{unknown}` is not a configured caller"
        ));
    }
    if server.tools.is_empty() {
        return Err(format!("virtual_servers `{name}`: tools must name a tool"));
    }
    let mut seen = BTreeSet::new();
    for exposed in &server.tools {
        let key = if exposed.tool == EVERY_TOOL {
            format!("{}:{EVERY_TOOL}", exposed.connection)
        } else {
            exposed.tool.clone()
        };
        if !seen.insert(key) {
            return Err(format!(
                "virtual_servers `{name}`: tool `{}` is listed twice",
                exposed.tool
            ));
        }
        if exposed.upstream {
            check_upstream(name, server.include_previews, exposed)?;
            let every = server.tools.iter().any(|other| {
                other.upstream && other.connection == exposed.connection && other.tool == EVERY_TOOL
            });
            if every && exposed.tool != EVERY_TOOL {
                return Err(format!(
                    "virtual_servers `{name}`: `{}` is also listed by `*` of connection `{}`; name each tool instead, so its fixed inputs cannot be bypassed",
                    exposed.tool, exposed.connection
                ));
            }
            continue;
        }
        let Some(tool) = catalogue.get(&exposed.tool) else {
            return Err(format!(
                "virtual_servers `{name}`: no tool `{}` in the catalogue (a tool of an upstream MCP connection needs upstream = true)",
                exposed.tool
            ));
        };
        if let Some(input) = missing_input(&tool.input_schema, &exposed.fixed_inputs) {
            return Err(format!(
                "virtual_servers `{name}`: tool `{}` has no input `{input}` to fix",
                exposed.tool
            ));
        }
    }
    Ok(())
}

/// An input of `fixed` that `schema` does not have.
fn missing_input<'a>(schema: &Value, fixed: &'a Map<String, Value>) -> Option<&'a String> {
    let properties = schema.get("properties").and_then(Value::as_object);
    fixed
        .keys()
        .find(|input| !properties.is_some_and(|p| p.contains_key(*input)))
}

/// An upstream tool's entry: its definition is known only when the server lists it, so what
/// can be checked now is its shape.
fn check_upstream(
    server: &str,
    include_previews: bool,
    exposed: &ExposedToolConfig,
) -> Result<(), String> {
    let tool = &exposed.tool;
    if tool.is_empty() {
        return Err(format!("virtual_servers `{server}`: a tool needs a name"));
    }
    if tool == EVERY_TOOL && !exposed.fixed_inputs.is_empty() {
        return Err(format!(
            "virtual_servers `{server}`: fixed_inputs need a named tool, not `*`"
        ));
    }
    if !include_previews && is_preview(tool, None) {
        return Err(format!(
            "virtual_servers `{server}`: `{tool}` is a preview tool; set include_previews = true to expose it"
        ));
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// The HTTP service of every virtual server's endpoint.
pub(crate) fn router(
    mcp: Arc<VirtualMcp>,
    api: ConnectorExecutorApi,
    config: &VirtualMcpConfig,
    shutdown: CancellationToken,
) -> Result<axum::Router, String> {
    let allowed_hosts = if config.allowed_hosts.is_empty() {
        let url = reqwest::Url::parse(&mcp.public_url)
            .map_err(|e| format!("virtual_mcp.public_url: {e}"))?;
        let host = url
            .host_str()
            .ok_or("virtual_mcp.public_url has no host")?
            .to_owned();
        vec![host]
    } else {
        config.allowed_hosts.clone()
    };
    let mut http = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(config.responses == Responses::Json)
        .with_allowed_hosts(allowed_hosts)
        .with_cancellation_token(shutdown);
    // A request without an `Origin` (any client but a browser) passes; a browser page may
    // drive a session only from a listed origin, and from none when none is listed.
    http = if config.allowed_origins.is_empty() {
        http.enforce_origin_validation()
    } else {
        http.with_allowed_origins(config.allowed_origins.clone())
    };
    let handler = Handler {
        mcp: mcp.clone(),
        api: api.clone(),
    };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        http,
    );
    Ok(axum::Router::new()
        .route_service("/mcp/{server}/{session}", service)
        .route_layer(axum::middleware::from_fn_with_state(
            (mcp.clone(), api),
            sessions,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            mcp.clone(),
            authenticate,
        ))
        .route(
            "/.well-known/oauth-protected-resource/mcp/{server}/{session}",
            axum::routing::get(metadata),
        )
        .with_state(mcp)
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
                .load_shed()
                .concurrency_limit(config.max_concurrent_requests.max(1)),
        ))
}

/// The answer to a request over `max_concurrent_requests`.
async fn overloaded(_: tower::BoxError) -> Response {
    try_again("too many requests at once", "1")
}

/// 503 with `Retry-After: seconds`.
fn try_again(why: &'static str, seconds: &'static str) -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
    response
}

/// Admits a request whose bearer verifies, belongs to the URL's server and session, is not
/// revoked, and whose minter still may act.
async fn authenticate(
    State(mcp): State<Arc<VirtualMcp>>,
    Path((server, session)): Path<(String, String)>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, bearer)| bearer.trim());
    let now = unix_now();
    let verified = presented.map(|bearer| mcp.keys.verify(bearer, now));
    let admitted = match &verified {
        Some(Ok(claims)) if claims.srv == server && claims.sid == session => {
            mcp.admits(claims, now).map(|minter| (claims, minter))
        }
        _ => None,
    };
    if let Some((claims, minter)) = admitted {
        match mcp.sessions.check(&claims.sid) {
            Ok(()) => {
                let claims = Arc::new(claims.clone());
                request
                    .extensions_mut()
                    .insert(Principal { claims, minter });
                return next.run(request).await;
            }
            Err(Refusal::Stale) => {
                return try_again("session revocations cannot be read; try again shortly", "5");
            }
            Err(Refusal::Revoked) => {}
        }
    }
    let mut challenge = match mcp.metadata_url(&server, &session) {
        Some(url) => format!("Bearer resource_metadata=\"{url}\""),
        None => "Bearer".to_owned(),
    };
    if verified.is_some() {
        challenge.push_str(", error=\"invalid_token\"");
    }
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The session header of the 2025-06-18 / 2025-11-25 protocol.
const SESSION_HEADER: &str = "mcp-session-id";

/// A JSON-RPC message, as far as telling an `initialize` goes.
#[derive(Deserialize)]
struct Probe {
    method: Option<String>,
}

/// The 2025 session model over the stateless service, from what each request carries: an
/// `initialize` answered with success gets a new `Mcp-Session-Id` bound to the bearer's
/// session ([`Keys::protocol_session`]); a request naming an id not issued for its bearer, or
/// one its client ended, is 404; DELETE ends the protocol session (the bearer stays valid for
/// a new one). A request without the header (the 2026-07-28 form) passes as it is. Bodies are
/// capped at the largest tool input and a margin for the JSON-RPC envelope.
async fn sessions(
    State((mcp, api)): State<(Arc<VirtualMcp>, ConnectorExecutorApi)>,
    request: Request,
    next: Next,
) -> Response {
    // `authenticate`, which runs first, put it there.
    let Some(claims) = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.claims.clone())
    else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let named = request
        .headers()
        .get(SESSION_HEADER)
        .map(|id| id.to_str().unwrap_or_default().to_owned());
    if let Some(id) = &named
        && !(mcp.keys.is_protocol_session(&claims.sid, id) && mcp.sessions.check(id).is_ok())
    {
        return (StatusCode::NOT_FOUND, "no such MCP session").into_response();
    }
    match (request.method().clone(), named) {
        (axum::http::Method::DELETE, named) => {
            // rmcp checks Host and Origin before it answers a DELETE (405, serving no
            // sessions itself): a DELETE it refuses is refused.
            let checked = next.run(request).await;
            if checked.status() != StatusCode::METHOD_NOT_ALLOWED {
                return checked;
            }
            let Some(id) = named else {
                return (StatusCode::BAD_REQUEST, "Mcp-Session-Id is required").into_response();
            };
            match api.end_protocol_session(&claims, &id).await {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(error @ Error::RateLimited { .. }) => {
                    (StatusCode::TOO_MANY_REQUESTS, error.to_string()).into_response()
                }
                Err(error) => {
                    tracing::warn!(%error, "an MCP client could not end its protocol session");
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                }
            }
        }
        (axum::http::Method::POST, named) => {
            let limit = api.executor.execution.max_input_bytes + 64 * 1024;
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a request body is at most {limit} bytes"),
                )
                    .into_response();
            };
            let initialize = named.is_none()
                && serde_json::from_slice::<Probe>(&bytes)
                    .is_ok_and(|probe| probe.method.as_deref() == Some("initialize"));
            let mut response = next
                .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await;
            if initialize
                && response.status().is_success()
                && let Ok(value) = HeaderValue::from_str(&mcp.keys.protocol_session(&claims.sid))
            {
                response.headers_mut().insert(SESSION_HEADER, value);
            }
            response
        }
        _ => next.run(request).await,
    }
}

/// The protected-resource metadata of an endpoint (RFC 9728): its bearer comes from
/// `MintMcpSession`, in the `Authorization` header. 404 for a path that names no declared
/// server and session id.
async fn metadata(
    State(mcp): State<Arc<VirtualMcp>>,
    Path((server, session)): Path<(String, String)>,
) -> Result<axum::Json<Value>, StatusCode> {
    mcp.metadata_url(&server, &session)
        .ok_or(StatusCode::NOT_FOUND)?;
    Ok(axum::Json(serde_json::json!({
        "resource": format!("{}/mcp/{server}/{session}", mcp.public_url),
        "bearer_methods_supported": ["header"],
        "resource_name": format!("agentauth virtual MCP server {server}"),
    })))
}

/// The MCP server of every virtual server; which one, and for whom, comes with each request.
#[derive(Clone)]
struct Handler {
    mcp: Arc<VirtualMcp>,
    api: ConnectorExecutorApi,
}

/// A tool a session offers: the entry that exposes it, and its definition.
struct Offer<'a> {
    exposed: &'a ExposedToolConfig,
    source: Source<'a>,
}

enum Source<'a> {
    Catalogue(&'a asana_tools::Tool),
    /// As it is listed: the upstream's definition, its fixed inputs left out.
    Upstream(Tool),
}

impl Offer<'_> {
    fn name(&self) -> &str {
        match &self.source {
            Source::Catalogue(tool) => &tool.name,
            Source::Upstream(tool) => &tool.name,
        }
    }

    /// As `tools/list` lists it.
    fn listed(self) -> Tool {
        match self.source {
            Source::Catalogue(tool) => listed(tool, self.exposed),
            Source::Upstream(tool) => tool,
        }
    }
}

/// What a session offers, and why an upstream connection's tools are missing from it, if
/// they are (it could not be listed now).
struct Offered<'a> {
    offers: Vec<Offer<'a>>,
    unavailable: Option<Error>,
}

impl Handler {
    fn principal(&self, context: &RequestContext<RoleServer>) -> Result<Principal, ErrorData> {
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("request reached MCP unauthenticated", None))
    }

    fn server(&self, principal: &Principal) -> Result<&VirtualServerConfig, ErrorData> {
        self.mcp
            .servers
            .get(&principal.claims.srv)
            .ok_or_else(|| ErrorData::internal_error("unknown virtual server", None))
    }

    /// What the session's server exposes that its minter may still use, as configured now
    /// (only the tool `only`, when given): catalogue tools, and the tools its upstream
    /// connections list that drift pinning does not block. A name offered twice is offered
    /// once, as its first entry gives it.
    async fn offered<'a>(
        &'a self,
        server: &'a VirtualServerConfig,
        principal: &Principal,
        only: Option<&str>,
    ) -> Offered<'a> {
        let minter = &principal.minter;
        let mut offered = Offered {
            offers: Vec::new(),
            unavailable: None,
        };
        for exposed in &server.tools {
            if minter.check_connection(&exposed.connection).is_err() {
                continue;
            }
            let sources = if exposed.upstream {
                match self.upstream(server, exposed, minter.name(), only).await {
                    Ok(tools) => tools.into_iter().map(Source::Upstream).collect(),
                    Err(error) => {
                        tracing::warn!(%error, virtual_server = %server.name, connection = %exposed.connection, "a virtual server's upstream tools cannot be listed");
                        offered.unavailable.get_or_insert(error);
                        Vec::new()
                    }
                }
            } else {
                only.is_none_or(|name| name == exposed.tool)
                    .then(|| self.api.executor.catalogue.get(&exposed.tool))
                    .flatten()
                    .map(Source::Catalogue)
                    .into_iter()
                    .collect::<Vec<_>>()
            };
            for source in sources {
                let offer = Offer { exposed, source };
                if minter.check_tool(offer.name()).is_ok()
                    && !offered.offers.iter().any(|o| o.name() == offer.name())
                {
                    offered.offers.push(offer);
                }
            }
        }
        offered
    }

    /// The tools of `exposed`'s upstream connection it names (only `only`, when given), as
    /// listed from the connection's listing, less previews (unless the server includes them),
    /// tools drift pinning blocks, tools that lack an input the entry fixes and definitions MCP
    /// cannot carry.
    async fn upstream(
        &self,
        server: &VirtualServerConfig,
        exposed: &ExposedToolConfig,
        minter: &str,
        only: Option<&str>,
    ) -> Result<Vec<Tool>, Error> {
        let executor = &self.api.executor;
        let connection = executor.connections.named(&exposed.connection).await?;
        let crate::connections::Target::Mcp { url } = &connection.target else {
            return Err(Error::WrongKind {
                connection: connection.name.clone(),
                reason: "is not an MCP connection, and its tools are declared upstream",
            });
        };
        let tools = executor
            .upstream_catalogue(&connection, url, minter)
            .await?;
        let approvals = executor.pins.approvals(&connection.name).await?;
        Ok(tools
            .iter()
            .filter(|tool| only.is_none_or(|name| tool.name == name))
            .filter(|tool| exposed.tool == EVERY_TOOL || tool.name == exposed.tool)
            .filter(|tool| {
                server.include_previews || !is_preview(&tool.name, Some(&tool.definition))
            })
            .filter(|tool| missing_input(&tool.input_schema, &exposed.fixed_inputs).is_none())
            .filter(|tool| {
                !matches!(
                    approvals.standing(tool),
                    crate::pins::Standing::Drifted { pinned: true, .. }
                )
            })
            .filter_map(|tool| upstream_listed(tool, exposed))
            .collect())
    }
}

impl rmcp::ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("agentauth", env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let principal = self.principal(&context)?;
        let server = self.server(&principal)?;
        let visible = self.offered(server, &principal, None).await.offers;
        let start = match request.and_then(|r| r.cursor) {
            None => 0,
            Some(cursor) => cursor
                .parse::<usize>()
                .ok()
                .filter(|start| *start < visible.len())
                .ok_or_else(|| ErrorData::invalid_params("unknown cursor", None))?,
        };
        let next = start + PAGE_SIZE;
        let next_cursor = (next < visible.len()).then(|| next.to_string());
        let tools = visible
            .into_iter()
            .skip(start)
            .take(PAGE_SIZE)
            .map(Offer::listed)
            .collect();
        Ok(ListToolsResult {
            next_cursor,
            ..ListToolsResult::with_all_items(tools)
        })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let principal = self.principal(&context)?;
        let server = self.server(&principal)?;
        let claims = &principal.claims;
        let via = Via {
            virtual_server: claims.srv.clone(),
            mcp_session: claims.sid.clone(),
        };
        let name = bounded(&request.name);
        let offered = self.offered(server, &principal, Some(&request.name)).await;
        let Some(exposed) = offered.offers.first().map(|offer| offer.exposed) else {
            if let Some(error) = offered.unavailable {
                // The tool may be an upstream one that cannot be listed now: say so, rather
                // than that it does not exist.
                return Ok(
                    CallToolResult::error(vec![ContentBlock::text(tool_error(error))]).into(),
                );
            }
            let denied = agentauth_grpc::Denied::new(&claims.by, "tool", name);
            self.api.refuse_virtual(claims, name, denied, via).await;
            return Err(ErrorData::invalid_params(
                format!("no tool `{name}` on this server"),
                None,
            ));
        };
        let mut input = request.arguments.unwrap_or_default();
        for (field, value) in &exposed.fixed_inputs {
            match input.get(field) {
                Some(given) if given != value => {
                    let denied = agentauth_grpc::Denied::new(&claims.by, "fixed input", field);
                    self.api.refuse_virtual(claims, name, denied, via).await;
                    return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                        "input `{field}` is fixed by this server and cannot be changed"
                    ))])
                    .into());
                }
                _ => {
                    input.insert(field.clone(), value.clone());
                }
            }
        }
        let context = CallContext {
            account: AccountKey {
                tenant: claims.ten.clone(),
                connection: exposed.connection.clone(),
                identifier: claims.idn.clone(),
            },
            caller: claims.by.clone(),
            deadline: tokio::time::Instant::now() + self.api.executor.limiter.max_wait(),
            via: Some(via),
        };
        let call = ToolCall {
            tool: request.name.to_string(),
            input_json: Value::Object(input).to_string(),
            pages: Pages::One,
        };
        let result = match self
            .api
            .execute_named(&context, &call, exposed.upstream)
            .await
        {
            Ok(answer) if answer.is_error => {
                CallToolResult::error(vec![ContentBlock::text(answer.output_json)])
            }
            Ok(answer) => answered(&answer.output_json, exposed.upstream),
            Err(error) => CallToolResult::error(vec![ContentBlock::text(tool_error(error))]),
        };
        Ok(result.into())
    }
}

/// A successful call's result: an upstream tool's as its server gave it, a REST tool's JSON as
/// one text block, as it came. A catalogue tool declares no output schema, so MCP asks for no
/// `structuredContent`; sending it would parse the answer and send it twice, which is most of
/// what a call through the endpoint costs beyond `ExecuteTool` (BENCHMARKS.md).
fn answered(output_json: &str, upstream: bool) -> CallToolResult {
    if upstream && let Ok(mut result) = serde_json::from_str::<CallToolResult>(output_json) {
        // The upstream's answer may be of an era without a result type; this one is complete.
        result.result_type = Some(rmcp::model::ResultType::COMPLETE);
        return result;
    }
    CallToolResult::success(vec![ContentBlock::text(output_json)])
}

/// `schema` without the inputs `exposed` fixes.
fn without_fixed(
    mut schema: Map<String, Value>,
    exposed: &ExposedToolConfig,
) -> Map<String, Value> {
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        properties.retain(|name, _| !exposed.fixed_inputs.contains_key(name));
    }
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.retain(|name| {
            name.as_str()
                .is_none_or(|name| !exposed.fixed_inputs.contains_key(name))
        });
    }
    schema
}

/// A catalogue tool as a virtual server lists it: its fixed inputs left out of its schema.
fn listed(tool: &asana_tools::Tool, exposed: &ExposedToolConfig) -> Tool {
    let schema = without_fixed(
        tool.input_schema.as_object().cloned().unwrap_or_default(),
        exposed,
    );
    Tool::new(
        tool.name.clone(),
        tool.description.clone(),
        Arc::new(schema),
    )
    .with_title(tool.title.clone())
    .with_annotations(
        ToolAnnotations::new()
            .read_only(tool.hints.read_only)
            .destructive(tool.hints.destructive)
            .idempotent(tool.hints.idempotent)
            .open_world(tool.hints.open_world),
    )
}

/// An upstream tool as a virtual server lists it: the server's definition, its fixed inputs
/// left out of its schema. `None` for a definition MCP cannot carry.
fn upstream_listed(tool: &crate::mcp::UpstreamTool, exposed: &ExposedToolConfig) -> Option<Tool> {
    let mut listed: Tool = serde_json::from_value(Value::Object(tool.definition.clone())).ok()?;
    listed.input_schema = Arc::new(without_fixed(listed.input_schema.as_ref().clone(), exposed));
    Some(listed)
}

/// What an agent reads when a call could not be made: the reason, and for an account that
/// must be connected again, the link that fixes it.
fn tool_error(error: Error) -> String {
    let status = tonic::Status::from(error);
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(info) = status.get_details_error_info() {
        text = format!("{}: {}", info.reason, status.message());
    }
    if let Some(help) = status.get_details_help() {
        for link in help.links {
            text.push_str(&format!("\n{}: {}", link.description, link.url));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(toml: &str) -> VirtualServerConfig {
        toml_server(toml).expect("a virtual server")
    }

    fn toml_server(toml: &str) -> Result<VirtualServerConfig, String> {
        use figment::providers::Format as _;
        figment::Figment::from(figment::providers::Toml::string(toml))
            .extract()
            .map_err(|e| e.to_string())
    }

    fn config_with_key() -> (VirtualMcpConfig, tempfile::NamedTempFile) {
        let mut key = tempfile::NamedTempFile::new().expect("key file");
        std::io::Write::write_all(&mut key, &[7; 32]).expect("key");
        let config = VirtualMcpConfig {
            signing_keys: vec![KeyConfig {
                id: "k1".into(),
                key_file: key.path().to_owned(),
            }],
            ..VirtualMcpConfig::default()
        };
        (config, key)
    }

    /// A store that is never reached: these tests check configuration and claims only.
    fn database() -> agentauth_db::Config {
        agentauth_db::Config::new("sqlite::memory:")
    }

    fn callers() -> agentauth_grpc::auth::Callers {
        let platform = agentauth_grpc::CallerConfig {
            name: "platform".into(),
            key_sha256: agentauth_grpc::ApiKey::generate().hash(),
            previous_key_sha256: None,
            tenants: vec!["acme".into()],
            connections: vec!["*".into()],
            tools: vec!["*".into()],
            roles: vec!["mcp".into()],
            rpcs: Vec::new(),
        };
        // A minter that lost its `mcp` role: its sessions no longer act.
        let lapsed = agentauth_grpc::CallerConfig {
            name: "lapsed".into(),
            key_sha256: agentauth_grpc::ApiKey::generate().hash(),
            previous_key_sha256: None,
            roles: vec!["reader".into()],
            ..platform.clone()
        };
        agentauth_grpc::auth::Callers::new(&[platform, lapsed], &[&crate::POLICY]).expect("callers")
    }

    const PEOPLE: &str = r#"
name = "people"
minters = ["platform", "lapsed"]
[[tools]]
connection = "asana-pat"
tool = "asana_api_get_user"
fixed_inputs = { user_gid = "me" }
"#;

    #[tokio::test]
    async fn a_declared_server_is_checked_against_the_catalogue_and_the_callers() {
        let catalogue = asana_tools::Catalogue::new().expect("catalogue");
        let (config, _key) = config_with_key();
        let check = |toml: &str| {
            VirtualMcp::new(
                &config,
                &[server(toml)],
                &catalogue,
                callers(),
                Some(&database()),
            )
            .map(|_| ())
        };
        assert_eq!(check(PEOPLE), Ok(()));
        for (toml, says) in [
            (
                PEOPLE.replace("asana_api_get_user", "asana_no_such_tool"),
                "no tool",
            ),
            (
                PEOPLE.replace("user_gid", "workspace_gid"),
                "no input `workspace_gid`",
            ),
            (
                PEOPLE.replace("[\"platform\", \"lapsed\"]", "[\"stranger\"]"),
                "not a configured caller",
            ),
            (
                PEOPLE.replace("[\"platform\", \"lapsed\"]", "[]"),
                "minters must name",
            ),
            (
                PEOPLE.replace("\"people\"", "\"peo/ple\""),
                "must be letters",
            ),
            (
                format!(
                    "{PEOPLE}[[tools]]\nconnection = \"asana-pat\"\ntool = \"asana_api_get_user\"\n"
                ),
                "listed twice",
            ),
        ] {
            let error = check(&toml).expect_err(says);
            assert!(error.contains(says), "{error}");
        }
        let upstream = |tool: &str, extra: &str| {
            format!(
                "{PEOPLE}[[tools]]\nconnection = \"asana-mcp\"\ntool = \"{tool}\"\nupstream = true\n{extra}"
            )
        };
        assert_eq!(check(&upstream("*", "")), Ok(()));
        assert_eq!(
            check(&upstream("get_me", "fixed_inputs = { x = 1 }")),
            Ok(())
        );
        assert_eq!(
            check(&format!(
                "include_previews = true\n{}",
                upstream("create_task_preview", "")
            )),
            Ok(())
        );
        for (toml, says) in [
            (upstream("create_task_preview", ""), "is a preview tool"),
            (upstream("create_task_preview_v2", ""), "is a preview tool"),
            (
                upstream("*", "fixed_inputs = { x = 1 }"),
                "need a named tool",
            ),
            (upstream("", ""), "needs a name"),
            (
                format!(
                    "{}{}",
                    upstream("*", ""),
                    "[[tools]]\nconnection = \"asana-mcp\"\ntool = \"get_task\"\nupstream = true\nfixed_inputs = { task_gid = \"1\" }\n"
                ),
                "also listed by `*`",
            ),
            (
                format!(
                    "{}{}",
                    upstream("*", ""),
                    "[[tools]]\nconnection = \"asana-mcp\"\ntool = \"*\"\nupstream = true\n"
                ),
                "listed twice",
            ),
        ] {
            let error = check(&toml).expect_err(says);
            assert!(error.contains(says), "{error}");
        }
        let twice = VirtualMcp::new(
            &config,
            &[server(PEOPLE), server(PEOPLE)],
            &catalogue,
            callers(),
            Some(&database()),
        )
        .expect_err("one name twice");
        assert!(twice.contains("declared twice"), "{twice}");
        assert!(toml_server("name = \"x\"\nminters = []\ntools = []\nextra = 1").is_err());
    }

    #[tokio::test]
    async fn without_a_signing_key_there_is_no_virtual_mcp_and_no_server_may_be_declared() {
        let catalogue = asana_tools::Catalogue::new().expect("catalogue");
        let off = VirtualMcpConfig::default();
        assert!(matches!(
            VirtualMcp::new(&off, &[], &catalogue, callers(), None),
            Ok(None)
        ));
        let declared = VirtualMcp::new(&off, &[server(PEOPLE)], &catalogue, callers(), None)
            .expect_err("a server without a key");
        assert!(declared.contains("no signing key"), "{declared}");
        let (mut config, _key) = config_with_key();
        for (refresh, stale) in [(0, 60), (60, 60), (90, 60)] {
            config.revocation_refresh = Duration::from_secs(refresh);
            config.revocation_stale_after = Duration::from_secs(stale);
            assert!(
                VirtualMcp::new(&config, &[], &catalogue, callers(), Some(&database())).is_err(),
                "refresh {refresh} s, stale after {stale} s"
            );
        }
        config.revocation_refresh = Duration::from_secs(5);
        config.revocation_stale_after = Duration::from_secs(60);
        config.default_ttl = Duration::from_secs(7200);
        assert!(VirtualMcp::new(&config, &[], &catalogue, callers(), Some(&database())).is_err());
        config.default_ttl = Duration::from_secs(60);
        let no_store = VirtualMcp::new(&config, &[], &catalogue, callers(), None)
            .expect_err("sessions need a database");
        assert!(no_store.contains("no [database]"), "{no_store}");
    }

    #[tokio::test]
    async fn a_session_acts_only_while_its_minter_may_and_within_the_longest_lifetime() {
        let catalogue = asana_tools::Catalogue::new().expect("catalogue");
        let (config, _key) = config_with_key();
        let mcp = VirtualMcp::new(
            &config,
            &[server(PEOPLE)],
            &catalogue,
            callers(),
            Some(&database()),
        )
        .expect("valid")
        .expect("on");
        let claims = |by: &str, ten: &str, exp: i64| Claims {
            sid: uuid::Uuid::now_v7().to_string(),
            srv: "people".into(),
            ten: ten.into(),
            idn: "alice".into(),
            by: by.into(),
            exp,
        };
        let now = 1_000_000;
        assert!(
            mcp.admits(&claims("platform", "acme", now + 60), now)
                .is_some()
        );
        assert!(
            mcp.admits(&claims("stranger", "acme", now + 60), now)
                .is_none(),
            "a minter no longer configured"
        );
        assert!(
            mcp.admits(&claims("lapsed", "acme", now + 60), now)
                .is_none(),
            "a minter no longer granted MintMcpSession"
        );
        assert!(
            mcp.admits(&claims("platform", "globex", now + 60), now)
                .is_none(),
            "a tenant the minter is no longer bound to"
        );
        assert!(
            mcp.admits(&claims("platform", "acme", now + 30 * 24 * 3600), now)
                .is_none(),
            "a lifetime longer than a mint grants"
        );
        let mut other = claims("platform", "acme", now + 60);
        other.srv = "elsewhere".into();
        assert!(mcp.admits(&other, now).is_none(), "an undeclared server");
    }

    #[test]
    fn previews_are_told_by_name_or_by_an_mcp_apps_ui() {
        for name in [
            "create_task_preview",
            "create_project_preview_v2",
            "x_preview_v13",
        ] {
            assert!(is_preview(name, None), "{name}");
        }
        for name in [
            "get_me",
            "preview_task",
            "create_task_preview_v",
            "a_preview_vx",
        ] {
            assert!(!is_preview(name, None), "{name}");
        }
        let ui = serde_json::json!({"_meta": {"ui": {"resourceUri": "ui://confirm"}}});
        assert!(is_preview("create_tasks", ui.as_object()));
    }

    #[test]
    fn a_listed_tool_hides_its_fixed_inputs() {
        let catalogue = asana_tools::Catalogue::new().expect("catalogue");
        let exposed = server(PEOPLE).tools.remove(0);
        let tool = catalogue.get(&exposed.tool).expect("tool");
        let listed = listed(tool, &exposed);
        let properties = listed.input_schema["properties"]
            .as_object()
            .expect("properties");
        assert!(!properties.contains_key("user_gid"));
        let required = listed
            .input_schema
            .get("required")
            .and_then(Value::as_array);
        assert!(required.is_none_or(|r| !r.iter().any(|n| n == "user_gid")));
        assert_eq!(
            listed.annotations.and_then(|a| a.read_only_hint),
            Some(true)
        );
    }
}
