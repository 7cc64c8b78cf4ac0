//! A tenant's key rotated online (`agentauth keys rotate-tenant`, `RotateTenantKey`) while two
//! token-vault replicas serve `GetAccessToken` to concurrent callers and refresh the tokens
//! they hand out: no call fails, every stored secret ends up under the new key version, which
//! alone decrypts afterwards, and the rotation is audited with the operator's name.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentauth_proto::vault::v1 as pb;
use agentauth_testkit::logs::{assert_logs_hold_none_of, logs};
use agentauth_testkit::openbao;
use asana_sandbox::seed::ALICE_PAT;
use token_vault::secrets::{Location, key_version};
use tokio_util::sync::CancellationToken;

use crate::support::audit::AuditLog;
use crate::support::{Options, Setup, TENANT};

/// The identifiers connected over OAuth.
const USERS: [&str; 6] = ["user_0", "user_1", "user_2", "user_3", "user_4", "user_5"];

fn get(connection: &str, identifier: &str) -> pb::GetAccessTokenRequest {
    pb::GetAccessTokenRequest {
        tenant: TENANT.into(),
        connection_name: connection.into(),
        identifier: identifier.into(),
        min_valid_for: None,
    }
}

/// The ciphertext stored in KV at `path`, read with the root token (not decrypted).
async fn stored_ciphertext(kv_mount: &str, path: &str) -> String {
    let vault = openbao::shared();
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/{kv_mount}/data/{path}", vault.addr()))
        .header("X-Vault-Token", vault.token())
        .send()
        .await
        .expect("vault answers")
        .json()
        .await
        .expect("json");
    body["data"]["data"]["ciphertext"]
        .as_str()
        .expect("a ciphertext")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_key_is_rotated_online_under_load() {
    logs();
    let shutdown = CancellationToken::new();
    let audit = AuditLog::start(&shutdown).await;
    let setup = Setup::start_with(Options {
        backend: "postgres",
        replicas: 2,
        // The sweeper refreshes too, besides the callers' refreshes.
        sweep_interval: "300ms",
        // Two timeouts are the rotation's settling time; one loaded core must not hit them.
        vault_timeout: "3s",
        audit: Some(&audit),
        ..Options::default()
    })
    .await;
    // Tokens fresh for one second beyond the five-minute refresh margin: they are refreshed
    // all through the rotation (which takes at least two Vault timeouts, 2 s).
    setup.sandbox.tokens().lifetime = Duration::from_secs(301);
    for user in USERS {
        setup.connect(user).await;
    }
    setup
        .client(0, &setup.agent)
        .put_credential(pb::PutCredentialRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "pat_user".into(),
            token: ALICE_PAT.into(),
            replace_user: false,
        })
        .await
        .expect("PAT stored");
    let webhook_secrets =
        ["whsec-one", "whsec-two"].map(|s| format!("{s}-{}", uuid::Uuid::new_v4()));
    for (i, secret) in webhook_secrets.iter().enumerate() {
        setup
            .client(0, &setup.reader)
            .put_webhook_secret(pb::PutWebhookSecretRequest {
                tenant: TENANT.into(),
                subscription_id: format!("sub-{i}"),
                secret: secret.clone(),
            })
            .await
            .expect("webhook secret kept");
    }
    // A consent link nobody has opened yet: its PKCE verifier is Transit ciphertext too.
    let pending_link = setup.link_for("pending_user").await;

    // Callers on both replicas, without a pause, until the rotation is over.
    let setup = Arc::new(setup);
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..6)
        .map(|caller| {
            let (setup, stop) = (setup.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut calls, mut failures, mut tokens) = (0u64, Vec::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let (connection, identifier) = if calls % 7 == 6 {
                        ("asana-pat", "pat_user")
                    } else {
                        ("asana", USERS[(caller + calls as usize) % USERS.len()])
                    };
                    match setup
                        .client((caller + calls as usize) % 2, &setup.reader)
                        .get_access_token(get(connection, identifier))
                        .await
                    {
                        Ok(token) => tokens.push(token.into_inner().access_token),
                        Err(status) => failures.push(format!("{identifier}: {status:?}")),
                    }
                    calls += 1;
                }
                (calls, failures, tokens)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refreshes_before = setup.refreshes();

    let cli = std::process::Command::new(agentauth_testkit::process::binary("agentauth"))
        .args([
            "--token-vault",
            &setup.replicas[1],
            "--key",
            setup.operator.expose(),
            "keys",
            "rotate-tenant",
            "--tenant",
            TENANT,
        ])
        .env_remove("AGENTAUTH_API_KEY")
        .env_remove("AGENTAUTH_API_KEY_FILE")
        .output();
    let output = tokio::task::spawn_blocking(move || cli.expect("agentauth runs"))
        .await
        .expect("joined");
    let refreshed_during = setup.refreshes() - refreshes_before;
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("key version 2"), "{printed}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut calls, mut failures, mut handed_out) = (0, Vec::new(), Vec::new());
    for caller in callers {
        let (n, failed, tokens) = caller.await.expect("joined");
        calls += n;
        failures.extend(failed);
        handed_out.extend(tokens);
    }
    assert!(failures.is_empty(), "calls failed: {failures:#?}");
    assert!(calls > 50, "only {calls} calls");
    assert!(
        refreshed_during > 0,
        "tokens were refreshed during the rotation"
    );

    // New tokens live an hour: once the sweeper has refreshed the last short-lived ones, the
    // stored credentials stay put while they are checked.
    setup.sandbox.tokens().lifetime = Duration::from_secs(3600);

    // Only key version 2 decrypts now, and every stored secret is under it.
    let secrets = setup.secrets();
    assert_eq!(
        secrets.key_versions(TENANT).await.expect("key read"),
        Some((2, 2)),
        "(latest version, min_decryption_version)"
    );
    let accounts = USERS
        .iter()
        .map(|user| ("asana", *user))
        .chain([("asana-pat", "pat_user")]);
    for (connection, identifier) in accounts {
        let at = Location {
            tenant: TENANT,
            connection,
            identifier,
        };
        let ciphertext = stored_ciphertext(secrets.kv_mount(), &secrets.path(at)).await;
        assert_eq!(key_version(&ciphertext), Some(2), "{identifier}");
        // The record names the version stored (once a last refresh by the sweeper settled).
        agentauth_testkit::assert_eventually!(
            Duration::from_secs(10),
            async {
                let (_, version) = secrets
                    .read(at)
                    .await
                    .expect("decrypts with version 2 alone")
                    .expect("stored");
                let account = setup
                    .client(0, &setup.agent)
                    .get_account(pb::GetAccountRequest {
                        tenant: TENANT.into(),
                        connection_name: connection.into(),
                        identifier: identifier.into(),
                    })
                    .await
                    .expect("account")
                    .into_inner()
                    .account
                    .expect("account");
                account.credential_version == version
            },
            "{identifier}: the record names the version stored"
        );
    }
    for (i, secret) in webhook_secrets.iter().enumerate() {
        let kept = setup
            .client(1, &setup.reader)
            .get_webhook_secret(pb::GetWebhookSecretRequest {
                tenant: TENANT.into(),
                subscription_id: format!("sub-{i}"),
            })
            .await
            .expect("the webhook secret decrypts")
            .into_inner()
            .secret;
        assert_eq!(&kept, secret);
    }
    // The consent link made before the rotation still completes (its verifier was re-wrapped).
    setup.complete_consent(&pending_link).await;
    setup
        .client(0, &setup.reader)
        .get_access_token(get("asana", "pending_user"))
        .await
        .expect("the pending consent connected its account");

    // Audited once, with the operator's name and what was re-wrapped.
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async { !audit.events(TENANT, "tenant.key_rotated").await.is_empty() },
        "the rotation is audited"
    );
    let events = audit.events(TENANT, "tenant.key_rotated").await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    let actor = event.actor.as_ref().expect("actor");
    assert_eq!(
        (actor.service.as_str(), actor.identifier.as_str()),
        ("token-vault", "operator")
    );
    let details: serde_json::Value = serde_json::from_str(&event.details_json).expect("json");
    assert_eq!(details["key_version"], 2);
    assert_eq!(details["webhook_secrets_rewrapped"], 2);
    assert_eq!(details["consents_rewrapped"], 1);
    let credentials = details["credentials_rewrapped"].as_u64().expect("a count");
    assert!(
        (1..=2 * 7).contains(&credentials),
        "{credentials} credentials re-wrapped"
    );
    assert!(
        printed.contains(&format!(
            "re-wrapped: {credentials} credentials, 2 webhook secrets, 1 pending consents"
        )),
        "{printed}"
    );

    handed_out.extend(webhook_secrets);
    handed_out.push(ALICE_PAT.to_owned());
    handed_out.sort();
    handed_out.dedup();
    assert_logs_hold_none_of(&handed_out);
    shutdown.cancel();
}
