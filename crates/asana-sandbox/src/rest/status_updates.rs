//! Status updates on projects, portfolios and goals: created and deleted, never modified. The
//! newest one becomes its parent's `current_status_update`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::objects::{
    JsonBody, as_html, caller_ref, created_at, empty, full_record, gid, gid_of, instant, name_ref,
    now, object, required, rich_text, stored_instant, string, view, visible, visible_any,
    with_options,
};
use super::{Caller, Params, body_data, page};
use crate::Sandbox;
use crate::error::ApiError;
use crate::world::World;

/// What a project's or portfolio's status can be.
const PROJECT_STATUSES: &[&str] = &[
    "on_track",
    "at_risk",
    "off_track",
    "on_hold",
    "complete",
    "dropped",
];

/// What a goal's status can be.
const GOAL_STATUSES: &[&str] = &[
    "on_track",
    "at_risk",
    "off_track",
    "achieved",
    "partial",
    "missed",
    "dropped",
];

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/status_updates", get(list_updates).post(create_update))
        .route(
            "/status_updates/{status_update_gid}",
            get(get_update)
                .delete(delete_update)
                .fallback(|| async { ApiError::not_found("Not found") }),
        )
}

/// A status update's compact form.
fn compact_update(update: &Value) -> Value {
    let mut out = Map::new();
    for key in ["gid", "resource_type", "title", "resource_subtype"] {
        if let Some(value) = update.get(key) {
            out.insert(key.to_owned(), value.clone());
        }
    }
    Value::Object(out)
}

/// Makes the newest remaining update of `parent_gid` its current one (null when none).
fn refresh_current(world: &mut World, parent_gid: &str) {
    let newest = world
        .all("status_update", |u| u["parent"]["gid"] == parent_gid)
        .last()
        .cloned();
    if let Some(parent) = world.get_mut(parent_gid) {
        parent["current_status_update"] = newest.as_ref().map_or(Value::Null, compact_update);
        if parent["resource_type"] == "goal" {
            parent["status"] = newest.map_or(Value::Null, |u| {
                json!(match u["status_type"].as_str().unwrap_or_default() {
                    "on_track" => "green",
                    "at_risk" => "yellow",
                    "off_track" => "red",
                    other => other,
                })
            });
        }
    }
}

async fn create_update(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let update = {
        let mut world = sandbox.world();
        let parent = visible_any(
            &world,
            &caller,
            &gid_of(required(input, "parent")?, "parent")?,
            &["project", "portfolio", "goal"],
            "parent",
        )?;
        let parent_type = parent["resource_type"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let status_type = string(required(input, "status_type")?, "status_type")?;
        let allowed = if parent_type == "goal" {
            GOAL_STATUSES
        } else {
            PROJECT_STATUSES
        };
        if !allowed.contains(&status_type.as_str()) {
            return Err(ApiError::bad_request(format!(
                "status_type: {status_type} is not a valid status for a {parent_type}; use one of {}",
                allowed.join(", ")
            )));
        }
        let (text, html) = match input.get("html_text").filter(|h| !h.is_null()) {
            Some(html) => (rich_text(html, "html_text")?, string(html, "html_text")?),
            None => {
                let text = string(required(input, "text")?, "text")?;
                let html = as_html(&text);
                (text, html)
            }
        };
        let title = match input.get("title").filter(|t| !t.is_null()) {
            Some(title) => string(title, "title")?,
            None => String::new(),
        };
        let author = caller_ref(&world, &caller);
        let update = world.insert(object(json!({
            "resource_type": "status_update",
            "resource_subtype": format!("{parent_type}_status_update"),
            "title": title,
            "text": text,
            "html_text": html,
            "status_type": status_type,
            "author": author,
            "created_by": author,
            "created_at": now(),
            "modified_at": now(),
            "parent": name_ref(&parent),
            "hearted": false,
            "hearts": [],
            "num_hearts": 0,
            "liked": false,
            "likes": [],
            "num_likes": 0,
            "reaction_summary": [],
        })));
        refresh_current(&mut world, &gid(&parent));
        update
    };
    Ok(created_at(&sandbox, &update, &params, "/status_updates"))
}

async fn list_updates(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let parent_gid = params
        .get("parent")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("parent: Missing input"))?;
    let since = match params.get("created_since") {
        Some(text) => Some(instant(text, "created_since")?),
        None => None,
    };
    let items: Vec<Value> = {
        let world = sandbox.world();
        visible_any(
            &world,
            &caller,
            &parent_gid,
            &["project", "portfolio", "goal"],
            "parent",
        )?;
        world
            .all("status_update", |u| {
                u["parent"]["gid"] == parent_gid.as_str()
                    && since.is_none_or(|s| stored_instant(u, "created_at").is_some_and(|c| c >= s))
            })
            .map(|u| view(&world, u, &params, compact_update))
            .collect()
    };
    page(&sandbox, items, &params, "/status_updates")
}

async fn get_update(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(update_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let update = visible(
        &sandbox.world(),
        &caller,
        &update_gid,
        "status_update",
        "status_update",
    )?;
    Ok(full_record(&sandbox, &update, &params))
}

async fn delete_update(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(update_gid): Path<String>,
) -> Result<Response, ApiError> {
    let mut world = sandbox.world();
    let update = visible(
        &world,
        &caller,
        &update_gid,
        "status_update",
        "status_update",
    )?;
    world.remove(&update_gid);
    if let Some(parent_gid) = update["parent"]["gid"].as_str() {
        refresh_current(&mut world, parent_gid);
    }
    Ok(empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goal_and_project_statuses_differ() {
        assert!(GOAL_STATUSES.contains(&"achieved"));
        assert!(!PROJECT_STATUSES.contains(&"achieved"));
        assert!(PROJECT_STATUSES.contains(&"on_hold"));
    }
}
