//! Typeahead (`GET /workspaces/{gid}/typeahead`): objects of one type whose name matches a
//! query, best matches first. Not paginated and not exhaustive: `count` (1..100, default 20)
//! caps the answer.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::objects::{member_workspace, user_workspaces, view, workspace_of};
use super::{Caller, Params, data};
use crate::Sandbox;
use crate::error::ApiError;

/// How many results come back when `count` is not given.
const DEFAULT_COUNT: usize = 20;

/// The resource types typeahead accepts, and what the sandbox stores for each (`None`: a type
/// the sandbox has no objects of).
const TYPES: &[(&str, Option<&str>)] = &[
    ("user", Some("user")),
    ("actor", Some("user")),
    ("agent", None),
    ("custom_field", Some("custom_field")),
    ("goal", Some("goal")),
    ("project", Some("project")),
    ("project_template", None),
    ("portfolio", Some("portfolio")),
    ("tag", Some("tag")),
    ("task", Some("task")),
    ("team", Some("team")),
];

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new().route("/workspaces/{workspace_gid}/typeahead", get(typeahead))
}

/// How well `name` matches `query` (lower is better), or `None` for no match.
fn rank(name: &str, query: &str) -> Option<u8> {
    if query.is_empty() {
        return Some(2);
    }
    let name = name.to_lowercase();
    if name.starts_with(query) {
        Some(0)
    } else if name.split_whitespace().any(|word| word.starts_with(query)) {
        Some(1)
    } else if name.contains(query) {
        Some(2)
    } else {
        None
    }
}

/// `{gid, resource_type, name}`: what typeahead returns unless `opt_fields` asks for more.
fn named(object: &Value) -> Value {
    json!({"gid": object["gid"], "resource_type": object["resource_type"], "name": object["name"]})
}

async fn typeahead(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(workspace_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let requested = params
        .get("resource_type")
        .or_else(|| params.get("type"))
        .map_or("user", String::as_str);
    let stored = TYPES
        .iter()
        .find(|(name, _)| *name == requested)
        .map(|(_, stored)| *stored)
        .ok_or_else(|| {
            ApiError::bad_request(format!("resource_type: Unknown resource type {requested}"))
        })?;
    let count = match params.get("count") {
        None => DEFAULT_COUNT,
        Some(count) => count
            .parse()
            .ok()
            .filter(|c| (1..=100).contains(c))
            .ok_or_else(|| ApiError::bad_request("count: Must be between 1 and 100"))?,
    };
    let query = params
        .get("query")
        .map(|q| q.trim().to_lowercase())
        .unwrap_or_default();
    let world = sandbox.world();
    member_workspace(&world, &caller, &workspace_gid, "workspace")?;
    let Some(stored) = stored else {
        return Ok(data(json!([])));
    };
    let mut matches: Vec<(u8, &Value)> = world
        .all(stored, |o| {
            if stored == "user" {
                user_workspaces(&world, o["gid"].as_str().unwrap_or_default())
                    .contains(&workspace_gid)
            } else {
                workspace_of(&world, o).as_deref() == Some(workspace_gid.as_str())
            }
        })
        .filter_map(|o| rank(o["name"].as_str().unwrap_or_default(), &query).map(|r| (r, o)))
        .collect();
    matches.sort_by_key(|(rank, _)| *rank);
    let items: Vec<Value> = matches
        .into_iter()
        .take(count)
        .map(|(_, o)| view(&world, o, &params, named))
        .collect();
    Ok(data(Value::Array(items)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_rank_before_words_before_substrings() {
        assert_eq!(rank("Launch plan", "lau"), Some(0));
        assert_eq!(rank("Launch plan", "pla"), Some(1));
        assert_eq!(rank("Launch plan", "aun"), Some(2));
        assert_eq!(rank("Launch plan", "xyz"), None);
    }
}
