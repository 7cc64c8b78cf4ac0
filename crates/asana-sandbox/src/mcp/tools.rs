//! Asana's V2 MCP tools, as the sandbox serves them: each reads or writes the same JSON objects
//! the REST API serves, records changes like REST writes do, and sees only the workspaces the
//! caller belongs to. Tool names follow the reported V2 set (`reference/mcp.md` §1.3); their
//! schemas and annotations are the sandbox's own, since Asana's are unconfirmed.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::rest::objects::{as_html, gid as gid_of, now};
use crate::rest::tasks::{delete_tree, new_task, task_scope};
use crate::rest::{self, Params, compact, shape};
use crate::world::World;
use crate::{Principal, Sandbox};

/// A tool-level failure: becomes a result with `isError: true` and this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError(pub String);

type Outcome = Result<Value, ToolError>;

/// Which tasks a listing keeps.
type TaskFilter = Box<dyn Fn(&Value) -> bool>;

fn fail<T>(message: impl Into<String>) -> Result<T, ToolError> {
    Err(ToolError(message.into()))
}

/// The sandbox's Asana tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    GetMe,
    SearchObjects,
    GetTask,
    GetTasks,
    GetMyTasks,
    GetProjects,
    GetProject,
    CreateTasks,
    UpdateTasks,
    DeleteTask,
    AddComment,
    CreateProjectStatusUpdate,
    GetWorkspaceUsers,
    CreateTaskPreview,
}

/// How many tasks one `create_tasks` / `update_tasks` call takes.
const BATCH: u64 = 50;

fn gid_property(what: &str) -> Value {
    json!({"type": "string", "pattern": "^[0-9]+$", "description": format!("The GID of the {what} (a numeric string).")})
}

fn date_property(what: &str) -> Value {
    json!({"type": ["string", "null"], "description": format!("{what} as YYYY-MM-DD, or null to clear it.")})
}

/// `readOnlyHint`, `destructiveHint`, `idempotentHint`; `openWorldHint` is true for all of them
/// (they act on a shared Asana workspace other people see, as the reference's example has it).
fn hints(read_only: bool, destructive: bool, idempotent: bool) -> Value {
    json!({
        "readOnlyHint": read_only,
        "destructiveHint": destructive,
        "idempotentHint": idempotent,
        "openWorldHint": true,
    })
}

fn read_only() -> Value {
    hints(true, false, true)
}

fn object_schema(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn new_task_properties() -> Value {
    json!({
        "name": {"type": "string", "minLength": 1, "description": "The task's name."},
        "project_gid": gid_property("project the task goes into"),
        "section_gid": gid_property("section of that project (optional)"),
        "assignee": {"type": "string", "description": "\"me\", a user GID or an email address."},
        "notes": {"type": "string", "description": "Plain-text description."},
        "due_on": date_property("Due date"),
        "start_on": date_property("Start date (needs due_on)"),
    })
}

impl Builtin {
    /// Every tool, in the order `tools/list` shows them.
    pub const ALL: [Self; 14] = [
        Self::GetMe,
        Self::SearchObjects,
        Self::GetTask,
        Self::GetTasks,
        Self::GetMyTasks,
        Self::GetProjects,
        Self::GetProject,
        Self::CreateTasks,
        Self::UpdateTasks,
        Self::DeleteTask,
        Self::AddComment,
        Self::CreateProjectStatusUpdate,
        Self::GetWorkspaceUsers,
        Self::CreateTaskPreview,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::GetMe => "get_me",
            Self::SearchObjects => "search_objects",
            Self::GetTask => "get_task",
            Self::GetTasks => "get_tasks",
            Self::GetMyTasks => "get_my_tasks",
            Self::GetProjects => "get_projects",
            Self::GetProject => "get_project",
            Self::CreateTasks => "create_tasks",
            Self::UpdateTasks => "update_tasks",
            Self::DeleteTask => "delete_task",
            Self::AddComment => "add_comment",
            Self::CreateProjectStatusUpdate => "create_project_status_update",
            Self::GetWorkspaceUsers => "get_workspace_users",
            Self::CreateTaskPreview => "create_task_preview",
        }
    }

    /// Whether the tool changes the world (and counts as a write for the limits).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Self::CreateTasks
                | Self::UpdateTasks
                | Self::DeleteTask
                | Self::AddComment
                | Self::CreateProjectStatusUpdate
        )
    }

    /// The `Tool` object `tools/list` shows.
    pub fn definition(self) -> Value {
        let (title, description, input, annotations) = match self {
            Self::GetMe => (
                "Get me",
                "The user this connection acts as: name, email and the workspaces they belong to.",
                json!({"type": "object", "additionalProperties": false}),
                read_only(),
            ),
            Self::SearchObjects => (
                "Search objects",
                "Typeahead search by name across one kind of object (tasks, projects, users, teams, tags, portfolios or goals) in the caller's workspaces. Returns compact records; fetch details with the get_* tools.",
                object_schema(
                    json!({
                        "resource_type": {"type": "string", "enum": ["task", "project", "user", "team", "tag", "portfolio", "goal"], "description": "The one kind of object to search."},
                        "query": {"type": "string", "description": "Text the name (or a user's email) contains; empty matches everything."},
                        "workspace_gid": gid_property("workspace to search (default: all of the caller's)"),
                        "count": {"type": "integer", "minimum": 1, "maximum": 100, "description": "At most this many results (default 20)."},
                    }),
                    &["resource_type", "query"],
                ),
                read_only(),
            ),
            Self::GetTask => (
                "Get task",
                "One task in full: name, notes, assignee, dates, projects, sections and custom fields.",
                object_schema(
                    json!({
                        "task_gid": gid_property("task"),
                        "opt_fields": {"type": "string", "description": "Comma-separated fields to return (dotted paths reach into nested objects); default all."},
                    }),
                    &["task_gid"],
                ),
                read_only(),
            ),
            Self::GetTasks => (
                "Get tasks",
                "Tasks of a project, a section or a tag, or of an assignee in a workspace. Give exactly one of project_gid, section_gid or tag_gid, or assignee together with workspace_gid.",
                object_schema(
                    json!({
                        "project_gid": gid_property("project"),
                        "section_gid": gid_property("section"),
                        "tag_gid": gid_property("tag"),
                        "assignee": {"type": "string", "description": "\"me\", a user GID or an email address; needs workspace_gid."},
                        "workspace_gid": gid_property("workspace (with assignee)"),
                        "completed_since": {"type": "string", "description": "Only tasks incomplete or completed since this time (ISO 8601); \"now\" for incomplete tasks only."},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 100, "description": "At most this many tasks (default 100)."},
                    }),
                    &[],
                ),
                read_only(),
            ),
            Self::GetMyTasks => (
                "Get my tasks",
                "Tasks assigned to the caller in one workspace, incomplete ones unless include_completed is set.",
                object_schema(
                    json!({
                        "workspace_gid": gid_property("workspace"),
                        "include_completed": {"type": "boolean", "description": "Also return completed tasks (default false)."},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 100, "description": "At most this many tasks (default 100)."},
                    }),
                    &["workspace_gid"],
                ),
                read_only(),
            ),
            Self::GetProjects => (
                "Get projects",
                "Projects of a workspace, optionally of one team and by archived state.",
                object_schema(
                    json!({
                        "workspace_gid": gid_property("workspace"),
                        "team_gid": gid_property("team"),
                        "archived": {"type": "boolean", "description": "Only projects whose archived state is this."},
                    }),
                    &["workspace_gid"],
                ),
                read_only(),
            ),
            Self::GetProject => (
                "Get project",
                "One project in full: owner, members, dates, team and current status update.",
                object_schema(
                    json!({
                        "project_gid": gid_property("project"),
                        "opt_fields": {"type": "string", "description": "Comma-separated fields to return; default all."},
                    }),
                    &["project_gid"],
                ),
                read_only(),
            ),
            Self::CreateTasks => (
                "Create tasks",
                "Creates up to 50 tasks in one call, each in a project (and optionally a section). Either every task is created or none is.",
                object_schema(
                    json!({
                        "tasks": {
                            "type": "array", "minItems": 1, "maxItems": BATCH,
                            "items": object_schema(new_task_properties(), &["name", "project_gid"]),
                        },
                    }),
                    &["tasks"],
                ),
                hints(false, false, false),
            ),
            Self::UpdateTasks => (
                "Update tasks",
                "Changes fields of up to 50 tasks in one call. Either every update applies or none does.",
                object_schema(
                    json!({
                        "tasks": {
                            "type": "array", "minItems": 1, "maxItems": BATCH,
                            "items": object_schema(
                                json!({
                                    "task_gid": gid_property("task"),
                                    "name": {"type": "string", "minLength": 1},
                                    "notes": {"type": "string"},
                                    "completed": {"type": "boolean"},
                                    "assignee": {"type": ["string", "null"], "description": "\"me\", a user GID, an email address, or null to unassign."},
                                    "due_on": date_property("Due date"),
                                    "start_on": date_property("Start date"),
                                }),
                                &["task_gid"],
                            ),
                        },
                    }),
                    &["tasks"],
                ),
                hints(false, false, true),
            ),
            Self::DeleteTask => (
                "Delete task",
                "Deletes a task. It disappears from its projects and can no longer be read.",
                object_schema(json!({"task_gid": gid_property("task")}), &["task_gid"]),
                hints(false, true, true),
            ),
            Self::AddComment => (
                "Add comment",
                "Adds a comment to a task; its followers see it.",
                object_schema(
                    json!({
                        "task_gid": gid_property("task"),
                        "text": {"type": "string", "minLength": 1, "description": "The comment, plain text."},
                    }),
                    &["task_gid", "text"],
                ),
                hints(false, false, false),
            ),
            Self::CreateProjectStatusUpdate => (
                "Create project status update",
                "Posts a status update on a project; it becomes the project's current status.",
                object_schema(
                    json!({
                        "project_gid": gid_property("project"),
                        "title": {"type": "string"},
                        "text": {"type": "string", "minLength": 1},
                        "status_type": {"type": "string", "enum": ["on_track", "at_risk", "off_track", "on_hold", "complete"]},
                    }),
                    &["project_gid", "text", "status_type"],
                ),
                hints(false, false, false),
            ),
            Self::GetWorkspaceUsers => (
                "Get workspace users",
                "The users of a workspace the caller belongs to.",
                object_schema(
                    json!({"workspace_gid": gid_property("workspace")}),
                    &["workspace_gid"],
                ),
                read_only(),
            ),
            Self::CreateTaskPreview => (
                "Preview a new task",
                "Shows the task create_tasks would create, for the user to confirm. Creates nothing.",
                object_schema(new_task_properties(), &["name", "project_gid"]),
                hints(false, false, true),
            ),
        };
        json!({
            "name": self.name(),
            "title": title,
            "description": description,
            "inputSchema": input,
            "annotations": annotations,
        })
    }

    /// Runs the tool as `principal` with `args` (already checked against the input schema);
    /// returns the structured result.
    pub fn call(
        self,
        sandbox: &Sandbox,
        principal: &Principal,
        args: &Map<String, Value>,
    ) -> Outcome {
        let mut world = sandbox.world();
        let caller = Caller {
            world: &mut world,
            user_gid: &principal.user_gid,
            rest: axum::Extension(principal.clone()),
            args,
        };
        match self {
            Self::GetMe => caller.get_me(),
            Self::SearchObjects => caller.search_objects(),
            Self::GetTask => caller.get_one("task", "task_gid"),
            Self::GetTasks => caller.get_tasks(),
            Self::GetMyTasks => caller.get_my_tasks(),
            Self::GetProjects => caller.get_projects(),
            Self::GetProject => caller.get_one("project", "project_gid"),
            Self::CreateTasks => caller.create_tasks(),
            Self::UpdateTasks => caller.update_tasks(),
            Self::DeleteTask => caller.delete_task(),
            Self::AddComment => caller.add_comment(),
            Self::CreateProjectStatusUpdate => caller.create_project_status_update(),
            Self::GetWorkspaceUsers => caller.get_workspace_users(),
            Self::CreateTaskPreview => caller.create_task_preview(),
        }
    }
}

/// An object without the sandbox's internal fields.
fn public(object: &Value) -> Value {
    shape(object, &Params::new(), Value::clone)
}

/// What a list of tasks shows per task.
fn task_summary(task: &Value) -> Value {
    let mut summary = compact(task);
    for key in ["completed", "due_on", "assignee"] {
        summary[key] = task[key].clone();
    }
    summary
}

/// A REST error as a tool failure with the same message.
fn tool_error(error: ApiError) -> ToolError {
    ToolError(error.message)
}

fn check_date(path: &str, value: &str) -> Result<(), ToolError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map(|_| ())
        .or_else(|_| fail(format!("{path}: {value:?} is not a date (YYYY-MM-DD)")))
}

/// A task `create_tasks` will insert, resolved and checked.
#[derive(Debug)]
struct NewTask {
    name: String,
    workspace: Value,
    project: Value,
    section: Option<Value>,
    assignee: Option<Value>,
    notes: String,
    due_on: Option<String>,
    start_on: Option<String>,
}

/// One call's view of the world, as `user_gid`.
struct Caller<'a> {
    world: &'a mut World,
    user_gid: &'a str,
    /// The same caller as the REST code that creates and deletes tasks takes it.
    rest: rest::Caller,
    args: &'a Map<String, Value>,
}

impl Caller<'_> {
    fn str_arg(&self, key: &str) -> Option<&str> {
        self.args.get(key).and_then(Value::as_str)
    }

    fn me(&self) -> Result<Value, ToolError> {
        match self.world.get_typed(self.user_gid, "user") {
            Some(user) => Ok(user.clone()),
            None => fail("the user this token belongs to no longer exists"),
        }
    }

    fn my_workspaces(&self) -> Vec<String> {
        self.world
            .get(self.user_gid)
            .and_then(|u| u["workspaces"].as_array())
            .into_iter()
            .flatten()
            .map(gid_of)
            .collect()
    }

    /// The workspace `object` lives in (a section's is its project's).
    fn workspace_of(&self, object: &Value) -> Option<String> {
        match object["resource_type"].as_str() {
            Some("workspace") => Some(gid_of(object)),
            Some("section") => object["project"]["gid"]
                .as_str()
                .and_then(|gid| self.world.get(gid))
                .and_then(|project| self.workspace_of(project)),
            _ => ["workspace", "organization"]
                .iter()
                .find_map(|key| object[*key]["gid"].as_str())
                .map(str::to_owned),
        }
    }

    fn visible(&self, object: &Value) -> bool {
        let mine = self.my_workspaces();
        if object["resource_type"] == "user" {
            return object["workspaces"]
                .as_array()
                .is_some_and(|ws| ws.iter().any(|w| mine.contains(&gid_of(w))));
        }
        self.workspace_of(object)
            .is_some_and(|ws| mine.contains(&ws))
    }

    /// The `resource_type` object named by `gid`, if the caller may see it (Asana does not
    /// reveal others: they are "not recognized" too).
    fn find(&self, resource_type: &str, path: &str, gid: &str) -> Result<Value, ToolError> {
        if gid.is_empty() || !gid.bytes().all(|b| b.is_ascii_digit()) {
            return fail(format!(
                "{path}: {gid:?} is not a GID (GIDs are numeric strings)"
            ));
        }
        match self.world.get_typed(gid, resource_type) {
            Some(object) if self.visible(object) => Ok(object.clone()),
            _ => fail(format!(
                "{resource_type}: Not a recognized ID: {gid} ({path})"
            )),
        }
    }

    /// The object named by the gid argument `key`.
    fn find_arg(&self, resource_type: &str, key: &str) -> Result<Value, ToolError> {
        self.find(resource_type, key, self.str_arg(key).unwrap_or_default())
    }

    /// "me", a gid or an email, as a user sharing `workspace`.
    fn resolve_user(&self, path: &str, who: &str, workspace: &str) -> Result<Value, ToolError> {
        let user = match who {
            "me" => self.me()?,
            email if email.contains('@') => {
                match self.world.all("user", |u| u["email"] == email).next() {
                    Some(user) => user.clone(),
                    None => return fail(format!("{path}: no user with email {email}")),
                }
            }
            gid => self.find("user", path, gid)?,
        };
        let member = user["workspaces"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["gid"] == workspace));
        if member {
            Ok(user)
        } else {
            fail(format!(
                "{path}: user {} is not in workspace {workspace}",
                gid_of(&user)
            ))
        }
    }

    fn get_me(&self) -> Outcome {
        Ok(public(&self.me()?))
    }

    fn get_one(&self, resource_type: &str, key: &str) -> Outcome {
        let object = self.find_arg(resource_type, key)?;
        let mut params = Params::new();
        if let Some(fields) = self.str_arg("opt_fields") {
            params.insert("opt_fields".into(), fields.to_owned());
        }
        Ok(shape(&object, &params, Value::clone))
    }

    fn workspaces_arg(&self) -> Result<Vec<String>, ToolError> {
        match self.str_arg("workspace_gid") {
            Some(_) => Ok(vec![gid_of(&self.find_arg("workspace", "workspace_gid")?)]),
            None => Ok(self.my_workspaces()),
        }
    }

    fn search_objects(&self) -> Outcome {
        let resource_type = self.str_arg("resource_type").unwrap_or_default();
        let query = self.str_arg("query").unwrap_or_default().to_lowercase();
        let count = self.args.get("count").and_then(Value::as_u64).unwrap_or(20);
        let workspaces = self.workspaces_arg()?;
        let matches = |o: &Value| {
            let in_scope = if resource_type == "user" {
                o["workspaces"]
                    .as_array()
                    .is_some_and(|ws| ws.iter().any(|w| workspaces.contains(&gid_of(w))))
            } else {
                self.workspace_of(o)
                    .is_some_and(|w| workspaces.contains(&w))
            };
            let text = ["name", "email"]
                .iter()
                .filter_map(|k| o[*k].as_str())
                .any(|t| t.to_lowercase().contains(&query));
            in_scope && text
        };
        let found: Vec<Value> = self
            .world
            .all(resource_type, matches)
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .map(compact)
            .collect();
        Ok(json!({"data": found}))
    }

    fn limit(&self) -> usize {
        self.args
            .get("limit")
            .and_then(Value::as_u64)
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(100)
    }

    fn get_tasks(&self) -> Outcome {
        let containers: Vec<&str> = ["project_gid", "section_gid", "tag_gid"]
            .into_iter()
            .filter(|k| self.args.contains_key(*k))
            .collect();
        let assignee = self.str_arg("assignee");
        let by_assignee = assignee.is_some() || self.args.contains_key("workspace_gid");
        let keep: TaskFilter = match (containers.as_slice(), by_assignee) {
            (["project_gid"], false) => {
                let gid = gid_of(&self.find_arg("project", "project_gid")?);
                Box::new(move |t| {
                    t["projects"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["gid"] == gid.as_str()))
                })
            }
            (["section_gid"], false) => {
                let gid = gid_of(&self.find_arg("section", "section_gid")?);
                Box::new(move |t| {
                    t["memberships"]
                        .as_array()
                        .is_some_and(|ms| ms.iter().any(|m| m["section"]["gid"] == gid.as_str()))
                })
            }
            (["tag_gid"], false) => {
                let gid = gid_of(&self.find_arg("tag", "tag_gid")?);
                Box::new(move |t| {
                    t["tags"]
                        .as_array()
                        .is_some_and(|ts| ts.iter().any(|g| g["gid"] == gid.as_str()))
                })
            }
            ([], true) => {
                let (Some(who), true) = (assignee, self.args.contains_key("workspace_gid")) else {
                    return fail("assignee and workspace_gid must be given together");
                };
                let workspace = gid_of(&self.find_arg("workspace", "workspace_gid")?);
                let user = gid_of(&self.resolve_user("assignee", who, &workspace)?);
                Box::new(move |t| {
                    t["assignee"]["gid"] == user.as_str()
                        && t["workspace"]["gid"] == workspace.as_str()
                })
            }
            _ => {
                return fail(
                    "give exactly one of project_gid, section_gid or tag_gid, or assignee together with workspace_gid",
                );
            }
        };
        let since = self.completed_since()?;
        let tasks: Vec<Value> = self
            .world
            .all("task", |t| keep(t) && since(t))
            .take(self.limit())
            .map(task_summary)
            .collect();
        Ok(json!({"data": tasks}))
    }

    /// The `completed_since` filter (everything when absent).
    fn completed_since(&self) -> Result<TaskFilter, ToolError> {
        let Some(since) = self.str_arg("completed_since") else {
            return Ok(Box::new(|_| true));
        };
        let cutoff = if since == "now" {
            Utc::now()
        } else if let Ok(time) = DateTime::parse_from_rfc3339(since) {
            time.with_timezone(&Utc)
        } else if let Some(day) = NaiveDate::parse_from_str(since, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
        {
            day.and_utc()
        } else {
            return fail(format!(
                "completed_since: {since:?} is not \"now\", a date or a date-time"
            ));
        };
        Ok(Box::new(move |task: &Value| {
            task["completed"] != true
                || task["completed_at"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t >= cutoff)
        }))
    }

    fn get_my_tasks(&self) -> Outcome {
        let workspace = gid_of(&self.find_arg("workspace", "workspace_gid")?);
        let include_completed = self.args.get("include_completed") == Some(&Value::Bool(true));
        let tasks: Vec<Value> = self
            .world
            .all("task", |t| {
                t["assignee"]["gid"] == self.user_gid
                    && t["workspace"]["gid"] == workspace.as_str()
                    && (include_completed || t["completed"] != true)
            })
            .take(self.limit())
            .map(task_summary)
            .collect();
        Ok(json!({"data": tasks}))
    }

    fn get_projects(&self) -> Outcome {
        let workspace = gid_of(&self.find_arg("workspace", "workspace_gid")?);
        let team = match self.str_arg("team_gid") {
            Some(_) => Some(gid_of(&self.find_arg("team", "team_gid")?)),
            None => None,
        };
        let archived = self.args.get("archived").and_then(Value::as_bool);
        let projects: Vec<Value> = self
            .world
            .all("project", |p| {
                p["workspace"]["gid"] == workspace.as_str()
                    && team.as_ref().is_none_or(|t| p["team"]["gid"] == t.as_str())
                    && archived.is_none_or(|a| p["archived"] == a)
            })
            .map(compact)
            .collect();
        Ok(json!({"data": projects}))
    }

    fn get_workspace_users(&self) -> Outcome {
        let workspace = gid_of(&self.find_arg("workspace", "workspace_gid")?);
        let users: Vec<Value> = self
            .world
            .all("user", |u| {
                u["workspaces"]
                    .as_array()
                    .is_some_and(|ws| ws.iter().any(|w| w["gid"] == workspace.as_str()))
            })
            .map(|u| {
                let mut user = compact(u);
                user["email"] = u["email"].clone();
                user
            })
            .collect();
        Ok(json!({"data": users}))
    }

    /// Resolves and checks one task to create (`path` names it in messages).
    fn plan_task(&self, item: &Map<String, Value>, path: &str) -> Result<NewTask, ToolError> {
        let text = |key: &str| item.get(key).and_then(Value::as_str);
        let project_path = format!("{path}.project_gid");
        let project = self.find(
            "project",
            &project_path,
            text("project_gid").unwrap_or_default(),
        )?;
        let workspace_gid = self.workspace_of(&project).unwrap_or_default();
        let workspace = self.find("workspace", &project_path, &workspace_gid)?;
        let section = match text("section_gid") {
            None => None,
            Some(gid) => {
                let section_path = format!("{path}.section_gid");
                let section = self.find("section", &section_path, gid)?;
                if section["project"]["gid"] != project["gid"] {
                    return fail(format!(
                        "{section_path}: section {gid} is not in project {}",
                        gid_of(&project)
                    ));
                }
                Some(section)
            }
        };
        let assignee = match text("assignee") {
            None => None,
            Some(who) => {
                Some(self.resolve_user(&format!("{path}.assignee"), who, &workspace_gid)?)
            }
        };
        for key in ["due_on", "start_on"] {
            if let Some(date) = text(key) {
                check_date(&format!("{path}.{key}"), date)?;
            }
        }
        if text("start_on").is_some() && text("due_on").is_none() {
            return fail(format!("{path}.start_on: needs due_on as well"));
        }
        Ok(NewTask {
            name: text("name").unwrap_or_default().to_owned(),
            workspace,
            project,
            section,
            assignee,
            notes: text("notes").unwrap_or_default().to_owned(),
            due_on: text("due_on").map(str::to_owned),
            start_on: text("start_on").map(str::to_owned),
        })
    }

    fn items(&self, key: &str) -> Vec<(String, Map<String, Value>)> {
        self.args
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, item)| {
                (
                    format!("{key}[{i}]"),
                    item.as_object().cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Creates the planned tasks with the REST API's own task creation (`POST /tasks`), so a
    /// task made over MCP is built and recorded exactly like one made over REST.
    fn create_tasks(self) -> Outcome {
        let plans = self
            .items("tasks")
            .iter()
            .map(|(path, item)| self.plan_task(item, path))
            .collect::<Result<Vec<_>, _>>()?;
        let mut created = Vec::with_capacity(plans.len());
        for plan in plans {
            let mut membership = json!({"project": gid_of(&plan.project)});
            if let Some(section) = &plan.section {
                membership["section"] = json!(gid_of(section));
            }
            let mut input = Map::new();
            input.insert("name".into(), json!(plan.name));
            input.insert("notes".into(), json!(plan.notes));
            input.insert("memberships".into(), json!([membership]));
            if let Some(assignee) = &plan.assignee {
                input.insert("assignee".into(), json!(gid_of(assignee)));
            }
            for (key, date) in [("due_on", &plan.due_on), ("start_on", &plan.start_on)] {
                if let Some(date) = date {
                    input.insert(key.into(), json!(date));
                }
            }
            let task = new_task(self.world, &self.rest, &input, None).map_err(tool_error)?;
            created.push(task);
        }
        Ok(json!({"data": created}))
    }

    fn create_task_preview(&self) -> Outcome {
        let plan = self.plan_task(self.args, "arguments")?;
        Ok(json!({
            "committed": false,
            "preview": {
                "name": plan.name,
                "notes": plan.notes,
                "workspace": compact(&plan.workspace),
                "project": compact(&plan.project),
                "section": plan.section.as_ref().map(compact),
                "assignee": plan.assignee.as_ref().map(compact),
                "due_on": plan.due_on,
                "start_on": plan.start_on,
            },
            "next_step": "Nothing was created. Show this preview to the user and call create_tasks with the same fields once they confirm.",
        }))
    }

    fn update_tasks(self) -> Outcome {
        // Check everything first, so a bad item changes nothing.
        let mut planned = Vec::new();
        for (path, item) in self.items("tasks") {
            let task = self.find(
                "task",
                &format!("{path}.task_gid"),
                item.get("task_gid")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            )?;
            let workspace = self.workspace_of(&task).unwrap_or_default();
            let mut changes: Vec<(String, Value)> = Vec::new();
            for (key, value) in item.iter().filter(|(k, _)| k.as_str() != "task_gid") {
                let field_path = format!("{path}.{key}");
                let value = match (key.as_str(), value) {
                    ("assignee", Value::String(who)) => {
                        compact(&self.resolve_user(&field_path, who, &workspace)?)
                    }
                    ("due_on" | "start_on", Value::String(date)) => {
                        check_date(&field_path, date)?;
                        value.clone()
                    }
                    _ => value.clone(),
                };
                changes.push((key.clone(), value));
            }
            if changes.is_empty() {
                return fail(format!(
                    "{path}: nothing to change (give at least one field besides task_gid)"
                ));
            }
            planned.push((gid_of(&task), changes));
        }
        let mut updated = Vec::with_capacity(planned.len());
        for (gid, changes) in planned {
            let Some(stored) = self.world.get_mut(&gid) else {
                continue;
            };
            for (field, value) in &changes {
                if field == "completed" {
                    stored["completed_at"] = if value == true {
                        json!(now())
                    } else {
                        Value::Null
                    };
                }
                stored[field.as_str()] = value.clone();
            }
            stored["modified_at"] = json!(now());
            let task = stored.clone();
            for (field, value) in changes {
                let mut change = json!({"field": field, "action": "changed"});
                if field == "assignee" {
                    change["new_value"] = value;
                }
                self.world.record(
                    Some(self.user_gid),
                    "changed",
                    &task,
                    None,
                    Some(change),
                    task_scope(&task),
                );
            }
            updated.push(task);
        }
        Ok(json!({"data": updated}))
    }

    /// Deletes the task and its subtasks with the REST API's own deletion
    /// (`DELETE /tasks/{gid}`), which also unlinks them from the dependencies of other tasks.
    fn delete_task(self) -> Outcome {
        let root = self.find_arg("task", "task_gid")?;
        let gids = delete_tree(self.world, &self.rest, &root);
        Ok(json!({"deleted": gids}))
    }

    fn add_comment(self) -> Outcome {
        let task = self.find_arg("task", "task_gid")?;
        let me = self.me()?;
        let text = self.str_arg("text").unwrap_or_default().to_owned();
        let story = self.world.insert(
            json!({
                "resource_type": "story",
                "resource_subtype": "comment_added",
                "type": "comment",
                "text": text,
                "html_text": as_html(&text),
                "is_pinned": false,
                "is_edited": false,
                "is_editable": true,
                "sticker_name": null,
                "created_at": now(),
                "created_by": compact(&me),
                "source": "api",
                "target": compact(&task),
                "hearted": false,
                "hearts": [],
                "num_hearts": 0,
                "liked": false,
                "likes": [],
                "num_likes": 0,
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        let mut scope = vec![gid_of(&story)];
        scope.extend(task_scope(&task));
        self.world.record(
            Some(self.user_gid),
            "added",
            &story,
            Some(&task),
            None,
            scope,
        );
        Ok(story)
    }

    fn create_project_status_update(self) -> Outcome {
        let project = self.find_arg("project", "project_gid")?;
        let me = self.me()?;
        let text = self.str_arg("text").unwrap_or_default();
        let status = self.world.insert(
            json!({
                "resource_type": "status_update",
                "resource_subtype": "project_status_update",
                "title": self.str_arg("title").unwrap_or_default(),
                "text": text,
                "html_text": as_html(text),
                "status_type": self.str_arg("status_type").unwrap_or_default(),
                "author": compact(&me),
                "created_by": compact(&me),
                "parent": compact(&project),
                "created_at": now(),
                "modified_at": now(),
                "hearted": false,
                "hearts": [],
                "num_hearts": 0,
                "liked": false,
                "likes": [],
                "num_likes": 0,
                "reaction_summary": [],
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        let project_gid = gid_of(&project);
        if let Some(stored) = self.world.get_mut(&project_gid) {
            stored["current_status_update"] = json!({
                "gid": status["gid"],
                "resource_type": "status_update",
                "resource_subtype": "project_status_update",
                "title": status["title"],
            });
            stored["modified_at"] = json!(now());
        }
        self.world.record(
            Some(self.user_gid),
            "added",
            &status,
            Some(&project),
            None,
            vec![gid_of(&status), project_gid],
        );
        Ok(status)
    }
}
