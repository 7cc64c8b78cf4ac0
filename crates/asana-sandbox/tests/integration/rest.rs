//! The REST resource families against a served sandbox: users, teams, projects, sections,
//! tasks and their relationships, attachments, custom field values, task and project search,
//! typeahead, stories, tags, status updates, goals, portfolios, time tracking, allocations,
//! batch and the audit log, each with its happy path and the errors Asana gives (404 unknown
//! or invisible gids, 400 bad input, 402 for paid features in a free workspace, 403 for
//! someone else's story), plus pagination, `opt_fields`, compact list records, the search
//! budget, and the changes writes record for webhooks and events.

use asana_sandbox::seed::{ALICE_PAT, BOB_PAT, SERVICE_ACCOUNT_TOKEN};
use asana_sandbox::{Config, LimitConfig, Sandbox};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A served, freshly seeded sandbox; stops when dropped.
struct Harness {
    sandbox: Sandbox,
    api: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What one call answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    body: Value,
}

async fn start() -> Harness {
    start_with(|config| config).await
}

/// [`start`] with `adjust` applied to the configuration.
async fn start_with(adjust: impl FnOnce(Config) -> Config) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let sandbox = Sandbox::new(adjust(Config {
        public_url: format!("http://{address}"),
        seed: true,
        ..Config::default()
    }));
    let stop = CancellationToken::new();
    tokio::spawn(sandbox.clone().serve(listener, stop.clone()));
    Harness {
        sandbox,
        api: format!("http://{address}/api/1.0"),
        http: reqwest::Client::new(),
        stop,
    }
}

impl Harness {
    async fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("sandbox answers");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            location,
            body,
        }
    }

    /// `GET path` as Alice: (status, body).
    async fn get(&self, path: &str) -> (u16, Value) {
        let answer = self.call(ALICE_PAT, Method::GET, path, None).await;
        (answer.status, answer.body)
    }

    /// A write as Alice with `{"data": data}`: (status, body).
    async fn write(&self, method: Method, path: &str, data: Value) -> (u16, Value) {
        let answer = self
            .call(ALICE_PAT, method, path, Some(json!({ "data": data })))
            .await;
        (answer.status, answer.body)
    }

    async fn post(&self, path: &str, data: Value) -> (u16, Value) {
        self.write(Method::POST, path, data).await
    }

    async fn put(&self, path: &str, data: Value) -> (u16, Value) {
        self.write(Method::PUT, path, data).await
    }

    async fn delete_as(&self, token: &str, path: &str) -> u16 {
        self.call(token, Method::DELETE, path, None).await.status
    }

    /// The gid of the seeded `resource_type` called `name`.
    fn gid(&self, resource_type: &str, name: &str) -> String {
        self.sandbox
            .world()
            .all(resource_type, |o| o["name"] == name)
            .next()
            .and_then(|o| o["gid"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no {resource_type} called {name}"))
    }

    fn acme(&self) -> String {
        self.gid("workspace", "Acme Corp")
    }

    fn side(&self) -> String {
        self.gid("workspace", "Side Project")
    }

    /// The recorded changes concerning `gid`, as (action, parent gid, changed field).
    fn changes(&self, gid: &str) -> Vec<(String, String, String)> {
        self.sandbox
            .world()
            .changes_since(0, gid)
            .map(|c| {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    text(&c.event["action"]),
                    text(&c.event["parent"]["gid"]),
                    text(&c.event["change"]["field"]),
                )
            })
            .collect()
    }

    /// Creates a task called `name` in `project` as Alice and returns its gid.
    async fn task_in(&self, project: &str, name: &str) -> String {
        let (status, body) = self
            .post("/tasks", json!({"name": name, "projects": [project]}))
            .await;
        assert_eq!(status, 201, "{body}");
        text(&body["data"]["gid"])
    }
}

fn text(value: &Value) -> String {
    value.as_str().expect("a string").to_owned()
}

fn message(body: &Value) -> String {
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn names(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .expect("a data array")
        .iter()
        .map(|o| o["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn keys(object: &Value) -> Vec<String> {
    let mut keys: Vec<String> = object
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn teams_of_a_workspace_and_of_a_user() {
    let h = start().await;
    let acme = h.acme();
    let team = h.gid("team", "Platform");

    let (status, body) = h.get(&format!("/workspaces/{acme}/teams")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), vec!["Platform"]);
    assert_eq!(keys(&body["data"][0]), vec!["gid", "name", "resource_type"]);

    let (status, body) = h.get(&format!("/teams/{team}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["organization"]["gid"], acme.as_str());

    let (status, body) = h.get(&format!("/users/me/teams?organization={acme}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), vec!["Platform"]);

    let (status, _) = h.get("/users/me/teams").await;
    assert_eq!(status, 400);
    let (status, body) = h.get("/teams/999").await;
    assert_eq!(status, 404);
    assert_eq!(message(&body), "team: Not a recognized ID");
    let bob = h
        .call(BOB_PAT, Method::GET, &format!("/teams/{team}"), None)
        .await;
    assert_eq!(bob.status, 404, "Bob is not in Acme");
}

#[tokio::test]
async fn projects_are_created_listed_updated_and_deleted() {
    let h = start().await;
    let acme = h.acme();
    let side = h.side();
    let team = h.gid("team", "Platform");

    let created = h
        .call(
            ALICE_PAT,
            Method::POST,
            "/projects",
            Some(json!({"data": {"workspace": acme, "team": team, "name": "Offsite", "notes": "bring snacks"}})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let project = text(&created.body["data"]["gid"]);
    assert!(
        created
            .location
            .as_deref()
            .is_some_and(|l| l.ends_with(&format!("/api/1.0/projects/{project}")))
    );
    assert_eq!(created.body["data"]["owner"]["name"], "Alice Example");
    assert_eq!(created.body["data"]["team"]["gid"], team.as_str());
    assert_eq!(h.changes(&project)[0].0, "added");

    let (status, body) = h.get(&format!("/projects?workspace={acme}")).await;
    assert_eq!(status, 200);
    assert!(names(&body).contains(&"Offsite".to_owned()));
    assert_eq!(keys(&body["data"][0]), vec!["gid", "name", "resource_type"]);
    let (_, body) = h.get(&format!("/teams/{team}/projects")).await;
    assert!(names(&body).contains(&"Offsite".to_owned()));
    let (_, body) = h.get(&format!("/workspaces/{side}/projects")).await;
    assert_eq!(names(&body), vec!["Chores"]);

    let (status, body) = h
        .put(
            &format!("/projects/{project}"),
            json!({"name": "Offsite 2026", "archived": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "Offsite 2026");
    let fields: Vec<String> = h
        .changes(&project)
        .into_iter()
        .filter(|c| c.0 == "changed")
        .map(|c| c.2)
        .collect();
    assert_eq!(fields.len(), 2);
    assert!(fields.contains(&"name".to_owned()) && fields.contains(&"archived".to_owned()));
    let (_, body) = h
        .get(&format!("/projects?workspace={acme}&archived=false"))
        .await;
    assert!(!names(&body).contains(&"Offsite 2026".to_owned()));

    let (status, body) = h.post("/projects", json!({"name": "nowhere"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = h
        .post(
            "/projects",
            json!({"workspace": side, "team": team, "name": "x"}),
        )
        .await;
    assert_eq!(status, 400, "a team of another workspace: {body}");
    let (status, body) = h
        .put(
            &format!("/projects/{project}"),
            json!({"default_view": "cube"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let bob = h
        .call(
            BOB_PAT,
            Method::POST,
            "/projects",
            Some(json!({"data": {"workspace": acme, "name": "intrusion"}})),
        )
        .await;
    assert_eq!(bob.status, 404, "{}", bob.body);

    assert_eq!(
        h.delete_as(ALICE_PAT, &format!("/projects/{project}"))
            .await,
        200
    );
    let (status, _) = h.get(&format!("/projects/{project}")).await;
    assert_eq!(status, 404);
    assert_eq!(
        h.changes(&project).last().map(|c| c.0.clone()),
        Some("deleted".into())
    );
}

#[tokio::test]
async fn sections_hold_tasks_and_must_be_empty_to_go() {
    let h = start().await;
    let launch = h.gid("project", "Launch plan");
    let task = h.gid("task", "Book the venue");

    let (status, body) = h
        .post(
            &format!("/projects/{launch}/sections"),
            json!({"name": "Later"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let section = text(&body["data"]["gid"]);
    assert!(
        h.changes(&launch)
            .iter()
            .any(|c| c.0 == "added" && c.1 == launch)
    );

    let (_, body) = h.get(&format!("/projects/{launch}/sections")).await;
    assert_eq!(names(&body), vec!["To do", "Done", "Later"]);

    let (status, body) = h
        .put(&format!("/sections/{section}"), json!({"name": "Someday"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "Someday");

    let (status, body) = h
        .post(
            &format!("/sections/{section}/addTask"),
            json!({"task": task}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = h.get(&format!("/sections/{section}/tasks")).await;
    assert_eq!(names(&body), vec!["Book the venue"]);
    assert!(
        h.changes(&task)
            .iter()
            .any(|c| c.0 == "added" && c.1 == section)
    );

    assert_eq!(
        h.delete_as(ALICE_PAT, &format!("/sections/{section}"))
            .await,
        400,
        "not empty"
    );
    let todo = h.gid("section", "To do");
    h.post(&format!("/sections/{todo}/addTask"), json!({"task": task}))
        .await;
    assert_eq!(
        h.delete_as(ALICE_PAT, &format!("/sections/{section}"))
            .await,
        200
    );
    let (status, _) = h.get(&format!("/sections/{section}")).await;
    assert_eq!(status, 404);

    let (status, _) = h
        .post(&format!("/projects/{launch}/sections"), json!({}))
        .await;
    assert_eq!(status, 400, "a section needs a name");
    let (status, body) = h
        .post(
            &format!("/sections/{todo}/addTask"),
            json!({"task": "424242"}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(message(&body), "task: Not a recognized ID");
}

#[tokio::test]
async fn tasks_are_created_read_updated_and_deleted_with_changes_recorded() {
    let h = start().await;
    let acme = h.acme();
    let side = h.side();
    let launch = h.gid("project", "Launch plan");

    let created = h
        .call(
            ALICE_PAT,
            Method::POST,
            "/tasks",
            Some(json!({"data": {"name": "Print badges", "projects": [launch], "assignee": "me", "due_on": "2026-12-01"}})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.location.is_some());
    let task = text(&created.body["data"]["gid"]);
    let data = &created.body["data"];
    assert_eq!(data["workspace"]["gid"], acme.as_str());
    assert_eq!(data["assignee"]["name"], "Alice Example");
    assert_eq!(data["memberships"][0]["section"]["name"], "To do");

    let changes = h.changes(&launch);
    assert!(
        changes.iter().any(|c| c.0 == "added" && c.1 == launch),
        "a new task in a project is added with the project as parent: {changes:?}"
    );

    let (status, body) = h
        .put(
            &format!("/tasks/{task}"),
            json!({"name": "Print name badges", "completed": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["completed"], true);
    assert!(body["data"]["completed_at"].is_string());
    let mut fields: Vec<String> = h
        .changes(&task)
        .into_iter()
        .filter(|c| c.0 == "changed")
        .map(|c| c.2)
        .collect();
    fields.sort();
    assert_eq!(fields, vec!["completed", "name"], "one change per field");

    let (status, body) = h
        .get(&format!("/tasks/{task}?opt_fields=name,assignee.email"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!({"gid": task, "name": "Print name badges", "assignee": {"gid": data["assignee"]["gid"], "email": "alice@acme.test"}})
    );

    let (status, body) = h
        .put(&format!("/tasks/{task}"), json!({"projects": [launch]}))
        .await;
    assert_eq!(status, 400, "projects are not written by PUT: {body}");
    let (status, _) = h
        .put(&format!("/tasks/{task}"), json!({"due_on": "tomorrow"}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = h
        .put(&format!("/tasks/{task}"), json!({"completed": "yes"}))
        .await;
    assert_eq!(status, 400);
    let (status, body) = h.post("/tasks", json!({"name": "floating"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = h
        .post("/tasks", json!({"name": "x", "projects": ["31337"]}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(message(&body), "projects: Not a recognized ID");
    let (status, body) = h
        .post(
            "/tasks",
            json!({"name": "x", "workspace": side, "projects": [launch]}),
        )
        .await;
    assert_eq!(status, 400, "a project of another workspace: {body}");
    let (status, _) = h
        .post(
            "/tasks",
            json!({"name": "x", "workspace": acme, "assignee": "bob@side.test"}),
        )
        .await;
    assert_eq!(status, 400, "Bob is not in Acme");

    let (status, _) = h.get("/tasks").await;
    assert_eq!(status, 400, "GET /tasks needs a filter");
    let (status, body) = h.get(&format!("/tasks?project={launch}")).await;
    assert_eq!(status, 200);
    assert_eq!(names(&body).len(), 5);
    let (_, body) = h
        .get(&format!("/tasks?project={launch}&completed_since=now"))
        .await;
    assert_eq!(names(&body).len(), 4, "the completed one is left out");
    let (status, body) = h.get(&format!("/tasks?assignee=me&workspace={acme}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        names(&body),
        vec![
            "Write the announcement",
            "Invite customers",
            "Print name badges"
        ]
    );

    let bob = h
        .call(BOB_PAT, Method::GET, &format!("/tasks/{task}"), None)
        .await;
    assert_eq!(bob.status, 404, "invisible outside the caller's workspaces");
    assert_eq!(h.delete_as(ALICE_PAT, &format!("/tasks/{task}")).await, 200);
    let (status, body) = h.get(&format!("/tasks/{task}")).await;
    assert_eq!(status, 404);
    assert_eq!(message(&body), "task: Not a recognized ID");
    assert_eq!(
        h.changes(&launch).last().map(|c| c.0.clone()),
        Some("deleted".into())
    );
}

#[tokio::test]
async fn subtasks_projects_dependencies_followers_and_tags_of_a_task() {
    let h = start().await;
    let launch = h.gid("project", "Launch plan");
    let roadmap = h.gid("project", "Roadmap");
    let urgent = h.gid("tag", "urgent");
    let venue = h.gid("task", "Book the venue");
    let demo = h.gid("task", "Prepare the demo");
    let task = h.task_in(&launch, "Order catering").await;

    let (status, body) = h
        .post(
            &format!("/tasks/{task}/subtasks"),
            json!({"name": "Pick a menu"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let subtask = text(&body["data"]["gid"]);
    assert_eq!(body["data"]["parent"]["gid"], task.as_str());
    let (_, body) = h.get(&format!("/tasks/{task}/subtasks")).await;
    assert_eq!(names(&body), vec!["Pick a menu"]);
    let (_, body) = h.get(&format!("/tasks/{task}")).await;
    assert_eq!(body["data"]["num_subtasks"], 1);
    assert!(
        h.changes(&subtask)
            .iter()
            .any(|c| c.0 == "added" && c.1 == task)
    );

    let (status, body) = h
        .post(
            &format!("/tasks/{task}/addProject"),
            json!({"project": roadmap}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({}));
    let (_, body) = h.get(&format!("/projects/{roadmap}/tasks")).await;
    assert!(names(&body).contains(&"Order catering".to_owned()));
    let (status, body) = h.get(&format!("/tasks/{task}/projects")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), vec!["Launch plan", "Roadmap"]);
    assert_eq!(keys(&body["data"][0]), vec!["gid", "name", "resource_type"]);
    let bob = h
        .call(
            BOB_PAT,
            Method::GET,
            &format!("/tasks/{task}/projects"),
            None,
        )
        .await;
    assert_eq!(bob.status, 404, "Bob is not in Acme");
    h.post(
        &format!("/tasks/{task}/removeProject"),
        json!({"project": roadmap}),
    )
    .await;
    let (_, body) = h.get(&format!("/projects/{roadmap}/tasks")).await;
    assert!(!names(&body).contains(&"Order catering".to_owned()));
    assert!(h.changes(&roadmap).iter().any(|c| c.0 == "removed"));
    let (status, _) = h
        .post(&format!("/tasks/{task}/addProject"), json!({}))
        .await;
    assert_eq!(status, 400, "project is required");

    let (status, body) = h
        .post(
            &format!("/tasks/{task}/addDependencies"),
            json!({"dependencies": [venue]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = h.get(&format!("/tasks/{task}/dependencies")).await;
    assert_eq!(names(&body), vec!["Book the venue"]);
    let (_, body) = h.get(&format!("/tasks/{venue}/dependents")).await;
    assert_eq!(names(&body), vec!["Order catering"]);
    h.post(
        &format!("/tasks/{task}/addDependents"),
        json!({"dependents": [demo]}),
    )
    .await;
    let (_, body) = h.get(&format!("/tasks/{demo}/dependencies")).await;
    assert_eq!(names(&body), vec!["Order catering"]);
    h.post(
        &format!("/tasks/{task}/removeDependencies"),
        json!({"dependencies": [venue]}),
    )
    .await;
    let (_, body) = h.get(&format!("/tasks/{venue}/dependents")).await;
    assert_eq!(names(&body), Vec::<String>::new());
    let (status, _) = h
        .post(
            &format!("/tasks/{task}/addDependencies"),
            json!({"dependencies": [task]}),
        )
        .await;
    assert_eq!(status, 400, "a task cannot wait on itself");

    let (status, body) = h
        .post(
            &format!("/tasks/{task}/addFollowers"),
            json!({"followers": ["carol@acme.test"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let followers: Vec<String> = body["data"]["followers"]
        .as_array()
        .expect("followers")
        .iter()
        .map(|f| text(&f["name"]))
        .collect();
    assert_eq!(followers, vec!["Alice Example", "Carol Example"]);
    let (_, body) = h
        .post(
            &format!("/tasks/{task}/removeFollowers"),
            json!({"followers": ["me"]}),
        )
        .await;
    assert_eq!(body["data"]["followers"].as_array().map(Vec::len), Some(1));
    let (status, _) = h
        .post(
            &format!("/tasks/{task}/addFollowers"),
            json!({"followers": ["bob@side.test"]}),
        )
        .await;
    assert_eq!(status, 400, "Bob is not in Acme");

    let (status, _) = h
        .post(&format!("/tasks/{task}/addTag"), json!({"tag": urgent}))
        .await;
    assert_eq!(status, 200);
    let (_, body) = h.get(&format!("/tasks/{task}/tags")).await;
    assert_eq!(names(&body), vec!["urgent"]);
    let (_, body) = h.get(&format!("/tasks?tag={urgent}")).await;
    assert_eq!(names(&body), vec!["Order catering"]);
    let tag_changes = h.changes(&task);
    assert!(
        tag_changes
            .iter()
            .any(|c| c.0 == "changed" && c.2 == "tags")
    );
    h.post(&format!("/tasks/{task}/removeTag"), json!({"tag": urgent}))
        .await;
    let (_, body) = h.get(&format!("/tasks/{task}/tags")).await;
    assert_eq!(names(&body), Vec::<String>::new());
    let (status, _) = h
        .post(&format!("/tasks/{task}/addTag"), json!({"tag": "1"}))
        .await;
    assert_eq!(status, 404);

    assert_eq!(h.delete_as(ALICE_PAT, &format!("/tasks/{task}")).await, 200);
    let (status, _) = h.get(&format!("/tasks/{subtask}")).await;
    assert_eq!(status, 404, "subtasks go with their parent");
    let (_, body) = h.get(&format!("/tasks/{demo}/dependencies")).await;
    assert_eq!(names(&body), Vec::<String>::new());
}

#[tokio::test]
async fn dependencies_are_a_paid_feature() {
    let h = start().await;
    let plants = h.gid("task", "Water the plants");
    let bob = h
        .call(
            BOB_PAT,
            Method::GET,
            &format!("/tasks/{plants}/dependencies"),
            None,
        )
        .await;
    assert_eq!(bob.status, 402, "{}", bob.body);
}

#[tokio::test]
async fn custom_field_values_are_checked_against_the_field() {
    let h = start().await;
    let acme = h.acme();
    let launch = h.gid("project", "Launch plan");
    let priority = h.gid("custom_field", "Priority");
    let task = h.gid("task", "Invite customers");

    let (status, body) = h.get(&format!("/workspaces/{acme}/custom_fields")).await;
    assert_eq!(status, 200);
    assert_eq!(names(&body), vec!["Priority"]);
    let high = text(&body["data"][0]["enum_options"][0]["gid"]);
    let (status, body) = h.get(&format!("/custom_fields/{priority}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["type"], "enum");

    let (status, body) = h
        .post(
            "/custom_fields",
            json!({"workspace": acme, "name": "Estimate", "resource_subtype": "number", "precision": 1}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let estimate = text(&body["data"]["gid"]);
    let (status, _) = h
        .post(
            "/custom_fields",
            json!({"workspace": acme, "name": "Estimate", "resource_subtype": "number"}),
        )
        .await;
    assert_eq!(status, 400, "names are unique in a workspace");

    let options = format!("/custom_fields/{priority}/enum_options");
    let (status, body) = h
        .post(&options, json!({"name": "Urgent", "color": "red"}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["name"], "Urgent");
    assert_eq!(body["data"]["enabled"], true);
    let urgent = text(&body["data"]["gid"]);
    let (status, body) = h
        .post(&options, json!({"name": "Critical", "insert_before": high}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = h
        .post(
            &options,
            json!({"name": "Blocking", "insert_after": urgent}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, body) = h.get(&format!("/custom_fields/{priority}")).await;
    let order: Vec<&str> = body["data"]["enum_options"]
        .as_array()
        .expect("options")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(order.first(), Some(&"Critical"), "{order:?}");
    assert_eq!(order[order.len() - 2..], ["Urgent", "Blocking"]);
    for (bad, why) in [
        (json!({"name": ""}), "a name is required"),
        (
            json!({"name": "X", "insert_before": "777"}),
            "the anchor is an option of the field",
        ),
        (
            json!({"name": "X", "insert_before": high, "insert_after": urgent}),
            "one anchor at most",
        ),
    ] {
        let (status, body) = h.post(&options, bad).await;
        assert_eq!(status, 400, "{why}: {body}");
    }
    let (status, _) = h
        .post(
            &format!("/custom_fields/{estimate}/enum_options"),
            json!({"name": "X"}),
        )
        .await;
    assert_eq!(status, 400, "a number field has no options");
    let (_, body) = h.get(&format!("/custom_fields/{priority}")).await;
    assert_eq!(
        body["data"]["enum_options"].as_array().map(Vec::len),
        Some(order.len()),
        "refused requests add nothing"
    );

    let (status, body) = h
        .put(
            &format!("/tasks/{task}"),
            json!({"custom_fields": {estimate.as_str(): 3}}),
        )
        .await;
    assert_eq!(
        status, 400,
        "the field is not on the task's project: {body}"
    );
    let (status, body) = h
        .post(
            &format!("/projects/{launch}/addCustomFieldSetting"),
            json!({"custom_field": estimate, "is_important": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = h
        .get(&format!("/projects/{launch}/custom_field_settings"))
        .await;
    let fields: Vec<&Value> = body["data"]
        .as_array()
        .expect("settings")
        .iter()
        .map(|s| &s["custom_field"]["name"])
        .collect();
    assert_eq!(fields, vec!["Priority", "Estimate"]);

    let (status, body) = h
        .put(
            &format!("/tasks/{task}"),
            json!({"custom_fields": {priority.as_str(): high, estimate.as_str(): 2.5}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let values = body["data"]["custom_fields"].as_array().expect("values");
    let shown = |gid: &str| {
        values
            .iter()
            .find(|v| v["gid"] == gid)
            .map(|v| v["display_value"].clone())
    };
    assert_eq!(shown(&priority), Some(json!("High")));
    let carried = values
        .iter()
        .find(|v| v["gid"] == priority.as_str())
        .map(|v| v["enum_options"].as_array().map_or(0, Vec::len));
    assert_eq!(
        carried,
        Some(order.len()),
        "the task carries the new options"
    );
    assert_eq!(shown(&estimate), Some(json!("2.5")));
    assert!(h.changes(&task).iter().any(|c| c.2 == "custom_fields"));

    for bad in [
        json!({priority.as_str(): "1"}),
        json!({priority.as_str(): 5}),
        json!({estimate.as_str(): "three"}),
    ] {
        let (status, body) = h
            .put(&format!("/tasks/{task}"), json!({"custom_fields": bad}))
            .await;
        assert_eq!(status, 400, "{bad} must be refused: {body}");
    }
    let (status, body) = h
        .put(
            &format!("/tasks/{task}"),
            json!({"custom_fields": {"777": 1}}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = h
        .put(
            &format!("/tasks/{task}"),
            json!({"custom_fields": {priority.as_str(): null}}),
        )
        .await;
    assert_eq!(status, 200, "clearing is allowed: {body}");
}

#[tokio::test]
async fn search_is_premium_and_filters_and_sorts() {
    let h = start().await;
    let acme = h.acme();
    let side = h.side();
    let roadmap = h.gid("project", "Roadmap");
    let path = format!("/workspaces/{acme}/tasks/search");

    let (status, body) = h.get(&format!("{path}?text=DEMO")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), vec!["Prepare the demo"]);
    assert!(body.get("next_page").is_none(), "search is not paginated");

    let (_, body) = h
        .get(&format!(
            "{path}?assignee.any=me&sort_by=created_at&sort_ascending=true"
        ))
        .await;
    assert_eq!(
        names(&body),
        vec!["Write the announcement", "Invite customers"]
    );
    let (_, body) = h.get(&format!("{path}?projects.any={roadmap}")).await;
    assert_eq!(names(&body), vec!["Q3 planning"]);
    let (_, body) = h
        .get(&format!(
            "{path}?sort_by=created_at&sort_ascending=false&limit=2"
        ))
        .await;
    assert_eq!(names(&body), vec!["Q3 planning", "Prepare the demo"]);

    let venue = h.gid("task", "Book the venue");
    h.put(&format!("/tasks/{venue}"), json!({"completed": true}))
        .await;
    let (_, body) = h.get(&format!("{path}?completed=true")).await;
    assert_eq!(names(&body), vec!["Book the venue"]);

    let (status, _) = h.get(&format!("{path}?limit=101")).await;
    assert_eq!(status, 400);
    let (status, _) = h.get(&format!("{path}?offset=abc")).await;
    assert_eq!(status, 400);
    let (status, body) = h
        .get(&format!("/workspaces/{side}/tasks/search?text=x"))
        .await;
    assert_eq!(status, 402, "{body}");
    let bob = h
        .call(
            BOB_PAT,
            Method::GET,
            &format!("/workspaces/{side}/tasks/search"),
            None,
        )
        .await;
    assert_eq!(bob.status, 402);
    assert_eq!(
        message(&bob.body),
        "This feature is only available to premium users."
    );
}

#[tokio::test]
async fn typeahead_ranks_and_caps_results() {
    let h = start().await;
    let acme = h.acme();
    let path = format!("/workspaces/{acme}/typeahead");

    let (status, body) = h
        .get(&format!("{path}?resource_type=project&query=lau"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), vec!["Launch plan"]);
    assert_eq!(keys(&body["data"][0]), vec!["gid", "name", "resource_type"]);
    let (_, body) = h.get(&format!("{path}?resource_type=user&query=car")).await;
    assert_eq!(names(&body), vec!["Carol Example"], "users by default");
    let (_, body) = h
        .get(&format!("{path}?resource_type=task&query=&count=2"))
        .await;
    assert_eq!(names(&body).len(), 2);
    let (status, _) = h.get(&format!("{path}?resource_type=user&count=0")).await;
    assert_eq!(status, 400);
    let (status, _) = h.get(&format!("{path}?resource_type=user&count=101")).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn comments_are_authored_by_the_caller_and_only_the_author_may_delete() {
    let h = start().await;
    let task = h.gid("task", "Write the announcement");

    let (status, body) = h
        .post(
            &format!("/tasks/{task}/stories"),
            json!({"text": "Draft is up"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let story = text(&body["data"]["gid"]);
    assert_eq!(body["data"]["created_by"]["name"], "Alice Example");
    assert_eq!(body["data"]["html_text"], "<body>Draft is up</body>");
    assert!(
        h.changes(&task)
            .iter()
            .any(|c| c.0 == "added" && c.1 == task),
        "a story is added with its task as parent"
    );

    let (status, body) = h
        .post(
            &format!("/tasks/{task}/stories"),
            json!({"html_text": "<body>See <strong>this</strong></body>"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["text"], "See this");
    let (status, _) = h
        .post(
            &format!("/tasks/{task}/stories"),
            json!({"html_text": "not xml"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = h.post(&format!("/tasks/{task}/stories"), json!({})).await;
    assert_eq!(status, 400);

    let (_, body) = h.get(&format!("/tasks/{task}/stories")).await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        keys(&body["data"][0]),
        vec![
            "created_at",
            "created_by",
            "gid",
            "resource_subtype",
            "resource_type",
            "text",
            "type"
        ]
    );

    let (status, body) = h
        .put(
            &format!("/stories/{story}"),
            json!({"text": "Final draft is up"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["is_edited"], true);
    let robot = h
        .call(
            SERVICE_ACCOUNT_TOKEN,
            Method::PUT,
            &format!("/stories/{story}"),
            Some(json!({"data": {"text": "hijacked"}})),
        )
        .await;
    assert_eq!(robot.status, 403, "{}", robot.body);
    assert_eq!(
        h.delete_as(SERVICE_ACCOUNT_TOKEN, &format!("/stories/{story}"))
            .await,
        403
    );
    assert_eq!(
        h.delete_as(ALICE_PAT, &format!("/stories/{story}")).await,
        200
    );
    let (status, _) = h.get(&format!("/stories/{story}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn tags_are_created_listed_updated_and_deleted() {
    let h = start().await;
    let acme = h.acme();
    let side = h.side();
    let launch = h.gid("project", "Launch plan");
    let task = h.task_in(&launch, "Label me").await;

    let (status, body) = h
        .post(
            "/tags",
            json!({"workspace": acme, "name": "blocked", "color": "dark-orange"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let tag = text(&body["data"]["gid"]);
    assert!(h.changes(&tag).iter().any(|c| c.0 == "added"));
    let (status, body) = h
        .post(&format!("/workspaces/{side}/tags"), json!({"name": "home"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let home = text(&body["data"]["gid"]);

    let (_, body) = h.get(&format!("/workspaces/{acme}/tags")).await;
    assert_eq!(names(&body), vec!["urgent", "blocked"]);
    let (_, body) = h.get(&format!("/tags?workspace={side}")).await;
    assert_eq!(names(&body), vec!["home"]);
    let (_, body) = h.get("/tags").await;
    assert_eq!(names(&body).len(), 3);

    let (status, body) = h
        .put(&format!("/tags/{tag}"), json!({"name": "on hold"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "on hold");
    let (status, _) = h
        .post(&format!("/tasks/{task}/addTag"), json!({"tag": home}))
        .await;
    assert_eq!(status, 400, "a tag of another workspace");
    h.post(&format!("/tasks/{task}/addTag"), json!({"tag": tag}))
        .await;

    assert_eq!(h.delete_as(ALICE_PAT, &format!("/tags/{tag}")).await, 200);
    let (status, _) = h.get(&format!("/tags/{tag}")).await;
    assert_eq!(status, 404);
    let (_, body) = h.get(&format!("/tasks/{task}")).await;
    assert_eq!(body["data"]["tags"], json!([]));
    let (status, _) = h.post("/tags", json!({"name": "nowhere"})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn status_updates_are_checked_per_parent_and_cannot_be_edited() {
    let h = start().await;
    let launch = h.gid("project", "Launch plan");
    let goal = h.gid("goal", "Grow weekly active teams");

    let (status, body) = h
        .post(
            "/status_updates",
            json!({"parent": launch, "status_type": "on_track", "text": "All good", "title": "Week 1"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let update = text(&body["data"]["gid"]);
    assert_eq!(body["data"]["resource_subtype"], "project_status_update");
    let (_, body) = h.get(&format!("/projects/{launch}")).await;
    assert_eq!(
        body["data"]["current_status_update"]["gid"],
        update.as_str()
    );

    let (status, body) = h
        .post(
            "/status_updates",
            json!({"parent": launch, "status_type": "achieved", "text": "done"}),
        )
        .await;
    assert_eq!(status, 400, "achieved is for goals: {body}");
    let (status, body) = h
        .post(
            "/status_updates",
            json!({"parent": goal, "status_type": "achieved", "text": "done"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = h
        .post(
            "/status_updates",
            json!({"parent": goal, "status_type": "on_hold", "text": "paused"}),
        )
        .await;
    assert_eq!(status, 400, "on_hold is not a goal status: {body}");
    let (status, _) = h
        .post(
            "/status_updates",
            json!({"parent": "123", "status_type": "on_track", "text": "x"}),
        )
        .await;
    assert_eq!(status, 404);

    let (status, body) = h.get(&format!("/status_updates?parent={launch}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        keys(&body["data"][0]),
        vec!["gid", "resource_subtype", "resource_type", "title"]
    );
    let (status, _) = h.get("/status_updates").await;
    assert_eq!(status, 400, "parent is required");

    let (status, _) = h
        .put(
            &format!("/status_updates/{update}"),
            json!({"text": "edited"}),
        )
        .await;
    assert!(status == 404 || status == 405, "no PUT, got {status}");
    assert_eq!(
        h.delete_as(ALICE_PAT, &format!("/status_updates/{update}"))
            .await,
        200
    );
    let (status, _) = h.get(&format!("/status_updates/{update}")).await;
    assert_eq!(status, 404);
    let (_, body) = h.get(&format!("/projects/{launch}")).await;
    assert_eq!(body["data"]["current_status_update"], Value::Null);
}

#[tokio::test]
async fn goals_and_their_metrics() {
    let h = start().await;
    let acme = h.acme();
    let side = h.side();

    let (status, body) = h.get(&format!("/goals?workspace={acme}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), vec!["Grow weekly active teams"]);
    assert_eq!(
        keys(&body["data"][0]),
        vec!["gid", "name", "owner", "resource_type"]
    );

    let (status, body) = h
        .post(
            "/goals",
            json!({"workspace": acme, "name": "Cut churn", "due_on": "2026-12-31"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let goal = text(&body["data"]["gid"]);
    assert_eq!(body["data"]["owner"]["name"], "Alice Example");

    let (status, body) = h
        .post(
            &format!("/goals/{goal}/setMetricCurrentValue"),
            json!({"current_number_value": 1}),
        )
        .await;
    assert_eq!(status, 400, "no metric yet: {body}");
    let (status, body) = h
        .post(
            &format!("/goals/{goal}/setMetric"),
            json!({"unit": "percentage", "precision": 0, "initial_number_value": 0.1, "target_number_value": 0.05}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["metric"]["current_display_value"], "10%");
    let (status, body) = h
        .post(
            &format!("/goals/{goal}/setMetricCurrentValue"),
            json!({"current_number_value": 0.08}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["metric"]["current_number_value"], 0.08);
    assert_eq!(body["data"]["metric"]["current_display_value"], "8%");
    let (status, _) = h
        .post(
            &format!("/goals/{goal}/setMetric"),
            json!({"unit": "furlongs", "target_number_value": 1}),
        )
        .await;
    assert_eq!(status, 400);

    let (status, body) = h
        .put(
            &format!("/goals/{goal}"),
            json!({"name": "Cut churn in half"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "Cut churn in half");
    assert_eq!(h.delete_as(ALICE_PAT, &format!("/goals/{goal}")).await, 200);
    let (status, _) = h.get(&format!("/goals/{goal}")).await;
    assert_eq!(status, 404);

    let (status, _) = h.get(&format!("/goals?workspace={side}")).await;
    assert_eq!(status, 402, "goals are a paid feature");
    let (status, _) = h.post("/goals", json!({"workspace": acme})).await;
    assert_eq!(status, 400, "a goal needs a name");
}

#[tokio::test]
async fn portfolios_and_their_items() {
    let h = start().await;
    let acme = h.acme();
    let launch = h.gid("project", "Launch plan");
    let roadmap = h.gid("project", "Roadmap");
    let chores = h.gid("project", "Chores");
    let bets = h.gid("portfolio", "Company bets");

    let (status, body) = h
        .get(&format!("/portfolios?workspace={acme}&owner=me"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), vec!["Company bets"]);
    let (_, body) = h.get(&format!("/portfolios/{bets}/items")).await;
    assert_eq!(names(&body), vec!["Launch plan"]);

    let (status, body) = h
        .post(
            "/portfolios",
            json!({"workspace": acme, "name": "H2", "color": "light-red"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let h2 = text(&body["data"]["gid"]);
    for item in [&roadmap, &bets] {
        let (status, body) = h
            .post(&format!("/portfolios/{h2}/addItem"), json!({"item": item}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = h
        .post(
            &format!("/portfolios/{h2}/addItem"),
            json!({"item": launch, "insert_before": roadmap}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = h.get(&format!("/portfolios/{h2}/items")).await;
    assert_eq!(names(&body), vec!["Launch plan", "Roadmap", "Company bets"]);
    let (status, _) = h
        .post(
            &format!("/portfolios/{h2}/addItem"),
            json!({"item": chores}),
        )
        .await;
    assert_eq!(status, 400, "a project of another workspace");
    let (status, _) = h
        .post(&format!("/portfolios/{h2}/addItem"), json!({"item": h2}))
        .await;
    assert_eq!(status, 400, "not itself");
    h.post(
        &format!("/portfolios/{h2}/removeItem"),
        json!({"item": roadmap}),
    )
    .await;
    let (_, body) = h.get(&format!("/portfolios/{h2}/items")).await;
    assert_eq!(names(&body), vec!["Launch plan", "Company bets"]);

    let (status, body) = h
        .put(&format!("/portfolios/{h2}"), json!({"name": "Second half"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "Second half");
    assert!(
        body["data"].get("_sandbox_items").is_none(),
        "internal fields stay inside"
    );
    assert_eq!(
        h.delete_as(ALICE_PAT, &format!("/portfolios/{h2}")).await,
        200
    );
    let (status, _) = h.get(&format!("/portfolios/{h2}")).await;
    assert_eq!(status, 404);
    let (status, _) = h.get("/portfolios").await;
    assert_eq!(status, 400, "workspace is required");
}

#[tokio::test]
async fn time_tracking_entries_belong_to_their_author() {
    let h = start().await;
    let task = h.gid("task", "Write the announcement");

    let (status, body) = h.get(&format!("/tasks/{task}/time_tracking_entries")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["duration_minutes"], 45);

    let (status, body) = h
        .post(
            &format!("/tasks/{task}/time_tracking_entries"),
            json!({"duration_minutes": 30, "entered_on": "2026-11-02"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let entry = text(&body["data"]["gid"]);
    assert_eq!(body["data"]["created_by"]["name"], "Alice Example");

    let (status, body) = h
        .put(
            &format!("/time_tracking_entries/{entry}"),
            json!({"duration_minutes": 50}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["duration_minutes"], 50);
    let (status, _) = h
        .post(
            &format!("/tasks/{task}/time_tracking_entries"),
            json!({"duration_minutes": 0}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = h
        .post(&format!("/tasks/{task}/time_tracking_entries"), json!({}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        h.delete_as(
            SERVICE_ACCOUNT_TOKEN,
            &format!("/time_tracking_entries/{entry}")
        )
        .await,
        403
    );
    assert_eq!(
        h.delete_as(ALICE_PAT, &format!("/time_tracking_entries/{entry}"))
            .await,
        200
    );
    let (status, _) = h.get(&format!("/time_tracking_entries/{entry}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn allocations_of_people_to_projects() {
    let h = start().await;
    let launch = h.gid("project", "Launch plan");
    let chores = h.gid("project", "Chores");

    let (status, body) = h.get(&format!("/allocations?parent={launch}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"][0]["effort"],
        json!({"type": "percent", "value": 50})
    );

    let (status, body) = h
        .post(
            "/allocations",
            json!({"parent": launch, "assignee": "carol@acme.test", "start_date": "2026-02-02",
                   "end_date": "2026-02-27", "effort": {"type": "hours", "value": 20}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let allocation = text(&body["data"]["gid"]);
    let carol = text(&body["data"]["assignee"]["gid"]);
    let (_, body) = h.get(&format!("/allocations?assignee={carol}")).await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));

    let (status, _) = h
        .put(
            &format!("/allocations/{allocation}"),
            json!({"end_date": "2026-01-01"}),
        )
        .await;
    assert_eq!(status, 400, "ends before it starts");
    let (status, _) = h
        .post(
            "/allocations",
            json!({"parent": launch, "start_date": "2026-02-02", "end_date": "2026-02-27"}),
        )
        .await;
    assert_eq!(status, 400, "assignee is required");
    let (status, _) = h.get("/allocations").await;
    assert_eq!(status, 400);
    let (status, _) = h.get(&format!("/allocations?parent={chores}")).await;
    assert_eq!(status, 402, "allocations are a paid feature");

    assert_eq!(
        h.delete_as(ALICE_PAT, &format!("/allocations/{allocation}"))
            .await,
        200
    );
    let (status, _) = h.get(&format!("/allocations/{allocation}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn batch_runs_actions_in_order_and_caps_them_at_ten() {
    let h = start().await;
    let venue = h.gid("task", "Book the venue");
    let launch = h.gid("project", "Launch plan");

    let (status, body) = h
        .post(
            "/batch",
            json!({"actions": [
                {"relative_path": format!("/tasks/{venue}"), "method": "get", "options": {"fields": ["name"]}},
                {"relative_path": format!("/tasks/{venue}"), "method": "put", "data": {"notes": "Call them"}},
                {"relative_path": "/tasks/404404", "method": "get"},
                {"relative_path": "/tasks", "method": "get", "data": {"project": launch}, "options": {"limit": 2}},
                {"relative_path": "/batch", "method": "post", "data": {"actions": []}},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["data"].as_array().expect("results");
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status_code"].as_u64().unwrap_or_default())
        .collect();
    assert_eq!(statuses, vec![200, 200, 404, 200, 400]);
    assert_eq!(
        results[0]["body"]["data"],
        json!({"gid": venue, "name": "Book the venue"})
    );
    assert_eq!(results[1]["body"]["data"]["notes"], "Call them");
    assert_eq!(results[3]["body"]["data"].as_array().map(Vec::len), Some(2));
    assert!(results[3]["body"]["next_page"].is_object());

    let eleven: Vec<Value> = (0..11)
        .map(|_| json!({"relative_path": "/users/me", "method": "get"}))
        .collect();
    let (status, body) = h.post("/batch", json!({"actions": eleven})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = h.post("/batch", json!({"actions": []})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_audit_log_is_for_service_accounts_and_streams_changes() {
    let h = start().await;
    let acme = h.acme();
    let launch = h.gid("project", "Launch plan");
    let path = format!("/workspaces/{acme}/audit_log_events");
    let task = h.task_in(&launch, "Audit me").await;
    h.put(&format!("/tasks/{task}"), json!({"name": "Audited"}))
        .await;

    let (status, _) = h.get(&path).await;
    assert_eq!(status, 403, "a PAT may not read the audit log");

    let answer = h
        .call(
            SERVICE_ACCOUNT_TOKEN,
            Method::GET,
            &format!("{path}?resource_gid={task}"),
            None,
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let events = answer.body["data"].as_array().expect("events");
    let types: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert_eq!(types, vec!["task_added", "task_name_changed"]);
    assert_eq!(events[1]["actor"]["email"], "alice@acme.test");
    assert_eq!(events[1]["details"]["new_value"], "Audited");
    assert!(
        answer.body["next_page"]["offset"].is_string(),
        "a stream keeps its offset"
    );

    let mut offset: Option<String> = None;
    let mut seen = 0;
    for _ in 0..10 {
        let url = match &offset {
            Some(offset) => format!("{path}?limit=1&offset={offset}"),
            None => format!("{path}?limit=1"),
        };
        let page = h.call(SERVICE_ACCOUNT_TOKEN, Method::GET, &url, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let count = page.body["data"].as_array().map_or(0, Vec::len);
        if count == 0 {
            break;
        }
        seen += count;
        offset = page.body["next_page"]["offset"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, 2, "every change of the workspace, one page at a time");
}

#[tokio::test]
async fn lists_page_through_everything_and_reject_bad_limits() {
    let h = start().await;
    let acme = h.acme();
    let team = h.gid("team", "Platform");
    let (_, body) = h
        .post(
            "/projects",
            json!({"workspace": acme, "team": team, "name": "Paged"}),
        )
        .await;
    let project = text(&body["data"]["gid"]);
    for i in 0..5 {
        h.task_in(&project, &format!("Task {i}")).await;
    }

    let mut seen = Vec::new();
    let mut next = Some(format!("/projects/{project}/tasks?limit=2"));
    let mut pages = 0;
    while let Some(path) = next {
        let (status, body) = h.get(&path).await;
        assert_eq!(status, 200, "{body}");
        seen.extend(names(&body));
        pages += 1;
        next = body["next_page"]["path"].as_str().map(str::to_owned);
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        (0..5).map(|i| format!("Task {i}")).collect::<Vec<_>>()
    );

    let (_, body) = h.get(&format!("/projects/{project}/tasks")).await;
    assert_eq!(names(&body).len(), 5, "without limit everything comes back");
    assert_eq!(
        keys(&body["data"][0]),
        vec!["gid", "name", "resource_subtype", "resource_type"],
        "compact records"
    );
    let (_, body) = h
        .get(&format!(
            "/projects/{project}/tasks?opt_fields=name,completed"
        ))
        .await;
    assert_eq!(keys(&body["data"][0]), vec!["completed", "gid", "name"]);

    for bad in [
        "limit=0",
        "limit=101",
        "limit=2&offset=nonsense",
        "offset=abc",
    ] {
        let (status, body) = h.get(&format!("/projects/{project}/tasks?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn users_of_a_workspace_or_a_team_are_listed_compact_and_paged() {
    let h = start().await;
    let acme = h.acme();
    let side = h.side();
    let team = h.gid("team", "Platform");

    let (status, body) = h.get(&format!("/users?workspace={acme}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        names(&body),
        vec!["Alice Example", "Carol Example", "Acme Service Account"]
    );
    assert_eq!(keys(&body["data"][0]), vec!["gid", "name", "resource_type"]);
    let (_, body) = h.get(&format!("/users?workspace={side}")).await;
    assert_eq!(names(&body), vec!["Alice Example", "Bob Example"]);
    let (_, body) = h.get("/users").await;
    assert_eq!(names(&body).len(), 4, "every workspace of the caller");
    let (_, body) = h.get(&format!("/users?team={team}")).await;
    assert_eq!(
        names(&body),
        vec!["Alice Example", "Carol Example", "Acme Service Account"]
    );
    let (_, body) = h
        .get(&format!("/users?workspace={acme}&opt_fields=email"))
        .await;
    assert_eq!(body["data"][1]["email"], "carol@acme.test");
    assert_eq!(keys(&body["data"][1]), vec!["email", "gid"]);

    let (status, body) = h.get(&format!("/users?workspace={acme}&limit=2")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), vec!["Alice Example", "Carol Example"]);
    let next = text(&body["next_page"]["path"]);
    assert!(next.starts_with("/users?"), "{next}");
    let (_, body) = h.get(&next).await;
    assert_eq!(names(&body), vec!["Acme Service Account"]);
    assert!(body["next_page"].is_null());

    let (status, body) = h.get("/users?workspace=999").await;
    assert_eq!(status, 404);
    assert_eq!(message(&body), "workspace: Not a recognized ID");
    let (status, _) = h.get(&format!("/users?workspace={acme}&limit=0")).await;
    assert_eq!(status, 400);
    let bob = h
        .call(BOB_PAT, Method::GET, &format!("/users?team={team}"), None)
        .await;
    assert_eq!(bob.status, 404, "Bob is not in Acme");

    let (status, body) = h.get(&format!("/teams/{team}/users?limit=2")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), vec!["Alice Example", "Carol Example"]);
    let next = text(&body["next_page"]["path"]);
    assert!(next.starts_with(&format!("/teams/{team}/users?")), "{next}");
    let (_, body) = h.get(&next).await;
    assert_eq!(names(&body), vec!["Acme Service Account"]);
    let bob = h
        .call(BOB_PAT, Method::GET, &format!("/teams/{team}/users"), None)
        .await;
    assert_eq!(bob.status, 404, "Bob is not in Acme");

    let (status, body) = h.get(&format!("/workspaces/{acme}/users/me")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "Alice Example");
    let (status, body) = h
        .get(&format!("/workspaces/{acme}/users/carol@acme.test"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "Carol Example");
    let bob_gid = h.gid("user", "Bob Example");
    let (status, body) = h.get(&format!("/workspaces/{acme}/users/{bob_gid}")).await;
    assert_eq!(status, 404, "Bob is not a user of Acme: {body}");
    assert_eq!(message(&body), "user: Not a recognized ID");
    let (status, _) = h.get(&format!("/workspaces/{side}/users/{bob_gid}")).await;
    assert_eq!(status, 200, "Bob is a user of the side project");
    let bob = h
        .call(
            BOB_PAT,
            Method::GET,
            &format!("/workspaces/{acme}/users/me"),
            None,
        )
        .await;
    assert_eq!(bob.status, 404, "Bob is not in Acme");
}

/// Uploads a URL attachment as Alice with a multipart form of `fields`: (status, body).
async fn attach(h: &Harness, fields: &[(&str, &str)]) -> (u16, Value) {
    let boundary = "sandbox-test-boundary";
    let mut form = String::new();
    for (name, value) in fields {
        form.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    form.push_str(&format!("--{boundary}--\r\n"));
    let response = h
        .http
        .post(format!("{}/attachments", h.api))
        .bearer_auth(ALICE_PAT)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .expect("sandbox answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn url_attachments_are_added_to_and_listed_for_their_parent() {
    let h = start().await;
    let venue = h.gid("task", "Book the venue");
    let launch = h.gid("project", "Launch plan");

    let (status, body) = h.get(&format!("/attachments?parent={venue}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([]), "none yet");

    for name in ["Floor plan", "Catering menu", "Contract"] {
        let (status, body) = attach(
            &h,
            &[
                ("parent", &venue),
                ("resource_subtype", "external"),
                ("name", name),
                ("url", "https://files.example.test/venue"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["name"], name);
        assert_eq!(body["data"]["parent"]["gid"], venue.as_str());
    }
    let (_, body) = attach(
        &h,
        &[
            ("parent", &launch),
            ("resource_subtype", "external"),
            ("name", "Brief"),
            ("url", "https://files.example.test/brief"),
        ],
    )
    .await;
    let brief = text(&body["data"]["gid"]);

    let (_, body) = h.get(&format!("/attachments?parent={venue}")).await;
    assert_eq!(
        names(&body),
        vec!["Floor plan", "Catering menu", "Contract"]
    );
    assert_eq!(
        keys(&body["data"][0]),
        vec!["gid", "name", "resource_subtype", "resource_type"]
    );
    let (_, body) = h.get(&format!("/attachments?parent={launch}")).await;
    assert_eq!(names(&body), vec!["Brief"]);
    let (_, body) = h
        .get(&format!(
            "/attachments?parent={venue}&limit=2&opt_fields=name,download_url,parent.name"
        ))
        .await;
    assert_eq!(names(&body), vec!["Floor plan", "Catering menu"]);
    assert_eq!(
        body["data"][0]["download_url"],
        "https://files.example.test/venue"
    );
    assert_eq!(body["data"][0]["parent"]["name"], "Book the venue");
    let (_, body) = h.get(&text(&body["next_page"]["path"])).await;
    assert_eq!(names(&body), vec!["Contract"]);

    let (status, body) = h.get(&format!("/attachments/{brief}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["view_url"], "https://files.example.test/brief");
    assert_eq!(h.changes(&launch)[0].0, "added");

    let (status, _) = h.get("/attachments").await;
    assert_eq!(status, 400, "parent is required");
    let (status, body) = h.get("/attachments?parent=999").await;
    assert_eq!(status, 404);
    assert_eq!(message(&body), "parent: Not a recognized ID");
    let (status, _) = h.get(&format!("/attachments?parent={}", h.acme())).await;
    assert_eq!(status, 404, "a workspace has no attachments");
    let bob = h
        .call(
            BOB_PAT,
            Method::GET,
            &format!("/attachments?parent={venue}"),
            None,
        )
        .await;
    assert_eq!(bob.status, 404, "Bob is not in Acme");

    let (status, body) = attach(&h, &[("parent", &venue), ("name", "Photo")]).await;
    assert_eq!(status, 400, "file uploads are not kept: {body}");
    let (status, body) = attach(
        &h,
        &[
            ("parent", &venue),
            ("resource_subtype", "external"),
            ("name", "No URL"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(message(&body), "url: Missing input");
    let (status, _) = attach(
        &h,
        &[
            ("parent", "999"),
            ("resource_subtype", "external"),
            ("name", "Lost"),
            ("url", "https://files.example.test/lost"),
        ],
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn project_search_is_premium_and_filters_by_name_owner_and_team() {
    let h = start().await;
    let acme = h.acme();
    let side = h.side();
    let team = h.gid("team", "Platform");
    let path = format!("/workspaces/{acme}/projects/search");

    let (status, body) = h.get(&format!("{path}?text=LAUNCH")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), vec!["Launch plan"]);
    assert_eq!(keys(&body["data"][0]), vec!["gid", "name", "resource_type"]);
    assert!(body.get("next_page").is_none(), "search is not paginated");

    let (_, body) = h.get(&format!("{path}?owner.any=me")).await;
    assert_eq!(names(&body), vec!["Launch plan"]);
    let (_, body) = h.get(&format!("{path}?owner.any=carol@acme.test")).await;
    assert_eq!(names(&body), vec!["Roadmap"]);
    let (_, body) = h
        .get(&format!(
            "{path}?teams.any={team}&sort_by=created_at&sort_ascending=true"
        ))
        .await;
    assert_eq!(names(&body), vec!["Launch plan", "Roadmap"]);
    let (_, body) = h
        .get(&format!(
            "{path}?sort_by=created_at&limit=1&opt_fields=owner.name"
        ))
        .await;
    assert_eq!(body["data"][0]["owner"]["name"], "Carol Example");
    let (_, body) = h
        .get(&format!("{path}?members.not=me&completed=false"))
        .await;
    assert_eq!(names(&body), vec!["Roadmap"]);

    let roadmap = h.gid("project", "Roadmap");
    h.put(
        &format!("/projects/{roadmap}"),
        json!({"due_on": "2026-12-15"}),
    )
    .await;
    let (_, body) = h.get(&format!("{path}?due_on.before=2026-12-31")).await;
    assert_eq!(names(&body), vec!["Roadmap"]);
    let (_, body) = h.get(&format!("{path}?text=nothing-like-this")).await;
    assert_eq!(body["data"], json!([]));

    let (status, _) = h.get(&format!("{path}?completed=maybe")).await;
    assert_eq!(status, 400);
    let (status, _) = h.get(&format!("{path}?offset=abc")).await;
    assert_eq!(status, 400);
    let (status, body) = h
        .get(&format!("/workspaces/{side}/projects/search?text=Chores"))
        .await;
    assert_eq!(status, 402, "{body}");
    let (status, _) = h.get("/workspaces/999/projects/search").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn project_search_counts_against_the_search_budget() {
    let h = start_with(|config| Config {
        limits: LimitConfig {
            search_per_minute: 2,
            ..LimitConfig::default()
        },
        ..config
    })
    .await;
    let acme = h.acme();
    let (status, _) = h.get(&format!("/workspaces/{acme}/tasks/search")).await;
    assert_eq!(status, 200);
    let (status, _) = h.get(&format!("/workspaces/{acme}/projects/search")).await;
    assert_eq!(status, 200);
    let (status, body) = h
        .get(&format!("/workspaces/{acme}/projects/search?text=Launch"))
        .await;
    assert_eq!(status, 429, "{body}");
    let (status, _) = h.get(&format!("/workspaces/{acme}/projects")).await;
    assert_eq!(status, 200, "other reads are not searches");
}
