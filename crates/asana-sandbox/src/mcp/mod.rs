//! Asana's MCP V2 server at `/v2/mcp`, over Streamable HTTP, in both eras of the protocol
//! (`reference/mcp.md` §2):
//!
//! - **Handshake era** (2024-11-05 … 2025-11-25), as Asana speaks it: `initialize` opens a
//!   session named by `Mcp-Session-Id`; later requests carry it (missing → 400, unknown or
//!   ended → 404) and `MCP-Protocol-Version`; `GET` opens the session's notification stream;
//!   `DELETE` ends the session.
//! - **2026-07-28**, stateless: each request carries its version, capabilities and client info
//!   in `_meta` plus the `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers;
//!   `server/discover` replaces `initialize` and `subscriptions/listen` the GET stream. A
//!   request is routed here when its `MCP-Protocol-Version` header names no handshake
//!   revision, which is how the Python SDK's `mode="auto"` probe arrives; the control API can
//!   switch this era off, and the probe then fails like it does against a handshake-only
//!   server, so the client falls back to `initialize`.
//!
//! Every request needs the bearer token of an MCP app (401 with a `WWW-Authenticate` challenge
//! pointing at the protected-resource metadata otherwise) and goes through the same per-token
//! limits and injected faults as REST. Tool failures are results with `isError: true`;
//! protocol failures are JSON-RPC errors. Responses are JSON, or SSE when the client accepts
//! only that or prefers it.

mod control;
mod protocol;
mod registry;
mod schema;
mod session;
mod stream;
mod tools;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use self::protocol::{
    Format, HEADER_MISMATCH, INTERNAL_ERROR, Incoming, MODERN_VERSION, RATE_LIMITED, RpcError,
    failure, refuse, reply, success,
};
use self::registry::{Behaviour, Registry};
use self::session::{Owner, Sessions};
use self::tools::ToolError;
use crate::error::{ApiError, EXPIRED};
use crate::limits::Permit;
use crate::tokens::{CredentialKind, Surface};
use crate::{Principal, Sandbox};

/// Where the MCP server answers.
pub const PATH: &str = "/v2/mcp";

/// Where the 401 challenge sends clients for the protected-resource metadata (served by the
/// OAuth module), after `public_url`. Asana's challenge names this `/v2` document, not the root
/// one, which at Asana belongs to the retired V1 server (`reference/mcp.md` §1.2).
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource/v2";

/// The largest request body accepted.
const MAX_BODY: usize = 4 * 1024 * 1024;

const INSTRUCTIONS: &str = "Asana sandbox: a local stand-in for Asana's MCP server. Objects are \
named by numeric-string GIDs; start with get_me to learn the user and their workspaces.";

/// The MCP server's state, shared by its routes.
#[derive(Debug, Clone)]
struct Server(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    sandbox: Sandbox,
    /// The tool list, changeable through the control API.
    registry: Registry,
    /// Handshake-era sessions.
    sessions: Sessions,
    /// Whether 2026-07-28 requests are served (else only the handshake era is).
    modern: AtomicBool,
}

/// The MCP endpoint and its control routes under `/_sandbox/mcp/`. The tool list lives in the
/// returned router's state: build the router once per sandbox.
pub fn routes(sandbox: Sandbox) -> Router {
    let server = Server(Arc::new(Inner {
        sandbox,
        registry: Registry::new(),
        sessions: Sessions::default(),
        modern: AtomicBool::new(true),
    }));
    Router::new()
        .route(
            PATH,
            post(post_message).get(open_stream).delete(end_session),
        )
        .merge(control::routes())
        .with_state(server)
}

/// `serverInfo` (`Implementation`) of `initialize` and of the 2026-07-28 `_meta` stamp.
fn server_info() -> Value {
    json!({"name": "asana-sandbox", "title": "Asana MCP (sandbox)", "version": env!("CARGO_PKG_VERSION")})
}

/// What the server offers: tools, with change notifications.
fn capabilities() -> Value {
    json!({"tools": {"listChanged": true}})
}

/// A successful tool result: the JSON as text (for clients that read only text) and as
/// `structuredContent`.
fn tool_success(structured: Value) -> Value {
    json!({
        "content": [{"type": "text", "text": structured.to_string()}],
        "structuredContent": structured,
        "isError": false,
    })
}

/// A failed tool call: a result the model sees, not a protocol error.
fn tool_failure(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": true})
}

/// `notifications/tools/list_changed`, stamped with the `subscriptions/listen` request it
/// belongs to (2026-07-28) or bare (a handshake-era GET stream).
fn list_changed(subscription: Option<&Value>) -> Value {
    protocol::notification(
        "notifications/tools/list_changed",
        subscription.map(|id| json!({"_meta": {protocol::META_SUBSCRIPTION_ID: id}})),
    )
}

/// A header's value, if present and visible ASCII.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A response that refuses a request, boxed because `Response` is large for an `Err`.
type Refused = Box<Response>;

/// 404 for a session that does not exist (or is not the caller's).
fn session_not_found() -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        &Value::Null,
        &RpcError::invalid_request("Session not found: initialize a new session"),
    )
}

/// What one request comes to before it is framed for its era.
enum Answer {
    /// The JSON-RPC `result`.
    Result(Value),
    /// A JSON-RPC error.
    Error(RpcError),
    /// Refused at the HTTP level (limits, faults).
    Http(Response),
}

impl Server {
    fn sandbox(&self) -> &Sandbox {
        &self.0.sandbox
    }

    fn modern_enabled(&self) -> bool {
        self.0.modern.load(Ordering::Relaxed)
    }

    /// The 401 challenge, with `error="invalid_token"` when a token was sent.
    fn challenge(&self, description: Option<&str>) -> Response {
        let metadata = format!(
            "{}{RESOURCE_METADATA_PATH}",
            self.sandbox().config().public_url.trim_end_matches('/')
        );
        let mut value = format!("Bearer realm=\"Asana MCP\", resource_metadata=\"{metadata}\"");
        let body = match description {
            Some(description) => {
                value.push_str(&format!(
                    ", error=\"invalid_token\", error_description=\"{description}\""
                ));
                json!({"error": "invalid_token", "error_description": description})
            }
            None => json!({
                "error": "invalid_request",
                "error_description": "No bearer token: the MCP server needs an access token of an MCP app",
            }),
        };
        let challenge = HeaderValue::from_str(&value)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"Asana MCP\""));
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            axum::Json(body),
        )
            .into_response()
    }

    /// The caller, if the bearer token is a live token of an MCP app.
    fn authenticate(&self, request: &Request) -> Result<Principal, Refused> {
        let Some(token) = crate::rest::bearer(request) else {
            return Err(Box::new(self.challenge(None)));
        };
        let tokens = self.sandbox().tokens();
        match tokens.authenticate(token, Surface::Mcp) {
            Ok(principal) => Ok(principal),
            Err(error) if error.message == EXPIRED => Err(Box::new(self.challenge(Some(EXPIRED)))),
            Err(_) => {
                // Say why, as far as Asana does: PATs and REST-app tokens are real tokens,
                // just not for this server.
                let description = match tokens.authenticate(token, Surface::Rest) {
                    Ok(p)
                        if p.credential == CredentialKind::Pat
                            || p.credential == CredentialKind::ServiceAccount =>
                    {
                        "Invalid token signature - token was not issued by Asana OAuth"
                    }
                    Ok(_) => {
                        "This token belongs to a REST API app; the MCP server accepts only tokens of MCP apps"
                    }
                    Err(_) => "The access token is invalid or has been revoked",
                };
                Err(Box::new(self.challenge(Some(description))))
            }
        }
    }

    /// Browsers may reach a local server too: only its own origin and loopback origins may
    /// (spec: an invalid `Origin` gets 403).
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
        let authority = |url: &str| {
            url.split_once("://")
                .map(|(_, rest)| rest.split('/').next().unwrap_or_default().to_owned())
        };
        let host = authority(origin).map(|a| match a.strip_prefix('[') {
            Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or_default()),
            None => a.split(':').next().unwrap_or_default().to_owned(),
        });
        let own = authority(origin) == authority(&self.sandbox().config().public_url);
        let loopback =
            host.is_some_and(|h| matches!(h.as_str(), "localhost" | "127.0.0.1" | "[::1]"));
        if own || loopback {
            Ok(())
        } else {
            Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                &Value::Null,
                &RpcError::invalid_request("Origin not allowed"),
            )))
        }
    }

    /// Admits one request under the caller's limits and applies injected faults; the permit
    /// holds an in-flight slot until dropped.
    async fn admit(
        &self,
        principal: &Principal,
        write: bool,
        search: bool,
        id: &Value,
    ) -> Result<Permit, Refused> {
        let sandbox = self.sandbox();
        let paid = sandbox.user_is_paid(&principal.user_gid);
        let permit = sandbox
            .0
            .limits
            .admit(&principal.token_key, write, search, paid)
            .map_err(|error| Box::new(rate_limited(id, &error)))?;
        if let Some(fault) = sandbox.take_fault(PATH) {
            if fault.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
            }
            match fault.status {
                Some(429) => return Err(Box::new(rate_limited(id, &ApiError::rate_limited(30)))),
                Some(status) => {
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    return Err(Box::new(refuse(
                        status,
                        id,
                        &RpcError::new(INTERNAL_ERROR, "Server Error"),
                    )));
                }
                None => {}
            }
        }
        Ok(permit)
    }

    /// The handshake-era session a request names, checked: the id (400 without, 404 when
    /// unknown) and `MCP-Protocol-Version` (400 when missing since 2025-06-18, unsupported, or
    /// not the negotiated one). Returns the session id and its version.
    fn session(
        &self,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> Result<(String, &'static str), Refused> {
        let Some(id) = header_str(headers, protocol::SESSION_HEADER) else {
            return Err(Box::new(refuse(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                &RpcError::invalid_request(
                    "Bad Request: Mcp-Session-Id header is required (send initialize first)",
                ),
            )));
        };
        let Some(version) = self.0.sessions.resume(id, &Owner::of(principal)) else {
            return Err(Box::new(session_not_found()));
        };
        let problem = match header_str(headers, protocol::VERSION_HEADER) {
            None if protocol::requires_version_header(version) => Some(format!(
                "Bad Request: MCP-Protocol-Version header is required (negotiated {version})"
            )),
            None => None,
            Some(given) if protocol::handshake_version(given).is_none() => Some(format!(
                "Bad Request: Unsupported protocol version {given} (this session speaks {version})"
            )),
            Some(given) if given != version => Some(format!(
                "Bad Request: MCP-Protocol-Version {given} is not the negotiated {version}"
            )),
            Some(_) => None,
        };
        match problem {
            Some(message) => Err(Box::new(refuse(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                &RpcError::invalid_request(message),
            ))),
            None => Ok((id.to_owned(), version)),
        }
    }

    /// Whether a POST goes to the 2026-07-28 path: it names a version no handshake has.
    fn is_modern(&self, headers: &HeaderMap, message: &Incoming) -> bool {
        let initialize =
            matches!(message, Incoming::Request { method, .. } if method == "initialize");
        self.modern_enabled()
            && !initialize
            && header_str(headers, protocol::VERSION_HEADER)
                .is_some_and(|v| protocol::handshake_version(v).is_none())
    }

    fn initialize(
        &self,
        principal: &Principal,
        format: Format,
        id: &Value,
        params: &Map<String, Value>,
    ) -> Response {
        let Some(requested) = params.get("protocolVersion").and_then(Value::as_str) else {
            return refuse(
                StatusCode::BAD_REQUEST,
                id,
                &RpcError::invalid_params("params.protocolVersion: required string"),
            );
        };
        // The client's revision if we speak it, else our latest (the client then decides).
        let version = protocol::handshake_version(requested).unwrap_or(protocol::LATEST_HANDSHAKE);
        let session = self.0.sessions.open(Owner::of(principal), version);
        let result = json!({
            "protocolVersion": version,
            "capabilities": capabilities(),
            "serverInfo": server_info(),
            "instructions": INSTRUCTIONS,
        });
        let mut response = reply(format, StatusCode::OK, &success(id, result));
        if let Ok(value) = HeaderValue::from_str(&session) {
            response
                .headers_mut()
                .insert(protocol::SESSION_HEADER, value);
        }
        response
    }

    fn list_tools(&self, params: &Map<String, Value>) -> Answer {
        let cursor = match params.get("cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(cursor)) => Some(cursor.as_str()),
            Some(_) => {
                return Answer::Error(RpcError::invalid_params("params.cursor must be a string"));
            }
        };
        let size = self.sandbox().config().mcp_page_size;
        match self.0.registry.page(cursor, size) {
            Ok((tools, next)) => {
                let mut result = json!({"tools": tools});
                if let Some(next) = next {
                    result["nextCursor"] = json!(next);
                }
                Answer::Result(result)
            }
            Err(reason) => Answer::Error(RpcError::invalid_params(reason)),
        }
    }

    async fn call_tool(
        &self,
        principal: &Principal,
        id: &Value,
        params: &Map<String, Value>,
    ) -> Answer {
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            return Answer::Error(RpcError::invalid_params("params.name: required string"));
        };
        let arguments = match params.get("arguments") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(arguments)) => arguments.clone(),
            Some(_) => {
                return Answer::Error(RpcError::invalid_params(
                    "params.arguments must be an object",
                ));
            }
        };
        let Some(tool) = self.0.registry.get(name) else {
            return Answer::Error(RpcError::invalid_params(format!("Unknown tool: {name}")));
        };
        let permit = match self
            .admit(principal, tool.writes(), tool.searches(), id)
            .await
        {
            Ok(permit) => permit,
            Err(response) => return Answer::Http(*response),
        };
        let checked = schema::check(
            &tool.definition["inputSchema"],
            &Value::Object(arguments.clone()),
        );
        let result = match (checked, &tool.behaviour) {
            (Err(problem), _) => tool_failure(&format!("Invalid arguments for {name}: {problem}")),
            (Ok(()), Behaviour::Fixed(result)) => result.clone(),
            (Ok(()), Behaviour::Builtin(builtin)) => {
                match builtin.call(self.sandbox(), principal, &arguments) {
                    Ok(structured) => {
                        if builtin.writes() {
                            self.sandbox().notify_changed();
                        }
                        tool_success(structured)
                    }
                    Err(ToolError(text)) => tool_failure(&text),
                }
            }
        };
        drop(permit);
        Answer::Result(result)
    }

    /// Answers a handshake-era request (not `initialize`).
    async fn legacy_request(
        &self,
        principal: &Principal,
        headers: &HeaderMap,
        format: Format,
        id: &Value,
        method: &str,
        params: &Map<String, Value>,
    ) -> Response {
        if let Err(response) = self.session(principal, headers) {
            return *response;
        }
        let answer = match method {
            "tools/call" => self.call_tool(principal, id, params).await,
            "ping" | "tools/list" => match self.admit(principal, false, false, id).await {
                Err(response) => Answer::Http(*response),
                Ok(_permit) if method == "ping" => Answer::Result(json!({})),
                Ok(_permit) => self.list_tools(params),
            },
            _ => Answer::Error(RpcError::method_not_found(method)),
        };
        match answer {
            Answer::Result(result) => reply(format, StatusCode::OK, &success(id, result)),
            Answer::Error(error) => reply(format, StatusCode::OK, &failure(id, &error)),
            Answer::Http(response) => response,
        }
    }

    /// The 2026-07-28 envelope checks, in the spec's order: `_meta` carries the version and
    /// capabilities (-32602), the routing headers match the body (-32020), and the version is
    /// one we speak (-32022).
    fn check_envelope(
        &self,
        headers: &HeaderMap,
        method: &str,
        params: &Map<String, Value>,
    ) -> Result<(), RpcError> {
        let meta = params.get("_meta").and_then(Value::as_object);
        let missing: Vec<&str> = [
            protocol::META_PROTOCOL_VERSION,
            protocol::META_CLIENT_CAPABILITIES,
        ]
        .into_iter()
        .filter(|key| meta.is_none_or(|m| !m.contains_key(*key)))
        .collect();
        if !missing.is_empty() {
            return Err(RpcError::invalid_params(format!(
                "params._meta is missing the required envelope key(s): {}",
                missing.join(", ")
            )));
        }
        let version = &params["_meta"][protocol::META_PROTOCOL_VERSION];
        let mismatch = |message: String| RpcError::new(HEADER_MISMATCH, message);
        for name in [
            protocol::VERSION_HEADER,
            protocol::METHOD_HEADER,
            protocol::NAME_HEADER,
        ] {
            if headers.get_all(name).iter().count() > 1 {
                return Err(mismatch(format!("{name} header appears more than once")));
            }
        }
        if header_str(headers, protocol::VERSION_HEADER) != version.as_str() {
            return Err(mismatch(format!(
                "{} header does not match the request envelope's protocol version",
                protocol::VERSION_HEADER
            )));
        }
        if header_str(headers, protocol::METHOD_HEADER) != Some(method) {
            return Err(mismatch(format!(
                "{} header does not match the request body's method",
                protocol::METHOD_HEADER
            )));
        }
        if method == "tools/call"
            && let Some(name) = params.get("name").and_then(Value::as_str)
            && header_str(headers, protocol::NAME_HEADER).and_then(protocol::decode_header_value)
                != Some(name.to_owned())
        {
            return Err(mismatch(format!(
                "{} header does not match the request body's name",
                protocol::NAME_HEADER
            )));
        }
        if version != MODERN_VERSION {
            return Err(RpcError::unsupported_version(version));
        }
        Ok(())
    }

    /// Answers a 2026-07-28 request: no session; errors carry the spec's HTTP status.
    async fn modern_request(
        &self,
        principal: &Principal,
        headers: &HeaderMap,
        format: Format,
        id: &Value,
        method: &str,
        params: &Map<String, Value>,
    ) -> Response {
        if let Err(error) = self.check_envelope(headers, method, params) {
            return refuse(error.modern_status(), id, &error);
        }
        let answer = match method {
            "tools/call" => self.call_tool(principal, id, params).await,
            "subscriptions/listen" => {
                return match self.admit(principal, false, false, id).await {
                    Ok(_permit) => self.listen(headers, id, params),
                    Err(response) => *response,
                };
            }
            "server/discover" | "tools/list" => match self.admit(principal, false, false, id).await
            {
                Err(response) => Answer::Http(*response),
                Ok(_permit) if method == "tools/list" => self.list_tools(params),
                Ok(_permit) => Answer::Result(json!({
                    "supportedVersions": [MODERN_VERSION],
                    "capabilities": capabilities(),
                    "instructions": INSTRUCTIONS,
                    "ttlMs": 0,
                    "cacheScope": "public",
                })),
            },
            _ => Answer::Error(RpcError::method_not_found(method)),
        };
        match answer {
            Answer::Result(mut result) => {
                if method == "tools/list" {
                    // The list is the same for everyone, but a real server's may vary by plan.
                    result["ttlMs"] = json!(0);
                    result["cacheScope"] = json!("private");
                }
                reply(format, StatusCode::OK, &success(id, stamp(result)))
            }
            Answer::Error(error) => refuse(error.modern_status(), id, &error),
            Answer::Http(response) => response,
        }
    }

    /// `subscriptions/listen`: an SSE stream that acknowledges the honoured filter, then sends
    /// `notifications/tools/list_changed` (when asked for) until the client leaves or the
    /// sandbox stops, when it closes gracefully with the request's result.
    fn listen(&self, headers: &HeaderMap, id: &Value, params: &Map<String, Value>) -> Response {
        if !protocol::accepts_sse(headers) {
            return refuse(
                StatusCode::NOT_ACCEPTABLE,
                id,
                &RpcError::invalid_request("subscriptions/listen answers with text/event-stream"),
            );
        }
        let wants_tools = params
            .get("notifications")
            .is_some_and(|n| n["toolsListChanged"] == true);
        let honoured = if wants_tools {
            json!({"toolsListChanged": true})
        } else {
            json!({})
        };
        // Subscribe before answering, so no change after the acknowledgement is missed.
        let changes = wants_tools.then(|| self.0.registry.subscribe());
        let shutdown = self.sandbox().0.shutdown.clone();
        let id = id.clone();
        let body = stream::body(move |mut out| async move {
            let subscription = json!({protocol::META_SUBSCRIPTION_ID: id});
            let ack = protocol::notification(
                "notifications/subscriptions/acknowledged",
                Some(json!({"_meta": subscription, "notifications": honoured})),
            );
            if out.message(&ack).await.is_err() {
                return;
            }
            let never = tokio_util::sync::CancellationToken::new();
            let end = stream::tool_changes(
                &mut out,
                changes,
                &list_changed(Some(&id)),
                &never,
                &shutdown,
            )
            .await;
            if end == stream::End::Shutdown {
                let closed = stamp(json!({"_meta": subscription}));
                // The client may be gone already; nothing is left to do either way.
                let _ = out.message(&success(&id, closed)).await;
            }
        });
        (StatusCode::OK, protocol::sse_headers(), body).into_response()
    }
}

/// A 2026-07-28 result: `resultType` and the server-info stamp in `_meta`.
fn stamp(mut result: Value) -> Value {
    if let Some(fields) = result.as_object_mut() {
        fields
            .entry("resultType")
            .or_insert_with(|| json!("complete"));
        let meta = fields.entry("_meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.entry(protocol::META_SERVER_INFO)
                .or_insert_with(server_info);
        }
    }
    result
}

/// HTTP 429 with `Retry-After`, and the reason as a JSON-RPC error.
fn rate_limited(id: &Value, error: &ApiError) -> Response {
    let seconds = error.retry_after.unwrap_or(1);
    let mut response = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        id,
        &RpcError::new(RATE_LIMITED, error.message.clone())
            .with_data(json!({"retryAfter": seconds})),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The checks every request makes first: `Origin`, then the bearer token.
fn gate(server: &Server, request: &Request) -> Result<Principal, Refused> {
    server.check_origin(request.headers())?;
    server.authenticate(request)
}

/// `POST /v2/mcp`: one JSON-RPC message.
async fn post_message(State(server): State<Server>, request: Request) -> Response {
    let principal = match gate(&server, &request) {
        Ok(principal) => principal,
        Err(response) => return *response,
    };
    let headers = request.headers().clone();
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_BODY).await else {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &Value::Null,
            &RpcError::invalid_request("the body is too large"),
        );
    };
    let message = match protocol::parse(&body) {
        Ok(message) => message,
        Err((id, error)) => return refuse(StatusCode::BAD_REQUEST, &id, &error),
    };
    let modern = server.is_modern(&headers, &message);
    let Incoming::Request { id, method, params } = message else {
        // Notifications and responses: accepted once the request is in order for its era.
        if !modern {
            return match server.session(&principal, &headers) {
                Ok(_) => StatusCode::ACCEPTED.into_response(),
                Err(response) => *response,
            };
        }
        let version = header_str(&headers, protocol::VERSION_HEADER).unwrap_or_default();
        if version == MODERN_VERSION {
            return StatusCode::ACCEPTED.into_response();
        }
        let error = RpcError::unsupported_version(&json!(version));
        return refuse(error.modern_status(), &Value::Null, &error);
    };
    let Some(format) = protocol::response_format(&headers) else {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            &id,
            &RpcError::invalid_request("Accept must allow application/json or text/event-stream"),
        );
    };
    let params = match params {
        Value::Null => Map::new(),
        Value::Object(params) => params,
        _ => {
            let error = RpcError::invalid_params("params must be an object");
            return refuse(StatusCode::BAD_REQUEST, &id, &error);
        }
    };
    if modern {
        server
            .modern_request(&principal, &headers, format, &id, &method, &params)
            .await
    } else if method == "initialize" {
        match server.admit(&principal, false, false, &id).await {
            Ok(_permit) => server.initialize(&principal, format, &id, &params),
            Err(response) => *response,
        }
    } else {
        server
            .legacy_request(&principal, &headers, format, &id, &method, &params)
            .await
    }
}

/// `GET /v2/mcp`: the session's stream of server notifications (`list_changed`). A newer GET
/// of the same session replaces it.
async fn open_stream(State(server): State<Server>, request: Request) -> Response {
    let principal = match gate(&server, &request) {
        Ok(principal) => principal,
        Err(response) => return *response,
    };
    let headers = request.headers();
    if !protocol::accepts_sse(headers) {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            &Value::Null,
            &RpcError::invalid_request("GET opens a text/event-stream"),
        );
    }
    let session_id = match server.session(&principal, headers) {
        Ok((id, _)) => id,
        Err(response) => return *response,
    };
    let Some(stream) = server
        .0
        .sessions
        .attach_stream(&session_id, &Owner::of(&principal))
    else {
        return session_not_found();
    };
    // Subscribe before answering, so no change after the response headers is missed.
    let changes = server.0.registry.subscribe();
    let shutdown = server.sandbox().0.shutdown.clone();
    let body = stream::body(move |mut out| async move {
        stream::tool_changes(
            &mut out,
            Some(changes),
            &list_changed(None),
            &stream.stop,
            &shutdown,
        )
        .await;
        server.0.sessions.detach_stream(&session_id, stream.id);
    });
    (StatusCode::OK, protocol::sse_headers(), body).into_response()
}

/// `DELETE /v2/mcp`: ends the session.
async fn end_session(State(server): State<Server>, request: Request) -> Response {
    let principal = match gate(&server, &request) {
        Ok(principal) => principal,
        Err(response) => return *response,
    };
    match server.session(&principal, request.headers()) {
        Ok((id, _)) => {
            server.0.sessions.end(&id, &Owner::of(&principal));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(response) => *response,
    }
}
