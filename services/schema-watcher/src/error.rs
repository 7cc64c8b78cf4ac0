//! schema-watcher's errors and their one mapping to gRPC status codes.

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::store;

/// Everything a schema-watcher RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller is not bound to what the request touches.
    #[error(transparent)]
    Denied(#[from] agentauth_grpc::Denied),
    /// A request field is malformed; nothing changed.
    #[error("{field}: {description}")]
    InvalidArgument {
        field: &'static str,
        description: String,
    },
    /// A cursor past anything this service has written.
    #[error("{0}")]
    OutOfRange(String),
    /// The connection has no watch, or the snapshot or baseline does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The database or the audit emitter cannot take the request now.
    #[error("{dependency} is unavailable: {reason}")]
    Unavailable {
        dependency: &'static str,
        reason: String,
    },
    /// Stored state this version cannot read.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<store::Error> for Error {
    fn from(error: store::Error) -> Self {
        match error {
            store::Error::Database(error) => Self::Unavailable {
                dependency: "the database",
                reason: error.to_string(),
            },
            store::Error::Corrupt(reason) => Self::Internal(reason),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Denied(denied) => denied.into(),
            Error::InvalidArgument {
                field,
                ref description,
            } => Status::with_error_details(
                tonic::Code::InvalidArgument,
                error.to_string(),
                ErrorDetails::with_bad_request_violation(field, description.clone()),
            ),
            Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::OutOfRange(_) => Status::out_of_range(error.to_string()),
            Error::Unavailable { .. } => Status::unavailable(error.to_string()),
            Error::Internal(_) => {
                tracing::error!(%error, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
