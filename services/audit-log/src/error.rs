//! audit-log's errors and their one mapping to gRPC status codes.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::store;

/// Everything an audit-log RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller is not bound to a tenant the request touches.
    #[error(transparent)]
    Denied(#[from] agentauth_grpc::Denied),
    /// An event names another service as its actor than the caller that sent it.
    #[error(
        "caller `{caller}` may append events only in its own name; events[{index}] names `{claimed}`"
    )]
    ForgedActor {
        caller: String,
        claimed: String,
        index: usize,
    },
    /// The request is malformed; nothing was changed.
    #[error("invalid request: {}", .0.iter().map(|(f, d)| format!("{f}: {d}")).collect::<Vec<_>>().join("; "))]
    InvalidArgument(Vec<(String, String)>),
    /// The database failed or holds a row that no longer parses.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// A request error about one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![(field.into(), description.into())])
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Denied(denied) => denied.into(),
            Error::ForgedActor {
                ref caller,
                ref claimed,
                ..
            } => {
                let metadata = std::collections::HashMap::from([
                    ("caller".to_owned(), caller.clone()),
                    ("actor".to_owned(), claimed.clone()),
                ]);
                Status::with_error_details(
                    Code::PermissionDenied,
                    error.to_string(),
                    ErrorDetails::with_error_info(
                        "ACTOR_MISMATCH",
                        agentauth_grpc::auth::ERROR_DOMAIN,
                        metadata,
                    ),
                )
            }
            Error::InvalidArgument(violations) => {
                let message = Error::InvalidArgument(violations.clone()).to_string();
                let violations: Vec<FieldViolation> = violations
                    .into_iter()
                    .map(|(field, description)| FieldViolation::new(field, description))
                    .collect();
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request(violations),
                )
            }
            Error::Store(store::Error::Corrupt(detail)) => {
                tracing::error!(%detail, "corrupt audit data");
                Status::data_loss(format!("stored audit data is corrupt: {detail}"))
            }
            Error::Store(store::Error::Database(error)) if is_unavailable(&error) => {
                tracing::warn!(%error, "database unavailable");
                Status::unavailable("the audit database is unavailable; retry later")
            }
            Error::Store(error) => {
                tracing::error!(%error, "database error");
                Status::internal("audit database error")
            }
        }
    }
}

fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    ) || error.as_database_error().is_some_and(|e| {
        // SQLite's "database is locked" after the busy timeout, PostgreSQL's serialisation and
        // connection-class failures: all transient.
        matches!(
            e.code().as_deref(),
            Some("5" | "40001" | "40P01" | "57P01" | "57P03")
        ) || e.code().is_some_and(|c| c.starts_with("08"))
    })
}
