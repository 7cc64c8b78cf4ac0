//! The wire: protocol revisions, JSON-RPC messages and error codes, `Accept` negotiation and
//! how one message is framed as JSON or as a server-sent event.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Revisions reached through the `initialize` handshake, oldest first.
pub const HANDSHAKE_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// What `initialize` answers when the client proposes a revision it does not know.
pub const LATEST_HANDSHAKE: &str = "2025-11-25";
/// The stateless revision: per-request `_meta`, `server/discover`, no sessions.
pub const MODERN_VERSION: &str = "2026-07-28";
/// The first handshake revision whose clients send `MCP-Protocol-Version` after initialization.
const VERSION_HEADER_SINCE: &str = "2025-06-18";

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const VERSION_HEADER: &str = "mcp-protocol-version";
pub const METHOD_HEADER: &str = "mcp-method";
pub const NAME_HEADER: &str = "mcp-name";

/// `_meta` keys of the 2026-07-28 request envelope and of stamped results.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// 2026-07-28: a routing header disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the envelope names a revision this server does not speak.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// Application-defined (outside the reserved range): the per-token rate limit was hit.
pub const RATE_LIMITED: i64 = 429;

/// Every revision this server speaks, oldest first (what `-32022` lists as `supported`).
pub fn supported_versions() -> Vec<&'static str> {
    let mut all = HANDSHAKE_VERSIONS.to_vec();
    all.push(MODERN_VERSION);
    all
}

/// The handshake revision matching `version`, if it is one.
pub fn handshake_version(version: &str) -> Option<&'static str> {
    HANDSHAKE_VERSIONS.iter().copied().find(|v| *v == version)
}

/// Whether clients of `version` must send `MCP-Protocol-Version` on every later request.
pub fn requires_version_header(version: &str) -> bool {
    // Revisions are dates, so they order as strings.
    version >= VERSION_HEADER_SINCE
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, message)
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))
    }

    /// The `-32022` rejection naming every revision we speak.
    pub fn unsupported_version(requested: &Value) -> Self {
        Self::new(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version")
            .with_data(json!({"supported": supported_versions(), "requested": requested}))
    }

    /// The error object as it goes on the wire.
    pub fn to_json(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        error
    }

    /// The HTTP status a 2026-07-28 server answers this error with (200 for the rest).
    pub fn modern_status(&self) -> StatusCode {
        match self.code {
            PARSE_ERROR
            | INVALID_REQUEST
            | INVALID_PARAMS
            | HEADER_MISMATCH
            | UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
            METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        }
    }
}

/// `{"jsonrpc": "2.0", "id": id, "result": result}`.
pub fn success(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// `{"jsonrpc": "2.0", "id": id, "error": {...}}`.
pub fn failure(id: &Value, error: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error.to_json()})
}

/// A notification message.
pub fn notification(method: &str, params: Option<Value>) -> Value {
    let mut message = json!({"jsonrpc": "2.0", "method": method});
    if let Some(params) = params {
        message["params"] = params;
    }
    message
}

/// One message a client POSTed.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
    },
    /// A client's answer to a server request (this server sends none, so it is only acknowledged).
    Response,
}

/// Parses a POST body; the error carries the request id when one could be read (else `null`).
pub fn parse(body: &[u8]) -> Result<Incoming, (Value, RpcError)> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| (Value::Null, RpcError::new(PARSE_ERROR, "Parse error")))?;
    let Value::Object(message) = value else {
        let reason = if value.is_array() {
            "JSON-RPC batches are not supported; send one message per POST"
        } else {
            "the body must be one JSON-RPC message object"
        };
        return Err((Value::Null, RpcError::invalid_request(reason)));
    };
    let id = message.get("id").cloned();
    let id_for_errors = id.clone().unwrap_or(Value::Null);
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((
            id_for_errors,
            RpcError::invalid_request("jsonrpc must be \"2.0\""),
        ));
    }
    match (message.get("method"), id) {
        (Some(Value::String(method)), Some(id)) => {
            if !(id.is_string() || id.is_i64() || id.is_u64()) {
                return Err((
                    Value::Null,
                    RpcError::invalid_request("id must be a string or an integer"),
                ));
            }
            Ok(Incoming::Request {
                id,
                method: method.clone(),
                params: message.get("params").cloned().unwrap_or(Value::Null),
            })
        }
        (Some(Value::String(method)), None) => Ok(Incoming::Notification {
            method: method.clone(),
        }),
        (None, Some(_)) if message.contains_key("result") || message.contains_key("error") => {
            Ok(Incoming::Response)
        }
        _ => Err((
            id_for_errors,
            RpcError::invalid_request("not a JSON-RPC request, notification or response"),
        )),
    }
}

/// How a response to a POSTed request is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Sse,
}

const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";

/// The quality the `Accept` header gives `media` (`type/subtype`), by its most specific
/// matching range; no header at all accepts everything.
fn quality(headers: &HeaderMap, media: &str) -> f32 {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return 1.0;
    }
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    let mut best: Option<(u8, f32)> = None;
    for range in values.iter().flat_map(|v| v.split(',')) {
        let mut parts = range.split(';').map(str::trim);
        let pattern = parts.next().unwrap_or_default().to_ascii_lowercase();
        let specificity = if pattern == media {
            3
        } else if pattern == format!("{kind}/*") {
            2
        } else if pattern == "*/*" {
            1
        } else {
            continue;
        };
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// JSON unless the client accepts only SSE or ranks it higher; `None` when it accepts neither.
pub fn response_format(headers: &HeaderMap) -> Option<Format> {
    let json = quality(headers, JSON);
    let sse = quality(headers, EVENT_STREAM);
    if json <= 0.0 && sse <= 0.0 {
        None
    } else if sse > json {
        Some(Format::Sse)
    } else {
        Some(Format::Json)
    }
}

/// Whether the client accepts `text/event-stream` at all.
pub fn accepts_sse(headers: &HeaderMap) -> bool {
    quality(headers, EVENT_STREAM) > 0.0
}

/// One message as an SSE event (`serde_json` escapes newlines, so `data` is one line).
pub fn sse_event(message: &Value) -> String {
    format!("event: message\ndata: {message}\n\n")
}

/// The headers every SSE response carries.
pub fn sse_headers() -> [(header::HeaderName, HeaderValue); 3] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM)),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-transform"),
        ),
        (
            header::HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
    ]
}

/// `message` with `status`, framed as `format` asks.
pub fn reply(format: Format, status: StatusCode, message: &Value) -> Response {
    match format {
        Format::Json => (status, axum::Json(message)).into_response(),
        Format::Sse => (status, sse_headers(), sse_event(message)).into_response(),
    }
}

/// A transport-level refusal: `status` with the JSON-RPC error as a JSON body.
pub fn refuse(status: StatusCode, id: &Value, error: &RpcError) -> Response {
    (status, axum::Json(failure(id, error))).into_response()
}

/// Decodes an `Mcp-Name` value: verbatim, or the `=?base64?…?=` form for names that are not
/// plain ASCII. `None` for a malformed sentinel.
pub fn decode_header_value(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        None => Some(value.to_owned()),
        Some(payload) => {
            crate::base64::decode_padded(payload).and_then(|bytes| String::from_utf8(bytes).ok())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).expect("valid header"),
        );
        headers
    }

    #[test]
    fn accept_picks_json_unless_sse_is_preferred_or_alone() {
        assert_eq!(
            response_format(&accept("application/json, text/event-stream")),
            Some(Format::Json)
        );
        assert_eq!(
            response_format(&accept("text/event-stream")),
            Some(Format::Sse)
        );
        assert_eq!(
            response_format(&accept("text/event-stream, application/json;q=0.5")),
            Some(Format::Sse)
        );
        assert_eq!(response_format(&accept("*/*")), Some(Format::Json));
        assert_eq!(response_format(&HeaderMap::new()), Some(Format::Json));
        assert_eq!(response_format(&accept("text/html")), None);
        assert_eq!(
            response_format(&accept("application/json;q=0, */*")),
            Some(Format::Sse)
        );
        assert!(!accepts_sse(&accept("application/json")));
    }

    #[test]
    fn parse_tells_requests_notifications_and_responses_apart() {
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Incoming::Request { method, .. }) if method == "ping"
        ));
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Incoming::Notification {
                method: "notifications/initialized".into()
            })
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Incoming::Response)
        );
        let parse_error = parse(b"{").map(|_| ()).map_err(|(_, e)| e.code);
        assert_eq!(parse_error, Err(PARSE_ERROR));
        let batch = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#)
            .map(|_| ())
            .map_err(|(_, e)| e.code);
        assert_eq!(batch, Err(INVALID_REQUEST));
        let bad_id = parse(br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#)
            .map(|_| ())
            .map_err(|(_, e)| e.code);
        assert_eq!(bad_id, Err(INVALID_REQUEST));
    }

    #[test]
    fn header_values_decode_plain_and_base64() {
        assert_eq!(decode_header_value("get_task").as_deref(), Some("get_task"));
        assert_eq!(
            decode_header_value("=?base64?w6l0w6k=?=").as_deref(),
            Some("été")
        );
        assert_eq!(decode_header_value("=?base64?***?="), None);
    }

    #[test]
    fn versions_order_and_header_rule() {
        assert!(requires_version_header("2025-11-25"));
        assert!(!requires_version_header("2025-03-26"));
        assert_eq!(handshake_version("2025-06-18"), Some("2025-06-18"));
        assert_eq!(handshake_version(MODERN_VERSION), None);
        assert_eq!(supported_versions().len(), 5);
    }
}
