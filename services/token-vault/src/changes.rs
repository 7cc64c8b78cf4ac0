//! `WatchAccountChanges`: the change log (`records`: one row per disconnect, tenant deletion,
//! replaced credential and account that needs a new consent) streamed to token readers, so
//! every connector-executor replica drops what it caches for an account at once.
//!
//! - One tailer per replica watches the log's head: woken at once by a change committed on
//!   this replica, and polling every `poll_interval` for the others' (the log is in the
//!   shared database).
//! - Each stream reads the log itself from its own cursor, so a subscriber that reconnects
//!   with its last cursor misses nothing, whichever replica it reaches. Sequences commit in
//!   order without gaps (`records::log_change`), so reading `sequence > cursor` never skips
//!   one that commits later.
//! - A cursor older than what the log still holds (changes are kept for `retention`), or one
//!   this log never issued, gets `reset`: the subscriber drops everything.
//! - A message without changes goes out every `heartbeat`, so a subscriber can tell a quiet
//!   stream from a dead one.

use std::sync::Arc;
use std::time::Duration;

use agentauth_grpc::Caller;
use agentauth_proto::vault::v1 as pb;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::Error;
use crate::records::{Change, ChangeKind, Store};

/// The most changes one message carries.
const PAGE: usize = 500;

/// `[changes]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How often the log is read for changes made on other replicas.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The longest a stream stays silent.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// How long changes are kept for subscribers that reconnect.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(250),
            heartbeat: Duration::from_secs(10),
            retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// The log's head as this replica knows it, and the streams' settings.
#[derive(Debug)]
pub struct Changes {
    records: Store,
    head: watch::Sender<u64>,
    config: Config,
}

impl Changes {
    pub fn new(records: Store, config: Config) -> Arc<Self> {
        Arc::new(Self {
            records,
            head: watch::Sender::new(0),
            config,
        })
    }

    /// Follows the log's head until `shutdown`.
    pub async fn tail(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            match self.records.change_extent().await {
                Ok((_, head)) => {
                    self.head.send_if_modified(|known| {
                        let newer = head > *known;
                        *known = head.max(*known);
                        newer
                    });
                }
                Err(error) => tracing::warn!(%error, "cannot read the account change log"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.records.changed() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// The stream for `caller` (only its tenants' changes), resuming after `after`.
    pub fn stream(
        self: Arc<Self>,
        caller: Arc<Caller>,
        after: Option<u64>,
    ) -> impl futures::Stream<Item = Result<pb::WatchAccountChangesResponse, Status>> + Send {
        let state = Follow {
            changes: self.clone(),
            caller,
            cursor: after,
            started: false,
            head: self.head.subscribe(),
            failed: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            if state.failed {
                return None;
            }
            let message = state.next().await;
            state.failed = message.is_err();
            Some((message.map_err(Status::from), state))
        })
    }
}

/// One subscriber's position in the log.
struct Follow {
    changes: Arc<Changes>,
    caller: Arc<Caller>,
    /// The last sequence the subscriber has been told of; `None` until the first message
    /// when it asked to start from now.
    cursor: Option<u64>,
    started: bool,
    head: watch::Receiver<u64>,
    failed: bool,
}

impl Follow {
    async fn next(&mut self) -> Result<pb::WatchAccountChangesResponse, Error> {
        if !self.started {
            self.started = true;
            return self.first().await;
        }
        let cursor = self.cursor.unwrap_or_default();
        if *self.head.borrow_and_update() <= cursor {
            // Nothing new known: wait for the tailer, or send a heartbeat.
            let heartbeat = self.changes.config.heartbeat;
            tokio::select! {
                _ = self.head.changed() => {}
                () = tokio::time::sleep(heartbeat) => {}
            }
        }
        self.page(cursor).await
    }

    /// The first message: where the subscriber stands, and what it missed.
    async fn first(&mut self) -> Result<pb::WatchAccountChangesResponse, Error> {
        let (oldest, head) = self.changes.records.change_extent().await?;
        let Some(after) = self.cursor else {
            self.cursor = Some(head);
            return Ok(message(Vec::new(), head, false));
        };
        let kept_from = oldest.unwrap_or(head + 1);
        if after > head || after + 1 < kept_from {
            self.cursor = Some(head);
            return Ok(message(Vec::new(), head, true));
        }
        self.page(after).await
    }

    /// The changes after `cursor` (one page), as the next message.
    async fn page(&mut self, cursor: u64) -> Result<pb::WatchAccountChangesResponse, Error> {
        let changes = self.changes.records.changes_after(cursor, PAGE).await?;
        let next = changes.last().map_or(cursor, |c| c.sequence);
        self.cursor = Some(next);
        let visible = changes
            .iter()
            .filter(|c| self.caller.check_tenant(&c.tenant).is_ok())
            .map(to_wire)
            .collect();
        Ok(message(visible, next, false))
    }
}

fn message(
    changes: Vec<pb::AccountChange>,
    cursor: u64,
    reset: bool,
) -> pb::WatchAccountChangesResponse {
    pb::WatchAccountChangesResponse {
        changes,
        cursor,
        reset,
    }
}

fn to_wire(change: &Change) -> pb::AccountChange {
    pb::AccountChange {
        sequence: change.sequence,
        tenant: change.tenant.clone(),
        connection_name: change.connection_name.clone(),
        identifier: change.identifier.clone(),
        kind: match change.kind {
            ChangeKind::CredentialReplaced => pb::AccountChangeKind::CredentialReplaced,
            ChangeKind::NeedsReauth => pb::AccountChangeKind::NeedsReauth,
            ChangeKind::Revoked => pb::AccountChangeKind::Revoked,
            ChangeKind::TenantDeleted => pb::AccountChangeKind::TenantDeleted,
        }
        .into(),
        credential_version: change.credential_version,
        changed_at: Some(prost_types::Timestamp {
            seconds: change.changed_at.timestamp(),
            nanos: i32::try_from(change.changed_at.timestamp_subsec_nanos()).unwrap_or(0),
        }),
    }
}
