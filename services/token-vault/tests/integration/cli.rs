//! The real `agentauth` binary's `accounts` commands against an in-process token-vault
//! (OpenBao dev server, SQLite, in-process Asana sandbox).

use std::process::Output;

use crate::support::{ALICE, Setup, TENANT};
use agentauth_grpc::ApiKey;
use agentauth_proto::vault::v1 as pb;
use asana_sandbox::seed::ALICE_PAT;

/// Runs `agentauth --token-vault URL --key KEY accounts ARGS…` off the async runtime.
async fn agentauth(url: &str, key: &ApiKey, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(agentauth_testkit::process::binary("agentauth"));
    command
        .args(["--token-vault", url, "--key", key.expose(), "accounts"])
        .args(args)
        .env_remove("AGENTAUTH_API_KEY")
        .env_remove("AGENTAUTH_API_KEY_FILE");
    tokio::task::spawn_blocking(move || command.output().expect("agentauth runs"))
        .await
        .expect("joined")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "agentauth failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_commands_connect_show_list_and_disconnect() {
    let setup = Setup::start("sqlite", 1, true).await;
    let (url, key) = (setup.replicas[0].as_str(), &setup.agent);

    let link = stdout(
        &agentauth(
            url,
            key,
            &[
                "connect",
                "--tenant",
                TENANT,
                "--connection",
                "asana",
                "--identifier",
                ALICE,
            ],
        )
        .await,
    );
    let link = link.trim();
    assert!(link.starts_with(&setup.sandbox_url), "{link}");
    assert!(link.contains("code_challenge_method=S256"), "{link}");

    let status = stdout(
        &agentauth(
            url,
            key,
            &["status", "--tenant", TENANT, "--identifier", ALICE],
        )
        .await,
    );
    assert!(status.contains("asana\t"), "{status}");
    assert!(status.contains("asana-pat\t"), "{status}");
    assert!(
        status.contains(&format!("connect: {}", setup.sandbox_url)),
        "the broken connection shows its link: {status}"
    );

    setup
        .client(0, &setup.agent)
        .put_credential(pb::PutCredentialRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: ALICE.into(),
            token: ALICE_PAT.into(),
            replace_user: false,
        })
        .await
        .expect("PAT stored");
    let list = stdout(&agentauth(url, key, &["list", "--tenant", TENANT]).await);
    let line = list
        .lines()
        .find(|l| l.starts_with("asana-pat\t"))
        .unwrap_or_else(|| panic!("the PAT account is listed: {list}"));
    assert!(
        line.contains(ALICE) && line.contains("\tactive\t"),
        "{line}"
    );
    let active = stdout(
        &agentauth(
            url,
            key,
            &[
                "list",
                "--tenant",
                TENANT,
                "--state",
                "active",
                "--connection",
                "asana-pat",
            ],
        )
        .await,
    );
    assert_eq!(active.lines().count(), 1, "{active}");
    assert!(!list.contains(ALICE_PAT) && !status.contains(ALICE_PAT));

    let disconnected = stdout(
        &agentauth(
            url,
            &setup.operator,
            &[
                "disconnect",
                "--tenant",
                TENANT,
                "--connection",
                "asana-pat",
                "--identifier",
                ALICE,
            ],
        )
        .await,
    );
    assert!(disconnected.contains("\trevoked\t"), "{disconnected}");
    assert_eq!(
        setup.account("asana-pat").await.state,
        i32::from(pb::AccountState::Revoked)
    );

    // Errors print the gRPC code and message and exit non-zero.
    let failed = agentauth(
        url,
        key,
        &[
            "connect",
            "--tenant",
            TENANT,
            "--connection",
            "asana-typo",
            "--identifier",
            ALICE,
        ],
    )
    .await;
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("NotFound"), "{stderr}");
    assert!(stderr.contains("asana"), "{stderr}");
}
