//! Projects: create, read, update, delete, and the project lists of a workspace and a team.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::objects::{
    JsonBody, add_users, as_html, boolean, caller_ref, changed, created_at, date, empty,
    full_record, gid, gid_of, has_ref, in_workspace, member_workspace, name_ref, now, object,
    record, refuse, remove_ref, rich_text, store, string, user_workspaces, view, visible,
    with_options, workspace_user,
};
use super::{Caller, Params, body_data, compact, page};
use crate::Sandbox;
use crate::error::ApiError;
use crate::world::World;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/projects", get(list_projects).post(create_project))
        .route(
            "/projects/{project_gid}",
            get(get_project).put(update_project).delete(delete_project),
        )
        .route(
            "/workspaces/{workspace_gid}/projects",
            get(workspace_projects).post(create_workspace_project),
        )
        .route(
            "/teams/{team_gid}/projects",
            get(team_projects).post(create_team_project),
        )
}

/// Where an event about `project` bubbles: the project, its team, its workspace.
pub fn project_scope(project: &Value) -> Vec<String> {
    let mut scope = vec![gid(project)];
    for key in ["team", "workspace"] {
        if let Some(owner) = project[key]["gid"].as_str() {
            scope.push(owner.to_owned());
        }
    }
    scope
}

/// Applies `input` to `project`; returns one change per field that changed.
fn apply_fields(
    world: &World,
    caller: &Caller,
    project: &mut Value,
    input: &Map<String, Value>,
) -> Result<Vec<Value>, ApiError> {
    let workspace = project["workspace"]["gid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut changes = Vec::new();
    let mut set = |project: &mut Value, field: &str, value: Value| {
        if project[field] != value {
            project[field] = value.clone();
            changes.push(changed(field, &value));
        }
    };
    for (key, value) in input {
        match key.as_str() {
            "name" | "color" => set(project, key, Value::String(string(value, key)?)),
            "notes" => {
                let notes = string(value, key)?;
                project["html_notes"] = json!(as_html(&notes));
                set(project, "notes", Value::String(notes));
            }
            "html_notes" => {
                let notes = rich_text(value, key)?;
                project["html_notes"] = value.clone();
                set(project, "notes", Value::String(notes));
            }
            "archived" => set(project, key, Value::Bool(boolean(value, key)?)),
            "public" => {
                let public = boolean(value, key)?;
                project["privacy_setting"] = json!(if public {
                    "public_to_workspace"
                } else {
                    "private"
                });
                set(project, key, Value::Bool(public));
            }
            "privacy_setting" => {
                let setting = string(value, key)?;
                if !["public_to_workspace", "private_to_team", "private"]
                    .contains(&setting.as_str())
                {
                    return Err(ApiError::bad_request(format!(
                        "privacy_setting: Unknown value {setting}"
                    )));
                }
                project["public"] = json!(setting == "public_to_workspace");
                set(project, key, Value::String(setting));
            }
            "default_view" => {
                let view = string(value, key)?;
                if !["list", "board", "calendar", "timeline"].contains(&view.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "default_view: Unknown value {view}"
                    )));
                }
                set(project, key, Value::String(view));
            }
            "due_on" | "start_on" => set(project, key, date(value, key)?),
            "owner" => {
                let owner = match value {
                    Value::Null => Value::Null,
                    other => name_ref(&workspace_user(world, caller, other, key, &workspace)?),
                };
                set(project, key, owner);
            }
            "team" => {
                let team = in_workspace(world, caller, value, &["team"], key, &workspace)?;
                set(project, key, name_ref(&team));
            }
            _ => {}
        }
    }
    Ok(changes)
}

/// Creates a project from `input` in its `workspace` (or its team's organization), with one
/// empty section.
fn new_project(
    world: &mut World,
    caller: &Caller,
    input: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let workspace = match (
        input.get("workspace").filter(|w| !w.is_null()),
        input.get("team").filter(|t| !t.is_null()),
    ) {
        (Some(value), _) => {
            member_workspace(world, caller, &gid_of(value, "workspace")?, "workspace")?
        }
        (None, Some(value)) => {
            let team = visible(world, caller, &gid_of(value, "team")?, "team", "team")?;
            let organization = team["organization"]["gid"].as_str().unwrap_or_default();
            member_workspace(world, caller, organization, "team")?
        }
        (None, None) => return Err(ApiError::bad_request("workspace: Missing input")),
    };
    let me = caller_ref(world, caller);
    let mut project = json!({
        "resource_type": "project",
        "name": "",
        "notes": "",
        "html_notes": "<body></body>",
        "archived": false,
        "color": "none",
        "public": true,
        "privacy_setting": "public_to_workspace",
        "default_view": "list",
        "created_at": now(),
        "modified_at": now(),
        "owner": me,
        "workspace": name_ref(&workspace),
        "team": null,
        "members": [me],
        "followers": [me],
        "custom_fields": [],
        "current_status_update": null,
        "due_on": null,
        "start_on": null,
        "permalink_url": "",
    });
    apply_fields(world, caller, &mut project, input)?;
    add_users(
        world,
        caller,
        &mut project,
        input,
        "followers",
        &gid(&workspace),
    )?;
    let mut project = world.insert(object(project));
    project["permalink_url"] = json!(format!("https://app.asana.com/0/{}", gid(&project)));
    store(world, &project);
    let parent = if project["team"].is_object() {
        project["team"].clone()
    } else {
        name_ref(&workspace)
    };
    let scope = project_scope(&project);
    record(
        world,
        caller,
        "added",
        &project,
        Some(&parent),
        None,
        scope.clone(),
    );
    // Every project has at least one section; Asana starts new ones with this.
    let section = world.insert(object(json!({
        "resource_type": "section",
        "name": "Untitled section",
        "project": name_ref(&project),
        "projects": [name_ref(&project)],
        "created_at": now(),
    })));
    let mut section_scope = vec![gid(&section)];
    section_scope.extend(scope);
    record(
        world,
        caller,
        "added",
        &section,
        Some(&project),
        None,
        section_scope,
    );
    Ok(project)
}

/// The create handlers' shared body: `extra` names the workspace or team from the path.
fn create(
    sandbox: &Sandbox,
    caller: &Caller,
    params: Params,
    body: &Value,
    extra: Option<(&str, &str)>,
) -> Result<Response, ApiError> {
    let mut input = body_data(body)?.clone();
    let params = with_options(params, body);
    if let Some((key, value)) = extra {
        input.insert(key.to_owned(), json!(value));
    }
    let project = new_project(&mut sandbox.world(), caller, &input)?;
    sandbox.notify_changed();
    Ok(created_at(sandbox, &project, &params, "/projects"))
}

async fn create_project(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    create(&sandbox, &caller, params, &body, None)
}

async fn create_workspace_project(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(workspace_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    create(
        &sandbox,
        &caller,
        params,
        &body,
        Some(("workspace", &workspace_gid)),
    )
}

async fn create_team_project(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(team_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    create(&sandbox, &caller, params, &body, Some(("team", &team_gid)))
}

async fn get_project(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(project_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let project = visible(
        &sandbox.world(),
        &caller,
        &project_gid,
        "project",
        "project",
    )?;
    Ok(full_record(&sandbox, &project, &params))
}

async fn update_project(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(project_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    refuse(input, &["workspace"])?;
    let params = with_options(params, &body);
    let project = {
        let mut world = sandbox.world();
        let mut project = visible(&world, &caller, &project_gid, "project", "project")?;
        let changes = apply_fields(&world, &caller, &mut project, input)?;
        if !changes.is_empty() {
            project["modified_at"] = json!(now());
            store(&mut world, &project);
            let scope = project_scope(&project);
            for change in changes {
                record(
                    &mut world,
                    &caller,
                    "changed",
                    &project,
                    None,
                    Some(change),
                    scope.clone(),
                );
            }
        }
        project
    };
    sandbox.notify_changed();
    Ok(full_record(&sandbox, &project, &params))
}

async fn delete_project(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(project_gid): Path<String>,
) -> Result<Response, ApiError> {
    {
        let mut world = sandbox.world();
        let project = visible(&world, &caller, &project_gid, "project", "project")?;
        let owned: Vec<String> = world
            .all("section", |s| s["project"]["gid"] == project_gid.as_str())
            .chain(world.all("custom_field_setting", |s| {
                s["parent"]["gid"] == project_gid.as_str()
            }))
            .map(gid)
            .collect();
        for owned_gid in owned {
            world.remove(&owned_gid);
        }
        let tasks: Vec<String> = world
            .all("task", |t| has_ref(t, "projects", &project_gid))
            .map(gid)
            .collect();
        for task_gid in tasks {
            if let Some(task) = world.get_mut(&task_gid) {
                remove_ref(task, "projects", &project_gid);
                if let Some(memberships) = task["memberships"].as_array_mut() {
                    memberships.retain(|m| m["project"]["gid"] != project_gid.as_str());
                }
            }
        }
        let scope = project_scope(&project);
        record(&mut world, &caller, "deleted", &project, None, None, scope);
        world.remove(&project_gid);
    }
    sandbox.notify_changed();
    Ok(empty())
}

/// One page of the projects matching `keep`, with the `archived` filter.
fn project_page(
    sandbox: &Sandbox,
    params: &Params,
    path: &str,
    keep: impl Fn(&Value) -> bool,
) -> Result<Response, ApiError> {
    let archived = match params.get("archived").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::bad_request("archived: Must be true or false")),
    };
    let world = sandbox.world();
    let items: Vec<Value> = world
        .all("project", |p| {
            keep(p) && archived.is_none_or(|a| p["archived"] == a)
        })
        .map(|p| view(&world, p, params, compact))
        .collect();
    drop(world);
    page(sandbox, items, params, path)
}

async fn list_projects(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let workspaces = {
        let world = sandbox.world();
        if let Some(team_gid) = params.get("team") {
            visible(&world, &caller, team_gid, "team", "team")?;
        }
        match params.get("workspace") {
            Some(workspace_gid) => {
                member_workspace(&world, &caller, workspace_gid, "workspace")?;
                vec![workspace_gid.clone()]
            }
            None => user_workspaces(&world, &caller.user_gid),
        }
    };
    let team = params.get("team").cloned();
    project_page(&sandbox, &params, "/projects", |p| {
        workspaces
            .iter()
            .any(|w| p["workspace"]["gid"] == w.as_str())
            && team.as_ref().is_none_or(|t| p["team"]["gid"] == t.as_str())
    })
}

async fn workspace_projects(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(workspace_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    member_workspace(&sandbox.world(), &caller, &workspace_gid, "workspace")?;
    let path = format!("/workspaces/{workspace_gid}/projects");
    project_page(&sandbox, &params, &path, |p| {
        p["workspace"]["gid"] == workspace_gid.as_str()
    })
}

async fn team_projects(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(team_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    visible(&sandbox.world(), &caller, &team_gid, "team", "team")?;
    let path = format!("/teams/{team_gid}/projects");
    project_page(&sandbox, &params, &path, |p| {
        p["team"]["gid"] == team_gid.as_str()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_scope_names_team_and_workspace() {
        let project = json!({"gid": "1", "team": {"gid": "2"}, "workspace": {"gid": "3"}});
        assert_eq!(project_scope(&project), vec!["1", "2", "3"]);
    }
}
