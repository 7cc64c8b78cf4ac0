//! Task and project search (`GET /workspaces/{gid}/tasks/search`, `…/projects/search`): premium
//! only (402 in a free workspace), no offset pagination (sort and filter instead), at most 100
//! results. The REST middleware already holds them to 60 requests a minute by their `/search`
//! suffix.

use std::cmp::Ordering;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::Value;

use chrono::{DateTime, Utc};

use super::objects::{
    instant, member_workspace, named_user, ref_gids, require_paid, stored_instant, view,
};
use super::portfolios::item_gids;
use super::{Caller, Params, compact, data};
use crate::Sandbox;
use crate::error::ApiError;
use crate::world::World;

/// How many results a search returns when `limit` is not given.
const DEFAULT_LIMIT: usize = 20;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route(
            "/workspaces/{workspace_gid}/tasks/search",
            get(search_tasks),
        )
        .route(
            "/workspaces/{workspace_gid}/projects/search",
            get(search_projects),
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
    due_on: DayFilter,
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
            due_on: DayFilter::parse(params, "due_on"),
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
        self.due_on.keep(task)
    }
}

/// How many results a search returns and in which order.
#[derive(Debug)]
struct Order {
    limit: usize,
    sort_by: String,
    ascending: bool,
}

impl Order {
    /// Checks what every search checks (a paid workspace the caller belongs to, no `offset`)
    /// and reads `limit`, `sort_by` and `sort_ascending`.
    fn parse(
        world: &World,
        caller: &Caller,
        workspace_gid: &str,
        params: &Params,
    ) -> Result<Self, ApiError> {
        member_workspace(world, caller, workspace_gid, "workspace")?;
        require_paid(world, workspace_gid)?;
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
        Ok(Self {
            limit,
            sort_by,
            ascending: flag(params, "sort_ascending")?.unwrap_or(false),
        })
    }

    /// The first `limit` of `found`, sorted.
    fn apply<'a>(&self, mut found: Vec<&'a Value>) -> Vec<&'a Value> {
        found.sort_by(|a, b| {
            let order = compare(a, b, &self.sort_by);
            if self.ascending {
                order
            } else {
                order.reverse()
            }
        });
        found.truncate(self.limit);
        found
    }
}

/// Orders two tasks (or projects) by `sort_by` (missing values last).
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
    let order = Order::parse(&world, &caller, &workspace_gid, &params)?;
    let filters = Filters::parse(&params, &caller)?;
    let tasks: Vec<Value> = world
        .all("task", |t| t["workspace"]["gid"] == workspace_gid.as_str())
        .cloned()
        .collect();
    let found: Vec<&Value> = tasks.iter().filter(|t| filters.keep(&tasks, t)).collect();
    let items: Vec<Value> = order
        .apply(found)
        .into_iter()
        .map(|t| view(&world, t, &params, compact))
        .collect();
    drop(world);
    Ok(data(Value::Array(items)))
}

/// A comma-separated list of users (`me`, emails or gids) as gids; unknown users stay as
/// given and match nothing.
fn users(world: &World, caller: &Caller, params: &Params, key: &str) -> Option<Vec<String>> {
    gids(params, key, caller).map(|list| {
        list.into_iter()
            .map(|named| {
                named_user(world, caller, &named)
                    .and_then(|u| u["gid"].as_str().map(str::to_owned))
                    .unwrap_or(named)
            })
            .collect()
    })
}

/// `<field>`, `<field>.before` and `<field>.after` for one date field (`YYYY-MM-DD`).
#[derive(Debug, Default)]
struct DayFilter {
    field: &'static str,
    on: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

impl DayFilter {
    fn parse(params: &Params, field: &'static str) -> Self {
        let get = |suffix: &str| params.get(&format!("{field}{suffix}")).cloned();
        Self {
            field,
            on: get(""),
            before: get(".before"),
            after: get(".after"),
        }
    }

    fn keep(&self, object: &Value) -> bool {
        let day = object[self.field].as_str();
        self.on.as_ref().is_none_or(|d| day == Some(d.as_str()))
            && self
                .before
                .as_ref()
                .is_none_or(|d| day.is_some_and(|day| day < d.as_str()))
            && self
                .after
                .as_ref()
                .is_none_or(|d| day.is_some_and(|day| day > d.as_str()))
    }
}

/// The filters of a project search that the sandbox's projects can answer.
#[derive(Debug)]
struct ProjectFilters {
    text: Option<String>,
    completed: Option<bool>,
    teams: Option<Vec<String>>,
    owners: Option<Vec<String>>,
    members_any: Option<Vec<String>>,
    members_not: Option<Vec<String>>,
    /// The projects in any of the `portfolios.any` portfolios.
    in_portfolios: Option<Vec<String>>,
    /// For due_on and start_on.
    days: Vec<DayFilter>,
    created: RangeFilter,
}

impl ProjectFilters {
    fn parse(world: &World, caller: &Caller, params: &Params) -> Result<Self, ApiError> {
        let bound = |key: &str| -> Result<_, ApiError> {
            params.get(key).map(|t| instant(t, key)).transpose()
        };
        let in_portfolios = gids(params, "portfolios.any", caller).map(|portfolios| {
            portfolios
                .iter()
                .filter_map(|g| world.get_typed(g, "portfolio"))
                .flat_map(item_gids)
                .collect()
        });
        Ok(Self {
            text: params.get("text").map(|t| t.to_lowercase()),
            completed: flag(params, "completed")?,
            teams: gids(params, "teams.any", caller),
            owners: users(world, caller, params, "owner.any"),
            members_any: users(world, caller, params, "members.any"),
            members_not: users(world, caller, params, "members.not"),
            in_portfolios,
            days: vec![
                DayFilter::parse(params, "due_on"),
                DayFilter::parse(params, "start_on"),
            ],
            created: RangeFilter {
                field: "created_at",
                before: bound("created_at.before")?,
                after: bound("created_at.after")?,
            },
        })
    }

    fn keep(&self, project: &Value) -> bool {
        let name = project["name"].as_str().unwrap_or_default().to_lowercase();
        let one_of = |list: &Option<Vec<String>>, gid: &Value| {
            list.as_ref()
                .is_none_or(|list| list.iter().any(|g| gid == g.as_str()))
        };
        let members = ref_gids(project, "members");
        let created = stored_instant(project, self.created.field);
        self.text.as_ref().is_none_or(|t| name.contains(t))
            && self
                .completed
                .is_none_or(|c| c == (project["completed"] == true))
            && one_of(&self.teams, &project["team"]["gid"])
            && one_of(&self.owners, &project["owner"]["gid"])
            && one_of(&self.in_portfolios, &project["gid"])
            && self
                .members_any
                .as_ref()
                .is_none_or(|any| any.iter().any(|g| members.contains(g)))
            && self
                .members_not
                .as_ref()
                .is_none_or(|not| !not.iter().any(|g| members.contains(g)))
            && self
                .created
                .before
                .is_none_or(|b| created.is_some_and(|at| at < b))
            && self
                .created
                .after
                .is_none_or(|a| created.is_some_and(|at| at > a))
            && self.days.iter().all(|d| d.keep(project))
    }
}

async fn search_projects(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(workspace_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let world = sandbox.world();
    let order = Order::parse(&world, &caller, &workspace_gid, &params)?;
    let filters = ProjectFilters::parse(&world, &caller, &params)?;
    let found: Vec<&Value> = world
        .all("project", |p| {
            p["workspace"]["gid"] == workspace_gid.as_str() && filters.keep(p)
        })
        .collect();
    let items: Vec<Value> = order
        .apply(found)
        .into_iter()
        .map(|p| view(&world, p, &params, compact))
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
