//! ExecuteTool, ExecuteBatch, ListTools and ProxyRequest end to end: the whole system in
//! process (sandbox, OpenBao, token-vault, audit-log, connector-executor), through gRPC, as a
//! caller sees it.

#[path = "../../../../crates/asana-tools/tests/support/cases.rs"]
mod cases;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::system::{OTHER_TENANT, Options, System, TENANT};
use agentauth_proto::audit::v1 as audit_pb;
use agentauth_proto::executor::v1 as pb;
use agentauth_proto::vault::v1 as vault_pb;
use agentauth_testkit::prism;
use anyhow::Context as _;
use asana_sandbox::seed::{ALICE_PAT, BOB_PAT};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_types::StatusExt as _;

/// A task gid no object has.
const MISSING_TASK: &str = "999999999";

fn output(response: &pb::ExecuteToolResponse) -> Value {
    serde_json::from_str(&response.output_json).expect("output is JSON")
}

/// The fields a status's BadRequest details name.
fn violated_fields(status: &tonic::Status) -> BTreeSet<String> {
    status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest details in {status:?}"))
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// ExecuteTool as the agent with `input_json` as given.
async fn execute_raw(
    system: &System,
    tool: &str,
    input_json: &str,
) -> Result<pb::ExecuteToolResponse, tonic::Status> {
    system
        .executor()
        .execute_tool(pb::ExecuteToolRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            tool_name: tool.into(),
            input_json: input_json.into(),
            options: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A tool call that must succeed: its output.
async fn call(system: &System, tool: &str, input: Value) -> Value {
    let response = system
        .execute("asana-pat", "alice", tool, input.clone())
        .await
        .unwrap_or_else(|e| panic!("{tool} {input}: {e:?}"));
    assert!(
        !response.is_error,
        "{tool} {input}: {}",
        response.output_json
    );
    output(&response)
}

/// ExecuteTool with options.
async fn execute_with(
    system: &System,
    tool: &str,
    input: Value,
    options: pb::ExecuteOptions,
) -> pb::ExecuteToolResponse {
    system
        .executor()
        .execute_tool(pb::ExecuteToolRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            tool_name: tool.into(),
            input_json: input.to_string(),
            options: Some(options),
        })
        .await
        .expect("executed")
        .into_inner()
}

/// A ProxyRequest as the agent for alice on `asana-pat`.
fn proxy(method: &str, path: &str) -> pb::ProxyRequestRequest {
    pb::ProxyRequestRequest {
        tenant: TENANT.into(),
        connection_name: "asana-pat".into(),
        identifier: "alice".into(),
        method: method.into(),
        path: path.into(),
        query: Vec::new(),
        body: Vec::new(),
        headers: Vec::new(),
    }
}

fn gid_where(list: &Value, key: &str, value: &str) -> String {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|item| item[key] == value)
        .and_then(|item| item["gid"].as_str())
        .unwrap_or_else(|| panic!("no item with {key} {value:?} in {list}"))
        .to_owned()
}

/// Alice's seeded workspace "Acme Corp" and its project "Launch plan".
async fn acme_and_launch(system: &System) -> (String, String) {
    let me = call(
        system,
        "asana_api_get_user",
        json!({"user_gid": "me", "opt_fields": ["workspaces.name"]}),
    )
    .await;
    let acme = gid_where(&me["workspaces"], "name", "Acme Corp");
    let projects = call(
        system,
        "asana_api_get_projects",
        json!({"workspace": acme, "limit": 100}),
    )
    .await;
    let launch = gid_where(&projects, "name", "Launch plan");
    (acme, launch)
}

/// A system with alice connected on `asana-pat` with her PAT.
async fn with_alice() -> System {
    let system = System::start(Options::default()).await;
    system.connect_pat("alice", ALICE_PAT).await;
    system
}

/// Every tool `request` lists, following pages.
async fn list_all(system: &System, request: pb::ListToolsRequest) -> Vec<pb::Tool> {
    let mut client = system.executor();
    let mut tools = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_tools(pb::ListToolsRequest {
                page_token,
                ..request.clone()
            })
            .await
            .expect("listed")
            .into_inner();
        tools.extend(page.tools);
        if page.next_page_token.is_empty() {
            return tools;
        }
        page_token = page.next_page_token;
    }
}

fn on_pat(source: Option<pb::ToolSource>, name_prefix: &str) -> pb::ListToolsRequest {
    pb::ListToolsRequest {
        connection_name: Some("asana-pat".into()),
        name_prefix: name_prefix.into(),
        source: source.map(Into::into),
        page_size: 500,
        page_token: String::new(),
    }
}

/// Runs the curated cases as alice on `asana-pat`: tools through ExecuteTool, other requests
/// through ProxyRequest.
struct ThroughExecutor<'a> {
    system: &'a System,
}

impl cases::Runner for ThroughExecutor<'_> {
    async fn tool(&mut self, name: &str, input: &Value) -> anyhow::Result<cases::Outcome> {
        let response = self
            .system
            .execute("asana-pat", "alice", name, input.clone())
            .await
            .map_err(|status| anyhow::anyhow!("ExecuteTool failed: {status:?}"))?;
        let output = output(&response);
        if !response.is_error {
            return Ok(Ok(output));
        }
        let status = output["error"]["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .with_context(|| format!("an error without a status: {output}"))?;
        Ok(Err(cases::Failure {
            status,
            errors: output["error"]["errors"].clone(),
        }))
    }

    async fn raw(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<cases::Outcome> {
        let mut request = proxy(method, path);
        request.body = body;
        request.headers.push(pb::Header {
            name: "Content-Type".into(),
            value: content_type.into(),
        });
        let answer = self
            .system
            .executor()
            .proxy_request(request)
            .await
            .map_err(|status| anyhow::anyhow!("ProxyRequest failed: {status:?}"))?
            .into_inner();
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        let sl_violations = answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sl-violations"))
            .map(|h| h.value.as_str());
        if let Some(found) = prism::violation(sl_violations, &text) {
            anyhow::bail!("Prism found {method} {path} not to match the spec:\n{found}");
        }
        let body: Value = serde_json::from_str(&text).with_context(|| text.clone())?;
        let status = u16::try_from(answer.status_code)?;
        Ok(if (200..300).contains(&status) {
            Ok(body["data"].clone())
        } else {
            Err(cases::Failure {
                status,
                errors: body["errors"].clone(),
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curated_tool_works_through_execute_tool_and_prism() -> anyhow::Result<()> {
    let sandbox_socket = std::net::TcpListener::bind("127.0.0.1:0")?;
    let upstream = format!("http://{}/api/1.0", sandbox_socket.local_addr()?);
    let prism = prism::start_proxy(&upstream).await?;
    let system = System::start(Options {
        rest_api_base_url: Some(prism.url().to_owned()),
        sandbox_listener: Some(Arc::new(sandbox_socket)),
        ..Options::default()
    })
    .await;
    system.connect_pat("alice", ALICE_PAT).await;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let hook_target = cases::hook_receiver(stop).await?;

    let before = system.sandbox_requests();
    let covered = cases::run_cases(&mut ThroughExecutor { system: &system }, &hook_target)
        .await
        .with_context(|| format!("prism log:\n{}", prism.log()))?;
    let curated: BTreeSet<String> = list_all(&system, on_pat(Some(pb::ToolSource::Curated), ""))
        .await
        .into_iter()
        .map(|tool| tool.name)
        .collect();
    assert_eq!(covered, curated, "every curated tool needs a case");
    assert!(
        system.sandbox_requests() - before > covered.len() as u64,
        "the calls reached the sandbox"
    );
    let log = prism.log();
    let forwarded = log.matches("Forwarding").count();
    assert!(
        forwarded > covered.len(),
        "every call went through Prism ({forwarded} forwarded):\n{log}"
    );
    assert!(
        !log.to_lowercase().contains("violation"),
        "Prism found a violation:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_tools_read_the_user_and_create_and_list_tags() {
    let system = with_alice().await;
    let me = call(&system, "asana_api_get_user", json!({"user_gid": "me"})).await;
    assert_eq!(me["email"], "alice@acme.test", "{me}");

    let (acme, _) = acme_and_launch(&system).await;
    let catalogue = list_all(&system, on_pat(Some(pb::ToolSource::Curated), "")).await;
    assert!(
        catalogue.iter().all(|t| !t.name.contains("tag")),
        "tags have no curated tool: the generated ones are the only way"
    );
    let tag = call(
        &system,
        "asana_api_create_tag",
        json!({"data": {"name": "e2e-launch", "workspace": acme, "color": "dark-green"}}),
    )
    .await;
    assert_eq!(tag["name"], "e2e-launch", "{tag}");
    let tag_gid = tag["gid"].as_str().expect("a gid").to_owned();
    let tags = call(
        &system,
        "asana_api_get_tags",
        json!({"workspace": acme, "limit": 100, "opt_fields": ["name", "color"]}),
    )
    .await;
    assert_eq!(gid_where(&tags, "name", "e2e-launch"), tag_gid);
    gid_where(&tags, "name", "urgent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_clearly_and_nothing_reaches_asana() {
    let system = with_alice().await;
    system.connect_oauth("asana-mcp", "alice").await;
    let before = system.sandbox_requests();

    let cases: [(&str, Value, &[&str]); 5] = [
        ("asana_task_get", json!({}), &["input_json.task_gid"]),
        (
            "asana_task_update",
            json!({"task_gid": "12", "completed": "yes"}),
            &["input_json.completed"],
        ),
        (
            "asana_task_get",
            json!({"task_gid": "12", "colour": "red"}),
            &["input_json.colour"],
        ),
        (
            "asana_task_get",
            json!({"task_gid": "12ab"}),
            &["input_json.task_gid"],
        ),
        (
            "asana_task_update",
            json!({"completed": "yes", "colour": 1}),
            &[
                "input_json.task_gid",
                "input_json.completed",
                "input_json.colour",
            ],
        ),
    ];
    for (tool, input, fields) in cases {
        let status = system
            .execute("asana-pat", "alice", tool, input.clone())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{input}: {status:?}");
        let named = violated_fields(&status);
        for field in fields {
            assert!(named.contains(*field), "{input}: {field} not in {named:?}");
            let short = field.trim_start_matches("input_json.");
            assert!(status.message().contains(short), "{}", status.message());
        }
    }

    let status = system
        .execute("asana-pat", "alice", "asana_task_craete", json!({}))
        .await
        .expect_err("unknown tool");
    assert_refused(&status, Code::NotFound, "asana_task_create");
    let status = system
        .execute(
            "asana-pta",
            "alice",
            "asana_task_get",
            json!({"task_gid": "12"}),
        )
        .await
        .expect_err("unknown connection");
    assert_refused(&status, Code::NotFound, "asana-pat");

    for text in ["{not json", "[1, 2]", "\"text\"", "42"] {
        let status = execute_raw(&system, "asana_task_get", text)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{text}: {status:?}");
        assert!(
            violated_fields(&status).contains("input_json"),
            "{text}: {status:?}"
        );
    }

    let mut executor = system.executor();
    for path in [
        "/../x",
        "/users/../../x",
        "//evil.test/x",
        "http://evil.test/x",
        "/%2e%2e/x",
        "/users/%2E%2E/%2e%2e/x",
        "/%2e%2e%2fx",
        "/users/..%2F..%2Fx",
        "/users/%2e%2e%5cx",
        "/users/me?opt_fields=email",
        "users/me",
        "",
    ] {
        let status = executor
            .proxy_request(proxy("GET", path))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert!(
            violated_fields(&status).contains("path"),
            "{path}: {status:?}"
        );
    }
    for name in ["Authorization", "authorization", "Cookie", "Host"] {
        let mut request = proxy("GET", "/users/me");
        request.headers.push(pb::Header {
            name: name.into(),
            value: "Bearer stolen".into(),
        });
        let status = executor.proxy_request(request).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(violated_fields(&status).contains("headers"), "{status:?}");
    }
    for method in ["TRACE", "CONNECT", "get", ""] {
        let status = executor
            .proxy_request(proxy(method, "/users/me"))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status:?}");
        assert!(violated_fields(&status).contains("method"), "{status:?}");
    }
    let status = executor
        .proxy_request(pb::ProxyRequestRequest {
            connection_name: "asana-mcp".into(),
            ..proxy("GET", "/users/me")
        })
        .await
        .expect_err("refused");
    assert_refused(&status, Code::FailedPrecondition, "asana-mcp");

    assert_eq!(
        system.sandbox_requests(),
        before,
        "a refused request reached Asana: {}",
        system.sandbox_stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asana_rejections_are_tool_errors_naming_asanas_message() {
    let system = with_alice().await;
    let (acme, _) = acme_and_launch(&system).await;
    let asana = reqwest::Client::new();
    let api = format!("{}/api/1.0", system.sandbox_url);

    let response = system
        .execute(
            "asana-pat",
            "alice",
            "asana_task_get",
            json!({"task_gid": MISSING_TASK}),
        )
        .await
        .expect("the RPC succeeds");
    assert!(response.is_error, "{}", response.output_json);
    let answer = output(&response);
    assert_eq!(answer["error"]["status"], 404, "{answer}");
    let direct: Value = asana
        .get(format!("{api}/tasks/{MISSING_TASK}"))
        .bearer_auth(ALICE_PAT)
        .send()
        .await
        .expect("sandbox")
        .json()
        .await
        .expect("json");
    let message = direct["errors"][0]["message"].as_str().expect("a message");
    assert_eq!(answer["error"]["errors"][0]["message"], message, "{answer}");

    let bad = json!({"name": "Assigned to a stranger", "workspace": acme,
                     "assignee": "nobody@nowhere.test"});
    let before = system.sandbox_requests();
    let response = system
        .execute("asana-pat", "alice", "asana_task_create", bad.clone())
        .await
        .expect("the RPC succeeds");
    assert!(response.is_error, "{}", response.output_json);
    assert_eq!(system.sandbox_requests(), before + 1, "sent once, no retry");
    let answer = output(&response);
    let direct = asana
        .post(format!("{api}/tasks"))
        .bearer_auth(ALICE_PAT)
        .json(&json!({ "data": bad }))
        .send()
        .await
        .expect("sandbox");
    let status = direct.status().as_u16();
    assert!(
        (400..500).contains(&status),
        "the sandbox rejects it: {status}"
    );
    let direct: Value = direct.json().await.expect("json");
    assert_eq!(answer["error"]["status"], status, "{answer}");
    assert_eq!(
        answer["error"]["errors"][0]["message"], direct["errors"][0]["message"],
        "{answer}"
    );
    let tasks = call(
        &system,
        "asana_api_get_tasks",
        json!({"workspace": acme, "assignee": "me", "limit": 100}),
    )
    .await;
    assert!(
        !tasks.to_string().contains("Assigned to a stranger"),
        "no task was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_and_auto_paginate_within_the_bound() {
    let system = with_alice().await;
    let (_, launch) = acme_and_launch(&system).await;
    for n in 0..5 {
        call(
            &system,
            "asana_task_create",
            json!({"name": format!("Paged task {n}"), "projects": [launch]}),
        )
        .await;
    }
    let list = json!({"project_gid": launch, "limit": 2});

    let first = execute_with(
        &system,
        "asana_tasks_list_by_project",
        list.clone(),
        pb::ExecuteOptions::default(),
    )
    .await;
    assert!(!first.is_error, "{}", first.output_json);
    assert_eq!(output(&first).as_array().map(Vec::len), Some(2));
    assert_eq!(first.pages_fetched, 1);
    let first_page = output(&first);
    let next = first.next_page.expect("a next page");
    assert!(!next.offset.is_empty(), "{next:?}");
    assert!(
        next.path.contains("/projects/") && next.path.contains("offset="),
        "{next:?}"
    );

    let second = call(
        &system,
        "asana_tasks_list_by_project",
        json!({"project_gid": launch, "limit": 2, "offset": next.offset}),
    )
    .await;
    assert_eq!(second.as_array().map(Vec::len), Some(2));
    assert_ne!(second, first_page, "the offset moves on");

    let all = execute_with(
        &system,
        "asana_tasks_list_by_project",
        list.clone(),
        pb::ExecuteOptions {
            auto_paginate: true,
            max_pages: 100,
        },
    )
    .await;
    assert!(!all.is_error, "{}", all.output_json);
    let everything = output(&all);
    let gids: BTreeSet<&str> = everything
        .as_array()
        .expect("one list")
        .iter()
        .filter_map(|t| t["gid"].as_str())
        .collect();
    let total = everything.as_array().map_or(0, Vec::len);
    assert!(total >= 5, "{everything}");
    assert_eq!(gids.len(), total, "no task twice");
    for n in 0..5 {
        gid_where(&everything, "name", &format!("Paged task {n}"));
    }
    assert_eq!(all.pages_fetched as usize, total.div_ceil(2));
    assert!(all.pages_fetched > 1);
    assert!(all.next_page.is_none(), "every page was fetched");

    let bounded = execute_with(
        &system,
        "asana_tasks_list_by_project",
        list,
        pb::ExecuteOptions {
            auto_paginate: true,
            max_pages: 2,
        },
    )
    .await;
    assert!(!bounded.is_error, "{}", bounded.output_json);
    assert_eq!(bounded.pages_fetched, 2);
    let bounded_list = output(&bounded);
    assert_eq!(
        bounded_list.as_array().map(Vec::as_slice),
        everything.as_array().map(|all| &all[..4]),
        "the first two pages, in order"
    );
    let cut = bounded.next_page.expect("the bound cut it short");
    assert!(!cut.offset.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_in_order_packed_into_batches_of_ten() {
    let system = with_alice().await;
    let (acme, launch) = acme_and_launch(&system).await;
    let tasks = call(
        &system,
        "asana_tasks_list_by_project",
        json!({"project_gid": launch, "limit": 100, "opt_fields": ["name"]}),
    )
    .await;
    let venue = gid_where(&tasks, "name", "Book the venue");
    let item = |tool: &str, input: Value| pb::BatchItem {
        tool_name: tool.into(),
        input_json: input.to_string(),
        options: None,
    };
    let items = vec![
        item("asana_api_get_user", json!({"user_gid": "me"})),
        item(
            "asana_task_create",
            json!({"name": "Batch task one", "projects": [launch]}),
        ),
        item(
            "asana_task_get",
            json!({"task_gid": venue, "opt_fields": ["name"]}),
        ),
        item("asana_task_get", json!({"task_gid": MISSING_TASK})),
        item(
            "asana_task_create",
            json!({"name": 5, "projects": [launch]}),
        ),
        item(
            "asana_project_get",
            json!({"project_gid": launch, "opt_fields": ["name"]}),
        ),
        item(
            "asana_story_create",
            json!({"task_gid": venue, "text": "Batched note"}),
        ),
        item(
            "asana_task_update",
            json!({"task_gid": venue, "notes": "Updated in a batch"}),
        ),
        item(
            "asana_sections_list",
            json!({"project_gid": launch, "opt_fields": ["name"]}),
        ),
        item("asana_api_get_workspace", json!({"workspace_gid": acme})),
        item(
            "asana_task_create",
            json!({"name": "Batch task two", "workspace": acme}),
        ),
        item(
            "asana_tasks_list_by_project",
            json!({"project_gid": launch, "limit": 3}),
        ),
    ];
    assert_eq!(items.len(), 12);
    let before = system.sandbox_requests();
    let results = system
        .executor()
        .execute_batch(pb::ExecuteBatchRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            items,
        })
        .await
        .expect("the batch runs")
        .into_inner()
        .results;
    assert_eq!(results.len(), 12);
    let answers: Vec<Result<&pb::ExecuteToolResponse, &pb::BatchItemError>> = results
        .iter()
        .map(|r| match r.result.as_ref().expect("a result") {
            pb::batch_item_result::Result::Response(response) => Ok(response),
            pb::batch_item_result::Result::Error(error) => Err(error),
        })
        .collect();
    let ok = |index: usize| -> Value {
        let response = answers[index].unwrap_or_else(|e| panic!("item {index}: {e:?}"));
        assert!(!response.is_error, "item {index}: {}", response.output_json);
        output(response)
    };
    assert_eq!(ok(0)["email"], "alice@acme.test");
    assert_eq!(ok(1)["name"], "Batch task one");
    assert_eq!(ok(2)["name"], "Book the venue");
    let missing = answers[3].expect("a tool error, not an item error");
    assert!(missing.is_error, "{}", missing.output_json);
    assert_eq!(output(missing)["error"]["status"], 404);
    let bad = answers[4].expect_err("a refused input");
    assert_eq!(bad.code, Code::InvalidArgument as i32, "{bad:?}");
    assert!(bad.message.contains("name"), "{bad:?}");
    assert_eq!(ok(5)["name"], "Launch plan");
    assert_eq!(ok(6)["text"], "Batched note");
    assert_eq!(ok(7)["gid"], venue.as_str());
    gid_where(&ok(8), "name", "To do");
    assert_eq!(ok(9)["name"], "Acme Corp");
    assert_eq!(ok(10)["name"], "Batch task two");
    assert_eq!(ok(11).as_array().map(Vec::len), Some(3));

    // Eleven actions went out as /batch requests of ten and one, each action counted by the
    // sandbox as a request of its own: 11 actions + 2 batches. One by one it would be 11.
    assert_eq!(
        system.sandbox_requests() - before,
        13,
        "{}",
        system.sandbox_stats()
    );
    let read = call(
        &system,
        "asana_task_get",
        json!({"task_gid": venue, "opt_fields": ["notes"]}),
    )
    .await;
    assert_eq!(read["notes"], "Updated in a batch", "the write happened");
    let events = tool_events_eventually(&system, 3 + 12 + 1).await;
    let batched: Vec<&Value> = events
        .iter()
        .filter(|d| d.get("batch_id").is_some())
        .collect();
    assert_eq!(batched.len(), 12, "one event per item");
    let batch_ids: BTreeSet<&str> = batched
        .iter()
        .filter_map(|d| d["batch_id"].as_str())
        .collect();
    assert_eq!(batch_ids.len(), 1, "{batch_ids:?}");
    assert_eq!(
        batched.iter().filter(|d| d["packed"] == true).count(),
        11,
        "every REST item with a good input was packed"
    );

    let status = system
        .executor()
        .execute_batch(pb::ExecuteBatchRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            items: Vec::new(),
        })
        .await
        .expect_err("no items");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(violated_fields(&status).contains("items"));
    let before = system.sandbox_requests();
    let status = system
        .executor()
        .execute_batch(pb::ExecuteBatchRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            items: vec![item("asana_api_get_user", json!({"user_gid": "me"})); 51],
        })
        .await
        .expect_err("too many items");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(violated_fields(&status).contains("items"));
    assert_eq!(system.sandbox_requests(), before, "nothing reached Asana");
}

/// The details of the tenant's `tool.executed` events, once there are at least `count`.
async fn tool_events_eventually(system: &System, count: usize) -> Vec<Value> {
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async { events_of(system, "tool.executed").await.len() >= count },
        "{count} tool.executed events"
    );
    events_of(system, "tool.executed")
        .await
        .iter()
        .map(details)
        .collect()
}

/// `status` has `code` and a message that names `says` (a close name, the connection).
fn assert_refused(status: &tonic::Status, code: Code, says: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(says), "{}", status.message());
}

async fn events_of(system: &System, action: &str) -> Vec<audit_pb::Event> {
    system
        .audit_events(TENANT)
        .await
        .into_iter()
        .filter(|e| e.action == action)
        .collect()
}

fn details(event: &audit_pb::Event) -> Value {
    serde_json::from_str(&event.details_json).expect("details are JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_requests_return_asanas_answer_as_it_is() {
    let system = with_alice().await;
    let (acme, _) = acme_and_launch(&system).await;
    let mut executor = system.executor();

    let me = executor
        .proxy_request(proxy("GET", "/users/me"))
        .await
        .expect("proxied")
        .into_inner();
    assert_eq!(me.status_code, 200);
    let body: Value = serde_json::from_slice(&me.body).expect("JSON body");
    assert_eq!(body["data"]["email"], "alice@acme.test", "{body}");
    let names: BTreeSet<String> = me.headers.iter().map(|h| h.name.to_lowercase()).collect();
    assert!(names.contains("content-type"), "{names:?}");
    for hop in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "proxy-authenticate",
    ] {
        assert!(!names.contains(hop), "{hop} in {names:?}");
    }
    assert!(me.credential_version > 0);
    assert!(!me.execution_id.is_empty());

    let mut create = proxy("POST", "/tasks");
    create.body = serde_json::to_vec(&json!({"data": {"name": "Proxied task", "workspace": acme}}))
        .expect("body");
    create.query.push(pb::QueryParam {
        name: "opt_fields".into(),
        value: "name,workspace".into(),
    });
    let created = executor
        .proxy_request(create)
        .await
        .expect("proxied")
        .into_inner();
    assert_eq!(
        created.status_code,
        201,
        "{:?}",
        String::from_utf8_lossy(&created.body)
    );
    let task: Value = serde_json::from_slice(&created.body).expect("JSON body");
    assert_eq!(task["data"]["workspace"]["gid"], acme.as_str(), "{task}");
    let gid = task["data"]["gid"].as_str().expect("a gid");
    let read = call(&system, "asana_task_get", json!({"task_gid": gid})).await;
    assert_eq!(read["name"], "Proxied task");

    let missing = executor
        .proxy_request(proxy("GET", &format!("/tasks/{MISSING_TASK}")))
        .await
        .expect("Asana's 404 is an answer, not an RPC error")
        .into_inner();
    assert_eq!(missing.status_code, 404);
    let body: Value = serde_json::from_slice(&missing.body).expect("JSON body");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_request_needs_the_tool_permission_of_its_operation() {
    let system = with_alice().await;
    let (acme, _) = acme_and_launch(&system).await;
    let created = call(
        &system,
        "asana_task_create",
        json!({"workspace": acme, "name": "Keep me"}),
    )
    .await;
    let gid = created["gid"].as_str().expect("gid").to_owned();
    let mut read_only = system.executor_as(&system.read_only_agent);

    let read = read_only
        .proxy_request(proxy("GET", &format!("/tasks/{gid}")))
        .await
        .expect("asana_api_get_task is in its tool list")
        .into_inner();
    assert_eq!(read.status_code, 200);
    let delete = read_only
        .proxy_request(proxy("DELETE", &format!("/tasks/{gid}")))
        .await
        .expect_err("asana_api_delete_task is not");
    assert_refused(
        &delete,
        Code::PermissionDenied,
        "tool `asana_api_delete_task`",
    );
    let still_there = call(&system, "asana_task_get", json!({"task_gid": gid})).await;
    assert_eq!(still_there["name"], "Keep me", "nothing reached Asana");
    let executed = read_only
        .execute_tool(pb::ExecuteToolRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            tool_name: "asana_task_delete".into(),
            input_json: json!({"task_gid": gid}).to_string(),
            options: None,
        })
        .await
        .expect_err("the same caller cannot delete through ExecuteTool either");
    assert_eq!(executed.code(), Code::PermissionDenied);

    // A path that is no operation of the spec needs the explicit grant: `"*"` is not one.
    let unlisted = system
        .executor()
        .proxy_request(proxy("PATCH", &format!("/tasks/{gid}")))
        .await
        .expect_err("PATCH is no Asana operation");
    assert_refused(
        &unlisted,
        Code::PermissionDenied,
        "asana_proxy_unlisted_path",
    );
    let granted = read_only
        .proxy_request(proxy("GET", "/no/such/operation"))
        .await
        .expect("the read-only agent names asana_proxy_unlisted_path")
        .into_inner();
    assert_eq!(granted.status_code, 404, "Asana's own answer");

    let mut audited = Vec::new();
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async {
            audited = events_of(&system, "proxy.request").await;
            audited.len() >= 4
        },
        "every proxy request, refused or not, is audited"
    );
    let by_outcome = |outcome: audit_pb::Outcome| {
        audited
            .iter()
            .filter(|e| e.outcome == outcome as i32)
            .map(details)
            .collect::<Vec<_>>()
    };
    let denied = by_outcome(audit_pb::Outcome::Denied);
    assert!(
        denied.iter().any(|d| d["tool"] == "asana_api_delete_task"
            && d["operation"] == "DELETE /tasks/{task_gid}"),
        "{denied:?}"
    );
    assert!(
        denied
            .iter()
            .any(|d| d["tool"] == "asana_proxy_unlisted_path"),
        "{denied:?}"
    );
    let ran = by_outcome(audit_pb::Outcome::Success);
    assert!(
        ran.iter()
            .any(|d| d["tool"] == "asana_api_get_task" && d["operation"] == "GET /tasks/{task_gid}"),
        "{ran:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tools_filters_pages_and_describes_every_tool() {
    let system = with_alice().await;
    let all = list_all(&system, on_pat(None, "")).await;
    assert!(all.len() > 200, "{}", all.len());
    assert!(all.iter().all(|t| t.connection_name == "asana-pat"));
    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "no tool twice");
    assert!(names.is_sorted(), "ordered by name: {names:?}");
    let everywhere = list_all(
        &system,
        pb::ListToolsRequest {
            connection_name: None,
            ..on_pat(None, "")
        },
    )
    .await;
    let keys: Vec<(&str, &str)> = everywhere
        .iter()
        .map(|t| (t.connection_name.as_str(), t.name.as_str()))
        .collect();
    assert!(keys.is_sorted(), "ordered by (connection, name)");
    let on = |connection: &str| -> Vec<&str> {
        keys.iter()
            .filter(|(c, _)| *c == connection)
            .map(|(_, n)| *n)
            .collect()
    };
    assert_eq!(on("asana-pat"), names, "the filter keeps one connection");
    assert_eq!(
        on("asana"),
        names,
        "both REST connections offer the catalogue"
    );

    for tool in &all {
        assert!(!tool.description.trim().is_empty(), "{}", tool.name);
        let schema: Value = serde_json::from_str(&tool.input_schema_json)
            .unwrap_or_else(|e| panic!("{}: {e}", tool.name));
        assert_eq!(schema["type"], "object", "{}", tool.name);
    }
    let hints = |name: &str| {
        all.iter()
            .find(|t| t.name == name)
            .and_then(|t| t.hints)
            .unwrap_or_else(|| panic!("no hints for {name}"))
    };
    assert!(hints("asana_task_delete").destructive);
    assert!(!hints("asana_task_delete").read_only);
    assert!(hints("asana_task_get").read_only);
    assert!(!hints("asana_task_get").destructive);

    let curated = list_all(&system, on_pat(Some(pb::ToolSource::Curated), "")).await;
    let generated = list_all(&system, on_pat(Some(pb::ToolSource::Generated), "")).await;
    assert!(!curated.is_empty() && !generated.is_empty());
    assert!(
        curated
            .iter()
            .all(|t| t.source() == pb::ToolSource::Curated)
    );
    assert!(
        generated
            .iter()
            .all(|t| t.source() == pb::ToolSource::Generated && t.name.starts_with("asana_api_"))
    );
    let by_source: BTreeSet<&str> = curated
        .iter()
        .chain(&generated)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(by_source, unique, "the sources split the catalogue");

    let task_tools = list_all(&system, on_pat(None, "asana_task_")).await;
    assert!(task_tools.iter().all(|t| t.name.starts_with("asana_task_")));
    let task_names: BTreeSet<&str> = task_tools.iter().map(|t| t.name.as_str()).collect();
    let expected: BTreeSet<&str> = unique
        .iter()
        .copied()
        .filter(|n| n.starts_with("asana_task_"))
        .collect();
    assert_eq!(task_names, expected);
    assert!(task_names.contains("asana_task_create"));

    let paged = list_all(
        &system,
        pb::ListToolsRequest {
            page_size: 7,
            ..on_pat(None, "")
        },
    )
    .await;
    let paged_names: Vec<&str> = paged.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        paged_names, names,
        "the pages cover every tool once, in order"
    );
    let first = system
        .executor()
        .list_tools(pb::ListToolsRequest {
            page_size: 7,
            ..on_pat(None, "")
        })
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(first.tools.len(), 7);
    assert!(!first.next_page_token.is_empty());

    let status = system
        .executor()
        .list_tools(pb::ListToolsRequest {
            connection_name: Some("asana-pta".into()),
            ..on_pat(None, "")
        })
        .await
        .expect_err("unknown connection");
    assert_refused(&status, Code::NotFound, "asana-pat");
    let status = system
        .executor()
        .list_tools(pb::ListToolsRequest {
            page_token: "not-a-token".into(),
            ..on_pat(None, "")
        })
        .await
        .expect_err("bad page token");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_input_is_audited_by_its_fields_without_their_values() {
    let system = with_alice().await;
    let typed = "12ab-what-the-user-typed";
    let status = system
        .execute(
            "asana-pat",
            "alice",
            "asana_task_get",
            json!({"task_gid": typed}),
        )
        .await
        .expect_err("a gid is digits");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async { !events_of(&system, "tool.executed").await.is_empty() },
        "the refusal reached audit-log"
    );
    let events = events_of(&system, "tool.executed").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].outcome(), audit_pb::Outcome::Failure);
    let d = details(&events[0]);
    assert_eq!(d["error_reason"], "INVALID_INPUT", "{d}");
    assert_eq!(d["error"], "invalid input: input_json.task_gid", "{d}");
    assert!(
        !events[0].details_json.contains(typed),
        "the audit trail keeps inputs as digests only: {d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_proxy_request_and_batch_item_is_audited() {
    let system = with_alice().await;
    let response = system
        .execute(
            "asana-pat",
            "alice",
            "asana_task_get",
            json!({"task_gid": MISSING_TASK}),
        )
        .await
        .expect("executed");
    let tool_input = json!({"user_gid": "me"});
    let me = system
        .execute(
            "asana-pat",
            "alice",
            "asana_api_get_user",
            tool_input.clone(),
        )
        .await
        .expect("executed");
    let proxied = system
        .executor()
        .proxy_request(proxy("GET", "/users/me"))
        .await
        .expect("proxied")
        .into_inner();
    let batch = system
        .executor()
        .execute_batch(pb::ExecuteBatchRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            items: vec![
                pb::BatchItem {
                    tool_name: "asana_api_get_user".into(),
                    input_json: tool_input.to_string(),
                    options: None,
                },
                pb::BatchItem {
                    tool_name: "asana_workspaces_list".into(),
                    input_json: "{}".into(),
                    options: None,
                },
            ],
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(batch.results.len(), 2);

    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async {
            events_of(&system, "tool.executed").await.len() >= 4
                && !events_of(&system, "proxy.request").await.is_empty()
        },
        "the events reached audit-log"
    );
    let tools = events_of(&system, "tool.executed").await;
    let proxies = events_of(&system, "proxy.request").await;
    assert_eq!(tools.len(), 4, "one per call and per batch item: {tools:?}");
    assert_eq!(proxies.len(), 1, "{proxies:?}");

    let event_of = |id: &str| {
        tools
            .iter()
            .chain(&proxies)
            .find(|e| e.event_id == id)
            .unwrap_or_else(|| panic!("no event {id}"))
    };
    for (id, version, request_id) in [
        (
            &response.execution_id,
            response.credential_version,
            &response.asana_request_id,
        ),
        (
            &me.execution_id,
            me.credential_version,
            &me.asana_request_id,
        ),
    ] {
        let event = event_of(id);
        let credential = event.credential.as_ref().expect("the credential");
        assert!(!credential.account_id.is_empty());
        assert_eq!(credential.version, version);
        assert!(version > 0);
        let subject = event.subject.as_ref().expect("a subject");
        assert_eq!(subject.identifier, "alice");
        assert_eq!(subject.connection_name, "asana-pat");
        let d = details(event);
        assert_eq!(d["route"], "ROUTE_REST", "{d}");
        assert!(d["latency_ms"].is_number(), "{d}");
        assert!(
            d["input_digest"]
                .as_str()
                .is_some_and(|s| s.starts_with("sha256:") && s.len() == 7 + 64),
            "{d}"
        );
        // The sandbox sends no X-Request-Id; the event carries Asana's id exactly when the
        // response does.
        assert_eq!(
            d["asana_request_id"].as_str().unwrap_or_default(),
            request_id.as_str(),
            "{d}"
        );
    }
    let missing = details(event_of(&response.execution_id));
    assert_eq!(missing["tool"], "asana_task_get");
    assert_eq!(missing["status"], 404, "{missing}");
    assert_eq!(
        event_of(&response.execution_id).outcome(),
        audit_pb::Outcome::Failure
    );
    let read = details(event_of(&me.execution_id));
    assert_eq!(read["tool"], "asana_api_get_user");
    assert_eq!(read["status"], 200, "{read}");
    assert_eq!(
        event_of(&me.execution_id).outcome(),
        audit_pb::Outcome::Success
    );
    let me_digest = read["input_digest"].clone();

    let proxy_event = event_of(&proxied.execution_id);
    let d = details(proxy_event);
    assert_eq!(d["method"], "GET", "{d}");
    assert_eq!(d["path"], "/users/me", "{d}");
    assert_eq!(d["status"], 200, "{d}");
    assert_eq!(d["route"], "ROUTE_REST", "{d}");
    assert!(d["latency_ms"].is_number(), "{d}");
    assert!(
        d["input_digest"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:"))
    );
    let credential = proxy_event.credential.as_ref().expect("the credential");
    assert_eq!(credential.version, proxied.credential_version);

    let items: Vec<Value> = batch
        .results
        .iter()
        .map(|r| match r.result.as_ref().expect("a result") {
            pb::batch_item_result::Result::Response(response) => {
                assert!(!response.is_error, "{}", response.output_json);
                details(event_of(&response.execution_id))
            }
            pb::batch_item_result::Result::Error(error) => panic!("{error:?}"),
        })
        .collect();
    assert_eq!(items[0]["tool"], "asana_api_get_user");
    assert_eq!(
        items[0]["input_digest"], me_digest,
        "the same input, the same digest"
    );
    assert_eq!(items[1]["tool"], "asana_workspaces_list");
    assert_eq!(items[0]["batch_id"], items[1]["batch_id"]);
    assert!(items[0]["batch_id"].is_string());
    for item in &items {
        assert_eq!(item["route"], "ROUTE_REST", "{item}");
        assert_eq!(item["status"], 200, "{item}");
        assert_eq!(item["packed"], true, "{item}");
        assert!(item["latency_ms"].is_number(), "{item}");
        assert!(
            item["input_digest"]
                .as_str()
                .is_some_and(|s| s.starts_with("sha256:"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_kept_apart() {
    let system = System::start(Options::default()).await;
    system.connect_pat_in(TENANT, "shared", ALICE_PAT).await;
    system.connect_pat_in(OTHER_TENANT, "shared", BOB_PAT).await;
    let me_in = |tenant: &str| {
        let key = if tenant == OTHER_TENANT {
            &system.other_tenant_agent
        } else {
            &system.agent
        };
        let mut client = system.executor_as(key);
        let tenant = tenant.to_owned();
        async move {
            client
                .execute_tool(pb::ExecuteToolRequest {
                    tenant,
                    connection_name: "asana-pat".into(),
                    identifier: "shared".into(),
                    tool_name: "asana_api_get_user".into(),
                    input_json: json!({"user_gid": "me"}).to_string(),
                    options: None,
                })
                .await
                .map(|r| output(&r.into_inner()))
        }
    };
    assert_eq!(
        me_in(TENANT).await.expect("acme")["email"],
        "alice@acme.test"
    );
    assert_eq!(
        me_in(OTHER_TENANT).await.expect("globex")["email"],
        "bob@side.test"
    );

    system
        .connect_pat_in(OTHER_TENANT, "globex-only", BOB_PAT)
        .await;
    let before = system.sandbox_requests();
    let status = system
        .execute(
            "asana-pat",
            "globex-only",
            "asana_api_get_user",
            json!({"user_gid": "me"}),
        )
        .await
        .expect_err("acme has no account for globex's user");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status.get_details_error_info().map(|info| info.reason),
        Some("AUTH_REQUIRED".to_owned()),
        "{status:?}"
    );
    let status = system
        .executor_as(&system.other_tenant_agent)
        .execute_tool(pb::ExecuteToolRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "shared".into(),
            tool_name: "asana_api_get_user".into(),
            input_json: json!({"user_gid": "me"}).to_string(),
            options: None,
        })
        .await
        .expect_err("globex's key is not bound to acme");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = system
        .executor_as(&system.other_tenant_agent)
        .proxy_request(proxy("GET", "/users/me"))
        .await
        .expect_err("globex's key is not bound to acme");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(system.sandbox_requests(), before, "nothing reached Asana");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_leaks_into_answers_errors_logs_or_audit_events() {
    agentauth_testkit::logs::logs();
    let system = with_alice().await;
    system.connect_pat("bob", BOB_PAT).await;
    system.connect_oauth("asana", "carol").await;
    system.connect_oauth("asana-mcp", "alice").await;
    let mut seen = Vec::new();

    let mut record = |result: Result<String, tonic::Status>| match result {
        Ok(text) => seen.push(text),
        Err(status) => seen.push(format!(
            "{status:?} {} {}",
            status.message(),
            String::from_utf8_lossy(status.details())
        )),
    };
    for (connection, identifier) in [
        ("asana-pat", "alice"),
        ("asana-pat", "bob"),
        ("asana", "carol"),
    ] {
        for (tool, input) in [
            ("asana_api_get_user", json!({"user_gid": "me"})),
            ("asana_task_get", json!({"task_gid": MISSING_TASK})),
            ("asana_task_get", json!({"task_gid": "12ab"})),
            ("asana_task_craete", json!({})),
        ] {
            record(
                system
                    .execute(connection, identifier, tool, input)
                    .await
                    .map(|r| format!("{r:?}")),
            );
        }
        let mut executor = system.executor();
        for path in ["/users/me", "/tasks/999999999", "/../x"] {
            record(
                executor
                    .proxy_request(pb::ProxyRequestRequest {
                        connection_name: connection.into(),
                        identifier: identifier.into(),
                        ..proxy("GET", path)
                    })
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        format!("{r:?} {}", String::from_utf8_lossy(&r.body))
                    }),
            );
        }
        record(
            executor
                .execute_batch(pb::ExecuteBatchRequest {
                    tenant: TENANT.into(),
                    connection_name: connection.into(),
                    identifier: identifier.into(),
                    items: vec![
                        pb::BatchItem {
                            tool_name: "asana_api_get_user".into(),
                            input_json: r#"{"user_gid": "me"}"#.into(),
                            options: None,
                        },
                        pb::BatchItem {
                            tool_name: "asana_task_get".into(),
                            input_json: r#"{"task_gid": "1"}"#.into(),
                            options: None,
                        },
                    ],
                })
                .await
                .map(|r| format!("{r:?}")),
        );
    }
    for tool in ["get_me", "get_mee"] {
        record(
            system
                .execute("asana-mcp", "alice", tool, json!({}))
                .await
                .map(|r| format!("{r:?}")),
        );
    }
    record(
        system
            .execute(
                "asana-pat",
                "nobody",
                "asana_api_get_user",
                json!({"user_gid": "me"}),
            )
            .await
            .map(|r| format!("{r:?}")),
    );

    let secrets = [
        ALICE_PAT.to_owned(),
        BOB_PAT.to_owned(),
        system.access_token("asana", "carol").await,
        system.access_token("asana-mcp", "alice").await,
    ];
    assert!(
        seen.iter().any(|s| s.contains("alice@acme.test")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|s| s.contains("bob@side.test")), "{seen:?}");
    for text in &seen {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret in an answer: {text}"
            );
        }
    }
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async { events_of(&system, "tool.executed").await.len() > 3 * 6 },
        "the events reached audit-log"
    );
    let events = system.audit_events(TENANT).await;
    assert!(events.iter().any(|e| e.action == "proxy.request"));
    assert!(
        events
            .iter()
            .any(|e| e.action == "tool.executed" && details(e)["route"] == "ROUTE_MCP"),
        "the MCP route ran too"
    );
    for event in &events {
        let text = format!("{event:?}");
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret in an audit event: {text}"
            );
        }
    }
    agentauth_testkit::logs::assert_logs_hold_none_of(&secrets);
}

/// The user each replica's call acts as: `Ok(email)`, or the error's code and reason.
async fn who_on_each_replica(
    system: &System,
    connection: &str,
    identifier: &str,
) -> Vec<Result<String, (Code, String)>> {
    let mut answers = Vec::new();
    for replica in 0..system.executor_urls.len() {
        let tool = if connection == "asana-mcp" {
            "get_me"
        } else {
            "asana_api_get_user"
        };
        let input = if connection == "asana-mcp" {
            json!({})
        } else {
            json!({"user_gid": "me"})
        };
        let answer = system
            .execute_on(replica, connection, identifier, tool, input)
            .await;
        answers.push(match answer {
            Ok(response) => {
                let output: Value = serde_json::from_str(&response.output_json).expect("json");
                Ok(output["email"]
                    .as_str()
                    .or_else(|| output["structuredContent"]["email"].as_str())
                    .map_or_else(|| output.to_string(), str::to_owned))
            }
            Err(status) => Err((
                status.code(),
                status
                    .get_details_error_info()
                    .map(|i| i.reason)
                    .unwrap_or_default(),
            )),
        });
    }
    answers
}

/// Waits until every replica answers AUTH_REQUIRED for the account. Ten seconds is well
/// inside the 30 s after which a cache that no change reaches refetches its tokens: a replica
/// that refuses in time learnt of the change from token-vault's stream.
async fn auth_required_everywhere(system: &System, connection: &str, identifier: &str) {
    let required = Err((Code::FailedPrecondition, "AUTH_REQUIRED".to_owned()));
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async {
            who_on_each_replica(system, connection, identifier)
                .await
                .iter()
                .all(|answer| *answer == required)
        },
        "every replica refuses {connection}/{identifier} once it is revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_on_every_replica_at_once() {
    let system = System::start(Options {
        executor_replicas: 3,
        ..Options::default()
    })
    .await;
    system.connect_pat("alice", ALICE_PAT).await;
    system.connect_oauth("asana", "alice").await;
    system.connect_oauth("asana-mcp", "alice").await;
    let disconnect = |connection: &'static str| {
        let mut vault = system.vault();
        async move {
            vault
                .disconnect_account(vault_pb::DisconnectAccountRequest {
                    tenant: TENANT.into(),
                    connection_name: connection.into(),
                    identifier: "alice".into(),
                    reason: "left the company".into(),
                })
                .await
                .expect("disconnected")
                .into_inner()
        }
    };
    for connection in ["asana-pat", "asana", "asana-mcp"] {
        // Every replica caches the account's token (and, for MCP, opens a session).
        for answer in who_on_each_replica(&system, connection, "alice").await {
            assert_eq!(answer, Ok("alice@acme.test".to_owned()), "{connection}");
        }
        let token = system.access_token(connection, "alice").await;
        let disconnected = disconnect(connection).await;
        assert_eq!(
            disconnected.revoked_upstream,
            connection != "asana-pat",
            "{connection}: every OAuth grant is revoked at the provider, MCP's too"
        );
        auth_required_everywhere(&system, connection, "alice").await;
        if connection != "asana-pat" {
            assert_eq!(
                system.sandbox.tokens().info(&token)["active"],
                false,
                "{connection}: the grant is gone at the provider"
            );
        }
    }

    // A credential replaced by another is used at once, everywhere.
    system.connect_pat("bob", BOB_PAT).await;
    for answer in who_on_each_replica(&system, "asana-pat", "bob").await {
        assert_eq!(answer, Ok("bob@side.test".to_owned()));
    }
    system.replace_pat("bob", ALICE_PAT).await;
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(5),
        async {
            who_on_each_replica(&system, "asana-pat", "bob")
                .await
                .iter()
                .all(|answer| *answer == Ok("alice@acme.test".to_owned()))
        },
        "every replica uses the replacing PAT"
    );

    // Deleting the tenant stops every account of it on every replica.
    let deleted = system
        .vault()
        .delete_tenant(vault_pb::DeleteTenantRequest {
            tenant: TENANT.into(),
            confirm_tenant: TENANT.into(),
        })
        .await
        .expect("deleted");
    assert_eq!(deleted.into_inner().accounts_deleted, 4);
    auth_required_everywhere(&system, "asana-pat", "bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_connection_suggests_only_names_the_caller_may_use() {
    let system = System::start(Options::default()).await;
    let missing = system
        .executor_as(&system.narrow_agent)
        .execute_tool(pb::ExecuteToolRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pats".into(),
            identifier: "alice".into(),
            tool_name: "asana_task_get".into(),
            input_json: "{}".into(),
            options: None,
        })
        .await
        .expect_err("no such connection");
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().ends_with("did you mean `asana-pat`?"),
        "asana-mcp is close too, but this caller may not use it: {}",
        missing.message()
    );
}
