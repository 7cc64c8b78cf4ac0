//! Task search (`GET /workspaces/{gid}/tasks/search`): premium only (402 in a free
//! workspace), no offset pagination (sort and filter instead), at most 100 results. The REST
//! middleware already holds it to 60 requests a minute by its `/search` suffix.

use std::cmp::Ordering;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::Value;

use chrono::{DateTime, Utc};

use super::objects::{instant, member_workspace, ref_gids, require_paid, stored_instant, view};
use super::{Caller, Params, compact, data};
use crate::Sandbox;
use crate::error::ApiError;

/// How many results a search returns when `limit` is not given.
const DEFAULT_LIMIT: usize = 20;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new().route(
        "/workspaces/{workspace_gid}/tasks/search",
        get(search_tasks),
    )
}

/// A `true`/`false` parameter, or 400.
fn flag(params: &Params, key: &str) -> Result<Option<bool>, ApiError> {
    match params.get(key).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::bad_request(format!(
            "{key}: Must be true or false"
        ))),
    }
}

/// A comma-separated gid list parameter, with `me` as the caller.
fn gids(params: &Params, key: &str, caller: &Caller) -> Option<Vec<String>> {
    params.get(key).map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(|g| {
                if g == "me" {
                    caller.user_gid.clone()
                } else {
                    g.to_owned()
                }
            })
            .collect()
    })
}

/// The gids of `field` on a task (`sections` come from its memberships, `assignee` is one).
fn task_gids(task: &Value, field: &str) -> Vec<String> {
    match field {
        "assignee" => task["assignee"]["gid"]
            .as_str()
            .map(|g| vec![g.to_owned()])
            .unwrap_or_default(),
        "sections" => task["memberships"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["section"]["gid"].as_str().map(str::to_owned))
            .collect(),
        other => ref_gids(task, other),
    }
}

/// `<field>.any`, `<field>.not` and `<field>.all` for one list field.
#[derive(Debug)]
struct ListFilter {
    field: &'static str,
    any: Option<Vec<String>>,
    not: Option<Vec<String>>,
    all: Option<Vec<String>>,
}

/// `<field>.before` and `<field>.after` for one timestamp field.
#[derive(Debug)]
struct RangeFilter {
    field: &'static str,
    before: Option<DateTime<Utc>>,
    after: Option<DateTime<Utc>>,
}

/// Every filter of one search, checked once per task.
#[derive(Debug, Default)]
struct Filters {
    text: Option<String>,
    resource_subtype: Option<String>,
    /// For assignee, projects, sections, tags and followers.
    lists: Vec<ListFilter>,
    completed: Option<bool>,
    is_subtask: Option<bool>,
    is_blocked: Option<bool>,
    is_blocking: Option<bool>,
    /// For created_at, modified_at and completed_at.
    ranges: Vec<RangeFilter>,
    due_on: Option<String>,
    due_before: Option<String>,
    due_after: Option<String>,
}

impl Filters {
    fn parse(params: &Params, caller: &Caller) -> Result<Self, ApiError> {
        let mut filters = Self {
            text: params.get("text").map(|t| t.to_lowercase()),
            resource_subtype: params.get("resource_subtype").cloned(),
            completed: flag(params, "completed")?,
            is_subtask: flag(params, "is_subtask")?,
            is_blocked: flag(params, "is_blocked")?,
            is_blocking: flag(params, "is_blocking")?,
            due_on: params.get("due_on").cloned(),
            due_before: params.get("due_on.before").cloned(),
            due_after: params.get("due_on.after").cloned(),
            ..Self::default()
        };
        for field in ["assignee", "projects", "sections", "tags", "followers"] {
            filters.lists.push(ListFilter {
                field,
                any: gids(params, &format!("{field}.any"), caller),
                not: gids(params, &format!("{field}.not"), caller),
                all: gids(params, &format!("{field}.all"), caller),
            });
        }
        for field in ["created_at", "modified_at", "completed_at"] {
            let bound = |suffix: &str| -> Result<_, ApiError> {
                let key = format!("{field}.{suffix}");
                params.get(&key).map(|t| instant(t, &key)).transpose()
            };
            filters.ranges.push(RangeFilter {
                field,
                before: bound("before")?,
                after: bound("after")?,
            });
        }
        Ok(filters)
    }

    fn keep(&self, sandbox_tasks: &[Value], task: &Value) -> bool {
        if let Some(text) = &self.text {
            let name = task["name"].as_str().unwrap_or_default().to_lowercase();
            let notes = task["notes"].as_str().unwrap_or_default().to_lowercase();
            if !name.contains(text) && !notes.contains(text) {
                return false;
            }
        }
        if self
            .resource_subtype
            .as_ref()
            .is_some_and(|s| task["resource_subtype"] != s.as_str())
        {
            return false;
        }
        for ListFilter {
            field,
            any,
            not,
            all,
        } in &self.lists
        {
            let have = task_gids(task, field);
            if any
                .as_ref()
                .is_some_and(|any| !any.iter().any(|g| have.contains(g)))
                || not
                    .as_ref()
                    .is_some_and(|not| not.iter().any(|g| have.contains(g)))
                || all
                    .as_ref()
                    .is_some_and(|all| !all.iter().all(|g| have.contains(g)))
            {
                return false;
            }
        }
        let open = |field: &str| {
            ref_gids(task, field).iter().any(|g| {
                sandbox_tasks
                    .iter()
                    .any(|t| t["gid"] == g.as_str() && t["completed"] != true)
            })
        };
        let checks = [
            (self.completed, task["completed"] == true),
            (self.is_subtask, task["parent"].is_object()),
            (self.is_blocked, open("dependencies")),
            (self.is_blocking, open("dependents")),
        ];
        if checks
            .iter()
            .any(|(wanted, actual)| wanted.is_some_and(|w| w != *actual))
        {
            return false;
        }
        for RangeFilter {
            field,
            before,
            after,
        } in &self.ranges
        {
            let at = stored_instant(task, field);
            if before.is_some_and(|b| at.is_none_or(|at| at >= b))
                || after.is_some_and(|a| at.is_none_or(|at| at <= a))
            {
                return false;
            }
        }
        let due = task["due_on"].as_str();
        !(self
            .due_on
            .as_ref()
            .is_some_and(|d| due != Some(d.as_str()))
            || self
                .due_before
                .as_ref()
                .is_some_and(|d| due.is_none_or(|due| due >= d.as_str()))
            || self
                .due_after
                .as_ref()
                .is_some_and(|d| due.is_none_or(|due| due <= d.as_str())))
    }
}

/// Orders two tasks by `sort_by` (missing values last).
fn compare(a: &Value, b: &Value, sort_by: &str) -> Ordering {
    let key = |task: &Value| -> Option<String> {
        match sort_by {
            "due_date" => task["due_on"].as_str().map(str::to_owned),
            "created_at" | "completed_at" => task[sort_by].as_str().map(str::to_owned),
            "likes" => task["num_likes"].as_u64().map(|n| format!("{n:020}")),
            _ => task["modified_at"].as_str().map(str::to_owned),
        }
    };
    match (key(a), key(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

async fn search_tasks(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(workspace_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let world = sandbox.world();
    member_workspace(&world, &caller, &workspace_gid, "workspace")?;
    require_paid(&world, &workspace_gid)?;
    if params.contains_key("offset") {
        return Err(ApiError::bad_request(
            "offset: Search results are not paginated; sort by created_at and filter to page",
        ));
    }
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(limit) => limit
            .parse()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit: Must be between 1 and 100"))?,
    };
    let sort_by = params
        .get("sort_by")
        .map_or("modified_at", String::as_str)
        .to_owned();
    if ![
        "due_date",
        "created_at",
        "completed_at",
        "likes",
        "modified_at",
        "relevance",
    ]
    .contains(&sort_by.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "sort_by: Unknown sort order {sort_by}"
        )));
    }
    let ascending = flag(&params, "sort_ascending")?.unwrap_or(false);
    let filters = Filters::parse(&params, &caller)?;
    let tasks: Vec<Value> = world
        .all("task", |t| t["workspace"]["gid"] == workspace_gid.as_str())
        .cloned()
        .collect();
    let mut found: Vec<&Value> = tasks.iter().filter(|t| filters.keep(&tasks, t)).collect();
    found.sort_by(|a, b| {
        let order = compare(a, b, &sort_by);
        if ascending { order } else { order.reverse() }
    });
    let items: Vec<Value> = found
        .into_iter()
        .take(limit)
        .map(|t| view(&world, t, &params, compact))
        .collect();
    drop(world);
    Ok(data(Value::Array(items)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorting_puts_missing_values_last() {
        let dated = json!({"due_on": "2026-01-01"});
        let undated = json!({"due_on": null});
        assert_eq!(compare(&dated, &undated, "due_date"), Ordering::Less);
        assert_eq!(compare(&undated, &dated, "due_date"), Ordering::Greater);
    }
}
