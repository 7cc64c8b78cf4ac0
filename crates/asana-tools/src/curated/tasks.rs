//! Tasks: read, create, update, delete, list, search, subtasks, projects, dependencies,
//! followers, comments and custom field values.

use serde_json::json;

use super::{Builder, choice, date, flag, gid, gids, instant, or_null, text, tool, user, users};
use crate::{Place, Tool};

const TASK_FIELDS: &str = "name,assignee.name,due_on,completed,notes,projects.name";
const SUBTYPES: &[&str] = &["default_task", "milestone", "approval"];

pub(super) fn tools() -> Vec<Tool> {
    vec![
        // getTask
        tool(
            "asana_task_get",
            "Get a task",
            "Reads one task: name, notes, assignee, dates, projects and more (choose with \
             opt_fields, e.g. [\"name\", \"assignee.name\", \"due_on\", \"custom_fields\"]).",
        )
        .get("/tasks/{task_gid}")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .fields(TASK_FIELDS)
        .build(),
        // createTask
        task_fields(
            tool(
                "asana_task_create",
                "Create a task",
                "Creates a task. Give `workspace`, `projects` or `parent` to say where it goes, \
                 e.g. {\"name\": \"Draft the launch email\", \"projects\": [\"1204567890123456\"], \
                 \"assignee\": \"me\", \"due_on\": \"2026-12-01\"}.",
            )
            .post("/tasks"),
        )
        .data(
            "projects",
            gids("Gids of the projects to add the task to, e.g. [\"1204567890123456\"]."),
        )
        .data(
            "parent",
            gid("The parent task's gid, to create a subtask, e.g. \"1204567890123456\"."),
        )
        .data(
            "workspace",
            gid("The workspace's gid; needed when neither projects nor parent is given."),
        )
        .data(
            "followers",
            users("Users to notify about changes, e.g. [\"me\", \"ana@example.com\"]."),
        )
        .data("tags", gids("Gids of tags to put on the task."))
        .data("custom_fields", custom_field_values())
        .one_of_required(&["workspace", "projects", "parent"])
        .build(),
        // updateTask
        tool(
            "asana_task_update",
            "Update a task",
            "Changes a task's fields; only the given ones change, e.g. {\"task_gid\": \
             \"1204567890123456\", \"completed\": true} or {\"task_gid\": \"…\", \"assignee\": \
             null} to unassign. Use asana_task_project_add and asana_task_followers_add for \
             projects and followers.",
        )
        .put("/tasks/{task_gid}")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .data("name", text("The new name, e.g. \"Draft the launch email\"."))
        .data("notes", text("The new plain-text description."))
        .data(
            "html_notes",
            text("The new rich-text description, e.g. \"<body>See <b>plan</b></body>\"."),
        )
        .data(
            "assignee",
            or_null(user("The new assignee: a user gid, \"me\" or an email; null unassigns.")),
        )
        .data("due_on", or_null(date("The due date, e.g. 2026-12-01; null clears it")))
        .data("due_at", or_null(instant("The due date and time; null clears it")))
        .data("start_on", or_null(date("The start date, e.g. 2026-11-20; null clears it")))
        .data("completed", flag("Whether the task is done, e.g. true."))
        .data(
            "resource_subtype",
            choice(SUBTYPES, "The kind of task, e.g. \"milestone\"."),
        )
        .data("custom_fields", custom_field_values())
        .build(),
        // deleteTask
        tool(
            "asana_task_delete",
            "Delete a task",
            "Deletes a task (it goes to the trash for 30 days), e.g. {\"task_gid\": \
             \"1204567890123456\"}.",
        )
        .delete("/tasks/{task_gid}")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .build(),
        // getTasksForProject
        tool(
            "asana_tasks_list_by_project",
            "List a project's tasks",
            "Lists the tasks of a project, e.g. {\"project_gid\": \"1204567890123456\", \
             \"completed_since\": \"now\"} for the open ones only.",
        )
        .get("/projects/{project_gid}/tasks")
        .path("project_gid", "The project's gid, e.g. \"1204567890123456\".")
        .query("completed_since", completed_since())
        .paged()
        .fields(TASK_FIELDS)
        .build(),
        // getTasksForSection
        tool(
            "asana_tasks_list_by_section",
            "List a section's tasks",
            "Lists the tasks in one section (column) of a project, e.g. {\"section_gid\": \
             \"1204567890123456\"}.",
        )
        .get("/sections/{section_gid}/tasks")
        .path("section_gid", "The section's gid, e.g. \"1204567890123456\".")
        .query("completed_since", completed_since())
        .paged()
        .fields(TASK_FIELDS)
        .build(),
        // getTasks with assignee and workspace
        tool(
            "asana_tasks_list_by_assignee",
            "List a user's tasks",
            "Lists the tasks assigned to a user in a workspace (their My Tasks), e.g. \
             {\"assignee\": \"me\", \"workspace\": \"1204567890123456\", \"completed_since\": \
             \"2026-11-01T00:00:00Z\"}.",
        )
        .get("/tasks")
        .query("assignee", user("The assignee: a user gid, \"me\" or an email."))
        .required()
        .query("workspace", gid("The workspace's gid, e.g. \"1204567890123456\"."))
        .required()
        .query(
            "completed_since",
            instant("Only tasks still open or completed since then; a time in the future lists open tasks only"),
        )
        .query(
            "modified_since",
            instant("Only tasks changed since then, e.g. 2026-11-01T00:00:00Z"),
        )
        .paged()
        .fields(TASK_FIELDS)
        .build(),
        // getSubtasksForTask
        tool(
            "asana_subtasks_list",
            "List a task's subtasks",
            "Lists the direct subtasks of a task, e.g. {\"task_gid\": \"1204567890123456\"}.",
        )
        .get("/tasks/{task_gid}/subtasks")
        .path("task_gid", "The parent task's gid, e.g. \"1204567890123456\".")
        .paged()
        .fields(TASK_FIELDS)
        .build(),
        // createSubtaskForTask
        task_fields(
            tool(
                "asana_subtask_create",
                "Create a subtask",
                "Creates a subtask under a task, e.g. {\"task_gid\": \"1204567890123456\", \
                 \"name\": \"Book the room\", \"assignee\": \"me\"}.",
            )
            .post("/tasks/{task_gid}/subtasks")
            .path("task_gid", "The parent task's gid, e.g. \"1204567890123456\"."),
        )
        .data(
            "followers",
            users("Users to notify about changes, e.g. [\"me\", \"ana@example.com\"]."),
        )
        .build(),
        // addProjectForTask
        tool(
            "asana_task_project_add",
            "Add a task to a project",
            "Adds a task to a project (optionally in a section, or moves it there if already \
             in it), e.g. {\"task_gid\": \"1204567890123456\", \"project\": \
             \"1204567890000001\", \"section\": \"1204567890000002\"}.",
        )
        .post("/tasks/{task_gid}/addProject")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .data("project", gid("The project's gid, e.g. \"1204567890000001\"."))
        .required()
        .data("section", gid("A section of that project to put the task in."))
        .data("insert_after", gid("Put the task after this task of the project."))
        .data("insert_before", gid("Put the task before this task of the project."))
        .build(),
        // removeProjectForTask
        tool(
            "asana_task_project_remove",
            "Remove a task from a project",
            "Removes a task from a project; the task itself stays, e.g. {\"task_gid\": \
             \"1204567890123456\", \"project\": \"1204567890000001\"}.",
        )
        .post("/tasks/{task_gid}/removeProject")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .data("project", gid("The project's gid, e.g. \"1204567890000001\"."))
        .required()
        .build(),
        // getDependenciesForTask
        tool(
            "asana_task_dependencies_list",
            "List a task's dependencies",
            "Lists the tasks this task waits on (its dependencies), e.g. {\"task_gid\": \
             \"1204567890123456\"}.",
        )
        .get("/tasks/{task_gid}/dependencies")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .paged()
        .fields("name,completed,assignee.name")
        .build(),
        // addDependenciesForTask
        tool(
            "asana_task_dependencies_add",
            "Add dependencies to a task",
            "Marks a task as waiting on other tasks, e.g. {\"task_gid\": \"1204567890123456\", \
             \"dependencies\": [\"1204567890000003\"]}.",
        )
        .post("/tasks/{task_gid}/addDependencies")
        .path("task_gid", "The waiting task's gid, e.g. \"1204567890123456\".")
        .data("dependencies", gids("Gids of the tasks it waits on, e.g. [\"1204567890000003\"]."))
        .required()
        .build(),
        // removeDependenciesForTask
        tool(
            "asana_task_dependencies_remove",
            "Remove dependencies from a task",
            "Stops a task waiting on other tasks, e.g. {\"task_gid\": \"1204567890123456\", \
             \"dependencies\": [\"1204567890000003\"]}.",
        )
        .post("/tasks/{task_gid}/removeDependencies")
        .path("task_gid", "The waiting task's gid, e.g. \"1204567890123456\".")
        .data("dependencies", gids("Gids of the tasks to stop waiting on, e.g. [\"1204567890000003\"]."))
        .required()
        .build(),
        // addFollowersForTask
        tool(
            "asana_task_followers_add",
            "Add followers to a task",
            "Adds users as followers (they get notified of changes), e.g. {\"task_gid\": \
             \"1204567890123456\", \"followers\": [\"ana@example.com\"]}.",
        )
        .post("/tasks/{task_gid}/addFollowers")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .data("followers", users("Users to add: gids, \"me\" or emails, e.g. [\"me\"]."))
        .required()
        .build(),
        // removeFollowerForTask
        tool(
            "asana_task_followers_remove",
            "Remove followers from a task",
            "Removes followers from a task, e.g. {\"task_gid\": \"1204567890123456\", \
             \"followers\": [\"me\"]}.",
        )
        .post("/tasks/{task_gid}/removeFollowers")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .data("followers", users("Users to remove: gids, \"me\" or emails, e.g. [\"me\"]."))
        .required()
        .build(),
        search(),
        // updateTask, one custom field
        tool(
            "asana_task_custom_field_set",
            "Set a task's custom field",
            "Sets one custom field value on a task, e.g. {\"task_gid\": \"1204567890123456\", \
             \"custom_field_gid\": \"1204567890000009\", \"value\": \"1204567890000010\"} for an \
             enum option. Find fields with asana_project_custom_fields_list.",
        )
        .put("/tasks/{task_gid}")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .prop(
            "custom_field_gid",
            gid("The custom field's gid, e.g. \"1204567890000009\"."),
            Place::KeyOnly,
        )
        .required()
        .prop(
            "value",
            or_null(json!({"type": "string", "description":
                "The value as a string: an enum option's gid for an enum field, the text for \
                 a text field, the number for a number field (e.g. \"42.5\"), YYYY-MM-DD for a \
                 date field; null clears it."})),
            Place::DataEntry {
                field: "custom_fields".to_owned(),
                key: "custom_field_gid".to_owned(),
            },
        )
        .required()
        .build(),
        // getStoriesForTask
        tool(
            "asana_stories_list",
            "List a task's stories",
            "Lists a task's comments and change history, oldest first, e.g. {\"task_gid\": \
             \"1204567890123456\", \"opt_fields\": [\"text\", \"created_by.name\", \
             \"created_at\", \"type\"]}.",
        )
        .get("/tasks/{task_gid}/stories")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .paged()
        .fields("text,type,created_by.name,created_at")
        .build(),
        // createStoryForTask
        tool(
            "asana_story_create",
            "Comment on a task",
            "Adds a comment to a task, e.g. {\"task_gid\": \"1204567890123456\", \"text\": \
             \"Venue confirmed for Friday.\"}.",
        )
        .post("/tasks/{task_gid}/stories")
        .path("task_gid", "The task's gid, e.g. \"1204567890123456\".")
        .data("text", text("The comment in plain text, e.g. \"Looks good to me.\""))
        .data(
            "html_text",
            text("The comment as rich text, e.g. \"<body>Done, see <a href=\\\"https://example.com\\\">notes</a></body>\"."),
        )
        .data("is_pinned", flag("Pin the comment to the top of the task."))
        .one_of_required(&["text", "html_text"])
        .build(),
    ]
}

/// The fields a new task or subtask takes.
fn task_fields(builder: Builder) -> Builder {
    builder
        .data(
            "name",
            text("The task's name, e.g. \"Draft the launch email\"."),
        )
        .required()
        .data("notes", text("A plain-text description."))
        .data(
            "html_notes",
            text("A rich-text description, e.g. \"<body>See <b>plan</b></body>\"."),
        )
        .data(
            "assignee",
            user("Who does it: a user gid, \"me\" or an email, e.g. \"me\"."),
        )
        .data("due_on", date("The due date, e.g. 2026-12-01"))
        .data(
            "due_at",
            instant("The due date and time, instead of due_on"),
        )
        .data(
            "start_on",
            date("The start date, e.g. 2026-11-20; needs a due date"),
        )
        .data("completed", flag("Create it already done."))
        .data(
            "resource_subtype",
            choice(
                SUBTYPES,
                "The kind of task, e.g. \"milestone\"; default_task if omitted.",
            ),
        )
}

/// `completed_since`: `now` or an instant.
fn completed_since() -> serde_json::Value {
    text(
        "Only tasks still open or completed since this instant, e.g. \"now\" (open tasks only) \
         or \"2026-11-01T00:00:00Z\".",
    )
}

/// Custom field values by field gid.
fn custom_field_values() -> serde_json::Value {
    json!({
        "type": "object",
        "propertyNames": {"pattern": "^[0-9]+$"},
        "additionalProperties": {"type": "string"},
        "description": "Custom field values by custom field gid, each as a string: an enum \
            option gid, text, a number or a date, e.g. {\"1204567890000009\": \
            \"1204567890000010\"}.",
    })
}

/// searchTasksForWorkspace, with the filters an agent needs most.
fn search() -> Tool {
    tool(
        "asana_task_search",
        "Search tasks",
        "Searches a workspace's tasks with filters (premium workspaces only; 60 searches per \
         minute). Filters combine with AND, e.g. {\"workspace_gid\": \"1204567890123456\", \
         \"text\": \"launch\", \"assignee_any\": [\"me\"], \"completed\": false, \
         \"due_on_before\": \"2026-12-31\", \"sort_by\": \"due_date\"}. Not paginated: \
         narrow the filters, or sort by created_at and filter on created_at_before to go on.",
    )
    .search("/workspaces/{workspace_gid}/tasks/search")
    .path(
        "workspace_gid",
        "The workspace's gid, e.g. \"1204567890123456\".",
    )
    .query(
        "text",
        text("Words to find in the name or description, e.g. \"launch email\"."),
    )
    .query(
        "resource_subtype",
        choice(SUBTYPES, "Only this kind of task, e.g. \"milestone\"."),
    )
    .query_as(
        "assignee_any",
        "assignee.any",
        users("Assigned to any of these, e.g. [\"me\"]."),
    )
    .query_as(
        "assignee_not",
        "assignee.not",
        users("Assigned to none of these."),
    )
    .query_as(
        "projects_any",
        "projects.any",
        gids("In any of these projects."),
    )
    .query_as(
        "projects_not",
        "projects.not",
        gids("In none of these projects."),
    )
    .query_as(
        "projects_all",
        "projects.all",
        gids("In all of these projects."),
    )
    .query_as(
        "sections_any",
        "sections.any",
        gids("In any of these sections."),
    )
    .query_as("tags_any", "tags.any", gids("With any of these tags."))
    .query_as("tags_not", "tags.not", gids("With none of these tags."))
    .query_as(
        "teams_any",
        "teams.any",
        gids("In projects of any of these teams."),
    )
    .query_as(
        "portfolios_any",
        "portfolios.any",
        gids("In projects of any of these portfolios."),
    )
    .query_as(
        "followers_any",
        "followers.any",
        users("Followed by any of these users."),
    )
    .query_as(
        "created_by_any",
        "created_by.any",
        users("Created by any of these users."),
    )
    .query("due_on", date("Due on this day, e.g. 2026-12-01"))
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
        "start_on_before",
        "start_on.before",
        date("Starting before this day"),
    )
    .query_as(
        "start_on_after",
        "start_on.after",
        date("Starting after this day"),
    )
    .query_as(
        "created_at_before",
        "created_at.before",
        instant("Created before then"),
    )
    .query_as(
        "created_at_after",
        "created_at.after",
        instant("Created after then"),
    )
    .query_as(
        "modified_at_after",
        "modified_at.after",
        instant("Changed after then"),
    )
    .query_as(
        "completed_at_after",
        "completed_at.after",
        instant("Completed after then"),
    )
    .query(
        "completed",
        flag("Only done (true) or only open (false) tasks, e.g. false."),
    )
    .query(
        "is_subtask",
        flag("Only subtasks (true) or only top-level tasks (false)."),
    )
    .query(
        "is_blocked",
        flag("Only tasks waiting on an unfinished dependency."),
    )
    .query(
        "is_blocking",
        flag("Only unfinished tasks another task waits on."),
    )
    .query("has_attachment", flag("Only tasks with an attachment."))
    .query(
        "sort_by",
        choice(
            &[
                "due_date",
                "created_at",
                "completed_at",
                "likes",
                "modified_at",
                "relevance",
            ],
            "The order, e.g. \"due_date\"; modified_at if omitted.",
        ),
    )
    .query(
        "sort_ascending",
        flag("Oldest or earliest first; false if omitted."),
    )
    .fields(TASK_FIELDS)
    .build()
}
