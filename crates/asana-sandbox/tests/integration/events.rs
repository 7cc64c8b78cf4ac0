//! `GET /events` against a served sandbox: 412 with a fresh sync token, events after the
//! token's position, 100-event pages with `has_more`, idempotent repeats, and bad tokens.

use asana_sandbox::events::SYNC_INVALID;
use asana_sandbox::seed::{ALICE_PAT, BOB_PAT};
use asana_sandbox::{Config, Sandbox};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A served sandbox; stops when dropped.
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

async fn start() -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let sandbox = Sandbox::new(Config {
        public_url: format!("http://{address}"),
        seed: true,
        ..Config::default()
    });
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
    /// `GET /events?resource=…&sync=…` as `token`; returns (status, body).
    async fn events_as(&self, token: &str, resource: &str, sync: Option<&str>) -> (u16, Value) {
        let mut url = format!("{}/events?resource={resource}", self.api);
        if let Some(sync) = sync {
            url.push_str(&format!("&sync={sync}"));
        }
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("sandbox answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn events(&self, resource: &str, sync: Option<&str>) -> (u16, Value) {
        self.events_as(ALICE_PAT, resource, sync).await
    }

    /// A fresh token at the end of the log, from the 412 of a call without one.
    async fn fresh_sync(&self, resource: &str) -> String {
        let (status, body) = self.events(resource, None).await;
        assert_eq!(status, 412, "{body}");
        body["sync"].as_str().expect("a sync token").to_owned()
    }

    fn gid(&self, resource_type: &str, name: &str) -> String {
        self.sandbox
            .world()
            .all(resource_type, |o| o["name"] == name)
            .next()
            .and_then(|o| o["gid"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no {resource_type} called {name}"))
    }

    /// Records a change to `gid` (its field `field`) bubbling to `scope`.
    fn change(&self, gid: &str, field: &str, scope: &[&str]) {
        {
            let mut world = self.sandbox.world();
            let resource = world.get(gid).cloned().expect("changed object exists");
            world.record(
                None,
                "changed",
                &resource,
                None,
                Some(json!({"field": field, "action": "changed"})),
                scope.iter().map(|s| (*s).to_owned()).collect(),
            );
        }
        self.sandbox.notify_changed();
    }
}

fn fields(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .expect("a data array")
        .iter()
        .map(|e| e["change"]["field"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn the_first_call_gets_412_with_a_token_that_then_works() {
    let harness = start().await;
    let project = harness.gid("project", "Launch plan");

    let (status, body) = harness.events(&project, None).await;
    assert_eq!(status, 412);
    assert_eq!(body["errors"][0]["message"], SYNC_INVALID);
    let sync = body["sync"].as_str().expect("a fresh sync token");

    let (status, body) = harness.events(&project, Some(sync)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([]));
    assert_eq!(body["has_more"], false);
    assert!(body["sync"].is_string());
}

#[tokio::test]
async fn events_after_the_token_concern_the_resource_and_repeat_idempotently() {
    let harness = start().await;
    let project = harness.gid("project", "Launch plan");
    let task = harness.gid("task", "Book the venue");
    let other = harness.gid("project", "Roadmap");
    let sync = harness.fresh_sync(&project).await;

    harness.change(&project, "name", &[&project]);
    harness.change(&other, "name", &[&other]);
    harness.change(&task, "completed", &[&task, &project]);

    let (status, first) = harness.events(&project, Some(&sync)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(fields(&first), vec!["name", "completed"]);
    assert_eq!(first["has_more"], false);
    let event = &first["data"][1];
    assert_eq!(event["action"], "changed");
    assert_eq!(event["resource"]["gid"], task.as_str());
    assert_eq!(event["resource"]["resource_type"], "task");
    assert!(event["created_at"].is_string());

    let (status, again) = harness.events(&project, Some(&sync)).await;
    assert_eq!(status, 200);
    assert_eq!(
        again["data"], first["data"],
        "the same token, the same events"
    );

    let next = first["sync"].as_str().expect("a next token");
    let (status, after) = harness.events(&project, Some(next)).await;
    assert_eq!(status, 200);
    assert_eq!(after["data"], json!([]));

    harness.change(&task, "due_on", &[&task, &project]);
    let (_, later) = harness.events(&project, Some(next)).await;
    assert_eq!(fields(&later), vec!["due_on"]);

    // The task's own stream sees only its own changes.
    let task_sync = harness.fresh_sync(&task).await;
    harness.change(&project, "notes", &[&project]);
    harness.change(&task, "notes", &[&task, &project]);
    let (_, mine) = harness.events(&task, Some(&task_sync)).await;
    assert_eq!(fields(&mine), vec!["notes"]);
    assert_eq!(mine["data"][0]["resource"]["gid"], task.as_str());
}

#[tokio::test]
async fn more_than_a_hundred_events_come_in_pages_with_has_more() {
    let harness = start().await;
    let project = harness.gid("project", "Launch plan");
    let sync = harness.fresh_sync(&project).await;
    for i in 0..150 {
        harness.change(&project, &format!("f{i}"), &[&project]);
    }

    let (status, first) = harness.events(&project, Some(&sync)).await;
    assert_eq!(status, 200);
    let expected: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
    assert_eq!(fields(&first), expected);
    assert_eq!(first["has_more"], true);

    let (_, repeated) = harness.events(&project, Some(&sync)).await;
    assert_eq!(repeated["data"], first["data"]);
    assert_eq!(repeated["has_more"], true);

    let next = first["sync"].as_str().expect("a next token");
    let (_, second) = harness.events(&project, Some(next)).await;
    let expected: Vec<String> = (100..150).map(|i| format!("f{i}")).collect();
    assert_eq!(fields(&second), expected);
    assert_eq!(second["has_more"], false);

    let last = second["sync"].as_str().expect("a last token");
    let (_, empty) = harness.events(&project, Some(last)).await;
    assert_eq!(empty["data"], json!([]));
    assert_eq!(empty["has_more"], false);
}

#[tokio::test]
async fn garbage_and_foreign_tokens_get_412_with_a_fresh_token() {
    let harness = start().await;
    let project = harness.gid("project", "Launch plan");
    let other = harness.gid("project", "Roadmap");

    for garbage in ["garbage", "de4774f6915eae04714ca93bb2f5ee81", ""] {
        let (status, body) = harness.events(&project, Some(garbage)).await;
        assert_eq!(status, 412, "{garbage:?} -> {body}");
        assert_eq!(body["errors"][0]["message"], SYNC_INVALID);
        let fresh = body["sync"].as_str().expect("a fresh token");
        let (status, _) = harness.events(&project, Some(fresh)).await;
        assert_eq!(status, 200, "the fresh token works");
    }

    let for_other = harness.fresh_sync(&other).await;
    let (status, body) = harness.events(&project, Some(&for_other)).await;
    assert_eq!(status, 412, "a token is bound to its resource: {body}");
}

#[tokio::test]
async fn the_resource_is_required_and_must_be_visible() {
    let harness = start().await;
    let project = harness.gid("project", "Launch plan");

    let response = harness
        .http
        .get(format!("{}/events", harness.api))
        .bearer_auth(ALICE_PAT)
        .send()
        .await
        .expect("sandbox answers");
    assert_eq!(response.status().as_u16(), 400);

    let (status, body) = harness.events("999", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = harness.events_as(BOB_PAT, &project, None).await;
    assert_eq!(status, 404, "Bob is not in Acme: {body}");
}

#[tokio::test]
async fn changes_made_through_rest_appear_as_events() {
    let harness = start().await;
    let project = harness.gid("project", "Launch plan");
    let task = harness.gid("task", "Book the venue");
    let sync = harness.fresh_sync(&project).await;

    let response = harness
        .http
        .put(format!("{}/tasks/{task}", harness.api))
        .bearer_auth(ALICE_PAT)
        .json(&json!({"data": {"name": "Book a bigger venue"}}))
        .send()
        .await
        .expect("sandbox answers");
    assert_eq!(response.status().as_u16(), 200);

    let (status, body) = harness.events(&project, Some(&sync)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fields(&body), vec!["name"]);
    assert_eq!(body["data"][0]["resource"]["gid"], task.as_str());
}
