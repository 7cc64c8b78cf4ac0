//! Tags: list (all the caller's, or one workspace's), create, read, update, delete (which
//! also takes the tag off its tasks).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::objects::{
    JsonBody, add_users, changed, created_at, empty, full_record, gid, gid_of, has_ref,
    list_removed, member_workspace, name_ref, now, object, record, refuse, remove_ref, required,
    store, string, user_workspaces, view, visible, with_options,
};
use super::tasks::task_scope;
use super::{Caller, Params, body_data, compact, page};
use crate::Sandbox;
use crate::error::ApiError;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/tags", get(list_tags).post(create_tag))
        .route(
            "/tags/{tag_gid}",
            get(get_tag).put(update_tag).delete(delete_tag),
        )
        .route(
            "/workspaces/{workspace_gid}/tags",
            get(workspace_tags).post(create_workspace_tag),
        )
}

/// Where an event about a tag bubbles: the tag and its workspace.
fn tag_scope(tag: &Value) -> Vec<String> {
    let mut scope = vec![gid(tag)];
    scope.extend(tag["workspace"]["gid"].as_str().map(str::to_owned));
    scope
}

fn tag_page(
    sandbox: &Sandbox,
    params: &Params,
    path: &str,
    workspaces: &[String],
) -> Result<Response, ApiError> {
    let world = sandbox.world();
    let items: Vec<Value> = world
        .all("tag", |t| {
            workspaces
                .iter()
                .any(|w| t["workspace"]["gid"] == w.as_str())
        })
        .map(|t| view(&world, t, params, compact))
        .collect();
    drop(world);
    page(sandbox, items, params, path)
}

async fn list_tags(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let workspaces = {
        let world = sandbox.world();
        match params.get("workspace") {
            Some(workspace_gid) => {
                member_workspace(&world, &caller, workspace_gid, "workspace")?;
                vec![workspace_gid.clone()]
            }
            None => user_workspaces(&world, &caller.user_gid),
        }
    };
    tag_page(&sandbox, &params, "/tags", &workspaces)
}

async fn workspace_tags(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(workspace_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    member_workspace(&sandbox.world(), &caller, &workspace_gid, "workspace")?;
    let path = format!("/workspaces/{workspace_gid}/tags");
    tag_page(&sandbox, &params, &path, &[workspace_gid])
}

/// Applies `name`, `color` and `notes`; returns one change per field that changed.
fn apply_fields(tag: &mut Value, input: &Map<String, Value>) -> Result<Vec<Value>, ApiError> {
    let mut changes = Vec::new();
    for key in ["name", "color", "notes"] {
        if let Some(value) = input.get(key) {
            let value = match (key, value) {
                ("color", Value::Null) => Value::Null,
                _ => json!(string(value, key)?),
            };
            if tag[key] != value {
                tag[key] = value.clone();
                changes.push(changed(key, &value));
            }
        }
    }
    Ok(changes)
}

fn create(
    sandbox: &Sandbox,
    caller: &Caller,
    params: Params,
    body: &Value,
    workspace_gid: Option<&str>,
) -> Result<Response, ApiError> {
    let input = body_data(body)?;
    let params = with_options(params, body);
    let tag = {
        let mut world = sandbox.world();
        let workspace_gid = match workspace_gid {
            Some(gid) => gid.to_owned(),
            None => gid_of(required(input, "workspace")?, "workspace")?,
        };
        let workspace = member_workspace(&world, caller, &workspace_gid, "workspace")?;
        let mut tag = json!({
            "resource_type": "tag",
            "name": "",
            "color": null,
            "notes": "",
            "workspace": name_ref(&workspace),
            "followers": [],
            "created_at": now(),
            "permalink_url": "",
        });
        apply_fields(&mut tag, input)?;
        add_users(&world, caller, &mut tag, input, "followers", &workspace_gid)?;
        let tag = world.insert(object(tag));
        record(
            &mut world,
            caller,
            "added",
            &tag,
            Some(&workspace),
            None,
            tag_scope(&tag),
        );
        tag
    };
    sandbox.notify_changed();
    Ok(created_at(sandbox, &tag, &params, "/tags"))
}

async fn create_tag(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    create(&sandbox, &caller, params, &body, None)
}

async fn create_workspace_tag(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(workspace_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    create(&sandbox, &caller, params, &body, Some(&workspace_gid))
}

async fn get_tag(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(tag_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let tag = visible(&sandbox.world(), &caller, &tag_gid, "tag", "tag")?;
    Ok(full_record(&sandbox, &tag, &params))
}

async fn update_tag(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(tag_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    refuse(input, &["workspace"])?;
    let params = with_options(params, &body);
    let tag = {
        let mut world = sandbox.world();
        let mut tag = visible(&world, &caller, &tag_gid, "tag", "tag")?;
        let changes = apply_fields(&mut tag, input)?;
        if !changes.is_empty() {
            store(&mut world, &tag);
            for change in changes {
                record(
                    &mut world,
                    &caller,
                    "changed",
                    &tag,
                    None,
                    Some(change),
                    tag_scope(&tag),
                );
            }
        }
        tag
    };
    sandbox.notify_changed();
    Ok(full_record(&sandbox, &tag, &params))
}

async fn delete_tag(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(tag_gid): Path<String>,
) -> Result<Response, ApiError> {
    {
        let mut world = sandbox.world();
        let tag = visible(&world, &caller, &tag_gid, "tag", "tag")?;
        let tagged: Vec<Value> = world
            .all("task", |t| has_ref(t, "tags", &tag_gid))
            .cloned()
            .collect();
        for mut task in tagged {
            remove_ref(&mut task, "tags", &tag_gid);
            store(&mut world, &task);
            record(
                &mut world,
                &caller,
                "changed",
                &task,
                None,
                Some(list_removed("tags", &name_ref(&tag))),
                task_scope(&task),
            );
        }
        record(
            &mut world,
            &caller,
            "deleted",
            &tag,
            None,
            None,
            tag_scope(&tag),
        );
        world.remove(&tag_gid);
    }
    sandbox.notify_changed();
    Ok(empty())
}
