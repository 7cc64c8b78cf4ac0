//! Allocations of people to projects over a date range: list (by project or assignee),
//! create, read, update, delete. A paid feature: free workspaces get 402.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::objects::{
    JsonBody, caller_ref, created_at, date, empty, full_record, gid, gid_of, is_paid,
    member_workspace, name_ref, object, require_paid, required, store, user_workspaces, view,
    visible, with_options, workspace_of, workspace_user,
};
use super::{Caller, Params, body_data, page};
use crate::Sandbox;
use crate::error::ApiError;
use crate::world::World;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route(
            "/allocations",
            get(list_allocations).post(create_allocation),
        )
        .route(
            "/allocations/{allocation_gid}",
            get(get_allocation)
                .put(update_allocation)
                .delete(delete_allocation),
        )
}

fn allocation(world: &World, caller: &Caller, allocation_gid: &str) -> Result<Value, ApiError> {
    let allocation = visible(world, caller, allocation_gid, "allocation", "allocation")?;
    require_paid(world, &workspace_of(world, &allocation).unwrap_or_default())?;
    Ok(allocation)
}

/// Applies `input` to `allocation` and checks the range and effort it ends up with.
fn apply_fields(
    world: &World,
    caller: &Caller,
    allocation: &mut Value,
    input: &Map<String, Value>,
    workspace: &str,
) -> Result<(), ApiError> {
    for (key, value) in input {
        match key.as_str() {
            "assignee" => {
                allocation["assignee"] =
                    name_ref(&workspace_user(world, caller, value, key, workspace)?);
            }
            "start_date" | "end_date" => {
                if value.is_null() {
                    return Err(ApiError::bad_request(format!("{key}: Missing input")));
                }
                allocation[key.as_str()] = date(value, key)?;
            }
            "effort" => {
                allocation["effort"] = match value {
                    Value::Null => Value::Null,
                    effort => {
                        let kind = effort["type"].as_str().unwrap_or_default();
                        if !["hours", "percent"].contains(&kind) {
                            return Err(ApiError::bad_request(
                                "effort.type: Must be hours or percent",
                            ));
                        }
                        effort["value"]
                            .as_f64()
                            .filter(|v| *v >= 0.0)
                            .ok_or_else(|| {
                                ApiError::bad_request(
                                    "effort.value: Must be a number of at least 0",
                                )
                            })?;
                        json!({"type": kind, "value": effort["value"]})
                    }
                };
            }
            _ => {}
        }
    }
    if let (Some(start), Some(end)) = (
        allocation["start_date"].as_str(),
        allocation["end_date"].as_str(),
    ) && start > end
    {
        return Err(ApiError::bad_request(
            "end_date: Must not be before start_date",
        ));
    }
    Ok(())
}

async fn list_allocations(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        if !params.contains_key("parent") && !params.contains_key("assignee") {
            return Err(ApiError::bad_request(
                "Must specify at least one of parent or assignee",
            ));
        }
        // The workspaces searched: the one named (by `workspace` or the parent's), which must
        // be paid, or else every paid workspace of the caller.
        let named = match (params.get("workspace"), params.get("parent")) {
            (_, Some(parent_gid)) => {
                let project = visible(&world, &caller, parent_gid, "project", "parent")?;
                Some(workspace_of(&world, &project).unwrap_or_default())
            }
            (Some(workspace_gid), None) => Some(gid(&member_workspace(
                &world,
                &caller,
                workspace_gid,
                "workspace",
            )?)),
            (None, None) => None,
        };
        let workspaces: Vec<String> = match named {
            Some(workspace) => {
                require_paid(&world, &workspace)?;
                vec![workspace]
            }
            None => user_workspaces(&world, &caller.user_gid)
                .into_iter()
                .filter(|w| is_paid(&world, w))
                .collect(),
        };
        if workspaces.is_empty() {
            return Err(ApiError::payment_required());
        }
        let parent = params.get("parent").cloned();
        let assignee = match params.get("assignee") {
            Some(assignee) => {
                let named = json!(assignee);
                let found = workspaces
                    .iter()
                    .map(|w| workspace_user(&world, &caller, &named, "assignee", w))
                    .reduce(|found, next| found.or(next));
                match found {
                    Some(user) => Some(gid(&user?)),
                    None => None,
                }
            }
            None => None,
        };
        world
            .all("allocation", |a| {
                parent
                    .as_ref()
                    .is_none_or(|p| a["parent"]["gid"] == p.as_str())
                    && assignee
                        .as_ref()
                        .is_none_or(|u| a["assignee"]["gid"] == u.as_str())
                    && workspace_of(&world, a).is_some_and(|w| workspaces.contains(&w))
            })
            .map(|a| view(&world, a, &params, Value::clone))
            .collect()
    };
    page(&sandbox, items, &params, "/allocations")
}

async fn create_allocation(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    for field in ["parent", "assignee", "start_date", "end_date"] {
        required(input, field)?;
    }
    let allocation = {
        let mut world = sandbox.world();
        let parent_gid = gid_of(required(input, "parent")?, "parent")?;
        let project = visible(&world, &caller, &parent_gid, "project", "parent")?;
        let workspace = workspace_of(&world, &project).unwrap_or_default();
        require_paid(&world, &workspace)?;
        let mut allocation = json!({
            "resource_type": "allocation",
            "resource_subtype": "project_allocation",
            "start_date": null,
            "end_date": null,
            "effort": null,
            "assignee": null,
            "created_by": caller_ref(&world, &caller),
            "parent": name_ref(&project),
        });
        apply_fields(&world, &caller, &mut allocation, input, &workspace)?;
        world.insert(object(allocation))
    };
    Ok(created_at(&sandbox, &allocation, &params, "/allocations"))
}

async fn get_allocation(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(allocation_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let allocation = allocation(&sandbox.world(), &caller, &allocation_gid)?;
    Ok(full_record(&sandbox, &allocation, &params))
}

async fn update_allocation(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(allocation_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let allocation = {
        let mut world = sandbox.world();
        let mut allocation = allocation(&world, &caller, &allocation_gid)?;
        let workspace = workspace_of(&world, &allocation).unwrap_or_default();
        apply_fields(&world, &caller, &mut allocation, input, &workspace)?;
        store(&mut world, &allocation);
        allocation
    };
    Ok(full_record(&sandbox, &allocation, &params))
}

async fn delete_allocation(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(allocation_gid): Path<String>,
) -> Result<Response, ApiError> {
    let mut world = sandbox.world();
    allocation(&world, &caller, &allocation_gid)?;
    world.remove(&allocation_gid);
    Ok(empty())
}
