//! The audit log (`GET /workspaces/{gid}/audit_log_events`): service accounts only (403 for
//! every other credential). Events are the workspace's recorded changes, oldest first, in the
//! shape of Asana's `AuditLogEvent`. Always paginated, and `next_page` keeps coming back on the
//! last page too, so a client can poll it as a stream.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::objects::{instant, member_workspace, stored_instant};
use super::{BASE, Caller, Params, decode_offset, encode_offset};
use crate::Sandbox;
use crate::error::ApiError;
use crate::tokens::CredentialKind;
use crate::world::{Change, World};

/// The page size when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// Audit event gids start here, apart from object gids.
const GID_BASE: u64 = 1_300_000_000_000_000;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new().route(
        "/workspaces/{workspace_gid}/audit_log_events",
        get(audit_log_events),
    )
}

/// A recorded change as an audit log event.
fn audit_event(world: &World, recorded: &Change) -> Value {
    let event = &recorded.event;
    let resource_type = event["resource"]["resource_type"]
        .as_str()
        .unwrap_or_default();
    let action = event["action"].as_str().unwrap_or_default();
    let event_type = match event["change"]["field"].as_str() {
        Some(field) => format!("{resource_type}_{field}_{action}"),
        None => format!("{resource_type}_{action}"),
    };
    let actor = match event["user"]["gid"].as_str() {
        Some(user_gid) => {
            let user = world.get(user_gid);
            json!({
                "actor_type": "user",
                "gid": user_gid,
                "name": user.map(|u| u["name"].clone()),
                "email": user.map(|u| u["email"].clone()),
            })
        }
        None => json!({"actor_type": "asana"}),
    };
    let mut resource = event["resource"].clone();
    let name = event["resource"]["gid"]
        .as_str()
        .and_then(|gid| world.get(gid))
        .map_or(Value::Null, |o| o["name"].clone());
    resource["name"] = name;
    let change = &event["change"];
    let new_value = change
        .get("new_value")
        .or_else(|| change.get("added_value"))
        .filter(|v| !v.is_null())
        .map(|v| json!(v.as_str().map_or_else(|| v.to_string(), str::to_owned)));
    let old_value = change
        .get("removed_value")
        .filter(|v| !v.is_null())
        .map(Value::to_string);
    json!({
        "gid": (GID_BASE + recorded.seq).to_string(),
        "created_at": event["created_at"],
        "event_type": event_type,
        "event_category": "content",
        "actor": actor,
        "resource": resource,
        "details": {"old_value": old_value, "new_value": new_value},
        "context": {"context_type": "api"},
    })
}

async fn audit_log_events(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(workspace_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    if caller.credential != CredentialKind::ServiceAccount {
        return Err(ApiError::forbidden(
            "The audit log is only available to service accounts",
        ));
    }
    let start = params
        .get("start_at")
        .map(|t| instant(t, "start_at"))
        .transpose()?;
    let end = params
        .get("end_at")
        .map(|t| instant(t, "end_at"))
        .transpose()?;
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(limit) => limit
            .parse()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit: Must be between 1 and 100"))?,
    };
    let skip = match params.get("offset") {
        Some(offset) => decode_offset(&sandbox, offset)?,
        None => 0,
    };
    let events: Vec<Value> = {
        let world = sandbox.world();
        member_workspace(&world, &caller, &workspace_gid, "workspace")?;
        world
            .changes_since(0, &workspace_gid)
            .map(|change| audit_event(&world, change))
            .filter(|event| {
                let at = stored_instant(event, "created_at");
                let matches = |key: &str, value: &Value| {
                    params
                        .get(key)
                        .is_none_or(|wanted| value == wanted.as_str())
                };
                start.is_none_or(|s| at.is_some_and(|at| at >= s))
                    && end.is_none_or(|e| at.is_some_and(|at| at < e))
                    && matches("event_type", &event["event_type"])
                    && matches("actor_type", &event["actor"]["actor_type"])
                    && matches("actor_gid", &event["actor"]["gid"])
                    && matches("resource_gid", &event["resource"]["gid"])
            })
            .collect()
    };
    let end_index = (skip + limit).min(events.len()).max(skip);
    let page: Vec<Value> = events.into_iter().skip(skip).take(limit).collect();
    let offset = encode_offset(end_index);
    let mut query: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "offset")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    query.sort();
    query.push(format!("offset={offset}"));
    let path = format!(
        "/workspaces/{workspace_gid}/audit_log_events?{}",
        query.join("&")
    );
    let next_page = json!({
        "offset": offset,
        "uri": format!("{}{BASE}{path}", sandbox.config().public_url),
        "path": path,
    });
    Ok(Json(json!({"data": page, "next_page": next_page})).into_response())
}
