//! The REST API against Asana's OpenAPI spec.
//!
//! - In process, over HTTP: the sandbox's own request validation (`spec::validate`) answers
//!   unknown routes and invalid requests the way Asana does, and lets valid ones through.
//! - Conformance: the official Python SDK (`asana` 5.x, `tests/python/sdk_tour.py`) tours the
//!   REST surface through Stoplight Prism in proxy mode with `--errors`, which checks every
//!   request and response against the spec; any violation fails the test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use agentauth_testkit::prism;
use anyhow::{Context, Result, ensure};
use asana_sandbox::error::HELP;
use asana_sandbox::seed::ALICE_PAT;
use asana_sandbox::{Config, Sandbox};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A sandbox serving on a loopback port until dropped.
struct Running {
    base: String,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let sandbox = Sandbox::new(Config {
        public_url: base.clone(),
        ..Config::default()
    });
    let shutdown = CancellationToken::new();
    tokio::spawn(sandbox.serve(listener, shutdown.clone()));
    Ok(Running { base, shutdown })
}

/// What a request gave back.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    /// The first error message of Asana's envelope.
    fn message(&self) -> &str {
        self.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
    }
}

async fn send(
    running: &Running,
    method: Method,
    path_and_query: &str,
    body: Option<&str>,
) -> Result<Answer> {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}/api/1.0{path_and_query}", running.base))
        .bearer_auth(ALICE_PAT);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer { status, body })
}

async fn get(running: &Running, path_and_query: &str) -> Result<Answer> {
    send(running, Method::GET, path_and_query, None).await
}

async fn post(running: &Running, path: &str, body: &str) -> Result<Answer> {
    send(running, Method::POST, path, Some(body)).await
}

/// Asserts a 400 whose message is `expected` (or starts with it, for long enum lists).
fn assert_bad_request(answer: &Answer, expected: &str) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    assert!(
        answer.message().starts_with(expected),
        "message {:?} should start with {expected:?}",
        answer.message()
    );
    assert_eq!(answer.body["errors"][0]["help"], HELP, "{answer:?}");
}

#[tokio::test]
async fn unknown_routes_answer_404_in_asanas_envelope() -> Result<()> {
    let running = start().await?;
    let unknown = get(&running, "/no_such_things/1").await?;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.body,
        json!({"errors": [{"message": "Not found", "help": HELP}]})
    );
    // A path the spec has, with a method it does not.
    let wrong_method = send(&running, Method::PATCH, "/users/me", None).await?;
    assert_eq!(wrong_method.status, StatusCode::NOT_FOUND);
    assert_eq!(wrong_method.message(), "Not found");
    // Authentication still comes first.
    let anonymous = reqwest::get(format!("{}/api/1.0/no_such_things", running.base)).await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn bad_query_parameters_answer_400_naming_the_parameter() -> Result<()> {
    let running = start().await?;
    for limit in ["0", "101"] {
        let answer = get(&running, &format!("/workspaces?limit={limit}")).await?;
        assert_bad_request(&answer, "limit: Must be between 1 and 100");
    }
    let answer = get(&running, "/workspaces?limit=ten").await?;
    assert_bad_request(&answer, "limit: Value must be an integer, not a string");
    let answer = get(&running, "/users/me?opt_pretty=maybe").await?;
    assert_bad_request(&answer, "opt_pretty: Value must be a boolean, not a string");
    let answer = get(&running, "/users/me/teams").await?;
    assert_bad_request(&answer, "organization: Missing input");
    let answer = get(
        &running,
        "/users/me/favorites?workspace=1&resource_type=planet",
    )
    .await?;
    assert_bad_request(
        &answer,
        "resource_type: Value must be one of portfolio, project",
    );
    Ok(())
}

#[tokio::test]
async fn bad_bodies_answer_400_naming_the_field() -> Result<()> {
    let running = start().await?;
    let answer = post(&running, "/webhooks", r#"{"data": {"resource": "1"}}"#).await?;
    assert_bad_request(&answer, "data.target: Missing input");
    let answer = post(&running, "/tasks", r#"{"data": {"name": 5}}"#).await?;
    assert_bad_request(&answer, "data.name: Value must be a string, not an integer");
    let answer = post(
        &running,
        "/tasks",
        r#"{"data": {"followers": ["me", true]}}"#,
    )
    .await?;
    assert_bad_request(
        &answer,
        "data.followers[1]: Value must be a string, not a boolean",
    );
    let answer = post(
        &running,
        "/projects",
        r#"{"data": {"default_view": "grid"}}"#,
    )
    .await?;
    assert_bad_request(
        &answer,
        "data.default_view: Value must be one of list, board",
    );
    let answer = post(&running, "/tasks", r#"{"name": "no envelope"}"#).await?;
    assert_bad_request(&answer, "data: Missing input");
    let answer = post(&running, "/tasks", "").await?;
    assert_bad_request(&answer, "data: Missing input");
    let answer = post(&running, "/tasks", r#"{"data": "#).await?;
    assert_bad_request(&answer, "Could not parse the request body as JSON");
    Ok(())
}

#[tokio::test]
async fn valid_requests_pass() -> Result<()> {
    let running = start().await?;
    let me = get(&running, "/users/me?opt_fields=name,email&opt_pretty").await?;
    assert_eq!(me.status, StatusCode::OK, "{me:?}");
    assert_eq!(me.body["data"]["email"], "alice@acme.test");
    // Paging: limit and the offset the sandbox hands out are both accepted.
    let first = get(&running, "/workspaces?limit=1").await?;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let offset = first.body["next_page"]["offset"]
        .as_str()
        .context("Alice has two workspaces, so a first page of one has a next page")?;
    let second = get(&running, &format!("/workspaces?limit=1&offset={offset}")).await?;
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    // A JSON body that fits the schema reaches its handler; `options` next to `data` is
    // accepted, as Asana does.
    let workspace = first.body["data"][0]["gid"]
        .as_str()
        .context("a first page with a workspace")?;
    let body = json!({"data": {"name": "spec-ok", "workspace": workspace},
                      "options": {"fields": ["name"]}});
    let created = post(&running, "/tags", &body.to_string()).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    // The official SDK sends `{}` with every DELETE; operations without a body ignore it.
    let tag = created.body["data"]["gid"]
        .as_str()
        .context("a created tag has a gid")?;
    let deleted = send(
        &running,
        Method::DELETE,
        &format!("/tags/{tag}"),
        Some("{}"),
    )
    .await?;
    assert_eq!(deleted.status, StatusCode::OK, "{deleted:?}");
    Ok(())
}

fn tool(path: PathBuf) -> Result<PathBuf> {
    ensure!(
        path.exists(),
        "{} is missing: run `make tools` (it installs the Python SDK into .tools/)",
        path.display()
    );
    Ok(path)
}

/// The steps `sdk_tour.py` takes when every one of them succeeds.
const TOUR_STEPS: usize = 93;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_tour_through_prism_has_no_violations() -> Result<()> {
    let python = tool(agentauth_testkit::tools_dir().join("venv/bin/python"))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sdk_tour.py");

    let running = start().await?;
    let prism = prism::start_proxy(&format!("{}/api/1.0", running.base)).await?;
    let corrections = prism.corrections();
    ensure!(
        corrections.null_enum_items == 5,
        "expected the spec's five `- null` enum items, found {}",
        corrections.null_enum_items
    );
    ensure!(
        corrections.nullable_refs > 0
            && corrections.email_domain_formats == 1
            && corrections.webhook_health_fields == 5,
        "the spec changed shape"
    );

    let tour = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(&python)
            .arg(&script)
            .args(["--host", prism.url()])
            .args(["--token", ALICE_PAT])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the tour did not finish within 180 s")??;
    let stdout = String::from_utf8_lossy(&tour.stdout);
    let report: Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "the tour printed no report (exit {}):\n{stdout}\n{}",
            tour.status,
            String::from_utf8_lossy(&tour.stderr)
        )
    })?;
    for step in report["steps"].as_array().into_iter().flatten() {
        eprintln!(
            "{:<13} {} | {}",
            step["outcome"].as_str().unwrap_or_default(),
            step["family"].as_str().unwrap_or_default(),
            step["step"].as_str().unwrap_or_default()
        );
    }
    eprintln!(
        "{} requests through prism, outcomes {}",
        report["requests"], report["outcomes"]
    );
    let findings = json!({
        "violations": report["violations"],
        "errors": report["errors"],
        "unimplemented": report["unimplemented"],
    });
    ensure!(
        ["violations", "errors", "unimplemented"]
            .iter()
            .all(|kind| report[kind].as_array().is_some_and(Vec::is_empty))
            && tour.status.success(),
        "the SDK tour through prism found problems:\n{}",
        serde_json::to_string_pretty(&findings)?
    );
    // Every step of the tour ran and succeeded: a family skipped because a list came back
    // empty changes the count.
    let steps = report["steps"].as_array().map_or(0, Vec::len);
    ensure!(
        steps == TOUR_STEPS && report["outcomes"] == json!({"ok": TOUR_STEPS}),
        "expected {TOUR_STEPS} steps, all ok; got {steps}: {}",
        report["outcomes"]
    );
    drop(prism);
    Ok(())
}
