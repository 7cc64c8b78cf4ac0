//! token-vault's errors and their one mapping to gRPC status codes.

use std::collections::HashMap;

use agentauth_grpc::auth::ERROR_DOMAIN;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Everything a token-vault RPC can fail with.
#[derive(Debug, thiserror::Error)]
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
    /// The request is malformed; nothing was changed.
    #[error("{field}: {description}")]
    InvalidArgument {
        field: &'static str,
        description: String,
    },
    /// The connection obtains its credentials another way.
    #[error("connection `{connection}` {reason}")]
    WrongAuthMethod {
        connection: String,
        reason: &'static str,
    },
    /// Nobody connected this identifier on this connection.
    #[error("no account for identifier `{identifier}` on connection `{connection}`")]
    AccountNotFound {
        connection: String,
        identifier: String,
    },
    /// The tenant has no encryption key: nothing was ever stored for it.
    #[error("tenant `{tenant}` has no encryption key (nothing was ever stored for it)")]
    TenantKeyNotFound { tenant: String },
    /// No webhook secret is kept for this subscription.
    #[error("no webhook secret is kept for subscription `{subscription_id}`")]
    WebhookSecretNotFound { subscription_id: String },
    /// Another writer stored a newer credential first; nothing was overwritten.
    #[error("the credential changed concurrently (expected version {expected}); retry")]
    Conflict { expected: u64 },
    /// A dependency (Vault, the database, Asana, audit-log) cannot be reached or is not ready.
    #[error("{dependency} is unavailable: {reason}")]
    Unavailable {
        dependency: &'static str,
        reason: String,
    },
    /// The end user must consent again, or supply a new token; `fix` says how.
    #[error("the account of `{identifier}` on connection `{connection}` {}", fix.needs())]
    AuthRequired {
        connection: String,
        identifier: String,
        fix: Fix,
    },
    /// A consent signed in, or a token acts, as another Asana user than the account's, and
    /// replacing the user was not asked for. An OAuth callback reports it on its page;
    /// PutCredential answers FAILED_PRECONDITION, reason ASANA_USER_MISMATCH.
    #[error(
        "the credential acts as another Asana user than the account's; set replace_user (agentauth accounts connect --replace-user) to change it"
    )]
    UserMismatch,
    /// A dependency failed transiently; the caller should retry after `retry_after`.
    #[error("{dependency} is unavailable: {reason}; retry later")]
    RetryLater {
        dependency: &'static str,
        reason: String,
        retry_after: std::time::Duration,
    },
    /// Something this service relies on answered in a way it never should.
    #[error("{0}")]
    Internal(String),
}

/// How the user fixes an account that needs a new credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Open this authorization link.
    Consent(String),
    /// Create a new token of this kind in Asana and store it with PutCredential.
    NewToken(crate::connections::Auth),
}

impl Fix {
    fn needs(&self) -> &'static str {
        match self {
            Self::Consent(_) => "needs a new consent; open the link in the details",
            Self::NewToken(_) => {
                "needs a new token; store one with PutCredential (the details say how)"
            }
        }
    }

    /// The `Help` link that does it.
    fn help(&self) -> (&'static str, String) {
        use crate::connections::Auth;
        match self {
            Self::Consent(link) => ("Connect the Asana account again", link.clone()),
            Self::NewToken(Auth::ServiceAccount) => (
                "Create a new service account token in Asana's admin console and store it \
                 with PutCredential (agentauth accounts connect --token-stdin)",
                "https://help.asana.com/s/article/service-accounts".to_owned(),
            ),
            Self::NewToken(_) => (
                "Create a new personal access token in Asana and store it with PutCredential \
                 (agentauth accounts connect --token-stdin)",
                "https://developers.asana.com/docs/personal-access-token".to_owned(),
            ),
        }
    }
}

impl From<crate::records::Error> for Error {
    fn from(error: crate::records::Error) -> Self {
        use crate::records::Error as Db;
        match error {
            Db::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed,
            ) => Error::Unavailable {
                dependency: "database",
                reason: error.to_string(),
            },
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Denied(denied) => denied.into(),
            Error::UnknownConnection { ref name, .. } => {
                let metadata = HashMap::from([("connection".to_owned(), name.clone())]);
                Status::with_error_details(
                    Code::NotFound,
                    error.to_string(),
                    ErrorDetails::with_error_info("CONNECTION_NOT_FOUND", ERROR_DOMAIN, metadata),
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
            Error::WrongAuthMethod { .. } => Status::failed_precondition(error.to_string()),
            Error::UserMismatch => Status::with_error_details(
                Code::FailedPrecondition,
                error.to_string(),
                ErrorDetails::with_error_info("ASANA_USER_MISMATCH", ERROR_DOMAIN, HashMap::new()),
            ),
            Error::AccountNotFound { .. }
            | Error::WebhookSecretNotFound { .. }
            | Error::TenantKeyNotFound { .. } => Status::not_found(error.to_string()),
            Error::Conflict { .. } => Status::aborted(error.to_string()),
            Error::Unavailable { .. } => Status::unavailable(error.to_string()),
            Error::AuthRequired {
                ref connection,
                ref fix,
                ..
            } => {
                let metadata = HashMap::from([("connection".to_owned(), connection.clone())]);
                let mut details =
                    ErrorDetails::with_error_info("AUTH_REQUIRED", ERROR_DOMAIN, metadata);
                let (description, url) = fix.help();
                details.add_help_link(description, url);
                Status::with_error_details(Code::FailedPrecondition, error.to_string(), details)
            }
            Error::RetryLater { retry_after, .. } => Status::with_error_details(
                Code::Unavailable,
                error.to_string(),
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Error::Internal(_) => {
                tracing::error!(%error, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
