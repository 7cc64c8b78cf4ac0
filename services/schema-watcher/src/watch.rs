//! What the watcher knows and decides: each watch's configuration, what a poll's listing
//! means (a snapshot stored when it differs, drift reconciled against the approved baseline,
//! alerts for an empty or failing upstream), approvals, and `CheckTools` verdicts. Every drift,
//! alert and approval is an audit event.
//!
//! Reconciling keeps one open drift row per (tool, baseline definition, current definition):
//! a poll that sees the same difference again records nothing; a tool that changes again or
//! returns to the baseline supersedes its open row; an approval marks the rows it resolves
//! approved. Polls and approvals of one connection are serialised by its lock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agentauth_audit::{Event, Outcome, Sink, Subject, action};
use agentauth_proto::watcher::v1 as pb;
use mcp_drift::{Severity, Snapshot};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};

use crate::Error;
use crate::store::{Baseline, Change, DriftRow, Kind, NewDrift, Store, Stored};

/// The service name in audit events.
pub const SERVICE: &str = "schema-watcher";

/// Who approved a first snapshot that `auto_approve_first` made the baseline.
pub const AUTO_APPROVED: &str = "auto_approve_first";

/// Whether a watch blocks calls to tools that differ from the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Calls go through; their audit events note the drift.
    Warn,
    /// Calls to a drifted tool, or one not in the baseline, are refused.
    Pinned,
}

/// `[[watches]]`: one MCP connection, listed as its probe account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    pub connection: String,
    /// The probe account: a connected account of this tenant and end user.
    pub tenant: String,
    pub identifier: String,
    /// Time between polls.
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    /// Up to this much is added to each interval, so watches do not poll in step.
    #[serde(with = "humantime_serde", default = "default_jitter")]
    pub jitter: Duration,
    pub mode: Mode,
    /// The first snapshot becomes the baseline without an operator.
    #[serde(default)]
    pub auto_approve_first: bool,
}

fn default_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_jitter() -> Duration {
    Duration::from_secs(30)
}

/// The watcher's shared state.
#[derive(Debug)]
pub struct Watcher {
    pub store: Store,
    pub audit: Sink,
    watches: BTreeMap<String, WatchConfig>,
    locks: BTreeMap<String, Mutex<()>>,
    /// The feed's last known position, raised after every write that appends to it.
    feed: watch::Sender<i64>,
    failures_before_alert: u32,
}

/// What one poll read: the listing, or why there is none.
pub type Listing = Result<Vec<Value>, String>;

impl Watcher {
    /// Refuses two watches of one connection, and an interval under 100 ms.
    pub fn new(
        store: Store,
        audit: Sink,
        watches: Vec<WatchConfig>,
        failures_before_alert: u32,
    ) -> Result<Self, String> {
        let mut by_connection = BTreeMap::new();
        for watch in watches {
            if watch.interval < Duration::from_millis(100) {
                return Err(format!(
                    "watch of `{}`: interval must be at least 100ms",
                    watch.connection
                ));
            }
            for (field, value) in [
                ("connection", &watch.connection),
                ("tenant", &watch.tenant),
                ("identifier", &watch.identifier),
            ] {
                if value.trim().is_empty() {
                    return Err(format!("a watch has an empty `{field}`"));
                }
            }
            let name = watch.connection.clone();
            if by_connection.insert(name.clone(), watch).is_some() {
                return Err(format!("connection `{name}` is watched twice"));
            }
        }
        let locks = by_connection
            .keys()
            .map(|name| (name.clone(), Mutex::new(())))
            .collect();
        Ok(Self {
            store,
            audit,
            watches: by_connection,
            locks,
            feed: watch::channel(0).0,
            failures_before_alert: failures_before_alert.max(1),
        })
    }

    pub fn watches(&self) -> impl Iterator<Item = &WatchConfig> {
        self.watches.values()
    }

    /// Wakes when the feed may have grown.
    pub fn feed(&self) -> watch::Receiver<i64> {
        self.feed.subscribe()
    }

    async fn announce(&self) {
        match self.store.feed_head().await {
            Ok(head) => {
                self.feed.send_replace(head);
            }
            Err(error) => tracing::warn!(%error, "the drift feed's head cannot be read"),
        }
    }

    /// What one poll of `watch` read, `failures` being the polls that failed in a row before.
    pub async fn observe(
        &self,
        watch: &WatchConfig,
        listing: Listing,
        failures: &mut u32,
    ) -> Result<(), Error> {
        let Some(lock) = self.locks.get(&watch.connection) else {
            return Err(Error::NotFound(format!(
                "connection `{}` is not watched",
                watch.connection
            )));
        };
        let _serialised = lock.lock().await;
        let snapshot = listing.and_then(|tools| Snapshot::of(&tools).map_err(|e| e.to_string()));
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(reason) => {
                *failures += 1;
                tracing::warn!(connection = %watch.connection, failures = *failures, %reason, "tools/list poll failed");
                if *failures == self.failures_before_alert {
                    let description = format!(
                        "tools/list failed {} polls in a row; the last: {reason}",
                        *failures
                    );
                    self.alert(watch, Kind::UpstreamFailing, description)
                        .await?;
                }
                return Ok(());
            }
        };
        *failures = 0;
        let open = self.store.open_drift(&watch.connection).await?;
        let mut ended_alerts: Vec<String> = open
            .iter()
            .filter(|row| row.kind == Kind::UpstreamFailing)
            .map(|row| row.id.clone())
            .collect();
        if snapshot.tools.is_empty() {
            if !ended_alerts.is_empty() {
                self.store
                    .record_drift(&watch.connection, &ended_alerts, &[], Vec::new())
                    .await?;
            }
            return self
                .alert(
                    watch,
                    Kind::EmptyListing,
                    "the upstream listed no tools at all".to_owned(),
                )
                .await;
        }
        ended_alerts.extend(
            open.iter()
                .filter(|row| row.kind == Kind::EmptyListing)
                .map(|row| row.id.clone()),
        );
        if !ended_alerts.is_empty() {
            self.store
                .record_drift(&watch.connection, &ended_alerts, &[], Vec::new())
                .await?;
        }
        let previous = self.store.latest(&watch.connection).await?;
        let first = previous.is_none();
        let latest = match previous {
            Some(stored) if stored.snapshot.hash == snapshot.hash => stored,
            _ => {
                let stored = self
                    .store
                    .insert_snapshot(&watch.connection, &snapshot, true)
                    .await?;
                tracing::info!(connection = %watch.connection, snapshot = %stored.id, tools = snapshot.tools.len(), "new tools/list snapshot");
                stored
            }
        };
        let mut baseline = self.store.baseline(&watch.connection).await?;
        if baseline.is_none() && first && watch.auto_approve_first {
            self.store
                .set_baseline(&watch.connection, &latest.id, AUTO_APPROVED, &[])
                .await?;
            self.record_approval(watch, AUTO_APPROVED, &latest.id, &[], 0)
                .await;
            baseline = Some(Baseline {
                stored: latest.clone(),
                approved_by: AUTO_APPROVED.to_owned(),
            });
            self.announce().await;
        }
        self.reconcile(watch, &latest, baseline.as_ref(), false)
            .await?;
        Ok(())
    }

    /// Records an alert of `kind` unless one is open; audited.
    async fn alert(
        &self,
        watch: &WatchConfig,
        kind: Kind,
        description: String,
    ) -> Result<(), Error> {
        let open = self.store.open_drift(&watch.connection).await?;
        if open.iter().any(|row| row.kind == kind) {
            return Ok(());
        }
        let alert = NewDrift {
            tool: String::new(),
            kind,
            severity: Severity::Risk,
            changes: vec![Change {
                path: String::new(),
                description,
                severity: Severity::Risk,
            }],
            snapshot_id: String::new(),
            baseline_snapshot_id: String::new(),
            baseline_hash: String::new(),
            definition_hash: String::new(),
        };
        let inserted = self
            .store
            .record_drift(&watch.connection, &[], &[], vec![alert])
            .await?;
        self.detected(watch, &inserted).await;
        Ok(())
    }

    /// Brings the open drift of `watch`'s connection in line with `latest` against
    /// `baseline` (see the module documentation). Returns how many rows were approved.
    async fn reconcile(
        &self,
        watch: &WatchConfig,
        latest: &Stored,
        baseline: Option<&Baseline>,
        approving: bool,
    ) -> Result<u32, Error> {
        let empty = Snapshot::default();
        let base = baseline.map_or(&empty, |b| &b.stored.snapshot);
        let base_id = baseline.map(|b| b.stored.id.clone()).unwrap_or_default();
        let desired = desired_drift(base, &latest.snapshot, &latest.id, &base_id);
        let mut open: BTreeMap<String, Vec<DriftRow>> = BTreeMap::new();
        for row in self.store.open_drift(&watch.connection).await? {
            if !row.kind.is_alert() {
                open.entry(row.tool.clone()).or_default().push(row);
            }
        }
        let tools: BTreeSet<&String> = open.keys().chain(desired.keys()).collect();
        let (mut supersede, mut approve, mut new) = (Vec::new(), Vec::new(), Vec::new());
        for tool in tools {
            let rows = open.get(tool).map(Vec::as_slice).unwrap_or_default();
            let wanted = desired.get(tool);
            let kept = wanted.and_then(|w| {
                rows.iter().find(|row| {
                    row.kind == w.kind
                        && row.baseline_hash == w.baseline_hash
                        && row.definition_hash == w.definition_hash
                })
            });
            for row in rows {
                if kept.is_some_and(|k| k.id == row.id) {
                    continue;
                }
                if approving && wanted.is_none() {
                    approve.push(row.id.clone());
                } else {
                    supersede.push(row.id.clone());
                }
            }
            if let (Some(wanted), None) = (wanted, kept) {
                new.push(wanted.clone());
            }
        }
        if supersede.is_empty() && approve.is_empty() && new.is_empty() {
            return Ok(0);
        }
        let inserted = self
            .store
            .record_drift(&watch.connection, &supersede, &approve, new)
            .await?;
        self.detected(watch, &inserted).await;
        Ok(u32::try_from(approve.len()).unwrap_or(u32::MAX))
    }

    /// Audits new drift rows and wakes the streams.
    async fn detected(&self, watch: &WatchConfig, rows: &[DriftRow]) {
        for row in rows {
            let (name, outcome) = if row.kind.is_alert() {
                (action::DRIFT_ALERT, Outcome::Failure)
            } else {
                (action::DRIFT_DETECTED, Outcome::Success)
            };
            tracing::warn!(connection = %row.connection, tool = %row.tool, kind = ?row.kind, severity = ?row.severity, "drift");
            let mut event = self.event(watch, name, outcome);
            event.details = json_object(json!({
                "drift_id": row.id,
                "tool": row.tool,
                "kind": row.kind,
                "severity": row.severity,
                "changes": row.changes,
                "snapshot_id": row.snapshot_id,
                "baseline_snapshot_id": row.baseline_snapshot_id,
                "definition_hash": row.definition_hash,
                "baseline_definition_hash": row.baseline_hash,
            }));
            self.audit.record(event).await;
        }
        self.announce().await;
    }

    fn event(&self, watch: &WatchConfig, name: &str, outcome: Outcome) -> Event {
        let mut event = Event::new(&watch.tenant, SERVICE, name, outcome);
        event.subject = Subject {
            connection_name: Some(watch.connection.clone()),
            identifier: Some(watch.identifier.clone()),
            asana_user_gid: None,
        };
        event
    }

    async fn record_approval(
        &self,
        watch: &WatchConfig,
        operator: &str,
        snapshot_id: &str,
        tools: &[String],
        approved: u32,
    ) {
        let mut event = self.event(watch, action::DRIFT_APPROVED, Outcome::Success);
        event.actor.identifier = Some(operator.to_owned());
        event.details = json_object(json!({
            "baseline_snapshot_id": snapshot_id,
            "tools": if tools.is_empty() { json!("all") } else { json!(tools) },
            "drift_approved": approved,
        }));
        self.audit.record(event).await;
    }

    /// `ApproveBaseline`: the snapshot `snapshot_id` (or the named tools of it, over the
    /// current baseline) becomes the baseline of `connection`, approved by `operator`.
    pub async fn approve(
        &self,
        operator: &str,
        connection: &str,
        snapshot_id: &str,
        tools: &[String],
    ) -> Result<(Stored, u32), Error> {
        let (Some(watch), Some(lock)) = (self.watches.get(connection), self.locks.get(connection))
        else {
            return Err(Error::NotFound(format!(
                "connection `{connection}` is not watched"
            )));
        };
        if !self.audit.is_healthy() {
            return Err(Error::Unavailable {
                dependency: "audit",
                reason: "the audit emitter takes no events; an approval must be audited".to_owned(),
            });
        }
        let _serialised = lock.lock().await;
        let chosen = self
            .store
            .snapshot(connection, snapshot_id)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "connection `{connection}` has no snapshot `{snapshot_id}`"
                ))
            })?;
        let current = self.store.baseline(connection).await?;
        let baseline = if tools.is_empty() {
            chosen
        } else {
            let mut assembled: BTreeMap<String, Value> = current
                .as_ref()
                .map(|b| {
                    b.stored
                        .snapshot
                        .tools
                        .values()
                        .map(|t| (t.name.clone(), Value::Object(t.definition.clone())))
                        .collect()
                })
                .unwrap_or_default();
            for name in tools {
                match chosen.snapshot.tools.get(name) {
                    Some(tool) => {
                        assembled.insert(name.clone(), Value::Object(tool.definition.clone()));
                    }
                    None if assembled.remove(name).is_some() => {}
                    None => {
                        return Err(Error::InvalidArgument {
                            field: "tool_names",
                            description: format!(
                                "`{name}` is neither in snapshot {snapshot_id} nor in the baseline"
                            ),
                        });
                    }
                }
            }
            let definitions: Vec<Value> = assembled.into_values().collect();
            let snapshot =
                Snapshot::of(&definitions).map_err(|e| Error::Internal(e.to_string()))?;
            if snapshot.hash == chosen.snapshot.hash {
                chosen
            } else {
                self.store
                    .insert_snapshot(connection, &snapshot, false)
                    .await?
            }
        };
        self.store
            .set_baseline(connection, &baseline.id, operator, &[])
            .await?;
        let approved = match self.store.latest(connection).await? {
            Some(latest) => {
                let now = Baseline {
                    stored: baseline.clone(),
                    approved_by: operator.to_owned(),
                };
                self.reconcile(watch, &latest, Some(&now), true).await?
            }
            None => 0,
        };
        self.record_approval(watch, operator, &baseline.id, tools, approved)
            .await;
        self.announce().await;
        tracing::info!(connection, baseline = %baseline.id, operator, approved, "baseline approved");
        Ok((baseline, approved))
    }

    /// `CheckTools`: each tool's standing against the baseline, and whether it may be called.
    pub async fn check(
        &self,
        connection: &str,
        names: &[String],
    ) -> Result<pb::CheckToolsResponse, Error> {
        let Some(watch) = self.watches.get(connection) else {
            return Ok(pb::CheckToolsResponse {
                pinned: false,
                watched: false,
                results: names
                    .iter()
                    .map(|name| pb::ToolCheck {
                        tool_name: name.clone(),
                        allowed: true,
                        ..pb::ToolCheck::default()
                    })
                    .collect(),
            });
        };
        let pinned = watch.mode == Mode::Pinned;
        let baseline = self.store.baseline(connection).await?;
        let latest = self.store.latest(connection).await?;
        let approved = |name: &str| {
            baseline
                .as_ref()
                .and_then(|b| b.stored.snapshot.tools.get(name))
                .map(|t| t.hash.clone())
        };
        let current = |name: &str| {
            latest
                .as_ref()
                .and_then(|l| l.snapshot.tools.get(name))
                .map(|t| t.hash.clone())
        };
        let names: Vec<String> = if names.is_empty() {
            let mut all = BTreeSet::new();
            for stored in baseline.iter().map(|b| &b.stored).chain(latest.iter()) {
                all.extend(stored.snapshot.tools.keys().cloned());
            }
            all.into_iter().collect()
        } else {
            names.to_vec()
        };
        let results = names
            .into_iter()
            .map(|name| {
                let (approved, current) = (approved(&name), current(&name));
                let status = match (&approved, &current) {
                    (Some(a), Some(c)) if a == c => pb::ToolStatus::MatchesBaseline,
                    (Some(_), _) => pb::ToolStatus::Drifted,
                    (None, _) => pb::ToolStatus::NotInBaseline,
                };
                pb::ToolCheck {
                    allowed: !pinned || status == pb::ToolStatus::MatchesBaseline,
                    status: status.into(),
                    definition_hash: current.unwrap_or_default(),
                    baseline_definition_hash: approved.unwrap_or_default(),
                    tool_name: name,
                }
            })
            .collect();
        Ok(pb::CheckToolsResponse {
            pinned,
            watched: true,
            results,
        })
    }
}

/// The drift `current` should have open against `baseline`, by tool name.
fn desired_drift(
    baseline: &Snapshot,
    current: &Snapshot,
    snapshot_id: &str,
    baseline_id: &str,
) -> BTreeMap<String, NewDrift> {
    let drift = mcp_drift::diff(baseline, current);
    let new = |tool: &str, kind, severity, changes, baseline_hash: &str, hash: &str| NewDrift {
        tool: tool.to_owned(),
        kind,
        severity,
        changes,
        snapshot_id: snapshot_id.to_owned(),
        baseline_snapshot_id: baseline_id.to_owned(),
        baseline_hash: baseline_hash.to_owned(),
        definition_hash: hash.to_owned(),
    };
    let mut desired = BTreeMap::new();
    for name in &drift.added {
        let Some(tool) = current.tools.get(name) else {
            continue;
        };
        let severity = if mcp_drift::is_destructive(&tool.definition) {
            Severity::Risk
        } else {
            Severity::NonBreaking
        };
        desired.insert(
            name.clone(),
            new(name, Kind::Added, severity, Vec::new(), "", &tool.hash),
        );
    }
    for name in &drift.removed {
        let hash = baseline.tools.get(name).map_or("", |t| t.hash.as_str());
        desired.insert(
            name.clone(),
            new(
                name,
                Kind::Removed,
                Severity::Breaking,
                Vec::new(),
                hash,
                "",
            ),
        );
    }
    for changed in &drift.changed {
        let changes = changed
            .findings
            .iter()
            .map(|finding| Change {
                path: finding.pointer(),
                description: finding.kind.to_string(),
                severity: finding.severity,
            })
            .collect();
        desired.insert(
            changed.name.clone(),
            new(
                &changed.name,
                Kind::Changed,
                changed.severity(),
                changes,
                &changed.baseline_hash,
                &changed.current_hash,
            ),
        );
    }
    desired
}

fn json_object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}
