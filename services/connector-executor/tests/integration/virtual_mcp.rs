//! Virtual MCP servers: sessions minted over gRPC, served to the official Python `mcp` SDK
//! client (both protocol eras) as the user they were minted for, and nothing more.

use std::io::Write as _;
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_proto::executor::v1 as pb;
use asana_sandbox::seed::{ALICE_PAT, BOB_PAT};
use serde_json::{Value, json};
use tonic::Code;

use crate::system::{OTHER_TENANT, Options, System, TENANT, Watch};

const CLIENT: &str = "crates/asana-sandbox/tests/python/mcp_client.py";
const TS_CLIENT: &str = "services/connector-executor/tests/js/mcp_client.mjs";

struct Setup {
    system: System,
    minter: ApiKey,
    _signing_keys: Vec<tempfile::NamedTempFile>,
}

/// A file holding a fresh signing key.
fn signing_key() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("key file");
    file.write_all(ApiKey::generate().expose().as_bytes())
        .expect("write the key");
    file
}

/// `[virtual_mcp]` signing with the first of `keys` (`(id, file)`) and verifying with all.
fn keys_toml(keys: &[(&str, &tempfile::NamedTempFile)]) -> String {
    let mut toml = String::from("revocation_refresh = \"200ms\"\n");
    for (id, file) in keys {
        toml.push_str(&format!(
            "\n[[virtual_mcp.signing_keys]]\nid = \"{id}\"\nkey_file = \"{}\"\n",
            file.path().display()
        ));
    }
    toml
}

/// A system with the virtual server `people`: `asana_user_me`, and `asana_api_get_user` with
/// its `user_gid` fixed to `me`; `platform` may mint its sessions.
async fn setup() -> Setup {
    let key = signing_key();
    let toml = keys_toml(&[("k1", &key)]);
    setup_with(vec![toml], false, vec![key]).await
}

/// [`setup`] with one replica per `[virtual_mcp]` of `replicas`, on SQLite or PostgreSQL.
async fn setup_with(
    replicas: Vec<String>,
    postgres: bool,
    signing_keys: Vec<tempfile::NamedTempFile>,
) -> Setup {
    agentauth_testkit::logs::logs();
    let minter = ApiKey::generate();
    let system = System::start(Options {
        executor_toml: format!(
            r#"
[[server.callers]]
name = "platform"
key_sha256 = "{hash}"
tenants = ["{TENANT}"]
connections = ["asana-pat"]
tools = ["asana_user_me", "asana_api_get_user"]
roles = ["mcp", "sessions"]

[[virtual_servers]]
name = "people"
minters = ["platform"]

[[virtual_servers.tools]]
connection = "asana-pat"
tool = "asana_user_me"

[[virtual_servers.tools]]
connection = "asana-pat"
tool = "asana_api_get_user"
fixed_inputs = {{ user_gid = "me" }}

[[virtual_servers]]
name = "mine"
minters = ["platform"]

[[virtual_servers.tools]]
connection = "asana-pat"
tool = "asana_user_me"
"#,
            hash = minter.hash(),
        ),
        executor_replicas: replicas.len(),
        virtual_mcp_toml: replicas,
        database_postgres: postgres,
        ..Options::default()
    })
    .await;
    system.connect_pat("alice", ALICE_PAT).await;
    system.connect_pat("bob", BOB_PAT).await;
    Setup {
        system,
        minter,
        _signing_keys: signing_keys,
    }
}

async fn mint(
    setup: &Setup,
    identifier: &str,
    ttl: Option<Duration>,
) -> Result<pb::MintMcpSessionResponse, tonic::Status> {
    setup
        .system
        .executor_as(&setup.minter)
        .mint_mcp_session(pb::MintMcpSessionRequest {
            tenant: TENANT.into(),
            identifier: identifier.into(),
            virtual_server: "people".into(),
            ttl: ttl.map(|ttl| ttl.try_into().expect("duration")),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn client(session: &pb::MintMcpSessionResponse, token: &str, extra: &[&str]) -> Value {
    client_at(&session.url, token, extra).await
}

/// The TypeScript SDK's client, as [`client_at`] runs the Python one.
async fn ts_client_at(url: &str, token: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--url", url, "--token", token];
    args.extend_from_slice(extra);
    agentauth_testkit::node_json(TS_CLIENT, &args)
        .await
        .expect("the TypeScript client ran")
}

/// The JSON a client saw its call answer with (a REST tool's result is its JSON as text).
fn output(seen: &Value) -> Value {
    seen["call"]["text"][0]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

/// An independent MCP client library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Python,
    TypeScript,
}

/// Each client in each protocol era.
const PEERS: [(Peer, &str); 4] = [
    (Peer::Python, "auto"),
    (Peer::Python, "legacy"),
    (Peer::TypeScript, "auto"),
    (Peer::TypeScript, "legacy"),
];

impl Peer {
    /// Connects in `mode`, lists, and calls `asana_api_get_user`, which must succeed.
    async fn get_user(self, mode: &str, url: &str, token: &str) -> Value {
        let args = [
            "--mode",
            mode,
            "--call",
            "asana_api_get_user",
            "--arguments",
            "{}",
        ];
        let seen = self.run(url, token, &args).await;
        assert!(seen.get("error").is_none(), "{self:?} {mode}: {seen}");
        seen
    }

    async fn run(self, url: &str, token: &str, extra: &[&str]) -> Value {
        match self {
            Self::Python => client_at(url, token, extra).await,
            Self::TypeScript => ts_client_at(url, token, extra).await,
        }
    }
}

async fn client_at(url: &str, token: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--url", url, "--token", token];
    args.extend_from_slice(extra);
    agentauth_testkit::python_json(CLIENT, &args)
        .await
        .expect("the Python client ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_session_lists_and_calls_only_its_tools_as_its_user_in_both_eras() {
    let setup = setup().await;
    let alice = mint(&setup, "alice", None).await.expect("minted");
    assert!(
        alice
            .url
            .ends_with(&format!("/mcp/people/{}", alice.session_id)),
        "{}",
        alice.url
    );
    assert_eq!(alice.tool_names, ["asana_user_me", "asana_api_get_user"]);
    assert!(alice.expires_at.is_some());

    // Both SDK clients, in both eras; the handshake era opens a protocol session, which the
    // TypeScript client ends with DELETE.
    for (peer, mode) in PEERS {
        let seen = peer.get_user(mode, &alice.url, &alice.bearer_token).await;
        assert_eq!(
            seen["tools"],
            json!(["asana_user_me", "asana_api_get_user"]),
            "{peer:?} {mode}: only the whitelist is listed"
        );
        assert_eq!(seen["server_name"], "agentauth", "{peer:?} {mode}: {seen}");
        assert_eq!(seen["call"]["is_error"], false, "{peer:?} {mode}: {seen}");
        assert_eq!(
            output(&seen)["email"],
            "alice@acme.test",
            "{peer:?} {mode}: the call acts as the session's user, its fixed input applied"
        );
        assert_eq!(
            seen["protocol_version"] == "2026-07-28",
            mode == "auto",
            "{peer:?} {mode}: {seen}"
        );
        if peer == Peer::TypeScript && mode == "legacy" {
            assert!(seen["protocol_session"].is_string(), "{seen}");
            assert_eq!(seen["delete_status"], 204, "{seen}");
        }
    }
    let legacy = client(&alice, &alice.bearer_token, &["--mode", "legacy"]).await;

    // A fixed input cannot be changed, and a tool outside the whitelist does not exist here.
    let changed = client(
        &alice,
        &alice.bearer_token,
        &[
            "--call",
            "asana_api_get_user",
            "--arguments",
            r#"{"user_gid": "12345"}"#,
        ],
    )
    .await;
    assert_eq!(changed["call"]["is_error"], true, "{changed}");
    let unlisted = client(
        &alice,
        &alice.bearer_token,
        &["--call", "asana_users_list", "--arguments", "{}"],
    )
    .await;
    assert_eq!(unlisted["error"]["code"], -32602, "{unlisted}");

    // Bob's bearer does not open alice's endpoint; neither does none, nor an expired one.
    let bob = mint(&setup, "bob", None).await.expect("minted");
    let ts_crossed = ts_client_at(&alice.url, &bob.bearer_token, &[]).await;
    assert_eq!(ts_crossed["status"], 401, "{ts_crossed}");
    assert!(ts_crossed.get("error").is_some(), "{ts_crossed}");
    let crossed = client(&alice, &bob.bearer_token, &[]).await;
    assert!(crossed.get("error").is_some(), "{crossed}");
    let challenge = crossed["challenge"].as_str().unwrap_or_default();
    assert!(
        challenge.contains("resource_metadata=") && challenge.contains("invalid_token"),
        "{crossed}"
    );
    let http = reqwest::Client::new();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    let anonymous = http
        .post(&alice.url)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .expect("answered");
    assert_eq!(anonymous.status(), 401);
    let metadata_url = anonymous
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('"').nth(1))
        .expect("a resource_metadata URL")
        .to_owned();
    let metadata: Value = http
        .get(&metadata_url)
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(metadata["resource"], alice.url.as_str());
    // Nothing a request's path brings is echoed into a challenge or a metadata document.
    let base = alice.url.split("/mcp/").next().expect("a base URL");
    let injected = http
        .post(format!(
            "{base}/mcp/people%22%2C%20x%3D%22/{}",
            alice.session_id
        ))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .expect("answered");
    assert_eq!(injected.status(), 401);
    assert_eq!(
        injected
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let undeclared = http
        .get(format!(
            "{base}/.well-known/oauth-protected-resource/mcp/nobody/{}",
            alice.session_id
        ))
        .send()
        .await
        .expect("answered");
    assert_eq!(undeclared.status(), 404);
    // A bearer opens only its own server's endpoint: alice's session id on `mine` is refused.
    let elsewhere = http
        .post(format!("{base}/mcp/mine/{}", alice.session_id))
        .bearer_auth(&alice.bearer_token)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .expect("answered");
    assert_eq!(
        elsewhere.status(),
        401,
        "a bearer of another virtual server"
    );
    // Host and Origin checks: only the public URL's host, and no browser origin unless one is
    // configured; a client that sends no Origin passes.
    for (name, value) in [("host", "evil.example"), ("origin", "https://evil.example")] {
        let refused = http
            .post(&alice.url)
            .bearer_auth(&alice.bearer_token)
            .header("accept", "application/json, text/event-stream")
            .header(name, value)
            .json(&initialize)
            .send()
            .await
            .expect("answered");
        assert_eq!(refused.status(), 403, "{name}: {value}");
    }

    // An account that must be connected first answers with a result an agent reads: the
    // reason and the link that fixes it.
    let carol = mint(&setup, "carol", None).await.expect("minted");
    let unconnected = client(&carol, &carol.bearer_token, &["--call", "asana_user_me"]).await;
    assert_eq!(unconnected["call"]["is_error"], true, "{unconnected}");
    let text = unconnected["call"]["text"].to_string();
    assert!(
        text.contains("AUTH_REQUIRED") && text.contains("http"),
        "the re-authorization link: {unconnected}"
    );
    // No Asana token or bearer in anything an MCP client was sent.
    for seen in [&legacy, &changed, &unlisted, &unconnected] {
        let sent = seen.to_string();
        for secret in [ALICE_PAT, BOB_PAT, alice.bearer_token.as_str()] {
            assert!(!sent.contains(secret), "a secret in an MCP answer: {sent}");
        }
    }

    // The scheme is case-insensitive.
    let lowercase = http
        .post(&alice.url)
        .header("authorization", format!("bearer {}", alice.bearer_token))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .expect("answered");
    assert_eq!(lowercase.status(), 200);

    // A body past the largest tool input (1 MiB by default) and the envelope's margin is
    // refused before it is read whole.
    let oversized = http
        .post(&alice.url)
        .bearer_auth(&alice.bearer_token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(vec![b' '; 1024 * 1024 + 64 * 1024 + 1])
        .send()
        .await
        .expect("answered");
    assert_eq!(oversized.status(), 413);
    let brief = mint(&setup, "alice", Some(Duration::from_secs(1)))
        .await
        .expect("minted");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let expired = http
        .post(&brief.url)
        .bearer_auth(&brief.bearer_token)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .expect("answered");
    assert_eq!(expired.status(), 401, "an expired bearer");

    // Minting and every call are audited, naming the session; no bearer anywhere.
    let events = setup.system.audit_events(TENANT).await;
    let minted: Vec<_> = events
        .iter()
        .filter(|e| e.action == "mcp.session_minted")
        .collect();
    assert_eq!(minted.len(), 4, "{minted:?}");
    let through_session: Vec<_> = events
        .iter()
        .filter(|e| {
            e.action == "tool.executed"
                && e.details_json
                    .contains(&format!("\"mcp_session\":\"{}\"", alice.session_id))
        })
        .collect();
    assert!(
        through_session
            .iter()
            .any(|e| e.details_json.contains("\"virtual_server\":\"people\"")),
        "{through_session:?}"
    );
    assert!(
        through_session.iter().any(|e| e.outcome
            == agentauth_proto::audit::v1::Outcome::Denied as i32
            && e.details_json.contains("asana_users_list")),
        "the call outside the whitelist is audited: {through_session:?}"
    );
    assert!(
        through_session.iter().any(|e| e.outcome
            == agentauth_proto::audit::v1::Outcome::Denied as i32
            && e.details_json.contains("fixed input")),
        "the changed fixed input is audited: {through_session:?}"
    );
    let everything = format!("{events:?}");
    for bearer in [&alice.bearer_token, &bob.bearer_token, &brief.bearer_token] {
        assert!(
            !everything.contains(bearer.as_str()),
            "a bearer in an audit row"
        );
    }
    agentauth_testkit::logs::assert_logs_hold_none_of(&[
        alice.bearer_token.as_str(),
        bob.bearer_token.as_str(),
        ALICE_PAT,
    ]);
}

#[tokio::test]
async fn only_a_minter_with_the_servers_tools_mints_and_ttls_are_bounded() {
    let setup = setup().await;
    let refused = setup
        .system
        .executor()
        .mint_mcp_session(pb::MintMcpSessionRequest {
            tenant: TENANT.into(),
            identifier: "alice".into(),
            virtual_server: "people".into(),
            ttl: None,
        })
        .await
        .expect_err("the agent has no mcp role");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let unknown = setup
        .system
        .executor_as(&setup.minter)
        .mint_mcp_session(pb::MintMcpSessionRequest {
            tenant: TENANT.into(),
            identifier: "alice".into(),
            virtual_server: "nobody".into(),
            ttl: None,
        })
        .await
        .expect_err("no such server");
    assert_eq!(
        unknown.code(),
        Code::PermissionDenied,
        "an unknown server is refused like one the caller may not use"
    );
    let blank = mint(&setup, "  ", None)
        .await
        .expect_err("a blank identifier");
    assert_eq!(blank.code(), Code::InvalidArgument);
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async {
            let events = setup.system.audit_events(TENANT).await;
            let refused = |outcome: agentauth_proto::audit::v1::Outcome| {
                events.iter().any(|e| {
                    e.action == "mcp.session_minted"
                        && e.outcome == outcome as i32
                        && e.actor.as_ref().is_some_and(|a| a.identifier == "platform")
                })
            };
            refused(agentauth_proto::audit::v1::Outcome::Denied)
                && refused(agentauth_proto::audit::v1::Outcome::Failure)
        },
        "refused mints are audited"
    );
    let zero = mint(&setup, "alice", Some(Duration::ZERO))
        .await
        .expect_err("a zero ttl");
    assert_eq!(zero.code(), Code::InvalidArgument);
    let long = mint(&setup, "alice", Some(Duration::from_secs(30 * 24 * 3600)))
        .await
        .expect("a long ttl is capped");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let expires = u64::try_from(long.expires_at.expect("expiry").seconds).expect("positive");
    assert!(
        expires <= now + 3600 + 5,
        "capped at the default max_ttl of 1 h"
    );
}

/// `url` with its `http://host:port` replaced by `base`: the same session, another listener.
fn at(base: &str, url: &str) -> String {
    let path = url.find("/mcp/").map_or(url, |start| &url[start..]);
    format!("{base}{path}")
}

/// A listener that sends each HTTP request it receives to the next of `upstreams` in turn,
/// as a load balancer without affinity would: the client's consecutive requests land on
/// different replicas. Answers are read whole (JSON responses) before they are passed on.
async fn round_robin(upstreams: Vec<String>) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let forward = move |request: axum::extract::Request| {
        let upstream = upstreams[next.fetch_add(1, Ordering::Relaxed) % upstreams.len()].clone();
        let http = http.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 8 << 20).await.expect("a body");
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut headers = parts.headers.clone();
            headers.remove(axum::http::header::HOST);
            let answer = http
                .request(parts.method, format!("{upstream}{path}"))
                .headers(headers)
                .body(body)
                .send()
                .await
                .expect("the replica answered");
            let mut response = axum::http::Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                if name != axum::http::header::TRANSFER_ENCODING
                    && name != axum::http::header::CONTENT_LENGTH
                {
                    response = response.header(name, value);
                }
            }
            let bytes = answer.bytes().await.expect("the answer's body");
            response
                .body(axum::body::Body::from(bytes))
                .expect("a response")
        }
    };
    let app = axum::Router::new().fallback(forward);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// MintMcpSession on the `replica`th executor.
async fn mint_on(
    setup: &Setup,
    replica: usize,
    identifier: &str,
) -> Result<pb::MintMcpSessionResponse, tonic::Status> {
    let channel =
        agentauth_grpc::client::channel(&setup.system.executor_urls[replica], Some(&setup.minter))
            .expect("channel");
    pb::connector_executor_client::ConnectorExecutorClient::new(channel)
        .mint_mcp_session(pb::MintMcpSessionRequest {
            tenant: TENANT.into(),
            identifier: identifier.into(),
            virtual_server: "people".into(),
            ttl: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A bare MCP request: its status, headers and JSON-RPC answer (if any).
async fn post(
    url: &str,
    bearer: &str,
    protocol_session: Option<&str>,
    message: &Value,
) -> (u16, axum::http::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .bearer_auth(bearer)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(message);
    if let Some(id) = protocol_session {
        request = request.header("mcp-session-id", id);
    }
    let response = request.send().await.expect("answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    // A JSON body, or the JSON-RPC message of an SSE answer's `data:` line.
    let body = serde_json::from_str(&text)
        .ok()
        .or_else(|| {
            text.lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .find_map(|data| serde_json::from_str(data.trim()).ok())
        })
        .unwrap_or(Value::Null);
    (status, headers, body)
}

/// The content type of an `initialize` answer from `base`.
async fn content_type(base: &str, session: &pb::MintMcpSessionResponse) -> Option<String> {
    let (_, headers) = open_at(base, session).await;
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
}

/// `initialize` of the 2025-11-25 handshake on `base`'s listener: its status and headers.
async fn open_at(base: &str, session: &pb::MintMcpSessionResponse) -> (u16, axum::http::HeaderMap) {
    let (status, headers, _) = post(
        &at(base, &session.url),
        &session.bearer_token,
        None,
        &initialize(),
    )
    .await;
    (status, headers)
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}})
}

fn list_tools() -> Value {
    json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replica_serves_a_session_and_every_replica_refuses_it_once_revoked() {
    // One replica answers with JSON bodies, the other with SSE streams.
    let key = signing_key();
    let toml = keys_toml(&[("k1", &key)]);
    let sse = format!("responses = \"sse\"\n{toml}");
    let setup = setup_with(vec![toml, sse], true, vec![key]).await;
    let replicas = setup.system.virtual_mcp_urls.clone();
    let alice = mint_on(&setup, 0, "alice").await.expect("minted");
    let bob = mint_on(&setup, 1, "bob").await.expect("minted");

    // Both clients through a balancer that alternates replicas, in both eras: each of their
    // requests lands on the other replica from the one before.
    let balanced = round_robin(replicas.clone()).await;
    for (peer, mode) in PEERS {
        let seen = peer
            .get_user(mode, &at(&balanced, &alice.url), &alice.bearer_token)
            .await;
        assert_eq!(
            output(&seen)["email"],
            "alice@acme.test",
            "{peer:?} {mode}: {seen}"
        );
    }

    // The 2025 session model by hand: initialize on one replica, list on the other, end the
    // protocol session on the first; it is gone on both, and the bearer opens a new one.
    let (status, headers) = open_at(&replicas[0], &alice).await;
    assert_eq!(status, 200);
    let protocol = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("an Mcp-Session-Id")
        .to_owned();
    let (status, _, listed) = post(
        &at(&replicas[1], &alice.url),
        &alice.bearer_token,
        Some(&protocol),
        &list_tools(),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        content_type(&replicas[0], &alice).await.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        content_type(&replicas[1], &alice).await.as_deref(),
        Some("text/event-stream"),
        "the second replica streams"
    );
    assert_eq!(
        listed["result"]["tools"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let forged = format!("{}x", protocol);
    let (status, _, _) = post(
        &at(&replicas[1], &alice.url),
        &alice.bearer_token,
        Some(&forged),
        &list_tools(),
    )
    .await;
    assert_eq!(status, 404, "an id not issued for this session");
    let (status, _, _) = post(
        &at(&replicas[1], &bob.url),
        &bob.bearer_token,
        Some(&protocol),
        &list_tools(),
    )
    .await;
    assert_eq!(status, 404, "alice's protocol session is not bob's");
    let http = reqwest::Client::new();
    let delete = |base: &str, id: Option<&str>| {
        let mut request = http
            .delete(at(base, &alice.url))
            .bearer_auth(&alice.bearer_token);
        if let Some(id) = id {
            request = request.header("mcp-session-id", id);
        }
        request.send()
    };
    assert_eq!(
        delete(&replicas[0], None).await.expect("answered").status(),
        400
    );
    let foreign = http
        .delete(at(&replicas[0], &alice.url))
        .bearer_auth(&alice.bearer_token)
        .header("mcp-session-id", &protocol)
        .header("host", "evil.example")
        .send()
        .await
        .expect("answered");
    assert_eq!(foreign.status(), 403, "a DELETE passes the Host check too");
    assert_eq!(
        delete(&replicas[0], Some(&protocol))
            .await
            .expect("answered")
            .status(),
        204
    );
    for replica in &replicas {
        agentauth_testkit::assert_eventually!(
            Duration::from_secs(5),
            async {
                post(
                    &at(replica, &alice.url),
                    &alice.bearer_token,
                    Some(&protocol),
                    &list_tools(),
                )
                .await
                .0 == 404
            },
            "an ended protocol session is 404 on every replica"
        );
    }
    let (status, headers) = open_at(&replicas[1], &alice).await;
    assert_eq!(status, 200, "the bearer opens a new protocol session");
    assert_ne!(
        headers.get("mcp-session-id").and_then(|v| v.to_str().ok()),
        Some(protocol.as_str())
    );

    // Listed, newest first, filtered and paged; never with a bearer.
    let sessions = |request: pb::ListMcpSessionsRequest| {
        let mut client = setup.system.executor_as(&setup.minter);
        async move {
            client
                .list_mcp_sessions(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let all = sessions(pb::ListMcpSessionsRequest {
        tenant: TENANT.into(),
        ..Default::default()
    })
    .await
    .expect("listed");
    let ids: Vec<_> = all.sessions.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, [bob.session_id.as_str(), alice.session_id.as_str()]);
    assert_eq!(all.sessions[1].identifier, "alice");
    assert_eq!(all.sessions[1].minted_by, "platform");
    assert_eq!(all.sessions[1].virtual_server, "people");
    assert!(all.sessions[1].revoked_at.is_none());
    let listed = format!("{all:?}");
    assert!(!listed.contains(&alice.bearer_token) && !listed.contains(&bob.bearer_token));
    let only_alice = sessions(pb::ListMcpSessionsRequest {
        tenant: TENANT.into(),
        identifier: "alice".into(),
        ..Default::default()
    })
    .await
    .expect("listed");
    assert_eq!(only_alice.sessions.len(), 1);
    let first = sessions(pb::ListMcpSessionsRequest {
        tenant: TENANT.into(),
        page_size: 1,
        ..Default::default()
    })
    .await
    .expect("listed");
    assert_eq!(first.sessions[0].session_id, bob.session_id);
    let second = sessions(pb::ListMcpSessionsRequest {
        tenant: TENANT.into(),
        page_size: 1,
        page_token: first.next_page_token.clone(),
        ..Default::default()
    })
    .await
    .expect("listed");
    assert_eq!(second.sessions[0].session_id, alice.session_id);
    assert!(second.next_page_token.is_empty());
    let bad_token = sessions(pb::ListMcpSessionsRequest {
        tenant: TENANT.into(),
        page_token: "not-a-token".into(),
        ..Default::default()
    })
    .await
    .expect_err("a bad page token");
    assert_eq!(bad_token.code(), Code::InvalidArgument);

    // Revoked through one replica: that one refuses at once, the other within its refresh.
    let revoke = |tenant: &str, session_id: &str, key: &ApiKey| {
        let mut client = pb::connector_executor_client::ConnectorExecutorClient::new(
            agentauth_grpc::client::channel(&setup.system.executor_urls[1], Some(key))
                .expect("channel"),
        );
        let request = pb::RevokeMcpSessionRequest {
            tenant: tenant.into(),
            session_id: session_id.into(),
        };
        async move {
            client
                .revoke_mcp_session(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let revoked = revoke(TENANT, &alice.session_id, &setup.minter)
        .await
        .expect("revoked");
    assert!(!revoked.already_revoked);
    let session = revoked.session.expect("the session");
    assert!(session.revoked_at.is_some());
    assert_eq!(session.revoked_by, "platform");
    let (status, headers) = open_at(&replicas[1], &alice).await;
    assert_eq!(status, 401, "the revoking replica refuses at once");
    assert!(
        headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("invalid_token") && c.contains("resource_metadata=")),
        "{headers:?}"
    );
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(5),
        async {
            post(
                &at(&replicas[0], &alice.url),
                &alice.bearer_token,
                None,
                &initialize(),
            )
            .await
            .0 == 401
        },
        "the other replica refuses once it has read the revocation"
    );
    let seen = client_at(&at(&balanced, &alice.url), &alice.bearer_token, &[]).await;
    assert!(
        seen.get("error").is_some(),
        "the Python client is refused: {seen}"
    );
    let (status, _, _) = post(
        &at(&replicas[0], &bob.url),
        &bob.bearer_token,
        None,
        &initialize(),
    )
    .await;
    assert_eq!(status, 200, "bob's session is untouched");
    let again = revoke(TENANT, &alice.session_id.to_uppercase(), &setup.minter)
        .await
        .expect("revoked again");
    assert!(again.already_revoked);
    let live = sessions(pb::ListMcpSessionsRequest {
        tenant: TENANT.into(),
        ..Default::default()
    })
    .await
    .expect("listed");
    assert_eq!(live.sessions.len(), 1, "a revoked session is not live");
    let ended = sessions(pb::ListMcpSessionsRequest {
        tenant: TENANT.into(),
        include_ended: true,
        ..Default::default()
    })
    .await
    .expect("listed");
    assert_eq!(ended.sessions.len(), 2);

    // Nothing crosses tenants: the operator of both tenants finds alice's session only in
    // hers; a caller of the other tenant only is refused; an unknown session is NOT_FOUND.
    let crossed = revoke(
        OTHER_TENANT,
        &bob.session_id,
        &setup.system.sessions_operator,
    )
    .await
    .expect_err("bob's session is not globex's");
    assert_eq!(crossed.code(), Code::NotFound);
    let operator_list = {
        let mut client = setup.system.executor_as(&setup.system.sessions_operator);
        client
            .list_mcp_sessions(pb::ListMcpSessionsRequest {
                tenant: OTHER_TENANT.into(),
                include_ended: true,
                ..Default::default()
            })
            .await
            .expect("listed")
            .into_inner()
    };
    assert!(operator_list.sessions.is_empty(), "{operator_list:?}");
    let unknown = revoke(
        TENANT,
        "0190a000-0000-7000-8000-000000000009",
        &setup.minter,
    )
    .await
    .expect_err("no such session");
    assert_eq!(unknown.code(), Code::NotFound);
    let other = revoke(OTHER_TENANT, &bob.session_id, &setup.minter)
        .await
        .expect_err("the minter is bound to acme");
    assert_eq!(other.code(), Code::PermissionDenied);

    // Revocations and ended protocol sessions are audited; no bearer anywhere.
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async {
            let events = setup.system.audit_events(TENANT).await;
            let count = |action: &str, outcome: agentauth_proto::audit::v1::Outcome| {
                events
                    .iter()
                    .filter(|e| e.action == action && e.outcome == outcome as i32)
                    .count()
            };
            count("mcp.session_revoked", agentauth_proto::audit::v1::Outcome::Success) == 2
                && count("mcp.session_revoked", agentauth_proto::audit::v1::Outcome::Failure) == 1
                // The Python client's legacy run ended its protocol session too.
                && count("mcp.protocol_session_ended", agentauth_proto::audit::v1::Outcome::Success) >= 2
        },
        "revocations and ended protocol sessions are audited"
    );
    let events = format!("{:?}", setup.system.audit_events(TENANT).await);
    assert!(!events.contains(&alice.bearer_token) && !events.contains(&bob.bearer_token));
    agentauth_testkit::logs::assert_logs_hold_none_of(&[
        alice.bearer_token.as_str(),
        bob.bearer_token.as_str(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_rotates_across_replicas_without_dropping_live_sessions() {
    // Three replicas at the three steps of a rotation: k1 signs; k2 is added to verify and
    // then signs, k1 still verifying; k1 is dropped.
    let (k1, k2) = (signing_key(), signing_key());
    let replicas = vec![
        keys_toml(&[("k1", &k1)]),
        keys_toml(&[("k2", &k2), ("k1", &k1)]),
        keys_toml(&[("k2", &k2)]),
    ];
    let setup = setup_with(replicas, false, vec![k1, k2]).await;
    let urls = setup.system.virtual_mcp_urls.clone();
    let before = mint_on(&setup, 0, "alice").await.expect("signed by k1");
    let after = mint_on(&setup, 1, "alice").await.expect("signed by k2");
    let status = |base: &str, session: &pb::MintMcpSessionResponse| {
        let url = at(base, &session.url);
        let bearer = session.bearer_token.clone();
        async move { post(&url, &bearer, None, &initialize()).await.0 }
    };
    assert_eq!(
        status(&urls[1], &before).await,
        200,
        "a live k1 session survives the rotation"
    );
    assert_eq!(status(&urls[1], &after).await, 200);
    assert_eq!(status(&urls[2], &after).await, 200);
    assert_eq!(
        status(&urls[2], &before).await,
        401,
        "once k1 is dropped its bearers are refused"
    );
    assert_eq!(
        status(&urls[0], &after).await,
        401,
        "a replica that does not know k2 yet refuses it: add a key everywhere before it signs"
    );
    let seen = client_at(
        &at(&urls[1], &before.url),
        &before.bearer_token,
        &["--call", "asana_user_me"],
    )
    .await;
    assert_eq!(seen["call"]["is_error"], false, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_mcp_connections_tools_are_served_without_previews_and_hidden_once_drifted() {
    agentauth_testkit::logs::logs();
    let minter = ApiKey::generate();
    let key = signing_key();
    let system = System::start(Options {
        executor_toml: format!(
            r#"
[[server.callers]]
name = "platform"
key_sha256 = "{hash}"
tenants = ["{TENANT}"]
connections = ["asana-mcp"]
roles = ["mcp"]

[[virtual_servers]]
name = "asana"
minters = ["platform"]

[[virtual_servers.tools]]
connection = "asana-mcp"
tool = "*"
upstream = true
"#,
            hash = minter.hash(),
        ),
        virtual_mcp_toml: vec![keys_toml(&[("k1", &key)])],
        watcher: true,
        ..Options::default()
    })
    .await;
    system.connect_oauth("asana-mcp", "probe").await;
    system.connect_oauth("asana-mcp", "alice").await;
    let _watcher = system
        .start_watcher(Watch {
            auto_approve_first: true,
            ..Watch::default()
        })
        .await;
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(20),
        async {
            system
                .execute("asana-mcp", "alice", "get_me", json!({}))
                .await
                .is_ok()
        },
        "the first listing approved"
    );
    let session = pb::connector_executor_client::ConnectorExecutorClient::new(
        agentauth_grpc::client::channel(&system.executor_url, Some(&minter)).expect("channel"),
    )
    .mint_mcp_session(pb::MintMcpSessionRequest {
        tenant: TENANT.into(),
        identifier: "alice".into(),
        virtual_server: "asana".into(),
        ttl: None,
    })
    .await
    .expect("minted")
    .into_inner();

    // Every upstream tool but the preview, with the server's own definitions; a call runs
    // on alice's upstream session.
    let seen = client(&session, &session.bearer_token, &["--call", "get_me"]).await;
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tools.contains(&"get_me") && tools.contains(&"get_task"),
        "{seen}"
    );
    assert!(
        !tools.contains(&"create_task_preview"),
        "previews are left out: {seen}"
    );
    assert_eq!(seen["call"]["is_error"], false, "{seen}");
    assert!(
        seen["call"].to_string().contains("alice"),
        "the call acts as alice: {seen}"
    );
    let (_, _, listed) = post(&session.url, &session.bearer_token, None, &list_tools()).await;
    let get_me = listed["result"]["tools"]
        .as_array()
        .and_then(|tools| tools.iter().find(|t| t["name"] == "get_me"))
        .expect("get_me listed")
        .clone();
    let upstream = system
        .sandbox_control(reqwest::Method::GET, "mcp/tools", Value::Null)
        .await["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["definition"].clone())
        .find(|d| d["name"] == "get_me")
        .expect("the sandbox's get_me");
    assert_eq!(get_me["inputSchema"], upstream["inputSchema"]);
    assert_eq!(get_me["description"], upstream["description"]);

    // get_me changes upstream: pinned, it is hidden from tools/list and refused on
    // tools/call (a JSON-RPC error and a DENIED audit event), until it is approved.
    system
        .sandbox_control(
            reqwest::Method::PATCH,
            "mcp/tools/get_me",
            json!({"description": "Who you are, changed."}),
        )
        .await;
    let call_get_me = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "get_me", "arguments": {}}});
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(20),
        async {
            let (_, _, listed) =
                post(&session.url, &session.bearer_token, None, &list_tools()).await;
            listed["result"]["tools"]
                .as_array()
                .is_some_and(|tools| !tools.iter().any(|t| t["name"] == "get_me"))
        },
        "the drifted tool is hidden"
    );
    let (_, _, refused) = post(&session.url, &session.bearer_token, None, &call_get_me).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    let (_, _, other) = post(
        &session.url,
        &session.bearer_token,
        None,
        &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "get_task", "arguments": {"task_gid": "1"}}}),
    )
    .await;
    assert!(
        other.get("result").is_some(),
        "other tools still run: {other}"
    );
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async {
            system.audit_events(TENANT).await.iter().any(|e| {
                e.action == "tool.executed"
                    && e.outcome == agentauth_proto::audit::v1::Outcome::Denied as i32
                    && e.details_json.contains("get_me")
                    && e.details_json.contains("\"virtual_server\":\"asana\"")
            })
        },
        "the refused call is audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_pages_a_large_whitelist_for_both_clients() {
    agentauth_testkit::logs::logs();
    let minter = ApiKey::generate();
    let key = signing_key();
    let catalogue = asana_tools::Catalogue::new().expect("the catalogue");
    let names: Vec<&str> = catalogue
        .tools()
        .iter()
        .map(|tool| tool.name.as_str())
        .filter(|name| name.starts_with("asana_api_"))
        .take(130)
        .collect();
    assert_eq!(names.len(), 130);
    let mut servers =
        String::from("[[virtual_servers]]\nname = \"wide\"\nminters = [\"platform\"]\n");
    for name in &names {
        servers.push_str(&format!(
            "\n[[virtual_servers.tools]]\nconnection = \"asana-pat\"\ntool = \"{name}\"\n"
        ));
    }
    let system = System::start(Options {
        executor_toml: format!(
            "[[server.callers]]\nname = \"platform\"\nkey_sha256 = \"{}\"\ntenants = [\"{TENANT}\"]\nroles = [\"mcp\"]\n\n{servers}",
            minter.hash()
        ),
        virtual_mcp_toml: vec![keys_toml(&[("k1", &key)])],
        ..Options::default()
    })
    .await;
    system.connect_pat("alice", ALICE_PAT).await;
    let session = pb::connector_executor_client::ConnectorExecutorClient::new(
        agentauth_grpc::client::channel(&system.executor_url, Some(&minter)).expect("channel"),
    )
    .mint_mcp_session(pb::MintMcpSessionRequest {
        tenant: TENANT.into(),
        identifier: "alice".into(),
        virtual_server: "wide".into(),
        ttl: None,
    })
    .await
    .expect("minted")
    .into_inner();
    let (_, _, first) = post(&session.url, &session.bearer_token, None, &list_tools()).await;
    assert_eq!(
        first["result"]["tools"].as_array().map(Vec::len),
        Some(100),
        "a page holds 100"
    );
    assert_eq!(
        first["result"]["nextCursor"], "100",
        "{}",
        first["result"]["nextCursor"]
    );
    let python = client(&session, &session.bearer_token, &[]).await;
    let ts = ts_client_at(&session.url, &session.bearer_token, &[]).await;
    let ts_legacy = ts_client_at(&session.url, &session.bearer_token, &["--mode", "legacy"]).await;
    for seen in [&python, &ts, &ts_legacy] {
        assert_eq!(
            (
                seen["pages"].clone(),
                seen["tools"].as_array().map(Vec::len)
            ),
            (json!(2), Some(130)),
            "{}",
            seen["mode"]
        );
        assert_eq!(
            seen["tools"],
            json!(names),
            "every whitelisted tool once, in order"
        );
    }
    let (_, _, bad) = post(
        &session.url,
        &session.bearer_token,
        None,
        &json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"cursor": "999"}}),
    )
    .await;
    assert_eq!(bad["error"]["code"], -32602, "an unknown cursor: {bad}");
}
