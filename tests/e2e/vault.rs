//! token-vault's connection registry, as other services read it.

use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_grpc::client::channel;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_testkit::connections::OAuthApp;
use agentauth_testkit::process::{ServiceProcess, run_to_exit};
use agentauth_testkit::{openbao, wait_serving};
use tonic::Code;

/// The connections of `agentauth dev`'s sandbox; the REST app's secret is `rest_secret`.
fn connections(rest_secret: &str) -> String {
    let sandbox = "http://127.0.0.1:50059";
    let api = format!("{sandbox}/api/1.0");
    let rest_app = OAuthApp {
        asana: sandbox,
        client_id: "sandbox-rest-app",
        client_secret: rest_secret,
        redirect_url: "http://127.0.0.1:50060/oauth/callback",
        revocable: true,
    };
    let mcp_app = OAuthApp {
        client_id: "sandbox-mcp-app",
        client_secret: "vault:secret/data/agentauth/apps/asana-mcp#client_secret",
        revocable: false,
        ..rest_app
    };
    rest_app.rest("asana", &api)
        + &mcp_app.mcp("asana-mcp", &format!("{sandbox}/v2/mcp"), None)
        + &agentauth_testkit::connections::pat("asana-pat", &api)
}

const REST_SECRET: &str = "vault:secret/data/agentauth/apps/asana#client_secret";

fn config(key: &ApiKey, connections: &str) -> String {
    format!(
        "{connections}\n[server]\nreadiness_interval = \"100ms\"\n\n[[server.callers]]\nname = \"agent\"\nkey_sha256 = \"{}\"\ntenants = [\"acme\"]\nconnections = [\"asana\", \"asana-mcp\"]\nroles = [\"operator\"]\n\n[vault]\naddr = \"{}\"\n{}",
        key.hash(),
        openbao::shared().addr(),
        super::binaries::oauth_listener()
    )
}

#[tokio::test]
async fn connections_are_read_by_exact_name_with_close_names_on_a_miss() {
    let key = ApiKey::generate();
    let process = ServiceProcess::start(
        "token-vault",
        &config(&key, &connections(REST_SECRET)),
        &[("VAULT_TOKEN", openbao::shared().token())],
    )
    .expect("start");
    wait_serving(process.address(), "", Duration::from_secs(30))
        .await
        .expect("serving");
    let mut client = TokenVaultClient::new(channel(&process.url(), Some(&key)).expect("channel"));

    let found = client
        .get_connection(pb::GetConnectionRequest {
            name: "asana".into(),
        })
        .await
        .expect("known connection")
        .into_inner()
        .connection
        .expect("connection");
    assert_eq!(found.kind, pb::ConnectionKind::Rest as i32);
    assert_eq!(found.token_url, "http://127.0.0.1:50059/-/oauth_token");
    assert!(
        !format!("{found:?}").contains("vault:"),
        "the secret's reference stays inside token-vault"
    );

    let miss = client
        .get_connection(pb::GetConnectionRequest {
            name: "Asana".into(),
        })
        .await
        .expect_err("names match exactly");
    assert_eq!(miss.code(), Code::NotFound);
    assert!(
        miss.message().contains("did you mean `asana`"),
        "{}",
        miss.message()
    );

    let denied = client
        .get_connection(pb::GetConnectionRequest {
            name: "asana-pat".into(),
        })
        .await
        .expect_err("not bound to it");
    assert_eq!(denied.code(), Code::PermissionDenied);

    let listed = client
        .list_connections(pb::ListConnectionsRequest::default())
        .await
        .expect("list")
        .into_inner();
    let names: Vec<String> = listed.connections.iter().map(|c| c.name.clone()).collect();
    assert_eq!(
        names,
        ["asana", "asana-mcp"],
        "only the connections this caller may use"
    );

    let mcp_only = client
        .list_connections(pb::ListConnectionsRequest {
            kind: Some(pb::ConnectionKind::Mcp as i32),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(mcp_only.connections.len(), 1);
    assert_eq!(
        mcp_only.connections[0].resource,
        "http://127.0.0.1:50059/v2/mcp"
    );

    let first = client
        .list_connections(pb::ListConnectionsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    let second = client
        .list_connections(pb::ListConnectionsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(second.connections[0].name, "asana-mcp");
    assert!(second.next_page_token.is_empty());
}

#[tokio::test]
async fn an_inline_client_secret_is_refused_at_start() {
    let key = ApiKey::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token-vault.toml");
    let inline = connections("plain-secret-value");
    std::fs::write(&path, config(&key, &inline)).expect("write");
    let (status, stderr) = run_to_exit(
        "token-vault",
        &["--config", path.to_str().expect("utf-8")],
        &[],
    )
    .await
    .expect("runs");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Vault reference"), "{stderr}");
    assert!(
        !stderr.contains("plain-secret-value"),
        "the rejected secret is not echoed: {stderr}"
    );
}
