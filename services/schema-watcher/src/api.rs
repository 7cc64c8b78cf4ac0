//! The `agentauth.watcher.v1.SchemaWatcher` gRPC API.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use agentauth_grpc::Caller;
use agentauth_proto::watcher::v1 as pb;
use serde_json::Value;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::store::{DriftRow, FeedEntry, Kind, Stored};
use crate::watch::Watcher;

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 500;
/// Feed entries read at once by a stream.
const FEED_BATCH: i64 = 100;
/// How long a stream waits for a wake-up before it reads the feed anyway (another replica may
/// have written it).
const FEED_RECHECK: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(crate) struct SchemaWatcherApi {
    pub watcher: Arc<Watcher>,
}

/// The most tools one `CheckTools` names.
const MAX_CHECKED_TOOLS: usize = 1000;

impl SchemaWatcherApi {
    /// Whether `caller` may see `connection`: it is bound to the connection and, when the
    /// connection is watched, to the tenant of its probe account (whose listings the
    /// snapshots are).
    fn bound(&self, caller: &Caller, connection: &str) -> Result<(), Error> {
        if connection.trim().is_empty() {
            return Err(Error::InvalidArgument {
                field: "connection_name",
                description: "is required".to_owned(),
            });
        }
        caller.check_connection(connection)?;
        if let Some(watch) = self.watcher.watch(connection) {
            caller.check_tenant(&watch.tenant)?;
        }
        Ok(())
    }

    /// The watched connections `caller` may see: `only` (checked), or all it is bound to.
    fn visible(&self, caller: &Caller, only: Option<&String>) -> Result<Vec<String>, Error> {
        match only {
            Some(name) => {
                self.bound(caller, name)?;
                Ok(vec![name.clone()])
            }
            None => Ok(self
                .watcher
                .watches()
                .map(|w| w.connection.clone())
                .filter(|name| self.bound(caller, name).is_ok())
                .collect()),
        }
    }
}

fn micros(us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: i32::try_from(us.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

fn severity(severity: mcp_drift::Severity) -> pb::Severity {
    match severity {
        mcp_drift::Severity::NonBreaking => pb::Severity::NonBreaking,
        mcp_drift::Severity::Breaking => pb::Severity::Breaking,
        mcp_drift::Severity::Risk => pb::Severity::Risk,
    }
}

pub(crate) fn drift_message(row: &DriftRow) -> pb::Drift {
    let kind = match row.kind {
        Kind::Added => pb::DriftKind::Added,
        Kind::Removed => pb::DriftKind::Removed,
        Kind::Changed => pb::DriftKind::Changed,
        Kind::EmptyListing => pb::DriftKind::EmptyListing,
        Kind::UpstreamFailing => pb::DriftKind::UpstreamFailing,
    };
    pb::Drift {
        drift_id: row.id.clone(),
        connection_name: row.connection.clone(),
        tool_name: row.tool.clone(),
        kind: kind.into(),
        severity: severity(row.severity).into(),
        changes: row
            .changes
            .iter()
            .map(|c| pb::SchemaChange {
                path: c.path.clone(),
                description: c.description.clone(),
                severity: severity(c.severity).into(),
            })
            .collect(),
        detected_at: Some(micros(row.detected_at_us)),
        snapshot_id: row.snapshot_id.clone(),
        baseline_snapshot_id: row.baseline_snapshot_id.clone(),
        baseline_definition_hash: row.baseline_hash.clone(),
        definition_hash: row.definition_hash.clone(),
        approved: row.approved,
        superseded: row.superseded,
    }
}

fn snapshot_message(stored: &Stored, baseline: Option<(&str, &str)>) -> pb::Snapshot {
    let field = |definition: &serde_json::Map<String, Value>, key: &str| {
        definition
            .get(key)
            .map(Value::to_string)
            .unwrap_or_default()
    };
    let is_baseline = baseline.is_some_and(|(id, _)| id == stored.id);
    pb::Snapshot {
        snapshot_id: stored.id.clone(),
        connection_name: stored.connection.clone(),
        taken_at: Some(micros(stored.taken_at_us)),
        tools: stored
            .snapshot
            .tools
            .values()
            .map(|tool| pb::ToolDefinition {
                name: tool.name.clone(),
                description: tool
                    .definition
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                input_schema_json: field(&tool.definition, "inputSchema"),
                output_schema_json: field(&tool.definition, "outputSchema"),
                annotations_json: field(&tool.definition, "annotations"),
                definition_hash: tool.hash.clone(),
                definition_json: Value::Object(tool.definition.clone()).to_string(),
            })
            .collect(),
        snapshot_hash: stored.snapshot.hash.clone(),
        is_baseline,
        approved_by: baseline
            .filter(|_| is_baseline)
            .map(|(_, by)| by.to_owned())
            .unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl pb::schema_watcher_server::SchemaWatcher for SchemaWatcherApi {
    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::GetSnapshotResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        self.bound(caller, &r.connection_name)?;
        let store = &self.watcher.store;
        let baseline = store
            .baseline(&r.connection_name)
            .await
            .map_err(Error::from)?;
        let stored = match &r.selector {
            Some(pb::get_snapshot_request::Selector::SnapshotId(id)) => store
                .snapshot(&r.connection_name, id)
                .await
                .map_err(Error::from)?,
            Some(pb::get_snapshot_request::Selector::Alias(alias)) => {
                match pb::SnapshotAlias::try_from(*alias) {
                    Ok(pb::SnapshotAlias::Latest) => store
                        .latest(&r.connection_name)
                        .await
                        .map_err(Error::from)?,
                    Ok(pb::SnapshotAlias::Baseline) => baseline.as_ref().map(|b| b.stored.clone()),
                    _ => {
                        return Err(Error::InvalidArgument {
                            field: "alias",
                            description: "must be SNAPSHOT_ALIAS_LATEST or SNAPSHOT_ALIAS_BASELINE"
                                .to_owned(),
                        }
                        .into());
                    }
                }
            }
            None => {
                return Err(Error::InvalidArgument {
                    field: "selector",
                    description: "is required: an alias or a snapshot_id".to_owned(),
                }
                .into());
            }
        };
        let stored = stored.ok_or_else(|| {
            Error::NotFound(format!(
                "connection `{}` has no such snapshot",
                r.connection_name
            ))
        })?;
        let baseline = baseline
            .as_ref()
            .map(|b| (b.stored.id.as_str(), b.approved_by.as_str()));
        Ok(Response::new(pb::GetSnapshotResponse {
            snapshot: Some(snapshot_message(&stored, baseline)),
        }))
    }

    async fn list_drift(
        &self,
        request: Request<pb::ListDriftRequest>,
    ) -> Result<Response<pb::ListDriftResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        let connections = self.visible(caller, r.connection_name.as_ref())?;
        let size = match r.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let before = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        if before.is_some_and(|t| uuid::Uuid::parse_str(t).is_err()) {
            return Err(Error::InvalidArgument {
                field: "page_token",
                description: "is not a token from a previous page".to_owned(),
            }
            .into());
        }
        let rows = self
            .watcher
            .store
            .list_drift(Some(&connections), r.include_approved, before, size + 1)
            .await
            .map_err(Error::from)?;
        let next_page_token = if rows.len() > size {
            rows[size - 1].id.clone()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDriftResponse {
            drift: rows.iter().take(size).map(drift_message).collect(),
            next_page_token,
        }))
    }

    async fn approve_baseline(
        &self,
        request: Request<pb::ApproveBaselineRequest>,
    ) -> Result<Response<pb::ApproveBaselineResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        self.bound(caller, &r.connection_name)?;
        if r.snapshot_id.trim().is_empty() {
            return Err(Error::InvalidArgument {
                field: "snapshot_id",
                description: "is required".to_owned(),
            }
            .into());
        }
        let (baseline, drift_approved) = self
            .watcher
            .approve(
                caller.name(),
                &r.connection_name,
                &r.snapshot_id,
                &r.tool_names,
            )
            .await?;
        Ok(Response::new(pb::ApproveBaselineResponse {
            baseline: Some(snapshot_message(
                &baseline,
                Some((baseline.id.as_str(), caller.name())),
            )),
            drift_approved,
        }))
    }

    type WatchDriftStream = BoxStream<pb::WatchDriftResponse>;

    async fn watch_drift(
        &self,
        request: Request<pb::WatchDriftRequest>,
    ) -> Result<Response<Self::WatchDriftStream>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        let connections = self.visible(caller, r.connection_name.as_ref())?;
        let store = &self.watcher.store;
        let mut backlog = VecDeque::new();
        let position = if r.cursor.is_empty() {
            let head = store.feed_head().await.map_err(Error::from)?;
            if r.include_unapproved {
                // Every open row, oldest first (one per tool at most, and the alerts).
                let mut before: Option<String> = None;
                loop {
                    let page = store
                        .list_drift(Some(&connections), false, before.as_deref(), MAX_PAGE_SIZE)
                        .await
                        .map_err(Error::from)?;
                    before = page.last().map(|row| row.id.clone());
                    let full = page.len() == MAX_PAGE_SIZE;
                    for row in page {
                        backlog.push_front(pb::WatchDriftResponse {
                            drift: Some(drift_message(&row)),
                            baseline_approved: None,
                            cursor: String::new(),
                        });
                    }
                    if !full {
                        break;
                    }
                }
            }
            head
        } else {
            let position = r
                .cursor
                .parse::<i64>()
                .ok()
                .filter(|p| *p >= 0)
                .ok_or_else(|| Error::InvalidArgument {
                    field: "cursor",
                    description: "is not a cursor from this stream".to_owned(),
                })?;
            if position > store.feed_head().await.map_err(Error::from)? {
                return Err(Error::OutOfRange(format!(
                    "cursor {position} is past the newest drift this service has recorded (was its database restored?); start again without a cursor"
                ))
                .into());
            }
            position
        };
        let follow = Follow {
            watcher: self.watcher.clone(),
            connections,
            position,
            backlog,
            pending: VecDeque::new(),
            wake: self.watcher.feed(),
            failed: false,
        };
        Ok(Response::new(Box::pin(futures::stream::unfold(
            follow,
            |mut follow| async move {
                if follow.failed {
                    return None;
                }
                let message = follow.next().await;
                follow.failed = message.is_err();
                Some((message.map_err(Status::from), follow))
            },
        ))))
    }

    async fn check_tools(
        &self,
        request: Request<pb::CheckToolsRequest>,
    ) -> Result<Response<pb::CheckToolsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        self.bound(caller, &r.connection_name)?;
        if r.tool_names.len() > MAX_CHECKED_TOOLS
            || r.tool_names.iter().any(|name| name.trim().is_empty())
        {
            return Err(Error::InvalidArgument {
                field: "tool_names",
                description: format!(
                    "must hold at most {MAX_CHECKED_TOOLS} names, none of them empty"
                ),
            }
            .into());
        }
        Ok(Response::new(
            self.watcher
                .check(&r.connection_name, &r.tool_names)
                .await?,
        ))
    }
}

/// One `WatchDrift` stream's position in the feed.
struct Follow {
    watcher: Arc<Watcher>,
    connections: Vec<String>,
    position: i64,
    backlog: VecDeque<pb::WatchDriftResponse>,
    pending: VecDeque<(i64, FeedEntry)>,
    wake: tokio::sync::watch::Receiver<i64>,
    failed: bool,
}

impl Follow {
    async fn next(&mut self) -> Result<pb::WatchDriftResponse, Error> {
        loop {
            if let Some(message) = self.backlog.pop_front() {
                return Ok(message);
            }
            if let Some((position, entry)) = self.pending.pop_front() {
                self.position = position;
                let message = match entry {
                    FeedEntry::Drift(row) => pb::WatchDriftResponse {
                        drift: self
                            .connections
                            .contains(&row.connection)
                            .then(|| drift_message(&row)),
                        baseline_approved: None,
                        cursor: position.to_string(),
                    },
                    FeedEntry::Baseline {
                        connection,
                        snapshot_id,
                        approved_by,
                    } => pb::WatchDriftResponse {
                        drift: None,
                        baseline_approved: self.connections.contains(&connection).then_some(
                            pb::BaselineApproved {
                                connection_name: connection,
                                snapshot_id,
                                approved_by,
                            },
                        ),
                        cursor: position.to_string(),
                    },
                };
                if message.drift.is_some() || message.baseline_approved.is_some() {
                    return Ok(message);
                }
                continue;
            }
            // Marked seen before the read: a write after it wakes the wait below.
            self.wake.borrow_and_update();
            let entries = self
                .watcher
                .store
                .feed_after(self.position, FEED_BATCH)
                .await?;
            if entries.is_empty() {
                tokio::select! {
                    _ = self.wake.changed() => {}
                    () = tokio::time::sleep(FEED_RECHECK) => {}
                }
                continue;
            }
            self.pending.extend(entries);
        }
    }
}
