//! Sections of projects: list, create, read, rename, delete (only when empty and not the last),
//! and moving a task into a section.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::objects::{
    JsonBody, changed, created_at, empty, full_record, gid, in_workspace, name_ref, now, object,
    record, required, store, string, view, visible, with_options, workspace_of,
};
use super::tasks::put_in_project;
use super::{Caller, Params, body_data, compact, page};
use crate::Sandbox;
use crate::error::ApiError;
use crate::world::World;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route(
            "/projects/{project_gid}/sections",
            get(list_sections).post(create_section),
        )
        .route(
            "/sections/{section_gid}",
            get(get_section).put(update_section).delete(delete_section),
        )
        .route("/sections/{section_gid}/addTask", post(add_task))
}

/// Where an event about `section` bubbles: the section, its project, its workspace.
fn section_scope(world: &World, section: &Value) -> Vec<String> {
    let mut scope = vec![gid(section)];
    if let Some(project) = section["project"]["gid"].as_str() {
        scope.push(project.to_owned());
    }
    scope.extend(workspace_of(world, section));
    scope
}

/// Checks `insert_before` / `insert_after` name sections of `project_gid` (order is not kept).
fn check_neighbours(
    world: &World,
    caller: &Caller,
    input: &serde_json::Map<String, Value>,
    project_gid: &str,
    resource_type: &str,
) -> Result<(), ApiError> {
    for key in ["insert_before", "insert_after"] {
        if let Some(value) = input.get(key).filter(|v| !v.is_null()) {
            let workspace = world
                .get(project_gid)
                .and_then(|p| workspace_of(world, p))
                .unwrap_or_default();
            let other = in_workspace(world, caller, value, &[resource_type], key, &workspace)?;
            let inside = match resource_type {
                "section" => other["project"]["gid"] == project_gid,
                _ => super::objects::has_ref(&other, "projects", project_gid),
            };
            if !inside {
                return Err(ApiError::bad_request(format!(
                    "{key}: Not in the same project"
                )));
            }
        }
    }
    Ok(())
}

async fn list_sections(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(project_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        visible(&world, &caller, &project_gid, "project", "project")?;
        world
            .all("section", |s| s["project"]["gid"] == project_gid.as_str())
            .map(|s| view(&world, s, &params, compact))
            .collect()
    };
    page(
        &sandbox,
        items,
        &params,
        &format!("/projects/{project_gid}/sections"),
    )
}

async fn create_section(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(project_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let section = {
        let mut world = sandbox.world();
        let project = visible(&world, &caller, &project_gid, "project", "project")?;
        let name = string(required(input, "name")?, "name")?;
        check_neighbours(&world, &caller, input, &project_gid, "section")?;
        let section = world.insert(object(json!({
            "resource_type": "section",
            "name": name,
            "project": name_ref(&project),
            "projects": [name_ref(&project)],
            "created_at": now(),
        })));
        let scope = section_scope(&world, &section);
        record(
            &mut world,
            &caller,
            "added",
            &section,
            Some(&project),
            None,
            scope,
        );
        section
    };
    sandbox.notify_changed();
    Ok(created_at(&sandbox, &section, &params, "/sections"))
}

async fn get_section(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(section_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let section = visible(
        &sandbox.world(),
        &caller,
        &section_gid,
        "section",
        "section",
    )?;
    Ok(full_record(&sandbox, &section, &params))
}

async fn update_section(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(section_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let section = {
        let mut world = sandbox.world();
        let mut section = visible(&world, &caller, &section_gid, "section", "section")?;
        let project_gid = section["project"]["gid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        check_neighbours(&world, &caller, input, &project_gid, "section")?;
        if let Some(value) = input.get("name") {
            let name = json!(string(value, "name")?);
            if section["name"] != name {
                section["name"] = name.clone();
                store(&mut world, &section);
                let scope = section_scope(&world, &section);
                record(
                    &mut world,
                    &caller,
                    "changed",
                    &section,
                    None,
                    Some(changed("name", &name)),
                    scope,
                );
            }
        }
        section
    };
    sandbox.notify_changed();
    Ok(full_record(&sandbox, &section, &params))
}

async fn delete_section(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(section_gid): Path<String>,
) -> Result<Response, ApiError> {
    {
        let mut world = sandbox.world();
        let section = visible(&world, &caller, &section_gid, "section", "section")?;
        let project_gid = section["project"]["gid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let has_tasks = world
            .all("task", |t| {
                t["memberships"].as_array().is_some_and(|m| {
                    m.iter()
                        .any(|m| m["section"]["gid"] == section_gid.as_str())
                })
            })
            .next()
            .is_some();
        if has_tasks {
            return Err(ApiError::bad_request(
                "Sections must be empty to be deleted",
            ));
        }
        let siblings = world
            .all("section", |s| s["project"]["gid"] == project_gid.as_str())
            .count();
        if siblings <= 1 {
            return Err(ApiError::bad_request(
                "The last remaining section of a project cannot be deleted",
            ));
        }
        let scope = section_scope(&world, &section);
        let project = world.get(&project_gid).cloned();
        record(
            &mut world,
            &caller,
            "deleted",
            &section,
            project.as_ref(),
            None,
            scope,
        );
        world.remove(&section_gid);
    }
    sandbox.notify_changed();
    Ok(empty())
}

async fn add_task(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(section_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    {
        let mut world = sandbox.world();
        let section = visible(&world, &caller, &section_gid, "section", "section")?;
        let project_gid = section["project"]["gid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let project = visible(&world, &caller, &project_gid, "project", "section")?;
        let workspace = workspace_of(&world, &project).unwrap_or_default();
        let mut task = in_workspace(
            &world,
            &caller,
            required(input, "task")?,
            &["task"],
            "task",
            &workspace,
        )?;
        check_neighbours(&world, &caller, input, &project_gid, "task")?;
        put_in_project(&mut world, &caller, &mut task, &project, Some(&section));
    }
    sandbox.notify_changed();
    Ok(empty())
}
