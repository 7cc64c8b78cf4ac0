//! Goals, portfolios, allocations and time tracking.

use serde_json::json;

use super::{choice, date, flag, gid, number, text, tool, user};
use crate::Tool;

const GOAL_FIELDS: &str = "name,owner.name,due_on,status,metric.current_number_value";

pub(super) fn tools() -> Vec<Tool> {
    vec![
        // getGoal
        tool(
            "asana_goal_get",
            "Get a goal",
            "Reads one goal with its metric and status, e.g. {\"goal_gid\": \
             \"1204567890123456\", \"opt_fields\": [\"name\", \"status\", \"metric\", \
             \"due_on\"]}.",
        )
        .get("/goals/{goal_gid}")
        .path("goal_gid", "The goal's gid, e.g. \"1204567890123456\".")
        .fields(GOAL_FIELDS)
        .build(),
        // getGoals
        tool(
            "asana_goals_list",
            "List goals",
            "Lists goals, filtered by where they live: give a workspace, team, project or \
             portfolio, e.g. {\"workspace\": \"1204567890123456\", \"is_workspace_level\": \
             true}.",
        )
        .get("/goals")
        .query(
            "workspace",
            gid("The workspace's gid, e.g. \"1204567890123456\"."),
        )
        .query("team", gid("Only goals of this team."))
        .query("project", gid("Only goals this project supports."))
        .query("portfolio", gid("Only goals this portfolio supports."))
        .query(
            "is_workspace_level",
            flag("Only company-wide goals; needs workspace."),
        )
        .one_of_required(&["workspace", "team", "project", "portfolio"])
        .paged()
        .fields(GOAL_FIELDS)
        .build(),
        // updateGoalMetric
        tool(
            "asana_goal_metric_update",
            "Update a goal's progress",
            "Sets the current value of a goal's metric, e.g. {\"goal_gid\": \
             \"1204567890123456\", \"current_number_value\": 250}. The goal must have a metric \
             (see asana_goal_get, field metric).",
        )
        .post("/goals/{goal_gid}/setMetricCurrentValue")
        .path("goal_gid", "The goal's gid, e.g. \"1204567890123456\".")
        .data(
            "current_number_value",
            number("The metric's new current value, e.g. 250."),
        )
        .required()
        .build(),
        // getPortfolios
        tool(
            "asana_portfolios_list",
            "List portfolios",
            "Lists the portfolios a user owns in a workspace, e.g. {\"workspace\": \
             \"1204567890123456\", \"owner\": \"me\"}.",
        )
        .get("/portfolios")
        .query(
            "workspace",
            gid("The workspace's gid, e.g. \"1204567890123456\"."),
        )
        .required()
        .query(
            "owner",
            user("The portfolios' owner: a user gid, \"me\" or an email, e.g. \"me\"."),
        )
        .required()
        .paged()
        .fields("name,owner.name,due_on,color")
        .build(),
        // getPortfolio
        tool(
            "asana_portfolio_get",
            "Get a portfolio",
            "Reads one portfolio, e.g. {\"portfolio_gid\": \"1204567890123456\", \
             \"opt_fields\": [\"name\", \"owner.name\", \"current_status_update.title\"]}.",
        )
        .get("/portfolios/{portfolio_gid}")
        .path(
            "portfolio_gid",
            "The portfolio's gid, e.g. \"1204567890123456\".",
        )
        .fields("name,owner.name,due_on,current_status_update.title")
        .build(),
        // getItemsForPortfolio
        tool(
            "asana_portfolio_items_list",
            "List a portfolio's items",
            "Lists the projects and portfolios in a portfolio, e.g. {\"portfolio_gid\": \
             \"1204567890123456\"}.",
        )
        .get("/portfolios/{portfolio_gid}/items")
        .path(
            "portfolio_gid",
            "The portfolio's gid, e.g. \"1204567890123456\".",
        )
        .paged()
        .fields("name,owner,due_on,current_status_update.title")
        .build(),
        // getAllocations
        tool(
            "asana_allocations_list",
            "List allocations",
            "Lists resource allocations (who is planned on which project, when, how much), \
             filtered by project, assignee or workspace, e.g. {\"parent\": \
             \"1204567890123456\"} or {\"assignee\": \"me\", \"workspace\": \
             \"1204567890000001\"}.",
        )
        .get("/allocations")
        .query(
            "parent",
            gid("The project's gid, e.g. \"1204567890123456\"."),
        )
        .query(
            "assignee",
            user("The allocated user: a gid, \"me\" or an email."),
        )
        .query(
            "workspace",
            gid("The workspace's gid; needed with assignee."),
        )
        .one_of_required(&["parent", "assignee"])
        .paged()
        .fields("start_date,end_date,effort,assignee.name,parent.name")
        .build(),
        // createAllocation
        tool(
            "asana_allocation_create",
            "Create an allocation",
            "Plans a user's time on a project for a date range, e.g. {\"parent\": \
             \"1204567890123456\", \"assignee\": \"me\", \"start_date\": \"2026-12-01\", \
             \"end_date\": \"2026-12-19\", \"effort\": {\"type\": \"percent\", \"value\": \
             50}}.",
        )
        .post("/allocations")
        .data(
            "parent",
            gid("The project's gid, e.g. \"1204567890123456\"."),
        )
        .required()
        .data(
            "assignee",
            user("The user: a gid, \"me\" or an email, e.g. \"me\"."),
        )
        .required()
        .data("start_date", date("The first day, e.g. 2026-12-01"))
        .required()
        .data("end_date", date("The last day, e.g. 2026-12-19"))
        .required()
        .data(
            "effort",
            json!({
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": ["hours", "percent"]},
                    "value": {"type": "number", "minimum": 0},
                },
                "required": ["type", "value"],
                "additionalProperties": false,
                "description": "How much: hours in total or a percentage of the user's time, \
                    e.g. {\"type\": \"hours\", \"value\": 20}.",
            }),
        )
        .build(),
        // getTimeTrackingEntriesForTask
        tool(
            "asana_time_tracking_entries_list",
            "List a task's time entries",
            "Lists the time logged on a task, e.g. {\"task_gid\": \"1204567890123456\", \
             \"opt_fields\": [\"duration_minutes\", \"entered_on\", \"created_by.name\"]}.",
        )
        .get("/tasks/{task_gid}/time_tracking_entries")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .paged()
        .fields("duration_minutes,entered_on,created_by.name,attributable_to")
        .build(),
        // createTimeTrackingEntry
        tool(
            "asana_time_tracking_entry_create",
            "Log time on a task",
            "Logs time spent on a task, e.g. {\"task_gid\": \"1204567890123456\", \
             \"duration_minutes\": 90, \"entered_on\": \"2026-11-26\", \"description\": \
             \"Venue calls\"}.",
        )
        .post("/tasks/{task_gid}/time_tracking_entries")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .data(
            "duration_minutes",
            json!({"type": "integer", "minimum": 1,
                   "description": "Minutes spent, e.g. 90."}),
        )
        .required()
        .data(
            "entered_on",
            date("The day the time was spent, e.g. 2026-11-26; today if omitted"),
        )
        .data(
            "attributable_to",
            gid("The project to book the time to, e.g. \"1204567890000001\"."),
        )
        .data(
            "billable_status",
            choice(
                &["billable", "nonBillable", "notApplicable"],
                "Whether the time is billable, e.g. \"billable\".",
            ),
        )
        .data(
            "description",
            text("What the time was spent on, e.g. \"Venue calls\"."),
        )
        .build(),
    ]
}
