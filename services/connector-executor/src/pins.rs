//! Drift pinning: whether an upstream MCP tool may be called under the definition this
//! executor holds for it, against its connection's approved baseline in schema-watcher.
//!
//! - The approvals of a connection (watched or not, pinned or warn, the approved hash of each
//!   baseline tool) are read once with `CheckTools` and cached. A call compares the hash of the
//!   definition it is about to be sent under (its session's cached `tools/list`,
//!   [`UpstreamTool::hash`]) with the approved one: the check on the hot path is a map lookup
//!   and a string comparison, never an RPC.
//! - [`Pins::follow`] keeps the cache true: it follows `WatchDrift` and forgets a connection's
//!   approvals on each of its drifts and baseline changes, and forgets everything whenever the
//!   stream is opened (what happened while it was down is unknown).
//! - A schema-watcher outage never stops an approved tool: cached approvals are kept while the
//!   stream is down. Only approvals never read (an executor started while the watcher is down)
//!   are UNAVAILABLE: which tools are approved is then unknown, and pinning fails closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentauth_grpc::client::AuthenticatedChannel;
use agentauth_proto::watcher::v1 as watcher;
use agentauth_proto::watcher::v1::schema_watcher_client::SchemaWatcherClient;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::mcp::UpstreamTool;

/// The longest wait before the drift stream is opened again.
const MAX_RECONNECT: Duration = Duration::from_secs(5);

/// How a tool stands against its connection's approved baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// No watch, or no schema-watcher: nothing is pinned.
    Unwatched,
    /// The definition equals the approved one.
    Approved,
    /// The definition differs or is not approved; `pinned` refuses the call.
    Drifted { pinned: bool, why: &'static str },
}

/// One connection's approvals as `CheckTools` gave them.
#[derive(Debug, Default)]
pub(crate) struct Approvals {
    watched: bool,
    pinned: bool,
    /// The approved definition hash of each baseline tool.
    baseline: HashMap<String, String>,
}

impl Approvals {
    pub(crate) fn standing(&self, tool: &UpstreamTool) -> Standing {
        if !self.watched {
            return Standing::Unwatched;
        }
        let why = match self.baseline.get(&tool.name) {
            Some(hash) if *hash == tool.hash => return Standing::Approved,
            Some(_) => "its definition differs from the approved one",
            None => "it is not in the approved baseline",
        };
        Standing::Drifted {
            pinned: self.pinned,
            why,
        }
    }

    fn of(response: watcher::CheckToolsResponse) -> Self {
        Self {
            watched: response.watched,
            pinned: response.pinned,
            baseline: response
                .results
                .into_iter()
                .filter(|check| !check.baseline_definition_hash.is_empty())
                .map(|check| (check.tool_name, check.baseline_definition_hash))
                .collect(),
        }
    }
}

/// The approvals of every connection called so far, and the client that reads them.
#[derive(Debug)]
pub(crate) struct Pins {
    watcher: Option<SchemaWatcherClient<AuthenticatedChannel>>,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    approvals: HashMap<String, Arc<Approvals>>,
    /// Raised by every forgetting, so an answer read before one is not cached after it.
    generation: u64,
}

impl Pins {
    /// Pinning through schema-watcher at `watcher`, or off (`None`).
    pub(crate) fn new(watcher: Option<SchemaWatcherClient<AuthenticatedChannel>>) -> Self {
        Self {
            watcher,
            cache: Mutex::new(Cache::default()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The approvals of `connection`: cached, or read from schema-watcher. With pinning off,
    /// every connection is unwatched.
    pub(crate) async fn approvals(&self, connection: &str) -> Result<Arc<Approvals>, Error> {
        let Some(watcher) = &self.watcher else {
            return Ok(Arc::new(Approvals::default()));
        };
        let generation = {
            let cache = self.cache();
            if let Some(approvals) = cache.approvals.get(connection) {
                return Ok(approvals.clone());
            }
            cache.generation
        };
        let response = watcher
            .clone()
            .check_tools(watcher::CheckToolsRequest {
                connection_name: connection.to_owned(),
                tool_names: Vec::new(),
            })
            .await
            .map_err(|status| Error::Unavailable {
                dependency: "schema-watcher",
                reason: format!(
                    "the approved tools of `{connection}` cannot be read ({}), and none are cached",
                    status.message()
                ),
            })?
            .into_inner();
        let approvals = Arc::new(Approvals::of(response));
        let mut cache = self.cache();
        if cache.generation == generation {
            cache
                .approvals
                .insert(connection.to_owned(), approvals.clone());
        }
        Ok(approvals)
    }

    fn forget(&self, connection: Option<&str>) {
        let mut cache = self.cache();
        cache.generation += 1;
        match connection {
            Some(name) => {
                cache.approvals.remove(name);
            }
            None => cache.approvals.clear(),
        }
    }

    /// Follows schema-watcher's drift stream until `shutdown` (see the module documentation).
    pub(crate) async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(mut watcher) = self.watcher.clone() else {
            return;
        };
        let mut delay = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let opened = tokio::select! {
                () = shutdown.cancelled() => return,
                opened = watcher.watch_drift(watcher::WatchDriftRequest::default()) => opened,
            };
            match opened {
                Ok(stream) => {
                    self.forget(None);
                    delay = Duration::from_millis(100);
                    let mut stream = stream.into_inner();
                    loop {
                        let message = tokio::select! {
                            () = shutdown.cancelled() => return,
                            message = stream.next() => message,
                        };
                        match message {
                            Some(Ok(message)) => self.forget(changed_connection(&message)),
                            Some(Err(status)) => {
                                tracing::warn!(error = %status.message(), "schema-watcher's drift stream failed; cached approvals are kept");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(status) => {
                    tracing::debug!(error = %status.message(), retry_in = ?delay, "schema-watcher's drift stream cannot be opened");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => delay = (delay * 2).min(MAX_RECONNECT),
            }
        }
    }
}

/// The connection a drift stream message is about (`None`: unknown, forget every one).
fn changed_connection(message: &watcher::WatchDriftResponse) -> Option<&str> {
    message
        .drift
        .as_ref()
        .map(|d| d.connection_name.as_str())
        .or_else(|| {
            message
                .baseline_approved
                .as_ref()
                .map(|b| b.connection_name.as_str())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, hash: &str) -> UpstreamTool {
        UpstreamTool {
            name: name.to_owned(),
            definition: serde_json::Map::new(),
            hash: hash.to_owned(),
            title: None,
            description: String::new(),
            input_schema: serde_json::json!({"type": "object"}),
            output_schema: None,
            read_only: true,
            destructive: false,
            idempotent: true,
            open_world: false,
        }
    }

    fn approvals(watched: bool, pinned: bool) -> Approvals {
        Approvals::of(watcher::CheckToolsResponse {
            pinned,
            watched,
            results: vec![
                watcher::ToolCheck {
                    tool_name: "get_me".to_owned(),
                    baseline_definition_hash: "sha256:aa".to_owned(),
                    ..Default::default()
                },
                watcher::ToolCheck {
                    tool_name: "new_tool".to_owned(),
                    ..Default::default()
                },
            ],
        })
    }

    #[test]
    fn a_tool_is_approved_only_under_its_approved_definition() {
        let pinned = approvals(true, true);
        assert_eq!(
            pinned.standing(&tool("get_me", "sha256:aa")),
            Standing::Approved
        );
        assert!(matches!(
            pinned.standing(&tool("get_me", "sha256:bb")),
            Standing::Drifted { pinned: true, why } if why.contains("differs")
        ));
        assert!(matches!(
            pinned.standing(&tool("new_tool", "sha256:cc")),
            Standing::Drifted { pinned: true, why } if why.contains("not in the approved")
        ));
        assert!(matches!(
            approvals(true, false).standing(&tool("get_me", "sha256:bb")),
            Standing::Drifted { pinned: false, .. }
        ));
        assert_eq!(
            approvals(false, false).standing(&tool("anything", "sha256:00")),
            Standing::Unwatched
        );
    }

    #[tokio::test]
    async fn without_a_watcher_every_connection_is_unwatched() {
        let pins = Pins::new(None);
        let approvals = pins.approvals("asana-mcp").await.expect("no RPC");
        assert_eq!(
            approvals.standing(&tool("get_me", "sha256:aa")),
            Standing::Unwatched
        );
    }
}
