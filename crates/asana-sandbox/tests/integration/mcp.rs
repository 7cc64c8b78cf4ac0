//! The MCP V2 server end to end over HTTP: the handshake-era session model, the 2026-07-28
//! stateless form, paging, tools backed by the same world as REST, authentication, limits,
//! the control API's tool-list changes reaching open streams, and the official Python `mcp`
//! SDK as an independent client.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use asana_sandbox::control::HEADER;
use asana_sandbox::error::EXPIRED;
use asana_sandbox::seed::{ALICE_PAT, MCP_CLIENT_ID, REST_CLIENT_ID};
use asana_sandbox::{Config, LimitConfig, Sandbox, Surface};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

const KEY: &str = "mcp-test-control-key";
const LATEST: &str = "2025-11-25";
const MODERN: &str = "2026-07-28";
const BOTH: &str = "application/json, text/event-stream";
/// Every tool the sandbox starts with, in `tools/list` order.
const TOOLS: [&str; 14] = [
    "get_me",
    "search_objects",
    "get_task",
    "get_tasks",
    "get_my_tasks",
    "get_projects",
    "get_project",
    "create_tasks",
    "update_tasks",
    "delete_task",
    "add_comment",
    "create_project_status_update",
    "get_workspace_users",
    "create_task_preview",
];

/// A sandbox on an ephemeral port (stopped on drop), Alice's MCP-app token (grant 1) and
/// REST-app token (grant 2).
struct Harness {
    sandbox: Sandbox,
    base: String,
    url: String,
    http: reqwest::Client,
    alice: String,
    mcp_token: String,
    rest_token: String,
    /// The serving task, to check that it stops.
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: CancellationToken,
    _stop: DropGuard,
}

/// A handshake-era session and the token that opened it.
struct Session {
    id: String,
    version: String,
    token: String,
}

async fn start() -> Result<Harness> {
    start_with(|config| config).await
}

async fn start_with(configure: impl FnOnce(Config) -> Config) -> Result<Harness> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let sandbox = Sandbox::new(configure(Config {
        public_url: base.clone(),
        control_key: Some(KEY.into()),
        seed: true,
        mcp_page_size: 4,
        ..Config::default()
    }));
    let alice = sandbox
        .world()
        .all("user", |u| u["email"] == "alice@acme.test")
        .next()
        .and_then(|u| u["gid"].as_str())
        .context("the seed has Alice")?
        .to_owned();
    let (mcp_token, rest_token) = {
        let mut tokens = sandbox.tokens();
        let mcp = tokens.grant(MCP_CLIENT_ID, &alice, vec!["default".into()]);
        let rest = tokens.grant(REST_CLIENT_ID, &alice, vec!["default".into()]);
        (mcp.access_token, rest.access_token)
    };
    let stop = CancellationToken::new();
    let served = tokio::spawn(sandbox.clone().serve(listener, stop.clone()));
    Ok(Harness {
        served,
        stop: stop.clone(),
        sandbox,
        url: format!("{base}/v2/mcp"),
        base,
        http: reqwest::Client::new(),
        alice,
        mcp_token,
        rest_token,
        _stop: stop.drop_guard(),
    })
}

/// The one JSON-RPC message of a response, framed as JSON or as one SSE event.
async fn message(response: reqwest::Response) -> Result<Value> {
    let sse = content_type(&response).starts_with("text/event-stream");
    let text = response.text().await?;
    if !sse {
        return serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"));
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .with_context(|| format!("no SSE data line in {text:?}"))?;
    Ok(serde_json::from_str(data)?)
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Reads a streaming body until it contains `needle` (or fails after `within`).
async fn read_until(
    response: &mut reqwest::Response,
    needle: &str,
    within: Duration,
) -> Result<String> {
    let deadline = Instant::now() + within;
    let mut seen = String::new();
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, response.chunk()).await {
            Err(_) => bail!("no {needle:?} within {within:?}; saw {seen:?}"),
            Ok(chunk) => match chunk? {
                Some(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                None => bail!("the stream ended before {needle:?}; saw {seen:?}"),
            },
        }
    }
    Ok(seen)
}

impl Harness {
    fn post(&self, token: Option<&str>) -> reqwest::RequestBuilder {
        self.post_accepting(token, BOTH)
    }

    fn post_accepting(&self, token: Option<&str>, accept: &str) -> reqwest::RequestBuilder {
        let request = self.http.post(&self.url).header(ACCEPT, accept);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `POST` with the session's headers.
    fn in_session(&self, session: &Session) -> reqwest::RequestBuilder {
        self.in_session_accepting(session, BOTH)
    }

    fn in_session_accepting(&self, session: &Session, accept: &str) -> reqwest::RequestBuilder {
        self.post_accepting(Some(&session.token), accept)
            .header("mcp-session-id", &session.id)
            .header("mcp-protocol-version", &session.version)
    }

    async fn initialize_as(&self, token: &str, version: &str) -> Result<Session> {
        let response = self
            .post(Some(token))
            .json(
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": version, "capabilities": {},
                    "clientInfo": {"name": "mcp-test", "version": "1"},
                }}),
            )
            .send()
            .await?;
        ensure!(
            response.status() == StatusCode::OK,
            "initialize: {}",
            response.status()
        );
        let id = response
            .headers()
            .get("mcp-session-id")
            .context("initialize answered without Mcp-Session-Id")?
            .to_str()?
            .to_owned();
        let answer = message(response).await?;
        let version = answer["result"]["protocolVersion"]
            .as_str()
            .with_context(|| format!("no protocolVersion in {answer}"))?
            .to_owned();
        let session = Session {
            id,
            version,
            token: token.to_owned(),
        };
        let initialized = self
            .in_session(&session)
            .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await?;
        ensure!(initialized.status() == StatusCode::ACCEPTED);
        Ok(session)
    }

    async fn initialize(&self) -> Result<Session> {
        self.initialize_as(&self.mcp_token, LATEST).await
    }

    /// One request in `session`; the JSON-RPC answer.
    async fn rpc(&self, session: &Session, method: &str, params: Value) -> Result<Value> {
        let response = self
            .in_session(session)
            .json(&json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}))
            .send()
            .await?;
        ensure!(
            response.status() == StatusCode::OK,
            "{method}: {}",
            response.status()
        );
        message(response).await
    }

    /// A tool's `CallToolResult`.
    async fn call(&self, session: &Session, tool: &str, arguments: Value) -> Result<Value> {
        let answer = self
            .rpc(
                session,
                "tools/call",
                json!({"name": tool, "arguments": arguments}),
            )
            .await?;
        answer
            .get("result")
            .cloned()
            .with_context(|| format!("{tool}: no result in {answer}"))
    }

    /// A 2026-07-28 request: `_meta` envelope and routing headers.
    fn modern(&self, method: &str, mut params: Value) -> reqwest::RequestBuilder {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "mcp-test", "version": "1"},
        });
        let mut request = self
            .post(Some(&self.mcp_token))
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", method);
        if let Some(name) = params["name"].as_str() {
            request = request.header("mcp-name", name);
        }
        request.json(&json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params}))
    }

    fn control(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/_sandbox/mcp/{path}", self.base))
            .header(HEADER, KEY)
    }

    async fn tool_names(&self, session: &Session) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut cursor = Value::Null;
        loop {
            let answer = self
                .rpc(session, "tools/list", json!({"cursor": cursor}))
                .await?;
            for tool in answer["result"]["tools"].as_array().into_iter().flatten() {
                names.push(tool["name"].as_str().unwrap_or_default().to_owned());
            }
            cursor = answer["result"]["nextCursor"].clone();
            if cursor.is_null() {
                return Ok(names);
            }
        }
    }

    /// A fresh MCP-app token of the user with `email`.
    fn token_of(&self, email: &str) -> Result<String> {
        let gid = self
            .sandbox
            .world()
            .all("user", |u| u["email"] == email)
            .next()
            .and_then(|u| u["gid"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("no user {email}"))?;
        Ok(self
            .sandbox
            .tokens()
            .grant(MCP_CLIENT_ID, &gid, vec!["default".into()])
            .access_token)
    }

    fn project(&self, name: &str) -> Result<String> {
        self.sandbox
            .world()
            .all("project", |p| p["name"] == name)
            .next()
            .and_then(|p| p["gid"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("no project {name}"))
    }
}

#[tokio::test]
async fn initialize_negotiates_the_version_and_opens_a_session() -> Result<()> {
    let h = start().await?;
    for (offered, agreed) in [
        ("2025-11-25", "2025-11-25"),
        ("2025-06-18", "2025-06-18"),
        ("2025-03-26", "2025-03-26"),
        ("2024-11-05", "2024-11-05"),
        ("2099-01-01", LATEST),
        (MODERN, LATEST),
    ] {
        let session = h.initialize_as(&h.mcp_token, offered).await?;
        assert_eq!(session.version, agreed, "offered {offered}");
        assert!(session.id.len() >= 32 && session.id.bytes().all(|b| b.is_ascii_graphic()));
    }
    let response = h
        .post(Some(&h.mcp_token))
        .json(&json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"},
        }}))
        .send()
        .await?;
    let answer = message(response).await?;
    assert_eq!(answer["id"], "init");
    assert_eq!(
        answer["result"]["capabilities"]["tools"]["listChanged"],
        true
    );
    assert_eq!(answer["result"]["serverInfo"]["name"], "asana-sandbox");

    let session = h.initialize().await?;
    let pong = h.rpc(&session, "ping", json!({})).await?;
    assert_eq!(pong, json!({"jsonrpc": "2.0", "id": 7, "result": {}}));
    let unknown = h.rpc(&session, "resources/list", json!({})).await?;
    assert_eq!(unknown["error"]["code"], -32601);
    Ok(())
}

#[tokio::test]
async fn tools_list_is_paged_by_the_configured_size() -> Result<()> {
    let h = start().await?;
    let session = h.initialize().await?;
    let mut names = Vec::new();
    let mut pages = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let answer = h
            .rpc(&session, "tools/list", json!({"cursor": cursor}))
            .await?;
        let tools = answer["result"]["tools"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        pages.push(tools.len());
        for tool in &tools {
            let name = tool["name"].as_str().unwrap_or_default();
            names.push(name.to_owned());
            assert_eq!(tool["inputSchema"]["type"], "object", "{name}");
            assert!(
                tool["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{name}"
            );
            let hints = &tool["annotations"];
            for hint in [
                "readOnlyHint",
                "destructiveHint",
                "idempotentHint",
                "openWorldHint",
            ] {
                assert!(hints[hint].is_boolean(), "{name} lacks {hint}");
            }
            assert_eq!(
                hints["readOnlyHint"] == true,
                name.starts_with("get_") || name == "search_objects",
                "{name}"
            );
            assert_eq!(
                hints["destructiveHint"] == true,
                name == "delete_task",
                "{name}"
            );
        }
        cursor = answer["result"]["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(pages, [4, 4, 4, 2]);
    assert_eq!(names, TOOLS);

    let bad = h
        .rpc(&session, "tools/list", json!({"cursor": "not-ours"}))
        .await?;
    assert_eq!(bad["error"]["code"], -32602);
    Ok(())
}

#[tokio::test]
async fn mcp_writes_are_the_rest_api_s_objects() -> Result<()> {
    let h = start().await?;
    let session = h.initialize().await?;
    let me = h.call(&session, "get_me", json!({})).await?;
    assert_eq!(me["isError"], false);
    assert_eq!(me["structuredContent"]["gid"], h.alice.as_str());
    assert_eq!(me["structuredContent"]["email"], "alice@acme.test");
    let text: Value = serde_json::from_str(me["content"][0]["text"].as_str().unwrap_or_default())?;
    assert_eq!(
        text, me["structuredContent"],
        "the text block carries the same JSON"
    );

    let mut changes = h.sandbox.0.changed.subscribe();
    let seq_before = h.sandbox.world().last_seq();
    let project = h.project("Launch plan")?;
    let created = h
        .call(&session, "create_tasks", json!({"tasks": [
            {"name": "Made over MCP", "project_gid": project, "assignee": "me", "due_on": "2030-01-02", "notes": "hello"},
        ]}))
        .await?;
    assert_eq!(created["isError"], false, "{created}");
    let task = created["structuredContent"]["data"][0].clone();
    let gid = task["gid"]
        .as_str()
        .context("created task has a gid")?
        .to_owned();
    assert!(
        h.sandbox.world().last_seq() > seq_before,
        "the change is recorded"
    );
    let notified = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
    assert!(matches!(notified, Ok(Ok(_))), "listeners are told");

    let rest = h
        .http
        .get(format!("{}/api/1.0/tasks/{gid}", h.base))
        .bearer_auth(ALICE_PAT)
        .send()
        .await?;
    assert_eq!(rest.status(), StatusCode::OK);
    let seen: Value = rest.json().await?;
    assert_eq!(seen["data"]["name"], "Made over MCP");
    assert_eq!(seen["data"]["notes"], "hello");
    assert_eq!(seen["data"]["due_on"], "2030-01-02");
    assert_eq!(seen["data"]["assignee"]["gid"], h.alice.as_str());
    assert_eq!(seen["data"]["projects"][0]["gid"], project.as_str());

    let updated = h
        .call(
            &session,
            "update_tasks",
            json!({"tasks": [{"task_gid": gid, "completed": true}]}),
        )
        .await?;
    assert_eq!(updated["structuredContent"]["data"][0]["completed"], true);
    let read = h
        .call(
            &session,
            "get_task",
            json!({"task_gid": gid, "opt_fields": "name,completed"}),
        )
        .await?;
    assert_eq!(
        read["structuredContent"],
        json!({"gid": gid, "name": "Made over MCP", "completed": true})
    );

    let comment = h
        .call(
            &session,
            "add_comment",
            json!({"task_gid": gid, "text": "from MCP"}),
        )
        .await?;
    assert_eq!(comment["structuredContent"]["target"]["gid"], gid.as_str());
    let status = h
        .call(
            &session,
            "create_project_status_update",
            json!({"project_gid": project, "text": "fine", "status_type": "on_track"}),
        )
        .await?;
    let project_view = h
        .call(&session, "get_project", json!({"project_gid": project}))
        .await?;
    assert_eq!(
        project_view["structuredContent"]["current_status_update"]["gid"],
        status["structuredContent"]["gid"]
    );

    let preview = h
        .call(
            &session,
            "create_task_preview",
            json!({"name": "Maybe", "project_gid": project}),
        )
        .await?;
    assert_eq!(preview["structuredContent"]["committed"], false);
    let tasks = h
        .call(&session, "get_tasks", json!({"project_gid": project}))
        .await?;
    let listed: Vec<&str> = tasks["structuredContent"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        listed.contains(&"Made over MCP") && !listed.contains(&"Maybe"),
        "{listed:?}"
    );

    let deleted = h
        .call(&session, "delete_task", json!({"task_gid": gid}))
        .await?;
    assert_eq!(deleted["isError"], false);
    let gone = h
        .http
        .get(format!("{}/api/1.0/tasks/{gid}", h.base))
        .bearer_auth(ALICE_PAT)
        .send()
        .await?;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn tool_failures_are_results_and_protocol_failures_are_errors() -> Result<()> {
    let h = start().await?;
    let session = h.initialize().await?;
    let missing = h
        .call(&session, "get_task", json!({"task_gid": "999999"}))
        .await?;
    assert_eq!(missing["isError"], true);
    let text = missing["content"][0]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("Not a recognized ID") && text.contains("999999"),
        "{text}"
    );

    let bad_input = h.call(&session, "get_task", json!({})).await?;
    assert_eq!(bad_input["isError"], true);
    assert!(
        bad_input["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("task_gid")
    );
    let bad_date = h
        .call(&session, "create_tasks", json!({"tasks": [{"name": "x", "project_gid": h.project("Launch plan")?, "due_on": "tomorrow"}]}))
        .await?;
    assert_eq!(bad_date["isError"], true);

    // Bob is only in the Side Project workspace: Acme's projects do not exist for him.
    let bob = h
        .initialize_as(&h.token_of("bob@side.test")?, LATEST)
        .await?;
    let launch = h.project("Launch plan")?;
    let hidden = h
        .call(&bob, "get_project", json!({"project_gid": launch}))
        .await?;
    assert_eq!(hidden["isError"], true, "{hidden}");
    let mine = h
        .call(&session, "get_project", json!({"project_gid": launch}))
        .await?;
    assert_eq!(mine["structuredContent"]["name"], "Launch plan");

    let unknown_tool = h
        .rpc(
            &session,
            "tools/call",
            json!({"name": "no_such_tool", "arguments": {}}),
        )
        .await?;
    assert_eq!(unknown_tool["error"]["code"], -32602);
    assert!(
        unknown_tool["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no_such_tool")
    );
    let no_name = h
        .rpc(&session, "tools/call", json!({"arguments": {}}))
        .await?;
    assert_eq!(no_name["error"]["code"], -32602);
    let bad_arguments = h
        .rpc(
            &session,
            "tools/call",
            json!({"name": "get_me", "arguments": []}),
        )
        .await?;
    assert_eq!(bad_arguments["error"]["code"], -32602);

    let garbage = h
        .in_session(&session)
        .body("{")
        .header(CONTENT_TYPE, "application/json")
        .send()
        .await?;
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    assert_eq!(message(garbage).await?["error"]["code"], -32700);
    let batch = h
        .in_session(&session)
        .json(&json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]))
        .send()
        .await?;
    assert_eq!(batch.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn only_mcp_app_tokens_get_in() -> Result<()> {
    let h = start().await?;
    let metadata = format!(
        "resource_metadata=\"{}/.well-known/oauth-protected-resource/v2\"",
        h.base
    );
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let cases = [
        (None, None),
        (Some(h.rest_token.as_str()), Some("REST API app")),
        (Some(ALICE_PAT), Some("not issued by Asana OAuth")),
        (Some("sbx_at_made_up"), Some("invalid")),
    ];
    for (token, reason) in cases {
        let response = h.post(token).json(&init).send().await?;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .context("a 401 carries WWW-Authenticate")?
            .to_str()?
            .to_owned();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert!(challenge.contains(&metadata), "{challenge}");
        match reason {
            None => assert!(!challenge.contains("error="), "{challenge}"),
            Some(reason) => {
                assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
                assert!(challenge.contains(reason), "{challenge}");
            }
        }
    }
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = h
            .http
            .request(method.clone(), &h.url)
            .header(ACCEPT, "text/event-stream")
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method}");
    }
    // The challenge leads to the document that names the MCP server.
    let document: Value = h
        .http
        .get(format!(
            "{}/.well-known/oauth-protected-resource/v2",
            h.base
        ))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(document["resource"], h.url.as_str());
    Ok(())
}

#[tokio::test]
async fn an_expired_token_is_refused_with_the_expiry_message() -> Result<()> {
    let h = start().await?;
    let session = h.initialize().await?;
    // The harness's MCP grant is the sandbox's first.
    h.sandbox.tokens().expire_grant(1);
    let expired = h
        .sandbox
        .tokens()
        .authenticate(&h.mcp_token, Surface::Mcp)
        .err()
        .map(|e| e.message);
    assert_eq!(
        expired.as_deref(),
        Some(EXPIRED),
        "grant 1 is the MCP token's"
    );
    let response = h
        .in_session(&session)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .context("challenge")?
        .to_str()?
        .to_owned();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("has expired"), "{challenge}");
    let body: Value = response.json().await?;
    assert_eq!(body["error_description"], EXPIRED);
    Ok(())
}

#[tokio::test]
async fn sessions_are_checked_on_every_request() -> Result<()> {
    let h = start().await?;
    let session = h.initialize().await?;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});

    let no_session = h
        .post(Some(&h.mcp_token))
        .header("mcp-protocol-version", LATEST)
        .json(&list)
        .send()
        .await?;
    assert_eq!(no_session.status(), StatusCode::BAD_REQUEST);
    let unknown = h
        .in_session(&Session {
            id: "no-such-session".into(),
            version: LATEST.into(),
            token: h.mcp_token.clone(),
        })
        .json(&list)
        .send()
        .await?;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let without_version = h
        .post(Some(&h.mcp_token))
        .header("mcp-session-id", &session.id)
        .json(&list)
        .send()
        .await?;
    assert_eq!(without_version.status(), StatusCode::BAD_REQUEST);
    for version in ["2025-06-18", "1999-01-01"] {
        let wrong = h
            .in_session(&Session {
                id: session.id.clone(),
                version: version.into(),
                token: h.mcp_token.clone(),
            })
            .json(&list)
            .send()
            .await?;
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST, "{version}");
    }
    // Sessions older than 2025-06-18 predate the header.
    let old = h.initialize_as(&h.mcp_token, "2025-03-26").await?;
    let plain = h
        .post(Some(&h.mcp_token))
        .header("mcp-session-id", &old.id)
        .json(&list)
        .send()
        .await?;
    assert_eq!(plain.status(), StatusCode::OK);

    // Another user's token cannot use the session.
    let foreign = h
        .post(Some(&h.token_of("bob@side.test")?))
        .header("mcp-session-id", &session.id)
        .header("mcp-protocol-version", &session.version)
        .json(&list)
        .send()
        .await?;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);

    let ended = h
        .http
        .delete(&h.url)
        .bearer_auth(&h.mcp_token)
        .header("mcp-session-id", &session.id)
        .header("mcp-protocol-version", &session.version)
        .send()
        .await?;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let after = h.in_session(&session).json(&list).send().await?;
    assert_eq!(after.status(), StatusCode::NOT_FOUND);

    // The control API ends every session: clients must initialize again.
    let live = h.initialize().await?;
    let cleared: Value = h
        .control(reqwest::Method::DELETE, "sessions")
        .send()
        .await?
        .json()
        .await?;
    assert!(cleared["ended"].as_u64().is_some_and(|n| n >= 1));
    let gone = h.in_session(&live).json(&list).send().await?;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn responses_follow_the_accept_header() -> Result<()> {
    let h = start().await?;
    let session = h.initialize().await?;
    let ping = json!({"jsonrpc": "2.0", "id": 3, "method": "ping"});
    let cases = [
        (BOTH, Some("application/json")),
        ("text/event-stream", Some("text/event-stream")),
        (
            "application/json;q=0.4, text/event-stream",
            Some("text/event-stream"),
        ),
        ("application/json", Some("application/json")),
        ("text/html", None),
    ];
    for (accept, expected) in cases {
        let response = h
            .in_session_accepting(&session, accept)
            .json(&ping)
            .send()
            .await?;
        match expected {
            None => assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE, "{accept}"),
            Some(kind) => {
                assert_eq!(response.status(), StatusCode::OK, "{accept}");
                assert!(content_type(&response).starts_with(kind), "{accept}");
                assert_eq!(message(response).await?["result"], json!({}), "{accept}");
            }
        }
    }
    let sse_init = h
        .post_accepting(Some(&h.mcp_token), "text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        .send()
        .await?;
    assert!(sse_init.headers().contains_key("mcp-session-id"));
    assert!(content_type(&sse_init).starts_with("text/event-stream"));
    assert_eq!(
        message(sse_init).await?["result"]["protocolVersion"],
        LATEST
    );
    Ok(())
}

#[tokio::test]
async fn control_api_changes_reach_the_get_stream() -> Result<()> {
    let h = start().await?;
    let session = h.initialize().await?;
    let refused = h
        .http
        .get(format!("{}/_sandbox/mcp/tools", h.base))
        .send()
        .await?;
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "the control key is required"
    );

    let mut stream = h
        .http
        .get(&h.url)
        .bearer_auth(&h.mcp_token)
        .header(ACCEPT, "text/event-stream")
        .header("mcp-session-id", &session.id)
        .header("mcp-protocol-version", &session.version)
        .send()
        .await?;
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(content_type(&stream).starts_with("text/event-stream"));

    let added = h
        .control(reqwest::Method::POST, "tools")
        .json(&json!({
            "tool": {"name": "get_weather", "description": "Fixed weather", "inputSchema": {
                "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "annotations": {"readOnlyHint": true, "openWorldHint": true}},
            "result": {"content": [{"type": "text", "text": "sunny"}], "structuredContent": {"sky": "clear"}},
        }))
        .send()
        .await?;
    assert_eq!(added.status(), StatusCode::CREATED);
    read_until(
        &mut stream,
        "notifications/tools/list_changed",
        Duration::from_secs(10),
    )
    .await?;
    assert!(
        h.tool_names(&session)
            .await?
            .contains(&"get_weather".to_owned())
    );
    let fixed = h
        .call(&session, "get_weather", json!({"city": "Oslo"}))
        .await?;
    assert_eq!(fixed["structuredContent"], json!({"sky": "clear"}));
    let invalid = h.call(&session, "get_weather", json!({})).await?;
    assert_eq!(
        invalid["isError"], true,
        "arguments are checked against the schema"
    );
    let duplicate = h
        .control(reqwest::Method::POST, "tools")
        .json(&json!({"tool": {"name": "get_weather", "inputSchema": {"type": "object"}}}))
        .send()
        .await?;
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);

    let modified = h
        .control(reqwest::Method::PATCH, "tools/delete_task")
        .json(&json!({"description": "Now harmless, it says", "annotations": {"destructiveHint": false}}))
        .send()
        .await?;
    assert_eq!(modified.status(), StatusCode::OK);
    read_until(
        &mut stream,
        "notifications/tools/list_changed",
        Duration::from_secs(10),
    )
    .await?;
    let listed: Value = h
        .control(reqwest::Method::GET, "tools")
        .send()
        .await?
        .json()
        .await?;
    let delete_task = listed["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["definition"]["name"] == "delete_task")
        .context("delete_task listed")?;
    assert_eq!(
        delete_task["definition"]["annotations"]["destructiveHint"],
        false
    );
    assert_eq!(
        delete_task["definition"]["description"],
        "Now harmless, it says"
    );

    let removed = h
        .control(reqwest::Method::DELETE, "tools/get_me")
        .send()
        .await?;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    read_until(
        &mut stream,
        "notifications/tools/list_changed",
        Duration::from_secs(10),
    )
    .await?;
    assert!(!h.tool_names(&session).await?.contains(&"get_me".to_owned()));
    let gone = h
        .rpc(
            &session,
            "tools/call",
            json!({"name": "get_me", "arguments": {}}),
        )
        .await?;
    assert_eq!(gone["error"]["code"], -32602);

    // Ending the session ends its stream.
    h.http
        .delete(&h.url)
        .bearer_auth(&h.mcp_token)
        .header("mcp-session-id", &session.id)
        .header("mcp-protocol-version", &session.version)
        .send()
        .await?;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while stream.chunk().await?.is_some() {}
        anyhow::Ok(())
    })
    .await;
    assert!(
        matches!(end, Ok(Ok(()))),
        "the GET stream closes with its session"
    );
    Ok(())
}

#[tokio::test]
async fn the_2026_07_28_form_is_stateless_and_checked() -> Result<()> {
    let h = start().await?;
    let discover = h.modern("server/discover", json!({})).send().await?;
    assert_eq!(discover.status(), StatusCode::OK);
    assert!(!discover.headers().contains_key("mcp-session-id"));
    let discovered = message(discover).await?["result"].clone();
    assert_eq!(discovered["supportedVersions"], json!([MODERN]));
    assert_eq!(discovered["resultType"], "complete");
    assert_eq!(
        discovered["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "asana-sandbox"
    );

    let listed = message(h.modern("tools/list", json!({})).send().await?).await?["result"].clone();
    assert_eq!(listed["tools"].as_array().map(Vec::len), Some(4));
    assert!(listed["ttlMs"].is_u64() && listed["cacheScope"] == "private");
    let me = message(
        h.modern("tools/call", json!({"name": "get_me", "arguments": {}}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(me["result"]["structuredContent"]["gid"], h.alice.as_str());
    assert_eq!(me["result"]["resultType"], "complete");

    let mismatched = h
        .modern("tools/call", json!({"name": "get_me", "arguments": {}}))
        .header("mcp-name", "get_task")
        .send()
        .await?;
    assert_eq!(mismatched.status(), StatusCode::BAD_REQUEST);
    let problem = message(mismatched).await?;
    assert_eq!(problem["error"]["code"], -32020, "{problem}");
    let no_meta = h
        .post(Some(&h.mcp_token))
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/list")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await?;
    assert_eq!(no_meta.status(), StatusCode::BAD_REQUEST);
    assert_eq!(message(no_meta).await?["error"]["code"], -32602);
    let future = h
        .post(Some(&h.mcp_token))
        .header("mcp-protocol-version", "2099-01-01")
        .header("mcp-method", "tools/list")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2099-01-01",
            "io.modelcontextprotocol/clientCapabilities": {}}}}),
        )
        .send()
        .await?;
    assert_eq!(future.status(), StatusCode::BAD_REQUEST);
    let unsupported = message(future).await?;
    assert_eq!(unsupported["error"]["code"], -32022);
    assert!(
        unsupported["error"]["data"]["supported"]
            .as_array()
            .is_some_and(|s| s.contains(&json!(LATEST)))
    );
    let ping = h.modern("ping", json!({})).send().await?;
    assert_eq!(
        ping.status(),
        StatusCode::NOT_FOUND,
        "ping is gone in 2026-07-28"
    );

    let mut listen = h
        .modern(
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true}}),
        )
        .send()
        .await?;
    assert!(content_type(&listen).starts_with("text/event-stream"));
    read_until(
        &mut listen,
        "notifications/subscriptions/acknowledged",
        Duration::from_secs(10),
    )
    .await?;
    h.control(reqwest::Method::DELETE, "tools/get_me")
        .send()
        .await?;
    let seen = read_until(
        &mut listen,
        "notifications/tools/list_changed",
        Duration::from_secs(10),
    )
    .await?;
    assert!(
        seen.contains("\"io.modelcontextprotocol/subscriptionId\":9"),
        "{seen}"
    );

    // Switched off, the server is handshake-only: the modern probe gets a 400.
    let off = h
        .control(reqwest::Method::PUT, "settings")
        .json(&json!({"modern_protocol": false}))
        .send()
        .await?;
    assert_eq!(off.status(), StatusCode::OK);
    let refused = h.modern("server/discover", json!({})).send().await?;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn tool_calls_count_against_the_token_s_limits() -> Result<()> {
    let h = start_with(|config| Config {
        limits: LimitConfig {
            paid_per_minute: 3,
            free_per_minute: 3,
            ..LimitConfig::default()
        },
        ..config
    })
    .await?;
    let session = h.initialize().await?; // 1
    h.call(&session, "get_me", json!({})).await?; // 2
    h.rpc(&session, "tools/list", json!({})).await?; // 3
    let response = h
        .in_session(&session)
        .json(&json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "get_me", "arguments": {}}}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get(RETRY_AFTER)
        .context("Retry-After")?
        .to_str()?
        .parse()?;
    assert!((1..=60).contains(&retry_after));
    let stats = h.sandbox.0.limits.stats();
    let limited: u64 = stats["tokens"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, s)| s["rate_limited"].as_u64())
        .sum();
    assert_eq!(limited, 1);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The official Python SDK as an independent client.

/// Runs `tests/python/mcp_client.py` with the project venv's Python and returns what it printed.
async fn python_peer(args: &[&str]) -> Result<Value> {
    agentauth_testkit::python_json("crates/asana-sandbox/tests/python/mcp_client.py", args).await
}

fn names(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

#[tokio::test]
async fn python_sdk_lists_and_calls_tools_in_both_eras() -> Result<()> {
    let h = start().await?;
    for (mode, version) in [("auto", MODERN), ("legacy", LATEST)] {
        let seen = python_peer(&[
            "--url",
            &h.url,
            "--token",
            &h.mcp_token,
            "--mode",
            mode,
            "--call",
            "get_me",
        ])
        .await?;
        assert!(seen.get("error").is_none(), "{mode}: {seen}");
        assert_eq!(seen["protocol_version"], version, "{mode}");
        assert_eq!(seen["server_name"], "asana-sandbox", "{mode}");
        assert_eq!(names(&seen["tools"]), TOOLS, "{mode}");
        assert_eq!(seen["pages"], 4, "{mode}: pages of 4");
        assert_eq!(seen["call"]["is_error"], false, "{mode}");
        assert_eq!(
            seen["call"]["structured"]["gid"],
            h.alice.as_str(),
            "{mode}"
        );
    }
    let failed = python_peer(&[
        "--url",
        &h.url,
        "--token",
        &h.mcp_token,
        "--mode",
        "legacy",
        "--call",
        "get_task",
        "--arguments",
        r#"{"task_gid": "424242"}"#,
    ])
    .await?;
    assert_eq!(failed["call"]["is_error"], true, "{failed}");
    Ok(())
}

#[tokio::test]
async fn python_sdk_falls_back_to_initialize_on_a_handshake_only_server() -> Result<()> {
    let h = start().await?;
    let off = h
        .control(reqwest::Method::PUT, "settings")
        .json(&json!({"modern_protocol": false}))
        .send()
        .await?;
    assert_eq!(off.status(), StatusCode::OK);
    let seen = python_peer(&["--url", &h.url, "--token", &h.mcp_token, "--mode", "auto"]).await?;
    assert!(seen.get("error").is_none(), "{seen}");
    assert_eq!(seen["protocol_version"], LATEST, "{seen}");
    assert_eq!(names(&seen["tools"]), TOOLS);
    Ok(())
}

#[tokio::test]
async fn python_sdk_is_refused_with_a_rest_token() -> Result<()> {
    let h = start().await?;
    for mode in ["auto", "legacy"] {
        let seen =
            python_peer(&["--url", &h.url, "--token", &h.rest_token, "--mode", mode]).await?;
        assert!(seen.get("tools").is_none(), "{mode}: {seen}");
        assert_eq!(seen["error"]["class"], "MCPError", "{mode}: {seen}");
        let challenge = seen["challenge"].as_str().unwrap_or_default();
        assert!(
            challenge.contains("resource_metadata=") && challenge.contains("invalid_token"),
            "{mode}: the peer saw a 401 challenge: {seen}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn python_sdk_hears_list_changed_in_both_eras() -> Result<()> {
    let h = start().await?;
    for (mode, tool) in [("legacy", "added_for_legacy"), ("auto", "added_for_modern")] {
        let seen = python_peer(&[
            "--url",
            &h.url,
            "--token",
            &h.mcp_token,
            "--mode",
            mode,
            "--watch-tool",
            tool,
            "--control-key",
            KEY,
        ])
        .await?;
        assert!(seen.get("error").is_none(), "{mode}: {seen}");
        assert_eq!(seen["list_changed"], true, "{mode}: {seen}");
        assert!(
            names(&seen["tools_after"]).contains(&tool),
            "{mode}: {seen}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_open_streams() -> Result<()> {
    let h = start().await?;
    let session = h.initialize().await?;
    let mut get = h
        .http
        .get(&h.url)
        .bearer_auth(&h.mcp_token)
        .header(ACCEPT, "text/event-stream")
        .header("mcp-session-id", &session.id)
        .header("mcp-protocol-version", &session.version)
        .send()
        .await?;
    let mut listen = h
        .modern(
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true}}),
        )
        .send()
        .await?;
    read_until(
        &mut listen,
        "notifications/subscriptions/acknowledged",
        Duration::from_secs(10),
    )
    .await?;
    h.stop.cancel();
    // The listen stream ends gracefully: its request gets its result.
    let closing = read_until(
        &mut listen,
        "\"resultType\":\"complete\"",
        Duration::from_secs(10),
    )
    .await?;
    assert!(closing.contains("\"id\":9"), "{closing}");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while get.chunk().await?.is_some() {}
        anyhow::Ok(())
    })
    .await;
    assert!(matches!(ended, Ok(Ok(()))), "the GET stream ends");
    let served = tokio::time::timeout(Duration::from_secs(10), h.served).await;
    assert!(
        matches!(served, Ok(Ok(Ok(())))),
        "open streams do not hold up the server's shutdown"
    );
    Ok(())
}
