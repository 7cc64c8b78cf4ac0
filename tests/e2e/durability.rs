//! `[audit] durability = "sync"`: connector-executor killed with SIGKILL in the middle of a
//! stream of tool calls loses no audit event of a call it answered.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_grpc::client::channel;
use agentauth_proto::audit::v1 as audit;
use agentauth_proto::audit::v1::audit_log_client::AuditLogClient;
use agentauth_proto::executor::v1 as executor;
use agentauth_proto::executor::v1::connector_executor_client::ConnectorExecutorClient;
use agentauth_proto::vault::v1 as vault;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_testkit::process::{ServiceProcess, binary};
use agentauth_testkit::{free_port, openbao, wait_serving};

fn key_file(dir: &std::path::Path, name: &str, key: &ApiKey) -> String {
    let path = dir.join(format!("{name}.key"));
    std::fs::write(&path, key.expose()).expect("key file");
    path.display().to_string()
}

/// Every `tool.executed` event id of tenant `acme` in audit-log.
async fn audited(audit_log: &str, key: &ApiKey) -> HashSet<String> {
    let mut client = AuditLogClient::new(channel(audit_log, Some(key)).expect("channel"));
    let mut ids = HashSet::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .query(audit::QueryRequest {
                filter: Some(audit::EventFilter {
                    tenant: "acme".into(),
                    action: Some("tool.executed".into()),
                    ..Default::default()
                }),
                page_size: 1000,
                page_token,
            })
            .await
            .expect("query")
            .into_inner();
        ids.extend(page.events.into_iter().map(|e| e.event_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_executor_loses_no_audit_event_of_a_call_it_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox_at = free_port();
    let _sandbox = tokio::process::Command::new(binary("asana-sandbox"))
        .args(["--listen", &sandbox_at.to_string()])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("asana-sandbox");
    let (agent, reader, executor_to_vault, executor_to_audit, vault_to_audit) = (
        ApiKey::generate(),
        ApiKey::generate(),
        ApiKey::generate(),
        ApiKey::generate(),
        ApiKey::generate(),
    );
    let (vault_at, executor_at, audit_at) = (free_port(), free_port(), free_port());
    let writer = |name: &str, key: &ApiKey| {
        format!(
            "\n[[server.callers]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\ntenants = [\"*\"]\nroles = [\"writer\"]\n",
            key.hash()
        )
    };
    let audit_log = ServiceProcess::start_on(
        "audit-log",
        &format!(
            "[server]\nreadiness_interval = \"100ms\"\n{}{}\n[[server.callers]]\nname = \"compliance\"\nkey_sha256 = \"{}\"\ntenants = [\"acme\"]\nroles = [\"reader\"]\n",
            writer("token-vault", &vault_to_audit),
            writer("connector-executor", &executor_to_audit),
            reader.hash()
        ),
        &[],
        audit_at,
    )
    .expect("audit-log");
    let token_vault = ServiceProcess::start_on(
        "token-vault",
        &format!(
            r#"[server]
readiness_interval = "100ms"

[[server.callers]]
name = "connector-executor"
key_sha256 = "{executor}"
tenants = ["*"]
roles = ["executor"]

[[server.callers]]
name = "agent"
key_sha256 = "{agent}"
tenants = ["acme"]
roles = ["onboarding"]

[vault]
addr = "{vault}"
path_prefix = "{prefix}"

[oauth]
http_listen = "{callback}"

[audit]
url = "http://{audit_at}"
api_key_file = "{audit_key}"
spool_dir = "{spool}"

{connections}"#,
            connections = agentauth_testkit::connections::pat(
                "asana-pat",
                &format!("http://{sandbox_at}/api/1.0")
            ),
            executor = executor_to_vault.hash(),
            agent = agent.hash(),
            vault = openbao::shared().addr(),
            prefix = openbao::fresh_prefix(),
            callback = free_port(),
            audit_key = key_file(dir.path(), "vault-to-audit", &vault_to_audit),
            spool = dir.path().join("vault-spool").display(),
        ),
        &[("VAULT_TOKEN", openbao::shared().token())],
        vault_at,
    )
    .expect("token-vault");
    // Events wait long for their batch, so a kill finds many not yet delivered.
    let executor_config = format!(
        "[server]\nreadiness_interval = \"100ms\"\n\n[[server.callers]]\nname = \"agent\"\nkey_sha256 = \"{}\"\ntenants = [\"acme\"]\nroles = [\"executor\"]\n\n[token_vault]\nurl = \"http://{vault_at}\"\napi_key_file = \"{}\"\n\n[audit]\nurl = \"http://{audit_at}\"\napi_key_file = \"{}\"\nspool_dir = \"{}\"\ndurability = \"sync\"\nflush_interval = \"5s\"\nbatch_size = 1000\n",
        agent.hash(),
        key_file(dir.path(), "executor-to-vault", &executor_to_vault),
        key_file(dir.path(), "executor-to-audit", &executor_to_audit),
        dir.path().join("executor-spool").display(),
    );
    let connector_executor =
        ServiceProcess::start_on("connector-executor", &executor_config, &[], executor_at)
            .expect("connector-executor");
    for process in [&audit_log, &token_vault, &connector_executor] {
        wait_serving(process.address(), "", Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", process.log()));
    }
    TokenVaultClient::new(channel(&token_vault.url(), Some(&agent)).expect("channel"))
        .put_credential(vault::PutCredentialRequest {
            tenant: "acme".into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            token: asana_sandbox::seed::ALICE_PAT.into(),
            replace_user: false,
        })
        .await
        .expect("alice's PAT");

    // Calls from several clients until well after the kill; every answered call's id is kept.
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let url = connector_executor.url();
    let mut callers = Vec::new();
    for _ in 0..6 {
        let (answered, url, agent) = (answered.clone(), url.clone(), agent.clone());
        callers.push(tokio::spawn(async move {
            let mut client =
                ConnectorExecutorClient::new(channel(&url, Some(&agent)).expect("channel"));
            for _ in 0..400 {
                let call = client
                    .execute_tool(executor::ExecuteToolRequest {
                        tenant: "acme".into(),
                        connection_name: "asana-pat".into(),
                        identifier: "alice".into(),
                        tool_name: "asana_api_get_user".into(),
                        input_json: r#"{"user_gid": "me"}"#.into(),
                        options: None,
                    })
                    .await;
                match call {
                    Ok(response) => answered
                        .lock()
                        .expect("lock")
                        .push(response.into_inner().execution_id),
                    Err(_) => return, // the executor is gone
                }
            }
        }));
    }
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(30),
        async { answered.lock().expect("lock").len() >= 150 },
        "calls are answered"
    );
    let pid = connector_executor.pid();
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    for caller in callers {
        caller.await.expect("caller");
    }
    drop(connector_executor);
    let answered: HashSet<String> = answered.lock().expect("lock").iter().cloned().collect();
    assert!(
        audited(&audit_log.url(), &reader).await.len() < answered.len(),
        "the kill found events not yet delivered (else this test proves nothing)"
    );

    // The next start on the same spool directory delivers what the journal kept.
    let restarted =
        ServiceProcess::start_on("connector-executor", &executor_config, &[], executor_at)
            .expect("connector-executor again");
    wait_serving(restarted.address(), "", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", restarted.log()));
    let mut missing = answered.len();
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(30),
        async {
            let stored = audited(&audit_log.url(), &reader).await;
            missing = answered.difference(&stored).count();
            missing == 0
        },
        "every answered call is in the audit log after the restart ({missing} of {} missing)",
        answered.len()
    );
}
