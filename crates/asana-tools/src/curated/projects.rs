//! Projects, their sections and their status updates.

use super::{choice, date, flag, gid, gids, instant, text, tool, user, users};
use crate::Tool;

const PROJECT_FIELDS: &str = "name,owner,due_on,archived,current_status_update.title";
const COLORS: &[&str] = &[
    "dark-pink",
    "dark-green",
    "dark-blue",
    "dark-red",
    "dark-teal",
    "dark-brown",
    "dark-orange",
    "dark-purple",
    "dark-warm-gray",
    "light-pink",
    "light-green",
    "light-blue",
    "light-red",
    "light-teal",
    "light-brown",
    "light-orange",
    "light-purple",
    "light-warm-gray",
    "none",
];
const STATUS_TYPES: &[&str] = &[
    "on_track",
    "at_risk",
    "off_track",
    "on_hold",
    "complete",
    "achieved",
    "partial",
    "missed",
    "dropped",
];

pub(super) fn tools() -> Vec<Tool> {
    vec![
        // getProject
        tool(
            "asana_project_get",
            "Get a project",
            "Reads one project, e.g. {\"project_gid\": \"1204567890123456\", \"opt_fields\": \
             [\"name\", \"owner\", \"due_on\", \"current_status_update.title\"]}.",
        )
        .get("/projects/{project_gid}")
        .path(
            "project_gid",
            "The project's gid, e.g. \"1204567890123456\".",
        )
        .fields(PROJECT_FIELDS)
        .build(),
        // getProjects
        tool(
            "asana_projects_list",
            "List projects",
            "Lists the projects of a workspace or of a team, e.g. {\"workspace\": \
             \"1204567890123456\", \"archived\": false}.",
        )
        .get("/projects")
        .query(
            "workspace",
            gid("The workspace's gid, e.g. \"1204567890123456\"."),
        )
        .query(
            "team",
            gid("A team's gid, to list only that team's projects."),
        )
        .query(
            "archived",
            flag("Only archived (true) or only active (false) projects."),
        )
        .one_of_required(&["workspace", "team"])
        .paged()
        .fields(PROJECT_FIELDS)
        .build(),
        // createProjectForTeam
        tool(
            "asana_project_create",
            "Create a project",
            "Creates a project shared with a team, owned by the caller unless `owner` says \
             otherwise, e.g. {\"team_gid\": \"1204567890123456\", \"name\": \"Q1 launch\", \
             \"default_view\": \"board\", \"due_on\": \"2027-03-31\"}. Find the team with \
             asana_typeahead (resource_type \"team\") or the `team` of a project nearby.",
        )
        .post("/teams/{team_gid}/projects")
        .path("team_gid", "The team's gid, e.g. \"1204567890123456\".")
        .data("name", text("The project's name, e.g. \"Q1 launch\"."))
        .required()
        .data("notes", text("A plain-text description."))
        .data("owner", user("The owner: a user gid, \"me\" or an email."))
        .data("color", choice(COLORS, "The color, e.g. \"light-green\"."))
        .data(
            "default_view",
            choice(
                &["list", "board", "calendar", "timeline"],
                "How it opens, e.g. \"board\".",
            ),
        )
        .data(
            "start_on",
            date("The start date, e.g. 2027-01-04; needs due_on"),
        )
        .data("due_on", date("The due date, e.g. 2027-03-31"))
        .data(
            "privacy_setting",
            choice(
                &["public_to_workspace", "private"],
                "Who can see it, e.g. \"public_to_workspace\".",
            ),
        )
        .build(),
        // searchProjectsForWorkspace
        tool(
            "asana_projects_search",
            "Search projects",
            "Searches a workspace's projects with filters (premium workspaces only; 60 searches \
             per minute), e.g. {\"workspace_gid\": \"1204567890123456\", \"text\": \"launch\", \
             \"completed\": false, \"owner_any\": [\"me\"]}. For a quick lookup by name on any \
             plan use asana_typeahead with resource_type \"project\".",
        )
        .search("/workspaces/{workspace_gid}/projects/search")
        .path(
            "workspace_gid",
            "The workspace's gid, e.g. \"1204567890123456\".",
        )
        .query("text", text("Words to find in the name, e.g. \"launch\"."))
        .query(
            "completed",
            flag("Only completed (true) or only open (false) projects."),
        )
        .query_as(
            "owner_any",
            "owner.any",
            users("Owned by any of these users, e.g. [\"me\"]."),
        )
        .query_as(
            "members_any",
            "members.any",
            users("With any of these users as members."),
        )
        .query_as("teams_any", "teams.any", gids("In any of these teams."))
        .query_as(
            "portfolios_any",
            "portfolios.any",
            gids("In any of these portfolios."),
        )
        .query_as(
            "due_on_before",
            "due_on.before",
            date("Due before this day, e.g. 2026-12-31"),
        )
        .query_as(
            "due_on_after",
            "due_on.after",
            date("Due after this day, e.g. 2026-11-01"),
        )
        .query_as(
            "created_at_after",
            "created_at.after",
            instant("Created after then"),
        )
        .query(
            "sort_by",
            choice(
                &[
                    "due_date",
                    "created_at",
                    "completed_at",
                    "modified_at",
                    "relevance",
                ],
                "The order, e.g. \"modified_at\".",
            ),
        )
        .query("sort_ascending", flag("Oldest or earliest first."))
        .fields(PROJECT_FIELDS)
        .build(),
        // getSectionsForProject
        tool(
            "asana_sections_list",
            "List a project's sections",
            "Lists the sections (columns in a board) of a project, in order, e.g. \
             {\"project_gid\": \"1204567890123456\"}.",
        )
        .get("/projects/{project_gid}/sections")
        .path(
            "project_gid",
            "The project's gid, e.g. \"1204567890123456\".",
        )
        .paged()
        .fields("name,created_at")
        .build(),
        // createSectionForProject
        tool(
            "asana_section_create",
            "Create a section",
            "Creates a section in a project, at the end unless told where, e.g. \
             {\"project_gid\": \"1204567890123456\", \"name\": \"In review\"}.",
        )
        .post("/projects/{project_gid}/sections")
        .path(
            "project_gid",
            "The project's gid, e.g. \"1204567890123456\".",
        )
        .data("name", text("The section's name, e.g. \"In review\"."))
        .required()
        .data(
            "insert_before",
            gid("Put it before this section of the project."),
        )
        .data(
            "insert_after",
            gid("Put it after this section of the project."),
        )
        .build(),
        // addTaskForSection
        tool(
            "asana_section_task_add",
            "Move a task into a section",
            "Moves a task into a section of a project the task is in, e.g. {\"section_gid\": \
             \"1204567890000002\", \"task\": \"1204567890123456\"}.",
        )
        .post("/sections/{section_gid}/addTask")
        .path(
            "section_gid",
            "The section's gid, e.g. \"1204567890000002\".",
        )
        .data("task", gid("The task's gid, e.g. \"1204567890123456\"."))
        .required()
        .data(
            "insert_before",
            gid("Put it before this task of the section."),
        )
        .data(
            "insert_after",
            gid("Put it after this task of the section."),
        )
        .build(),
        // getStatusesForObject
        tool(
            "asana_status_updates_list",
            "List status updates",
            "Lists the status updates of a project, portfolio or goal, newest first, e.g. \
             {\"parent\": \"1204567890123456\", \"opt_fields\": [\"title\", \"status_type\", \
             \"text\", \"created_at\"]}.",
        )
        .get("/status_updates")
        .query(
            "parent",
            gid("The project, portfolio or goal gid, e.g. \"1204567890123456\"."),
        )
        .required()
        .query("created_since", instant("Only updates created since then"))
        .paged()
        .fields("title,status_type,text,created_at,author.name")
        .build(),
        // createStatusForObject
        tool(
            "asana_status_update_create",
            "Post a status update",
            "Posts a status update on a project, portfolio or goal, e.g. {\"parent\": \
             \"1204567890123456\", \"status_type\": \"at_risk\", \"title\": \"Week 48\", \
             \"text\": \"Venue slipped a week.\"}. Projects and portfolios take on_track, \
             at_risk, off_track, on_hold, complete; goals also achieved, partial, missed, \
             dropped.",
        )
        .post("/status_updates")
        .data(
            "parent",
            gid("The project, portfolio or goal gid, e.g. \"1204567890123456\"."),
        )
        .required()
        .data(
            "status_type",
            choice(STATUS_TYPES, "The status, e.g. \"on_track\"."),
        )
        .required()
        .data(
            "text",
            text("The update's body in plain text, e.g. \"All milestones met.\""),
        )
        .required()
        .data("title", text("A headline, e.g. \"Week 48 update\"."))
        .build(),
    ]
}
