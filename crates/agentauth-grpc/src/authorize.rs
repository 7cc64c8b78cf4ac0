//! The one authorization layer in front of every handler: from the API key and the method
//! path alone it answers UNAUTHENTICATED, PERMISSION_DENIED or UNIMPLEMENTED, or lets the
//! request through with its [`Caller`] attached. Health and reflection are open.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::{Caller, Callers, ERROR_DOMAIN};

/// Services any client may call without a key: probes and operators' tools use them.
const OPEN: [&str; 2] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
];

/// Wraps a service in [`Authorize`].
#[derive(Debug, Clone)]
pub(crate) struct AuthorizeLayer {
    callers: Callers,
    /// Every method path the service serves behind the layer.
    known: Arc<HashSet<String>>,
}

impl AuthorizeLayer {
    pub(crate) fn new(callers: Callers, known: HashSet<String>) -> Self {
        Self {
            callers,
            known: Arc::new(known),
        }
    }

    /// The caller of a request to `path` with `authorization`, if it may call it.
    fn admit(&self, authorization: Option<&[u8]>, path: &str) -> Result<Arc<Caller>, Status> {
        let caller = self.callers.authenticate(authorization)?;
        if !self.known.contains(path) {
            return Err(Status::unimplemented(format!("no RPC at {path}")));
        }
        if !caller.may_call(path) {
            return Err(rpc_denied(caller.name(), path));
        }
        Ok(caller)
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            layer: self.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Authorize<S> {
    inner: S,
    layer: AuthorizeLayer,
}

impl<S, B> tower::Service<http::Request<B>> for Authorize<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if OPEN.iter().any(|open| path.starts_with(open)) {
            return Either::Right(self.inner.call(request));
        }
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes);
        match self.layer.admit(authorization, path) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Right(self.inner.call(request))
            }
            Err(status) => Either::Left(ready(Ok(status.into_http()))),
        }
    }
}

/// PERMISSION_DENIED for an RPC the caller holds no role or grant for.
fn rpc_denied(caller: &str, path: &str) -> Status {
    let rpc = path.trim_start_matches('/');
    Status::with_error_details(
        Code::PermissionDenied,
        format!(
            "caller `{caller}` may not call {rpc}: grant it a role that includes it, or name it \
             in the caller's `rpcs`"
        ),
        ErrorDetails::with_error_info(
            "RPC_NOT_ALLOWED",
            ERROR_DOMAIN,
            HashMap::from([
                ("caller".to_owned(), caller.to_owned()),
                ("rpc".to_owned(), rpc.to_owned()),
            ]),
        ),
    )
}
