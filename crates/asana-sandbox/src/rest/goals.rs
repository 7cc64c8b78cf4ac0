//! Goals and their metric: list, create, read, update, delete, set the metric and its current
//! value. Goals are a paid feature: in a free workspace every call answers 402.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::objects::{
    JsonBody, add_users, as_html, boolean, caller_ref, created_at, date, empty, full_record, gid,
    gid_of, in_workspace, member_workspace, name_ref, object, refuse, require_paid, required,
    rich_text, store, string, view, visible, with_options, workspace_of, workspace_user,
};
use super::{Caller, Params, body_data, page};
use crate::Sandbox;
use crate::error::ApiError;
use crate::world::World;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/goals", get(list_goals).post(create_goal))
        .route(
            "/goals/{goal_gid}",
            get(get_goal).put(update_goal).delete(delete_goal),
        )
        .route("/goals/{goal_gid}/setMetric", post(set_metric))
        .route(
            "/goals/{goal_gid}/setMetricCurrentValue",
            post(set_metric_current_value),
        )
}

/// A goal's compact form: gid, resource_type, name, owner.
fn compact_goal(goal: &Value) -> Value {
    json!({
        "gid": goal["gid"],
        "resource_type": goal["resource_type"],
        "name": goal["name"],
        "owner": goal["owner"],
    })
}

/// The goal `goal_gid` the caller can see, in a paid workspace.
fn goal(world: &World, caller: &Caller, goal_gid: &str) -> Result<Value, ApiError> {
    let goal = visible(world, caller, goal_gid, "goal", "goal")?;
    require_paid(world, &workspace_of(world, &goal).unwrap_or_default())?;
    Ok(goal)
}

/// Applies `input` to `goal`.
fn apply_fields(
    world: &World,
    caller: &Caller,
    goal: &mut Value,
    input: &Map<String, Value>,
) -> Result<(), ApiError> {
    let workspace = workspace_of(world, goal).unwrap_or_default();
    for (key, value) in input {
        match key.as_str() {
            "name" => goal[key] = json!(string(value, key)?),
            "notes" => {
                let notes = string(value, key)?;
                goal["html_notes"] = json!(as_html(&notes));
                goal["notes"] = json!(notes);
            }
            "html_notes" => {
                goal["notes"] = json!(rich_text(value, key)?);
                goal["html_notes"] = value.clone();
            }
            "due_on" | "start_on" => goal[key.as_str()] = date(value, key)?,
            "is_workspace_level" | "liked" => goal[key.as_str()] = json!(boolean(value, key)?),
            "owner" => {
                goal["owner"] = match value {
                    Value::Null => Value::Null,
                    other => name_ref(&workspace_user(world, caller, other, key, &workspace)?),
                };
            }
            "team" => {
                goal["team"] = match value {
                    Value::Null => Value::Null,
                    other => name_ref(&in_workspace(
                        world,
                        caller,
                        other,
                        &["team"],
                        key,
                        &workspace,
                    )?),
                };
            }
            "time_period" => {
                goal["time_period"] = match value {
                    Value::Null => Value::Null,
                    other => json!({"gid": gid_of(other, key)?, "resource_type": "time_period"}),
                };
            }
            "status" => {
                goal["status"] = match value {
                    Value::Null => Value::Null,
                    other => json!(string(other, key)?),
                };
            }
            _ => {}
        }
    }
    Ok(())
}

async fn list_goals(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        let (field, scope_gid) = ["workspace", "team", "portfolio", "project"]
            .iter()
            .find_map(|k| params.get(*k).map(|g| (*k, g.clone())))
            .ok_or_else(|| {
                ApiError::bad_request("Must specify one of workspace, team, portfolio or project")
            })?;
        let workspace_gid = if field == "workspace" {
            gid(&member_workspace(&world, &caller, &scope_gid, "workspace")?)
        } else {
            let container = visible(&world, &caller, &scope_gid, field, field)?;
            workspace_of(&world, &container).unwrap_or_default()
        };
        require_paid(&world, &workspace_gid)?;
        let workspace_level = match params.get("is_workspace_level").map(String::as_str) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "is_workspace_level: Must be true or false",
                ));
            }
        };
        world
            .all("goal", |g| {
                let in_scope = match field {
                    "workspace" => g["workspace"]["gid"] == scope_gid.as_str(),
                    "team" => g["team"]["gid"] == scope_gid.as_str(),
                    // Goal relationships are not modelled, so no project or portfolio
                    // supports a goal.
                    _ => false,
                };
                in_scope && workspace_level.is_none_or(|w| g["is_workspace_level"] == w)
            })
            .map(|g| view(&world, g, &params, compact_goal))
            .collect()
    };
    page(&sandbox, items, &params, "/goals")
}

async fn create_goal(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let goal = {
        let mut world = sandbox.world();
        let workspace_gid = gid_of(required(input, "workspace")?, "workspace")?;
        let workspace = member_workspace(&world, &caller, &workspace_gid, "workspace")?;
        require_paid(&world, &workspace_gid)?;
        string(required(input, "name")?, "name")?;
        let me = caller_ref(&world, &caller);
        let mut goal = json!({
            "resource_type": "goal",
            "name": "",
            "notes": "",
            "html_notes": "<body></body>",
            "due_on": null,
            "start_on": null,
            "is_workspace_level": false,
            "liked": false,
            "likes": [],
            "num_likes": 0,
            "team": null,
            "workspace": name_ref(&workspace),
            "followers": [me],
            "time_period": null,
            "metric": null,
            "owner": me,
            "current_status_update": null,
            "status": null,
            "privacy_setting": "public_to_workspace",
            "custom_fields": [],
            "custom_field_settings": [],
        });
        apply_fields(&world, &caller, &mut goal, input)?;
        add_users(
            &world,
            &caller,
            &mut goal,
            input,
            "followers",
            &workspace_gid,
        )?;
        world.insert(object(goal))
    };
    Ok(created_at(&sandbox, &goal, &params, "/goals"))
}

async fn get_goal(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(goal_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let goal = goal(&sandbox.world(), &caller, &goal_gid)?;
    Ok(full_record(&sandbox, &goal, &params))
}

async fn update_goal(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(goal_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    refuse(input, &["workspace"])?;
    let params = with_options(params, &body);
    let goal = {
        let mut world = sandbox.world();
        let mut goal = goal(&world, &caller, &goal_gid)?;
        apply_fields(&world, &caller, &mut goal, input)?;
        store(&mut world, &goal);
        goal
    };
    Ok(full_record(&sandbox, &goal, &params))
}

async fn delete_goal(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(goal_gid): Path<String>,
) -> Result<Response, ApiError> {
    let mut world = sandbox.world();
    goal(&world, &caller, &goal_gid)?;
    world.remove(&goal_gid);
    Ok(empty())
}

/// A number field, or 400.
fn number(value: &Value, field: &str) -> Result<f64, ApiError> {
    value
        .as_f64()
        .ok_or_else(|| ApiError::bad_request(format!("{field}: Value is not a number")))
}

/// How a metric shows `value`.
fn display(metric: &Value, value: f64) -> String {
    let precision = usize::try_from(metric["precision"].as_u64().unwrap_or(0)).unwrap_or(0);
    match metric["unit"].as_str().unwrap_or("none") {
        "percentage" => format!("{:.precision$}%", value * 100.0),
        "currency" => format!(
            "{:.precision$} {}",
            value,
            metric["currency_code"].as_str().unwrap_or_default()
        ),
        _ => format!("{value:.precision$}"),
    }
}

async fn set_metric(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(goal_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let goal = {
        let mut world = sandbox.world();
        let mut goal = goal(&world, &caller, &goal_gid)?;
        let unit = match input.get("unit").filter(|u| !u.is_null()) {
            Some(value) => string(value, "unit")?,
            None => "none".into(),
        };
        if !["none", "currency", "percentage"].contains(&unit.as_str()) {
            return Err(ApiError::bad_request(format!("unit: Unknown unit {unit}")));
        }
        let currency_code = match input.get("currency_code").filter(|c| !c.is_null()) {
            Some(value) => json!(string(value, "currency_code")?),
            None if unit == "currency" => {
                return Err(ApiError::bad_request("currency_code: Missing input"));
            }
            None => Value::Null,
        };
        let precision = match input.get("precision").filter(|p| !p.is_null()) {
            Some(value) => value
                .as_u64()
                .filter(|p| *p <= 6)
                .ok_or_else(|| ApiError::bad_request("precision: Must be between 0 and 6"))?,
            None => 0,
        };
        let progress_source = match input.get("progress_source").filter(|p| !p.is_null()) {
            Some(value) => string(value, "progress_source")?,
            None => "manual".into(),
        };
        let initial = match input.get("initial_number_value").filter(|v| !v.is_null()) {
            Some(value) => number(value, "initial_number_value")?,
            None => 0.0,
        };
        let target = number(
            required(input, "target_number_value")?,
            "target_number_value",
        )?;
        let current = match input.get("current_number_value").filter(|v| !v.is_null()) {
            Some(value) => number(value, "current_number_value")?,
            None => initial,
        };
        let mut metric = json!({
            "gid": world.new_gid(),
            "resource_type": "metric",
            "resource_subtype": "number",
            "precision": precision,
            "unit": unit,
            "currency_code": currency_code,
            "initial_number_value": initial,
            "target_number_value": target,
            "current_number_value": current,
            "progress_source": progress_source,
            "is_custom_weight": false,
            "can_manage": true,
        });
        metric["current_display_value"] = json!(display(&metric, current));
        goal["metric"] = metric;
        store(&mut world, &goal);
        goal
    };
    Ok(full_record(&sandbox, &goal, &params))
}

async fn set_metric_current_value(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(goal_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let goal = {
        let mut world = sandbox.world();
        let mut goal = goal(&world, &caller, &goal_gid)?;
        if !goal["metric"].is_object() {
            return Err(ApiError::bad_request(
                "metric: The goal has no metric; set one with setMetric first",
            ));
        }
        let current = number(
            required(input, "current_number_value")?,
            "current_number_value",
        )?;
        goal["metric"]["current_number_value"] = json!(current);
        goal["metric"]["current_display_value"] = json!(display(&goal["metric"], current));
        store(&mut world, &goal);
        goal
    };
    Ok(full_record(&sandbox, &goal, &params))
}
