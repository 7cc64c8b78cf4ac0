//! Outbound gRPC: every call carries this service's API key and the current trace context.

use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::auth::ApiKey;

/// A channel whose calls authenticate as one caller and propagate trace context.
pub type AuthenticatedChannel = InterceptedService<Channel, ClientInterceptor>;

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid endpoint `{url}`: {source}")]
    Endpoint {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("API key is not valid header text")]
    Key,
    #[error("{setting} {}: {source}", .path.display())]
    KeyFile {
        setting: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// [`channel`] to `url` with the key read from `key_file` when one is configured; `setting`
/// names that configuration (e.g. `token_vault.api_key_file`) in the error.
pub fn channel_with_key_file(
    url: &str,
    key_file: Option<&std::path::Path>,
    setting: &str,
) -> Result<AuthenticatedChannel, Error> {
    let key = key_file
        .map(|path| {
            ApiKey::read_file(path).map_err(|source| Error::KeyFile {
                setting: setting.to_owned(),
                path: path.to_owned(),
                source,
            })
        })
        .transpose()?;
    channel(url, key.as_ref())
}

/// A lazily connecting channel to `url` that sends `key` (when given) on every call.
///
/// Connecting lazily lets a service start while its peers are still starting; calls made
/// before a peer is up fail with UNAVAILABLE and are retried by whoever makes them.
pub fn channel(url: &str, key: Option<&ApiKey>) -> Result<AuthenticatedChannel, Error> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|source| Error::Endpoint {
            url: url.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    let authorization = key
        .map(|k| {
            let mut value = AsciiMetadataValue::try_from(format!("Bearer {}", k.expose()))
                .map_err(|_| Error::Key)?;
            value.set_sensitive(true);
            Ok(value)
        })
        .transpose()?;
    Ok(InterceptedService::new(
        endpoint.connect_lazy(),
        ClientInterceptor { authorization },
    ))
}

/// Adds `authorization` and `traceparent` to each outbound request.
#[derive(Clone)]
pub struct ClientInterceptor {
    authorization: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for ClientInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientInterceptor").finish_non_exhaustive()
    }
}

impl Interceptor for ClientInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        inject_trace(request.metadata_mut());
        Ok(request)
    }
}

fn inject_trace(metadata: &mut MetadataMap) {
    let mut headers = std::mem::take(metadata).into_headers();
    crate::trace::inject_current(&mut headers);
    *metadata = MetadataMap::from_headers(headers);
}

/// The longest wait between two attempts of [`follow_stream`] to open its stream.
const MAX_REOPEN_DELAY: Duration = Duration::from_secs(5);

/// Follows a server stream until `shutdown`: opens it with `open`, calls `on_open` each time
/// it is open, hands each message to `on_message`, and after a failure or its end opens it
/// again, waiting 100 ms, doubling up to 5 s, while opening fails. `what` names the stream in
/// the log.
pub async fn follow_stream<M, F, Fut>(
    what: &str,
    shutdown: &tokio_util::sync::CancellationToken,
    mut open: F,
    mut on_open: impl FnMut(),
    mut on_message: impl FnMut(M),
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<tonic::Streaming<M>>, Status>>,
{
    let mut delay = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            opened = open() => opened,
        };
        match opened {
            Ok(stream) => {
                on_open();
                delay = Duration::from_millis(100);
                let mut stream = stream.into_inner();
                loop {
                    let message = tokio::select! {
                        () = shutdown.cancelled() => return,
                        message = stream.message() => message,
                    };
                    match message {
                        Ok(Some(message)) => on_message(message),
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(error = %status.message(), "{what} failed; opening it again");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::debug!(error = %status.message(), retry_in = ?delay, "{what} cannot be opened");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => delay = (delay * 2).min(MAX_REOPEN_DELAY),
        }
    }
}
