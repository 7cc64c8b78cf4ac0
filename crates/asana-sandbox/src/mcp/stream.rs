//! Long-lived SSE responses: a session's GET stream and a `subscriptions/listen` stream. A
//! spawned task writes events into one end of an in-memory pipe and the response body reads
//! the other, so a client that goes away shows up as a failed write, and the sandbox's
//! shutdown ends every stream (graceful shutdown would otherwise wait for them forever).

use std::io;
use std::time::Duration;

use axum::body::Body;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::broadcast;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use super::protocol::sse_event;

/// How often an idle stream sends a comment, so proxies do not time it out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The writing end of a streamed SSE body.
#[derive(Debug)]
pub struct Writer(DuplexStream);

impl Writer {
    /// Sends one JSON-RPC message as an event.
    pub async fn message(&mut self, message: &Value) -> io::Result<()> {
        self.0.write_all(sse_event(message).as_bytes()).await
    }

    async fn keep_alive(&mut self) -> io::Result<()> {
        self.0.write_all(b": keep-alive\n\n").await
    }
}

/// A response body fed by `task`, which runs on its own and gets the writing end; the body
/// ends when the task returns.
pub fn body<F, Fut>(task: F) -> Body
where
    F: FnOnce(Writer) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (writer, reader) = tokio::io::duplex(64 * 1024);
    tokio::spawn(task(Writer(writer)));
    Body::from_stream(ReaderStream::new(reader))
}

/// Why a stream stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `stop` was cancelled (the session ended or a newer stream replaced this one).
    Stopped,
    /// The sandbox is shutting down.
    Shutdown,
    /// The client went away.
    Gone,
}

/// The next change of the tool list, or never when the client did not ask for them.
async fn next_change(changes: &mut Option<broadcast::Receiver<()>>) -> bool {
    match changes {
        Some(receiver) => match receiver.recv().await {
            // A lagging receiver missed changes: one notification covers them all.
            Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => true,
            Err(broadcast::error::RecvError::Closed) => false,
        },
        None => std::future::pending().await,
    }
}

/// Writes `notification` on every change of the tool list (when `changes` is given) and
/// keep-alive comments in between, until `stop`, `shutdown` or the client leaves.
pub async fn tool_changes(
    out: &mut Writer,
    mut changes: Option<broadcast::Receiver<()>>,
    notification: &Value,
    stop: &CancellationToken,
    shutdown: &CancellationToken,
) -> End {
    let start = tokio::time::Instant::now() + KEEP_ALIVE;
    let mut keep_alive = tokio::time::interval_at(start, KEEP_ALIVE);
    loop {
        let written = tokio::select! {
            () = stop.cancelled() => return End::Stopped,
            () = shutdown.cancelled() => return End::Shutdown,
            _ = keep_alive.tick() => out.keep_alive().await,
            changed = next_change(&mut changes) => {
                if !changed {
                    return End::Stopped;
                }
                out.message(notification).await
            }
        };
        if written.is_err() {
            return End::Gone;
        }
    }
}
