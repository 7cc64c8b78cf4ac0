//! connector-executor with its peers: OAuth tokens that expire or are revoked at the sandbox,
//! the sandbox's MCP server, an independent Python MCP server (the official `mcp` SDK) and an
//! independent Python gRPC client (`grpcio`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::system::{Options, System, TENANT};
use agentauth_proto::executor::v1 as pb;
use agentauth_testkit::{tools_dir, workspace_root};
use reqwest::Method;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt as _;

const REST_APP: &str = "test-rest-app";
const MCP_APP: &str = "test-mcp-app";
const ALICE: &str = "alice@acme.test";

fn python() -> PathBuf {
    let python = tools_dir().join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `make tools` (tests/python/requirements.txt)",
        python.display()
    );
    python
}

fn output(response: &pb::ExecuteToolResponse) -> Value {
    serde_json::from_str(&response.output_json).expect("output is JSON")
}

/// Asks the sandbox to expire (or revoke) the grants of `email` for the OAuth app `client_id`.
async fn grants(system: &System, action: &str, email: &str, client_id: &str) {
    let user = system.user_gid(email);
    system
        .sandbox_control(
            Method::POST,
            &format!("grants/{action}"),
            json!({"user": user, "client_id": client_id}),
        )
        .await;
}

fn assert_auth_required(status: &tonic::Status, connection: &str) {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "AUTH_REQUIRED", "{status:?}");
    assert_eq!(
        info.metadata.get("connection").map(String::as_str),
        Some(connection),
        "{info:?}"
    );
}

/// The Help link of an AUTH_REQUIRED status, if it has one.
fn help_link(status: &tonic::Status) -> Option<String> {
    status
        .get_details_help()
        .and_then(|help| help.links.first().map(|link| link.url.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_token_that_expires_between_calls_is_refreshed_transparently() {
    let system = System::start(Options::default()).await;
    system.connect_oauth("asana", "alice").await;
    let me = json!({"user_gid": "me"});
    let first = system
        .execute("asana", "alice", "asana_api_get_user", me.clone())
        .await
        .expect("first call");
    assert_eq!(output(&first)["email"], ALICE);
    assert_eq!(system.refreshes(REST_APP), 0);

    grants(&system, "expire", ALICE, REST_APP).await;
    let second = system
        .execute("asana", "alice", "asana_api_get_user", me)
        .await
        .expect("refreshed and sent again");
    assert!(!second.is_error, "{}", second.output_json);
    assert_eq!(output(&second)["email"], ALICE);
    assert!(
        second.credential_version > first.credential_version,
        "{} then {}",
        first.credential_version,
        second.credential_version
    );
    assert_eq!(system.refreshes(REST_APP), 1, "one refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_that_must_connect_gets_auth_required_with_what_fixes_it() {
    let system = System::start(Options::default()).await;
    let authorize = format!("{}/-/oauth_authorize", system.sandbox_url);
    let me = json!({"user_gid": "me"});

    system.connect_oauth("asana", "alice").await;
    system
        .execute("asana", "alice", "asana_api_get_user", me.clone())
        .await
        .expect("connected");
    grants(&system, "revoke", ALICE, REST_APP).await;
    let revoked = system
        .execute("asana", "alice", "asana_api_get_user", me.clone())
        .await
        .expect_err("the user deauthorized the app");
    assert_auth_required(&revoked, "asana");
    let link = help_link(&revoked).expect("a link to connect again");
    assert!(link.starts_with(&authorize), "{link}");

    let never = system
        .execute("asana", "carol", "asana_api_get_user", me.clone())
        .await
        .expect_err("never connected");
    assert_auth_required(&never, "asana");
    let link = help_link(&never).expect("a link to connect");
    assert!(link.starts_with(&authorize), "{link}");

    let pat = system
        .execute("asana-pat", "carol", "asana_api_get_user", me)
        .await
        .expect_err("no PAT stored");
    assert_auth_required(&pat, "asana-pat");
    let help = pat.get_details_help().expect("Help");
    assert_eq!(
        help.links[0].url, "https://developers.asana.com/docs/personal-access-token",
        "where to make a new PAT"
    );
    assert!(
        help.links[0].description.contains("PutCredential"),
        "and how to store it: {}",
        help.links[0].description
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_mcp_server_runs_its_tools_as_the_user() {
    let system = System::start(Options {
        executor_toml: format!(
            "[connections.asana-mcp.list_tools_as]\ntenant = \"{TENANT}\"\nidentifier = \"alice\"\n"
        ),
        ..Options::default()
    })
    .await;
    system.connect_oauth("asana-mcp", "alice").await;
    let alice = system.user_gid(ALICE);

    // ListTools before any call: the upstream list, through `list_tools_as`.
    let tools = system
        .executor()
        .list_tools(pb::ListToolsRequest {
            connection_name: Some("asana-mcp".into()),
            page_size: 500,
            ..pb::ListToolsRequest::default()
        })
        .await
        .expect("listed")
        .into_inner()
        .tools;
    let tool = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} in {tools:?}"))
    };
    for name in ["get_me", "get_task", "delete_task"] {
        let listed = tool(name);
        assert_eq!(listed.source(), pb::ToolSource::UpstreamMcp);
        assert_eq!(listed.connection_name, "asana-mcp");
        assert!(!listed.input_schema_json.is_empty());
    }
    let hints = |name: &str| tool(name).hints.expect("hints");
    assert!(hints("get_me").read_only);
    assert!(!hints("delete_task").read_only);
    assert!(hints("delete_task").destructive);

    let me = system
        .execute("asana-mcp", "alice", "get_me", json!({}))
        .await
        .expect("get_me");
    assert_eq!(me.route(), pb::Route::Mcp);
    assert!(!me.is_error, "{}", me.output_json);
    assert_eq!(output(&me)["structuredContent"]["gid"], alice.as_str());

    let missing = system
        .execute(
            "asana-mcp",
            "alice",
            "get_task",
            json!({"task_gid": "999999999"}),
        )
        .await
        .expect("the tool ran");
    assert!(missing.is_error, "{}", missing.output_json);

    let unknown = system
        .execute("asana-mcp", "alice", "get_mee", json!({}))
        .await
        .expect_err("no such tool");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(
        unknown.message().contains("`get_me`"),
        "{}",
        unknown.message()
    );

    let bad = system
        .execute("asana-mcp", "alice", "get_task", json!({"task_gid": 12}))
        .await
        .expect_err("task_gid is a string");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let fields: Vec<String> = bad
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["input_json.task_gid"], "{bad:?}");

    // The MCP access token expires: refreshed, and the call goes through.
    grants(&system, "expire", ALICE, MCP_APP).await;
    let again = system
        .execute("asana-mcp", "alice", "get_me", json!({}))
        .await
        .expect("refreshed transparently");
    assert!(!again.is_error, "{}", again.output_json);
    assert_eq!(output(&again)["structuredContent"]["gid"], alice.as_str());
    assert!(again.credential_version > me.credential_version);
    assert_eq!(system.refreshes(MCP_APP), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_mcp_tokens_are_renewed_before_use() {
    let system = System::start(Options {
        token_lifetime: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    system.connect_oauth("asana-mcp", "alice").await;
    let alice = system.user_gid(ALICE);
    let first = system
        .execute("asana-mcp", "alice", "get_me", json!({}))
        .await
        .expect("first call");
    let token = system.access_token("asana-mcp", "alice").await;
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async { system.sandbox.tokens().info(&token)["active"] == false },
        "the first token expires"
    );
    let second = system
        .execute("asana-mcp", "alice", "get_me", json!({}))
        .await
        .expect("the expired token is replaced");
    assert!(!second.is_error, "{}", second.output_json);
    assert_eq!(output(&second)["structuredContent"]["gid"], alice.as_str());
    assert!(second.credential_version > first.credential_version);
    assert!(system.refreshes(MCP_APP) >= 1);
}

/// `tests/python/mcp_peer_server.py` under the venv's Python, accepting the sandbox's tokens;
/// killed on drop.
pub(crate) struct PythonMcpPeer {
    pub url: String,
    _child: tokio::process::Child,
}

impl PythonMcpPeer {
    pub(crate) async fn start() -> Self {
        let address: SocketAddr = agentauth_testkit::free_port();
        let mut child = tokio::process::Command::new(python())
            .arg(workspace_root().join("tests/python/mcp_peer_server.py"))
            .arg(address.port().to_string())
            .arg("--accept-any-bearer")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the Python MCP peer starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(address).await.is_err() {
            assert!(
                child.try_wait().expect("status").is_none(),
                "the Python MCP peer exited"
            );
            assert!(
                Instant::now() < deadline,
                "the Python MCP peer is not listening"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            url: format!("http://{address}/mcp"),
            _child: child,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_python_mcp_server_is_called_in_one_reused_session() {
    let peer = PythonMcpPeer::start().await;
    let system = System::start(Options {
        peer_mcp_url: Some(peer.url.clone()),
        ..Options::default()
    })
    .await;
    system.connect_oauth("peer-mcp", "alice").await;

    let echo = system
        .execute("peer-mcp", "alice", "echo", json!({"text": "hello, peer"}))
        .await
        .expect("echo");
    assert_eq!(echo.route(), pb::Route::Mcp);
    assert!(!echo.is_error, "{}", echo.output_json);
    assert_eq!(
        output(&echo)["content"][0]["text"],
        "hello, peer",
        "{}",
        echo.output_json
    );

    let sum = system
        .execute("peer-mcp", "alice", "add", json!({"a": 2, "b": 3}))
        .await
        .expect("add");
    assert!(!sum.is_error, "{}", sum.output_json);
    assert_eq!(output(&sum)["structuredContent"], json!({"sum": 5}));

    let failed = system
        .execute("peer-mcp", "alice", "fail", json!({"reason": "on purpose"}))
        .await
        .expect("the tool ran");
    assert!(failed.is_error, "{}", failed.output_json);
    assert!(
        failed.output_json.contains("on purpose"),
        "{}",
        failed.output_json
    );

    let bad = system
        .execute("peer-mcp", "alice", "add", json!({"a": "two", "b": 3}))
        .await
        .expect_err("a is an integer");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

    let sessions = system
        .execute("peer-mcp", "alice", "sessions", json!({}))
        .await
        .expect("sessions");
    assert_eq!(
        output(&sessions)["structuredContent"]["result"],
        1,
        "every call reused one session: {}",
        sessions.output_json
    );
}

/// Runs `tests/python/execute_tool_peer.py` against the system's connector-executor.
async fn python_execute_tool(system: &System, tool: &str, input: &Value) -> Value {
    let output = tokio::process::Command::new(python())
        .arg(workspace_root().join("tests/python/execute_tool_peer.py"))
        .args(["--addr", system.executor_url.trim_start_matches("http://")])
        .arg("--proto-dir")
        .arg(workspace_root().join("proto"))
        .args(["--key", system.agent.expose()])
        .args(["--tenant", TENANT, "--connection", "asana-pat"])
        .args(["--identifier", "alice", "--tool", tool])
        .args(["--input", &input.to_string()])
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_python_grpc_client_executes_a_tool() {
    let system = System::start(Options::default()).await;
    system
        .connect_pat("alice", asana_sandbox::seed::ALICE_PAT)
        .await;

    let ran = python_execute_tool(&system, "asana_api_get_user", &json!({"user_gid": "me"})).await;
    assert_eq!(ran["code"], "OK", "{ran}");
    assert_eq!(ran["is_error"], false, "{ran}");
    assert_eq!(ran["route"], "ROUTE_REST", "{ran}");
    assert_eq!(ran["output"]["email"], ALICE, "{ran}");

    let unknown = python_execute_tool(&system, "asana_api_get_usr", &json!({})).await;
    assert_eq!(unknown["code"], "NOT_FOUND", "{unknown}");
    assert!(
        unknown["message"]
            .as_str()
            .is_some_and(|m| m.contains("asana_api_get_user")),
        "{unknown}"
    );
}
