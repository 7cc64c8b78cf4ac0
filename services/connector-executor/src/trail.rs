//! What a call's audit event records: typed, one struct per event kind ([`ToolExecuted`],
//! [`ProxyRequested`]), with the exchange's facts ([`Trail`]) and how the call ended, written
//! into the event's details by one serialization. Renaming a field is a compile error here, not
//! a silent gap in compliance data.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::tokens::AccessToken;

/// The facts of a call's exchange with Asana, noted by the pipeline and the senders.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Trail {
    /// The credential of the last attempt (shared with the token cache, not copied).
    #[serde(skip)]
    pub credential: Option<Arc<AccessToken>>,
    /// Asana's HTTP status of the last answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asana_request_id: Option<String>,
    /// The `Asana-Change` names Asana announced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub asana_change: Vec<String>,
    /// An MCP tool called in warn mode although it drifted from its approved definition: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<&'static str>,
    /// How long the call waited for Asana: its requests out, and its rate slots (Asana's
    /// limits); the rest of its time is what agentauth added (a metric, not audited).
    #[serde(skip)]
    pub waited_for_asana: Duration,
}

impl Trail {
    pub(crate) fn used(&mut self, token: &Arc<AccessToken>) {
        self.credential = Some(token.clone());
    }

    /// Asana answered with `status` (and, when it sent one, its request id).
    pub(crate) fn answered(&mut self, status: u16, request_id: Option<&str>) {
        self.status = Some(status);
        if let Some(id) = request_id {
            self.asana_request_id = Some(id.to_owned());
        }
    }

    /// Asana announced the changes `names`.
    pub(crate) fn changes<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.asana_change
            .extend(names.into_iter().map(str::to_owned));
    }

    /// The credential version that sent the last attempt, 0 when none was sent.
    pub(crate) fn credential_version(&self) -> u64 {
        self.credential.as_ref().map_or(0, |c| c.version)
    }
}

/// `tool.executed`: one tool call of ExecuteTool or ExecuteBatch.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ToolExecuted<'a> {
    pub tool: &'a str,
    /// `REST` or `MCP`; absent when the call was refused before its connection was known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'static str>,
    pub input_digest: InputDigest<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<&'a str>,
    /// Sent inside one of Asana's `/batch` requests.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub packed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// `mcp.session_minted`: one `MintMcpSession`, minted (its session, expiry and tool count)
/// or refused (what was asked for, and why). Never the bearer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SessionMinted<'a> {
    pub virtual_server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
}

/// `mcp.session_revoked`: one `RevokeMcpSession`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SessionRevoked<'a> {
    pub mcp_session: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_server: Option<&'a str>,
    /// It had been revoked before; nothing changed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub already_revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
}

/// `mcp.protocol_session_ended`: a client ended its protocol session (`Mcp-Session-Id`)
/// with HTTP DELETE; the session's bearer stays valid for a new one.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProtocolSessionEnded<'a> {
    pub virtual_server: &'a str,
    pub mcp_session: &'a str,
    pub protocol_session: &'a str,
}

/// `tools.listed`: one `ListUpstreamTools`, every page read afresh as the account.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ToolsListed {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<usize>,
    pub latency_ms: f64,
}

/// `proxy.request`: one ProxyRequest.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProxyRequested<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The generated tool of the spec operation the request resolved to (or
    /// `asana_proxy_unlisted_path`): the permission it needed.
    pub tool: &'a str,
    /// The operation, as `METHOD /path/{template}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    pub route: &'static str,
    pub input_digest: InputDigest<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// `sha256:<hex>` of a call's input as sent: enough to match two calls, not to read one.
/// Computed when the event is serialized, so a call with auditing off never hashes its input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputDigest<'a>(pub &'a [u8]);

impl Serialize for InputDigest<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&agentauth_audit::input_digest(self.0))
    }
}

/// How a call ended, besides its outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Ending {
    /// Asana answered, and its answer says the request failed (an `is_error` output).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
}

/// An event kind's details with the exchange and the ending, as they are serialized.
#[derive(Debug, Serialize)]
pub(crate) struct Details<'a, D: Serialize> {
    #[serde(flatten)]
    pub kind: &'a D,
    #[serde(flatten)]
    pub trail: &'a Trail,
    #[serde(flatten)]
    pub ending: Ending,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub via: Option<&'a crate::virtual_mcp::Via>,
}

/// Milliseconds, with microsecond precision, of `elapsed`.
pub(crate) fn millis(elapsed: std::time::Duration) -> f64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX) as f64 / 1000.0
}
