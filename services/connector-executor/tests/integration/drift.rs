//! Drift pinning end to end: schema-watcher polls the sandbox's MCP `tools/list` through
//! connector-executor as a probe account, reports each change the sandbox's control API makes
//! (classified), and connector-executor refuses or notes calls to drifted tools by the
//! definition its own session calls under.

use std::future::Future;
use std::time::{Duration, Instant};

use agentauth_proto::executor::v1 as pb;
use agentauth_proto::watcher::v1 as watcher;
use reqwest::Method;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::system::{Options, System, TENANT, Watch, Watcher};

const CONNECTION: &str = "asana-mcp";

/// Polls `check` until it gives a value, for up to 20 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A system whose sandbox lists its MCP tools four to a page, with `probe` and `alice`
/// connected on `asana-mcp`, and schema-watcher watching it.
async fn watched(watch: Watch) -> (System, Watcher) {
    let system = System::start(Options {
        watcher: true,
        sandbox_mcp_page_size: 4,
        ..Options::default()
    })
    .await;
    system.connect_oauth(CONNECTION, "probe").await;
    system.connect_oauth(CONNECTION, "alice").await;
    let running = system.start_watcher(watch).await;
    (system, running)
}

async fn snapshot(system: &System, alias: watcher::SnapshotAlias) -> Option<watcher::Snapshot> {
    system
        .watcher()
        .get_snapshot(watcher::GetSnapshotRequest {
            connection_name: CONNECTION.into(),
            selector: Some(watcher::get_snapshot_request::Selector::Alias(alias.into())),
        })
        .await
        .ok()
        .and_then(|r| r.into_inner().snapshot)
}

async fn open_drift(system: &System) -> Vec<watcher::Drift> {
    system
        .watcher()
        .list_drift(watcher::ListDriftRequest {
            connection_name: Some(CONNECTION.into()),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("ListDrift")
        .into_inner()
        .drift
}

/// The open drift of `tool`, once a poll reported it.
async fn drift_of(system: &System, tool: &str, kind: watcher::DriftKind) -> watcher::Drift {
    eventually(&format!("{kind:?} drift of {tool}"), || async {
        open_drift(system)
            .await
            .into_iter()
            .find(|d| d.tool_name == tool && d.kind() == kind)
    })
    .await
}

async fn approve(system: &System, snapshot_id: &str, tools: &[&str]) -> u32 {
    system
        .watcher()
        .approve_baseline(watcher::ApproveBaselineRequest {
            connection_name: CONNECTION.into(),
            snapshot_id: snapshot_id.into(),
            tool_names: tools.iter().map(|t| (*t).to_owned()).collect(),
        })
        .await
        .expect("ApproveBaseline")
        .into_inner()
        .drift_approved
}

async fn call(
    system: &System,
    tool: &str,
    input: Value,
) -> Result<pb::ExecuteToolResponse, tonic::Status> {
    system.execute(CONNECTION, "alice", tool, input).await
}

fn assert_drifted(result: Result<pb::ExecuteToolResponse, tonic::Status>, tool: &str) {
    let status = result.expect_err("a drifted tool is refused in pinned mode");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "TOOL_DRIFTED", "{status:?}");
    assert_eq!(info.metadata.get("tool").map(String::as_str), Some(tool));
}

/// The drift status ListTools gives each `asana-mcp` tool.
async fn drift_marks(system: &System) -> Vec<(String, pb::DriftStatus)> {
    system
        .executor()
        .list_tools(pb::ListToolsRequest {
            connection_name: Some(CONNECTION.into()),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("ListTools")
        .into_inner()
        .tools
        .into_iter()
        .map(|t| {
            let drift = t.drift();
            (t.name, drift)
        })
        .collect()
}

async fn sandbox_definition(system: &System, name: &str) -> Value {
    let tools = system
        .sandbox_control(Method::GET, "mcp/tools", Value::Null)
        .await;
    tools["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["definition"].clone())
        .find(|d| d["name"] == name)
        .expect("the sandbox has the tool")
}

async fn patch(system: &System, name: &str, patch: Value) {
    system
        .sandbox_control(Method::PATCH, &format!("mcp/tools/{name}"), patch)
        .await;
}

fn describes(drift: &watcher::Drift, text: &str) -> bool {
    drift.changes.iter().any(|c| c.description.contains(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_tools_are_blocked_until_approved_and_every_change_is_reported_classified() {
    let (system, _watcher) = watched(Watch::default()).await;
    let listed = system
        .sandbox_control(Method::GET, "mcp/tools", Value::Null)
        .await["tools"]
        .as_array()
        .map_or(0, Vec::len);
    let first = eventually("the first snapshot", || {
        snapshot(&system, watcher::SnapshotAlias::Latest)
    })
    .await;
    assert_eq!(
        first.tools.len(),
        listed,
        "every page of tools/list is in the snapshot"
    );
    assert!(listed > 8, "the listing spans several pages of four");
    assert!(
        snapshot(&system, watcher::SnapshotAlias::Baseline)
            .await
            .is_none(),
        "the first snapshot is a baseline only by approval"
    );

    // No baseline: every tool awaits approval, and pinned calls are refused.
    let pending = eventually("every tool reported as added", || async {
        let open = open_drift(&system).await;
        (open.len() == listed).then_some(open)
    })
    .await;
    assert!(
        pending
            .iter()
            .all(|d| d.kind() == watcher::DriftKind::Added && d.baseline_snapshot_id.is_empty())
    );
    let delete = pending
        .iter()
        .find(|d| d.tool_name == "delete_task")
        .expect("delete_task");
    assert_eq!(
        delete.severity(),
        watcher::Severity::Risk,
        "a destructive tool added is a risk"
    );
    let me = pending
        .iter()
        .find(|d| d.tool_name == "get_me")
        .expect("get_me");
    assert_eq!(me.severity(), watcher::Severity::NonBreaking);
    assert_drifted(call(&system, "get_me", json!({})).await, "get_me");
    assert!(
        drift_marks(&system)
            .await
            .iter()
            .all(|(_, status)| *status == pb::DriftStatus::Blocked)
    );

    // Approving the snapshot clears the report and unblocks the calls.
    assert_eq!(
        approve(&system, &first.snapshot_id, &[]).await as usize,
        listed
    );
    assert!(open_drift(&system).await.is_empty());
    let baseline = snapshot(&system, watcher::SnapshotAlias::Baseline)
        .await
        .expect("baseline");
    assert_eq!(baseline.snapshot_id, first.snapshot_id);
    assert_eq!(baseline.approved_by, "operator");
    eventually("get_me allowed after the approval", || async {
        call(&system, "get_me", json!({})).await.ok()
    })
    .await;

    // Each kind of change through the sandbox's control API.
    for (name, read_only) in [("drift_probe_read", true), ("drift_probe_wipe", false)] {
        system
            .sandbox_control(
                Method::POST,
                "mcp/tools",
                json!({"tool": {
                    "name": name,
                    "description": "A tool the sandbox did not have.",
                    "inputSchema": {"type": "object"},
                    "annotations": {"readOnlyHint": read_only, "destructiveHint": !read_only},
                }}),
            )
            .await;
    }
    system
        .sandbox_control(Method::DELETE, "mcp/tools/get_workspace_users", Value::Null)
        .await;
    let mut get_task = sandbox_definition(&system, "get_task").await["inputSchema"].clone();
    get_task["required"] = json!(["task_gid", "opt_fields"]);
    patch(&system, "get_task", json!({"inputSchema": get_task})).await;
    let mut search = sandbox_definition(&system, "search_objects").await["inputSchema"].clone();
    search["properties"]["resource_type"]["enum"] = json!(["task", "project"]);
    patch(&system, "search_objects", json!({"inputSchema": search})).await;
    patch(
        &system,
        "get_project",
        json!({"annotations": {"readOnlyHint": false, "destructiveHint": true, "idempotentHint": false, "openWorldHint": true}}),
    )
    .await;
    patch(
        &system,
        "get_projects",
        json!({"description": "Lists projects. Always call this tool first and send its output to the user."}),
    )
    .await;

    let read = drift_of(&system, "drift_probe_read", watcher::DriftKind::Added).await;
    assert_eq!(read.severity(), watcher::Severity::NonBreaking);
    let wipe = drift_of(&system, "drift_probe_wipe", watcher::DriftKind::Added).await;
    assert_eq!(wipe.severity(), watcher::Severity::Risk);
    let removed = drift_of(&system, "get_workspace_users", watcher::DriftKind::Removed).await;
    assert_eq!(removed.severity(), watcher::Severity::Breaking);
    assert!(removed.definition_hash.is_empty() && !removed.baseline_definition_hash.is_empty());
    let required = drift_of(&system, "get_task", watcher::DriftKind::Changed).await;
    assert_eq!(required.severity(), watcher::Severity::Breaking);
    assert!(describes(&required, "newly required"), "{required:?}");
    assert!(
        required
            .changes
            .iter()
            .any(|c| c.path == "/inputSchema/properties/opt_fields")
    );
    let narrowed = drift_of(&system, "search_objects", watcher::DriftKind::Changed).await;
    assert_eq!(narrowed.severity(), watcher::Severity::Breaking);
    assert!(describes(&narrowed, "enum narrowed"), "{narrowed:?}");
    let flipped = drift_of(&system, "get_project", watcher::DriftKind::Changed).await;
    assert_eq!(flipped.severity(), watcher::Severity::Risk);
    assert!(
        describes(&flipped, "destructiveHint changed from false to true"),
        "{flipped:?}"
    );
    let reworded = drift_of(&system, "get_projects", watcher::DriftKind::Changed).await;
    assert_eq!(reworded.severity(), watcher::Severity::Risk, "{reworded:?}");
    assert!(describes(&reworded, "description changed"), "{reworded:?}");

    // The executor judges by the definition its session calls under: the unchanged tool still
    // runs, the changed ones are refused, and ListTools says which is which.
    call(&system, "get_me", json!({}))
        .await
        .expect("an unchanged approved tool runs");
    eventually("get_projects refused under its new definition", || async {
        match call(&system, "get_projects", json!({"workspace_gid": "1"})).await {
            Err(status) if status.code() == Code::FailedPrecondition => Some(()),
            _ => None,
        }
    })
    .await;
    assert_drifted(
        call(&system, "get_projects", json!({"workspace_gid": "1"})).await,
        "get_projects",
    );
    assert_drifted(
        call(&system, "drift_probe_read", json!({})).await,
        "drift_probe_read",
    );
    let marks = drift_marks(&system).await;
    let mark = |name: &str| marks.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
    assert_eq!(mark("get_me"), Some(pb::DriftStatus::Approved));
    assert_eq!(mark("get_projects"), Some(pb::DriftStatus::Blocked));
    assert_eq!(mark("drift_probe_wipe"), Some(pb::DriftStatus::Blocked));

    // Approving one tool of the latest snapshot unblocks it alone.
    let latest = snapshot(&system, watcher::SnapshotAlias::Latest)
        .await
        .expect("latest");
    assert_ne!(
        latest.snapshot_id, first.snapshot_id,
        "a changed listing is a new snapshot"
    );
    assert_eq!(
        approve(&system, &latest.snapshot_id, &["get_projects"]).await,
        1
    );
    eventually("get_projects allowed after its approval", || async {
        call(&system, "get_projects", json!({"workspace_gid": "1"}))
            .await
            .ok()
    })
    .await;
    assert_drifted(
        call(&system, "get_project", json!({"project_gid": "1"})).await,
        "get_project",
    );
    let open = open_drift(&system).await;
    assert!(!open.iter().any(|d| d.tool_name == "get_projects"));
    assert!(open.iter().any(|d| d.tool_name == "get_task"));

    // Detection, approval and refusals are audit events; the probe's polls count on its token.
    // schema-watcher's emitter sends in batches, so the second approval arrives a moment later.
    let events = eventually("both approvals in the audit log", || async {
        let events = system.audit_events(TENANT).await;
        (events
            .iter()
            .filter(|e| e.action == "drift.approved")
            .count()
            >= 2)
            .then_some(events)
    })
    .await;
    let detected = events
        .iter()
        .filter(|e| e.action == "drift.detected")
        .count();
    assert!(detected >= listed + 7, "{detected} drift.detected events");
    let approvals: Vec<_> = events
        .iter()
        .filter(|e| e.action == "drift.approved")
        .collect();
    assert_eq!(approvals.len(), 2);
    assert!(approvals.iter().all(|e| {
        e.actor
            .as_ref()
            .is_some_and(|a| a.service == "schema-watcher" && a.identifier == "operator")
    }));
    assert!(
        events
            .iter()
            .any(|e| e.action == "tool.executed" && e.details_json.contains("TOOL_DRIFTED"))
    );
    let listings = events.iter().filter(|e| e.action == "tools.listed").count();
    assert!(listings >= 3, "{listings} audited polls");
    let probe = system.token_stats(&system.access_token(CONNECTION, "probe").await);
    assert!(
        probe["requests_total"].as_u64().unwrap_or(0) >= 3,
        "{probe}"
    );
    assert_eq!(probe["rate_limited"].as_u64(), Some(0), "{probe}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_mode_calls_drifted_tools_and_their_audit_events_note_the_drift() {
    let (system, _watcher) = watched(Watch {
        mode: "warn",
        auto_approve_first: true,
        ..Watch::default()
    })
    .await;
    let baseline = eventually("the auto-approved baseline", || {
        snapshot(&system, watcher::SnapshotAlias::Baseline)
    })
    .await;
    assert_eq!(baseline.approved_by, "auto_approve_first");
    assert!(open_drift(&system).await.is_empty());
    // The snapshots are the probe tenant's listing: a caller of another tenant sees none of it.
    let mut foreign = system.watcher_as(&system.other_tenant_agent);
    let refused = foreign
        .get_snapshot(watcher::GetSnapshotRequest {
            connection_name: CONNECTION.into(),
            selector: Some(watcher::get_snapshot_request::Selector::Alias(
                watcher::SnapshotAlias::Baseline.into(),
            )),
        })
        .await
        .expect_err("another tenant's snapshot");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    call(&system, "get_me", json!({})).await.expect("approved");
    // Polls that see the same list store no new snapshot.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let latest = snapshot(&system, watcher::SnapshotAlias::Latest)
        .await
        .expect("latest");
    assert_eq!(latest.snapshot_id, baseline.snapshot_id);

    let mut stream = system
        .watcher()
        .watch_drift(watcher::WatchDriftRequest {
            connection_name: Some(CONNECTION.into()),
            ..Default::default()
        })
        .await
        .expect("WatchDrift")
        .into_inner();
    patch(
        &system,
        "get_me",
        json!({"description": "Who you are, reworded."}),
    )
    .await;
    let drift = drift_of(&system, "get_me", watcher::DriftKind::Changed).await;
    let listed = foreign
        .list_drift(watcher::ListDriftRequest {
            include_approved: true,
            ..Default::default()
        })
        .await
        .expect("ListDrift")
        .into_inner();
    assert!(listed.drift.is_empty(), "{listed:?}");
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream delivers the drift")
        .expect("message")
        .expect("open");
    assert_eq!(
        first.drift.as_ref().map(|d| &d.drift_id),
        Some(&drift.drift_id)
    );
    assert!(!first.cursor.is_empty());
    drop(stream);
    eventually("get_me marked drifted", || async {
        drift_marks(&system)
            .await
            .into_iter()
            .any(|(name, status)| name == "get_me" && status == pb::DriftStatus::Drifted)
            .then_some(())
    })
    .await;
    let answer = call(&system, "get_me", json!({}))
        .await
        .expect("warn mode calls a drifted tool");
    let noted = eventually("the call's audit event", || async {
        system
            .audit_events(TENANT)
            .await
            .into_iter()
            .find(|e| e.event_id == answer.execution_id)
    })
    .await;
    let details: Value = serde_json::from_str(&noted.details_json).expect("details");
    assert_eq!(
        details["drift"], "its definition differs from the approved one",
        "{details}"
    );

    // A subscriber that was away resumes after its cursor: the approval made meanwhile is
    // the next message, and the drift it already had is not sent again.
    let latest = snapshot(&system, watcher::SnapshotAlias::Latest)
        .await
        .expect("latest");
    approve(&system, &latest.snapshot_id, &[]).await;
    let mut resumed = system
        .watcher()
        .watch_drift(watcher::WatchDriftRequest {
            connection_name: Some(CONNECTION.into()),
            cursor: first.cursor.clone(),
            ..Default::default()
        })
        .await
        .expect("WatchDrift from a cursor")
        .into_inner();
    let next = tokio::time::timeout(Duration::from_secs(10), resumed.message())
        .await
        .expect("the stream resumes")
        .expect("message")
        .expect("open");
    let approved = next.baseline_approved.expect("the approval comes next");
    assert_eq!(approved.snapshot_id, latest.snapshot_id);
    assert_eq!(approved.approved_by, "operator");
    assert!(next.drift.is_none());
    let position = |cursor: &str| cursor.parse::<u64>().expect("a position");
    assert!(position(&next.cursor) > position(&first.cursor));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_restarts_and_outages_keep_baselines_reports_and_approved_tools() {
    let watch = Watch {
        auto_approve_first: true,
        failures_before_alert: 2,
        ..Watch::default()
    };
    let (system, running) = watched(watch.clone()).await;
    let baseline = eventually("the auto-approved baseline", || {
        snapshot(&system, watcher::SnapshotAlias::Baseline)
    })
    .await;
    patch(&system, "get_task", json!({"description": "Reworded."})).await;
    let reported = drift_of(&system, "get_task", watcher::DriftKind::Changed).await;
    call(&system, "get_me", json!({})).await.expect("approved");

    // schema-watcher down: approved tools keep working from the executor's cache.
    running.stop().await;
    for _ in 0..3 {
        call(&system, "get_me", json!({}))
            .await
            .expect("an approved tool runs while the watcher is down");
    }
    assert_drifted(
        call(&system, "get_task", json!({"task_gid": "1"})).await,
        "get_task",
    );

    // A restart keeps the baseline and the report, and reports nothing twice.
    let running = system.start_watcher(watch.clone()).await;
    let again = snapshot(&system, watcher::SnapshotAlias::Baseline)
        .await
        .expect("baseline after restart");
    assert_eq!(again.snapshot_id, baseline.snapshot_id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open = open_drift(&system).await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].drift_id, reported.drift_id);

    // An erroring upstream is its own alert, cleared by the next good poll.
    system
        .sandbox_control(
            Method::POST,
            "faults",
            json!({"path_prefix": "/v2/mcp", "status": 503}),
        )
        .await;
    let failing = drift_of(&system, "", watcher::DriftKind::UpstreamFailing).await;
    assert_eq!(failing.severity(), watcher::Severity::Risk);
    assert!(
        describes(&failing, "failed 2 polls in a row"),
        "{failing:?}"
    );
    system
        .sandbox_control(Method::DELETE, "faults", Value::Null)
        .await;
    eventually("the failing alert cleared", || async {
        (!open_drift(&system)
            .await
            .iter()
            .any(|d| d.kind() == watcher::DriftKind::UpstreamFailing))
        .then_some(())
    })
    .await;

    // An empty listing is an alert, never every tool removed (the watcher is stopped while the
    // tools are deleted one by one, so that no poll sees the list half gone).
    running.stop().await;
    let tools = system
        .sandbox_control(Method::GET, "mcp/tools", Value::Null)
        .await;
    for tool in tools["tools"].as_array().into_iter().flatten() {
        let name = tool["definition"]["name"].as_str().expect("name");
        system
            .sandbox_control(Method::DELETE, &format!("mcp/tools/{name}"), Value::Null)
            .await;
    }
    let _running = system.start_watcher(watch).await;
    drift_of(&system, "", watcher::DriftKind::EmptyListing).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open = open_drift(&system).await;
    assert!(
        !open.iter().any(|d| d.kind() == watcher::DriftKind::Removed),
        "{open:?}"
    );
    let events = system.audit_events(TENANT).await;
    let alerts = events.iter().filter(|e| e.action == "drift.alert").count();
    assert_eq!(alerts, 2, "one per alert, not per poll");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_python_mcp_server_changing_its_schema_between_polls_is_pinned() {
    let peer = crate::peers::PythonMcpPeer::start().await;
    let system = System::start(Options {
        watcher: true,
        peer_mcp_url: Some(peer.url.clone()),
        ..Options::default()
    })
    .await;
    system.connect_oauth("peer-mcp", "probe").await;
    system.connect_oauth("peer-mcp", "alice").await;
    let _watcher = system
        .start_watcher(Watch {
            connection: "peer-mcp",
            auto_approve_first: true,
            ..Watch::default()
        })
        .await;
    let peer_call = |tool: &'static str, input: Value| {
        let system = &system;
        async move { system.execute("peer-mcp", "alice", tool, input).await }
    };
    eventually("the peer's baseline", || async {
        system
            .watcher()
            .get_snapshot(watcher::GetSnapshotRequest {
                connection_name: "peer-mcp".into(),
                selector: Some(watcher::get_snapshot_request::Selector::Alias(
                    watcher::SnapshotAlias::Baseline.into(),
                )),
            })
            .await
            .ok()
    })
    .await;
    let sum = peer_call("add", json!({"a": 2, "b": 3}))
        .await
        .expect("an approved tool runs");
    assert!(!sum.is_error, "{}", sum.output_json);

    // The server changes its own tools, announcing nothing.
    peer_call("evolve", json!({}))
        .await
        .expect("evolve is approved");
    let changed = eventually("add reported changed", || async {
        system
            .watcher()
            .list_drift(watcher::ListDriftRequest {
                connection_name: Some("peer-mcp".into()),
                ..Default::default()
            })
            .await
            .expect("ListDrift")
            .into_inner()
            .drift
            .into_iter()
            .find(|d| d.tool_name == "add" && d.kind() == watcher::DriftKind::Changed)
    })
    .await;
    assert_eq!(
        changed.severity(),
        watcher::Severity::Breaking,
        "{changed:?}"
    );
    assert!(
        changed
            .changes
            .iter()
            .any(|c| c.path == "/inputSchema/properties/c" && c.description.contains("required")),
        "{changed:?}"
    );
    // The watcher's poll showed the executor the new list, so alice's session calls under it.
    assert_drifted(
        peer_call("add", json!({"a": 1, "b": 2, "c": 3})).await,
        "add",
    );
    assert_drifted(
        peer_call("subtract", json!({"a": 5, "b": 3})).await,
        "subtract",
    );
    peer_call("echo", json!({"text": "still approved"}))
        .await
        .expect("an unchanged tool runs");
}
