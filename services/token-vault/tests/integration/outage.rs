//! Vault going away and coming back: calls that need it get UNAVAILABLE, health says
//! NOT_SERVING, and service resumes when Vault returns.

use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_grpc::client::channel;
use agentauth_launch::Service as _;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_testkit::database::SqliteDatabase;
use agentauth_testkit::openbao::OpenBao;
use agentauth_testkit::{assert_eventually, free_port, health_status};
use asana_sandbox::seed::ALICE_PAT;
use asana_sandbox::{Config as SandboxConfig, Sandbox};
use figment::providers::{Format as _, Toml};
use token_vault::{Config, TokenVaultService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::ServingStatus;

fn put(key: &str) -> pb::PutCredentialRequest {
    pb::PutCredentialRequest {
        tenant: "acme".into(),
        connection_name: "asana-pat".into(),
        identifier: "alice".into(),
        token: key.into(),
        replace_user: false,
    }
}

fn get() -> pb::GetAccessTokenRequest {
    pb::GetAccessTokenRequest {
        tenant: "acme".into(),
        connection_name: "asana-pat".into(),
        identifier: "alice".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_down_is_unavailable_and_service_resumes_when_it_returns() {
    let shutdown = CancellationToken::new();
    let sandbox_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sandbox_url = format!("http://{}", sandbox_listener.local_addr().expect("address"));
    let sandbox = Sandbox::new(SandboxConfig {
        public_url: sandbox_url.clone(),
        ..SandboxConfig::default()
    });
    tokio::spawn(sandbox.serve(sandbox_listener, shutdown.clone()));

    let vault_address = free_port();
    let mut vault = OpenBao::start_on(vault_address).expect("private OpenBao");
    let db = SqliteDatabase::create().expect("database");
    let reader = ApiKey::generate();
    let config: Config = figment::Figment::from(Toml::string(&format!(
        r#"[server]
readiness_interval = "100ms"

[[server.callers]]
name = "connector-executor"
key_sha256 = "{}"
tenants = ["*"]
roles = ["executor", "onboarding"]

[vault]
addr = "{}"

[database]
url = "{}"
{}"#,
        reader.hash(),
        vault.addr(),
        db.url(),
        agentauth_testkit::connections::pat("asana-pat", &format!("{sandbox_url}/api/1.0")),
    )))
    .extract()
    .expect("valid config");
    let callback = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let service = TokenVaultService::with_vault_token(config, vault.token())
        .expect("service")
        .with_callback_listener(callback);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(service.run(listener, shutdown.clone()));
    agentauth_testkit::wait_serving(address, "", Duration::from_secs(20))
        .await
        .expect("serving");
    let mut client = TokenVaultClient::new(
        channel(&format!("http://{address}"), Some(&reader)).expect("channel"),
    );

    client
        .put_credential(put(ALICE_PAT))
        .await
        .expect("stored while Vault is up");
    let token = client
        .get_access_token(get())
        .await
        .expect("read")
        .into_inner();
    assert_eq!(token.access_token, ALICE_PAT);

    vault.stop();
    let down = client
        .get_access_token(get())
        .await
        .expect_err("Vault is down");
    assert_eq!(down.code(), Code::Unavailable, "{}", down.message());
    assert!(!down.message().contains(ALICE_PAT));
    assert_eventually!(
        Duration::from_secs(10),
        async { health_status(address, "").await.ok() == Some(ServingStatus::NotServing) },
        "health follows Vault down"
    );

    // A dev server comes back empty: the service resumes, and the user re-stores the token.
    let _vault = OpenBao::start_with(vault_address, vault.token()).expect("OpenBao again");
    agentauth_testkit::wait_serving(address, "", Duration::from_secs(20))
        .await
        .expect("serving again once Vault answers");
    client
        .put_credential(put(ALICE_PAT))
        .await
        .expect("stored again");
    let token = client
        .get_access_token(get())
        .await
        .expect("read again")
        .into_inner();
    assert_eq!(token.access_token, ALICE_PAT);
    shutdown.cancel();
}
