//! Drift pinning: whether an upstream MCP tool may be called under the definition this
//! executor holds for it, against its connection's approved baseline in schema-watcher.
//!
//! - The approvals of a connection (watched or not, pinned or warn, the approved hash of each
//!   baseline tool) are read once with `CheckTools` and cached. A call compares the hash of the
//!   definition it is about to be sent under (its session's cached `tools/list`,
//!   [`UpstreamTool::hash`]) with the approved one: the check on the hot path is a map lookup
//!   and a string comparison, never an RPC.
//! - A tool is approved when its hash is the baseline's and schema-watcher's latest listing
//!   has that definition too: a session of another executor replica, or one that has not
//!   listed since the watcher's poll, may still hold a definition the upstream no longer has.
//! - [`Pins::follow`] keeps the cache true: it follows `WatchDrift` and forgets a connection's
//!   approvals on each of its drifts and baseline changes, and marks every entry for
//!   re-reading whenever the stream is opened (what happened while it was down is unknown).
//! - A schema-watcher outage never stops an approved tool: cached approvals are kept while the
//!   stream is down, and an entry to be re-read is used as it was while the watcher does not
//!   answer. Only approvals never read (an executor started while the watcher is down) are
//!   UNAVAILABLE: which tools are approved is then unknown, and pinning fails closed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use agentauth_grpc::client::AuthenticatedChannel;
use agentauth_proto::watcher::v1 as watcher;
use agentauth_proto::watcher::v1::schema_watcher_client::SchemaWatcherClient;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::mcp::UpstreamTool;

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
    /// Baseline tools whose latest listing differs from the approved definition.
    superseded: HashSet<String>,
}

impl Approvals {
    pub(crate) fn standing(&self, tool: &UpstreamTool) -> Standing {
        if !self.watched {
            return Standing::Unwatched;
        }
        let why = match self.baseline.get(&tool.name) {
            Some(hash) if *hash != tool.hash => "its definition differs from the approved one",
            Some(_) if self.superseded.contains(&tool.name) => {
                "the upstream now lists another definition than the approved one"
            }
            Some(_) => return Standing::Approved,
            None => "it is not in the approved baseline",
        };
        Standing::Drifted {
            pinned: self.pinned,
            why,
        }
    }

    fn of(response: watcher::CheckToolsResponse) -> Self {
        let superseded = response
            .results
            .iter()
            .filter(|check| check.status() == watcher::ToolStatus::Drifted)
            .map(|check| check.tool_name.clone())
            .collect();
        Self {
            watched: response.watched,
            pinned: response.pinned,
            baseline: response
                .results
                .into_iter()
                .filter(|check| !check.baseline_definition_hash.is_empty())
                .map(|check| (check.tool_name, check.baseline_definition_hash))
                .collect(),
            superseded,
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
    entries: HashMap<String, Entry>,
    /// Per connection, raised whenever its approvals are forgotten, and for all of them when
    /// every entry is to be re-read: an answer read before either is not cached after it.
    generations: HashMap<String, u64>,
    epoch: u64,
}

#[derive(Debug)]
struct Entry {
    approvals: Arc<Approvals>,
    /// False once the drift stream was reopened: read again, but used while the watcher
    /// does not answer.
    current: bool,
}

impl Cache {
    fn generation(&self, connection: &str) -> (u64, u64) {
        (
            self.epoch,
            self.generations
                .get(connection)
                .copied()
                .unwrap_or_default(),
        )
    }
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
            match cache.entries.get(connection) {
                Some(entry) if entry.current => return Ok(entry.approvals.clone()),
                _ => cache.generation(connection),
            }
        };
        let read = watcher
            .clone()
            .check_tools(watcher::CheckToolsRequest {
                connection_name: connection.to_owned(),
                tool_names: Vec::new(),
            })
            .await;
        let mut cache = self.cache();
        match read {
            Ok(response) => {
                let approvals = Arc::new(Approvals::of(response.into_inner()));
                if cache.generation(connection) == generation {
                    cache.entries.insert(
                        connection.to_owned(),
                        Entry {
                            approvals: approvals.clone(),
                            current: true,
                        },
                    );
                }
                Ok(approvals)
            }
            Err(status) => match cache.entries.get(connection) {
                Some(entry) => {
                    tracing::warn!(connection, error = %status.message(), "schema-watcher does not answer; the approvals read before are used");
                    Ok(entry.approvals.clone())
                }
                None => Err(Error::Unavailable {
                    dependency: "schema-watcher",
                    reason: format!(
                        "the approved tools of `{connection}` cannot be read ({}), and none are cached",
                        status.message()
                    ),
                }),
            },
        }
    }

    /// Drops the approvals of `connection`: its drift or baseline changed.
    fn forget(&self, connection: &str) {
        let mut cache = self.cache();
        *cache.generations.entry(connection.to_owned()).or_default() += 1;
        cache.entries.remove(connection);
    }

    /// Marks every entry to be read again: the drift stream was down.
    fn revalidate(&self) {
        let mut cache = self.cache();
        cache.epoch += 1;
        for entry in cache.entries.values_mut() {
            entry.current = false;
        }
    }

    /// Follows schema-watcher's drift stream until `shutdown` (see the module documentation).
    pub(crate) async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(watcher) = self.watcher.clone() else {
            return;
        };
        agentauth_grpc::client::follow_stream(
            "schema-watcher's drift stream",
            &shutdown,
            || {
                let mut watcher = watcher.clone();
                async move {
                    watcher
                        .watch_drift(watcher::WatchDriftRequest::default())
                        .await
                }
            },
            || self.revalidate(),
            |message| match changed_connection(&message) {
                Some(connection) => self.forget(connection),
                None => self.revalidate(),
            },
        )
        .await;
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
        let check = |name: &str, hash: &str, status: watcher::ToolStatus| watcher::ToolCheck {
            tool_name: name.to_owned(),
            baseline_definition_hash: hash.to_owned(),
            status: status.into(),
            ..Default::default()
        };
        Approvals::of(watcher::CheckToolsResponse {
            pinned,
            watched,
            results: vec![
                check("get_me", "sha256:aa", watcher::ToolStatus::MatchesBaseline),
                check("get_task", "sha256:dd", watcher::ToolStatus::Drifted),
                check("new_tool", "", watcher::ToolStatus::NotInBaseline),
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
        assert!(
            matches!(
                pinned.standing(&tool("get_task", "sha256:dd")),
                Standing::Drifted { pinned: true, why } if why.contains("now lists another")
            ),
            "a session still holding the approved definition is refused once the upstream changed it"
        );
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
