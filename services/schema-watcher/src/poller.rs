//! The polls: each watch lists its connection's tools through connector-executor
//! (`ListUpstreamTools`, as the watch's probe account) every `interval` plus up to `jitter`
//! (after a failed poll sooner: 1 s, doubling up to the interval), and at once (at most every `min_gap`) when connector-executor hears the upstream announce a
//! changed tool list (`WatchUpstreamChanges`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agentauth_grpc::client::AuthenticatedChannel;
use agentauth_proto::executor::v1 as executor;
use agentauth_proto::executor::v1::connector_executor_client::ConnectorExecutorClient;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic_types::StatusExt as _;

use crate::watch::{Failure, Listing, WatchConfig, Watcher};

/// connector-executor, as the watcher calls it.
pub type Executor = ConnectorExecutorClient<AuthenticatedChannel>;

/// How polls are timed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The longest one listing may take.
    pub timeout: Duration,
    /// The shortest time between two polls of one watch (early polls included).
    pub min_gap: Duration,
}

/// Runs every watch's polls, and the follower of upstream changes, until `shutdown`.
pub async fn run(
    watcher: Arc<Watcher>,
    client: Executor,
    timing: Timing,
    shutdown: CancellationToken,
) {
    let early: BTreeMap<String, Arc<Notify>> = watcher
        .watches()
        .map(|w| (w.connection.clone(), Arc::new(Notify::new())))
        .collect();
    let mut tasks = Vec::new();
    for watch in watcher.watches() {
        tasks.push(tokio::spawn(poll(
            watcher.clone(),
            client.clone(),
            watch.clone(),
            early[&watch.connection].clone(),
            timing,
            shutdown.clone(),
        )));
    }
    if !early.is_empty() {
        tasks.push(tokio::spawn(follow_changes(client, early, shutdown)));
    }
    for task in tasks {
        if let Err(error) = task.await {
            tracing::error!(%error, "a poller panicked");
        }
    }
}

async fn poll(
    watcher: Arc<Watcher>,
    client: Executor,
    watch: WatchConfig,
    early: Arc<Notify>,
    timing: Timing,
    shutdown: CancellationToken,
) {
    let mut failures = 0;
    loop {
        let listing = list(client.clone(), &watch, timing.timeout).await;
        if let Err(error) = watcher.observe(&watch, listing, &mut failures).await {
            tracing::warn!(connection = %watch.connection, %error, "a poll's result could not be stored");
        }
        let wait = next_poll(watch.interval, failures) + jitter(watch.jitter);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = early.notified() => {
                tracing::debug!(connection = %watch.connection, "the upstream announced a changed tool list");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(timing.min_gap) => {}
                }
            }
        }
    }
}

/// Every page of the connection's tools, as the watch's probe account.
async fn list(mut client: Executor, watch: &WatchConfig, timeout: Duration) -> Listing {
    let mut request = tonic::Request::new(executor::ListUpstreamToolsRequest {
        tenant: watch.tenant.clone(),
        connection_name: watch.connection.clone(),
        identifier: watch.identifier.clone(),
    });
    request.set_timeout(timeout);
    let response = client
        .list_upstream_tools(request)
        .await
        .map_err(|status| {
            let reason = status
                .get_details_error_info()
                .map(|info| format!(" ({})", info.reason))
                .unwrap_or_default();
            Failure {
                reason: format!("connector-executor answered {:?}{reason}", status.code()),
                detail: status.message().to_owned(),
            }
        })?
        .into_inner();
    response
        .tools
        .iter()
        .map(|tool| {
            serde_json::from_str::<Value>(&tool.definition_json).map_err(|e| Failure {
                reason: "a listed tool is not JSON".to_owned(),
                detail: format!("tool `{}`: {e}", tool.name),
            })
        })
        .collect()
}

/// The time to the next poll: the interval, or after `failures` failed polls in a row a
/// retry that starts at one second and doubles up to the interval.
fn next_poll(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let retry = Duration::from_secs(1).saturating_mul(1 << failures.saturating_sub(1).min(16));
    retry.min(interval)
}

/// A uniformly random duration up to `max`.
fn jitter(max: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    if max.is_zero() || getrandom::fill(&mut bytes).is_err() {
        return Duration::ZERO;
    }
    let fraction = u64::from_le_bytes(bytes) as f64 / u64::MAX as f64;
    max.mul_f64(fraction)
}

/// Follows connector-executor's announcements of changed upstream tool lists and wakes the
/// watches of those connections.
async fn follow_changes(
    client: Executor,
    early: BTreeMap<String, Arc<Notify>>,
    shutdown: CancellationToken,
) {
    agentauth_grpc::client::follow_stream(
        "connector-executor's change stream",
        &shutdown,
        || {
            let mut client = client.clone();
            async move {
                client
                    .watch_upstream_changes(executor::WatchUpstreamChangesRequest::default())
                    .await
            }
        },
        || {},
        |change: executor::WatchUpstreamChangesResponse| {
            if let Some(notify) = early.get(&change.connection_name) {
                notify.notify_one();
            }
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_polls_are_retried_sooner_up_to_the_interval() {
        let interval = Duration::from_secs(60);
        assert_eq!(next_poll(interval, 0), interval);
        assert_eq!(next_poll(interval, 1), Duration::from_secs(1));
        assert_eq!(next_poll(interval, 3), Duration::from_secs(4));
        assert_eq!(next_poll(interval, 30), interval);
        assert_eq!(
            next_poll(Duration::from_millis(300), 2),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..1000 {
            assert!(jitter(Duration::from_secs(2)) <= Duration::from_secs(2));
        }
    }
}
