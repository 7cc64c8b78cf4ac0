//! The MCP part of the control API, under `/_sandbox/mcp/` (each route first checks the control
//! key): the tool list (list, add a tool with a fixed result, edit, remove; every change sends
//! `notifications/tools/list_changed` to open streams), the open sessions (list, end all, so
//! clients meet a 404 and must initialize again), and whether the 2026-07-28 era is served.
//!
//! - `GET /_sandbox/mcp/tools` → `{"tools": [{"kind": "asana"|"fixed", "definition", "result"?}]}`
//! - `POST /_sandbox/mcp/tools` with `{"tool": Tool, "result"?: CallToolResult}` → 201
//! - `PATCH /_sandbox/mcp/tools/{name}` with any of `title`, `description`, `inputSchema`,
//!   `annotations`, `outputSchema` (`null` removes) → 200 with the new definition
//! - `DELETE /_sandbox/mcp/tools/{name}` → 204
//! - `GET /_sandbox/mcp/sessions`, `DELETE /_sandbox/mcp/sessions` → `{"ended": n}`
//! - `GET` / `PUT /_sandbox/mcp/settings` with `{"modern_protocol": bool}`

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Server;
use crate::error::ApiError;

pub(super) fn routes() -> Router<Server> {
    Router::new()
        .route("/_sandbox/mcp/tools", get(list_tools).post(add_tool))
        .route(
            "/_sandbox/mcp/tools/{name}",
            axum::routing::patch(modify_tool).delete(remove_tool),
        )
        .route(
            "/_sandbox/mcp/sessions",
            get(list_sessions).delete(end_sessions),
        )
        .route(
            "/_sandbox/mcp/settings",
            get(get_settings).put(put_settings),
        )
}

fn authorize(server: &Server, headers: &HeaderMap) -> Result<(), ApiError> {
    crate::control::authorize(server.sandbox(), headers)
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

async fn list_tools(
    State(server): State<Server>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&server, &headers)?;
    Ok(Json(json!({"tools": server.0.registry.describe()})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTool {
    tool: Value,
    #[serde(default)]
    result: Option<Value>,
}

async fn add_tool(
    State(server): State<Server>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&server, &headers)?;
    let new: NewTool = parse(&body)?;
    let definition = server.0.registry.add(new.tool, new.result)?;
    Ok((StatusCode::CREATED, Json(json!({"tool": definition}))).into_response())
}

async fn modify_tool(
    State(server): State<Server>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&server, &headers)?;
    let patch: Map<String, Value> = parse(&body)?;
    let definition = server.0.registry.modify(&name, &patch)?;
    Ok(Json(json!({"tool": definition})).into_response())
}

async fn remove_tool(
    State(server): State<Server>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&server, &headers)?;
    server.0.registry.remove(&name)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_sessions(
    State(server): State<Server>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&server, &headers)?;
    Ok(Json(json!({"sessions": server.0.sessions.describe()})).into_response())
}

async fn end_sessions(
    State(server): State<Server>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&server, &headers)?;
    Ok(Json(json!({"ended": server.0.sessions.end_all()})).into_response())
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Whether 2026-07-28 requests are served; off, the server is handshake-only like a
    /// 2025-era server (the Python SDK's `mode="auto"` then falls back to `initialize`).
    modern_protocol: bool,
}

fn settings(server: &Server) -> Response {
    Json(Settings {
        modern_protocol: server.modern_enabled(),
    })
    .into_response()
}

async fn get_settings(
    State(server): State<Server>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&server, &headers)?;
    Ok(settings(&server))
}

async fn put_settings(
    State(server): State<Server>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&server, &headers)?;
    let new: Settings = parse(&body)?;
    server
        .0
        .modern
        .store(new.modern_protocol, Ordering::Relaxed);
    Ok(settings(&server))
}
