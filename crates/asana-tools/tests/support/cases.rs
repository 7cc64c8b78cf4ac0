//! The curated tools' cases, one copy for every way of running them: a realistic input per
//! curated tool, in an order where each call finds what it needs, and the requests that
//! create what no curated tool creates. A [`Runner`] calls one tool as Alice (the sandbox's
//! seeded user) and reports Asana's answer: asana-tools' tests send the prepared requests
//! themselves, connector-executor's go through ExecuteTool and ProxyRequest.
//!
//! Include it with `#[path = "…/asana-tools/tests/support/cases.rs"] mod cases;`.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail, ensure};
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Asana's answer to one call: `Ok(data)` for a 2xx, else the status and `errors`.
pub type Outcome = std::result::Result<Value, Failure>;

/// An Asana error answer.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    /// Asana's `errors` list.
    pub errors: Value,
}

/// How the cases reach Asana as Alice. An `Err` is a failure of the run itself (a refused
/// input, a spec violation, no answer), not an Asana error answer.
pub trait Runner {
    /// Calls the curated tool `name` with `input`.
    async fn tool(&mut self, name: &str, input: &Value) -> Result<Outcome>;

    /// Sends `body` as `content_type` with `method` to `path` (under the API base), for what
    /// no curated tool does.
    async fn raw(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Outcome>;
}

/// Serves a webhook target on a loopback port until `stop`: it echoes the handshake's
/// `X-Hook-Secret` and accepts deliveries. Returns the target's URL.
pub async fn hook_receiver(stop: CancellationToken) -> Result<String> {
    async fn echo_secret(headers: HeaderMap) -> HeaderMap {
        let mut answer = HeaderMap::new();
        if let Some(secret) = headers.get("x-hook-secret") {
            answer.insert("x-hook-secret", secret.clone());
        }
        answer
    }
    let hooks = TcpListener::bind("127.0.0.1:0").await?;
    let target = format!("http://{}/hooks/asana", hooks.local_addr()?);
    let receiver = axum::Router::new().route("/hooks/asana", post(echo_secret));
    tokio::spawn(async move {
        axum::serve(hooks, receiver)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    Ok(target)
}

/// Runs calls through a runner and remembers which tools were called.
struct Cases<'r, R> {
    runner: &'r mut R,
    covered: BTreeSet<String>,
}

impl<R: Runner> Cases<'_, R> {
    async fn send(&mut self, name: &str, input: Value) -> Result<Outcome> {
        let outcome = self
            .runner
            .tool(name, &input)
            .await
            .with_context(|| format!("{name} {input}"))?;
        self.covered.insert(name.to_owned());
        Ok(outcome)
    }

    /// One call that must succeed: the answer's `data`.
    async fn call(&mut self, name: &str, input: Value) -> Result<Value> {
        match self.send(name, input.clone()).await? {
            Ok(data) => Ok(data),
            Err(failure) => bail!(
                "{name} {input}: answered {} {}",
                failure.status,
                failure.errors
            ),
        }
    }

    /// Attaches `url` to `parent` as `name` with a multipart form, as Asana's upload takes it
    /// (no curated tool uploads). Returns the answer's `data`.
    async fn attach_url(&mut self, parent: &str, name: &str, url: &str) -> Result<Value> {
        let boundary = "curated-attachment";
        let mut form = String::new();
        for (field, value) in [
            ("parent", parent),
            ("resource_subtype", "external"),
            ("name", name),
            ("url", url),
        ] {
            form.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n\
                 {value}\r\n"
            ));
        }
        form.push_str(&format!("--{boundary}--\r\n"));
        let content_type = format!("multipart/form-data; boundary={boundary}");
        match self
            .runner
            .raw("POST", "/attachments", &content_type, form.into_bytes())
            .await
            .context("attachment upload")?
        {
            Ok(data) => Ok(data),
            Err(failure) => bail!("attachment upload: {} {}", failure.status, failure.errors),
        }
    }
}

/// The gid of the item of `list` whose `key` is `value`.
pub fn gid_where(list: &Value, key: &str, value: &str) -> Result<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|item| item[key] == value)
        .and_then(|item| item["gid"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no item with {key} {value:?} in {list}"))
}

/// The gid of an answer's object.
pub fn gid(data: &Value) -> Result<String> {
    data["gid"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no gid in {data}"))
}

/// Every curated tool, called once with a realistic input as Alice through `runner`, in an
/// order where each call finds what it needs (a created task, a seeded project, ...);
/// `hook_target` is a webhook receiver (see [`hook_receiver`]). Returns the tools covered.
pub async fn run_cases(runner: &mut impl Runner, hook_target: &str) -> Result<BTreeSet<String>> {
    let mut api = Cases {
        runner,
        covered: BTreeSet::new(),
    };

    // Who and where.
    let me = api
        .call(
            "asana_user_me",
            json!({"opt_fields": ["name", "email", "workspaces.name"]}),
        )
        .await?;
    ensure!(me["email"] == "alice@acme.test", "{me}");
    let acme = gid_where(&me["workspaces"], "name", "Acme Corp")?;
    let workspaces = api
        .call(
            "asana_workspaces_list",
            json!({"limit": 10, "opt_fields": ["name", "is_organization"]}),
        )
        .await?;
    ensure!(gid_where(&workspaces, "name", "Acme Corp")? == acme);
    let users = api
        .call(
            "asana_users_list",
            json!({"workspace": acme, "limit": 50, "opt_fields": ["name", "email"]}),
        )
        .await?;
    let alice = gid_where(&users, "email", "alice@acme.test")?;
    ensure!(alice == gid(&me)?, "{users}");
    gid_where(&users, "name", "Carol Example")?;
    ensure!(
        gid_where(&users, "email", "bob@side.test").is_err(),
        "Bob is not in Acme: {users}"
    );
    let found = api
        .call(
            "asana_typeahead",
            json!({"workspace_gid": acme, "resource_type": "project", "query": "Launch",
                   "count": 5}),
        )
        .await?;
    let launch = gid_where(&found, "name", "Launch plan")?;

    // Projects and sections.
    let projects = api
        .call(
            "asana_projects_list",
            json!({"workspace": acme, "archived": false, "limit": 50,
                   "opt_fields": ["name", "owner"]}),
        )
        .await?;
    ensure!(gid_where(&projects, "name", "Launch plan")? == launch);
    gid_where(&projects, "name", "Roadmap")?;
    let project = api
        .call(
            "asana_project_get",
            json!({"project_gid": launch, "opt_fields": ["name", "owner", "due_on", "team"]}),
        )
        .await?;
    ensure!(project["name"] == "Launch plan", "{project}");
    let team = gid(&project["team"])?;
    let found = api
        .call(
            "asana_projects_search",
            json!({"workspace_gid": acme, "text": "Launch", "completed": false,
                   "owner_any": ["me"], "sort_by": "modified_at"}),
        )
        .await?;
    ensure!(gid_where(&found, "name", "Launch plan")? == launch);
    ensure!(
        gid_where(&found, "name", "Roadmap").is_err(),
        "Roadmap is neither named so nor Alice's: {found}"
    );
    let created = api
        .call(
            "asana_project_create",
            json!({"team_gid": team, "name": "Curated launch", "notes": "Made by a tool test",
                   "default_view": "board", "color": "light-blue", "start_on": "2026-12-01",
                   "due_on": "2027-03-31", "privacy_setting": "public_to_workspace"}),
        )
        .await?;
    ensure!(created["name"] == "Curated launch", "{created}");
    let side_project = gid(&created)?;
    let sections = api
        .call(
            "asana_sections_list",
            json!({"project_gid": launch, "limit": 20, "opt_fields": ["name"]}),
        )
        .await?;
    let todo = gid_where(&sections, "name", "To do")?;
    let done = gid_where(&sections, "name", "Done")?;
    let section = api
        .call(
            "asana_section_create",
            json!({"project_gid": side_project, "name": "In review"}),
        )
        .await?;
    ensure!(section["name"] == "In review", "{section}");

    // Task lists.
    let tasks = api
        .call(
            "asana_tasks_list_by_project",
            json!({"project_gid": launch, "completed_since": "now", "limit": 20,
                   "opt_fields": ["name", "assignee.name"]}),
        )
        .await?;
    let venue = gid_where(&tasks, "name", "Book the venue")?;
    let in_todo = api
        .call(
            "asana_tasks_list_by_section",
            json!({"section_gid": todo, "limit": 20}),
        )
        .await?;
    ensure!(gid_where(&in_todo, "name", "Book the venue")? == venue);
    let mine = api
        .call(
            "asana_tasks_list_by_assignee",
            json!({"assignee": "me", "workspace": acme, "completed_since": "2099-01-01T00:00:00Z",
                   "modified_since": "2020-01-01T00:00:00Z", "opt_fields": ["name"]}),
        )
        .await?;
    gid_where(&mine, "name", "Write the announcement")?;

    // One task through its life.
    let task = api
        .call(
            "asana_task_create",
            json!({"name": "Curated: draft the email", "notes": "Announce the launch",
                   "projects": [launch], "assignee": "me", "due_on": "2026-12-01",
                   "start_on": "2026-11-27", "followers": ["me"], "completed": false,
                   "resource_subtype": "default_task"}),
        )
        .await?;
    ensure!(
        task["name"] == "Curated: draft the email" && task["due_on"] == "2026-12-01",
        "{task}"
    );
    let task = gid(&task)?;
    let read = api
        .call(
            "asana_task_get",
            json!({"task_gid": task, "opt_fields": ["name", "notes", "assignee.name"]}),
        )
        .await?;
    ensure!(
        read["notes"] == "Announce the launch" && read["assignee"]["name"] == "Alice Example",
        "{read}"
    );
    let updated = api
        .call(
            "asana_task_update",
            json!({"task_gid": task, "name": "Curated: send the email", "due_on": "2026-12-02",
                   "html_notes": "<body>Send it <b>today</b></body>"}),
        )
        .await?;
    ensure!(
        updated["name"] == "Curated: send the email" && updated["due_on"] == "2026-12-02",
        "{updated}"
    );
    let subtask = api
        .call(
            "asana_subtask_create",
            json!({"task_gid": task, "name": "Proofread", "assignee": "me"}),
        )
        .await?;
    let subtask = gid(&subtask)?;
    let subtasks = api
        .call(
            "asana_subtasks_list",
            json!({"task_gid": task, "limit": 10}),
        )
        .await?;
    ensure!(gid_where(&subtasks, "name", "Proofread")? == subtask);
    api.call(
        "asana_task_project_add",
        json!({"task_gid": task, "project": side_project}),
    )
    .await?;
    api.call(
        "asana_task_project_remove",
        json!({"task_gid": task, "project": side_project}),
    )
    .await?;
    api.call(
        "asana_section_task_add",
        json!({"section_gid": done, "task": task}),
    )
    .await?;
    let in_done = api
        .call("asana_tasks_list_by_section", json!({"section_gid": done}))
        .await?;
    gid_where(&in_done, "name", "Curated: send the email")?;
    api.call(
        "asana_task_dependencies_add",
        json!({"task_gid": task, "dependencies": [venue]}),
    )
    .await?;
    let dependencies = api
        .call(
            "asana_task_dependencies_list",
            json!({"task_gid": task, "opt_fields": ["name", "completed"]}),
        )
        .await?;
    ensure!(gid_where(&dependencies, "name", "Book the venue")? == venue);
    api.call(
        "asana_task_dependencies_remove",
        json!({"task_gid": task, "dependencies": [venue]}),
    )
    .await?;
    let followed = api
        .call(
            "asana_task_followers_add",
            json!({"task_gid": task, "followers": ["carol@acme.test"]}),
        )
        .await?;
    gid_where(&followed["followers"], "name", "Carol Example")?;
    let unfollowed = api
        .call(
            "asana_task_followers_remove",
            json!({"task_gid": task, "followers": ["carol@acme.test"]}),
        )
        .await?;
    ensure!(
        gid_where(&unfollowed["followers"], "name", "Carol Example").is_err(),
        "{unfollowed}"
    );
    let hits = api
        .call(
            "asana_task_search",
            json!({"workspace_gid": acme, "text": "send the email", "assignee_any": ["me"],
                   "projects_any": [launch], "completed": false,
                   "due_on_before": "2026-12-31", "sort_by": "due_date",
                   "sort_ascending": true, "opt_fields": ["name", "due_on"]}),
        )
        .await?;
    ensure!(gid_where(&hits, "name", "Curated: send the email")? == task);

    // Custom fields.
    let settings = api
        .call(
            "asana_project_custom_fields_list",
            json!({"project_gid": launch,
                   "opt_fields": ["custom_field.name", "custom_field.enum_options.name"]}),
        )
        .await?;
    let priority = settings
        .as_array()
        .into_iter()
        .flatten()
        .map(|setting| &setting["custom_field"])
        .find(|field| field["name"] == "Priority")
        .with_context(|| format!("no Priority setting in {settings}"))?
        .clone();
    let field = gid(&priority)?;
    let high = gid_where(&priority["enum_options"], "name", "High")?;
    let fields = api
        .call(
            "asana_workspace_custom_fields_list",
            json!({"workspace_gid": acme, "opt_fields": ["name", "resource_subtype"]}),
        )
        .await?;
    ensure!(gid_where(&fields, "name", "Priority")? == field);
    let got = api
        .call(
            "asana_custom_field_get",
            json!({"custom_field_gid": field, "opt_fields": ["name", "enum_options.name"]}),
        )
        .await?;
    ensure!(got["name"] == "Priority", "{got}");
    let set = api
        .call(
            "asana_task_custom_field_set",
            json!({"task_gid": task, "custom_field_gid": field, "value": high}),
        )
        .await?;
    let values = set["custom_fields"]
        .as_array()
        .with_context(|| format!("no custom_fields in {set}"))?;
    ensure!(
        values
            .iter()
            .any(|v| v["gid"] == field.as_str() && v["enum_value"]["gid"] == high.as_str()),
        "{set}"
    );

    // Conversation, time and status.
    let story = api
        .call(
            "asana_story_create",
            json!({"task_gid": task, "text": "Venue confirmed for Friday."}),
        )
        .await?;
    ensure!(story["text"] == "Venue confirmed for Friday.", "{story}");
    let stories = api
        .call(
            "asana_stories_list",
            json!({"task_gid": task, "limit": 50, "opt_fields": ["text", "type"]}),
        )
        .await?;
    gid_where(&stories, "text", "Venue confirmed for Friday.")?;
    let entry = api
        .call(
            "asana_time_tracking_entry_create",
            json!({"task_gid": task, "duration_minutes": 90, "entered_on": "2026-11-26",
                   "attributable_to": launch, "billable_status": "billable",
                   "description": "Venue calls"}),
        )
        .await?;
    ensure!(entry["duration_minutes"] == 90, "{entry}");
    let entry = gid(&entry)?;
    let entries = api
        .call(
            "asana_time_tracking_entries_list",
            json!({"task_gid": task, "opt_fields": ["duration_minutes", "entered_on"]}),
        )
        .await?;
    ensure!(
        entries
            .as_array()
            .is_some_and(|list| list.iter().any(|e| e["gid"] == entry.as_str())),
        "{entries}"
    );
    let status = api
        .call(
            "asana_status_update_create",
            json!({"parent": launch, "status_type": "at_risk", "title": "Week 48",
                   "text": "The venue slipped a week."}),
        )
        .await?;
    ensure!(status["title"] == "Week 48", "{status}");
    let statuses = api
        .call(
            "asana_status_updates_list",
            json!({"parent": launch, "opt_fields": ["title", "status_type"]}),
        )
        .await?;
    gid_where(&statuses, "title", "Week 48")?;

    // Goals, portfolios, allocations.
    let goals = api
        .call(
            "asana_goals_list",
            json!({"workspace": acme, "is_workspace_level": true, "opt_fields": ["name"]}),
        )
        .await?;
    let goal = gid_where(&goals, "name", "Grow weekly active teams")?;
    let read = api
        .call(
            "asana_goal_get",
            json!({"goal_gid": goal, "opt_fields": ["name", "metric.current_number_value"]}),
        )
        .await?;
    ensure!(read["name"] == "Grow weekly active teams", "{read}");
    let moved = api
        .call(
            "asana_goal_metric_update",
            json!({"goal_gid": goal, "current_number_value": 250}),
        )
        .await?;
    ensure!(
        moved["metric"]["current_number_value"].as_f64() == Some(250.0),
        "{moved}"
    );
    let portfolios = api
        .call(
            "asana_portfolios_list",
            json!({"workspace": acme, "owner": "me", "opt_fields": ["name"]}),
        )
        .await?;
    let portfolio = gid_where(&portfolios, "name", "Company bets")?;
    let read = api
        .call(
            "asana_portfolio_get",
            json!({"portfolio_gid": portfolio, "opt_fields": ["name", "owner.name"]}),
        )
        .await?;
    ensure!(read["name"] == "Company bets", "{read}");
    let items = api
        .call(
            "asana_portfolio_items_list",
            json!({"portfolio_gid": portfolio, "limit": 10}),
        )
        .await?;
    ensure!(gid_where(&items, "name", "Launch plan")? == launch);
    let allocations = api
        .call(
            "asana_allocations_list",
            json!({"parent": launch, "opt_fields": ["start_date", "end_date", "effort"]}),
        )
        .await?;
    ensure!(
        allocations
            .as_array()
            .is_some_and(|list| list.iter().any(|a| a["start_date"] == "2026-01-05")),
        "{allocations}"
    );
    let allocation = api
        .call(
            "asana_allocation_create",
            json!({"parent": side_project, "assignee": "me", "start_date": "2026-12-01",
                   "end_date": "2026-12-19", "effort": {"type": "percent", "value": 50}}),
        )
        .await?;
    ensure!(allocation["start_date"] == "2026-12-01", "{allocation}");

    // Attachments and webhooks.
    let spec_url = "https://files.example.test/launch-email.pdf";
    let uploaded = api.attach_url(&task, "Email draft", spec_url).await?;
    let attachments = api
        .call(
            "asana_attachments_list",
            json!({"parent": task, "opt_fields": ["name", "download_url"]}),
        )
        .await?;
    ensure!(gid_where(&attachments, "name", "Email draft")? == gid(&uploaded)?);
    ensure!(attachments[0]["download_url"] == spec_url, "{attachments}");
    let webhook = api
        .call(
            "asana_webhook_create",
            json!({"resource": launch, "target": hook_target,
                   "filters": [{"resource_type": "task", "action": "changed",
                                "fields": ["completed"]}]}),
        )
        .await?;
    ensure!(
        webhook["resource"]["gid"] == launch.as_str() && webhook["active"] == true,
        "{webhook}"
    );
    let webhook = gid(&webhook)?;
    let webhooks = api
        .call(
            "asana_webhooks_list",
            json!({"workspace": acme, "resource": launch, "opt_fields": ["target", "active"]}),
        )
        .await?;
    ensure!(
        webhooks
            .as_array()
            .is_some_and(|list| list.iter().any(|w| w["gid"] == webhook.as_str())),
        "{webhooks}"
    );
    api.call("asana_webhook_delete", json!({"webhook_gid": webhook}))
        .await?;

    // And the task goes.
    api.call("asana_task_delete", json!({"task_gid": task}))
        .await?;
    let gone = api
        .send("asana_task_get", json!({"task_gid": task}))
        .await?;
    ensure!(
        matches!(&gone, Err(failure) if failure.status == 404),
        "a deleted task answered {gone:?}"
    );
    Ok(api.covered)
}
