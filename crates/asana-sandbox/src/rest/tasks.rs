//! Tasks: create, read, update, delete, the task lists (`GET /tasks`, a project's, a
//! section's, a tag's), subtasks, projects, dependencies, followers and tags of a task, and
//! custom field values. Every write records its changes for webhooks and `/events`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::custom_fields::{add_project_fields, set_values};
use super::objects::{
    JsonBody, add_users, as_html, boolean, caller_ref, changed, created_at, date, date_time, empty,
    full_record, gid, gid_list, gid_of, has_ref, in_workspace, instant, list_added, list_removed,
    member_workspace, name_ref, now, object, push_ref, record, ref_gids, refuse, remove_ref,
    require_paid, required, rich_text, store, stored_instant, string, view, visible, with_options,
    workspace_user,
};
use super::{Caller, Params, body_data, compact, page};
use crate::Sandbox;
use crate::error::ApiError;
use crate::world::World;

/// Asana's cap on dependencies plus dependents of one task.
const MAX_DEPENDENCIES: usize = 30;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/tasks", get(list_tasks).post(create_task))
        .route(
            "/tasks/{task_gid}",
            get(get_task).put(update_task).delete(delete_task),
        )
        .route(
            "/tasks/{task_gid}/subtasks",
            get(list_subtasks).post(create_subtask),
        )
        .route("/tasks/{task_gid}/projects", get(list_task_projects))
        .route("/tasks/{task_gid}/addProject", post(add_project))
        .route("/tasks/{task_gid}/removeProject", post(remove_project))
        .route("/tasks/{task_gid}/dependencies", get(list_dependencies))
        .route("/tasks/{task_gid}/addDependencies", post(add_dependencies))
        .route(
            "/tasks/{task_gid}/removeDependencies",
            post(remove_dependencies),
        )
        .route("/tasks/{task_gid}/dependents", get(list_dependents))
        .route("/tasks/{task_gid}/addDependents", post(add_dependents))
        .route(
            "/tasks/{task_gid}/removeDependents",
            post(remove_dependents),
        )
        .route("/tasks/{task_gid}/addFollowers", post(add_followers))
        .route("/tasks/{task_gid}/removeFollowers", post(remove_followers))
        .route("/tasks/{task_gid}/tags", get(list_task_tags))
        .route("/tasks/{task_gid}/addTag", post(add_tag))
        .route("/tasks/{task_gid}/removeTag", post(remove_tag))
        .route("/projects/{project_gid}/tasks", get(project_tasks))
        .route("/sections/{section_gid}/tasks", get(section_tasks))
        .route("/tags/{tag_gid}/tasks", get(tag_tasks))
}

/// Where an event about `task` bubbles: the task, its projects, its parent task, its workspace.
pub(crate) fn task_scope(task: &Value) -> Vec<String> {
    let mut scope = vec![gid(task)];
    scope.extend(ref_gids(task, "projects"));
    for key in ["parent", "workspace"] {
        if let Some(owner) = task[key]["gid"].as_str() {
            scope.push(owner.to_owned());
        }
    }
    scope
}

/// The task `task_gid` the caller can see, or 404.
fn task(world: &World, caller: &Caller, task_gid: &str) -> Result<Value, ApiError> {
    visible(world, caller, task_gid, "task", "task")
}

fn workspace_gid(task: &Value) -> String {
    task["workspace"]["gid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Applies the scalar fields of `input` to `task`; returns one change per field that changed.
fn apply_fields(
    world: &World,
    caller: &Caller,
    task: &mut Value,
    input: &Map<String, Value>,
) -> Result<Vec<Value>, ApiError> {
    let workspace = workspace_gid(task);
    let mut changes = Vec::new();
    let mut set = |task: &mut Value, field: &str, value: Value| {
        if task[field] != value {
            task[field] = value.clone();
            changes.push(changed(field, &value));
        }
    };
    for (key, value) in input {
        match key.as_str() {
            "name" => set(task, "name", Value::String(string(value, key)?)),
            "notes" => {
                let notes = string(value, key)?;
                task["html_notes"] = json!(as_html(&notes));
                set(task, "notes", Value::String(notes));
            }
            "html_notes" => {
                let notes = rich_text(value, key)?;
                task["html_notes"] = value.clone();
                set(task, "notes", Value::String(notes));
            }
            "completed" => {
                let completed = boolean(value, key)?;
                if task["completed"] != completed {
                    task["completed_at"] = if completed { json!(now()) } else { Value::Null };
                }
                set(task, "completed", Value::Bool(completed));
            }
            "assignee" => {
                let assignee = match value {
                    Value::Null => Value::Null,
                    other => name_ref(&workspace_user(world, caller, other, key, &workspace)?),
                };
                set(task, "assignee", assignee);
            }
            "due_on" | "start_on" => set(task, key, date(value, key)?),
            "due_at" => set(task, key, date_time(value, key)?),
            "resource_subtype" => {
                let subtype = string(value, key)?;
                if !["default_task", "milestone", "approval"].contains(&subtype.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "resource_subtype: Unknown task subtype {subtype}"
                    )));
                }
                set(task, key, Value::String(subtype));
            }
            _ => {}
        }
    }
    Ok(changes)
}

/// The first section of `project_gid`, where Asana puts new tasks.
fn first_section(world: &World, project_gid: &str) -> Option<Value> {
    world
        .all("section", |s| s["project"]["gid"] == project_gid)
        .next()
        .cloned()
}

/// A membership entry of `task` in `project` (and `section`, else the project's first).
fn membership(world: &World, project: &Value, section: Option<&Value>) -> Value {
    let section = section
        .cloned()
        .or_else(|| first_section(world, &gid(project)));
    match section {
        Some(section) => json!({"project": name_ref(project), "section": name_ref(&section)}),
        None => json!({"project": name_ref(project)}),
    }
}

/// A section of `project_gid` named by `value` (404 unknown, 400 in another project).
fn section_of(
    world: &World,
    caller: &Caller,
    value: &Value,
    project_gid: &str,
    field: &str,
) -> Result<Value, ApiError> {
    let section = visible(world, caller, &gid_of(value, field)?, "section", field)?;
    if section["project"]["gid"] != project_gid {
        return Err(ApiError::bad_request(format!(
            "{field}: The section is not in the given project"
        )));
    }
    Ok(section)
}

/// Creates a task from `input` (with `parent` for a subtask), records it, and returns it.
/// REST's `POST /tasks` and MCP's `create_tasks` both create tasks this way.
pub(crate) fn new_task(
    world: &mut World,
    caller: &Caller,
    input: &Map<String, Value>,
    parent: Option<Value>,
) -> Result<Value, ApiError> {
    let parent = match (parent, input.get("parent").filter(|p| !p.is_null())) {
        (Some(parent), _) => Some(parent),
        (None, Some(value)) => Some(task(world, caller, &gid_of(value, "parent")?)?),
        (None, None) => None,
    };
    let project_gids = match input.get("projects").filter(|p| !p.is_null()) {
        Some(value) => gid_list(value, "projects")?,
        None => Vec::new(),
    };
    let memberships_input: Vec<Value> = match input.get("memberships").filter(|m| !m.is_null()) {
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err(ApiError::bad_request("memberships: Must be a list")),
        None => Vec::new(),
    };
    let workspace = if let Some(value) = input.get("workspace").filter(|w| !w.is_null()) {
        member_workspace(world, caller, &gid_of(value, "workspace")?, "workspace")?
    } else if let Some(first) = project_gids.first() {
        let project = visible(world, caller, first, "project", "projects")?;
        member_workspace(world, caller, &workspace_gid(&project), "projects")?
    } else if let Some(first) = memberships_input.first() {
        let project = visible(
            world,
            caller,
            &gid_of(&first["project"], "memberships.project")?,
            "project",
            "memberships.project",
        )?;
        member_workspace(world, caller, &workspace_gid(&project), "memberships")?
    } else if let Some(parent) = &parent {
        member_workspace(world, caller, &workspace_gid(parent), "parent")?
    } else {
        return Err(ApiError::bad_request(
            "workspace: Missing input. You should specify one of workspace, parent, projects or memberships",
        ));
    };
    let workspace_gid = gid(&workspace);
    if let Some(parent) = &parent
        && parent["workspace"]["gid"] != workspace_gid.as_str()
    {
        return Err(super::objects::other_workspace("parent"));
    }
    let mut projects = Vec::new();
    let mut memberships = Vec::new();
    for project_gid in &project_gids {
        let project = in_workspace(
            world,
            caller,
            &json!(project_gid),
            &["project"],
            "projects",
            &workspace_gid,
        )?;
        memberships.push(membership(world, &project, None));
        projects.push(project);
    }
    for item in &memberships_input {
        let project = in_workspace(
            world,
            caller,
            &item["project"],
            &["project"],
            "memberships.project",
            &workspace_gid,
        )?;
        let section = match item.get("section").filter(|s| !s.is_null()) {
            Some(value) => Some(section_of(
                world,
                caller,
                value,
                &gid(&project),
                "memberships.section",
            )?),
            None => None,
        };
        if projects.iter().any(|p| p["gid"] == project["gid"]) {
            continue;
        }
        memberships.push(membership(world, &project, section.as_ref()));
        projects.push(project);
    }
    let creator = caller_ref(world, caller);
    let mut task = json!({
        "resource_type": "task",
        "resource_subtype": "default_task",
        "name": "",
        "notes": "",
        "html_notes": "<body></body>",
        "completed": false,
        "completed_at": null,
        "assignee": null,
        "due_on": null,
        "due_at": null,
        "start_on": null,
        "created_at": now(),
        "modified_at": now(),
        "created_by": creator,
        "projects": projects.iter().map(name_ref).collect::<Vec<_>>(),
        "memberships": memberships,
        "workspace": name_ref(&workspace),
        "parent": parent.as_ref().map(name_ref),
        "followers": [creator],
        "tags": [],
        "custom_fields": [],
        "dependencies": [],
        "dependents": [],
        "num_subtasks": 0,
        "permalink_url": "",
    });
    apply_fields(world, caller, &mut task, input)?;
    add_users(world, caller, &mut task, input, "followers", &workspace_gid)?;
    if let Some(value) = input.get("tags").filter(|t| !t.is_null()) {
        for tag in gid_list(value, "tags")? {
            let tag = in_workspace(world, caller, &json!(tag), &["tag"], "tags", &workspace_gid)?;
            push_ref(&mut task, "tags", name_ref(&tag));
        }
    }
    for project in &projects {
        add_project_fields(world, &mut task, &gid(project));
    }
    if let Some(values) = input.get("custom_fields").filter(|c| !c.is_null()) {
        set_values(world, caller, &mut task, values)?;
    }
    let mut task = world.insert(object(task));
    let task_gid = gid(&task);
    task["permalink_url"] = json!(format!(
        "https://app.asana.com/0/{}/{task_gid}",
        projects.first().map(gid).unwrap_or_else(|| "0".into())
    ));
    store(world, &task);
    if let Some(parent) = &parent
        && let Some(stored) = world.get_mut(&gid(parent))
    {
        let count = stored["num_subtasks"].as_u64().unwrap_or(0);
        stored["num_subtasks"] = json!(count + 1);
    }
    let scope = task_scope(&task);
    let mut containers: Vec<Value> = projects.clone();
    containers.extend(parent.clone());
    if containers.is_empty() {
        containers.push(workspace);
    }
    for container in &containers {
        record(
            world,
            caller,
            "added",
            &task,
            Some(container),
            None,
            scope.clone(),
        );
    }
    Ok(task)
}

async fn create_task(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let task = new_task(&mut sandbox.world(), &caller, input, None)?;
    sandbox.notify_changed();
    Ok(created_at(&sandbox, &task, &params, "/tasks"))
}

async fn create_subtask(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let subtask = {
        let mut world = sandbox.world();
        let parent = task(&world, &caller, &task_gid)?;
        let mut input = input.clone();
        input.remove("parent");
        new_task(&mut world, &caller, &input, Some(parent))?
    };
    sandbox.notify_changed();
    Ok(created_at(&sandbox, &subtask, &params, "/tasks"))
}

async fn get_task(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let task = task(&sandbox.world(), &caller, &task_gid)?;
    Ok(full_record(&sandbox, &task, &params))
}

async fn update_task(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    refuse(input, &["projects", "memberships", "parent", "workspace"])?;
    let params = with_options(params, &body);
    let task = {
        let mut world = sandbox.world();
        let mut task = task(&world, &caller, &task_gid)?;
        let mut changes = apply_fields(&world, &caller, &mut task, input)?;
        if let Some(values) = input.get("custom_fields").filter(|c| !c.is_null()) {
            for entry in set_values(&world, &caller, &mut task, values)? {
                changes.push(json!({
                    "field": "custom_fields", "action": "changed", "new_value": entry,
                }));
            }
        }
        if !changes.is_empty() {
            task["modified_at"] = json!(now());
            store(&mut world, &task);
            let scope = task_scope(&task);
            for change in changes {
                record(
                    &mut world,
                    &caller,
                    "changed",
                    &task,
                    None,
                    Some(change),
                    scope.clone(),
                );
            }
        }
        task
    };
    sandbox.notify_changed();
    Ok(full_record(&sandbox, &task, &params))
}

async fn delete_task(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
) -> Result<Response, ApiError> {
    {
        let mut world = sandbox.world();
        let root = task(&world, &caller, &task_gid)?;
        delete_tree(&mut world, &caller, &root);
    }
    sandbox.notify_changed();
    Ok(empty())
}

/// Deletes `root` and its subtasks (recording each), unlinks them from the dependencies of
/// other tasks and decrements the parent's `num_subtasks`; returns the deleted gids, `root`'s
/// first. REST's `DELETE /tasks/{gid}` and MCP's `delete_task` both delete this way.
pub(crate) fn delete_tree(world: &mut World, caller: &Caller, root: &Value) -> Vec<String> {
    let mut doomed = vec![root.clone()];
    let mut index = 0;
    while index < doomed.len() {
        let parent_gid = gid(&doomed[index]);
        doomed.extend(
            world
                .all("task", |t| t["parent"]["gid"] == parent_gid.as_str())
                .cloned(),
        );
        index += 1;
    }
    for task in &doomed {
        let scope = task_scope(task);
        record(world, caller, "deleted", task, None, None, scope);
        world.remove(&gid(task));
    }
    let doomed_gids: Vec<String> = doomed.iter().map(gid).collect();
    let linked: Vec<String> = world
        .all("task", |t| {
            doomed_gids
                .iter()
                .any(|d| has_ref(t, "dependencies", d) || has_ref(t, "dependents", d))
        })
        .map(gid)
        .collect();
    for linked_gid in linked {
        if let Some(other) = world.get_mut(&linked_gid) {
            for doomed_gid in &doomed_gids {
                remove_ref(other, "dependencies", doomed_gid);
                remove_ref(other, "dependents", doomed_gid);
            }
        }
    }
    if let Some(parent) = root["parent"]["gid"]
        .as_str()
        .and_then(|p| world.get_mut(p))
    {
        let count = parent["num_subtasks"].as_u64().unwrap_or(1);
        parent["num_subtasks"] = json!(count.saturating_sub(1));
    }
    doomed_gids
}

/// Filters shared by the task lists: `completed_since` and `modified_since`.
fn task_filter(params: &Params) -> Result<impl Fn(&Value) -> bool, ApiError> {
    let completed_since = match params.get("completed_since") {
        Some(text) => Some(instant(text, "completed_since")?),
        None => None,
    };
    let modified_since = match params.get("modified_since") {
        Some(text) => Some(instant(text, "modified_since")?),
        None => None,
    };
    Ok(move |task: &Value| {
        let recent_enough = completed_since.is_none_or(|since| {
            task["completed"] != true
                || stored_instant(task, "completed_at").is_some_and(|at| at >= since)
        });
        let modified = modified_since
            .is_none_or(|since| stored_instant(task, "modified_at").is_some_and(|at| at >= since));
        recent_enough && modified
    })
}

/// One page of the tasks matching `keep` (and the common filters), compact unless asked.
fn task_page(
    sandbox: &Sandbox,
    params: &Params,
    path: &str,
    keep: impl Fn(&Value) -> bool,
) -> Result<Response, ApiError> {
    let filter = task_filter(params)?;
    let world = sandbox.world();
    let items: Vec<Value> = world
        .all("task", |t| keep(t) && filter(t))
        .map(|t| view(&world, t, params, compact))
        .collect();
    drop(world);
    page(sandbox, items, params, path)
}

async fn list_tasks(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let named = ["project", "tag", "section"]
        .iter()
        .filter(|k| params.contains_key(**k))
        .count();
    let by_assignee = params.contains_key("assignee") && params.contains_key("workspace");
    if named + usize::from(by_assignee) != 1 || (named == 1 && params.contains_key("assignee")) {
        return Err(ApiError::bad_request(
            "Must specify exactly one of project, tag, section or assignee + workspace",
        ));
    }
    let world = sandbox.world();
    if let Some(project_gid) = params.get("project") {
        visible(&world, &caller, project_gid, "project", "project")?;
        drop(world);
        let project_gid = project_gid.clone();
        return task_page(&sandbox, &params, "/tasks", move |t| {
            has_ref(t, "projects", &project_gid)
        });
    }
    if let Some(tag_gid) = params.get("tag") {
        visible(&world, &caller, tag_gid, "tag", "tag")?;
        drop(world);
        let tag_gid = tag_gid.clone();
        return task_page(&sandbox, &params, "/tasks", move |t| {
            has_ref(t, "tags", &tag_gid)
        });
    }
    if let Some(section_gid) = params.get("section") {
        visible(&world, &caller, section_gid, "section", "section")?;
        drop(world);
        let section_gid = section_gid.clone();
        return task_page(&sandbox, &params, "/tasks", move |t| {
            in_section(t, &section_gid)
        });
    }
    let workspace_gid = params.get("workspace").cloned().unwrap_or_default();
    member_workspace(&world, &caller, &workspace_gid, "workspace")?;
    let assignee = workspace_user(
        &world,
        &caller,
        &json!(params.get("assignee").cloned().unwrap_or_default()),
        "assignee",
        &workspace_gid,
    )?;
    drop(world);
    let assignee_gid = gid(&assignee);
    task_page(&sandbox, &params, "/tasks", move |t| {
        t["assignee"]["gid"] == assignee_gid.as_str()
            && t["workspace"]["gid"] == workspace_gid.as_str()
    })
}

fn in_section(task: &Value, section_gid: &str) -> bool {
    task["memberships"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["section"]["gid"] == section_gid))
}

async fn project_tasks(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(project_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    visible(
        &sandbox.world(),
        &caller,
        &project_gid,
        "project",
        "project",
    )?;
    let path = format!("/projects/{project_gid}/tasks");
    task_page(&sandbox, &params, &path, |t| {
        has_ref(t, "projects", &project_gid)
    })
}

async fn section_tasks(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(section_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    visible(
        &sandbox.world(),
        &caller,
        &section_gid,
        "section",
        "section",
    )?;
    let path = format!("/sections/{section_gid}/tasks");
    task_page(&sandbox, &params, &path, |t| in_section(t, &section_gid))
}

async fn tag_tasks(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(tag_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    visible(&sandbox.world(), &caller, &tag_gid, "tag", "tag")?;
    let path = format!("/tags/{tag_gid}/tasks");
    task_page(&sandbox, &params, &path, |t| has_ref(t, "tags", &tag_gid))
}

async fn list_subtasks(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    task(&sandbox.world(), &caller, &task_gid)?;
    let path = format!("/tasks/{task_gid}/subtasks");
    task_page(&sandbox, &params, &path, |t| {
        t["parent"]["gid"] == task_gid.as_str()
    })
}

/// Adds `task` to `project` (in `section` when given) and records it; nothing happens when it
/// is already there (in that section).
pub fn put_in_project(
    world: &mut World,
    caller: &Caller,
    task: &mut Value,
    project: &Value,
    section: Option<&Value>,
) {
    let project_gid = gid(project);
    let entry = membership(world, project, section);
    let already = has_ref(task, "projects", &project_gid);
    if already {
        if section.is_none() {
            return;
        }
        let Some(memberships) = task["memberships"].as_array_mut() else {
            return;
        };
        let Some(slot) = memberships
            .iter_mut()
            .find(|m| m["project"]["gid"] == project_gid.as_str())
        else {
            return;
        };
        if slot["section"]["gid"] == entry["section"]["gid"] {
            return;
        }
        *slot = entry.clone();
    } else {
        push_ref(task, "projects", name_ref(project));
        if !task["memberships"].is_array() {
            task["memberships"] = json!([]);
        }
        if let Some(memberships) = task["memberships"].as_array_mut() {
            memberships.push(entry.clone());
        }
        add_project_fields(world, task, &project_gid);
    }
    task["modified_at"] = json!(now());
    store(world, task);
    let mut scope = task_scope(task);
    let container = match section {
        Some(section) => {
            scope.push(gid(section));
            section.clone()
        }
        None => project.clone(),
    };
    record(world, caller, "added", task, Some(&container), None, scope);
}

async fn add_project(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    {
        let mut world = sandbox.world();
        let mut task = task(&world, &caller, &task_gid)?;
        let workspace = workspace_gid(&task);
        let project = in_workspace(
            &world,
            &caller,
            required(input, "project")?,
            &["project"],
            "project",
            &workspace,
        )?;
        let project_gid = gid(&project);
        let section = match input.get("section").filter(|s| !s.is_null()) {
            Some(value) => Some(section_of(&world, &caller, value, &project_gid, "section")?),
            None => None,
        };
        for key in ["insert_before", "insert_after"] {
            if let Some(value) = input.get(key).filter(|v| !v.is_null()) {
                let other = task_in_workspace(&world, &caller, value, key, &workspace)?;
                if !has_ref(&other, "projects", &project_gid) {
                    return Err(ApiError::bad_request(format!(
                        "{key}: The task is not in the given project"
                    )));
                }
            }
        }
        put_in_project(&mut world, &caller, &mut task, &project, section.as_ref());
    }
    sandbox.notify_changed();
    Ok(empty())
}

async fn remove_project(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    {
        let mut world = sandbox.world();
        let mut task = task(&world, &caller, &task_gid)?;
        let project = visible(
            &world,
            &caller,
            &gid_of(required(input, "project")?, "project")?,
            "project",
            "project",
        )?;
        let project_gid = gid(&project);
        let scope = task_scope(&task);
        if remove_ref(&mut task, "projects", &project_gid) {
            if let Some(memberships) = task["memberships"].as_array_mut() {
                memberships.retain(|m| m["project"]["gid"] != project_gid.as_str());
            }
            task["modified_at"] = json!(now());
            store(&mut world, &task);
            record(
                &mut world,
                &caller,
                "removed",
                &task,
                Some(&project),
                None,
                scope,
            );
        }
    }
    sandbox.notify_changed();
    Ok(empty())
}

/// A task named by `value` in `workspace` (404 unknown, 400 in another workspace).
fn task_in_workspace(
    world: &World,
    caller: &Caller,
    value: &Value,
    field: &str,
    workspace: &str,
) -> Result<Value, ApiError> {
    in_workspace(world, caller, value, &["task"], field, workspace)
}

/// Which side of a dependency a call edits.
#[derive(Debug, Clone, Copy)]
enum Link {
    /// The task waits on the others.
    Dependencies,
    /// The others wait on the task.
    Dependents,
}

impl Link {
    fn field(self) -> &'static str {
        match self {
            Self::Dependencies => "dependencies",
            Self::Dependents => "dependents",
        }
    }

    fn inverse(self) -> &'static str {
        match self {
            Self::Dependencies => "dependents",
            Self::Dependents => "dependencies",
        }
    }
}

fn list_links(
    sandbox: &Sandbox,
    caller: &Caller,
    task_gid: &str,
    params: &Params,
    link: Link,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        let task = task(&world, caller, task_gid)?;
        require_paid(&world, &workspace_gid(&task))?;
        ref_gids(&task, link.field())
            .iter()
            .filter_map(|g| world.get(g))
            .map(|t| view(&world, t, params, compact))
            .collect()
    };
    page(
        sandbox,
        items,
        params,
        &format!("/tasks/{task_gid}/{}", link.field()),
    )
}

async fn list_dependencies(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    list_links(&sandbox, &caller, &task_gid, &params, Link::Dependencies)
}

async fn list_dependents(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    list_links(&sandbox, &caller, &task_gid, &params, Link::Dependents)
}

/// Adds or removes dependency links between the task and the tasks in `data.<link>`.
fn edit_links(
    sandbox: &Sandbox,
    caller: &Caller,
    task_gid: &str,
    body: &Value,
    link: Link,
    add: bool,
) -> Result<Response, ApiError> {
    let input = body_data(body)?;
    {
        let mut world = sandbox.world();
        let mut task = task(&world, caller, task_gid)?;
        let workspace = workspace_gid(&task);
        require_paid(&world, &workspace)?;
        let gids = gid_list(required(input, link.field())?, link.field())?;
        let mut others = Vec::new();
        for other in &gids {
            if other == task_gid {
                return Err(ApiError::bad_request(format!(
                    "{}: A task cannot depend on itself",
                    link.field()
                )));
            }
            others.push(task_in_workspace(
                &world,
                caller,
                &json!(other),
                link.field(),
                &workspace,
            )?);
        }
        let count = |t: &Value| {
            t["dependencies"].as_array().map_or(0, Vec::len)
                + t["dependents"].as_array().map_or(0, Vec::len)
        };
        let fresh: Vec<&Value> = others
            .iter()
            .filter(|o| !has_ref(&task, link.field(), &gid(o)))
            .collect();
        if add
            && (count(&task) + fresh.len() > MAX_DEPENDENCIES
                || fresh.iter().any(|o| count(o) >= MAX_DEPENDENCIES))
        {
            return Err(ApiError::bad_request(format!(
                "{}: A task can have at most {MAX_DEPENDENCIES} dependencies and dependents combined",
                link.field()
            )));
        }
        for mut other in others {
            let changed_link = if add {
                push_ref(&mut task, link.field(), name_ref(&other))
                    | push_ref(&mut other, link.inverse(), name_ref(&task))
            } else {
                remove_ref(&mut task, link.field(), &gid(&other))
                    | remove_ref(&mut other, link.inverse(), task_gid)
            };
            if changed_link {
                store(&mut world, &other);
                let reference = name_ref(&other);
                let change = if add {
                    list_added(link.field(), &reference)
                } else {
                    list_removed(link.field(), &reference)
                };
                let scope = task_scope(&task);
                record(
                    &mut world,
                    caller,
                    "changed",
                    &task,
                    None,
                    Some(change),
                    scope,
                );
            }
        }
        store(&mut world, &task);
    }
    sandbox.notify_changed();
    Ok(empty())
}

async fn add_dependencies(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    edit_links(
        &sandbox,
        &caller,
        &task_gid,
        &body,
        Link::Dependencies,
        true,
    )
}

async fn remove_dependencies(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    edit_links(
        &sandbox,
        &caller,
        &task_gid,
        &body,
        Link::Dependencies,
        false,
    )
}

async fn add_dependents(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    edit_links(&sandbox, &caller, &task_gid, &body, Link::Dependents, true)
}

async fn remove_dependents(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    edit_links(&sandbox, &caller, &task_gid, &body, Link::Dependents, false)
}

/// Adds or removes the users in `data.followers`; answers the full task.
fn edit_followers(
    sandbox: &Sandbox,
    caller: &Caller,
    task_gid: &str,
    params: Params,
    body: &Value,
    add: bool,
) -> Result<Response, ApiError> {
    let input = body_data(body)?;
    let params = with_options(params, body);
    let task = {
        let mut world = sandbox.world();
        let mut task = task(&world, caller, task_gid)?;
        let workspace = workspace_gid(&task);
        let mut users = Vec::new();
        for follower in gid_list(required(input, "followers")?, "followers")? {
            users.push(workspace_user(
                &world,
                caller,
                &json!(follower),
                "followers",
                &workspace,
            )?);
        }
        let scope = task_scope(&task);
        for user in users {
            let reference = name_ref(&user);
            let change = if add {
                push_ref(&mut task, "followers", reference.clone())
                    .then(|| list_added("followers", &reference))
            } else {
                remove_ref(&mut task, "followers", &gid(&user))
                    .then(|| list_removed("followers", &reference))
            };
            if let Some(change) = change {
                store(&mut world, &task);
                record(
                    &mut world,
                    caller,
                    "changed",
                    &task,
                    None,
                    Some(change),
                    scope.clone(),
                );
            }
        }
        task
    };
    sandbox.notify_changed();
    Ok(full_record(sandbox, &task, &params))
}

async fn add_followers(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    edit_followers(&sandbox, &caller, &task_gid, params, &body, true)
}

async fn remove_followers(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    edit_followers(&sandbox, &caller, &task_gid, params, &body, false)
}

async fn list_task_tags(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    task_refs(&sandbox, &caller, &task_gid, &params, "tags")
}

async fn list_task_projects(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    task_refs(&sandbox, &caller, &task_gid, &params, "projects")
}

/// A page of the objects the task's `field` refers to (`tags`, `projects`).
fn task_refs(
    sandbox: &Sandbox,
    caller: &Caller,
    task_gid: &str,
    params: &Params,
    field: &str,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        let task = task(&world, caller, task_gid)?;
        ref_gids(&task, field)
            .iter()
            .filter_map(|g| world.get(g))
            .map(|o| view(&world, o, params, compact))
            .collect()
    };
    page(
        sandbox,
        items,
        params,
        &format!("/tasks/{task_gid}/{field}"),
    )
}

/// Adds or removes the tag in `data.tag`.
fn edit_tag(
    sandbox: &Sandbox,
    caller: &Caller,
    task_gid: &str,
    body: &Value,
    add: bool,
) -> Result<Response, ApiError> {
    let input = body_data(body)?;
    {
        let mut world = sandbox.world();
        let mut task = task(&world, caller, task_gid)?;
        let tag = in_workspace(
            &world,
            caller,
            required(input, "tag")?,
            &["tag"],
            "tag",
            &workspace_gid(&task),
        )?;
        let reference = name_ref(&tag);
        let change = if add {
            push_ref(&mut task, "tags", reference.clone()).then(|| list_added("tags", &reference))
        } else {
            remove_ref(&mut task, "tags", &gid(&tag)).then(|| list_removed("tags", &reference))
        };
        if let Some(change) = change {
            task["modified_at"] = json!(now());
            store(&mut world, &task);
            let mut scope = task_scope(&task);
            scope.push(gid(&tag));
            record(
                &mut world,
                caller,
                "changed",
                &task,
                None,
                Some(change),
                scope,
            );
        }
    }
    sandbox.notify_changed();
    Ok(empty())
}

async fn add_tag(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    edit_tag(&sandbox, &caller, &task_gid, &body, true)
}

async fn remove_tag(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    edit_tag(&sandbox, &caller, &task_gid, &body, false)
}
