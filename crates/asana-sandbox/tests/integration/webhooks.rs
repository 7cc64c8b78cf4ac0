//! Webhooks against a served sandbox and a real receiver on another loopback port: the
//! handshake inside `POST /webhooks`, signed deliveries of bubbled changes, filters, retries
//! with backoff, heartbeats, deletion after the failure window, and the owner-scoped CRUD.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentauth_testkit::assert_eventually;
use asana_sandbox::seed::{ALICE_PAT, BOB_PAT, SERVICE_ACCOUNT_TOKEN};
use asana_sandbox::{Config, Sandbox};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(3600);
const WITHIN: Duration = Duration::from_secs(15);

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

async fn start(heartbeat: Duration, failure_window: Duration) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let sandbox = Sandbox::new(Config {
        public_url: format!("http://{address}"),
        seed: true,
        webhook_heartbeat: heartbeat,
        webhook_failure_window: failure_window,
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
    async fn call(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("sandbox answers");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, token, path, None).await
    }

    /// Alice creates a webhook; returns (status, body).
    async fn create(&self, token: &str, data: Value) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::POST,
            token,
            "/webhooks",
            Some(json!({ "data": data })),
        )
        .await
    }

    /// The gid of the seeded object of `resource_type` called `name`.
    fn gid(&self, resource_type: &str, name: &str) -> String {
        self.sandbox
            .world()
            .all(resource_type, |o| o["name"] == name)
            .next()
            .and_then(|o| o["gid"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no {resource_type} called {name}"))
    }

    /// Records a change by Alice to `gid` bubbling to `scope`, the way REST handlers do.
    fn change(&self, gid: &str, action: &str, field: Option<&str>, scope: &[&str]) {
        {
            let mut world = self.sandbox.world();
            let alice = world
                .all("user", |u| u["email"] == "alice@acme.test")
                .next()
                .and_then(|u| u["gid"].as_str().map(str::to_owned));
            let resource = world.get(gid).cloned().expect("changed object exists");
            let change = field.map(|f| json!({"field": f, "action": "changed", "new_value": null}));
            world.record(
                alice.as_deref(),
                action,
                &resource,
                None,
                change,
                scope.iter().map(|s| (*s).to_owned()).collect(),
            );
        }
        self.sandbox.notify_changed();
    }

    fn stored_webhooks(&self) -> usize {
        self.sandbox.world().all("webhook", |_| true).count()
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    uri: String,
    secret: Option<String>,
    signature: Option<String>,
    content_type: Option<String>,
    body: Bytes,
    answered: StatusCode,
}

impl Seen {
    fn events(&self) -> Vec<Value> {
        let body: Value = serde_json::from_slice(&self.body).expect("deliveries are JSON");
        body["events"].as_array().cloned().expect("an events array")
    }
}

#[derive(Debug, Default)]
struct ReceiverState {
    withhold_echo: bool,
    fail: bool,
    seen: Vec<Seen>,
}

/// A webhook target: answers the handshake (or not), records everything, fails on demand.
#[derive(Debug, Clone, Default)]
struct Receiver(Arc<Mutex<ReceiverState>>);

impl Receiver {
    async fn start() -> (Self, String) {
        let receiver = Self::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, format!("http://{address}/hook"))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReceiverState> {
        self.0.lock().expect("receiver lock")
    }

    fn set_fail(&self, fail: bool) {
        self.state().fail = fail;
    }

    fn handshakes(&self) -> Vec<Seen> {
        self.state()
            .seen
            .iter()
            .filter(|s| s.secret.is_some())
            .cloned()
            .collect()
    }

    fn deliveries(&self) -> Vec<Seen> {
        self.state()
            .seen
            .iter()
            .filter(|s| s.secret.is_none())
            .cloned()
            .collect()
    }

    /// Every event the receiver accepted, in arrival order.
    fn accepted_events(&self) -> Vec<Value> {
        self.deliveries()
            .iter()
            .filter(|d| d.answered == StatusCode::OK)
            .flat_map(Seen::events)
            .collect()
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let secret = header("x-hook-secret");
    let mut state = receiver.state();
    let answered = if secret.is_none() && state.fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    state.seen.push(Seen {
        at: Instant::now(),
        uri: uri.to_string(),
        secret: secret.clone(),
        signature: header("x-hook-signature"),
        content_type: header("content-type"),
        body,
        answered,
    });
    match secret {
        Some(secret) if !state.withhold_echo => {
            (answered, [("X-Hook-Secret", secret)]).into_response()
        }
        _ => (answered, "receiver says no").into_response(),
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Creates Alice's webhook on `resource` and returns (gid, secret).
async fn alice_webhook(
    harness: &Harness,
    resource: &str,
    target: &str,
    filters: Option<Value>,
) -> (String, String) {
    let mut data = json!({"resource": resource, "target": target});
    if let Some(filters) = filters {
        data["filters"] = filters;
    }
    let (status, body) = harness.create(ALICE_PAT, data).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["data"]["gid"].as_str().expect("gid").to_owned(),
        body["X-Hook-Secret"].as_str().expect("secret").to_owned(),
    )
}

#[tokio::test]
async fn create_completes_the_handshake_before_answering() {
    let harness = start(LONG, LONG).await;
    let (receiver, target) = Receiver::start().await;
    let project = harness.gid("project", "Launch plan");
    let target = format!("{target}?state=abc");

    let response = harness
        .http
        .post(format!("{}/webhooks", harness.api))
        .bearer_auth(ALICE_PAT)
        .json(&json!({"data": {"resource": project, "target": target}}))
        .send()
        .await
        .expect("sandbox answers");
    assert_eq!(response.status().as_u16(), 201);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = response.json().await.expect("json");
    let secret = body["X-Hook-Secret"].as_str().expect("the secret");
    assert_eq!(secret.len(), 64);
    assert!(secret.chars().all(|c| c.is_ascii_hexdigit()));

    let webhook = &body["data"];
    let gid = webhook["gid"].as_str().expect("gid");
    assert_eq!(
        location.as_deref(),
        Some(format!("{}/webhooks/{gid}", harness.api).as_str())
    );
    assert_eq!(webhook["resource_type"], "webhook");
    assert_eq!(
        webhook["resource"],
        json!({"gid": project, "resource_type": "project", "name": "Launch plan"})
    );
    assert_eq!(webhook["target"], target);
    assert_eq!(webhook["active"], true);
    assert!(webhook["created_at"].is_string());
    assert!(webhook["last_success_at"].is_string());
    for field in [
        "last_failure_at",
        "last_failure_content",
        "next_attempt_after",
        "failure_deletion_timestamp",
    ] {
        assert!(webhook[field].is_null(), "{field} should start null");
    }
    assert_eq!(webhook["delivery_retry_count"], 0);
    assert_eq!(webhook["filters"], json!([]));
    let text = webhook.to_string();
    assert!(
        !text.contains("_sandbox_"),
        "internal fields leaked: {text}"
    );
    assert!(!text.contains(secret), "the secret leaked into data");

    // The handshake happened before the 201: the receiver already has it.
    let handshakes = receiver.handshakes();
    assert_eq!(handshakes.len(), 1);
    let handshake = &handshakes[0];
    assert_eq!(handshake.secret.as_deref(), Some(secret));
    assert_eq!(handshake.uri, "/hook?state=abc", "target used verbatim");
    assert_eq!(handshake.signature, None);
    let sent: Value = serde_json::from_slice(&handshake.body).expect("handshake body is JSON");
    assert_eq!(sent, json!({"events": []}));

    let (status, fetched) = harness.get(ALICE_PAT, &format!("/webhooks/{gid}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&fetched["data"], webhook);
    let (_, asked) = harness
        .get(
            ALICE_PAT,
            &format!("/webhooks/{gid}?opt_fields=_sandbox_secret,target"),
        )
        .await;
    assert_eq!(asked["data"], json!({"gid": gid, "target": target}));
}

#[tokio::test]
async fn a_target_that_does_not_echo_the_secret_gets_no_webhook() {
    let harness = start(LONG, LONG).await;
    let (receiver, target) = Receiver::start().await;
    receiver.state().withhold_echo = true;
    let project = harness.gid("project", "Launch plan");

    let (status, body) = harness
        .create(ALICE_PAT, json!({"resource": project, "target": target}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    assert!(body.get("data").is_none());
    assert_eq!(
        receiver.handshakes().len(),
        1,
        "the handshake was attempted"
    );

    // Nobody listening at all fails the same way.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let (status, _) = harness
        .create(
            ALICE_PAT,
            json!({"resource": project, "target": format!("http://{closed}/hook")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    assert_eq!(harness.stored_webhooks(), 0);
    let workspace = harness.gid("workspace", "Acme Corp");
    let (_, listed) = harness
        .get(ALICE_PAT, &format!("/webhooks?workspace={workspace}"))
        .await;
    assert_eq!(listed["data"], json!([]));
}

#[tokio::test]
async fn create_validates_resource_target_and_filters() {
    let harness = start(LONG, LONG).await;
    let (receiver, target) = Receiver::start().await;
    let project = harness.gid("project", "Launch plan");
    let workspace = harness.gid("workspace", "Acme Corp");

    let cases = [
        (
            ALICE_PAT,
            json!({"resource": "999", "target": target}),
            StatusCode::NOT_FOUND,
        ),
        (
            BOB_PAT,
            json!({"resource": project, "target": target}),
            StatusCode::NOT_FOUND,
        ),
        (
            ALICE_PAT,
            json!({"resource": project, "target": "not a url"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            ALICE_PAT,
            json!({"resource": project, "target": "ftp://127.0.0.1/hook"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            ALICE_PAT,
            json!({"resource": project}),
            StatusCode::BAD_REQUEST,
        ),
        (
            ALICE_PAT,
            json!({"resource": workspace, "target": target}),
            StatusCode::BAD_REQUEST,
        ),
        (
            ALICE_PAT,
            json!({"resource": workspace, "target": target,
                   "filters": [{"action": "changed", "fields": ["name"]}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            ALICE_PAT,
            json!({"resource": project, "target": target, "filters": [{"action": "exploded"}]}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (token, data, expected) in cases {
        let (status, body) = harness.create(token, data.clone()).await;
        assert_eq!(status, expected, "{data} -> {body}");
        assert!(body["errors"][0]["message"].is_string(), "{body}");
    }
    assert!(
        receiver.handshakes().is_empty(),
        "no handshake for a rejected request"
    );
    assert_eq!(harness.stored_webhooks(), 0);

    let (status, body) = harness
        .create(
            ALICE_PAT,
            json!({"resource": workspace, "target": target,
                   "filters": [{"resource_type": "project", "action": "added"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["data"]["filters"],
        json!([{"resource_type": "project", "action": "added"}])
    );
}

#[tokio::test]
async fn changes_to_the_resource_and_its_children_arrive_signed_and_in_order() {
    let harness = start(LONG, LONG).await;
    let (receiver, target) = Receiver::start().await;
    let project = harness.gid("project", "Launch plan");
    let task = harness.gid("task", "Book the venue");
    let other_project = harness.gid("project", "Roadmap");
    let other_task = harness.gid("task", "Q3 planning");
    let (_, secret) = alice_webhook(&harness, &project, &target, None).await;

    harness.change(&project, "changed", Some("name"), &[&project]);
    harness.change(&task, "changed", Some("completed"), &[&task, &project]);
    harness.change(
        &other_task,
        "changed",
        Some("name"),
        &[&other_task, &other_project],
    );
    harness.change(&project, "changed", Some("notes"), &[&project]);

    assert_eventually!(
        WITHIN,
        async { receiver.accepted_events().len() >= 3 },
        "three events delivered, got {:?}",
        receiver.accepted_events()
    );
    let events = receiver.accepted_events();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["resource"]["gid"].as_str().unwrap_or_default().to_owned(),
                e["change"]["field"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (project.clone(), "name".to_owned()),
            (task.clone(), "completed".to_owned()),
            (project.clone(), "notes".to_owned()),
        ],
        "the bubbled child change is included, the other project's is not"
    );
    let child = &events[1];
    assert_eq!(child["action"], "changed");
    assert_eq!(child["resource"]["resource_type"], "task");
    assert_eq!(child["resource"]["resource_subtype"], "default_task");
    assert_eq!(child["user"]["resource_type"], "user");
    assert!(child["created_at"].is_string());

    for delivery in receiver.deliveries() {
        assert_eq!(delivery.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            delivery.signature.as_deref(),
            Some(hmac_hex(&secret, &delivery.body).as_str()),
            "X-Hook-Signature is the HMAC of the raw body"
        );
        assert_ne!(
            delivery.signature.as_deref(),
            Some(hmac_hex("another secret", &delivery.body).as_str())
        );
    }
}

#[tokio::test]
async fn filters_pass_only_matching_events_and_put_replaces_them() {
    let harness = start(LONG, LONG).await;
    let (receiver, target) = Receiver::start().await;
    let project = harness.gid("project", "Launch plan");
    let task = harness.gid("task", "Book the venue");
    let (gid, _) = alice_webhook(
        &harness,
        &project,
        &target,
        Some(json!([{"resource_type": "task", "action": "changed", "fields": ["completed"]}])),
    )
    .await;

    harness.change(&task, "changed", Some("name"), &[&task, &project]);
    harness.change(&task, "added", None, &[&task, &project]);
    harness.change(&project, "changed", Some("completed"), &[&project]);
    harness.change(&task, "changed", Some("completed"), &[&task, &project]);
    assert_eventually!(
        WITHIN,
        async { !receiver.accepted_events().is_empty() },
        "the matching event arrives"
    );
    let events = receiver.accepted_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["resource"]["gid"], task.as_str());
    assert_eq!(events[0]["change"]["field"], "completed");

    let (status, body) = harness
        .call(
            reqwest::Method::PUT,
            ALICE_PAT,
            &format!("/webhooks/{gid}"),
            Some(json!({"data": {"filters": [{"action": "added"}]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["filters"], json!([{"action": "added"}]));

    harness.change(&task, "changed", Some("completed"), &[&task, &project]);
    harness.change(&task, "added", None, &[&task, &project]);
    assert_eventually!(
        WITHIN,
        async { receiver.accepted_events().len() >= 2 },
        "the added event arrives"
    );
    let actions: Vec<Value> = receiver
        .accepted_events()
        .iter()
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(actions, vec![json!("changed"), json!("added")]);
}

#[tokio::test]
async fn a_failing_target_gets_retries_with_backoff_then_every_event_in_order() {
    let harness = start(LONG, LONG).await;
    let (receiver, target) = Receiver::start().await;
    let project = harness.gid("project", "Launch plan");
    let (gid, secret) = alice_webhook(&harness, &project, &target, None).await;

    receiver.set_fail(true);
    for field in ["first", "second", "third"] {
        harness.change(&project, "changed", Some(field), &[&project]);
    }
    assert_eventually!(
        WITHIN,
        async { receiver.deliveries().len() >= 3 },
        "three failed attempts"
    );
    let attempts = receiver.deliveries();
    assert!(
        attempts[0]
            .events()
            .first()
            .is_some_and(|e| e["change"]["field"] == "first"),
        "every retry starts with the oldest undelivered event"
    );
    assert!(
        attempts[1..3]
            .iter()
            .all(|a| a.events().first() == attempts[0].events().first())
    );
    assert!(attempts[1].at - attempts[0].at >= Duration::from_millis(100));
    assert!(
        attempts[2].at - attempts[1].at >= Duration::from_millis(200),
        "the delay doubles"
    );

    assert_eventually!(
        WITHIN,
        async {
            let (_, body) = harness.get(ALICE_PAT, &format!("/webhooks/{gid}")).await;
            body["data"]["delivery_retry_count"].as_u64() >= Some(3)
        },
        "the retry count is visible"
    );
    let (_, failing) = harness.get(ALICE_PAT, &format!("/webhooks/{gid}")).await;
    let failing = &failing["data"];
    assert!(failing["last_failure_at"].is_string());
    assert!(
        failing["last_failure_content"]
            .as_str()
            .is_some_and(|c| c.starts_with("500")),
        "{failing}"
    );
    assert!(failing["next_attempt_after"].is_string());
    assert!(failing["failure_deletion_timestamp"].is_string());

    receiver.set_fail(false);
    assert_eventually!(
        WITHIN,
        async { receiver.accepted_events().len() >= 3 },
        "delivery catches up once the target recovers"
    );
    harness.change(&project, "changed", Some("fourth"), &[&project]);
    assert_eventually!(
        WITHIN,
        async { receiver.accepted_events().len() >= 4 },
        "a later change follows"
    );
    let fields: Vec<Value> = receiver
        .accepted_events()
        .iter()
        .map(|e| e["change"]["field"].clone())
        .collect();
    assert_eq!(fields, vec!["first", "second", "third", "fourth"]);
    for delivery in receiver.deliveries() {
        assert_eq!(
            delivery.signature.as_deref(),
            Some(hmac_hex(&secret, &delivery.body).as_str())
        );
    }

    let (_, healthy) = harness.get(ALICE_PAT, &format!("/webhooks/{gid}")).await;
    let healthy = &healthy["data"];
    assert_eq!(healthy["delivery_retry_count"], 0);
    assert!(healthy["next_attempt_after"].is_null());
    assert!(healthy["failure_deletion_timestamp"].is_null());
    assert!(healthy["last_success_at"].as_str() > failing["last_failure_at"].as_str());
}

#[tokio::test]
async fn heartbeats_arrive_signed_on_the_interval() {
    let heartbeat = Duration::from_millis(200);
    let harness = start(heartbeat, LONG).await;
    let (receiver, target) = Receiver::start().await;
    let project = harness.gid("project", "Launch plan");
    let (gid, secret) = alice_webhook(&harness, &project, &target, None).await;

    assert_eventually!(
        WITHIN,
        async { receiver.deliveries().len() >= 2 },
        "two heartbeats"
    );
    let handshake = receiver.handshakes()[0].at;
    let beats = receiver.deliveries();
    for beat in &beats {
        assert!(beat.events().is_empty());
        assert_eq!(
            beat.signature.as_deref(),
            Some(hmac_hex(&secret, &beat.body).as_str())
        );
    }
    assert!(beats[0].at - handshake >= heartbeat);
    assert!(beats[1].at - beats[0].at >= heartbeat);
    let (_, body) = harness.get(ALICE_PAT, &format!("/webhooks/{gid}")).await;
    assert!(body["data"]["last_success_at"].is_string());
}

#[tokio::test]
async fn a_webhook_failing_for_the_whole_window_is_deleted() {
    let harness = start(Duration::from_millis(100), Duration::from_secs(1)).await;
    let (receiver, target) = Receiver::start().await;
    // Only deliveries fail; the handshake still succeeds.
    receiver.set_fail(true);
    let project = harness.gid("project", "Launch plan");
    let (gid, _) = alice_webhook(&harness, &project, &target, None).await;

    assert_eventually!(
        WITHIN,
        async {
            let (_, body) = harness.get(ALICE_PAT, &format!("/webhooks/{gid}")).await;
            body["data"]["failure_deletion_timestamp"].is_string()
        },
        "the deletion time is announced"
    );
    assert_eventually!(
        WITHIN,
        async {
            harness.get(ALICE_PAT, &format!("/webhooks/{gid}")).await.0 == StatusCode::NOT_FOUND
        },
        "the webhook is deleted"
    );
    assert_eq!(harness.stored_webhooks(), 0);
    let attempts = receiver.deliveries();
    assert!(
        attempts.len() >= 3,
        "retried before giving up: {attempts:?}"
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.answered == StatusCode::INTERNAL_SERVER_ERROR)
    );
    let failing_for = attempts[attempts.len() - 1].at - attempts[0].at;
    assert!(
        failing_for >= Duration::from_millis(900),
        "deleted only after the window: {failing_for:?}"
    );
}

#[tokio::test]
async fn list_get_update_and_delete_see_only_the_callers_own_webhooks() {
    let harness = start(LONG, LONG).await;
    let (_receiver, target) = Receiver::start().await;
    let workspace = harness.gid("workspace", "Acme Corp");
    let project = harness.gid("project", "Launch plan");
    let task = harness.gid("task", "Book the venue");
    let (on_project, _) = alice_webhook(&harness, &project, &target, None).await;
    let (on_task, _) = alice_webhook(&harness, &task, &target, None).await;
    let (status, robots) = harness
        .create(
            SERVICE_ACCOUNT_TOKEN,
            json!({"resource": project, "target": target}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let robots = robots["data"]["gid"].as_str().expect("gid").to_owned();

    let (status, listed) = harness
        .get(ALICE_PAT, &format!("/webhooks?workspace={workspace}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let gids: Vec<&str> = listed["data"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|w| w["gid"].as_str())
        .collect();
    assert_eq!(gids, vec![on_project.as_str(), on_task.as_str()]);
    assert_eq!(
        listed["data"][0],
        json!({"gid": on_project, "resource_type": "webhook", "active": true,
               "resource": {"gid": project, "resource_type": "project", "name": "Launch plan"},
               "target": target}),
        "lists return compact webhooks"
    );

    let (_, by_resource) = harness
        .get(
            ALICE_PAT,
            &format!("/webhooks?workspace={workspace}&resource={task}"),
        )
        .await;
    assert_eq!(by_resource["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(by_resource["data"][0]["gid"], on_task.as_str());

    let (_, first) = harness
        .get(
            ALICE_PAT,
            &format!("/webhooks?workspace={workspace}&limit=1"),
        )
        .await;
    assert_eq!(first["data"][0]["gid"], on_project.as_str());
    let offset = first["next_page"]["offset"].as_str().expect("a next page");
    let (_, second) = harness
        .get(
            ALICE_PAT,
            &format!("/webhooks?workspace={workspace}&limit=1&offset={offset}"),
        )
        .await;
    assert_eq!(second["data"][0]["gid"], on_task.as_str());
    assert!(second["next_page"].is_null());

    let (status, _) = harness.get(ALICE_PAT, "/webhooks").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "workspace is required");

    let (_, theirs) = harness
        .get(
            SERVICE_ACCOUNT_TOKEN,
            &format!("/webhooks?workspace={workspace}"),
        )
        .await;
    assert_eq!(theirs["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(theirs["data"][0]["gid"], robots.as_str());
    let (status, _) = harness
        .get(SERVICE_ACCOUNT_TOKEN, &format!("/webhooks/{on_project}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = harness
        .call(
            reqwest::Method::DELETE,
            SERVICE_ACCOUNT_TOKEN,
            &format!("/webhooks/{on_project}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let filters = json!([{"resource_type": "task", "action": "changed", "fields": ["due_on"]}]);
    let (status, updated) = harness
        .call(
            reqwest::Method::PUT,
            ALICE_PAT,
            &format!("/webhooks/{on_project}"),
            Some(json!({"data": {"filters": filters}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["data"]["filters"], filters);
    let (_, replaced) = harness
        .call(
            reqwest::Method::PUT,
            ALICE_PAT,
            &format!("/webhooks/{on_project}"),
            Some(json!({"data": {"filters": [{"action": "deleted"}]}})),
        )
        .await;
    assert_eq!(
        replaced["data"]["filters"],
        json!([{"action": "deleted"}]),
        "PUT replaces the whole array"
    );
    let (_, fetched) = harness
        .get(ALICE_PAT, &format!("/webhooks/{on_project}"))
        .await;
    assert_eq!(fetched["data"]["filters"], json!([{"action": "deleted"}]));

    let (status, deleted) = harness
        .call(
            reqwest::Method::DELETE,
            ALICE_PAT,
            &format!("/webhooks/{on_project}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted, json!({"data": {}}));
    let (status, _) = harness
        .get(ALICE_PAT, &format!("/webhooks/{on_project}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = harness
        .get(ALICE_PAT, &format!("/webhooks?workspace={workspace}"))
        .await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_task_updated_through_rest_reaches_the_project_webhook() {
    let harness = start(LONG, LONG).await;
    let (receiver, target) = Receiver::start().await;
    let project = harness.gid("project", "Launch plan");
    let task = harness.gid("task", "Book the venue");
    let (_, secret) = alice_webhook(&harness, &project, &target, None).await;

    let (status, body) = harness
        .call(
            reqwest::Method::PUT,
            ALICE_PAT,
            &format!("/tasks/{task}"),
            Some(json!({"data": {"completed": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert_eventually!(
        WITHIN,
        async {
            receiver
                .accepted_events()
                .iter()
                .any(|e| e["change"]["field"] == "completed")
        },
        "the REST change is delivered, got {:?}",
        receiver.accepted_events()
    );
    let events = receiver.accepted_events();
    let event = events
        .iter()
        .find(|e| e["change"]["field"] == "completed")
        .expect("the completed event");
    assert_eq!(event["action"], "changed");
    assert_eq!(event["resource"]["gid"], task.as_str());
    assert!(event["user"]["gid"].is_string());
    for delivery in receiver.deliveries() {
        assert_eq!(
            delivery.signature.as_deref(),
            Some(hmac_hex(&secret, &delivery.body).as_str())
        );
    }
}
