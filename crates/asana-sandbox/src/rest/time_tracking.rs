//! Time tracking entries on tasks: list and create per task, read, update and delete by gid.
//! Only the user who logged an entry may change or delete it.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::objects::{
    JsonBody, caller_ref, created_at, date, empty, full_record, in_workspace, name_ref, now,
    object, required, store, string, view, visible, with_options, workspace_of,
};
use super::{Caller, Params, body_data, page};
use crate::Sandbox;
use crate::error::ApiError;
use crate::world::World;

/// What an entry's `billable_status` can be.
const BILLABLE: &[&str] = &["billable", "nonBillable", "notApplicable"];

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route(
            "/tasks/{task_gid}/time_tracking_entries",
            get(list_entries).post(create_entry),
        )
        .route(
            "/time_tracking_entries/{time_tracking_entry_gid}",
            get(get_entry).put(update_entry).delete(delete_entry),
        )
}

/// An entry's compact form.
fn compact_entry(entry: &Value) -> Value {
    let mut out = Map::new();
    for key in [
        "gid",
        "resource_type",
        "duration_minutes",
        "entered_on",
        "attributable_to",
        "created_by",
        "categories",
    ] {
        if let Some(value) = entry.get(key) {
            out.insert(key.to_owned(), value.clone());
        }
    }
    Value::Object(out)
}

/// Applies `input` to `entry`, validating every field.
fn apply_fields(
    world: &World,
    caller: &Caller,
    entry: &mut Value,
    input: &Map<String, Value>,
) -> Result<(), ApiError> {
    let workspace = workspace_of(world, entry).unwrap_or_default();
    for (key, value) in input {
        match key.as_str() {
            "duration_minutes" => {
                let minutes = value.as_u64().filter(|m| *m > 0).ok_or_else(|| {
                    ApiError::bad_request("duration_minutes: Must be a positive whole number")
                })?;
                entry["duration_minutes"] = json!(minutes);
            }
            "entered_on" => {
                if value.is_null() {
                    return Err(ApiError::bad_request("entered_on: Missing input"));
                }
                entry["entered_on"] = date(value, key)?;
            }
            "attributable_to" => match value {
                Value::Null => {
                    if let Some(map) = entry.as_object_mut() {
                        map.remove("attributable_to");
                    }
                }
                other => {
                    let project =
                        in_workspace(world, caller, other, &["project"], key, &workspace)?;
                    entry["attributable_to"] = name_ref(&project);
                }
            },
            "billable_status" => {
                let status = string(value, key)?;
                if !BILLABLE.contains(&status.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "billable_status: Must be one of {}",
                        BILLABLE.join(", ")
                    )));
                }
                entry["billable_status"] = json!(status);
            }
            "description" => entry["description"] = json!(string(value, key)?),
            _ => {}
        }
    }
    Ok(())
}

async fn list_entries(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        visible(&world, &caller, &task_gid, "task", "task")?;
        world
            .all("time_tracking_entry", |e| {
                e["task"]["gid"] == task_gid.as_str()
            })
            .map(|e| view(&world, e, &params, compact_entry))
            .collect()
    };
    page(
        &sandbox,
        items,
        &params,
        &format!("/tasks/{task_gid}/time_tracking_entries"),
    )
}

async fn create_entry(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    required(input, "duration_minutes")?;
    let entry = {
        let mut world = sandbox.world();
        let task = visible(&world, &caller, &task_gid, "task", "task")?;
        let mut entry = json!({
            "resource_type": "time_tracking_entry",
            "duration_minutes": 0,
            "entered_on": Utc::now().date_naive().format("%Y-%m-%d").to_string(),
            "created_by": caller_ref(&world, &caller),
            "task": name_ref(&task),
            "created_at": now(),
            "approval_status": "DRAFT",
            "billable_status": "notApplicable",
            "description": "",
            "categories": [],
        });
        apply_fields(&world, &caller, &mut entry, input)?;
        world.insert(object(entry))
    };
    Ok(created_at(
        &sandbox,
        &entry,
        &params,
        "/time_tracking_entries",
    ))
}

fn entry(world: &World, caller: &Caller, entry_gid: &str) -> Result<Value, ApiError> {
    visible(
        world,
        caller,
        entry_gid,
        "time_tracking_entry",
        "time_tracking_entry",
    )
}

/// 403 unless the caller logged `entry`.
fn own(caller: &Caller, entry: &Value) -> Result<(), ApiError> {
    if entry["created_by"]["gid"] == caller.user_gid.as_str() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Only the user who logged a time tracking entry can change it",
        ))
    }
}

async fn get_entry(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(entry_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let entry = entry(&sandbox.world(), &caller, &entry_gid)?;
    Ok(full_record(&sandbox, &entry, &params))
}

async fn update_entry(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(entry_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let entry = {
        let mut world = sandbox.world();
        let mut entry = entry(&world, &caller, &entry_gid)?;
        own(&caller, &entry)?;
        apply_fields(&world, &caller, &mut entry, input)?;
        store(&mut world, &entry);
        entry
    };
    Ok(full_record(&sandbox, &entry, &params))
}

async fn delete_entry(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(entry_gid): Path<String>,
) -> Result<Response, ApiError> {
    let mut world = sandbox.world();
    let entry = entry(&world, &caller, &entry_gid)?;
    own(&caller, &entry)?;
    world.remove(&entry_gid);
    Ok(empty())
}
