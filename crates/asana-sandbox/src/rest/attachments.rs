//! Attachments of tasks, projects and project briefs. The sandbox keeps no file contents, so
//! only URL attachments (`resource_subtype` `external`) can be created; the upload is a
//! multipart form, as the spec describes it.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::objects::{
    caller_ref, full_record, gid, name_ref, now, object, record, view, visible, visible_any,
};
use super::{Caller, Params, compact, page};
use crate::Sandbox;
use crate::error::ApiError;

/// What an attachment can hang off.
const PARENTS: &[&str] = &["task", "project", "project_brief"];

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route(
            "/attachments",
            get(list_attachments).post(create_attachment),
        )
        .route("/attachments/{attachment_gid}", get(get_attachment))
}

async fn list_attachments(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let parent = params
        .get("parent")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("parent: Missing input"))?;
    let items: Vec<Value> = {
        let world = sandbox.world();
        visible_any(&world, &caller, parent, PARENTS, "parent")?;
        world
            .all("attachment", |a| a["parent"]["gid"] == parent.as_str())
            .map(|a| view(&world, a, &params, compact))
            .collect()
    };
    page(&sandbox, items, &params, "/attachments")
}

async fn get_attachment(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(attachment_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let attachment = visible(
        &sandbox.world(),
        &caller,
        &attachment_gid,
        "attachment",
        "attachment",
    )?;
    Ok(full_record(&sandbox, &attachment, &params))
}

async fn create_attachment(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let form = form_fields(&headers, &body)?;
    let field = |key: &str| {
        form.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("{key}: Missing input")))
    };
    let parent_gid = field("parent")?;
    match form.get("resource_subtype").map(String::as_str) {
        Some("external") => {}
        None | Some("asana") => {
            return Err(ApiError::bad_request(
                "file: The sandbox stores no files; attach a URL with resource_subtype external",
            ));
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "resource_subtype: Unknown value {other}"
            )));
        }
    }
    let name = field("name")?;
    let url = field("url")?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(ApiError::bad_request("url: Must be an http or https URL"));
    }
    let attachment = {
        let mut world = sandbox.world();
        let parent = visible_any(&world, &caller, parent_gid, PARENTS, "parent")?;
        let mut parent_ref = name_ref(&parent);
        parent_ref["created_by"] = caller_ref(&world, &caller);
        let attachment = world.insert(object(json!({
            "resource_type": "attachment",
            "resource_subtype": "external",
            "name": name,
            "created_at": now(),
            "download_url": url,
            "permanent_url": url,
            "view_url": url,
            "host": "external",
            "connected_to_app": false,
            "parent": parent_ref,
        })));
        let scope = vec![gid(&attachment), gid(&parent)];
        record(
            &mut world,
            &caller,
            "added",
            &attachment,
            Some(&parent),
            None,
            scope,
        );
        attachment
    };
    sandbox.notify_changed();
    Ok(full_record(&sandbox, &attachment, &params))
}

/// The fields of a `multipart/form-data` body, as text.
fn form_fields(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = content_type
        .strip_prefix("multipart/form-data")
        .and_then(|rest| {
            rest.split(';')
                .filter_map(|p| p.trim().strip_prefix("boundary="))
                .next()
        })
        .map(|b| b.trim_matches('"'))
        .ok_or_else(|| ApiError::bad_request("Request body must be multipart/form-data"))?;
    let text = String::from_utf8_lossy(body);
    let delimiter = format!("--{boundary}");
    let mut fields = HashMap::new();
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            return Err(ApiError::bad_request("Malformed multipart body"));
        };
        let name = head
            .lines()
            .filter(|line| {
                line.to_ascii_lowercase()
                    .starts_with("content-disposition:")
            })
            .flat_map(|line| line.split(';'))
            .find_map(|p| p.trim().strip_prefix("name="))
            .map(|n| n.trim_matches('"').to_owned())
            .ok_or_else(|| ApiError::bad_request("Malformed multipart body"))?;
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        fields.insert(name, value.to_owned());
    }
    Ok(fields)
}
