//! The default seed: a paid and a free workspace, users, a team, projects with sections and
//! tasks, and one REST and one MCP OAuth app, so `make run` has something to explore.
//!
//! Seeded credentials are fixed, documented values: this is a sandbox, and fixed PATs let
//! a developer point an agent at it without a setup step.

use serde_json::{Map, Value, json};

use crate::Sandbox;
use crate::tokens::{App, AppKind};
use crate::world::{World, compact_ref};

/// The seeded personal access token of the first user (Alice, paid workspace).
pub const ALICE_PAT: &str = "sandbox-pat-alice";
/// The seeded personal access token of Bob (free workspace only).
pub const BOB_PAT: &str = "sandbox-pat-bob";
/// The seeded service-account token (paid workspace).
pub const SERVICE_ACCOUNT_TOKEN: &str = "sandbox-service-account";
/// The seeded REST app.
pub const REST_CLIENT_ID: &str = "sandbox-rest-app";
pub const REST_CLIENT_SECRET: &str = "sandbox-rest-secret";
/// The seeded MCP app.
pub const MCP_CLIENT_ID: &str = "sandbox-mcp-app";
pub const MCP_CLIENT_SECRET: &str = "sandbox-mcp-secret";
/// The redirect URI both seeded apps accept (token-vault's callback under `make run`).
pub const REDIRECT_URI: &str = "http://127.0.0.1:50060/oauth/callback";

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn name_ref(object: &Value) -> Value {
    let mut reference = compact_ref(object);
    reference["name"] = object["name"].clone();
    reference
}

/// Adds a task named `name` to `project` (and `section`) in `workspace`, assigned to `assignee`.
pub fn add_task(
    world: &mut World,
    workspace: &Value,
    project: &Value,
    section: Option<&Value>,
    name: &str,
    assignee: Option<&Value>,
) -> Value {
    let memberships = match section {
        Some(section) => json!([{"project": name_ref(project), "section": name_ref(section)}]),
        None => json!([{"project": name_ref(project)}]),
    };
    world.insert(object(json!({
        "resource_type": "task",
        "resource_subtype": "default_task",
        "name": name,
        "notes": "",
        "completed": false,
        "completed_at": null,
        "assignee": assignee.map(name_ref),
        "due_on": null,
        "start_on": null,
        "created_at": chrono::Utc::now().to_rfc3339(),
        "modified_at": chrono::Utc::now().to_rfc3339(),
        "projects": [name_ref(project)],
        "memberships": memberships,
        "workspace": name_ref(workspace),
        "parent": null,
        "followers": [],
        "tags": [],
        "custom_fields": [],
        "dependencies": [],
        "dependents": [],
        "num_subtasks": 0,
        "permalink_url": "",
    })))
}

/// Loads the default seed into `sandbox`.
pub fn default_seed(sandbox: &Sandbox) {
    let mut world = sandbox.world();
    let acme = world.insert(object(json!({
        "resource_type": "workspace", "name": "Acme Corp", "is_organization": true,
        "email_domains": ["acme.test"], "_sandbox_paid": true,
    })));
    let side = world.insert(object(json!({
        "resource_type": "workspace", "name": "Side Project", "is_organization": false,
        "email_domains": [], "_sandbox_paid": false,
    })));
    let user = |world: &mut World, name: &str, email: &str, workspaces: &[&Value]| {
        world.insert(object(json!({
            "resource_type": "user", "name": name, "email": email, "photo": null,
            "workspaces": workspaces.iter().map(|w| name_ref(w)).collect::<Vec<_>>(),
        })))
    };
    let alice = user(
        &mut world,
        "Alice Example",
        "alice@acme.test",
        &[&acme, &side],
    );
    let bob = user(&mut world, "Bob Example", "bob@side.test", &[&side]);
    let carol = user(&mut world, "Carol Example", "carol@acme.test", &[&acme]);
    let robot = user(
        &mut world,
        "Acme Service Account",
        "robot@acme.test",
        &[&acme],
    );
    let team = world.insert(object(json!({
        "resource_type": "team", "name": "Platform", "description": "", "organization": name_ref(&acme),
    })));
    let project = |world: &mut World, name: &str, workspace: &Value, owner: &Value| {
        world.insert(object(json!({
            "resource_type": "project", "name": name, "notes": "", "archived": false,
            "color": "light-green", "public": true, "default_view": "list",
            "created_at": chrono::Utc::now().to_rfc3339(),
            "modified_at": chrono::Utc::now().to_rfc3339(),
            "owner": name_ref(owner), "workspace": name_ref(workspace),
            "team": if workspace["gid"] == acme["gid"] { name_ref(&team) } else { Value::Null },
            "members": [name_ref(owner)], "followers": [name_ref(owner)],
            "custom_fields": [], "current_status_update": null, "due_on": null, "start_on": null,
            "permalink_url": "",
        })))
    };
    let launch = project(&mut world, "Launch plan", &acme, &alice);
    let roadmap = project(&mut world, "Roadmap", &acme, &carol);
    let chores = project(&mut world, "Chores", &side, &bob);
    let section = |world: &mut World, name: &str, project: &Value| {
        world.insert(object(json!({
            "resource_type": "section", "name": name, "project": name_ref(project),
            "created_at": chrono::Utc::now().to_rfc3339(),
        })))
    };
    let todo = section(&mut world, "To do", &launch);
    let done = section(&mut world, "Done", &launch);
    section(&mut world, "Backlog", &roadmap);
    section(&mut world, "Untitled section", &chores);
    for (i, name) in [
        "Write the announcement",
        "Book the venue",
        "Invite customers",
        "Prepare the demo",
    ]
    .iter()
    .enumerate()
    {
        let assignee = if i % 2 == 0 { &alice } else { &carol };
        add_task(
            &mut world,
            &acme,
            &launch,
            Some(if i < 3 { &todo } else { &done }),
            name,
            Some(assignee),
        );
    }
    add_task(
        &mut world,
        &acme,
        &roadmap,
        None,
        "Q3 planning",
        Some(&carol),
    );
    add_task(
        &mut world,
        &side,
        &chores,
        None,
        "Water the plants",
        Some(&bob),
    );
    world.insert(object(json!({
        "resource_type": "tag", "name": "urgent", "color": "dark-red", "workspace": name_ref(&acme),
        "followers": [], "notes": "",
    })));
    world.insert(object(json!({
        "resource_type": "custom_field", "resource_subtype": "enum", "name": "Priority", "type": "enum",
        "enum_options": [
            {"gid": "1210000000000001", "resource_type": "enum_option", "name": "High", "enabled": true, "color": "red"},
            {"gid": "1210000000000002", "resource_type": "enum_option", "name": "Low", "enabled": true, "color": "green"},
        ],
        "workspace": name_ref(&acme), "is_global_to_workspace": true, "description": "",
    })));
    seed_planning(&mut world, &acme, &team, &[&alice, &carol, &robot], &launch);
    drop(world);

    let mut tokens = sandbox.tokens();
    tokens.add_fixed_pat(ALICE_PAT, alice["gid"].as_str().unwrap_or_default(), false);
    tokens.add_fixed_pat(BOB_PAT, bob["gid"].as_str().unwrap_or_default(), false);
    tokens.add_fixed_pat(
        SERVICE_ACCOUNT_TOKEN,
        robot["gid"].as_str().unwrap_or_default(),
        true,
    );
    for (client_id, client_secret, name, kind) in [
        (
            REST_CLIENT_ID,
            REST_CLIENT_SECRET,
            "Sandbox REST app",
            AppKind::Rest,
        ),
        (
            MCP_CLIENT_ID,
            MCP_CLIENT_SECRET,
            "Sandbox MCP app",
            AppKind::Mcp,
        ),
    ] {
        tokens.register_app(App {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            name: name.into(),
            kind,
            redirect_uris: vec![REDIRECT_URI.into()],
        });
    }
}

/// Team memberships of `members` in `team`, the Priority field on `project`, and one of each
/// planning object in `workspace`: a goal with a metric, a portfolio holding `project`, a time
/// tracking entry on the project's first task and an allocation, all owned by the first member.
fn seed_planning(
    world: &mut World,
    workspace: &Value,
    team: &Value,
    members: &[&Value],
    project: &Value,
) {
    for member in members {
        world.insert(object(json!({
            "resource_type": "team_membership", "user": name_ref(member), "team": name_ref(team),
            "is_guest": false, "is_admin": false, "is_limited_access": false,
        })));
    }
    let priority = world
        .all("custom_field", |f| f["name"] == "Priority")
        .next()
        .cloned();
    if let Some(field) = priority {
        world.insert(object(json!({
            "resource_type": "custom_field_setting", "is_important": true,
            "project": name_ref(project), "parent": name_ref(project), "custom_field": field,
        })));
    }
    let Some(owner) = members.first() else {
        return;
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let metric_gid = world.new_gid();
    world.insert(object(json!({
        "resource_type": "goal", "name": "Grow weekly active teams", "notes": "",
        "html_notes": "<body></body>", "due_on": null, "start_on": null,
        "is_workspace_level": true, "liked": false, "likes": [], "num_likes": 0,
        "team": null, "workspace": name_ref(workspace), "followers": [name_ref(owner)],
        "time_period": null, "owner": name_ref(owner), "current_status_update": null,
        "status": null, "privacy_setting": "public_to_workspace", "custom_fields": [],
        "custom_field_settings": [],
        "metric": {
            "gid": metric_gid, "resource_type": "metric", "resource_subtype": "number",
            "precision": 0, "unit": "none", "currency_code": null,
            "initial_number_value": 100, "target_number_value": 500, "current_number_value": 150,
            "current_display_value": "150", "progress_source": "manual",
            "is_custom_weight": false, "can_manage": true,
        },
    })));
    world.insert(object(json!({
        "resource_type": "portfolio", "name": "Company bets", "color": "light-blue",
        "archived": false, "created_at": now, "created_by": name_ref(owner),
        "owner": name_ref(owner), "members": [name_ref(owner)], "workspace": name_ref(workspace),
        "public": true, "privacy_setting": "public_to_domain", "default_access_level": "editor",
        "start_on": null, "due_on": null, "current_status_update": null, "custom_fields": [],
        "custom_field_settings": [], "project_templates": [], "permalink_url": "",
        "_sandbox_items": [project["gid"]],
    })));
    let first_task = world
        .all("task", |t| t["projects"][0]["gid"] == project["gid"])
        .next()
        .cloned();
    if let Some(task) = first_task {
        world.insert(object(json!({
            "resource_type": "time_tracking_entry", "duration_minutes": 45,
            "entered_on": chrono::Utc::now().date_naive().format("%Y-%m-%d").to_string(),
            "attributable_to": name_ref(project), "created_by": name_ref(owner),
            "task": name_ref(&task), "created_at": now, "approval_status": "DRAFT",
            "billable_status": "billable", "description": "", "categories": [],
        })));
    }
    world.insert(object(json!({
        "resource_type": "allocation", "resource_subtype": "project_allocation",
        "start_date": "2026-01-05", "end_date": "2026-03-27",
        "effort": {"type": "percent", "value": 50}, "assignee": name_ref(owner),
        "created_by": name_ref(owner), "parent": name_ref(project),
    })));
}
