//! The batch API (`POST /batch`): up to 10 actions, each dispatched in-process through the REST
//! router with the caller's own credentials, so every action is authenticated, validated and
//! counted against the limits like a request of its own. Actions run concurrently; results come
//! back in the order of the actions, with 200 for the batch even when every action failed. If
//! any action hit a rate limit, the whole batch answers 429.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::objects::JsonBody;
use super::{BASE, body_data, data};
use crate::Sandbox;
use crate::error::ApiError;

/// The most actions one batch may carry.
const MAX_ACTIONS: usize = 10;

/// The largest action response body read back.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new().route("/batch", post(batch))
}

/// One action's outcome as the batch reports it.
fn result(status: u16, headers: Value, body: Value) -> Value {
    json!({"status_code": status, "headers": headers, "body": body})
}

/// `text` percent-encoded for a query string.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A parameter value as text (lists comma-separated).
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The request an action stands for, or the 400 it earns.
fn request(action: &Value, authorization: Option<&str>) -> Result<Request<Body>, ApiError> {
    let path = action["relative_path"]
        .as_str()
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| ApiError::bad_request("relative_path: Missing input"))?;
    if path.contains('?') {
        return Err(ApiError::bad_request(
            "relative_path: Query parameters are not accepted here; put them in data",
        ));
    }
    if path.trim_end_matches('/') == "/batch" {
        return Err(ApiError::bad_request(
            "relative_path: A batch cannot contain another batch",
        ));
    }
    let method = match action["method"]
        .as_str()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("get") => Method::GET,
        Some("post") => Method::POST,
        Some("put") => Method::PUT,
        Some("delete") => Method::DELETE,
        Some("patch") => Method::PATCH,
        Some("head") => Method::HEAD,
        _ => {
            return Err(ApiError::bad_request(
                "method: Must be one of get, post, put, delete, patch, head",
            ));
        }
    };
    let reads = method == Method::GET || method == Method::HEAD || method == Method::DELETE;
    let mut query: Vec<(String, String)> = Vec::new();
    let empty = Map::new();
    if reads {
        for (key, value) in action["data"].as_object().unwrap_or(&empty) {
            query.push((key.clone(), text(value)));
        }
    }
    let options = action["options"].as_object().unwrap_or(&empty);
    for (key, value) in options {
        match key.as_str() {
            "limit" | "offset" => query.push((key.clone(), text(value))),
            "fields" => query.push(("opt_fields".into(), text(value))),
            _ => {}
        }
    }
    let mut uri = format!("{BASE}{path}");
    if !query.is_empty() {
        let pairs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        uri = format!("{uri}?{}", pairs.join("&"));
    }
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(authorization) = authorization {
        builder = builder.header(header::AUTHORIZATION, authorization);
    }
    let body = if reads {
        Body::empty()
    } else {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
        Body::from(json!({"data": action["data"]}).to_string())
    };
    builder
        .body(body)
        .map_err(|_| ApiError::bad_request("relative_path: Not a valid path"))
}

/// Runs `request` through the REST router and reports its outcome.
async fn dispatch(router: axum::Router, request: Request<Body>) -> Value {
    let Ok(response) = router.oneshot(request).await;
    let status = response.status().as_u16();
    let mut headers = Map::new();
    for name in [header::LOCATION, header::RETRY_AFTER] {
        if let Some(value) = response.headers().get(&name).and_then(|v| v.to_str().ok()) {
            headers.insert(name.as_str().to_owned(), json!(value));
        }
    }
    let body = axum::body::to_bytes(response.into_body(), MAX_RESPONSE)
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    result(status, Value::Object(headers), body)
}

async fn batch(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let actions = input
        .get("actions")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("actions: Missing input"))?;
    if actions.is_empty() {
        return Err(ApiError::bad_request(
            "actions: A batch needs at least one action",
        ));
    }
    if actions.len() > MAX_ACTIONS {
        return Err(ApiError::bad_request(format!(
            "actions: A batch may contain at most {MAX_ACTIONS} actions"
        )));
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let router = super::routes(sandbox.clone());
    let mut results = vec![Value::Null; actions.len()];
    let mut running = JoinSet::new();
    for (index, action) in actions.iter().enumerate() {
        match request(action, authorization) {
            Ok(request) => {
                let router = router.clone();
                running.spawn(async move { (index, dispatch(router, request).await) });
            }
            Err(error) => results[index] = result(error.status.as_u16(), json!({}), error.body()),
        }
    }
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok((index, outcome)) => results[index] = outcome,
            Err(_) => return Err(ApiError::server_error()),
        }
    }
    let throttled = results
        .iter()
        .filter(|r| r["status_code"] == 429)
        .filter_map(|r| r["headers"]["retry-after"].as_str()?.parse::<u64>().ok())
        .max();
    if let Some(retry_after) = throttled {
        return Err(ApiError::rate_limited(retry_after));
    }
    Ok(data(Value::Array(results)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_become_requests() -> Result<(), ApiError> {
        let get = request(
            &json!({"relative_path": "/tasks", "method": "GET",
                    "data": {"project": "1", "completed_since": "now"},
                    "options": {"limit": 2, "fields": ["name", "assignee.name"]}}),
            Some("Bearer x"),
        )?;
        let uri = get.uri().to_string();
        assert!(uri.starts_with("/api/1.0/tasks?"), "{uri}");
        assert!(uri.contains("limit=2"), "{uri}");
        assert!(uri.contains("opt_fields=name%2Cassignee.name"), "{uri}");
        let nested = request(&json!({"relative_path": "/batch", "method": "post"}), None);
        assert!(nested.is_err());
        let query = request(
            &json!({"relative_path": "/tasks?x=1", "method": "get"}),
            None,
        );
        assert!(query.is_err());
        Ok(())
    }
}
