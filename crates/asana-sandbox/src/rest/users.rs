//! Users and workspaces.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::Value;

use super::objects::{self, named_user, user_workspaces, visible};
use super::{Caller, Params, compact, data, page, shape};
use crate::Sandbox;
use crate::error::ApiError;

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/users", get(list_users))
        .route("/users/{user_gid}", get(get_user))
        .route("/workspaces", get(list_workspaces))
        .route("/workspaces/{workspace_gid}", get(get_workspace))
        .route("/workspaces/{workspace_gid}/users", get(workspace_users))
        .route(
            "/workspaces/{workspace_gid}/users/{user_gid}",
            get(workspace_user),
        )
}

/// `me` and an email address name users too.
fn resolve_user(sandbox: &Sandbox, caller: &Caller, user: &str) -> Result<Value, ApiError> {
    let world = sandbox.world();
    named_user(&world, caller, user).ok_or_else(|| ApiError::not_found("user: Not a recognized ID"))
}

async fn get_user(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(user): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let user = resolve_user(&sandbox, &caller, &user)?;
    Ok(data(shape(&user, &params, Value::clone)))
}

/// `GET /users`: the users of one `workspace`, of one `team` (its members), or of every
/// workspace the caller belongs to, in gid order.
async fn list_users(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        let workspaces = match params.get("workspace") {
            Some(workspace_gid) => {
                objects::member_workspace(&world, &caller, workspace_gid, "workspace")?;
                vec![workspace_gid.clone()]
            }
            None => user_workspaces(&world, &caller.user_gid),
        };
        let members: Option<Vec<String>> = match params.get("team") {
            Some(team_gid) => {
                visible(&world, &caller, team_gid, "team", "team")?;
                Some(
                    world
                        .all("team_membership", |m| m["team"]["gid"] == team_gid.as_str())
                        .filter_map(|m| m["user"]["gid"].as_str().map(str::to_owned))
                        .collect(),
                )
            }
            None => None,
        };
        world
            .all("user", |u| {
                u["workspaces"].as_array().is_some_and(|ws| {
                    ws.iter()
                        .any(|w| workspaces.iter().any(|g| w["gid"] == g.as_str()))
                }) && members
                    .as_ref()
                    .is_none_or(|m| m.iter().any(|g| u["gid"] == g.as_str()))
            })
            .map(|u| shape(u, &params, compact))
            .collect()
    };
    page(&sandbox, items, &params, "/users")
}

async fn list_workspaces(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let me = resolve_user(&sandbox, &caller, "me")?;
    let items: Vec<Value> = {
        let world = sandbox.world();
        me["workspaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["gid"].as_str().and_then(|gid| world.get(gid)))
            .map(|w| shape(w, &params, compact))
            .collect()
    };
    page(&sandbox, items, &params, "/workspaces")
}

/// A workspace the caller belongs to, or 404 (Asana does not reveal others).
pub fn member_workspace(sandbox: &Sandbox, caller: &Caller, gid: &str) -> Result<Value, ApiError> {
    let world = sandbox.world();
    let me = world
        .get_typed(&caller.user_gid, "user")
        .ok_or_else(ApiError::unauthorized)?;
    let member = me["workspaces"]
        .as_array()
        .is_some_and(|ws| ws.iter().any(|w| w["gid"] == gid));
    match world.get_typed(gid, "workspace") {
        Some(workspace) if member => Ok(workspace.clone()),
        _ => Err(ApiError::not_found("workspace: Not a recognized ID")),
    }
}

async fn get_workspace(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let workspace = member_workspace(&sandbox, &caller, &gid)?;
    Ok(data(shape(&workspace, &params, Value::clone)))
}

/// `GET /workspaces/{workspace_gid}/users/{user_gid}`: a user of a workspace the caller
/// belongs to (`me` and email addresses name users too); 404 for anyone else.
async fn workspace_user(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path((workspace_gid, user)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    member_workspace(&sandbox, &caller, &workspace_gid)?;
    let user = resolve_user(&sandbox, &caller, &user)?;
    let member = user["workspaces"]
        .as_array()
        .is_some_and(|ws| ws.iter().any(|w| w["gid"] == workspace_gid.as_str()));
    if !member {
        return Err(ApiError::not_found("user: Not a recognized ID"));
    }
    Ok(data(shape(&user, &params, Value::clone)))
}

async fn workspace_users(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    member_workspace(&sandbox, &caller, &gid)?;
    let items: Vec<Value> = sandbox
        .world()
        .all("user", |u| {
            u["workspaces"]
                .as_array()
                .is_some_and(|ws| ws.iter().any(|w| w["gid"] == gid.as_str()))
        })
        .map(|u| shape(u, &params, compact))
        .collect();
    page(
        &sandbox,
        items,
        &params,
        &format!("/workspaces/{gid}/users"),
    )
}
