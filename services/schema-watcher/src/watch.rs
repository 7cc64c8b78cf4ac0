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
use crate::store::{Baseline, Change, DriftRow, Kind, NewDrift, Plan, Store, Stored};

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
pub type Listing = Result<Vec<Value>, Failure>;

/// Why a poll has no listing: `reason` is stored and served (a status code and reason, no
/// upstream text); `detail` only goes to the log.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: String,
    pub detail: String,
}

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

    pub fn watch(&self, connection: &str) -> Option<&WatchConfig> {
        self.watches.get(connection)
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
        let snapshot = listing.and_then(|tools| {
            Snapshot::of(&tools).map_err(|e| Failure {
                reason: "the listing is not a valid tool list".to_owned(),
                detail: e.to_string(),
            })
        });
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(failure) => {
                *failures += 1;
                tracing::warn!(connection = %watch.connection, failures = *failures, reason = %failure.reason, detail = %failure.detail, "tools/list poll failed");
                if *failures >= self.failures_before_alert {
                    let description = format!(
                        "tools/list failed {} polls in a row; the last: {} (details in schema-watcher's log)",
                        *failures, failure.reason
                    );
                    self.alert(watch, Kind::UpstreamFailing, description)
                        .await?;
                }
                return Ok(());
            }
        };
        *failures = 0;
        let open = self.store.open_drift(&watch.connection).await?;
        let ended = |kind: Kind| {
            open.iter()
                .filter(move |row| row.kind == kind)
                .map(|row| row.id.clone())
        };
        if snapshot.tools.is_empty() {
            let plan = Plan {
                supersede: ended(Kind::UpstreamFailing).collect(),
                ..Plan::default()
            };
            if !plan.is_empty() {
                self.store.apply(&watch.connection, None, plan).await?;
            }
            return self
                .alert(
                    watch,
                    Kind::EmptyListing,
                    "the upstream listed no tools at all".to_owned(),
                )
                .await;
        }
        let latest = match self.store.latest(&watch.connection).await? {
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
        // The first listing, until it is approved or another one is stored.
        let approve_first = baseline.is_none()
            && watch.auto_approve_first
            && self.store.polled_snapshots(&watch.connection).await? == 1;
        if approve_first {
            baseline = Some(Baseline {
                stored: latest.clone(),
                approved_by: AUTO_APPROVED.to_owned(),
            });
        }
        let mut plan = plan(&open, &latest, baseline.as_ref(), false);
        plan.supersede.extend(ended(Kind::UpstreamFailing));
        plan.supersede.extend(ended(Kind::EmptyListing));
        if plan.is_empty() && !approve_first {
            return Ok(());
        }
        let inserted = self
            .store
            .apply(
                &watch.connection,
                approve_first.then_some((latest.id.as_str(), AUTO_APPROVED)),
                plan,
            )
            .await?;
        if approve_first {
            self.record_approval(watch, AUTO_APPROVED, &latest.id, &[], 0)
                .await;
        }
        self.detected(watch, &inserted).await;
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
        let plan = Plan {
            new: vec![alert],
            ..Plan::default()
        };
        let inserted = self.store.apply(&watch.connection, None, plan).await?;
        self.detected(watch, &inserted).await;
        Ok(())
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
        let now = Baseline {
            stored: baseline.clone(),
            approved_by: operator.to_owned(),
        };
        let plan = match self.store.latest(connection).await? {
            Some(latest) => {
                let open = self.store.open_drift(connection).await?;
                plan(&open, &latest, Some(&now), true)
            }
            None => Plan::default(),
        };
        let approved = u32::try_from(plan.approve.len()).unwrap_or(u32::MAX);
        let inserted = self
            .store
            .apply(connection, Some((baseline.id.as_str(), operator)), plan)
            .await?;
        self.record_approval(watch, operator, &baseline.id, tools, approved)
            .await;
        self.detected(watch, &inserted).await;
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

/// What brings the `open` drift of a connection in line with `latest` against `baseline`
/// (see the module documentation); `approving` approves, rather than supersedes, the rows the
/// baseline resolves. Alerts are left alone.
fn plan(open: &[DriftRow], latest: &Stored, baseline: Option<&Baseline>, approving: bool) -> Plan {
    let empty = Snapshot::default();
    let base = baseline.map_or(&empty, |b| &b.stored.snapshot);
    let base_id = baseline.map(|b| b.stored.id.clone()).unwrap_or_default();
    let desired = desired_drift(base, &latest.snapshot, &latest.id, &base_id);
    let mut by_tool: BTreeMap<&str, Vec<&DriftRow>> = BTreeMap::new();
    for row in open.iter().filter(|row| !row.kind.is_alert()) {
        by_tool.entry(row.tool.as_str()).or_default().push(row);
    }
    let tools: BTreeSet<&str> = by_tool
        .keys()
        .copied()
        .chain(desired.keys().map(String::as_str))
        .collect();
    let mut plan = Plan::default();
    for tool in tools {
        let rows = by_tool.get(tool).map(Vec::as_slice).unwrap_or_default();
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
                plan.approve.push(row.id.clone());
            } else {
                plan.supersede.push(row.id.clone());
            }
        }
        if let (Some(wanted), None) = (wanted, kept) {
            plan.new.push(wanted.clone());
        }
    }
    plan
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

#[cfg(test)]
mod tests {
    use agentauth_testkit::database::{PostgresDatabase, SqliteDatabase};
    use serde_json::json;

    use super::*;
    use crate::store::FeedEntry;

    fn tool(name: &str, required: &[&str]) -> Value {
        json!({
            "name": name,
            "description": format!("The {name} tool."),
            "inputSchema": {
                "type": "object",
                "properties": {"gid": {"type": "string"}, "limit": {"type": "integer"}},
                "required": required,
            },
            "annotations": {"readOnlyHint": true},
        })
    }

    fn watch() -> WatchConfig {
        WatchConfig {
            connection: "asana-mcp".to_owned(),
            tenant: "acme".to_owned(),
            identifier: "probe".to_owned(),
            interval: Duration::from_secs(60),
            jitter: Duration::ZERO,
            mode: Mode::Pinned,
            auto_approve_first: false,
        }
    }

    fn failure() -> Listing {
        Err(Failure {
            reason: "connector-executor answered Unavailable".to_owned(),
            detail: "the upstream said something long".to_owned(),
        })
    }

    async fn open(watcher: &Watcher) -> Vec<(String, Kind)> {
        watcher
            .store
            .open_drift("asana-mcp")
            .await
            .expect("open drift")
            .into_iter()
            .map(|row| (row.tool, row.kind))
            .collect()
    }

    /// One scenario, on the backend behind `url`: every reconciliation step and what it leaves
    /// open, the feed in order.
    async fn scenario(url: &str) {
        let store = Store::connect_lazy(&agentauth_db::Config::new(url)).expect("store");
        store
            .database()
            .migrate(&crate::MIGRATIONS)
            .await
            .expect("migrations");
        let audit = Sink::start(agentauth_audit::SinkConfig::default()).expect("sink off");
        let watcher = Watcher::new(store, audit, vec![watch()], 2).expect("watcher");
        let w = watch();
        let mut failures = 0;
        let a = vec![tool("get_task", &["gid"]), tool("get_me", &[])];

        // No baseline: both tools await approval; seeing them again records nothing.
        for _ in 0..2 {
            watcher
                .observe(&w, Ok(a.clone()), &mut failures)
                .await
                .expect("poll");
        }
        let mut pending = open(&watcher).await;
        pending.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            pending,
            [
                ("get_me".to_owned(), Kind::Added),
                ("get_task".to_owned(), Kind::Added)
            ]
        );
        let first = watcher
            .store
            .latest("asana-mcp")
            .await
            .expect("latest")
            .expect("a snapshot");
        let (baseline, approved) = watcher
            .approve("operator", "asana-mcp", &first.id, &[])
            .await
            .expect("approve");
        assert_eq!((baseline.id.as_str(), approved), (first.id.as_str(), 2));
        assert!(open(&watcher).await.is_empty());

        // A property made required: one change, reported once, superseded when it reverts.
        let b = vec![tool("get_task", &["gid", "limit"]), tool("get_me", &[])];
        for _ in 0..2 {
            watcher
                .observe(&w, Ok(b.clone()), &mut failures)
                .await
                .expect("poll");
        }
        assert_eq!(
            open(&watcher).await,
            [("get_task".to_owned(), Kind::Changed)]
        );
        watcher
            .observe(&w, Ok(a.clone()), &mut failures)
            .await
            .expect("poll");
        assert!(open(&watcher).await.is_empty(), "back to the baseline");

        // A removed tool, approved alone: the baseline loses it.
        let c = vec![tool("get_task", &["gid"])];
        watcher
            .observe(&w, Ok(c), &mut failures)
            .await
            .expect("poll");
        assert_eq!(open(&watcher).await, [("get_me".to_owned(), Kind::Removed)]);
        let latest = watcher
            .store
            .latest("asana-mcp")
            .await
            .expect("latest")
            .expect("a snapshot");
        let refused = watcher
            .approve("operator", "asana-mcp", &latest.id, &["nowhere".to_owned()])
            .await
            .expect_err("a tool in neither");
        assert!(
            matches!(refused, Error::InvalidArgument { .. }),
            "{refused}"
        );
        let (baseline, approved) = watcher
            .approve("operator", "asana-mcp", &latest.id, &["get_me".to_owned()])
            .await
            .expect("approve one tool");
        assert_eq!(approved, 1);
        assert_eq!(
            baseline.snapshot.tools.keys().collect::<Vec<_>>(),
            ["get_task"]
        );
        assert!(open(&watcher).await.is_empty());

        // Failing polls: one alert at the threshold, however long it lasts; a good poll ends it.
        for _ in 0..4 {
            watcher
                .observe(&w, failure(), &mut failures)
                .await
                .expect("poll");
        }
        assert_eq!(
            open(&watcher).await,
            [(String::new(), Kind::UpstreamFailing)]
        );
        let alert = watcher
            .store
            .open_drift("asana-mcp")
            .await
            .expect("open")
            .remove(0);
        assert!(
            !alert.changes[0].description.contains("something long"),
            "the upstream's text stays in the log: {alert:?}"
        );
        watcher
            .observe(&w, Ok(vec![]), &mut failures)
            .await
            .expect("poll");
        assert_eq!(
            open(&watcher).await,
            [(String::new(), Kind::EmptyListing)],
            "an empty listing is an alert, not every tool removed"
        );

        // The feed lists every drift and baseline in commit order.
        let feed = watcher.store.feed_after(0, 100).await.expect("feed");
        let positions: Vec<i64> = feed.iter().map(|(p, _)| *p).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        let baselines = feed
            .iter()
            .filter(|(_, e)| matches!(e, FeedEntry::Baseline { .. }))
            .count();
        assert_eq!(baselines, 2);
        assert_eq!(feed.len(), 2 + 2 + 1 + 1 + 2, "{feed:?}");
    }

    #[tokio::test]
    async fn reconciling_on_sqlite() {
        let database = SqliteDatabase::create().expect("sqlite");
        scenario(database.url()).await;
    }

    #[tokio::test]
    async fn reconciling_on_postgres() {
        let database = PostgresDatabase::create().await.expect("postgres");
        scenario(database.url()).await;
    }
}
