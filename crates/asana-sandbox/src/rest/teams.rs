//! Teams: one team, the teams of a workspace, and the teams a user belongs to (kept as
//! `team_membership` objects).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::objects::{full_record, gid, member_workspace, view, visible, workspace_user};
use super::{Caller, Params, compact, page};
use crate::Sandbox;
use crate::error::ApiError;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/teams/{team_gid}", get(get_team))
        .route("/teams/{team_gid}/users", get(team_users))
        .route("/workspaces/{workspace_gid}/teams", get(workspace_teams))
        .route("/users/{user_gid}/teams", get(user_teams))
}

async fn get_team(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(team_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let team = visible(&sandbox.world(), &caller, &team_gid, "team", "team")?;
    Ok(full_record(&sandbox, &team, &params))
}

/// `GET /teams/{team_gid}/users`: the team's members, in gid order.
async fn team_users(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(team_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        visible(&world, &caller, &team_gid, "team", "team")?;
        let members: Vec<String> = world
            .all("team_membership", |m| m["team"]["gid"] == team_gid.as_str())
            .filter_map(|m| m["user"]["gid"].as_str().map(str::to_owned))
            .collect();
        world
            .all("user", |u| members.iter().any(|g| u["gid"] == g.as_str()))
            .map(|u| view(&world, u, &params, compact))
            .collect()
    };
    page(
        &sandbox,
        items,
        &params,
        &format!("/teams/{team_gid}/users"),
    )
}

async fn workspace_teams(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(workspace_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        member_workspace(&world, &caller, &workspace_gid, "workspace")?;
        world
            .all("team", |t| {
                t["organization"]["gid"] == workspace_gid.as_str()
            })
            .map(|t| view(&world, t, &params, compact))
            .collect()
    };
    page(
        &sandbox,
        items,
        &params,
        &format!("/workspaces/{workspace_gid}/teams"),
    )
}

async fn user_teams(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(user): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let organization = params
        .get("organization")
        .or_else(|| params.get("workspace"))
        .cloned()
        .ok_or_else(|| ApiError::bad_request("organization: Missing input"))?;
    let items: Vec<Value> = {
        let world = sandbox.world();
        member_workspace(&world, &caller, &organization, "organization")?;
        let user = workspace_user(&world, &caller, &json!(user), "user", &organization)?;
        let user_gid = gid(&user);
        let teams: Vec<String> = world
            .all("team_membership", |m| m["user"]["gid"] == user_gid.as_str())
            .filter_map(|m| m["team"]["gid"].as_str().map(str::to_owned))
            .collect();
        world
            .all("team", |t| {
                t["organization"]["gid"] == organization.as_str()
                    && teams.iter().any(|g| t["gid"] == g.as_str())
            })
            .map(|t| view(&world, t, &params, compact))
            .collect()
    };
    page(&sandbox, items, &params, &format!("/users/{user}/teams"))
}
