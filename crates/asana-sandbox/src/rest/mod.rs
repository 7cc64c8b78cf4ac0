//! The REST API under `/api/1.0`: authentication, limits and injected faults in one middleware,
//! then one module per resource family. Helpers here shape every answer the way Asana does:
//! the `data` envelope, compact records, `opt_fields`, and `limit`/`offset` pagination.

mod allocations;
mod attachments;
mod audit_log;
mod batch;
mod custom_fields;
mod goals;
pub(crate) mod objects;
mod portfolios;
mod projects;
mod search;
mod sections;
mod status_updates;
mod stories;
mod tags;
pub(crate) mod tasks;
mod teams;
mod time_tracking;
mod typeahead;
mod users;

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::tokens::Surface;
use crate::{Principal, Sandbox};

/// Fields the sandbox keeps for itself (e.g. whether a workspace is on a paid plan) start
/// with this and are never returned.
pub const INTERNAL: &str = "_sandbox_";

/// The REST base path.
pub const BASE: &str = "/api/1.0";

/// Query parameters, as given.
pub type Params = HashMap<String, String>;

/// Every REST route, behind authentication and limits.
pub fn routes(sandbox: Sandbox) -> Router {
    let api = Router::new()
        .merge(users::routes())
        .merge(attachments::routes())
        .merge(tasks::routes())
        .merge(custom_fields::routes())
        .merge(projects::routes())
        .merge(sections::routes())
        .merge(stories::routes())
        .merge(tags::routes())
        .merge(teams::routes())
        .merge(status_updates::routes())
        .merge(goals::routes())
        .merge(portfolios::routes())
        .merge(time_tracking::routes())
        .merge(allocations::routes())
        .merge(search::routes())
        .merge(typeahead::routes())
        .merge(batch::routes())
        .merge(audit_log::routes())
        .merge(crate::webhooks::rest_routes())
        .merge(crate::events::rest_routes())
        .fallback(|| async { ApiError::not_found("Not found") })
        .layer(axum::middleware::from_fn_with_state(
            sandbox.clone(),
            crate::spec::validate,
        ));
    Router::new()
        .nest(BASE, api)
        .layer(axum::middleware::from_fn_with_state(sandbox.clone(), admit))
        .with_state(sandbox)
}

/// Authenticates the bearer token for REST, applies injected faults, and holds a limit permit
/// for the whole request.
async fn admit(State(sandbox): State<Sandbox>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let principal = match bearer(&request).map(|t| sandbox.tokens().authenticate(t, Surface::Rest))
    {
        Some(Ok(principal)) => principal,
        Some(Err(error)) => return error.into_response(),
        None => return ApiError::unauthorized().into_response(),
    };
    let write = request.method() != Method::GET && request.method() != Method::HEAD;
    let search = path.ends_with("/search");
    let paid = sandbox.user_is_paid(&principal.user_gid);
    let permit = match sandbox
        .0
        .limits
        .admit(&principal.token_key, write, search, paid)
    {
        Ok(permit) => permit,
        Err(error) => return error.into_response(),
    };
    if let Some(response) = sandbox.apply_fault(&path).await {
        return response;
    }
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    drop(permit);
    response
}

/// The bearer token of a request, if it sent one.
pub fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl Sandbox {
    /// Whether `user_gid` belongs to a paid workspace (paid domains get the larger budget).
    pub fn user_is_paid(&self, user_gid: &str) -> bool {
        let world = self.world();
        world
            .get_typed(user_gid, "user")
            .and_then(|u| u["workspaces"].as_array())
            .is_some_and(|workspaces| {
                workspaces.iter().any(|w| {
                    w["gid"]
                        .as_str()
                        .and_then(|gid| world.get(gid))
                        .is_some_and(|w| w["_sandbox_paid"] == true)
                })
            })
    }
}

/// `{"data": value}` with 200.
pub fn data(value: Value) -> Response {
    Json(json!({ "data": value })).into_response()
}

/// `{"data": value}` with 201 Created.
pub fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(json!({ "data": value }))).into_response()
}

/// The compact form Asana lists return: gid, resource_type, name (and subtype).
pub fn compact(object: &Value) -> Value {
    let mut out = Map::new();
    for key in ["gid", "resource_type", "name", "resource_subtype"] {
        if let Some(v) = object.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

/// `object` as requested: the fields named by `opt_fields` (dotted paths reach into nested
/// objects; `gid` always comes back), or `default` when none are named.
pub fn shape(object: &Value, params: &Params, default: impl Fn(&Value) -> Value) -> Value {
    match params.get("opt_fields").filter(|f| !f.is_empty()) {
        None => {
            let mut shaped = default(object);
            if let Some(map) = shaped.as_object_mut() {
                map.retain(|key, _| !key.starts_with(INTERNAL));
            }
            shaped
        }
        Some(fields) => {
            let mut out = json!({"gid": object["gid"]});
            for field in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                select(object, &mut out, field);
            }
            out
        }
    }
}

fn select(source: &Value, target: &mut Value, path: &str) {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let Some(value) = source.get(head) else {
        return;
    };
    match (rest, value) {
        (None, _) => target[head] = value.clone(),
        (Some(rest), Value::Array(items)) => {
            let shaped: Vec<Value> = items
                .iter()
                .map(|item| {
                    let mut out = json!({"gid": item["gid"]});
                    select(item, &mut out, rest);
                    out
                })
                .collect();
            target[head] = Value::Array(shaped);
        }
        (Some(rest), Value::Object(_)) => {
            if !target[head].is_object() {
                target[head] = json!({"gid": value["gid"]});
            }
            select(value, &mut target[head], rest);
        }
        (Some(_), other) => target[head] = other.clone(),
    }
}

/// One page of `items` the way Asana pages: `limit` 1..100, an opaque `offset` that expires,
/// and `next_page {offset, path, uri}` when more remain and a limit was given. Without `limit`
/// every item comes back (Asana's grandfathered endpoints).
pub fn page(
    sandbox: &Sandbox,
    items: Vec<Value>,
    params: &Params,
    path: &str,
) -> Result<Response, ApiError> {
    let Some(limit) = params.get("limit") else {
        if params.contains_key("offset") {
            return Err(ApiError::bad_request("offset requires limit"));
        }
        return Ok(data(Value::Array(items)));
    };
    let limit: usize = limit
        .parse()
        .ok()
        .filter(|l| (1..=100).contains(l))
        .ok_or_else(|| ApiError::bad_request("limit: Must be between 1 and 100"))?;
    let start = match params.get("offset") {
        None => 0,
        Some(offset) => decode_offset(sandbox, offset)?,
    };
    let end = (start + limit).min(items.len());
    let next_page = if end < items.len() {
        let offset = encode_offset(end);
        let mut query: Vec<String> = params
            .iter()
            .filter(|(k, _)| k.as_str() != "offset")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        query.sort();
        query.push(format!("offset={offset}"));
        let relative = format!("{path}?{}", query.join("&"));
        json!({
            "offset": offset,
            "path": relative,
            "uri": format!("{}{BASE}{relative}", sandbox.config().public_url),
        })
    } else {
        Value::Null
    };
    let page: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    Ok(Json(json!({"data": page, "next_page": next_page})).into_response())
}

fn encode_offset(index: usize) -> String {
    hex::encode(format!("o1:{index}:{}", Utc::now().timestamp()))
}

fn decode_offset(sandbox: &Sandbox, offset: &str) -> Result<usize, ApiError> {
    let invalid =
        || ApiError::bad_request("offset: Your pagination token is invalid or has expired.");
    let text = hex::decode(offset)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    let mut parts = text.split(':');
    let (Some("o1"), Some(index), Some(issued)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let issued: i64 = issued.parse().map_err(|_| invalid())?;
    let age = Utc::now().timestamp() - issued;
    if age < 0 || age as u64 > sandbox.config().offset_lifetime.as_secs() {
        return Err(invalid());
    }
    index.parse().map_err(|_| invalid())
}

/// The `data` object of a JSON request body (`{"data": {...}}`), or 400.
pub fn body_data(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::bad_request("data: Missing input"))
}

/// The principal the middleware attached.
pub type Caller = axum::Extension<Principal>;
