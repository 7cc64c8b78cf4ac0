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
    #[error("unknown connection `{name}`{}", did_you_mean(.suggestions))]
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
    /// The RPC is part of the contract but its issue has not landed yet.
    #[error("TokenVault.{rpc} is not implemented yet")]
    NotImplemented { rpc: &'static str },
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
            Error::NotImplemented { .. } => Status::unimplemented(error.to_string()),
        }
    }
}

fn did_you_mean(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        names => format!(
            "; did you mean {}?",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}
