//! connector-executor's errors and their one mapping to gRPC status codes (design.md, error
//! model). No variant carries a token: Asana's messages and token-vault's statuses never hold
//! one, and transport errors are stripped of URLs.

use std::collections::HashMap;
use std::time::Duration;

use agentauth_grpc::auth::ERROR_DOMAIN;
use asana_tools::Violation;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Everything a connector-executor RPC can fail with. Cloned when one failure answers for
/// every item of a `/batch` request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The caller is not bound to what the request touches.
    #[error(transparent)]
    Denied(#[from] agentauth_grpc::Denied),
    /// No connection has exactly this name.
    #[error("unknown connection `{name}`{}", agentauth_grpc::did_you_mean(.suggestions))]
    UnknownConnection {
        name: String,
        suggestions: Vec<String>,
    },
    /// The connection has no tool of this name.
    #[error("connection `{connection}` has no tool `{name}`{}", agentauth_grpc::did_you_mean(.suggestions))]
    UnknownTool {
        connection: String,
        name: String,
        suggestions: Vec<String>,
    },
    /// No virtual MCP session of this id in the request's tenant.
    #[error("no MCP session `{id}` in this tenant")]
    UnknownSession { id: String },
    /// The input does not match the tool's schema; nothing was sent to Asana.
    #[error("invalid input: {}", describe(.0))]
    InvalidInput(Vec<Violation>),
    /// A request's fields are malformed (each one named); nothing was sent to Asana.
    #[error("invalid request: {}", .0.iter().map(|(f, d)| format!("{f}: {d}")).collect::<Vec<_>>().join("; "))]
    InvalidRequest(Vec<(String, String)>),
    /// A request field is malformed; nothing was sent to Asana.
    #[error("{field}: {description}")]
    InvalidArgument {
        field: &'static str,
        description: String,
    },
    /// Drift pinning refuses the tool: its definition is not the approved one. Nothing was
    /// sent to the MCP server.
    #[error(
        "tool `{tool}` of connection `{connection}` is blocked by drift pinning: {why}; an operator must approve its current definition"
    )]
    ToolDrifted {
        connection: String,
        tool: String,
        why: &'static str,
    },
    /// The RPC does not apply to this connection's kind.
    #[error("connection `{connection}` {reason}")]
    WrongKind {
        connection: String,
        reason: &'static str,
    },
    /// A status from token-vault, passed through with its details: AUTH_REQUIRED (an account
    /// never connected, revoked or needing a new consent) with the `Help` link that fixes it.
    #[error("token-vault: {}", .0.message())]
    TokenVault(Status),
    /// A rate limit, this side's or Asana's: retry after `retry_after`.
    #[error("rate limited ({limit}); retry after {} ms", .retry_after.as_millis())]
    RateLimited {
        limit: &'static str,
        retry_after: Duration,
    },
    /// A dependency (Asana, token-vault, the MCP server, audit-log) is unavailable.
    #[error("{dependency} is unavailable: {reason}")]
    Unavailable {
        dependency: &'static str,
        reason: String,
    },
    /// The operator has not configured what the request needs.
    #[error("{what} is not configured on this connector-executor")]
    NotConfigured { what: &'static str },
    /// Asana refused what was asked of it (its message says why).
    #[error("Asana refused {what}: {message}")]
    AsanaRefused { what: &'static str, message: String },
    /// No event subscription of this id in the request's tenant.
    #[error("no event subscription `{id}` in this tenant")]
    UnknownSubscription { id: String },
    /// A `SubscribeEvents` cursor names a position retention already removed.
    #[error("the cursor is older than the retained events; subscribe again without one")]
    CursorExpired,
    /// Something this service relies on answered in a way it never should.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// A failed token-vault call: its own refusals pass through; transport failures mean
    /// token-vault is unavailable.
    pub(crate) fn from_token_vault(status: Status) -> Self {
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
                if status.details().is_empty() =>
            {
                Self::Unavailable {
                    dependency: "token-vault",
                    reason: status.message().to_owned(),
                }
            }
            _ => Self::TokenVault(status),
        }
    }

    /// What an audit row says of the error: its message, except that an invalid input is
    /// described by its fields only. A violation's description may quote the input, which the
    /// audit trail keeps only as a digest.
    pub(crate) fn audit_text(&self) -> String {
        match self {
            Self::InvalidInput(violations) => format!(
                "invalid input: {}",
                violations
                    .iter()
                    .map(|v| field_path(&v.field))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        }
    }

    /// The machine-readable reason of the error, as batch items report it.
    pub(crate) fn reason(&self) -> String {
        match self {
            Self::Denied(_) => "PERMISSION_DENIED".to_owned(),
            Self::UnknownConnection { .. } => "CONNECTION_NOT_FOUND".to_owned(),
            Self::UnknownTool { .. } => "TOOL_NOT_FOUND".to_owned(),
            Self::UnknownSession { .. } => "MCP_SESSION_NOT_FOUND".to_owned(),
            Self::InvalidInput(_) | Self::InvalidRequest(_) | Self::InvalidArgument { .. } => {
                "INVALID_INPUT".to_owned()
            }
            Self::WrongKind { .. } => "WRONG_CONNECTION_KIND".to_owned(),
            Self::ToolDrifted { .. } => "TOOL_DRIFTED".to_owned(),
            Self::TokenVault(status) => status
                .get_details_error_info()
                .map(|info| info.reason)
                .unwrap_or_default(),
            Self::RateLimited { .. } => "RATE_LIMITED".to_owned(),
            Self::Unavailable { .. } => "UNAVAILABLE".to_owned(),
            Self::NotConfigured { .. } => "NOT_CONFIGURED".to_owned(),
            Self::UnknownSubscription { .. } => "EVENT_SUBSCRIPTION_NOT_FOUND".to_owned(),
            Self::AsanaRefused { .. } => "ASANA_REFUSED".to_owned(),
            Self::CursorExpired => "CURSOR_EXPIRED".to_owned(),
            Self::Internal(_) => String::new(),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Denied(denied) => denied.into(),
            Error::UnknownConnection { ref name, .. } => Status::with_error_details(
                Code::NotFound,
                error.to_string(),
                ErrorDetails::with_error_info(
                    "CONNECTION_NOT_FOUND",
                    ERROR_DOMAIN,
                    HashMap::from([("connection".to_owned(), name.clone())]),
                ),
            ),
            Error::UnknownTool {
                ref connection,
                ref name,
                ..
            } => Status::with_error_details(
                Code::NotFound,
                error.to_string(),
                ErrorDetails::with_error_info(
                    "TOOL_NOT_FOUND",
                    ERROR_DOMAIN,
                    HashMap::from([
                        ("connection".to_owned(), connection.clone()),
                        ("tool".to_owned(), name.clone()),
                    ]),
                ),
            ),
            Error::UnknownSession { ref id } => Status::with_error_details(
                Code::NotFound,
                error.to_string(),
                ErrorDetails::with_error_info(
                    "MCP_SESSION_NOT_FOUND",
                    ERROR_DOMAIN,
                    HashMap::from([("session_id".to_owned(), id.clone())]),
                ),
            ),
            Error::InvalidInput(ref violations) => {
                let violations = violations
                    .iter()
                    .map(|v| FieldViolation::new(field_path(&v.field), v.description.clone()))
                    .collect::<Vec<_>>();
                Status::with_error_details(
                    Code::InvalidArgument,
                    error.to_string(),
                    ErrorDetails::with_bad_request(violations),
                )
            }
            Error::InvalidRequest(ref violations) => {
                let violations = violations
                    .iter()
                    .map(|(field, description)| FieldViolation::new(field, description))
                    .collect::<Vec<_>>();
                Status::with_error_details(
                    Code::InvalidArgument,
                    error.to_string(),
                    ErrorDetails::with_bad_request(violations),
                )
            }
            Error::InvalidArgument {
                field,
                ref description,
            } => Status::with_error_details(
                Code::InvalidArgument,
                error.to_string(),
                ErrorDetails::with_bad_request_violation(field, description.clone()),
            ),
            Error::WrongKind { .. } => Status::failed_precondition(error.to_string()),
            Error::ToolDrifted {
                ref connection,
                ref tool,
                ..
            } => Status::with_error_details(
                Code::FailedPrecondition,
                error.to_string(),
                ErrorDetails::with_error_info(
                    "TOOL_DRIFTED",
                    ERROR_DOMAIN,
                    HashMap::from([
                        ("connection".to_owned(), connection.clone()),
                        ("tool".to_owned(), tool.clone()),
                    ]),
                ),
            ),
            Error::TokenVault(status) => status,
            Error::RateLimited { retry_after, .. } => Status::with_error_details(
                Code::ResourceExhausted,
                error.to_string(),
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Error::Unavailable { .. } => Status::unavailable(error.to_string()),
            Error::NotConfigured { .. } => Status::with_error_details(
                Code::FailedPrecondition,
                error.to_string(),
                ErrorDetails::with_error_info("NOT_CONFIGURED", ERROR_DOMAIN, HashMap::new()),
            ),
            Error::UnknownSubscription { ref id } => Status::with_error_details(
                Code::NotFound,
                error.to_string(),
                ErrorDetails::with_error_info(
                    "EVENT_SUBSCRIPTION_NOT_FOUND",
                    ERROR_DOMAIN,
                    HashMap::from([("subscription_id".to_owned(), id.clone())]),
                ),
            ),
            Error::CursorExpired => Status::out_of_range(error.to_string()),
            Error::AsanaRefused { .. } => Status::with_error_details(
                Code::FailedPrecondition,
                error.to_string(),
                ErrorDetails::with_error_info("ASANA_REFUSED", ERROR_DOMAIN, HashMap::new()),
            ),
            Error::Internal(_) => {
                tracing::error!(%error, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// The field of a violation as the request names it: the input is `input_json`.
fn field_path(field: &str) -> String {
    if field.is_empty() {
        "input_json".to_owned()
    } else {
        format!("input_json.{field}")
    }
}

fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            if v.field.is_empty() {
                v.description.clone()
            } else {
                format!("{}: {}", v.field, v.description)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
