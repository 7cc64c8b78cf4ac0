//! Virtual MCP servers: sessions minted over gRPC, served to the official Python `mcp` SDK
//! client (both protocol eras) as the user they were minted for, and nothing more.

use std::io::Write as _;
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_proto::executor::v1 as pb;
use asana_sandbox::seed::{ALICE_PAT, BOB_PAT};
use serde_json::{Value, json};
use tonic::Code;

use crate::system::{Options, System, TENANT};

const CLIENT: &str = "crates/asana-sandbox/tests/python/mcp_client.py";

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
roles = ["mcp"]

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
"#,
            hash = minter.hash(),
        ),
        executor_replicas: replicas.len(),
        virtual_mcp_toml: replicas,
        virtual_mcp_postgres: postgres,
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
    let mut args = vec!["--url", &session.url, "--token", token];
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

    for mode in ["auto", "legacy"] {
        let seen = client(
            &alice,
            &alice.bearer_token,
            &[
                "--mode",
                mode,
                "--call",
                "asana_api_get_user",
                "--arguments",
                "{}",
            ],
        )
        .await;
        assert!(seen.get("error").is_none(), "{mode}: {seen}");
        assert_eq!(
            seen["tools"],
            json!(["asana_user_me", "asana_api_get_user"]),
            "{mode}: only the whitelist is listed"
        );
        assert_eq!(seen["call"]["is_error"], false, "{mode}: {seen}");
        assert_eq!(
            seen["call"]["structured"]["email"], "alice@acme.test",
            "{mode}: the call acts as the session's user, its fixed input applied"
        );
    }
    let legacy = client(&alice, &alice.bearer_token, &["--mode", "legacy"]).await;
    assert_ne!(legacy["protocol_version"], "2026-07-28", "{legacy}");

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
    assert_eq!(minted.len(), 3, "{minted:?}");
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
