//! Webhook intake durability: connector-executor killed with SIGKILL while the sandbox is
//! delivering a stream of task changes loses none it accepted, and after a restart the
//! subscriber reads every change exactly once from the start of the stream.

use std::collections::HashMap;
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_grpc::client::channel;
use agentauth_proto::executor::v1 as executor;
use agentauth_proto::executor::v1::connector_executor_client::ConnectorExecutorClient;
use agentauth_proto::vault::v1 as vault;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_testkit::process::{ServiceProcess, binary};
use agentauth_testkit::{free_port, openbao, wait_serving};
use asana_sandbox::seed::ALICE_PAT;
use serde_json::{Value, json};

/// How many changes the sandbox delivers around the kill.
const CHANGES: usize = 60;

fn key_file(dir: &std::path::Path, name: &str, key: &ApiKey) -> String {
    let path = dir.join(format!("{name}.key"));
    std::fs::write(&path, key.expose()).expect("key file");
    path.display().to_string()
}

/// A call to the sandbox's REST API as alice.
async fn sandbox(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Value {
    let mut request = http.request(method, url).bearer_auth(ALICE_PAT);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the sandbox answers");
    assert!(response.status().is_success(), "{response:?}");
    response.json().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_executor_loses_no_delivery_it_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox_at = free_port();
    let _sandbox = tokio::process::Command::new(binary("asana-sandbox"))
        .args(["--listen", &sandbox_at.to_string()])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("asana-sandbox");
    let (agent, executor_to_vault) = (ApiKey::generate(), ApiKey::generate());
    let (vault_at, executor_at, intake_at) = (free_port(), free_port(), free_port());
    let token_vault = ServiceProcess::start_on(
        "token-vault",
        &format!(
            "[server]\nreadiness_interval = \"100ms\"\n\n[[server.callers]]\nname = \"connector-executor\"\nkey_sha256 = \"{}\"\ntenants = [\"*\"]\nroles = [\"executor\"]\n\n[[server.callers]]\nname = \"agent\"\nkey_sha256 = \"{}\"\ntenants = [\"acme\"]\nroles = [\"onboarding\"]\n\n[vault]\naddr = \"{}\"\npath_prefix = \"{}\"\n\n[oauth]\nhttp_listen = \"{}\"\n\n{}",
            executor_to_vault.hash(),
            agent.hash(),
            openbao::shared().addr(),
            openbao::fresh_prefix(),
            free_port(),
            agentauth_testkit::connections::pat(
                "asana-pat",
                &format!("http://{sandbox_at}/api/1.0")
            ),
        ),
        &[("VAULT_TOKEN", openbao::shared().token())],
        vault_at,
    )
    .expect("token-vault");
    let executor_config = format!(
        "[server]\nreadiness_interval = \"100ms\"\n\n[[server.callers]]\nname = \"agent\"\nkey_sha256 = \"{}\"\ntenants = [\"acme\"]\nroles = [\"executor\", \"events\", \"webhooks\"]\n\n[token_vault]\nurl = \"http://{vault_at}\"\napi_key_file = \"{}\"\n\n[database]\nurl = \"sqlite://{}?mode=rwc\"\n\n[webhooks]\nlisten = \"{intake_at}\"\npublic_url = \"http://{intake_at}\"\npoll_interval = \"200ms\"\n",
        agent.hash(),
        key_file(dir.path(), "executor-to-vault", &executor_to_vault),
        dir.path().join("executor.db").display(),
    );
    let connector_executor =
        ServiceProcess::start_on("connector-executor", &executor_config, &[], executor_at)
            .expect("connector-executor");
    for process in [&token_vault, &connector_executor] {
        wait_serving(process.address(), "", Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", process.log()));
    }
    TokenVaultClient::new(channel(&token_vault.url(), Some(&agent)).expect("channel"))
        .put_credential(vault::PutCredentialRequest {
            tenant: "acme".into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            token: ALICE_PAT.into(),
            replace_user: false,
        })
        .await
        .expect("alice's PAT");

    let http = reqwest::Client::new();
    let api = format!("http://{sandbox_at}/api/1.0");
    let me = sandbox(&http, reqwest::Method::GET, format!("{api}/users/me"), None).await;
    let workspace = me["data"]["workspaces"][0]["gid"]
        .as_str()
        .expect("workspace");
    let task = sandbox(
        &http,
        reqwest::Method::POST,
        format!("{api}/tasks"),
        Some(json!({"data": {"name": "Watched", "workspace": workspace}})),
    )
    .await;
    let task_gid = task["data"]["gid"].as_str().expect("task").to_owned();
    let mut client = ConnectorExecutorClient::new(
        channel(&connector_executor.url(), Some(&agent)).expect("channel"),
    );
    let subscription = client
        .create_event_subscription(executor::CreateEventSubscriptionRequest {
            tenant: "acme".into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            resource_gid: task_gid.clone(),
            filters_json: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", connector_executor.log()))
        .into_inner()
        .subscription
        .expect("subscription");
    assert_eq!(
        subscription.state(),
        executor::EventSubscriptionState::Active
    );

    // Changes keep coming while connector-executor is killed a third of the way through.
    for n in 0..CHANGES {
        if n == CHANGES / 3 {
            // Some were accepted, so the sandbox will not deliver them again: after the
            // restart they exist only if they were stored before their 200.
            agentauth_testkit::assert_eventually!(
                Duration::from_secs(30),
                async {
                    client
                        .list_event_subscriptions(executor::ListEventSubscriptionsRequest {
                            tenant: "acme".into(),
                            ..Default::default()
                        })
                        .await
                        .expect("listed")
                        .into_inner()
                        .subscriptions[0]
                        .events_received
                        >= 10
                },
                "deliveries are accepted before the kill"
            );
            let killed = tokio::process::Command::new("kill")
                .args(["-KILL", &connector_executor.pid().to_string()])
                .status()
                .await
                .expect("kill");
            assert!(killed.success());
        }
        sandbox(
            &http,
            reqwest::Method::PUT,
            format!("{api}/tasks/{task_gid}"),
            Some(json!({"data": {"notes": format!("change {n}")}})),
        )
        .await;
    }
    drop(connector_executor);
    let restarted =
        ServiceProcess::start_on("connector-executor", &executor_config, &[], executor_at)
            .expect("connector-executor again");
    wait_serving(restarted.address(), "", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", restarted.log()));

    // From the start of the stream: every change once (the sandbox redelivers what was not
    // accepted; what was accepted before the kill was stored before its 200).
    let mut client =
        ConnectorExecutorClient::new(channel(&restarted.url(), Some(&agent)).expect("channel"));
    let mut stream = client
        .subscribe_events(executor::SubscribeEventsRequest {
            tenant: "acme".into(),
            cursor: Some("ev1.0".into()),
            ..Default::default()
        })
        .await
        .expect("subscribe events")
        .into_inner();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < CHANGES {
            let message = stream.message().await.expect("the stream").expect("open");
            let change: Value = serde_json::from_str(&message.event.expect("event").change_json)
                .unwrap_or_default();
            if change["field"] == "notes" {
                *seen
                    .entry(change["new_value"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "{} of {CHANGES} changes arrived\n{}",
        seen.len(),
        restarted.log()
    );
    // Anything still in the stream would be a duplicate.
    while let Ok(Ok(Some(message))) =
        tokio::time::timeout(Duration::from_millis(1500), stream.message()).await
    {
        let change: Value =
            serde_json::from_str(&message.event.expect("event").change_json).unwrap_or_default();
        if change["field"] == "notes" {
            *seen
                .entry(change["new_value"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    for n in 0..CHANGES {
        assert_eq!(
            seen.get(&format!("change {n}")),
            Some(&1),
            "change {n}: {seen:?}"
        );
    }
}
