//! Users, workspaces, typeahead, custom fields, attachments and webhooks.

use serde_json::json;

use super::{choice, gid, text, tool};
use crate::Tool;

const TYPEAHEAD_TYPES: &[&str] = &[
    "custom_field",
    "goal",
    "portfolio",
    "project",
    "project_template",
    "tag",
    "task",
    "team",
    "user",
];

pub(super) fn tools() -> Vec<Tool> {
    vec![
        // getUser with `me`
        tool(
            "asana_user_me",
            "Who am I",
            "Reads the user the connection acts as, with their workspaces, e.g. {\"opt_fields\": \
             [\"name\", \"email\", \"workspaces.name\"]}. Start here to find workspace gids.",
        )
        .get("/users/me")
        .fields("name,email,workspaces.name")
        .build(),
        // getUsers
        tool(
            "asana_users_list",
            "List users",
            "Lists the users of a workspace (or of one team), e.g. {\"workspace\": \
             \"1204567890123456\", \"opt_fields\": [\"name\", \"email\"]}.",
        )
        .get("/users")
        .query(
            "workspace",
            gid("The workspace's gid, e.g. \"1204567890123456\"."),
        )
        .query("team", gid("A team's gid, to list only its members."))
        .one_of_required(&["workspace", "team"])
        .paged()
        .fields("name,email")
        .build(),
        // getWorkspaces
        tool(
            "asana_workspaces_list",
            "List workspaces",
            "Lists the workspaces and organizations the user belongs to, e.g. {\"opt_fields\": \
             [\"name\", \"is_organization\"]}.",
        )
        .get("/workspaces")
        .paged()
        .fields("name,is_organization")
        .build(),
        // typeaheadForWorkspace
        tool(
            "asana_typeahead",
            "Find objects by name",
            "Finds objects of one type in a workspace by the start of their name, as Asana's \
             search box does; fast, on every plan, not exhaustive, e.g. {\"workspace_gid\": \
             \"1204567890123456\", \"resource_type\": \"project\", \"query\": \"launch\"}.",
        )
        .get("/workspaces/{workspace_gid}/typeahead")
        .path(
            "workspace_gid",
            "The workspace's gid, e.g. \"1204567890123456\".",
        )
        .query(
            "resource_type",
            choice(TYPEAHEAD_TYPES, "What to find, e.g. \"project\"."),
        )
        .required()
        .query(
            "query",
            text("The text to match, e.g. \"launch\"; empty lists recent ones."),
        )
        .query(
            "count",
            json!({"type": "integer", "minimum": 1, "maximum": 100,
                   "description": "How many results, 1 to 100, e.g. 10; 20 if omitted."}),
        )
        .fields("name")
        .build(),
        // getCustomFieldSettingsForProject
        tool(
            "asana_project_custom_fields_list",
            "List a project's custom fields",
            "Lists the custom fields of a project with their types and enum options, e.g. \
             {\"project_gid\": \"1204567890123456\", \"opt_fields\": [\"custom_field.name\", \
             \"custom_field.resource_subtype\", \"custom_field.enum_options.name\"]}.",
        )
        .get("/projects/{project_gid}/custom_field_settings")
        .path(
            "project_gid",
            "The project's gid, e.g. \"1204567890123456\".",
        )
        .paged()
        .fields("custom_field.name,custom_field.resource_subtype,custom_field.enum_options.name")
        .build(),
        // getCustomFieldsForWorkspace
        tool(
            "asana_workspace_custom_fields_list",
            "List a workspace's custom fields",
            "Lists every custom field defined in a workspace, e.g. {\"workspace_gid\": \
             \"1204567890123456\", \"opt_fields\": [\"name\", \"resource_subtype\", \
             \"enum_options.name\"]}.",
        )
        .get("/workspaces/{workspace_gid}/custom_fields")
        .path(
            "workspace_gid",
            "The workspace's gid, e.g. \"1204567890123456\".",
        )
        .paged()
        .fields("name,resource_subtype,enum_options.name")
        .build(),
        // getCustomField
        tool(
            "asana_custom_field_get",
            "Get a custom field",
            "Reads one custom field with its type and enum options, e.g. \
             {\"custom_field_gid\": \"1204567890123456\"}.",
        )
        .get("/custom_fields/{custom_field_gid}")
        .path(
            "custom_field_gid",
            "The custom field's gid, e.g. \"1204567890123456\".",
        )
        .fields("name,resource_subtype,enum_options.name,precision")
        .build(),
        // getAttachmentsForObject
        tool(
            "asana_attachments_list",
            "List attachments",
            "Lists the files attached to a task, project or project brief, e.g. {\"parent\": \
             \"1204567890123456\", \"opt_fields\": [\"name\", \"download_url\", \"size\"]}.",
        )
        .get("/attachments")
        .query(
            "parent",
            gid("The task, project or brief gid, e.g. \"1204567890123456\"."),
        )
        .required()
        .paged()
        .fields("name,download_url,permanent_url,size")
        .build(),
        // getWebhooks
        tool(
            "asana_webhooks_list",
            "List webhooks",
            "Lists the webhooks this connection created in a workspace, optionally for one \
             resource, e.g. {\"workspace\": \"1204567890123456\"}.",
        )
        .get("/webhooks")
        .query(
            "workspace",
            gid("The workspace's gid, e.g. \"1204567890123456\"."),
        )
        .required()
        .query(
            "resource",
            gid("Only webhooks on this resource (project, task, …)."),
        )
        .paged()
        .fields("resource.name,target,active,last_failure_content")
        .build(),
        // createWebhook
        tool(
            "asana_webhook_create",
            "Create a webhook",
            "Subscribes a URL to changes of a resource. Asana first sends the target a \
             handshake with X-Hook-Secret that it must echo. E.g. {\"resource\": \
             \"1204567890123456\", \"target\": \"https://example.com/hooks/asana\", \
             \"filters\": [{\"resource_type\": \"task\", \"action\": \"changed\", \"fields\": \
             [\"completed\"]}]}.",
        )
        .post("/webhooks")
        .data(
            "resource",
            gid("The project, task, portfolio, … to watch, e.g. \"1204567890123456\"."),
        )
        .required()
        .data(
            "target",
            json!({"type": "string", "format": "uri", "pattern": "^https?://",
                   "description": "The URL Asana posts events to, e.g. \
                       \"https://example.com/hooks/asana\"."}),
        )
        .required()
        .data(
            "filters",
            json!({
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "resource_type": {"type": "string", "description": "e.g. \"task\""},
                        "resource_subtype": {"type": "string", "description": "e.g. \"milestone\""},
                        "action": {"type": "string", "enum":
                            ["changed", "added", "removed", "deleted", "undeleted"]},
                        "fields": {"type": "array", "items": {"type": "string"},
                                   "description": "Only with action changed, e.g. [\"due_on\"]"},
                    },
                    "additionalProperties": false,
                },
                "description": "Only events matching one of these are delivered; required by \
                    Asana for workspace and team resources.",
            }),
        )
        .build(),
        // deleteWebhook
        tool(
            "asana_webhook_delete",
            "Delete a webhook",
            "Deletes a webhook; its target gets no more events, e.g. {\"webhook_gid\": \
             \"1204567890123456\"}.",
        )
        .delete("/webhooks/{webhook_gid}")
        .path(
            "webhook_gid",
            "The webhook's gid, e.g. \"1204567890123456\".",
        )
        .build(),
    ]
}
