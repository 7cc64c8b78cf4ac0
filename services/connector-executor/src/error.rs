//! connector-executor's errors and their one mapping to gRPC status codes.

use tonic::Status;

/// Everything an connector-executor RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller is not bound to what the request touches.
    #[error(transparent)]
    Denied(#[from] agentauth_grpc::Denied),
    /// The RPC is part of the contract but its issue has not landed yet.
    #[error("ConnectorExecutor.{rpc} is not implemented yet")]
    NotImplemented { rpc: &'static str },
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Denied(denied) => denied.into(),
            Error::NotImplemented { .. } => Status::unimplemented(error.to_string()),
        }
    }
}
