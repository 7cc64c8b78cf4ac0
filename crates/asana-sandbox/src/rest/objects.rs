//! What the resource families share: the JSON body extractor, finding objects the caller may
//! see (only in the caller's workspaces, 404 otherwise), reading and validating request fields,
//! and the shapes of references and changes.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{BASE, Caller, Params, created, data, shape};
use crate::Sandbox;
use crate::error::ApiError;
use crate::world::{World, compact_ref};

/// A JSON request body; an empty body reads as `null`, malformed JSON is a 400 in Asana's
/// envelope (axum's own `Json` would answer 415/422 in plain text).
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|_| ApiError::bad_request("Could not read the request body"))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Value::Null));
        }
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|_| ApiError::bad_request("Could not parse request data, invalid JSON"))
    }
}

/// Now, as Asana writes timestamps.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `{gid, resource_type, name, resource_subtype?}`: how full records refer to other objects.
pub fn name_ref(object: &Value) -> Value {
    let mut reference = compact_ref(object);
    reference["name"] = object["name"].clone();
    reference
}

/// `value` as a JSON object map (empty when it is not an object).
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The gids of the workspaces `user_gid` belongs to.
pub fn user_workspaces(world: &World, user_gid: &str) -> Vec<String> {
    world
        .get_typed(user_gid, "user")
        .and_then(|u| u["workspaces"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|w| w["gid"].as_str().map(str::to_owned))
        .collect()
}

/// The workspace an object lives in: its own `workspace` (or a team's `organization`), or that
/// of what it hangs off (a section's project, a story's target, a status update's parent…).
pub fn workspace_of(world: &World, object: &Value) -> Option<String> {
    workspace_within(world, object, 0)
}

fn workspace_within(world: &World, object: &Value, depth: u8) -> Option<String> {
    if object["resource_type"] == "workspace" {
        return object["gid"].as_str().map(str::to_owned);
    }
    for key in ["workspace", "organization"] {
        if let Some(gid) = object[key]["gid"].as_str() {
            return Some(gid.to_owned());
        }
    }
    if depth >= 4 {
        return None;
    }
    ["project", "target", "parent", "task"]
        .iter()
        .filter_map(|key| object[*key]["gid"].as_str())
        .filter_map(|gid| world.get(gid))
        .find_map(|owner| workspace_within(world, owner, depth + 1))
}

/// `not found` the way Asana names the field: `"<field>: Not a recognized ID"`.
pub fn unknown(field: &str) -> ApiError {
    ApiError::not_found(format!("{field}: Not a recognized ID"))
}

/// Whether `workspace_gid` is on a paid plan.
pub fn is_paid(world: &World, workspace_gid: &str) -> bool {
    world
        .get(workspace_gid)
        .is_some_and(|w| w["_sandbox_paid"] == true)
}

/// 402 unless `workspace_gid` is on a paid plan.
pub fn require_paid(world: &World, workspace_gid: &str) -> Result<(), ApiError> {
    if is_paid(world, workspace_gid) {
        Ok(())
    } else {
        Err(ApiError::payment_required())
    }
}

/// The object `gid` if it has one of `types` and lives in one of the caller's workspaces;
/// otherwise 404 naming `field` (Asana does not reveal objects the caller cannot see).
pub fn visible_any(
    world: &World,
    caller: &Caller,
    gid: &str,
    types: &[&str],
    field: &str,
) -> Result<Value, ApiError> {
    let object = world
        .get(gid)
        .filter(|o| types.iter().any(|t| o["resource_type"] == *t))
        .ok_or_else(|| unknown(field))?;
    let workspaces = user_workspaces(world, &caller.user_gid);
    match workspace_of(world, object) {
        Some(workspace) if workspaces.contains(&workspace) => Ok(object.clone()),
        _ => Err(unknown(field)),
    }
}

/// [`visible_any`] for one resource type.
pub fn visible(
    world: &World,
    caller: &Caller,
    gid: &str,
    resource_type: &str,
    field: &str,
) -> Result<Value, ApiError> {
    visible_any(world, caller, gid, &[resource_type], field)
}

/// A workspace the caller belongs to, or 404 naming `field`.
pub fn member_workspace(
    world: &World,
    caller: &Caller,
    gid: &str,
    field: &str,
) -> Result<Value, ApiError> {
    visible(world, caller, gid, "workspace", field)
}

/// A gid given as a string, a number or a `{gid}` object; 400 otherwise.
pub fn gid_of(value: &Value, field: &str) -> Result<String, ApiError> {
    match value {
        Value::String(gid) if !gid.is_empty() => Ok(gid.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Object(map) => map
            .get("gid")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request(format!("{field}: Not a valid gid"))),
        _ => Err(ApiError::bad_request(format!("{field}: Not a valid gid"))),
    }
}

/// A list of gids given as an array or a comma-separated string.
pub fn gid_list(value: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    match value {
        Value::Array(items) => items.iter().map(|item| gid_of(item, field)).collect(),
        Value::String(text) => Ok(text
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect()),
        _ => Err(ApiError::bad_request(format!(
            "{field}: Must be a list of gids"
        ))),
    }
}

/// `data[field]`, or 400 `"<field>: Missing input"` when absent or null.
pub fn required<'a>(data: &'a Map<String, Value>, field: &str) -> Result<&'a Value, ApiError> {
    data.get(field)
        .filter(|v| !v.is_null())
        .ok_or_else(|| ApiError::bad_request(format!("{field}: Missing input")))
}

/// A string field, or 400.
pub fn string(value: &Value, field: &str) -> Result<String, ApiError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request(format!("{field}: Value is not a string")))
}

/// A boolean field, or 400.
pub fn boolean(value: &Value, field: &str) -> Result<bool, ApiError> {
    value
        .as_bool()
        .ok_or_else(|| ApiError::bad_request(format!("{field}: Value is not a boolean")))
}

/// A date field (`YYYY-MM-DD` or null), or 400.
pub fn date(value: &Value, field: &str) -> Result<Value, ApiError> {
    match value {
        Value::Null => Ok(Value::Null),
        Value::String(text) if NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() => {
            Ok(value.clone())
        }
        _ => Err(ApiError::bad_request(format!(
            "{field}: Must be a date in the format YYYY-MM-DD"
        ))),
    }
}

/// A date-time field (RFC 3339 or null), or 400.
pub fn date_time(value: &Value, field: &str) -> Result<Value, ApiError> {
    match value {
        Value::Null => Ok(Value::Null),
        Value::String(text) if DateTime::parse_from_rfc3339(text).is_ok() => Ok(value.clone()),
        _ => Err(ApiError::bad_request(format!(
            "{field}: Must be a date-time in ISO 8601 format"
        ))),
    }
}

/// A timestamp parameter (`now`, a date-time or a date) as a UTC instant, or 400.
pub fn instant(text: &str, field: &str) -> Result<DateTime<Utc>, ApiError> {
    if text == "now" {
        return Ok(Utc::now());
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| ApiError::bad_request(format!("{field}: Not a valid date-time")))
}

/// The instant stored in `object[field]`, if any.
pub fn stored_instant(object: &Value, field: &str) -> Option<DateTime<Utc>> {
    object[field]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// 400 for a field of `data` that this write cannot set (a task's projects are changed with
/// `addProject`, not `PUT`). Other unknown and read-only fields are ignored, as Asana does.
pub fn refuse(data: &Map<String, Value>, fields: &[&str]) -> Result<(), ApiError> {
    match fields.iter().find(|f| data.contains_key(**f)) {
        Some(field) => Err(ApiError::bad_request(format!(
            "{field}: Cannot write this property"
        ))),
        None => Ok(()),
    }
}

/// Rich text must be XML wrapped in `<body>…</body>`; returns its plain text.
pub fn rich_text(value: &Value, field: &str) -> Result<String, ApiError> {
    let html = string(value, field)?;
    let trimmed = html.trim();
    let balanced = trimmed.matches('<').count() == trimmed.matches('>').count();
    if !(trimmed.starts_with("<body>") && trimmed.ends_with("</body>") && balanced) {
        return Err(ApiError::bad_request(format!(
            "{field}: XML is invalid; it must be wrapped in <body></body>"
        )));
    }
    let mut text = String::new();
    let mut in_tag = false;
    for c in trimmed.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    Ok(text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&"))
}

/// Plain text as Asana's rich text.
pub fn as_html(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!("<body>{escaped}</body>")
}

/// The user `named` names: `me` (the caller), an email address or a gid.
pub fn named_user(world: &World, caller: &Caller, named: &str) -> Option<Value> {
    match named {
        "me" => world.get_typed(&caller.user_gid, "user").cloned(),
        email if email.contains('@') => world.all("user", |u| u["email"] == email).next().cloned(),
        gid => world.get_typed(gid, "user").cloned(),
    }
}

/// A `{gid, resource_type, name}` reference to the caller (null if the user is gone), for
/// `created_by`, `owner`, `author` and the like.
pub fn caller_ref(world: &World, caller: &Caller) -> Value {
    world
        .get_typed(&caller.user_gid, "user")
        .map(name_ref)
        .unwrap_or(Value::Null)
}

/// A user named by gid, `me` or email who belongs to `workspace_gid`: 404 when unknown or not
/// visible to the caller, 400 when in another workspace.
pub fn workspace_user(
    world: &World,
    caller: &Caller,
    value: &Value,
    field: &str,
    workspace_gid: &str,
) -> Result<Value, ApiError> {
    let named = gid_of(value, field)?;
    let user = named_user(world, caller, &named).ok_or_else(|| unknown(field))?;
    let gid = user["gid"].as_str().unwrap_or_default();
    let mine = user_workspaces(world, &caller.user_gid);
    let theirs = user_workspaces(world, gid);
    if !theirs.iter().any(|w| mine.contains(w)) {
        return Err(unknown(field));
    }
    if !theirs.iter().any(|w| w == workspace_gid) {
        return Err(other_workspace(field));
    }
    Ok(user)
}

/// Adds the users listed in `input[field]` (if given) to the array `object[field]`, each
/// checked with [`workspace_user`]: a new object's `followers` or `members`.
pub fn add_users(
    world: &World,
    caller: &Caller,
    object: &mut Value,
    input: &Map<String, Value>,
    field: &str,
    workspace_gid: &str,
) -> Result<(), ApiError> {
    if let Some(value) = input.get(field).filter(|v| !v.is_null()) {
        for named in gid_list(value, field)? {
            let user = workspace_user(world, caller, &json!(named), field, workspace_gid)?;
            push_ref(object, field, name_ref(&user));
        }
    }
    Ok(())
}

/// 400 for a write that names an object of another workspace.
pub fn other_workspace(field: &str) -> ApiError {
    ApiError::bad_request(format!("{field}: The object is in a different workspace"))
}

/// An object of one of `types` named by `value`, visible to the caller (404 otherwise) and in
/// `workspace_gid` (400 otherwise).
pub fn in_workspace(
    world: &World,
    caller: &Caller,
    value: &Value,
    types: &[&str],
    field: &str,
    workspace_gid: &str,
) -> Result<Value, ApiError> {
    let gid = gid_of(value, field)?;
    let object = visible_any(world, caller, &gid, types, field)?;
    if workspace_of(world, &object).as_deref() == Some(workspace_gid) {
        Ok(object)
    } else {
        Err(other_workspace(field))
    }
}

/// Query parameters plus `options.fields` / `options.limit` / `options.offset` from a JSON body.
pub fn with_options(mut params: Params, body: &Value) -> Params {
    let options = &body["options"];
    if let Some(fields) = options["fields"].as_array() {
        let fields: Vec<&str> = fields.iter().filter_map(Value::as_str).collect();
        params.insert("opt_fields".into(), fields.join(","));
    }
    for key in ["limit", "offset"] {
        match &options[key] {
            Value::String(text) => {
                params.insert(key.into(), text.clone());
            }
            Value::Number(number) => {
                params.insert(key.into(), number.to_string());
            }
            _ => {}
        }
    }
    params
}

/// `object` with the references that dotted `opt_fields` reach into (`assignee.email`,
/// `projects.team.name`) replaced by the full objects they name, so those paths find fields a
/// stored reference does not carry.
fn hydrate(world: &World, object: &Value, params: &Params) -> Value {
    let mut out = object.clone();
    let Some(fields) = params.get("opt_fields") else {
        return out;
    };
    for path in fields.split(',').map(str::trim) {
        expand(world, &mut out, path, 0);
    }
    out
}

fn expand(world: &World, value: &mut Value, path: &str, depth: u8) {
    let Some((head, rest)) = path.split_once('.') else {
        return;
    };
    if depth > 4 {
        return;
    }
    let full = |reference: &Value| -> Option<Value> {
        let stored = world.get(reference["gid"].as_str()?)?;
        let mut merged = stored.clone();
        if let (Some(merged), Some(extra)) = (merged.as_object_mut(), reference.as_object()) {
            for (key, value) in extra {
                merged.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        Some(merged)
    };
    match value.get_mut(head) {
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(expanded) = full(item) {
                    *item = expanded;
                }
                expand(world, item, rest, depth + 1);
            }
        }
        Some(item @ Value::Object(_)) => {
            if let Some(expanded) = full(item) {
                *item = expanded;
            }
            expand(world, item, rest, depth + 1);
        }
        _ => {}
    }
}

/// `object` shaped for the caller: [`shape`] after following the references `opt_fields`
/// reaches into.
pub fn view(
    world: &World,
    object: &Value,
    params: &Params,
    default: impl Fn(&Value) -> Value,
) -> Value {
    shape(&hydrate(world, object, params), params, default)
}

/// 201 with the created record (shaped by `opt_fields`) and a `Location` header.
pub fn created_at(
    sandbox: &Sandbox,
    object: &Value,
    params: &Params,
    collection: &str,
) -> Response {
    let shaped = view(&sandbox.world(), object, params, Value::clone);
    let mut response = created(shaped);
    let location = format!(
        "{}{BASE}{collection}/{}",
        sandbox.config().public_url,
        object["gid"].as_str().unwrap_or_default()
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.into_response()
}

/// The full record `object` (shaped by `opt_fields`) in the `data` envelope: what reads and
/// updates of one object answer.
pub fn full_record(sandbox: &Sandbox, object: &Value, params: &Params) -> Response {
    data(view(&sandbox.world(), object, params, Value::clone))
}

/// `{"data": {}}`, what Asana answers for deletions and relationship calls.
pub fn empty() -> Response {
    data(json!({}))
}

/// A field change as events carry it.
pub fn changed(field: &str, new_value: &Value) -> Value {
    json!({"field": field, "action": "changed", "new_value": new_value})
}

/// An addition to a list field as events carry it.
pub fn list_added(field: &str, value: &Value) -> Value {
    json!({"field": field, "action": "added", "added_value": value})
}

/// A removal from a list field as events carry it.
pub fn list_removed(field: &str, value: &Value) -> Value {
    json!({"field": field, "action": "removed", "removed_value": value})
}

/// Adds `reference` to the array `object[field]` unless a member with its gid is there;
/// whether it was added.
pub fn push_ref(object: &mut Value, field: &str, reference: Value) -> bool {
    if !object[field].is_array() {
        object[field] = json!([]);
    }
    let Some(items) = object[field].as_array_mut() else {
        return false;
    };
    if items.iter().any(|i| i["gid"] == reference["gid"]) {
        return false;
    }
    items.push(reference);
    true
}

/// Removes the member with `gid` from the array `object[field]`; whether it was there.
pub fn remove_ref(object: &mut Value, field: &str, gid: &str) -> bool {
    let Some(items) = object[field].as_array_mut() else {
        return false;
    };
    let before = items.len();
    items.retain(|i| i["gid"] != gid);
    items.len() != before
}

/// Whether the array `object[field]` has a member with `gid`.
pub fn has_ref(object: &Value, field: &str, gid: &str) -> bool {
    object[field]
        .as_array()
        .is_some_and(|items| items.iter().any(|i| i["gid"] == gid))
}

/// The gids in the array of references `object[field]`.
pub fn ref_gids(object: &Value, field: &str) -> Vec<String> {
    object[field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["gid"].as_str().map(str::to_owned))
        .collect()
}

/// Replaces the stored object with `object` (same gid).
pub fn store(world: &mut World, object: &Value) {
    if let Some(slot) = object["gid"].as_str().and_then(|gid| world.get_mut(gid)) {
        *slot = object.clone();
    }
}

/// The gid of a stored object (empty for malformed ones, which the sandbox never stores).
pub fn gid(object: &Value) -> String {
    object["gid"].as_str().unwrap_or_default().to_owned()
}

/// Records `action` on `object` by the caller.
pub fn record(
    world: &mut World,
    caller: &Caller,
    action: &str,
    object: &Value,
    parent: Option<&Value>,
    change: Option<Value>,
    scope: Vec<String>,
) {
    world.record(
        Some(&caller.user_gid),
        action,
        object,
        parent,
        change,
        scope,
    );
}
