//! Custom fields: definitions per workspace, their settings on projects, and the values tasks
//! carry (validated against the field's type and enum options before they are written).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::objects::{
    JsonBody, boolean, created_at, empty, full_record, gid, gid_list, gid_of, in_workspace,
    member_workspace, name_ref, object, ref_gids, required, string, user_workspaces, view, visible,
    with_options, workspace_of,
};
use super::{Caller, Params, body_data, created, page};
use crate::Sandbox;
use crate::error::ApiError;
use crate::world::World;

/// The custom field types the sandbox knows.
const TYPES: &[&str] = &["text", "number", "enum", "multi_enum", "date", "people"];

/// The most enum options one field has in Asana.
const MAX_ENUM_OPTIONS: usize = 500;

/// The longest text value Asana accepts.
const MAX_TEXT: usize = 1024;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/custom_fields", post(create_field))
        .route("/custom_fields/{custom_field_gid}", get(get_field))
        .route(
            "/custom_fields/{custom_field_gid}/enum_options",
            post(add_enum_option),
        )
        .route(
            "/workspaces/{workspace_gid}/custom_fields",
            get(workspace_fields),
        )
        .route(
            "/projects/{project_gid}/custom_field_settings",
            get(project_settings),
        )
        .route(
            "/projects/{project_gid}/addCustomFieldSetting",
            post(add_setting),
        )
        .route(
            "/projects/{project_gid}/removeCustomFieldSetting",
            post(remove_setting),
        )
}

/// A definition's compact form.
fn compact_field(field: &Value) -> Value {
    let mut out = Map::new();
    for key in [
        "gid",
        "resource_type",
        "name",
        "resource_subtype",
        "type",
        "enum_options",
        "enabled",
        "is_formula_field",
    ] {
        if let Some(value) = field.get(key) {
            out.insert(key.to_owned(), value.clone());
        }
    }
    Value::Object(out)
}

async fn get_field(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(field_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let field = visible(
        &sandbox.world(),
        &caller,
        &field_gid,
        "custom_field",
        "custom_field",
    )?;
    Ok(full_record(&sandbox, &field, &params))
}

async fn workspace_fields(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(workspace_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        member_workspace(&world, &caller, &workspace_gid, "workspace")?;
        world
            .all("custom_field", |f| {
                f["workspace"]["gid"] == workspace_gid.as_str()
            })
            .map(|f| view(&world, f, &params, compact_field))
            .collect()
    };
    page(
        &sandbox,
        items,
        &params,
        &format!("/workspaces/{workspace_gid}/custom_fields"),
    )
}

/// Enum options from a create request, each with a new gid.
fn enum_options(world: &mut World, value: &Value) -> Result<Vec<Value>, ApiError> {
    let items = value
        .as_array()
        .ok_or_else(|| ApiError::bad_request("enum_options: Must be a list"))?;
    if items.len() > MAX_ENUM_OPTIONS {
        return Err(too_many_options());
    }
    items
        .iter()
        .map(|item| enum_option(world, item, "enum_options."))
        .collect()
}

/// One enum option with a new gid; `prefix` names where it came from in errors.
fn enum_option(world: &mut World, item: &Value, prefix: &str) -> Result<Value, ApiError> {
    let name = string(&item["name"], &format!("{prefix}name"))?;
    if name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{prefix}name: Missing input"
        )));
    }
    let enabled = match &item["enabled"] {
        Value::Null => true,
        other => boolean(other, &format!("{prefix}enabled"))?,
    };
    Ok(json!({
        "gid": world.new_gid(),
        "resource_type": "enum_option",
        "name": name,
        "enabled": enabled,
        "color": item["color"].as_str().unwrap_or("none"),
    }))
}

fn too_many_options() -> ApiError {
    ApiError::bad_request(format!(
        "enum_options: A custom field has at most {MAX_ENUM_OPTIONS} enum options"
    ))
}

/// `POST /custom_fields/{gid}/enum_options`: a new option at the end of an enum or multi-enum
/// field's list, or before or after one of its options (`insert_before`, `insert_after`).
/// Tasks carrying the field see the new list.
async fn add_enum_option(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(field_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let option = {
        let mut world = sandbox.world();
        let field = visible(&world, &caller, &field_gid, "custom_field", "custom_field")?;
        if !matches!(field["type"].as_str(), Some("enum" | "multi_enum")) {
            return Err(ApiError::bad_request(
                "custom_field: Only enum and multi_enum fields have enum options",
            ));
        }
        let mut options = field["enum_options"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if options.len() >= MAX_ENUM_OPTIONS {
            return Err(too_many_options());
        }
        let position = match (input.get("insert_before"), input.get("insert_after")) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "insert_before: Cannot be given with insert_after",
                ));
            }
            (Some(anchor), None) => anchor_index(&options, anchor, "insert_before")?,
            (None, Some(anchor)) => anchor_index(&options, anchor, "insert_after")? + 1,
            (None, None) => options.len(),
        };
        let option = enum_option(&mut world, &Value::Object(input.clone()), "")?;
        options.insert(position, option.clone());
        let options = Value::Array(options);
        if let Some(stored) = world.get_mut(&field_gid) {
            stored["enum_options"] = options.clone();
        }
        let carriers: Vec<String> = world
            .all("task", |t| {
                t["custom_fields"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["gid"] == field_gid.as_str()))
            })
            .map(gid)
            .collect();
        for task_gid in carriers {
            if let Some(entry) = world
                .get_mut(&task_gid)
                .and_then(|t| t["custom_fields"].as_array_mut())
                .and_then(|e| e.iter_mut().find(|e| e["gid"] == field_gid.as_str()))
            {
                entry["enum_options"] = options.clone();
            }
        }
        option
    };
    Ok(created(option))
}

/// Where the option `anchor` names is in `options`; 400 when it is not one of them.
fn anchor_index(options: &[Value], anchor: &Value, field: &str) -> Result<usize, ApiError> {
    let anchor = gid_of(anchor, field)?;
    options
        .iter()
        .position(|o| o["gid"] == anchor.as_str())
        .ok_or_else(|| ApiError::bad_request(format!("{field}: Not an enum option of this field")))
}

async fn create_field(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let field = {
        let mut world = sandbox.world();
        let workspace_gid = gid_of(required(input, "workspace")?, "workspace")?;
        let workspace = member_workspace(&world, &caller, &workspace_gid, "workspace")?;
        let name = string(required(input, "name")?, "name")?;
        let subtype = input
            .get("resource_subtype")
            .or_else(|| input.get("type"))
            .filter(|v| !v.is_null())
            .ok_or_else(|| ApiError::bad_request("resource_subtype: Missing input"))
            .and_then(|v| string(v, "resource_subtype"))?;
        if !TYPES.contains(&subtype.as_str()) {
            return Err(ApiError::bad_request(format!(
                "resource_subtype: Unknown custom field type {subtype}"
            )));
        }
        let taken = world
            .all("custom_field", |f| {
                f["workspace"]["gid"] == workspace_gid.as_str() && f["name"] == name.as_str()
            })
            .next()
            .is_some();
        if taken {
            return Err(ApiError::bad_request(
                "name: A custom field with this name already exists in the workspace",
            ));
        }
        let mut field = json!({
            "resource_type": "custom_field",
            "resource_subtype": subtype,
            "type": subtype,
            "name": name,
            "description": input.get("description").and_then(Value::as_str).unwrap_or(""),
            "enabled": true,
            "is_formula_field": false,
            "is_global_to_workspace": true,
            "workspace": name_ref(&workspace),
            "created_by": world.get(&caller.user_gid).map(name_ref),
        });
        match subtype.as_str() {
            "enum" | "multi_enum" => {
                let options = match input.get("enum_options") {
                    Some(value) => enum_options(&mut world, value)?,
                    None => Vec::new(),
                };
                field["enum_options"] = Value::Array(options);
            }
            "number" => {
                let precision = match input.get("precision") {
                    None | Some(Value::Null) => 0,
                    Some(value) => value.as_u64().filter(|p| *p <= 6).ok_or_else(|| {
                        ApiError::bad_request("precision: Must be between 0 and 6")
                    })?,
                };
                field["precision"] = json!(precision);
            }
            _ => {}
        }
        world.insert(object(field))
    };
    Ok(created_at(&sandbox, &field, &params, "/custom_fields"))
}

async fn project_settings(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(project_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        visible(&world, &caller, &project_gid, "project", "project")?;
        settings_of(&world, &project_gid)
            .map(|s| view(&world, s, &params, Value::clone))
            .collect()
    };
    page(
        &sandbox,
        items,
        &params,
        &format!("/projects/{project_gid}/custom_field_settings"),
    )
}

/// The custom field settings of a project.
pub fn settings_of<'a>(world: &'a World, project_gid: &'a str) -> impl Iterator<Item = &'a Value> {
    world.all("custom_field_setting", move |s| {
        s["parent"]["gid"] == project_gid
    })
}

async fn add_setting(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(project_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let setting = {
        let mut world = sandbox.world();
        let project = visible(&world, &caller, &project_gid, "project", "project")?;
        let workspace_gid = workspace_of(&world, &project).unwrap_or_default();
        let field = in_workspace(
            &world,
            &caller,
            required(input, "custom_field")?,
            &["custom_field"],
            "custom_field",
            &workspace_gid,
        )?;
        let field_gid = gid(&field);
        if settings_of(&world, &project_gid).any(|s| s["custom_field"]["gid"] == field_gid.as_str())
        {
            return Err(ApiError::bad_request(
                "custom_field: The custom field is already on the project",
            ));
        }
        let is_important = match input.get("is_important") {
            None | Some(Value::Null) => false,
            Some(value) => boolean(value, "is_important")?,
        };
        let setting = world.insert(object(json!({
            "resource_type": "custom_field_setting",
            "is_important": is_important,
            "project": name_ref(&project),
            "parent": name_ref(&project),
            "custom_field": field,
        })));
        let tasks: Vec<String> = world
            .all("task", |t| ref_gids(t, "projects").contains(&project_gid))
            .map(gid)
            .collect();
        for task_gid in tasks {
            if let Some(task) = world.get_mut(&task_gid) {
                add_empty_value(task, &field);
            }
        }
        setting
    };
    Ok(full_record(&sandbox, &setting, &params))
}

async fn remove_setting(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(project_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let mut world = sandbox.world();
    visible(&world, &caller, &project_gid, "project", "project")?;
    let field_gid = gid_of(required(input, "custom_field")?, "custom_field")?;
    let setting = settings_of(&world, &project_gid)
        .find(|s| s["custom_field"]["gid"] == field_gid.as_str())
        .map(gid)
        .ok_or_else(|| {
            ApiError::bad_request("custom_field: The custom field is not on the project")
        })?;
    world.remove(&setting);
    Ok(empty())
}

/// The value entry a task carries for `field` with no value set.
fn empty_value(field: &Value) -> Value {
    let mut entry = json!({
        "gid": field["gid"],
        "resource_type": "custom_field",
        "name": field["name"],
        "resource_subtype": field["resource_subtype"],
        "type": field["type"],
        "enabled": true,
        "display_value": null,
    });
    match field["type"].as_str().unwrap_or_default() {
        "text" => entry["text_value"] = Value::Null,
        "number" => {
            entry["number_value"] = Value::Null;
            entry["precision"] = field["precision"].clone();
        }
        "enum" => {
            entry["enum_value"] = Value::Null;
            entry["enum_options"] = field["enum_options"].clone();
        }
        "multi_enum" => {
            entry["multi_enum_values"] = json!([]);
            entry["enum_options"] = field["enum_options"].clone();
        }
        "date" => entry["date_value"] = Value::Null,
        "people" => entry["people_value"] = json!([]),
        _ => {}
    }
    entry
}

/// Gives `task` an empty entry for `field` unless it has one.
pub fn add_empty_value(task: &mut Value, field: &Value) {
    if !task["custom_fields"].is_array() {
        task["custom_fields"] = json!([]);
    }
    if let Some(entries) = task["custom_fields"].as_array_mut()
        && !entries.iter().any(|e| e["gid"] == field["gid"])
    {
        entries.push(empty_value(field));
    }
}

/// Gives `task` empty entries for the fields set on `project_gid`.
pub fn add_project_fields(world: &World, task: &mut Value, project_gid: &str) {
    for setting in settings_of(world, project_gid) {
        add_empty_value(task, &setting["custom_field"]);
    }
}

/// Writes `{field_gid: value}` into the task's `custom_fields`, validating every value before
/// anything changes; returns the entries that changed.
pub fn set_values(
    world: &World,
    caller: &Caller,
    task: &mut Value,
    values: &Value,
) -> Result<Vec<Value>, ApiError> {
    let values = values
        .as_object()
        .ok_or_else(|| ApiError::bad_request("custom_fields: Must be an object of {gid: value}"))?;
    let workspace_gid = task["workspace"]["gid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let projects = ref_gids(task, "projects");
    let mut entries = Vec::new();
    for (field_gid, value) in values {
        let field = in_workspace(
            world,
            caller,
            &json!(field_gid),
            &["custom_field"],
            "custom_fields",
            &workspace_gid,
        )?;
        let on_task = projects
            .iter()
            .any(|p| settings_of(world, p).any(|s| s["custom_field"]["gid"] == field_gid.as_str()))
            || task["custom_fields"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["gid"] == field_gid.as_str()));
        if !on_task {
            return Err(ApiError::bad_request(format!(
                "custom_fields: Custom field with ID {field_gid} is not on given object"
            )));
        }
        entries.push(value_entry(world, &field, value, &workspace_gid)?);
    }
    let mut changed = Vec::new();
    for entry in entries {
        add_empty_value(task, &entry);
        if let Some(slot) = task["custom_fields"]
            .as_array_mut()
            .and_then(|all| all.iter_mut().find(|e| e["gid"] == entry["gid"]))
            && *slot != entry
        {
            *slot = entry.clone();
            changed.push(entry);
        }
    }
    Ok(changed)
}

fn invalid(field: &Value, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "custom_fields: {} (custom field {}): {why}",
        field["name"].as_str().unwrap_or_default(),
        field["gid"].as_str().unwrap_or_default()
    ))
}

/// The enabled option of `field` named by `value`.
fn option(field: &Value, value: &Value) -> Result<Value, ApiError> {
    let gid = value
        .as_str()
        .ok_or_else(|| invalid(field, "enum values are enum option gids"))?;
    field["enum_options"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["gid"] == gid && o["enabled"] != false)
        .cloned()
        .ok_or_else(|| invalid(field, "not an enabled option of this field"))
}

/// The entry a task carries for `field` set to `value`, or 400 when the value does not fit.
fn value_entry(
    world: &World,
    field: &Value,
    value: &Value,
    workspace_gid: &str,
) -> Result<Value, ApiError> {
    let mut entry = empty_value(field);
    if value.is_null() {
        return Ok(entry);
    }
    match field["type"].as_str().unwrap_or_default() {
        "text" => {
            let text = value
                .as_str()
                .ok_or_else(|| invalid(field, "text fields take a string"))?;
            if text.chars().count() > MAX_TEXT {
                return Err(invalid(field, "text is longer than 1024 characters"));
            }
            entry["text_value"] = json!(text);
            entry["display_value"] = json!(text);
        }
        "number" => {
            let number = value
                .as_f64()
                .ok_or_else(|| invalid(field, "number fields take a number"))?;
            let precision = usize::try_from(field["precision"].as_u64().unwrap_or(0)).unwrap_or(0);
            entry["number_value"] = value.clone();
            entry["display_value"] = json!(format!("{number:.precision$}"));
        }
        "enum" => {
            let option = option(field, value)?;
            entry["display_value"] = option["name"].clone();
            entry["enum_value"] = option;
        }
        "multi_enum" => {
            let options = value
                .as_array()
                .ok_or_else(|| invalid(field, "multi_enum fields take a list of option gids"))?
                .iter()
                .map(|v| option(field, v))
                .collect::<Result<Vec<_>, _>>()?;
            let names: Vec<&str> = options.iter().filter_map(|o| o["name"].as_str()).collect();
            entry["display_value"] = json!(names.join(", "));
            entry["multi_enum_values"] = Value::Array(options);
        }
        "date" => {
            let date = value["date"]
                .as_str()
                .filter(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok())
                .ok_or_else(|| invalid(field, "date fields take {\"date\": \"YYYY-MM-DD\"}"))?;
            entry["date_value"] = json!({"date": date, "date_time": null});
            entry["display_value"] = json!(date);
        }
        "people" => {
            let gids = gid_list(value, "custom_fields")?;
            let mut people = Vec::new();
            for user_gid in gids {
                let user = world
                    .get_typed(&user_gid, "user")
                    .filter(|u| {
                        user_workspaces(world, &gid(u))
                            .iter()
                            .any(|w| w == workspace_gid)
                    })
                    .ok_or_else(|| {
                        invalid(field, "people fields take user gids of the workspace")
                    })?;
                people.push(name_ref(user));
            }
            let names: Vec<&str> = people.iter().filter_map(|p| p["name"].as_str()).collect();
            entry["display_value"] = json!(names.join(", "));
            entry["people_value"] = Value::Array(people);
        }
        _ => {
            return Err(invalid(
                field,
                "this field type cannot be set through the API",
            ));
        }
    }
    Ok(entry)
}
